"""Rewards for the scoring stage. A reward is any object with a `name` and `__call__(batch) -> np.ndarray`,
where `batch` is a pandas DataFrame of corpus rows (prompt, text, token ids, logp_aligned, logp_prior, ...).

- `DPOReward`: the implicit DPO reward beta * (logp_aligned - logp_prior) - the conventional sign (the
  original code's "secret reward" used the opposite one). Needs no extra model.
- `VaderReward`: VADER's compound sentiment of the continuation, a real lexicon reward (package vaderSentiment).
- `FunctionReward`: a user function `f(prompts, completions) -> list[float]` (TRL's convention), named as
  `python:module:function`.
- A sequence-classification reward model: `pqtradeoff.models.hf.HFRewardModel`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Protocol

import numpy as np
import pandas as pd

from pqtradeoff.errors import PQError

REWARD_KINDS = ("dpo", "vader", "python:MODULE:FUNCTION")
#: How the prior sees a continuation: after its prompt, or alone (after BOS), as the authors' code did.
PRIOR_CONTEXTS = ("prompt", "none")


class Reward(Protocol):
    name: str

    def __call__(self, batch: pd.DataFrame) -> np.ndarray: ...


class DPOReward:
    """Implicit DPO reward beta * (log pi(y|x) - log pi_ref(y|x)), from the two scored columns."""

    def __init__(self, beta: float) -> None:
        if not isinstance(beta, (int, float)) or not np.isfinite(beta) or beta <= 0:
            raise PQError(f"beta={beta!r} is out of range: the DPO reward needs a finite beta > 0")
        self.beta = float(beta)
        self.name = f"dpo(beta={self.beta!r})"

    def __call__(self, batch: pd.DataFrame) -> np.ndarray:
        return self.beta * (batch["logp_aligned"].to_numpy(np.float64) - batch["logp_prior"].to_numpy(np.float64))


class VaderReward:
    """VADER compound sentiment in [-1, 1] of each continuation text."""

    name = "vader"

    def __init__(self) -> None:
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError:
            raise PQError("reward='vader' needs the vaderSentiment package: pip install vadersentiment") from None
        self._analyzer = SentimentIntensityAnalyzer()

    def __call__(self, batch: pd.DataFrame) -> np.ndarray:
        return np.array([self._analyzer.polarity_scores(t)["compound"] for t in batch["text"]], dtype=np.float64)


class FunctionReward:
    """A user function f(prompts, completions) -> list[float], TRL's reward-function convention."""

    def __init__(self, fn: Callable[[list[str], list[str]], list[float]], name: str) -> None:
        self.fn, self.name = fn, name

    @classmethod
    def from_spec(cls, spec: str) -> FunctionReward:
        """Load `python:module:function` (the module must be importable, e.g. on PYTHONPATH)."""
        parts = spec.split(":")
        if len(parts) != 3 or parts[0] != "python" or not parts[1] or not parts[2]:
            raise PQError(f"reward={spec!r} is not of the form python:module:function")
        try:
            module = importlib.import_module(parts[1])
        except ImportError as err:
            raise PQError(f"reward={spec!r}: cannot import module {parts[1]!r} ({err})") from None
        fn = getattr(module, parts[2], None)
        if not callable(fn):
            raise PQError(f"reward={spec!r}: module {parts[1]!r} has no function {parts[2]!r}")
        return cls(fn, spec)

    def __call__(self, batch: pd.DataFrame) -> np.ndarray:
        try:
            values = self.fn(list(batch["prompt"]), list(batch["text"]))
        except Exception as err:  # user code: any failure becomes one line naming the reward and the row
            raise PQError(self._failure(batch, err)) from None
        try:
            out = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise PQError(f"reward {self.name!r} returned values that are not numbers") from None
        if out.shape != (len(batch),):
            raise PQError(f"reward {self.name!r} returned {out.shape[0] if out.ndim else 'a scalar'} values "
                          f"for {len(batch)} completions")
        return out


    def _failure(self, batch: pd.DataFrame, err: Exception) -> str:
        """Which row makes the function fail (rerun one row at a time), as one line."""
        from pqtradeoff.errors import first_line

        where = f"on a batch of {len(batch)} strings"
        for i in range(len(batch)):
            try:
                self.fn([batch["prompt"].iloc[i]], [batch["text"].iloc[i]])
            except Exception as one:
                values = {k: batch[k].iloc[i] for k in ("prompt_id", "sample_id", "adaptor") if k in batch.columns}
                key = ", ".join(f"{k}={v.item() if hasattr(v, 'item') else v!r}" for k, v in values.items())
                where, err = f"on row {i} of the batch ({key})" if key else f"on row {i} of the batch", one
                break
        return f"reward {self.name!r} raised {type(err).__name__} {where}: {first_line(err)}"


def check_dpo_context(is_dpo: bool, prior_context: str) -> None:
    """The implicit DPO reward compares log pi(y|x) with log pi_ref(y|x): both must be given the prompt."""
    if is_dpo and prior_context != "prompt":
        raise PQError("reward='dpo' needs --prior-context prompt: the implicit DPO reward compares "
                      "log pi(y|x) with log pi_ref(y|x), both given the prompt")


def make_reward(kind: str | None, *, beta: float | None = None) -> Reward:
    """The reward named by `--reward`: dpo (needs beta), vader, or python:module:function. A reward model is
    `pqtradeoff.models.hf.HFRewardModel`, built by the CLI."""
    if kind is None:
        raise PQError("give exactly one of --reward-model NAME_OR_PATH or --reward dpo|vader|python:module:function")
    if kind == "dpo":
        if beta is None:
            raise PQError("reward='dpo' needs --beta (the DPO KL strength, e.g. 0.1)")
        return DPOReward(beta)
    if beta is not None:
        raise PQError(f"--beta={beta!r} only applies to --reward dpo, not {kind!r}")
    if kind == "vader":
        return VaderReward()
    if kind.startswith("python:"):
        return FunctionReward.from_spec(kind)
    raise PQError(f"reward={kind!r} is not one of {', '.join(REWARD_KINDS)}")
