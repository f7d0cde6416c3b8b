"""Bootstrapped corpora against naive row resampling, correlations against direct formulas, the trade-off
fit against numpy's, the frontier against brute force."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from pqtradeoff.analysis import stats
from pqtradeoff.errors import PQError


def _chain_path(rng, n=40, length=3000):
    """A fake chain: a sticky path over n pool strings (runs of repeated states, as IMH produces)."""
    runs = rng.integers(0, n, size=length // 5)
    return np.repeat(runs, 5)[:length]


def test_count_based_corpora_equal_naive_resampling_in_distribution():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40) * 3.0
    y = x + rng.normal(size=40)
    path = _chain_path(rng)
    visits = np.bincount(path, minlength=40)
    corpora, size = 4000, 200
    fast = stats.corpus_means(visits, {"x": x, "y": y}, corpora, size, np.random.default_rng(1))
    naive_rng = np.random.default_rng(2)
    naive = np.array([x[path[naive_rng.integers(len(path), size=size)]].mean() for _ in range(corpora)])
    # Exact moments of a corpus mean: E = sum f_i x_i, Var = var_f(x) / M.
    f = visits / visits.sum()
    mean = f @ x
    var = f @ (x - mean) ** 2 / size
    for draws in (fast["x"], naive):
        assert abs(draws.mean() - mean) < 4 * math.sqrt(var / corpora)
        assert draws.var(ddof=1) / var == pytest.approx(1.0, abs=0.1)
    # Two samples from one law: their variances agree (F test) and a KS test does not reject.
    assert sps.ks_2samp(fast["x"], naive).pvalue > 0.001
    assert fast["y"].mean() == pytest.approx(f @ y, abs=4 * math.sqrt(f @ (y - f @ y) ** 2 / size / corpora))


@pytest.mark.parametrize("pool, size", [(40, 200), (3000, 50)])  # count vectors; draws (corpora < pool)
def test_both_corpus_samplers_match_the_exact_moments(pool, size):
    """The count-vector sampler (corpus larger than the pool) and the inverse-CDF one (smaller): each corpus
    mean has E = sum f_i x_i and Var = var_f(x) / M exactly; a KS test against naive resampling does not
    reject."""
    rng = np.random.default_rng(5)
    x = rng.standard_exponential(size=pool) * 2.0
    visits = rng.integers(0, 4, size=pool)
    corpora = 4000
    draws = stats.corpus_means(visits, {"x": x}, corpora, size, np.random.default_rng(6))["x"]
    f = visits / visits.sum()
    mean = f @ x
    var = f @ (x - mean) ** 2 / size
    assert abs(draws.mean() - mean) < 4 * math.sqrt(var / corpora)
    assert draws.var(ddof=1) / var == pytest.approx(1.0, abs=0.1)
    naive_rng = np.random.default_rng(7)
    naive = np.array([x[naive_rng.choice(pool, size=size, p=f)].mean() for _ in range(corpora)])
    assert sps.ks_2samp(draws, naive).pvalue > 0.001


@pytest.mark.parametrize("pool, size", [(30, 100), (300, 20)])
def test_corpus_means_chunking_changes_nothing(monkeypatch, pool, size):
    rng = np.random.default_rng(4)
    visits = rng.integers(0, 5, size=pool)
    x = rng.normal(size=pool)
    whole = stats.corpus_means(visits, {"x": x}, 50, size, np.random.default_rng(9))["x"]
    monkeypatch.setattr(stats, "_CHUNK_CELLS", 70)  # a few corpora per draw
    monkeypatch.setattr(stats, "_BLOCK_CELLS", 40)  # and a corpus or two per Poisson inversion
    chunked = stats.corpus_means(visits, {"x": x}, 50, size, np.random.default_rng(9))["x"]
    np.testing.assert_array_equal(whole, chunked)


@settings(max_examples=80, deadline=None)
@given(weights=st.lists(st.floats(1e-12, 1e6), min_size=1, max_size=40))
def test_alias_table_gives_each_cell_its_probability(weights):
    """The law an alias table encodes, summed cell by cell (kept mass plus mass aliased to it), is freq."""
    freq = np.array(weights) / np.sum(weights)
    prob, alias = stats.alias_table(freq)
    n = freq.size
    implied = prob / n
    np.add.at(implied, alias, (1.0 - prob) / n)
    np.testing.assert_allclose(implied, freq, rtol=0, atol=1e-12)


def test_alias_draws_follow_the_law():
    freq = np.array([0.5, 0.3, 0.15, 0.049, 0.001])
    draws = stats.alias_draws(np.random.default_rng(0), *stats.alias_table(freq), 200_000)
    observed = np.bincount(draws, minlength=freq.size)
    assert sps.chisquare(observed, freq * draws.size).pvalue > 0.001


@pytest.mark.parametrize("size", [1, 2, 5, 40, 3000])
def test_poissonized_counts_are_multinomial(size):
    """Every corpus has exactly `size` strings; one string's count is Binomial(size, f_i) and two strings'
    joint counts have the multinomial covariance -size f_i f_j (chi-square and moment checks)."""
    freq = np.array([0.45, 0.3, 0.15, 0.07, 0.03])
    corpora = 40_000
    streams = np.random.default_rng(size).spawn(3)
    counts = stats.multinomial_counts(streams, freq, corpora, size)
    assert counts.shape == (corpora, freq.size) and (counts >= 0).all()
    np.testing.assert_array_equal(counts.sum(axis=1), size)
    for i in (0, 3):
        k = np.arange(size + 1)
        expected = sps.binom.pmf(k, size, freq[i]) * corpora
        observed = np.bincount(counts[:, i], minlength=size + 1)
        keep = expected >= 5  # bins too rare for the chi-square approximation are pooled into one
        obs = np.append(observed[keep], observed[~keep].sum())
        exp = np.append(expected[keep], expected[~keep].sum())
        obs, exp = (obs, exp) if exp[-1] > 0 else (obs[:-1], exp[:-1])
        assert sps.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 0.001
    cov = np.cov(counts[:, 0], counts[:, 1])[0, 1]
    want = -size * freq[0] * freq[1]
    se = math.sqrt(size * size * freq[0] * freq[1] * (1 + freq[0] + freq[1]) / corpora) + 1e-9
    assert abs(cov - want) < 5 * se


def test_corpus_means_bad_sizes():
    with pytest.raises(PQError, match="corpora=0"):
        stats.corpus_means(np.ones(3), {"x": np.ones(3)}, 0, 10, np.random.default_rng(0))
    with pytest.raises(PQError, match="corpus_size=0"):
        stats.corpus_means(np.ones(3), {"x": np.ones(3)}, 5, 0, np.random.default_rng(0))


def test_correlations_equal_direct_formulas():
    rng = np.random.default_rng(3)
    x = rng.normal(size=500)
    y = 0.3 * x + rng.normal(size=500)
    c = stats.correlations(x, y, confidence=0.9)
    r = np.corrcoef(x, y)[0, 1]
    rho = np.corrcoef(pd.Series(x).rank(), pd.Series(y).rank())[0, 1]
    n = len(x)
    assert c.pearson == pytest.approx(r, abs=1e-12)
    assert c.spearman == pytest.approx(rho, abs=1e-12)
    t = r * math.sqrt((n - 2) / (1 - r * r))
    assert c.pearson_p == pytest.approx(2 * sps.t.sf(abs(t), n - 2), rel=1e-6)
    z = sps.norm.ppf(0.95)
    assert c.pearson_ci == pytest.approx([math.tanh(math.atanh(r) - z / math.sqrt(n - 3)),
                                             math.tanh(math.atanh(r) + z / math.sqrt(n - 3))], abs=1e-9)
    se = math.sqrt(1.06 / (n - 3))
    assert c.spearman_ci == pytest.approx([math.tanh(math.atanh(rho) - z * se),
                                              math.tanh(math.atanh(rho) + z * se)], abs=1e-9)


def test_correlations_undefined_cases_say_why():
    assert "at least 4" in stats.correlations([1, 2, 3], [1, 2, 3]).note
    c = stats.correlations(np.ones(10), np.arange(10.0))
    assert c.spearman is None and "constant" in c.note


def test_tradeoff_fit_equals_polyfit_and_t_interval():
    rng = np.random.default_rng(5)
    x = rng.normal(-50, 5, size=12)
    y = -0.8 * x + rng.normal(size=12)
    fit = stats.tradeoff_fit(x, y, confidence=0.95)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    se = math.sqrt(resid @ resid / (len(x) - 2) / np.sum((x - x.mean()) ** 2))
    crit = sps.t.ppf(0.975, len(x) - 2)
    assert fit.slope == pytest.approx(slope) and fit.intercept == pytest.approx(intercept)
    assert fit.slope_ci == pytest.approx([slope - crit * se, slope + crit * se])


def test_tradeoff_fit_degenerate_inputs():
    one = stats.tradeoff_fit([1.0], [2.0])
    assert not one.defined and "at least 2 configurations" in one.note
    two = stats.tradeoff_fit([1.0, 2.0], [2.0, 1.0])
    assert two.defined and two.slope == pytest.approx(-1.0) and two.slope_ci is None
    flat = stats.tradeoff_fit([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])
    assert not flat.defined and "same mean log prior" in flat.note


def _brute_frontier(x, y):
    keep = []
    for i in range(len(x)):
        dominated = any(
            x[j] >= x[i] and y[j] >= y[i] and (x[j] > x[i] or y[j] > y[i]) for j in range(len(x))
        )
        keep.append(not dominated)
    return np.array(keep)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 5), st.integers(-5, 5)), min_size=1, max_size=20))
def test_pareto_frontier_equals_brute_force(points):
    x = np.array([p[0] for p in points], dtype=float)
    y = np.array([p[1] for p in points], dtype=float)
    front = stats.pareto_frontier(x, y)
    np.testing.assert_array_equal(front, _brute_frontier(x, y))
    assert front.any()


# ------------------------------------------------------------------------- numpy-only statistics vs scipy
# The toy avoids importing scipy (about a second at start-up); these statistics must be scipy's, bit for bit,
# so its summary numbers are those scipy would give.
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False)


@st.composite
def paired_samples(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Two equal-length samples, often with ties (values rounded to a few levels)."""
    n = draw(st.integers(3, 60))
    x = np.array(draw(st.lists(finite, min_size=n, max_size=n)))
    y = np.array(draw(st.lists(finite, min_size=n, max_size=n)))
    if draw(st.booleans()):
        x, y = np.round(x / 2e5), np.round(y / 3e5)
    return x, y


@settings(max_examples=150, deadline=None)
@given(paired_samples())
def test_rank_correlations_equal_scipy_exactly(sample: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = sample
    np.testing.assert_array_equal(stats.rankdata(x), sps.rankdata(x))
    spear, pear = stats.spearman_pearson(x, y)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        assert spear is None and pear is None
        return
    assert spear == float(sps.spearmanr(x, y).statistic)
    assert pear == float(sps.pearsonr(x, y).statistic)


def test_two_points_or_a_constant_input_have_no_correlation():
    assert stats.spearman_pearson(np.array([1.0, 2.0]), np.array([2.0, 1.0])) == (None, None)
    assert stats.spearman_pearson(np.array([1.0, 2.0, 3.0]), np.ones(3)) == (None, None)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 500), st.floats(0.05, 5.0), st.integers(0, 2**32 - 1))
def test_entropy_equals_scipy_exactly(n: int, alpha: float, seed: int) -> None:
    probs = np.random.default_rng(seed).dirichlet(np.full(n, alpha))
    probs = probs[probs > 0]
    # scipy's entr is a C -x log x whose log may round differently from numpy's in the last bit
    assert stats.entropy(probs) == pytest.approx(float(sps.entropy(probs)), rel=1e-15, abs=0)


def test_count_means_equal_means_over_the_expanded_corpora():
    rng = np.random.default_rng(3)
    table = rng.normal(size=(7, 2))
    counts = rng.multinomial(50, np.full(7, 1 / 7), size=4)
    want = np.array([[table[np.repeat(np.arange(7), c), k].mean() for k in range(2)] for c in counts])
    np.testing.assert_allclose(stats.count_means(counts, table), want, rtol=0, atol=1e-14)


@pytest.mark.parametrize("rates", [[0.0, 0.004, 0.7, 1.0, 3.5], [99.5, 105.25, 210.0], [18_000.0, 2.0]])
def test_poisson_inverse_is_the_quantile_of_scipys_cdf(rates):
    """Every variate equals the brute-force inverse of scipy's Poisson cdf at the word's uniform: the
    smallest k with u < P(X <= k) (repeated rates share a table; the guide only speeds the search)."""
    rates = np.array(rates * 3)
    tables = stats.poisson_tables(rates)
    rng = np.random.default_rng(11)
    words = rng.bit_generator.random_raw((4000, rates.size))
    words[0] = 0  # u = 0 and the largest u
    words[1] = np.uint64(2**64 - 1)
    got = stats.poisson_inverse(tables, words)
    u = (words >> np.uint64(11)) * 2.0**-53
    for i, rate in enumerate(rates):
        cdf = sps.poisson.cdf(np.arange(int(rate + 20 * math.sqrt(rate) + 60)), rate)
        want = np.searchsorted(cdf, u[:, i], side="right")
        # Where a step of the cdf is within float rounding of u (the largest u against a tail cdf that rounds
        # to 1), the two cdfs' last bits decide: there, the variate must still be a quantile to rounding.
        near = np.abs(cdf[np.minimum(want, cdf.size - 1)] - u[:, i]) < 1e-12
        near |= np.abs(cdf[np.maximum(want - 1, 0)] - u[:, i]) < 1e-12
        k = got[:, i].astype(np.int64)
        quantile = (cdf[np.minimum(k, cdf.size - 1)] >= u[:, i] - 1e-12) & (
            (k == 0) | (cdf[np.maximum(k - 1, 0)] <= u[:, i] + 1e-12))
        assert np.all((k == want) | (near & quantile))
        assert np.mean(got[:, i] == want) > 0.999


def test_poisson_tables_hold_the_whole_law():
    """Each rate's table sums to 1 and has the Poisson mean and variance (no mass lost in the cut tails)."""
    for rate in (0.3, 7.0, 150.0, 40_000.0):
        lo, pmf = stats.poisson_pmf(rate)
        k = lo + np.arange(pmf.size)
        assert pmf.sum() == pytest.approx(1.0, abs=1e-14)
        assert k @ pmf == pytest.approx(rate, rel=1e-12)
        assert (k - rate) ** 2 @ pmf == pytest.approx(rate, rel=1e-9)
        np.testing.assert_allclose(pmf, sps.poisson.pmf(k, rate), rtol=1e-9, atol=1e-300)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(4, 400), coupling=st.floats(-3, 3), ties=st.booleans(), seed=st.integers(0, 2**32 - 1),
       confidence=st.floats(0.5, 0.999))
def test_correlations_equal_scipy_stats(n, coupling, ties, seed, confidence):
    """Every number of `correlations` (computed on scipy.special) equals scipy.stats' pearsonr (with its
    interval), spearmanr and norm.ppf for the Fisher interval, to rounding."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = coupling * x + rng.normal(size=n)
    if ties:
        x, y = np.round(x, 1), np.round(y, 1)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return
    c = stats.correlations(x, y, confidence)
    pr, sr = sps.pearsonr(x, y), sps.spearmanr(x, y)
    ci = pr.confidence_interval(confidence_level=confidence)
    close = {"rel": 1e-9, "abs": 1e-300}
    assert c.pearson == pytest.approx(pr.statistic, **close)
    assert c.pearson_p == pytest.approx(pr.pvalue, **close)
    assert c.pearson_ci == pytest.approx([ci.low, ci.high], **close)
    assert c.spearman == pytest.approx(sr.statistic, **close)
    assert c.spearman_p == pytest.approx(sr.pvalue, **close)
    z = sps.norm.ppf(0.5 + confidence / 2)
    rho = float(sr.statistic)
    se = math.sqrt(1.06 / (n - 3))
    clipped = min(max(rho, -1 + 1e-15), 1 - 1e-15)
    assert c.spearman_ci == pytest.approx([math.tanh(math.atanh(clipped) - z * se),
                                           math.tanh(math.atanh(clipped) + z * se)], **close)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 60), slope=st.floats(-5, 5), noise=st.floats(0, 3), seed=st.integers(0, 2**32 - 1),
       confidence=st.floats(0.5, 0.999))
@example(n=3, slope=1.0, noise=5e-324, seed=0, confidence=0.5)  # the case CI found
def test_linregress_and_quantiles_equal_scipy_stats(n, slope, noise, seed, confidence):
    """`linregress` and the quantiles (scipy.special) against scipy.stats.linregress, t.ppf and norm.ppf."""
    rng = np.random.default_rng(seed)
    x = rng.normal(-50, 5, size=n)
    y = slope * x + noise * rng.normal(size=n)
    got, want = stats.linregress(x, y), sps.linregress(x, y)
    for name in ("slope", "intercept", "rvalue", "pvalue", "stderr"):
        w = getattr(want, name)
        # on an exact line (noise 0, or below y's rounding: hypothesis found 5e-324) r is 1 up to rounding,
        # and a p-value below 1e-9 is that rounding (hypothesis found n=3: scipy 9e-11, ours 0)
        tiny = 1e-9 if name == "pvalue" and noise < 1e-12 else 1e-12
        assert getattr(got, name) == pytest.approx(w, rel=1e-9, abs=tiny, nan_ok=True), name
    assert stats.normal_quantile(confidence) == pytest.approx(sps.norm.ppf(confidence), rel=1e-12)
    if n > 2:
        want = sps.t.ppf(confidence, n - 2)
        assert stats.student_quantile(confidence, n - 2) == pytest.approx(want, rel=1e-12)
