"""`pqtradeoff score`: add `logp_prior` (the prior, teacher-forced) and `reward` to a corpus.

Thin: the options come from `ScoreSettings`; the work is `experiment.stages.run_score`, which checks the
corpus and the resume before loading any model and reuses the corpus's prompt format (`_run.json`).
"""

from __future__ import annotations

from pathlib import Path

import typer

from pqtradeoff.cli import app
from pqtradeoff.cli.options import argument, option, settings_command
from pqtradeoff.experiment.settings import ScoreSettings

FLAGS = {
    "--prior": "prior.name", "--prior-gguf-file": "prior.gguf_file",
    "--reward-model": "reward_model.name", "--reward-model-gguf-file": "reward_model.gguf_file",
    "--backend": ("prior.backend", "reward_model.backend"),
    "--device": ("prior.device", "reward_model.device"), "--dtype": ("prior.dtype", "reward_model.dtype"),
    "--reward": "reward.kind", "--beta": "reward.beta", "--label": "reward.label",
    "--prior-context": "reward.prior_context",
    "--batch-size": "compute.batch_size", "--max-batch-tokens": "compute.max_batch_tokens",
    "--progress": "compute.progress",
    "--executor": "executor.kind", "--ray-address": "executor.ray_address", "--actors": "executor.actors",
    "--cpus-per-actor": "executor.cpus_per_actor", "--gpus-per-actor": "executor.gpus_per_actor",
}


def _score(settings: ScoreSettings, corpus_dir: Path, out: Path) -> None:
    from pqtradeoff.models.registry import require_model_packages

    require_model_packages()  # one line, before anything imports torch
    from pqtradeoff.experiment.stages import run_score  # lazy: torch

    result = run_score(settings, corpus_dir, out)
    typer.echo(f"scored corpus: {result.out_dir} ({result.describe()})")


settings_command(app, "score", ScoreSettings, FLAGS, _score,
                 leading=[argument("corpus_dir", help="Corpus folder written by `pqtradeoff generate`.")],
                 trailing=[option("out", ..., "--out",
                                  help="Output folder for the scored corpus (rerun to resume).")],
                 overrides={"--prior": None, "--reward-model": None, "--reward": None,
                            "--executor": None},  # unset: local, or ray when --ray-address is given
                 help="Score a generated corpus: log-probability under the prior and the reward of every "
                      "string.")
