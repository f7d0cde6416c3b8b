"""`pqtradeoff generate`: sample a corpus from an aligned model under a grid of adaptors.

Thin: the options come from `GenerateSettings` (`FLAGS` says which option sets which field); the work is
`pqtradeoff.experiment.stages.run_generate`, which checks the prompts and the resume before loading the model.
"""

from __future__ import annotations

from pathlib import Path

import typer

from pqtradeoff.cli import app
from pqtradeoff.cli.options import option, settings_command
from pqtradeoff.experiment.settings import GenerateSettings

FLAGS = {
    "--model": "model.name", "--gguf-file": "model.gguf_file",
    "--backend": "model.backend", "--device": "model.device", "--dtype": "model.dtype",
    "--prior-backend": "prior.backend", "--prior-device": "prior.device", "--prior-dtype": "prior.dtype",
    "--reward-model-backend": "reward_model.backend", "--reward-model-device": "reward_model.device",
    "--reward-model-dtype": "reward_model.dtype",
    "--prior": "prior.name", "--prior-gguf-file": "prior.gguf_file",
    "--reward": "reward.kind", "--reward-model": "reward_model.name",
    "--reward-model-gguf-file": "reward_model.gguf_file", "--beta": "reward.beta", "--label": "reward.label",
    "--prior-context": "reward.prior_context",
    "--prompts": "prompts.file", "--prompt-field": "prompts.field", "--template": "prompts.template",
    "--chat-template": "prompts.chat_template", "--num-prompts": "prompts.num_prompts",
    "--prompt-seed": "prompts.prompt_seed", "--max-prompt-chars": "prompts.max_chars",
    "--allow-duplicate-prompts": "prompts.allow_duplicates",
    "--adaptor": "sampling.adaptors", "--family": "sampling.families",
    "--temperature": "sampling.temperatures",
    "--num-generations": "sampling.num_generations", "--max-new-tokens": "sampling.max_new_tokens",
    "--seed": "sampling.seed", "--save-token-logprobs": "sampling.save_token_logprobs",
    "--prompt-block": "sampling.prompt_block", "--sample-block": "sampling.sample_block",
    "--pack-adaptors": "sampling.pack_adaptors",
    "--batch-size": "compute.batch_size", "--max-batch-tokens": "compute.max_batch_tokens",
    "--progress": "compute.progress",
    "--executor": "executor.kind", "--ray-address": "executor.ray_address", "--actors": "executor.actors",
    "--cpus-per-actor": "executor.cpus_per_actor", "--gpus-per-actor": "executor.gpus_per_actor",
}


def _generate(settings: GenerateSettings, out: Path) -> None:
    from pqtradeoff.models.registry import require_model_packages

    require_model_packages()  # one line, before anything imports torch
    from pqtradeoff.experiment.stages import run_generate  # lazy: torch

    result = run_generate(settings, out)
    typer.echo(f"corpus: {result.out_dir} ({result.describe()})")


settings_command(app, "generate", GenerateSettings, FLAGS, _generate,
                 trailing=[option("out", ..., "--out",
                                  help="Output folder (rerun the same command to resume; "
                                                            "a grown grid adds only the new shards).")],
                 # unset: --executor is local, or ray when --ray-address is given; the others are unset
                 overrides={"--executor": None, "--prior": None, "--reward": None, "--reward-model": None,
                            "--prior-context": None, "--prior-backend": None, "--prior-device": None,
                            "--prior-dtype": None, "--reward-model-backend": None,
                            "--reward-model-device": None, "--reward-model-dtype": None},
                 help="Sample continuations from an aligned model, recording logq, logp_aligned and "
                      "log_weight per string.")
