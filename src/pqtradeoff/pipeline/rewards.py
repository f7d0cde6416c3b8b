"""Rewards for the scoring stage. A reward is any object with a `name`, the needs it declares, and
`__call__(batch) -> np.ndarray`, where `batch` is a pandas DataFrame of corpus rows (prompt, text, token ids,
logp_aligned, logp_prior, ...).

A reward declares what it reads (as vLLM's logits processors declare `is_argmax_invariant`), so the score
stage checks it without knowing which reward it holds:
- `needs_prompt_context`: it reads the prior's log-probability given the prompt, log pi_ref(y|x);
- `columns`: the corpus columns it reads.

Built-in rewards are found by name in `REWARD_REGISTRY` (as TRL's `reward_funcs_registry`):
- `dpo`, `DPOReward`: the implicit DPO reward beta * (logp_aligned - logp_prior) - the conventional sign (the
  original code's "secret reward" used the opposite one). Needs no extra model.
- `vader`, `VaderReward`: VADER's compound sentiment of the continuation (package vaderSentiment).
Any other function is named `python:module:function` (`FunctionReward`) and is called as TRL calls reward
functions, so a function written for TRL works unchanged. A sequence-classification reward model (kind
`model`) is `pqtradeoff.models.hf.HFRewardModel`, built by the score stage from its model settings.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from pqtradeoff.columns import ROW_KEY, Col
from pqtradeoff.errors import PQError, first_line

if TYPE_CHECKING:
    import pandas as pd

#: How the prior sees a continuation: after its prompt, or alone (after BOS), as the authors' code did.
PRIOR_CONTEXTS = ("prompt", "none")
#: The reward kind of a sequence-classification reward model (built by the score stage, not by `make_reward`).
MODEL_KIND = "model"
FUNCTION_KIND = "python:MODULE:FUNCTION"


class Reward(Protocol):
    """What the score stage calls: one float per corpus row."""

    name: str
    needs_prompt_context: bool
    columns: tuple[str, ...]

    def __call__(self, batch: pd.DataFrame) -> np.ndarray: ...


class DPOReward:
    """Implicit DPO reward beta * (log pi(y|x) - log pi_ref(y|x)), from the two scored columns."""

    #: Settings `make_reward` passes on (and refuses for the other rewards).
    parameters: ClassVar[tuple[str, ...]] = ("beta",)
    needs_prompt_context = True  # log pi_ref(y|x) compared with log pi(y|x): both given the prompt
    columns = (Col.LOGP_ALIGNED, Col.LOGP_PRIOR)

    def __init__(self, beta: float) -> None:
        if not isinstance(beta, (int, float)) or not np.isfinite(beta) or beta <= 0:
            raise PQError(f"beta={beta!r} is out of range: the DPO reward needs a finite beta > 0")
        self.beta = float(beta)
        self.name = f"dpo(beta={self.beta!r})"

    def __call__(self, batch: pd.DataFrame) -> np.ndarray:
        return self.beta * (batch[Col.LOGP_ALIGNED].to_numpy(np.float64)
                            - batch[Col.LOGP_PRIOR].to_numpy(np.float64))


class VaderReward:
    """VADER compound sentiment in [-1, 1] of each continuation text."""

    parameters: ClassVar[tuple[str, ...]] = ()
    needs_prompt_context = False
    columns = (Col.TEXT,)
    name = "vader"

    def __init__(self) -> None:
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer  # lazy: optional
        except ImportError:
            raise PQError("reward='vader' needs the vaderSentiment package: "
                          "pip install vadersentiment") from None
        self._analyzer = SentimentIntensityAnalyzer()

    def __call__(self, batch: pd.DataFrame) -> np.ndarray:
        return np.array([self._analyzer.polarity_scores(t)["compound"] for t in batch[Col.TEXT]],
                        dtype=np.float64)


#: What each parameter of a built-in reward means, for the message that asks for it.
PARAMETER_HELP = {"beta": "the DPO KL strength, e.g. 0.1"}
#: Built-in rewards by kind name. `make_reward` looks a kind up here, then reads `python:module:function`.
REWARD_REGISTRY: dict[str, type[Reward]] = {"dpo": DPOReward, "vader": VaderReward}


def reward_kinds() -> tuple[str, ...]:
    """Every reward kind the settings accept (read when asked: a reward registered later is one)."""
    return (MODEL_KIND, *REWARD_REGISTRY, FUNCTION_KIND)


def is_reward_kind(kind: str) -> bool:
    """Whether `kind` names a reward: a registered one, a reward model, or `python:...`."""
    return kind == MODEL_KIND or kind in REWARD_REGISTRY or kind.startswith("python:")


class FunctionReward:
    """A user reward function, called as TRL's trainers call reward functions:
    `f(prompts=[...], completions=[...], completion_ids=[[...]], **columns)` -> list[float] (None -> NaN),
    where `columns` are the corpus's other columns, one list each (config, finished, logp_aligned, ...).

    A function that takes no `**kwargs` gets only the arguments it names; one written for the earlier
    positional convention, `f(prompts, completions)` with other parameter names, is called positionally.
    """

    needs_prompt_context = False
    columns = (Col.PROMPT, Col.TEXT)

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.fn, self.name = fn, name
        self._takes_all, self._names, self._required = _parameters(fn)

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
            values = self._invoke(batch)
        except PQError:
            raise
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

    def _invoke(self, batch: pd.DataFrame) -> Any:
        """Call the function with TRL's keyword arguments, or the ones it names, or positionally."""
        kwargs = _trl_arguments(batch)
        if self._takes_all:
            return self.fn(**kwargs)
        if all(name in kwargs for name in self._required):
            return self.fn(**{name: kwargs[name] for name in self._names if name in kwargs})
        if len(self._required) == 2:  # the earlier convention f(prompts, completions), other names
            return self.fn(kwargs["prompts"], kwargs["completions"])
        missing = [name for name in self._required if name not in kwargs]
        raise PQError(f"reward {self.name!r} takes argument(s) {', '.join(missing)} that are not corpus "
                      "columns: write it as f(prompts, completions, **kwargs)")

    def _failure(self, batch: pd.DataFrame, err: Exception) -> str:
        """Which row makes the function fail (rerun one row at a time), as one line."""
        where = f"on a batch of {len(batch)} strings"
        for i in range(len(batch)):
            try:
                self._invoke(batch.iloc[[i]])
            except Exception as one:
                values = {k: batch[k].iloc[i] for k in ROW_KEY
                          if k in batch.columns}
                key = ", ".join(f"{k}={v.item() if hasattr(v, 'item') else v!r}" for k, v in values.items())
                where, err = f"on row {i} of the batch ({key})" if key else f"on row {i} of the batch", one
                break
        return f"reward {self.name!r} raised {type(err).__name__} {where}: {first_line(err)}"


def _parameters(fn: Callable[..., Any]) -> tuple[bool, tuple[str, ...], tuple[str, ...]]:
    """(takes **kwargs, names it accepts by keyword, names it requires) of a reward function."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # no signature (some builtins): pass everything, as TRL does
        return True, (), ()
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params)
    names = tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    required = tuple(p.name for p in params if p.default is p.empty
                     and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    return takes_all, names, required


def _trl_arguments(batch: pd.DataFrame) -> dict[str, list[Any]]:
    """TRL's reward-function arguments from a corpus batch: prompts, completions, completion_ids (when the
    corpus has token ids) and every other column as a list (arrays as lists)."""
    def column(name: str) -> list[Any]:
        return [v.tolist() if isinstance(v, np.ndarray) else v for v in batch[name].tolist()]

    kwargs = {"prompts": column(Col.PROMPT), "completions": column(Col.TEXT)}
    if Col.TOKEN_IDS in batch.columns:
        kwargs["completion_ids"] = column(Col.TOKEN_IDS)
    for name in batch.columns:
        if name not in (Col.PROMPT, Col.TEXT, Col.TOKEN_IDS):
            kwargs[str(name)] = column(name)
    return kwargs


def make_reward(kind: str | None, *, beta: float | None = None) -> Reward:
    """The reward named by `--reward`: a kind of `REWARD_REGISTRY` (dpo needs beta) or python:module:function.
    A reward model is `pqtradeoff.models.hf.HFRewardModel`, built by the score stage."""
    if kind is None:
        raise PQError("give exactly one of --reward-model NAME_OR_PATH or --reward "
                      "dpo|vader|python:module:function")
    given = {name: value for name, value in {"beta": beta}.items() if value is not None}
    builtin = REWARD_REGISTRY.get(kind)
    takes = builtin.parameters if builtin is not None else ()
    for name, value in given.items():
        if name not in takes:
            users = [k for k, c in REWARD_REGISTRY.items() if name in c.parameters]
            raise PQError(f"--{name}={value!r} only applies to --reward {' or '.join(users)}, not {kind!r}")
    if builtin is not None:
        missing = [name for name in takes if name not in given]
        if missing:
            raise PQError(f"reward={kind!r} needs --{missing[0]} ({PARAMETER_HELP[missing[0]]})")
        return builtin(**given)
    if kind.startswith("python:"):
        return FunctionReward.from_spec(kind)
    raise PQError(f"reward={kind!r} is not one of {', '.join(REWARD_REGISTRY)}, {FUNCTION_KIND}")
