"""`pqtradeoff score`: add `logp_prior` (the prior, teacher-forced) and `reward` to a corpus.

Thin: the options come from `ScoreSettings`; the work is `experiment.stages.run_score`, which checks the
corpus and the resume before loading any model and reuses the corpus's prompt format (`_run.json`).
"""

from __future__ import annotations

from pathlib import Path

import typer

from pqtradeoff.cli import app
from pqtradeoff.cli.options import argument, option, settings_command
from pqtradeoff.errors import PQError, validated
from pqtradeoff.experiment.settings import ScoreSettings

FLAGS = {
    "--prior": "prior.name", "--prior-gguf-file": "prior.gguf_file",
    "--reward-model": "reward_model.name", "--reward-model-gguf-file": "reward_model.gguf_file",
    "--backend": ("prior.backend", "reward_model.backend", "aligned.backend"),
    "--device": ("prior.device", "reward_model.device", "aligned.device"),
    "--dtype": ("prior.dtype", "reward_model.dtype", "aligned.dtype"),
    "--reward": "reward.kind", "--beta": "reward.beta", "--label": "reward.label",
    "--prior-context": "reward.prior_context",
    "--aligned": "aligned.name", "--aligned-gguf-file": "aligned.gguf_file", "--what-if": "what_if",
    "--batch-size": "compute.batch_size", "--max-batch-tokens": "compute.max_batch_tokens",
    "--progress": "compute.progress",
    "--executor": "executor.kind", "--ray-address": "executor.ray_address", "--actors": "executor.actors",
    "--cpus-per-actor": "executor.cpus_per_actor", "--gpus-per-actor": "executor.gpus_per_actor",
}

#: Options that set a field in their own way: `--extra-reward NAME=KIND` adds `rewards.NAME`.
OTHER_OPTIONS = {"--extra-reward": "rewards"}


def _score(settings: ScoreSettings, corpus_dir: Path, out: Path, extra_reward: list[str] | None) -> None:
    from pqtradeoff.models.registry import require_model_packages

    settings = with_further_rewards(settings, extra_reward or [])
    require_model_packages()  # one line, before anything imports torch
    from pqtradeoff.experiment.stages import run_score  # lazy: torch

    result = run_score(settings, corpus_dir, out)
    typer.echo(f"scored corpus: {result.out_dir} ({result.describe()})")


def with_further_rewards(settings: ScoreSettings, specs: list[str]) -> ScoreSettings:
    """`--extra-reward NAME=KIND` (repeatable) as `settings.rewards`, checked as the TOML's [rewards.NAME]."""
    rewards = dict(settings.rewards)
    for spec in specs:
        name, sep, kind = spec.partition("=")
        if not sep or not name.strip() or not kind.strip():
            raise PQError(f"--extra-reward {spec!r}: give NAME=KIND, e.g. vader=vader or "
                          "mine=python:my_module:my_reward")
        if name.strip() in rewards:
            raise PQError(f"--extra-reward {spec!r}: the name {name.strip()!r} is given twice")
        rewards[name.strip()] = {"kind": kind.strip()}
    if not specs:
        return settings
    return validated(ScoreSettings, **(settings.model_dump(exclude_unset=True) | {"rewards": rewards}))


settings_command(app, "score", ScoreSettings, FLAGS, _score,
                 leading=[argument("corpus_dir", help="Corpus folder written by `pqtradeoff generate`.")],
                 trailing=[option("out", ..., "--out",
                                  help="Output folder for the scored corpus (rerun to resume)."),
                           option("extra_reward", None, "--extra-reward", annotation=list[str] | None,
                                  help="A further reward NAME=KIND (repeatable; KIND as --reward, not a "
                                       "reward model): one column reward_NAME each.")],
                 overrides={"--aligned": None, "--prior": None, "--reward-model": None, "--reward": None,
                            "--executor": None},  # unset: local, or ray when --ray-address is given
                 help="Score a generated corpus: log-probability under the prior and the reward of every "
                      "string.")
