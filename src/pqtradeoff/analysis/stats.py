"""Bootstrapped corpora, correlations with confidence intervals, the trade-off fit and the Pareto frontier.

A corpus of M strings drawn uniformly (with replacement) from a chain of length L is a multinomial count
vector over the chain's states, and so over the distinct pool strings with the chain's visit frequencies; a
corpus mean is the dot product of those counts with the per-string values, divided by M. We draw the counts
and never build the M rows (2000 corpora x 200000 strings would be 400 million rows per config). The counts
are Poissonized (`multinomial_counts`): one Poisson variate per visited string, each the inverse of its law's
cdf at a uniform from one 64-bit random word, read from a float64 table per distinct rate (`poisson_tables`,
`poisson_inverse`), then a few hundred single draws that make the total exactly M. Exact to the float64
rounding of the tables; the same bytes for the same seed, however the corpora are chunked.

scipy.special is imported inside the functions that need it; scipy.stats never is (its import takes 0.5-1
s): its tests are written here on scipy.special, as scipy.stats computes them. The
numpy-only statistics at the end equal scipy's (bit for bit but for entropy's last bit) and serve the toy,
which must start fast.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pqtradeoff.errors import PQError

#: Counts drawn per numpy call are capped at about this many cells, so memory stays flat at any scale.
_CHUNK_CELLS = 4_000_000
#: Poisson variates inverted per numpy pass (`multinomial_counts`): a few MB of scratch, kept in cache.
_BLOCK_CELLS = 1 << 18


# ------------------------------------------------------------------------------------------ bootstrap corpora
def corpus_means(
    visits: np.ndarray,
    values: dict[str, np.ndarray],
    corpora: int,
    corpus_size: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Means of `corpora` corpora of `corpus_size` strings each, drawn uniformly from a chain with `visits`.

    `visits[i]` is how often the chain sat on pool string i; `values` maps a name to a per-string array. Only
    the visited strings can be drawn (the others have probability zero). Two exact samplers of the same law,
    whichever is cheaper: a multinomial count vector per corpus (cost ~ visited strings, the better one for
    corpora much larger than the pool; see `multinomial_counts`) or the corpus's `corpus_size` draws
    themselves (cost ~ corpus_size; see `draw_means`; it needs `visits` as integer counts). The result does
    not depend on how the corpora are split into chunks.
    """
    if corpora < 1:
        raise PQError(f"corpora={corpora!r} is out of range: need at least 1 corpus")
    if corpus_size < 1:
        raise PQError(f"corpus_size={corpus_size!r} is out of range: need at least 1 string per corpus")
    visits = np.asarray(visits)
    visited = np.flatnonzero(visits)
    if visited.size == 0:
        raise PQError("the chain visited no string: cannot draw corpora")
    freq = visits[visited] / visits[visited].sum()
    table = np.stack([np.asarray(v, dtype=np.float64)[visited] for v in values.values()], axis=1)
    out = np.empty((corpora, table.shape[1]))
    # ~20 ns per pool string for a count vector, ~8 ns per draw (benchmarks/analysis.py --load): draws win
    # up to corpora about 2.5x the pool.
    by_draws = corpus_size < 2 * visited.size and np.issubdtype(visits.dtype, np.integer)
    # Draws: a uniform position in the chain's path (the visited strings each repeated visits[i] times) is a
    # string drawn with probability visits[i] / sum(visits): one integer and one gather per draw.
    path = (np.repeat(np.arange(visited.size, dtype=np.int32), visits[visited].astype(np.int64))
            if by_draws else None)
    streams = None if by_draws else rng.spawn(3)  # the count sampler's three streams (`multinomial_counts`)
    tables = None if by_draws else count_tables(freq, corpus_size)
    rows = max(1, _CHUNK_CELLS // (corpus_size if by_draws else visited.size))
    for lo in range(0, corpora, rows):
        hi = min(corpora, lo + rows)
        if by_draws:
            out[lo:hi] = draw_means(rng, path, table, hi - lo, corpus_size)
        else:
            out[lo:hi] = count_means(multinomial_counts(streams, freq, hi - lo, corpus_size, tables), table)
    return {name: out[:, k].copy() for k, name in enumerate(values)}


@dataclass(frozen=True)
class CountTables:
    """What `multinomial_counts` draws from, built once per law and size: the Poisson tables of its rates
    and the alias table of freq (for the single draws)."""

    poisson: PoissonTables
    prob: np.ndarray
    alias: np.ndarray


def count_tables(freq: np.ndarray, size: int) -> CountTables:
    """`CountTables` for Multinomial(size, freq)."""
    return CountTables(poisson_tables(poissonized_rates(freq, size)), *alias_table(freq))


def multinomial_counts(streams: list[np.random.Generator], freq: np.ndarray, corpora: int, size: int,
                       tables: CountTables | None = None) -> np.ndarray:
    """Count vectors [corpora, n] ~ Multinomial(size, freq), drawn by Poissonization (exactly that law).

    Why: numpy's multinomial draws one conditional binomial per string (~90 ns each); a Poisson variate
    from an inverse-CDF table costs ~10 ns (`poisson_inverse`). Independent counts X_i ~ Poisson(lam *
    freq_i) are, given their total S, Multinomial(S, freq). A corpus whose S exceeds `size` is drawn again
    (conditioning on S leaves that law as it is), and size - S single draws from freq are added:
    Multinomial(S) + Multinomial(size - S) = Multinomial(size). lam = size - 2 sqrt(size) makes a redraw rare
    (~2% of corpora) and leaves ~2 sqrt(size) single draws per corpus (~900 at 200,000 strings, against one
    Poisson variate per string).

    `streams` are three generators, for the Poisson counts, the redraws and the single draws: each is read in
    corpus order (one 64-bit word per Poisson variate), so splitting the corpora into chunks changes no
    number.
    `tables` are `count_tables(freq, size)`, passed to reuse them across chunks.
    """
    counts_rng, redraw_rng, single_rng = streams
    tables = count_tables(freq, size) if tables is None else tables
    counts = np.empty((corpora, freq.size), dtype=np.int32)
    block = max(1, _BLOCK_CELLS // freq.size)  # rows inverted at once: their scratch arrays stay in cache
    for lo in range(0, corpora, block):
        hi = min(corpora, lo + block)
        words = counts_rng.bit_generator.random_raw((hi - lo, freq.size))
        counts[lo:hi] = poisson_inverse(tables.poisson, words)
    totals = counts.sum(axis=1)
    for row in np.flatnonzero(totals > size):  # rare: redrawn one by one, in corpus order
        while totals[row] > size:
            words = redraw_rng.bit_generator.random_raw((1, freq.size))
            counts[row] = poisson_inverse(tables.poisson, words)[0]
            totals[row] = counts[row].sum()
    missing = size - totals
    picks = alias_draws(single_rng, tables.prob, tables.alias, int(missing.sum()))
    cells = np.repeat(np.arange(corpora) * freq.size, missing) + picks
    flat = counts.reshape(-1)
    if 8 * cells.size < flat.size:  # few draws (a large pool): count them where they fell
        where, added = np.unique(cells, return_counts=True)
        flat[where] += added.astype(flat.dtype)
    else:
        flat += np.bincount(cells, minlength=flat.size).astype(flat.dtype)
    return counts


def poissonized_rates(freq: np.ndarray, size: int) -> np.ndarray:
    """The Poisson rates of `multinomial_counts`: lam * freq with lam = size - 2 sqrt(size) (at least 0)."""
    return max(size - 2.0 * math.sqrt(size), 0.0) * freq


#: Guide-table cells per Poisson rate (`poisson_tables`): the top _GUIDE_BITS bits of a variate's random word
#: pick a cell, which gives the variate, or a close lower bound, in one look-up. Any size gives the same
#: variates; 2^10 measured fastest at 2,000 strings.
_GUIDE_BITS = 10
_GUIDE = 1 << _GUIDE_BITS
#: A Poisson rate's table keeps the values within this many standard deviations (+ _SLACK) of its mode: the
#: mass beyond is below 1e-31, under the resolution of the 53-bit uniforms (2^-53).
_SIGMAS, _SLACK = 12.0, 40


@dataclass(frozen=True)
class PoissonTables:
    """Inverse-CDF tables of Poisson laws, one per distinct rate, for `poisson_inverse`.

    For rate r with values lo_r, lo_r + 1, ...: `cdf[off_r + j]` = P(X <= lo_r + j) (float64, the last
    +inf); `guide[r * _GUIDE + b]` = the flat index of the smallest value whose cdf exceeds b / _GUIDE, or its
    bitwise complement (negative) when the cell [b / _GUIDE, (b + 1) / _GUIDE) straddles a step of the cdf.
    Per string: `base` = its rate's offset in `guide`, `shift` = lo_r - off_r (value = flat index + shift).
    """

    cdf: np.ndarray
    guide: np.ndarray
    base: np.ndarray
    shift: np.ndarray


def poisson_pmf(rate: float) -> tuple[int, np.ndarray]:
    """(lo, pmf): Poisson(rate) probabilities of lo, lo+1, ... within _SIGMAS sd (+ _SLACK) of the mode,
    normalized to sum 1. From the mode outward by the ratios p(k+1)/p(k) = rate/(k+1): no factorials."""
    if rate <= 0.0:
        return 0, np.ones(1)
    mode = math.floor(rate)
    reach = int(_SIGMAS * math.sqrt(rate)) + _SLACK
    down_reach = min(mode, reach)
    peak = math.exp(mode * math.log(rate) - rate - math.lgamma(mode + 1))
    up = peak * np.cumprod(rate / np.arange(mode + 1, mode + reach + 1, dtype=np.float64))
    down = peak * np.cumprod(np.arange(mode, mode - down_reach, -1, dtype=np.float64) / rate)
    pmf = np.concatenate([down[::-1], [peak], up])
    return mode - down_reach, pmf / pmf.sum()


def poisson_tables(rates: np.ndarray) -> PoissonTables:
    """`PoissonTables` for independent Poisson variates with the given per-string rates (one table per
    distinct rate: the chain's integer visit counts give few)."""
    distinct, which = np.unique(np.asarray(rates, dtype=np.float64), return_inverse=True)
    edges = np.arange(_GUIDE + 1, dtype=np.float64) / _GUIDE
    cdfs, guides, shifts, offset = [], [], [], 0
    for rate in distinct.tolist():
        lo, pmf = poisson_pmf(rate)
        cdf = np.cumsum(pmf)
        # The table ends where the cdf stops growing in float64; that value takes what rounding left over
        # (+inf: every uniform finds a value).
        cdf = cdf[: int(np.argmax(cdf >= cdf[-1])) + 1]
        cdf[-1] = np.inf
        first = np.searchsorted(cdf, edges[:-1], side="right")  # smallest k with cdf[k] > b / _GUIDE
        exact = cdf[first] >= edges[1:]  # the whole cell maps to that k
        guides.append(np.where(exact, offset + first, ~(offset + first)))
        cdfs.append(cdf)
        shifts.append(lo - offset)
        offset += cdf.size
    return PoissonTables(np.concatenate(cdfs), np.concatenate(guides).astype(np.int32),
                         (which * _GUIDE).astype(np.int64), np.asarray(shifts, dtype=np.int32)[which])


def poisson_inverse(tables: PoissonTables, words: np.ndarray) -> np.ndarray:
    """Poisson variates [rows, n] (int32) by inversion of random 64-bit words [rows, n] (uint64).

    A word w stands for the uniform u = (w >> 11) 2^-53 (as numpy's `random` makes its doubles); the variate
    of string i is the smallest k with u < P(X_i <= k): the law's quantile at u, hence exactly Poisson(rate_i)
    to the float64 rounding of the table. The word's top bits are u's guide cell; only cells that straddle a
    step of the cdf (a few %) need u itself, and move up from the guide's lower bound one value at a time.
    """
    cells = (words >> np.uint64(64 - _GUIDE_BITS)).view(np.int64)
    cells += tables.base
    index = tables.guide[cells]
    flat_index = index.reshape(-1)
    todo = np.flatnonzero(flat_index < 0)
    if todo.size:
        at = ~flat_index[todo]
        u = (words.reshape(-1)[todo] >> np.uint64(11)) * 2.0**-53
        step = np.flatnonzero(tables.cdf[at] <= u)
        while step.size:
            at[step] += 1
            step = step[tables.cdf[at[step]] <= u[step]]
        flat_index[todo] = at
    index += tables.shift
    return index


def alias_table(freq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table of a discrete law (Vose's construction): (keep probability, alias) per cell.

    Why: a draw then costs one uniform index and one uniform number, not a binary search of the cumulative
    law (~60 ns each at 2,000 strings). Cell i is drawn with probability 1/n, kept with probability prob[i]
    and otherwise replaced by alias[i]; the construction makes each string's total probability freq_i (to
    float64 rounding: cells left at the end, whose mass rounding moved by ~1e-16, keep probability 1).
    """
    n = freq.size
    scaled = (freq * (n / freq.sum())).tolist()
    prob = np.ones(n)
    alias = np.arange(n)
    small = [i for i, v in enumerate(scaled) if v < 1.0]
    large = [i for i, v in enumerate(scaled) if v >= 1.0]
    while small and large:
        lo, hi = small.pop(), large[-1]
        prob[lo], alias[lo] = scaled[lo], hi
        scaled[hi] -= 1.0 - scaled[lo]  # the large cell gives the small one what it lacks
        if scaled[hi] < 1.0:
            small.append(large.pop())
    return prob, alias


def alias_draws(rng: np.random.Generator, prob: np.ndarray, alias: np.ndarray, count: int) -> np.ndarray:
    """`count` independent draws (cell indices) from the law of an `alias_table`.

    One uniform per draw: u * n's integer part is the cell, its fraction (uniform, ~42 bits at n = 2,000) the
    keep-or-alias coin; one number per draw also keeps the stream's use independent of how draws are chunked.
    """
    scaled = rng.random(count) * prob.size
    cell = np.minimum(scaled.astype(np.int64), prob.size - 1)  # < n always; a guard against rounding
    return np.where(scaled - cell < prob[cell], cell, alias[cell])


def draw_means(rng: np.random.Generator, path: np.ndarray, table: np.ndarray, corpora: int, size: int
               ) -> np.ndarray:
    """Means [corpora, k] of `table` [n, k] over corpora of `size` draws, each a uniform position in `path`
    (string indices, each repeated as often as the chain visited it)."""
    pick = path[rng.integers(0, path.size, size=(corpora, size))]
    out = np.empty((corpora, table.shape[1]))
    for k in range(table.shape[1]):
        out[:, k] = table[:, k][pick].mean(axis=1)
    return out


# ------------------------------------------------------------------------------------------------ correlation
def _fisher_interval(r: float, se: float, confidence: float) -> tuple[float, float]:
    """An interval for a correlation from the Fisher z-transform: tanh(atanh(r) -+ z_crit * se)."""
    crit = normal_quantile(0.5 + confidence / 2.0)
    z = math.atanh(min(max(r, -1.0 + 1e-15), 1.0 - 1e-15))
    return math.tanh(z - crit * se), math.tanh(z + crit * se)


@dataclass
class Correlation:
    """Spearman's rho and Pearson's r of y against x, with p-values and confidence intervals.

    Undefined values (n < 4, a constant input) are None, and `note` says why.
    """

    n: int  # number of (x, y) pairs
    confidence: float  # level of the intervals
    ci_method: str  # how the intervals were computed
    spearman: float | None = None
    spearman_ci: list[float] | None = None
    spearman_p: float | None = None  # two-sided p-value against no correlation
    pearson: float | None = None
    pearson_ci: list[float] | None = None
    pearson_p: float | None = None
    note: str | None = None  # why a value is undefined, or a caveat

    def to_json(self) -> dict[str, Any]:
        """The summary.json object (same field names)."""
        return asdict(self)


def correlations(x: np.ndarray, y: np.ndarray, confidence: float = 0.95) -> Correlation:
    """Spearman's rho and Pearson's r of y against x, with p-values (scipy.stats') and confidence intervals.

    Pearson's interval is scipy's (Fisher z with se 1/sqrt(n-3)); Spearman's uses the Fisher z with Fieller,
    Hartley and Pearson's se sqrt(1.06/(n-3)) - analytic equivalents of a bootstrap interval that stay cheap
    at 62,000 points. Both assume independent pairs. Undefined values (n < 4, a constant input) are None,
    with a `note` saying why.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = int(x.size)
    result = Correlation(n=n, confidence=confidence,
                         ci_method="Fisher z (Spearman: Fieller se sqrt(1.06/(n-3)))")
    if n < 4:
        result.note = f"undefined: {n} point(s), need at least 4 for a correlation with an interval"
        return result
    if np.ptp(x) == 0.0 or np.ptp(y) == 0.0:
        which = "log prior" if np.ptp(x) == 0.0 else "reward"
        result.note = f"undefined: the {which} is constant over the {n} points"
        return result
    r, rho = pearson(x, y), spearman(x, y)
    result.pearson, result.pearson_p = r, pearson_pvalue(r, n)
    result.pearson_ci = list(_fisher_interval(r, math.sqrt(1 / (n - 3)), confidence))
    result.spearman, result.spearman_p = rho, student_pvalue(rho, n - 2)
    result.spearman_ci = list(_fisher_interval(rho, math.sqrt(1.06 / (n - 3)), confidence))
    return result


# scipy.stats' tests, on scipy.special's distribution functions (the ones scipy.stats calls): importing
# scipy.stats costs 0.5-1 s, scipy.special a tenth of that (tests/analysis/test_stats.py checks them against
# scipy.stats).
def normal_quantile(q: float) -> float:
    """The standard normal's q-quantile (scipy.stats.norm.ppf)."""
    from scipy import special  # lazy: scipy.special

    return float(special.ndtri(q))


def student_quantile(q: float, dof: int) -> float:
    """Student's t's q-quantile with `dof` degrees of freedom (scipy.stats.t.ppf)."""
    from scipy import special  # lazy: scipy.special

    return float(special.stdtrit(dof, q))


def pearson_pvalue(r: float, n: int) -> float:
    """Two-sided p-value of Pearson's r of n independent normal pairs under no correlation (as
    scipy.stats.pearsonr): r follows Beta(n/2 - 1, n/2 - 1) on [-1, 1], p = 2 P(R >= |r|)."""
    from scipy import special  # lazy: scipy.special

    ab = n / 2 - 1
    return float(2 * special.betaincc(ab, ab, (abs(r) + 1) / 2))


def student_pvalue(r: float, dof: int) -> float:
    """Two-sided p-value of a correlation r through t = r sqrt(dof / ((1 + r)(1 - r))) ~ Student's t(dof)
    (scipy.stats.spearmanr's test)."""
    from scipy import special  # lazy: scipy.special

    r = np.float64(r)
    with np.errstate(divide="ignore"):  # |r| = 1: t is infinite, p 0
        t = r * np.sqrt(np.clip(dof / ((r + 1.0) * (1.0 - r)), 0.0, None))
    return float(2 * special.stdtr(dof, -abs(t)))


# --------------------------------------------------------------------------------------------- trade-off fit
@dataclass
class TradeoffFit:
    """The least-squares line mean reward = slope * mean log prior + intercept across configurations."""

    n_configs: int
    confidence: float
    method: str
    defined: bool = False  # False when no line can be fit (fewer than 2 configs, equal log priors)
    slope: float | None = None  # reward gained per nat of prior log-likelihood (negative: a trade-off)
    slope_se: float | None = None
    slope_ci: list[float] | None = None  # t interval (None with 2 configs: the line is exact)
    intercept: float | None = None
    r_squared: float | None = None
    p_value: float | None = None
    note: str | None = None
    frontier: list[str] = field(default_factory=list)  # Pareto-optimal configs, by mean log prior high to low

    def to_json(self) -> dict[str, Any]:
        """The summary.json object (same field names)."""
        return asdict(self)


def tradeoff_fit(log_prior: np.ndarray, reward: np.ndarray, confidence: float = 0.95) -> TradeoffFit:
    """Least-squares line reward = slope * log_prior + intercept across configs, slope with a t interval.

    The slope is the "exchange rate": reward gained per nat of prior log-likelihood given up (the theory
    predicts about -beta). With one config it is undefined; with two it has no interval. Inputs are the
    configs' corpus-mean estimates; their own errors are not propagated (ordinary least squares).
    """
    x = np.asarray(log_prior, dtype=np.float64)
    y = np.asarray(reward, dtype=np.float64)
    n = int(x.size)
    fit = TradeoffFit(n_configs=n, confidence=confidence, method="ordinary least squares over config means")
    if n < 2:
        fit.note = (
            f"undefined: the corpus-level trade-off needs at least 2 configurations, got {n}; "
            "a single configuration gives one point, and a line through one point has no slope"
        )
        return fit
    if np.ptp(x) == 0.0:
        fit.note = f"undefined: all {n} configurations have the same mean log prior, so no slope can be fit"
        return fit
    lr = linregress(x, y)
    if not (np.isfinite(lr.slope) and np.isfinite(lr.intercept)):
        fit.note = ("undefined: the configurations' means are not finite numbers (an overflow), so no line "
                    "fits")
        return fit
    fit.defined, fit.slope, fit.intercept = True, float(lr.slope), float(lr.intercept)
    if n == 2:
        fit.note = "2 configurations: the line is exact, so it has no standard error or interval"
        return fit
    crit = student_quantile(0.5 + confidence / 2.0, n - 2)
    fit.slope_se = float(lr.stderr)
    fit.slope_ci = [float(lr.slope - crit * lr.stderr), float(lr.slope + crit * lr.stderr)]
    fit.r_squared, fit.p_value = float(lr.rvalue**2), float(lr.pvalue)
    return fit


@dataclass(frozen=True)
class Line:
    """A least-squares line with scipy.stats.linregress's fields."""

    slope: float
    intercept: float
    rvalue: float
    pvalue: float
    stderr: float


def linregress(x: np.ndarray, y: np.ndarray) -> Line:
    """scipy.stats.linregress's operations (x not constant): the line, r, the slope's two-sided t-test
    p-value and standard error."""

    n = len(x)
    xmean, ymean = np.mean(x, None), np.mean(y, None)
    ssxm, ssxym, _, ssym = np.cov(x, y, bias=1).flat
    if ssym == 0.0:
        r = np.nan if ssxym == 0 else 0.0
    else:
        r = min(max(ssxym / np.sqrt(ssxm * ssym), -1.0), 1.0)
    slope = ssxym / ssxm
    intercept = ymean - slope * xmean
    dof = n - 2
    if dof < 1:  # two points: the line is exact (scipy: p 0 or 1, standard error 0)
        return Line(float(slope), float(intercept), float(r), float(y[0] == y[1]), 0.0)
    p = student_pvalue(r, dof)  # the slope's t-test is the correlation's
    stderr = np.sqrt((1 - r**2) * ssym / ssxm / dof)
    return Line(float(slope), float(intercept), float(r), float(p), float(stderr))


# --------------------------------------------------------------------------------------------- the frontier
def pareto_frontier(log_prior: np.ndarray, reward: np.ndarray) -> np.ndarray:
    """Which points no other point dominates (at least as high on both axes, strictly higher on one).

    These configurations give the most reward for their prior likelihood: to gain reward from one of them
    you must give up prior likelihood.
    """
    x = np.asarray(log_prior, dtype=np.float64)
    y = np.asarray(reward, dtype=np.float64)
    geq = (x[None, :] >= x[:, None]) & (y[None, :] >= y[:, None])
    gt = (x[None, :] > x[:, None]) | (y[None, :] > y[:, None])
    dominated = np.any(geq & gt, axis=1)
    return ~dominated


# ------------------------------------------------------------------------------------ counts and numpy-only
def count_means(counts: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Means [c, k] of per-string values `table` [n, k] over corpora given as count vectors `counts`
    [c, n]."""
    return count_sums(counts, table) / counts.sum(axis=1)[:, None]


def count_sums(counts: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Sums [c, k] of per-string values `table` [n, k] weighted by the count vectors `counts` [c, n].

    einsum, not BLAS: single-threaded and summed in a fixed order, so the bytes never depend on threads; one
    column at a time (a long inner loop over strings: ~3x faster than 'cs,sk->ck', whose inner loop is k).
    """
    out = np.empty((counts.shape[0], table.shape[1]))
    for k in range(table.shape[1]):
        out[:, k] = np.einsum("cs,s->c", counts, np.ascontiguousarray(table[:, k]))
    return out


# The toy needs a few statistics without importing scipy; these are written with exactly scipy's operations,
# so they give scipy's values bit for bit (entropy: to the last bit, as scipy's entr rounds its own log;
# tests/analysis/test_stats.py checks this against scipy).
def entropy(probs: np.ndarray) -> float:
    """Shannon entropy in nats of a positive probability vector; scipy.stats.entropy's exact operations."""
    probs = probs / np.sum(probs)
    return float(np.sum(-(probs * np.log(probs))))


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of x, ties given their average rank (scipy.stats.rankdata, method='average')."""
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    first = np.flatnonzero(np.concatenate([[True], ordered[:-1] != ordered[1:]]))  # start of each tie run
    runs = np.diff(first, append=len(x))
    ranks = np.empty(len(x))
    ranks[order] = np.repeat((first + 1) + (runs - 1) / 2, runs)
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson's r of the average ranks, as scipy.stats.spearmanr computes it."""
    ranked = np.column_stack([rankdata(x), rankdata(y)])
    return float(np.corrcoef(ranked, rowvar=False)[1, 0])


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r, centred and scaled before the dot product as scipy.stats.pearsonr does (no overflow)."""
    xm, ym = x - np.mean(x), y - np.mean(y)
    xmax, ymax = np.max(np.abs(xm)), np.max(np.abs(ym))
    norm_x = xmax * np.linalg.norm(xm / xmax, axis=-1)
    norm_y = ymax * np.linalg.norm(ym / ymax, axis=-1)
    return float(np.clip(np.vecdot(xm / norm_x, ym / norm_y), -1.0, 1.0))


def spearman_pearson(x: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None]:
    """(Spearman, Pearson) of x and y without p-values or intervals; None where undefined (fewer than 3
    points or a constant input). `correlations` is the full version, with scipy."""
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None, None
    return spearman(x, y), pearson(x, y)
