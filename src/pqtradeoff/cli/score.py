"""`pqtradeoff score`: add `logp_prior` (a Hugging Face prior, teacher-forced) and `reward` to a corpus.

Thin: checks the corpus and the reward choice before loading any model, builds the prior as `HFModel`
and the reward (`HFRewardModel` or `rewards.make_reward`), and calls `pqtradeoff.score.score_corpus`. The
prompt format the corpus was generated with (`--template` / `--chat-template`, read from its `_run.json`)
is reused for the prior (when it re-tokenizes) and for the reward model.
"""

from __future__ import annotations

from pathlib import Path

import typer

from pqtradeoff.cli import app


def with_chat_fallback(build, chat: bool, what: str):
    """`(build(chat), chat)`; a checkpoint without a chat template is built without one, with a warning,
    since `score` has no option to choose its prompt format (it follows the corpus)."""
    from pqtradeoff.errors import PQError

    try:
        return build(chat), chat
    except PQError as err:
        if not (chat and "no chat template" in str(err)):
            raise
    typer.echo(f"warning: {what} has no chat template; it reads the raw prompt", err=True)
    return build(False), False


@app.command()
def score(
    corpus_dir: Path = typer.Argument(..., help="Corpus folder written by `pqtradeoff generate`."),
    out: Path = typer.Option(..., "--out", help="Output folder for the scored corpus (rerun to resume)."),
    prior: str | None = typer.Option(None, "--prior", help="Prior: hub id or local folder (AutoModelForCausalLM); "
                                     "omit to keep the corpus's logp_prior."),
    reward_model: str | None = typer.Option(None, "--reward-model", help="Sequence-classification reward model."),
    reward: str | None = typer.Option(None, "--reward", help="dpo | vader | python:module:function"),
    beta: float | None = typer.Option(None, "--beta", help="KL strength of the implicit DPO reward."),
    prior_context: str = typer.Option("prompt", "--prior-context", help="prompt: condition the prior on the "
                                      "prompt; none: score the continuation alone (after BOS)."),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda"),
    dtype: str = typer.Option("float32", "--dtype", help="float32|bfloat16|float16"),
    batch_size: int = typer.Option(8, "--batch-size", help="Rows per forward pass (prior and reward model)."),
    max_batch_tokens: int = typer.Option(4096, "--max-batch-tokens", help="Cap rows x padded continuation "
                                         "length per prior forward pass (bounds the [B, T, V] logits)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Score a generated corpus: log-probability under the prior and the reward of every string."""
    from pqtradeoff.corpus import require_shards, run_settings
    from pqtradeoff.errors import PQError
    from pqtradeoff.io import check_resumable
    from pqtradeoff.rewards import PRIOR_CONTEXTS, check_dpo_context

    require_shards(corpus_dir)
    if prior_context not in PRIOR_CONTEXTS:
        raise PQError(f"--prior-context={prior_context!r} is not one of {', '.join(PRIOR_CONTEXTS)}")
    if reward_model is not None and (reward is not None or beta is not None):
        raise PQError("give exactly one of --reward-model NAME_OR_PATH or --reward dpo|vader|python:module:function")
    made = run_settings(corpus_dir)
    template, chat = made.get("template"), bool(made.get("chat_template", False))
    check_dpo_context(reward == "dpo", prior_context)

    # Refuse a resume with other settings before loading the prior and the reward model.
    check_resumable(out, {"settings": {"prior": prior, "reward_model": reward_model, "reward_kind": reward,
                                       "beta": beta, "prior_context": prior_context,
                                       "corpus_dir": str(corpus_dir)}})

    if not progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    from pqtradeoff.models.hf import HFModel, HFRewardModel
    from pqtradeoff.rewards import make_reward
    from pqtradeoff.score import score_corpus

    reward_chat = None
    if reward_model is not None:
        scorer, reward_chat = with_chat_fallback(
            lambda c: HFRewardModel(reward_model, device=device, dtype=dtype, batch_size=batch_size,
                                    template=template, chat_template=c), chat, f"the reward model {reward_model!r}")
    else:
        scorer = make_reward(reward, beta=beta)
    lm, prior_chat = None, None
    if prior is not None:
        lm, prior_chat = with_chat_fallback(
            lambda c: HFModel(prior, device=device, dtype=dtype, template=template, chat_template=c), chat,
            f"the prior {prior!r}")
    settings = {
        "prior": prior, "reward_model": reward_model, "reward_kind": reward, "beta": beta,
        "device": device, "dtype": dtype, "prompt_template": template, "chat_template": chat,
        "prior_chat_template": prior_chat, "reward_chat_template": reward_chat,
    }
    path = score_corpus(corpus_dir, out, prior=lm, reward=scorer, prior_context=prior_context,
                        batch_size=batch_size, max_batch_tokens=max_batch_tokens, settings=settings,
                        progress=progress)
    typer.echo(f"scored corpus: {path}")
