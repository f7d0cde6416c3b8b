"""Sampling adaptors: exactly the logits warpers that transformers' `generate` applies, in its order, plus
top-n-sigma (our own warper, `sampling.top_n_sigma`, right after temperature) and DeRa's `dera=lambda`
(not a warper: the distribution the warpers apply to, see `models.realign`).

A spec string names one configuration with GenerationConfig's parameter names, e.g. `ancestral`,
`temperature=0.7`, `top_k=50`, `temperature=0.75,top_p=0.95`. `parse(spec)` returns an `Adaptor`; its
canonical `str()` always states the temperature and lists the parameters in generate's order, so it can key
outputs: `parse("top_p=0.9,temperature=0.5")` -> `temperature=0.5,top_p=0.9`.

Two views of the adapted next-token distribution (see docs/scored-corpus.md):
- `log_probs(logits)`: the locally normalized distribution that sampling uses (log_softmax of the processed
  logits), -inf outside the kept support;
- `log_weights(logits)`: the weights of the globally normalized adaptor before renormalizing,
  `log_softmax(logits) / T` on the kept support. `logsumexp(log_weights)` is log Z_t, the log mass kept at
  one step; the IMH correction is built on it.

Each parameter is declared once, as an `Adaptor` field carrying its check, its GenerationConfig off value and
its transformers warper (`PARAMETERS`); validation, `str()`, `parse` and `processors` all read that
declaration (as does `pqtradeoff.testing.generation_kwargs`), so adding a warper is one field.

This module imports torch and transformers lazily, so the analysis side can parse spec strings without them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, NamedTuple

from pqtradeoff.errors import PQError
from pqtradeoff.sampling.best_of_n import Selection

if TYPE_CHECKING:
    import torch

#: Our own warper for top-n-sigma (transformers has none): `sampling.top_n_sigma`.
TOP_N_SIGMA_WARPER = "pqtradeoff.sampling.top_n_sigma:TopNSigmaLogitsWarper"

#: Elements per call of transformers' warpers (rows of a [N, V] batch). Bounds their working memory (a full
#: sort of [N, V] makes int64 indices) and keeps each pass cache-sized on CPU. See benchmarks/adaptors.py.
CHUNK_ELEMENTS = 1 << 22


# ------------------------------------------------------------------------------------- parameter checks
# Each returns the value to store, or raises PQError naming the parameter and the value (as transformers'
# warpers check their own argument).
def _positive_real(name: str, value: Any) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value <= 0):
        raise PQError(f"{name}={value!r} is out of range: need a finite {name} > 0")
    return float(value)


def _positive_integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PQError(f"{name}={value!r} is out of range: need an integer {name} >= 1")
    return value


def _non_negative_real(name: str, value: Any) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value < 0):
        raise PQError(f"{name}={value!r} is out of range: need a finite {name} >= 0")
    return float(value)


def _open_unit(name: str, value: Any) -> float:
    value = float(value)
    if not 0.0 < value < 1.0:
        raise PQError(f"{name}={value!r} is out of range: need 0 < {name} < 1 (leave {name} out to turn it "
                      "off)")
    return value


def _half_open_unit(name: str, value: Any) -> float:
    if not 0.0 < float(value) <= 1.0:
        raise PQError(f"{name}={value!r} is out of range: need 0 < {name} <= 1 (leave {name} out to turn it "
                      "off)")
    return float(value)


@dataclass(frozen=True)
class Parameter:
    """One sampling parameter, read from its `Adaptor` field: its name (GenerationConfig's), the type a spec
    value is read as, its check, the value that turns it off in GenerationConfig, and transformers' warper
    that applies it, built as `warper(**{keyword: value})`."""

    name: str
    default: float | int | None
    kind: type
    check: Callable[[str, Any], float | int]
    off: float | int
    warper: str  # a class of transformers.generation.logits_process, or "package.module:Class" of your own
    keyword: str

    def is_on(self, value: float | int | None) -> bool:
        """Whether the value changes the distribution (temperature 1.0 is off, as a missing truncation)."""
        return value is not None and value != self.off

    def build_warper(self, value: float | int) -> Any:
        """`warper(**{keyword: value})`: transformers' class of that name, or `module:Class` imported."""
        if ":" in self.warper:
            import importlib

            module, _, name = self.warper.partition(":")
            return getattr(importlib.import_module(module), name)(**{self.keyword: value})
        from transformers.generation import logits_process  # lazy: transformers

        return getattr(logits_process, self.warper)(**{self.keyword: value})


def _parameter(default: float | int | None, kind: type, check: Callable[[str, Any], float | int],
               off: float | int, warper: str, keyword: str) -> Any:
    """An `Adaptor` field that declares a parameter once: its default, and the rest as field metadata."""
    return field(default=default, metadata={"kind": kind, "check": check, "off": off, "warper": warper,
                                            "keyword": keyword})


@dataclass(frozen=True)
class Adaptor:
    """One sampling-adaptor configuration. Fields left as None are off (never set to a 'neutral' value).

    Fields are declared in the order transformers' generate applies the corresponding warpers; each field is
    the one declaration of its parameter (check, off value, warper), from which `PARAMETERS` derives.
    """

    # name: type = _parameter(default, spec type, check, off value, transformers warper, its keyword)
    temperature: float = _parameter(1.0, float, _positive_real, 1.0, "TemperatureLogitsWarper", "temperature")
    top_n_sigma: float | None = _parameter(None, float, _positive_real, 0.0, TOP_N_SIGMA_WARPER, "n")
    top_k: int | None = _parameter(None, int, _positive_integer, 0, "TopKLogitsWarper", "top_k")
    top_p: float | None = _parameter(None, float, _open_unit, 1.0, "TopPLogitsWarper", "top_p")
    min_p: float | None = _parameter(None, float, _half_open_unit, 0.0, "MinPLogitsWarper", "min_p")
    typical_p: float | None = _parameter(None, float, _open_unit, 1.0, "TypicalLogitsWarper", "mass")
    epsilon_cutoff: float | None = _parameter(None, float, _open_unit, 0.0, "EpsilonLogitsWarper", "epsilon")
    eta_cutoff: float | None = _parameter(None, float, _open_unit, 0.0, "EtaLogitsWarper", "epsilon")
    # Not a warper: decoding-time realignment (DeRa) changes the distribution the warpers above are applied
    # to, from the aligned model p+ to pi_lambda proportional to p+^lambda p^(1-lambda) (the prior p decoded
    # in lockstep: `models.realign`). None: the aligned model alone.
    dera: float | None = field(default=None, metadata={"realign": True})

    def __post_init__(self) -> None:
        for p in PARAMETERS:
            value = getattr(self, p.name)
            # None turns a truncation off; temperature needs a value
            if value is not None or p.default is not None:
                object.__setattr__(self, p.name, p.check(p.name, value))
        if self.dera is not None:
            object.__setattr__(self, "dera", _non_negative_real("dera", self.dera))

    # ----------------------------------------------------------------------------------------------- naming
    def __str__(self) -> str:
        parts = [f"temperature={self.temperature!r}"]
        if self.dera is not None:
            parts.append(f"dera={self.dera!r}")
        for name in TRUNCATIONS:
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value!r}")
        return ",".join(parts)

    @property
    def family(self) -> str:
        """The adaptor without its temperature: `ancestral`, `top_k=30`, `top_p=0.9,min_p=0.05`, `dera=0.5`,
        ..."""
        parts = [f"dera={self.dera!r}"] if self.dera is not None else []
        parts += [f"{name}={getattr(self, name)!r}" for name in TRUNCATIONS
                  if getattr(self, name) is not None]
        return ",".join(parts) if parts else "ancestral"

    @property
    def is_identity(self) -> bool:
        """True for plain ancestral sampling: temperature 1 and no truncation (log_probs == log_softmax)."""
        return (self.temperature == 1.0 and self.dera is None
                and all(getattr(self, n) is None for n in TRUNCATIONS))

    @property
    def truncates(self) -> bool:
        return any(getattr(self, n) is not None for n in TRUNCATIONS)

    @property
    def realigns(self) -> bool:
        """Whether this configuration decodes the prior beside the aligned model (`dera` is set)."""
        return self.dera is not None

    @property
    def power(self) -> float:
        """alpha = 1/T: the global target of an untruncated `temperature=T` is power sampling p+^alpha."""
        return 1.0 / self.temperature

    def without_dera(self) -> Adaptor:
        """The same warpers on whatever distribution they are given (what `models.realign` applies to the
        mixed logits)."""
        return Adaptor(**{name: getattr(self, name) for name in PARAMETER_ORDER})

    # ----------------------------------------------------------------------------------------- computation
    def processors(self) -> list:
        """transformers' own warpers for this configuration, in generate's order (min_tokens_to_keep=1)."""
        return [p.build_warper(getattr(self, p.name)) for p in PARAMETERS if p.is_on(getattr(self, p.name))]

    def support(self, logits: torch.Tensor, *, fast_top_p: bool = False) -> torch.Tensor:
        """Boolean mask of the tokens the adaptor keeps, for logits of any shape [..., V]: transformers' own
        warpers, or with `fast_top_p` its top-p warper computed without the index sort (`nucleus.top_p_warp`,
        the same mask bit for bit)."""
        import torch  # lazy: torch

        logits = _working_precision(logits)
        if not self.truncates:
            return torch.isfinite(logits)
        flat = logits.reshape(-1, logits.shape[-1])
        if flat.shape[0] == 0:
            return torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
        if fast_top_p and self.top_p is not None:
            from pqtradeoff.sampling.nucleus import warp  # lazy: transformers
        else:
            def warp(proc, scores):
                return proc(None, scores)
        procs = self.processors()
        masks = []
        for chunk in flat.split(max(1, CHUNK_ELEMENTS // flat.shape[-1])):
            for proc in procs:
                chunk = warp(proc, chunk)
            masks.append(chunk > float("-inf"))  # kept: not filtered (+inf from a tiny T counts as kept)
        return torch.cat(masks).reshape(logits.shape)

    def adapt(self, logits: torch.Tensor) -> AdaptedStep:
        """Everything one sampling or scoring step needs, from one pass over the logits [..., V].

        Returns the T=1 log-probabilities, the adapted log-weights, log Z (over the last axis, keepdim) and
        the locally normalized adapted log-probabilities, in float64 for float64 logits and float32 otherwise.
        The input is never modified.
        """
        import torch  # lazy: torch

        logp = torch.log_softmax(_working_precision(logits), dim=-1)
        if self.is_identity:
            zero = torch.zeros(logp.shape[:-1] + (1,), dtype=logp.dtype, device=logp.device)
            return AdaptedStep(logp, logp, zero, logp)
        weights = logp / self.temperature if self.temperature != 1.0 else logp.clone()
        if self.truncates:
            # a fresh tensor: saves one [..., V] copy
            weights.masked_fill_(~self.support(logits, fast_top_p=True), float("-inf"))
        log_z = torch.logsumexp(weights, dim=-1, keepdim=True)
        return AdaptedStep(logp, weights, log_z, weights - log_z)

    def log_weights(self, logits: torch.Tensor) -> torch.Tensor:
        """Unnormalized adapted log-weights: log_softmax(logits)/T on the kept support, -inf elsewhere."""
        return self.adapt(logits).log_weights

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Locally renormalized adapted log-probabilities (what sampling uses), -inf outside the support."""
        return self.adapt(logits).log_probs


def _working_precision(logits: torch.Tensor) -> torch.Tensor:
    """The logits in the precision adaptors compute in: float64 stays float64 (the exact automata), anything
    else becomes float32 (half-precision logits are too coarse for log_softmax and cumulative sums)."""
    import torch  # lazy: torch

    return logits.to(torch.promote_types(logits.dtype, torch.float32))


class AdaptedStep(NamedTuple):
    """The four views of one next-token distribution, all shaped like the logits except `log_z` (..., 1).

    Read-only: for plain ancestral sampling the three distributions are one and the same tensor."""

    logp: torch.Tensor  # log_softmax(logits): the model itself, T=1, no truncation
    log_weights: torch.Tensor  # globally normalized adaptor's weights before renormalizing
    log_z: torch.Tensor  # logsumexp(log_weights): log mass kept at this step
    log_probs: torch.Tensor  # log_weights - log_z: the locally normalized adapted distribution


#: Every parameter, in the order transformers' generate applies the corresponding warpers (Adaptor's fields;
#: `dera` is not a warper and not among them).
PARAMETERS: tuple[Parameter, ...] = tuple(Parameter(f.name, f.default, **f.metadata) for f in fields(Adaptor)
                                          if "warper" in f.metadata)
PARAMETER_ORDER = tuple(p.name for p in PARAMETERS)
TRUNCATIONS = tuple(p.name for p in PARAMETERS if p.default is None)
_BY_NAME = {p.name: p for p in PARAMETERS}
#: What a spec may name: the warpers' parameters and `dera`.
SPEC_NAMES = (*PARAMETER_ORDER, "dera")


@dataclass(frozen=True)
class Mixture:
    """A mixture of adaptors: each string is sampled from one component, chosen with its probability.

    Spec: `mix(0.3:temperature=0.75,top_k=30|0.7:ancestral)` (probabilities summing to 1, `|` between
    components). Its expectations are exactly the probability-weighted sums of its components', which is what
    `pqtradeoff advise` recommends and what sampling a mixture checks. Each row records the component that
    sampled it (column `component`) and that component's own logq, logp_aligned and log_weight; the IMH
    analysis corrects components, sampled as configurations of their own, not mixtures (a mixture's pool
    means are reported as what sampling it gives).
    """

    weights: tuple[float, ...]
    components: tuple[Adaptor, ...]

    def __post_init__(self) -> None:
        if len(self.components) < 2 or len(self.weights) != len(self.components):
            raise PQError(f"mixture {self!s}: give at least two components, each with its probability")
        if any(not (0.0 < w <= 1.0) for w in self.weights) or abs(sum(self.weights) - 1.0) > 1e-9:
            raise PQError(f"mixture {self!s}: probabilities {list(self.weights)} must be in (0, 1] and sum "
                          "to 1")
        if len({str(c) for c in self.components}) != len(self.components):
            raise PQError(f"mixture {self!s} names a component twice")

    def __str__(self) -> str:
        parts = (f"{w!r}:{c}" for w, c in zip(self.weights, self.components, strict=False))
        return "mix(" + "|".join(parts) + ")"

    @property
    def family(self) -> str:
        return "mixture"

    @property
    def temperature(self) -> float:
        """Not one temperature: NaN (sorts, never compares equal)."""
        return math.nan

    def choose(self, uniforms: Any) -> Any:
        """The component index of each row, from one uniform in [0, 1) per row."""
        import numpy as np  # lazy: startup

        edges = np.cumsum(np.asarray(self.weights, dtype=np.float64))[:-1]
        return np.searchsorted(edges, np.asarray(uniforms, dtype=np.float64), side="right")


@dataclass(frozen=True)
class BestOfN:
    """N candidates from an adaptor, one kept by the study's reward (`sampling.best_of_n`).

    Spec: the adaptor's spec plus `best_of_n=N` (keep the best) or `soft_best_of_n=N,lambda=L` (keep candidate
    i with probability proportional to exp(r_i / L)), e.g. `temperature=0.7,best_of_n=8`. Its law has no
    per-token log q: the analysis reports it by its sample means (as a mixture's), never IMH-corrects it.
    """

    base: Adaptor
    selection: Selection

    def __post_init__(self) -> None:
        if not isinstance(self.base, Adaptor):
            raise PQError(f"{self.selection}: best-of-N wraps one adaptor spec, not {self.base!s}")

    def __str__(self) -> str:
        return f"{self.base},{self.selection}"

    @property
    def family(self) -> str:
        if self.base.family == "ancestral":
            return str(self.selection)
        return f"{self.base.family},{self.selection}"

    @property
    def temperature(self) -> float:
        return self.base.temperature

    @property
    def realigns(self) -> bool:
        return self.base.realigns


#: Spec keys that make a `BestOfN` (not adaptor parameters).
SELECTION_KEYS = ("best_of_n", "soft_best_of_n", "lambda")


def _split_selection(spec: str, text: str) -> tuple[str, Selection | None]:
    """The spec without its best-of-N keys, and the `Selection` they make (None: there are none)."""
    keep, found = [], {}
    for part in text.split(","):
        name, sep, raw = part.partition("=")
        if sep and name.strip() in SELECTION_KEYS:
            if name.strip() in found:
                raise PQError(f"adaptor spec {spec!r}: parameter {name.strip()!r} is given twice")
            found[name.strip()] = raw.strip()
        else:
            keep.append(part)
    if not found:
        return text, None
    if "best_of_n" in found and "soft_best_of_n" in found:
        raise PQError(f"adaptor spec {spec!r}: give best_of_n=N or soft_best_of_n=N,lambda=L, not both")
    if "soft_best_of_n" in found and "lambda" not in found:
        raise PQError(f"adaptor spec {spec!r}: soft_best_of_n needs lambda=L (its temperature, > 0)")
    if "lambda" in found and "soft_best_of_n" not in found:
        raise PQError(f"adaptor spec {spec!r}: lambda=L applies to soft_best_of_n=N only")
    key = "best_of_n" if "best_of_n" in found else "soft_best_of_n"
    raw = found[key]
    if not raw.isascii() or not raw.isdigit():
        raise PQError(f"adaptor spec {spec!r}: {key}={raw!r} is not an integer")
    soft = None
    if "lambda" in found:
        soft = spec_number(found["lambda"], float)
        if soft is None:
            raise PQError(f"adaptor spec {spec!r}: lambda={found['lambda']!r} is not a number")
    return ",".join(keep) or "ancestral", Selection(int(raw), soft)


def realigning(configs: list[Any]) -> list[Adaptor]:
    """The configurations (mixture components included) that set `dera`: they need the prior to sample."""
    out = []
    for c in configs:
        c = c.base if isinstance(c, BestOfN) else c
        for a in (c.components if isinstance(c, Mixture) else (c,)):
            if isinstance(a, Adaptor) and a.dera is not None:
                out.append(a)
    return out


def parse_mixture(spec: str) -> Mixture:
    """`mix(w1:spec1|w2:spec2|...)` -> Mixture; a one-line PQError names what cannot be read."""
    inner = spec.strip()[len("mix("):]
    if not inner.endswith(")"):
        raise PQError(f"adaptor spec {spec!r}: a mixture is mix(w1:spec1|w2:spec2), closed by ')'")
    weights, components = [], []
    for part in inner[:-1].split("|"):
        weight, sep, component = part.partition(":")
        number = spec_number(weight.strip(), float)
        if number is not None:
            weights.append(number)
        else:
            raise PQError(f"adaptor spec {spec!r}: {part!r} is not probability:spec, e.g. "
                          "0.3:top_k=30") from None
        if not sep or component.strip().startswith("mix("):
            raise PQError(f"adaptor spec {spec!r}: {part!r} is not probability:spec (no nested mixtures)")
        components.append(parse(component))
    return Mixture(tuple(weights), tuple(components))


_INTEGER = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")


def spec_number(raw: str, kind: type) -> int | float | None:
    """A spec's number as written in ASCII (`30`, `0.95`, `1e-4`); None for anything else - Python's own
    int() and float() would also read full-width or other Unicode digits, `1_000`, `inf` and `nan`."""
    pattern = _INTEGER if kind is int else _FLOAT
    return kind(raw) if pattern.fullmatch(raw) else None


def parse(spec: str | Adaptor | Mixture | BestOfN) -> Adaptor | Mixture | BestOfN:
    """Parse a spec string such as `ancestral` or `temperature=0.75,top_p=0.95` into an `Adaptor` (a
    `mix(...)` spec into a `Mixture`, one with `best_of_n=N` into a `BestOfN`)."""
    if isinstance(spec, (Adaptor, Mixture, BestOfN)):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise PQError(f"adaptor spec {spec!r} is empty: use e.g. 'ancestral' or 'temperature=0.7,top_p=0.9'")
    text = spec.strip()
    if text.startswith("mix("):
        if any(f"{k}=" in text for k in SELECTION_KEYS):
            raise PQError(f"adaptor spec {spec!r}: best-of-N wraps one adaptor, not a mixture")
        return parse_mixture(text)
    base, selection = _split_selection(spec, text)
    if selection is not None:
        return BestOfN(parse(base), selection)  # type: ignore[arg-type]
    if text == "ancestral":
        return Adaptor()
    values: dict[str, float | int] = {}
    for part in text.split(","):
        part = part.strip()
        if part == "ancestral":
            raise PQError(f"adaptor spec {spec!r}: 'ancestral' stands alone; drop it to combine parameters")
        name, sep, raw = part.partition("=")
        name, raw = name.strip(), raw.strip()
        if not sep or not name or not raw:
            raise PQError(f"adaptor spec {spec!r}: cannot read {part!r}; expected name=value, e.g. top_p=0.9")
        if name not in SPEC_NAMES:
            raise PQError(
                f"adaptor spec {spec!r}: unknown parameter {name!r}; known: ancestral, "
                f"{', '.join(SPEC_NAMES)}"
            )
        if name in values:
            raise PQError(f"adaptor spec {spec!r}: parameter {name!r} is given twice")
        kind = _BY_NAME[name].kind if name in _BY_NAME else float
        value = spec_number(raw, kind)
        if value is None:
            kind = "an integer" if kind is int else "a number"
            raise PQError(f"adaptor spec {spec!r}: {name}={raw!r} is not {kind} (ASCII digits, e.g. 30 or "
                          "0.95)")
        values[name] = value
    return Adaptor(**values)  # type: ignore[arg-type]


def parse_grid(specs: list[str], temperatures: list[float] | None = None) -> list[Adaptor]:
    """Parse several specs; with `temperatures`, cross each spec (without a temperature) with each
    temperature."""
    adaptors = [parse(s) for s in specs]
    if temperatures:
        for spec, a in zip(specs, adaptors, strict=True):
            a = a.base if isinstance(a, BestOfN) else a
            if isinstance(a, Mixture):
                raise PQError(f"adaptor spec {spec!r} is a mixture: give it under adaptors, not families "
                              "(its components set their own temperatures)")
            if a.temperature != 1.0:
                raise PQError(f"adaptor spec {spec!r} sets a temperature and temperatures are crossed in "
                              "too: give the spec without its temperature")
        crossed = []
        for a in adaptors:
            base = a.base if isinstance(a, BestOfN) else a
            for t in temperatures:
                kwargs = {n: getattr(base, n) for n in SPEC_NAMES}
                kwargs["temperature"] = t
                hot = Adaptor(**kwargs)
                crossed.append(BestOfN(hot, a.selection) if isinstance(a, BestOfN) else hot)
        adaptors = crossed
    seen: set[str] = set()
    unique = []
    for a in adaptors:
        if str(a) not in seen:
            seen.add(str(a))
            unique.append(a)
    return unique


# ------------------------------------------------------------------------------------------ what-if specs
#: The separator of a range value in a what-if spec: `temperature=0.5:1.5:0.05` is 0.5, 0.55, ..., 1.5.
RANGE_SEPARATOR = ":"
#: Most adaptors one what-if list may expand to (each is a column of every scored string).
MAX_WHAT_IF = 1000


def _range_values(spec: str, name: str, raw: str) -> list[str]:
    """`start:stop:step` -> the values start, start + step, ... up to stop (included when it lands on the
    grid, to 1e-9 of a step), written with at most 12 significant digits (0.55, never 0.5500000000000001)."""
    parts = raw.split(RANGE_SEPARATOR)
    if len(parts) != 3:
        kind = _BY_NAME[name].kind
        example = "10:50:10" if kind is int else "0.5:1.5:0.05"
        raise PQError(f"what-if spec {spec!r}: {name}={raw!r} is not a range start:stop:step, e.g. "
                      f"{name}={example}")
    kind = _BY_NAME[name].kind
    numbers = []
    for part in parts:
        number = spec_number(part.strip(), kind)
        if number is None:
            what = "an integer" if kind is int else "a number"
            raise PQError(f"what-if spec {spec!r}: {name}={raw!r}: {part.strip()!r} is not {what}")
        numbers.append(number)
    start, stop, step = numbers
    if not all(math.isfinite(v) for v in numbers) or step <= 0:
        raise PQError(f"what-if spec {spec!r}: {name}={raw!r}: need finite start and stop and a step > 0")
    if stop < start:
        raise PQError(f"what-if spec {spec!r}: {name}={raw!r} is an empty range (stop {stop!r} < start "
                      f"{start!r})")
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    if count > MAX_WHAT_IF:
        raise PQError(f"what-if spec {spec!r}: {name}={raw!r} has {count} values: at most {MAX_WHAT_IF}")
    if kind is int:
        return [str(start + i * step) for i in range(count)]
    return [repr(float(f"{start + i * step:.12g}")) for i in range(count)]


def check_what_if(specs: list[str]) -> list[str]:
    """A settings model's validator of a what-if list: the specs unchanged, or ValueError with the one line
    `expand_what_if` gives."""
    try:
        expand_what_if(specs)
    except PQError as err:
        raise ValueError(str(err)) from None
    return specs


def expand_what_if(specs: list[str]) -> list[Adaptor]:
    """Every adaptor a what-if list names: each spec is one adaptor, or a sweep where any parameter is a range
    `start:stop:step` (several ranges in one spec cross), e.g. `temperature=0.5:1.5:0.05,top_p=0.9`.
    Duplicates are dropped, first mention kept. A what-if adaptor is one plain adaptor: no mixture, best-of-N
    or DeRa (their laws are not a per-token q the aligned model's logits alone give). One-line PQError on a
    malformed or empty sweep."""
    import itertools

    out: list[Adaptor] = []
    seen: set[str] = set()
    for spec in specs:
        if not isinstance(spec, str) or not spec.strip():
            raise PQError(f"what-if spec {spec!r} is empty: use e.g. 'temperature=0.5:1.5:0.1,top_p=0.9'")
        text = spec.strip()
        if text.startswith("mix(") or any(f"{k}=" in text for k in (*SELECTION_KEYS, "dera")):
            raise PQError(f"what-if spec {spec!r}: a what-if adaptor is one plain adaptor (temperature and "
                          "truncations): mixtures, best-of-N and DeRa have no per-token q from the aligned "
                          "model alone")
        choices: list[list[str]] = []
        for part in text.split(","):
            name, sep, raw = part.partition("=")
            if sep and RANGE_SEPARATOR in raw:
                name = name.strip()
                if name not in _BY_NAME:
                    raise PQError(f"what-if spec {spec!r}: unknown parameter {name!r}; known: "
                                  f"{', '.join(PARAMETER_ORDER)}")
                choices.append([f"{name}={v}" for v in _range_values(spec, name, raw)])
            else:
                choices.append([part])
        for combo in itertools.product(*choices):
            a = parse(",".join(combo))
            if not isinstance(a, Adaptor):  # pragma: no cover - refused above
                raise PQError(f"what-if spec {spec!r} is not one plain adaptor")
            if str(a) not in seen:
                seen.add(str(a))
                out.append(a)
                if len(out) > MAX_WHAT_IF:
                    raise PQError(f"what-if list expands to more than {MAX_WHAT_IF} adaptors")
    return out
