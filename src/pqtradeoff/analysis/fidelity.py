"""Alignment fidelity and the effective beta, from the scored strings alone.

If the aligned model were exactly the RLHF-optimal policy for the reward, p+(y|x) = p(y|x) exp(r(x,y)/beta) /
Z(x), every finished string would satisfy

    d(x, y) := log p+(y|x) - log p(y|x) = r(x, y) / beta - log Z(x):

within one prompt x, d is an exact linear function of r with slope 1/beta. We fit d on r with one intercept
per prompt (OLS on values demeaned within each prompt) and r on d likewise, and report

- `beta_hat` = 1 / (slope of d on r), `beta_hat_reverse` = slope of r on d (they agree when the fit is exact;
  with noise in r or d they bracket beta from the two sides, regression dilution),
- `within_prompt_r`, the correlation of d and r after removing prompt means: 1 means the aligned model is
  exactly the prior reweighted by this reward, 0 means the reward does not explain what alignment changed,
- per prompt, log Z(x) = mean over its strings of r / beta_hat - d, with the spread of that quantity.

Intervals come from a bootstrap that resamples whole prompts (strings of one prompt are not independent), all
replicates at once: a replicate's demeaned sums are the count-weighted sums of the prompts' own demeaned sums.
With a single prompt (the exact-model demo samples one empty prompt) the fit has one intercept and the
bootstrap resamples strings. d and r are properties of strings, whatever adaptor sampled them, so every
configuration's finished strings are pooled (duplicates count once per draw, as sampled).

The prior must have been scored with the prompt as context: p(y) without x is not the prior of p+(y|x), so a
corpus scored with `--prior-context none` is refused (with the reason in the result, not an exception).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pqtradeoff.analysis import stats
from pqtradeoff.columns import Col

#: Columns the fit needs.
COLUMNS = (Col.PROMPT_ID, Col.LOGP_ALIGNED, Col.LOGP_PRIOR, Col.REWARD)
#: Bootstrap replicates for the intervals.
REPLICATES = 1000
#: Counts drawn per numpy call are capped at about this many cells (memory stays flat at any scale).
_CHUNK_CELLS = 4_000_000
POOLING = ("all configurations' finished strings, skipped ones included: d and r are properties of a string, "
           "whatever adaptor sampled it")


@dataclass
class PromptLogZ:
    """The estimated log normalizer of one prompt."""

    prompt_id: int
    n_strings: int
    log_z: float  # mean over the prompt's strings of r / beta_hat - d
    log_z_sd: float | None  # spread (sd) of r / beta_hat - d over its strings: 0 when the identity is exact


@dataclass
class AlignmentFit:
    """How faithfully the aligned model is the prior reweighted by exp(r / beta), and the beta that fits
    best."""

    defined: bool
    reason: str | None = None  # why the fit is undefined
    n_strings: int = 0  # finished strings in the fit (prompts with >= 2 strings)
    n_prompts: int = 0  # prompts in the fit
    confidence: float = 0.95
    bootstrap_unit: str | None = None  # "prompts" (resampled whole) or "strings" (a single prompt)
    bootstrap_replicates: int = 0
    slope: float | None = None  # of d on r within prompts: 1 / beta
    slope_ci: list[float] | None = None
    beta_hat: float | None = None  # 1 / slope
    beta_hat_ci: list[float] | None = None  # None when the slope's interval covers 0 (beta not identified)
    beta_hat_reverse: float | None = None  # slope of r on d within prompts
    beta_hat_reverse_ci: list[float] | None = None
    within_prompt_r: float | None = None  # correlation of d and r after removing prompt means
    within_prompt_r_ci: list[float] | None = None
    residual_sd: float | None = None  # sd of d - r / beta_hat after prompt means (0: exact)
    nominal_beta: float | None = None  # the beta the user says the model was aligned with (--beta)
    note: str | None = None
    pooling: str = POOLING
    prompts: list[PromptLogZ] = field(default_factory=list)  # every prompt with a finished string

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AlignmentData:
    """The strings of the fit, demeaned within prompts (also what the alignment panel draws)."""

    prompt_ids: np.ndarray  # per prompt in the fit
    codes: np.ndarray  # per string: index of its prompt in prompt_ids
    d: np.ndarray  # log p+ - log p
    r: np.ndarray  # reward
    d_centered: np.ndarray  # d minus its prompt's mean
    r_centered: np.ndarray


def prior_without_prompt(data: pd.DataFrame, source_run: dict[str, Any] | None) -> bool:
    """Whether the prior was scored without the prompt (column `prior_context`, or the scoring run's
    settings)."""
    if "prior_context" in data.columns:
        return bool((data[Col.PRIOR_CONTEXT].astype(str) == "none").any())
    settings = (source_run or {}).get("settings") or {}
    return settings.get("prior_context") == "none"


def prepare(data: pd.DataFrame, source_run: dict[str, Any] | None) -> AlignmentData | str:
    """The finished strings of prompts with >= 2 of them, demeaned within prompts; or why there are none."""
    missing = [c for c in COLUMNS if c not in data.columns]
    if missing:
        return f"the scored corpus has no {', '.join(missing)} column(s): strings cannot be grouped by prompt"
    if prior_without_prompt(data, source_run):
        return ("the prior was scored without the prompt (prior_context 'none'): p(y) is not the prior of "
                "p+(y|x), so log p+(y|x) - log p(y) need not be linear in the reward; rescore with "
                "--prior-context prompt")
    d_all = data[Col.LOGP_ALIGNED].to_numpy(np.float64) - data[Col.LOGP_PRIOR].to_numpy(np.float64)
    r_all = data[Col.REWARD].to_numpy(np.float64)
    keep = np.isfinite(d_all) & np.isfinite(r_all) & data[Col.FINISHED].fillna(False).to_numpy(bool)
    if not keep.any():
        return "no finished string has finite logp_aligned, logp_prior and reward"
    prompt_ids, codes, counts = np.unique(data[Col.PROMPT_ID].to_numpy()[keep], return_inverse=True,
                                          return_counts=True)
    in_fit = counts[codes] >= 2
    if not in_fit.any():
        return "no prompt has 2 or more finished strings: a within-prompt fit needs them"
    fit_ids, fit_codes = np.unique(codes[in_fit], return_inverse=True)
    d, r = d_all[keep][in_fit], r_all[keep][in_fit]
    n = np.bincount(fit_codes).astype(np.float64)
    d_centered = d - (np.bincount(fit_codes, weights=d) / n)[fit_codes]
    r_centered = r - (np.bincount(fit_codes, weights=r) / n)[fit_codes]
    return AlignmentData(prompt_ids[fit_ids], fit_codes, d, r, d_centered, r_centered)


def _ratios(
    s_rr: np.ndarray, s_dd: np.ndarray, s_rd: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(slope of d on r, slope of r on d, correlation) from demeaned sums; NaN where a variance is zero."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return s_rd / s_rr, s_rd / s_dd, s_rd / np.sqrt(s_rr * s_dd)


def replicate_sums(data: AlignmentData, counts: np.ndarray) -> np.ndarray:
    """Demeaned sums (S_rr, S_dd, S_rd) of bootstrap replicates given as count matrices.

    counts: (replicates, prompts) when whole prompts are resampled - demeaning within a prompt does not
    change when the prompt is repeated, so a replicate's sums are the count-weighted prompt sums; or
    (replicates, strings) with a single prompt, whose mean then moves with the replicate.
    """
    r, d = data.r_centered, data.d_centered
    if len(data.prompt_ids) > 1:
        per_prompt = np.stack([np.bincount(data.codes, weights=w, minlength=len(data.prompt_ids))
                               for w in (r * r, d * d, r * d)], axis=1)
        return stats.count_sums(counts, per_prompt)
    moments = np.stack([r, d, r * r, d * d, r * d], axis=1)
    m = stats.count_sums(counts, moments)  # summed in a fixed order: bytes never depend on threads
    total = counts.sum(axis=1).astype(np.float64)
    return np.stack([m[:, 2] - m[:, 0] ** 2 / total, m[:, 3] - m[:, 1] ** 2 / total,
                     m[:, 4] - m[:, 0] * m[:, 1] / total], axis=1)


def _bootstrap(data: AlignmentData, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """(replicates, 3) demeaned sums, drawing the counts in chunks.

    A replicate's counts are those of `units` uniform draws with replacement: Multinomial(units, 1/units),
    the bootstrap itself, drawn by `stats.multinomial_counts` (Poissonized, ~8 ns a cell against ~20 ns a draw
    for integers counted by bincount). Its streams are read in replicate order: chunking changes no number.
    """
    units = len(data.prompt_ids) if len(data.prompt_ids) > 1 else len(data.r)
    rows = max(1, _CHUNK_CELLS // units)
    freq = np.full(units, 1.0 / units)
    tables = stats.count_tables(freq, units)
    streams = rng.spawn(3)
    out = np.empty((replicates, 3))
    for lo in range(0, replicates, rows):
        hi = min(replicates, lo + rows)
        out[lo:hi] = replicate_sums(data, stats.multinomial_counts(streams, freq, hi - lo, units, tables))
    return out


def _interval(values: np.ndarray, confidence: float) -> list[float] | None:
    """Percentile interval of the finite replicate values (None when fewer than half are finite)."""
    finite = values[np.isfinite(values)]
    if finite.size < max(2, values.size // 2):
        return None
    lo, hi = np.quantile(finite, [(1 - confidence) / 2, (1 + confidence) / 2])
    return [float(lo), float(hi)]


def prompt_log_normalizers(data: pd.DataFrame, beta_hat: float) -> list[PromptLogZ]:
    """log Z(x) = mean of r / beta_hat - d over each prompt's finished strings, with its spread."""
    d = data[Col.LOGP_ALIGNED].to_numpy(np.float64) - data[Col.LOGP_PRIOR].to_numpy(np.float64)
    v = data[Col.REWARD].to_numpy(np.float64) / beta_hat - d
    keep = np.isfinite(v) & data[Col.FINISHED].fillna(False).to_numpy(bool)
    frame = pd.DataFrame({Col.PROMPT_ID: data[Col.PROMPT_ID].to_numpy()[keep], "v": v[keep]})
    grouped = frame.groupby(Col.PROMPT_ID, sort=True)["v"].agg(["size", "mean", "std"])
    return [PromptLogZ(int(pid), int(n), float(mean), None if n < 2 else float(sd))
            for pid, n, mean,
            sd in zip(grouped.index, grouped["size"], grouped["mean"], grouped["std"], strict=True)]


def fit_alignment(data: pd.DataFrame, source_run: dict[str, Any] | None, confidence: float,
                  rng: np.random.Generator, nominal_beta: float | None = None,
                  replicates: int = REPLICATES) -> tuple[AlignmentFit, AlignmentData | None]:
    """The within-prompt fits of d on r and r on d, bootstrap intervals, and per-prompt log Z.

    Returns the result (with `defined` False and the `reason` when it cannot be fit) and the demeaned data
    (for the figure; None when undefined).
    """
    prepared = prepare(data, source_run)
    base = {"confidence": confidence, "nominal_beta": nominal_beta}
    if isinstance(prepared, str):
        return AlignmentFit(defined=False, reason=prepared, **base), None
    s_rr, s_dd, s_rd = (float(np.sum(a * b)) for a, b in ((prepared.r_centered, prepared.r_centered),
                                                           (prepared.d_centered, prepared.d_centered),
                                                           (prepared.r_centered, prepared.d_centered)))
    counts = {"n_strings": len(prepared.r), "n_prompts": len(prepared.prompt_ids)}
    for name, s in (("reward", s_rr), ("log p+ - log p", s_dd)):
        if s == 0.0:
            return AlignmentFit(defined=False, reason=f"{name} is constant within every prompt", **counts,
                                **base), None
    slope, reverse, corr = (float(v) for v in _ratios(np.array(s_rr), np.array(s_dd), np.array(s_rd)))
    sums = _bootstrap(prepared, replicates, rng)
    slopes, reverses, corrs = _ratios(sums[:, 0], sums[:, 1], sums[:, 2])
    fit = AlignmentFit(
        defined=True, **counts, **base, bootstrap_replicates=replicates,
        bootstrap_unit="prompts" if len(prepared.prompt_ids) > 1 else "strings",
        slope=slope, slope_ci=_interval(slopes, confidence), beta_hat_reverse=reverse,
        beta_hat_reverse_ci=_interval(reverses, confidence), within_prompt_r=corr,
        within_prompt_r_ci=_interval(corrs, confidence),
    )
    if len(prepared.prompt_ids) == 1:
        fit.note = "one prompt: one intercept, and the bootstrap resamples strings"
    if slope == 0.0:
        fit.note = "the slope of d on r is 0: beta is not identified"
        return fit, prepared
    fit.beta_hat = 1.0 / slope
    if fit.slope_ci is not None and (fit.slope_ci[0] > 0 or fit.slope_ci[1] < 0):
        fit.beta_hat_ci = sorted([1.0 / fit.slope_ci[1], 1.0 / fit.slope_ci[0]])
    elif fit.slope_ci is not None:
        fit.note = ("the interval of the slope of d on r covers 0: the reward does not explain what "
                    "alignment changed, and beta is not identified")
    residual = prepared.d_centered - prepared.r_centered * slope
    fit.residual_sd = float(np.sqrt(np.sum(residual * residual) / max(1, len(residual) - fit.n_prompts - 1)))
    fit.prompts = prompt_log_normalizers(data, fit.beta_hat)
    return fit, prepared
