"""Is it just length? The trade-off with the strings' length accounted for.

Longer strings have lower log-probability and, for many rewards, more reward, so a referee's first question
of any reward-vs-likelihood plot is whether length explains it. Per configuration: mean length, per-token
log prior (sum of log prior / sum of tokens over its strings) and the string-level partial Spearman
correlation of reward and log prior given length. Across configurations, on the plain (local) means of the
sampled strings: the trade-off slope without length, with mean length as a covariate (least squares of mean
reward on mean log prior and mean length), and within pooled length quartiles (each configuration's strings
of similar length). Local means throughout, so every slope here compares like with like (the IMH-corrected
headline slope is not length-stratified). numpy / scipy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pqtradeoff.analysis import stats
from pqtradeoff.columns import Col

#: The analysis's own per-string length column (tokens, EOS included), derived from `token_ids`.
LENGTH = "n_tokens"
#: Fewest strings of a configuration in a length stratum for its mean to enter that stratum's fit.
MIN_STRATUM_STRINGS = 10
#: Length strata: pooled quantiles (quartiles; fewer where lengths repeat).
STRATA = 4


@dataclass
class ConfigLength:
    """One configuration's length numbers (added to its row of `configs`)."""

    mean_length: float | None = None  # tokens per string, EOS included
    mean_log_prior_per_token: float | None = None  # sum of log prior / sum of tokens
    partial_spearman_given_length: float | None = None  # reward and log prior, given length (strings)


@dataclass
class Stratum:
    lo: int  # shortest length in the stratum (tokens)
    hi: int  # longest
    n_strings: int
    n_configs: int  # configurations with >= MIN_STRATUM_STRINGS strings in it
    slope: float | None = None
    slope_ci: list[float] | None = None
    means: list[dict[str, Any]] = field(default_factory=list)  # per config: adaptor, n, local means in it


@dataclass
class LengthReport:
    """summary.json's `length`."""

    defined: bool
    reason: str | None = None
    n_strings: int = 0
    spearman_length_log_prior: float | None = None
    spearman_length_reward: float | None = None
    spearman_reward_log_prior: float | None = None
    partial_spearman_given_length: float | None = None  # pooled over the analysed configurations' strings
    partial_spearman_given_length_ci: list[float] | None = None
    local_slope: float | None = None  # slope of the configs' local mean reward on local mean log prior
    local_slope_ci: list[float] | None = None
    covariate_slope: float | None = None  # ... with mean length as a covariate
    covariate_slope_ci: list[float] | None = None
    length_coefficient: float | None = None  # reward per token of mean length, in that fit
    strata: list[Stratum] = field(default_factory=list)
    verdict: str | None = None  # "survives", "does not survive", "cannot tell"
    paragraph: str = ""  # the same in words (report, README)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def partial_spearman(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> float | None:
    """Spearman correlation of x and y given z: the partial Pearson correlation of their ranks."""
    from scipy.stats import rankdata  # lazy: the toy imports the results' types, not scipy

    if len(x) < 4:
        return None
    rx, ry, rz = (rankdata(v) for v in (x, y, z))
    r = np.corrcoef(np.vstack([rx, ry, rz]))
    if not np.all(np.isfinite(r)):
        return None
    denominator = (1 - r[0, 2] ** 2) * (1 - r[1, 2] ** 2)
    if denominator <= 1e-15:
        return None
    return float((r[0, 1] - r[0, 2] * r[1, 2]) / np.sqrt(denominator))


def _spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    from scipy.stats import spearmanr  # lazy, as above

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(x, y).statistic)


def config_length(rows: pd.DataFrame, length_column: str) -> ConfigLength:
    """Length numbers of one configuration's usable strings."""
    if length_column not in rows.columns or rows.empty:
        return ConfigLength()
    n = rows[length_column].to_numpy(float)
    prior = rows[Col.LOGP_PRIOR].to_numpy(float)
    tokens = float(n.sum())
    return ConfigLength(
        mean_length=float(n.mean()),
        mean_log_prior_per_token=float(prior.sum() / tokens) if tokens > 0 else None,
        partial_spearman_given_length=partial_spearman(rows[Col.REWARD].to_numpy(float), prior, n),
    )


def length_report(data: pd.DataFrame, adaptors: Sequence[str], length_column: str,
                  confidence: float) -> LengthReport:
    """The pooled and across-configuration length analysis over the strings of `adaptors`."""
    if length_column not in data.columns:
        return LengthReport(False, "the corpus has no token_ids, so no string lengths")
    used = data[data[Col.ADAPTOR].isin(list(adaptors))]
    n = used[length_column].to_numpy(float)
    reward, prior = used[Col.REWARD].to_numpy(float), used[Col.LOGP_PRIOR].to_numpy(float)
    out = LengthReport(True, n_strings=len(used))
    if len(used) < 4 or np.ptp(n) == 0:
        out.defined, out.reason = False, "fewer than 4 strings, or every string has the same length"
        return out
    out.spearman_length_log_prior = _spearman(n, prior)
    out.spearman_length_reward = _spearman(n, reward)
    out.spearman_reward_log_prior = _spearman(prior, reward)
    out.partial_spearman_given_length = partial_spearman(reward, prior, n)
    if out.partial_spearman_given_length is not None and len(used) > 5:
        out.partial_spearman_given_length_ci = _fisher(out.partial_spearman_given_length, len(used),
                                                       confidence)
    groups = dict(tuple(used.groupby(Col.ADAPTOR, sort=True)))
    means = pd.DataFrame({a: {"reward": g[Col.REWARD].mean(), "log_prior": g[Col.LOGP_PRIOR].mean(),
                              "length": g[length_column].mean()} for a, g in groups.items()}).T
    unadjusted = stats.tradeoff_fit(means["log_prior"].to_numpy(float), means["reward"].to_numpy(float),
                                    confidence)
    if unadjusted.defined:
        out.local_slope, out.local_slope_ci = unadjusted.slope, unadjusted.slope_ci
    out.covariate_slope, out.covariate_slope_ci, out.length_coefficient = _covariate_fit(means, confidence)
    out.strata = _strata(used, n, length_column, confidence)
    out.verdict = _verdict(out)
    out.paragraph = _paragraph(out)
    return out


def _fisher(r: float, n: int, confidence: float) -> list[float]:
    """Fisher-z interval of a correlation with one variable partialled out (se = 1 / sqrt(n - 4))."""
    z, half = np.arctanh(np.clip(r, -0.999999, 0.999999)), stats.normal_quantile(0.5 + confidence / 2)
    se = 1.0 / np.sqrt(n - 4)
    return [float(np.tanh(z - half * se)), float(np.tanh(z + half * se))]


def _covariate_fit(means: pd.DataFrame, confidence: float
                   ) -> tuple[float | None, list[float] | None, float | None]:
    """Least squares mean reward ~ 1 + mean log prior + mean length across configs: the log-prior slope with
    its t interval, and the length coefficient (None with fewer than 4 configs or collinear means)."""
    k = len(means)
    if k < 4:
        return None, None, None
    x = np.column_stack([np.ones(k), means["log_prior"].to_numpy(float), means["length"].to_numpy(float)])
    y = means["reward"].to_numpy(float)
    if np.linalg.matrix_rank(x) < 3:
        return None, None, None
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    dof = k - 3
    sigma2 = float(resid @ resid) / dof
    cov = sigma2 * np.linalg.inv(x.T @ x)
    se = float(np.sqrt(cov[1, 1]))
    crit = stats.student_quantile(0.5 + confidence / 2, dof)
    return float(coef[1]), [float(coef[1] - crit * se), float(coef[1] + crit * se)], float(coef[2])


def _strata(used: pd.DataFrame, n: np.ndarray, length_column: str, confidence: float) -> list[Stratum]:
    edges = np.unique(np.quantile(n, np.linspace(0, 1, STRATA + 1)))
    bins = np.clip(np.searchsorted(edges, n, side="right") - 1, 0, max(len(edges) - 2, 0))
    out = []
    for b in range(max(len(edges) - 1, 1)):
        rows = used[bins == b]
        if rows.empty:
            continue
        counts = rows.groupby(Col.ADAPTOR)[Col.REWARD].count()
        keep = counts[counts >= MIN_STRATUM_STRINGS].index
        m = rows[rows[Col.ADAPTOR].isin(keep)].groupby(Col.ADAPTOR)[[Col.LOGP_PRIOR, Col.REWARD]].mean()
        s = Stratum(int(rows[length_column].min()), int(rows[length_column].max()), len(rows), len(m))
        s.means = [{"adaptor": a, "n_strings": int(counts[a]), "mean_log_prior": float(r[Col.LOGP_PRIOR]),
                    "mean_reward": float(r[Col.REWARD])} for a, r in m.iterrows()]
        if len(m) >= 3:
            fit = stats.tradeoff_fit(m[Col.LOGP_PRIOR].to_numpy(float), m[Col.REWARD].to_numpy(float),
                                     confidence)
            if fit.defined:
                s.slope, s.slope_ci = fit.slope, fit.slope_ci
        out.append(s)
    return out


def _verdict(r: LengthReport) -> str:
    """Whether the corpus-level slope keeps its sign, and stays away from 0, with length held fixed."""
    if r.local_slope is None or r.covariate_slope_ci is None or r.local_slope_ci is None:
        return "cannot tell"
    sign = np.sign(r.local_slope)
    lo, hi = r.covariate_slope_ci
    if (lo > 0 and sign > 0) or (hi < 0 and sign < 0):
        return "survives"
    if lo <= 0 <= hi:
        return "cannot tell" if r.local_slope_ci[0] <= 0 <= r.local_slope_ci[1] else "does not survive"
    return "does not survive"


def _paragraph(r: LengthReport) -> str:
    def num(x: float | None, fmt: str = "+.3f") -> str:
        return "n/a" if x is None else format(x, fmt)

    def ci(pair: list[float] | None) -> str:
        return f" [{pair[0]:+.3g}, {pair[1]:+.3g}]" if pair else ""

    strata = ", ".join(f"{s.lo}-{s.hi} tokens: {num(s.slope, '+.3g')}"
                       for s in r.strata if s.slope is not None)
    text = (f"Length. Over {r.n_strings} strings, length correlates with log prior at Spearman "
            f"{num(r.spearman_length_log_prior)} and with reward at {num(r.spearman_length_reward)}; "
            "reward and "
            f"log prior correlate at {num(r.spearman_reward_log_prior)}, and at "
            f"{num(r.partial_spearman_given_length)}{ci(r.partial_spearman_given_length_ci)} given length "
            "(partial Spearman). Across configurations, the slope of the local mean reward on the local "
            "mean "
            f"log prior is {num(r.local_slope, '+.4g')}{ci(r.local_slope_ci)}; with mean length as a "
            f"covariate it is {num(r.covariate_slope, '+.4g')}{ci(r.covariate_slope_ci)}")
    text += f"; within length strata ({strata})." if strata else "."
    verdict = {"survives": "The corpus-level trade-off survives holding length fixed.",
               "does not survive": "The corpus-level trade-off does not survive holding length fixed: length "
                                   "explains it.",
               "cannot tell": "Whether the corpus-level trade-off survives holding length fixed cannot be "
                              "told from these configurations."}[r.verdict or "cannot tell"]
    return f"{text} {verdict}"
