"""`pqtradeoff align`: make the aligned model p+ of a prior with DPO (TRL) on pairs of its own samples.

Thin: the options come from `AlignSettings`; the work is `experiment.stages.run_align` (`pipeline.align`).
"""

from __future__ import annotations

from pathlib import Path

import typer

from pqtradeoff.cli import app
from pqtradeoff.cli.options import option, settings_command
from pqtradeoff.experiment.settings import AlignSettings

FLAGS = {
    "--prior": "prior.name", "--prior-gguf-file": "prior.gguf_file", "--backend": "prior.backend",
    "--device": ("prior.device", "reward_model.device"), "--dtype": ("prior.dtype", "reward_model.dtype"),
    "--prompts": "prompts.file", "--prompt-field": "prompts.field", "--template": "prompts.template",
    "--chat-template": "prompts.chat_template", "--num-prompts": "prompts.num_prompts",
    "--prompt-seed": "prompts.prompt_seed", "--max-prompt-chars": "prompts.max_chars",
    "--allow-duplicate-prompts": "prompts.allow_duplicates",
    "--reward": "reward.kind", "--reward-beta": "reward.beta", "--label": "reward.label",
    "--prior-context": "reward.prior_context",
    "--reward-model": "reward_model.name", "--reward-model-gguf-file": "reward_model.gguf_file",
    "--reward-model-backend": "reward_model.backend",
    "--beta": "training.beta", "--seed": "training.seed", "--candidates": "training.candidates",
    "--adaptor": "training.adaptor", "--max-new-tokens": "training.max_new_tokens",
    "--epochs": "training.epochs", "--learning-rate": "training.learning_rate",
    "--lora-rank": "training.lora_rank", "--train-batch-size": "training.train_batch_size",
    "--batch-size": "compute.batch_size", "--max-batch-tokens": "compute.max_batch_tokens",
    "--progress": "compute.progress",
}


def _align(settings: AlignSettings, out: Path) -> None:
    from pqtradeoff.models.registry import require_model_packages
    from pqtradeoff.pipeline.align import require_align_packages

    require_model_packages()  # one line each, before anything imports torch or TRL
    require_align_packages()
    from pqtradeoff.experiment.stages import run_align  # lazy: torch

    result = run_align(settings, out)
    typer.echo(f"aligned model: {result.out_dir} ({result.describe()})")


settings_command(app, "align", AlignSettings, FLAGS, _align,
                 trailing=[option("out", ..., "--out",
                                  help="The aligned model's folder (weights, tokenizer, pairs.parquet, "
                                       "train_log.json, _run.json); rerun to resume.")],
                 overrides={"--reward": None, "--reward-model": None},
                 help="Make the aligned model of a prior: sample candidates, pair the best and worst by a "
                      "reward, train with DPO (TRL).")
