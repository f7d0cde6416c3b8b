"""What-if estimates: the means an adaptor that was never sampled would give, from the pooled corpus.

Every string of the pool carries, from one teacher-forced pass of the aligned model (`score --what-if`), its
log q_a(y) and log weight sum_t log Z_t under every sampled configuration and every what-if adaptor a
(columns `what_if_logq`, `what_if_log_weight`, in the order of the scoring run's `what_if_adaptors`). The
pool is then an importance sample for every adaptor whose support it covers:

- proposal: the mixture of the sampled configurations in proportion to their string counts (the balance
  heuristic, Veach and Guibas 1995), q_mix(y) = sum_c (n_c / N) q_c(y), so an adaptor between two sampled
  temperatures borrows from both;
- weights q_a / q_mix (the local, locally normalized adaptor q_a) and q_a exp(log weight_a) / q_mix (the
  global p_a; `target="aligned"`: p+ on a's support), self-normalized over the usable (finished) strings,
  which conditions on finishing exactly as the direct estimates do;
- standard errors by the delta method, sqrt(sum_i wbar_i^2 (x_i - mean)^2), and Kish's ESS.

An adaptor whose support no sampled configuration can be shown to cover (`covers`) or whose local ESS is below
`what_if_min_ess` is skipped with its reason, never given a number; one whose corrected target's ESS is below
it keeps its local estimates (what sampling it would give) and says why the corrected ones are missing
(`skipped_target`). numpy only, like the rest of the analysis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pqtradeoff.analysis.length import LENGTH
from pqtradeoff.analysis.settings import AnalysisSettings
from pqtradeoff.columns import Col
from pqtradeoff.errors import PQError
from pqtradeoff.sampling.adaptors import TRUNCATIONS, Adaptor, expand_what_if, parse

#: The series a what-if entry estimates, with the column each reads (`length` is added by the analysis).
SERIES = {"reward": Col.REWARD, "log_prior": Col.LOGP_PRIOR}


@dataclass
class WhatIfResult:
    """One adaptor's what-if estimates (keys as a row of `configs` where they apply)."""

    adaptor: str
    family: str
    temperature: float
    sampled: bool  # a configuration of the pool itself (its direct estimates are in `configs`)
    n_pool: int  # strings of the pool (all sampled configurations, usable rows)
    skipped: str | None = None  # why there is no estimate at all (None: estimated)
    skipped_target: str | None = None  # why the corrected target has none (its local q_a estimate may stand)
    ess: float | None = None  # Kish's ESS of the weights towards the corrected target
    local_ess: float | None = None  # ... towards the local adaptor q_a
    mean_reward: float | None = None  # the corrected target's (global: p_a) mean reward
    mean_reward_se: float | None = None
    mean_log_prior: float | None = None
    mean_log_prior_se: float | None = None
    local_mean_reward: float | None = None  # under q_a (what sampling a would give)
    local_mean_reward_se: float | None = None
    local_mean_log_prior: float | None = None
    local_mean_log_prior_se: float | None = None
    mean_length: float | None = None  # under q_a, in tokens
    kl_aligned: float | None = None  # KL(q_a || p+) = E_qa[log q_a - log p+]
    exact: dict[str, Any] = field(default_factory=dict)  # exact_* values given by the producer (demo)
    exact_comparison: dict[str, float] | None = None  # z-scores against them

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        exact = out.pop("exact")
        comparison = out.pop("exact_comparison")
        return out | exact | {"exact_comparison": comparison}


def covers(sampled: Adaptor, target: Adaptor) -> bool:
    """Whether every string `target` can produce is one `sampled` can produce (provably, for any model):
    an untruncated adaptor keeps every token the model allows; top-k keeps the k most likely whatever the
    temperature; a tempered top-p nucleus only grows with the temperature (the top tokens' mass falls as T
    rises) and with p; the same truncation at the same temperature keeps the same tokens."""
    if sampled.realigns or target.realigns:
        return False
    if not sampled.truncates:
        return True
    if str(sampled) == str(target):
        return True
    on = {n for n in TRUNCATIONS if getattr(sampled, n) is not None}
    target_on = {n for n in TRUNCATIONS if getattr(target, n) is not None}
    if on == target_on == {"top_k"}:
        return sampled.top_k >= target.top_k
    if on == target_on == {"top_p"}:
        return sampled.top_p >= target.top_p and sampled.temperature >= target.temperature
    return False


def snis(log_w: np.ndarray, values: np.ndarray) -> tuple[float, float, float]:
    """Self-normalized importance-sampling mean, its delta-method standard error and Kish's ESS."""
    top = np.max(log_w)
    w = np.exp(log_w - top)
    w /= w.sum()
    mean = float(np.dot(w, values))
    se = float(np.sqrt(np.sum(w**2 * (values - mean) ** 2)))
    return mean, se, float(1.0 / np.sum(w**2))


def requested_adaptors(settings: AnalysisSettings, carried: Sequence[str]) -> list[str]:
    """The what-if adaptors to estimate: those of `settings.what_if` (each must be carried by the corpus),
    or every carried one when it is empty."""
    if not settings.what_if:
        return list(carried)
    wanted = [str(a) for a in expand_what_if(settings.what_if)]
    missing = [a for a in wanted if a not in carried]
    if missing:
        raise PQError(f"what_if adaptor {missing[0]!r} ({len(missing)} in all) has no teacher-forced columns "
                      "in the scored corpus: score it again with `pqtradeoff score ... --aligned MODEL "
                      f"--what-if {missing[0]}` (in a run, [analysis] what_if adds them)")
    return wanted


def what_if_estimates(data: pd.DataFrame, carried: Sequence[str], sampled_counts: Mapping[str, int],
                      settings: AnalysisSettings) -> list[WhatIfResult]:
    """Estimate every requested what-if adaptor (and every sampled configuration, `sampled=True`) from the
    usable rows `data` of the pool.

    `carried`: the adaptors of the what-if columns, in order. `sampled_counts`: strings sampled per plain
    configuration (all rows read, finished or not: the proposal's mixture weights n_c / N count every draw).
    """
    for col in (Col.WHAT_IF_LOGQ, Col.WHAT_IF_LOG_WEIGHT):
        if col not in data.columns:
            raise PQError(f"what_if needs the scored corpus's teacher-forced columns ({col!r} is missing): "
                          "score it with `pqtradeoff score ... --aligned MODEL --what-if SPEC`")
    index = {a: j for j, a in enumerate(carried)}
    proposals = [a for a in carried if a in sampled_counts and sampled_counts[a] > 0]
    if not proposals:
        raise PQError("what_if: no sampled configuration of the corpus is among its teacher-forced adaptors, "
                      "so there is no pool to reweight")
    pool = data[data[Col.ADAPTOR].isin(proposals)]
    if pool.empty:
        raise PQError("what_if: the pool has no usable string")
    logq = _matrix(pool[Col.WHAT_IF_LOGQ], len(carried))
    log_weight = _matrix(pool[Col.WHAT_IF_LOG_WEIGHT], len(carried))
    total = sum(sampled_counts[a] for a in proposals)
    shares = np.log(np.array([sampled_counts[a] / total for a in proposals]))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_mix = np.logaddexp.reduce(logq[:, [index[a] for a in proposals]] + shares, axis=1)
    if not np.all(np.isfinite(log_mix)):
        raise PQError("what_if: a pooled string has zero probability under every sampled configuration's "
                      "teacher-forced q; were its columns computed with another model?")
    values = {name: pool[col].to_numpy(float) for name, col in SERIES.items()}
    length = pool[LENGTH].to_numpy(float) if LENGTH in pool.columns else None
    aligned = pool[Col.LOGP_ALIGNED].to_numpy(float)
    sampled_specs = [parse(a) for a in proposals]
    out = []
    for spec in requested_adaptors(settings, carried):
        j = index[spec]
        a = parse(spec)
        result = WhatIfResult(spec, a.family, a.temperature, spec in sampled_counts, len(pool))
        if not any(covers(c, a) for c in sampled_specs):
            result.skipped = ("the pool cannot be shown to cover its support: no sampled configuration keeps "
                              "every string it can produce (sample an untruncated one)")
            out.append(result)
            continue
        local = logq[:, j] - log_mix
        target = {"global": local + log_weight[:, j],
                  "aligned": np.where(np.isfinite(logq[:, j]), aligned - log_mix, -np.inf),
                  "none": local}[settings.target]
        if not np.isfinite(local).any() or not np.isfinite(target).any():
            result.skipped = "every pooled string has zero weight under it"
            out.append(result)
            continue
        _, _, result.local_ess = snis(local, values["reward"])
        _, _, result.ess = snis(target, values["reward"])
        if result.local_ess < settings.what_if_min_ess:
            result.skipped = (f"importance-sampling ESS {result.local_ess:.3g} < what_if_min_ess="
                              f"{settings.what_if_min_ess:g}: the pool holds too few strings it would "
                              "produce")
            out.append(result)
            continue
        if result.ess < settings.what_if_min_ess:
            result.skipped_target = (f"the {settings.target} target's importance-sampling ESS "
                                     f"{result.ess:.3g} < what_if_min_ess={settings.what_if_min_ess:g}: only "
                                     "what sampling it would give (local_*) is estimated")
        for name, x in values.items():
            local_mean, local_se, _ = snis(local, x)
            setattr(result, f"local_mean_{name}", local_mean)
            setattr(result, f"local_mean_{name}_se", local_se)
            if result.skipped_target is None:
                mean, se, _ = snis(target, x)
                setattr(result, f"mean_{name}", mean)
                setattr(result, f"mean_{name}_se", se)
        if length is not None:
            result.mean_length = snis(local, length)[0]
        kept = np.isfinite(logq[:, j])
        result.kl_aligned = snis(local[kept], logq[kept, j] - aligned[kept])[0]
        out.append(result)
    return out


def _matrix(column: pd.Series, width: int) -> np.ndarray:
    """A list column (one array per row) as a float64 matrix [rows, width]; one line if a row is off."""
    arrays = [np.asarray(v, dtype=np.float64) for v in column]
    bad = next((i for i, v in enumerate(arrays) if v.shape != (width,)), None)
    if bad is not None:
        raise PQError(f"column {column.name!r}: row {bad} holds {arrays[bad].shape[0]} values, but the "
                      "scoring "
                      f"run names {width} what-if adaptors: score the corpus again")
    return np.stack(arrays) if arrays else np.zeros((0, width))
