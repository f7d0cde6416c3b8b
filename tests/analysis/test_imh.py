"""IMH correction: every step of the chain against the IMH acceptance rule, its long-run law against the exact
self-normalized weights (for each target), the autocorrelation diagnostics, and the standard errors'
coverage."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pqtradeoff.analysis import imh
from pqtradeoff.errors import PQError


def _chain(log_w, steps, seed=0):
    p = imh.draw_proposals(np.asarray(log_w, float), steps, np.random.default_rng(seed))
    return p, imh.imh_chain(np.asarray(log_w, float), p)


def assert_follows_the_imh_rule(log_w, p, states):
    """Every transition, checked at once: step t moves to its proposal j_t exactly when
    log w(j_t) + E_t >= log w(s_{t-1}) (log u_t = -E_t <= log w(j_t) - log w(s_{t-1})), and stays
    otherwise."""
    assert states[0] == p.start and len(states) == len(p.index) + 1
    accept = log_w[p.index] + p.exp >= log_w[states[:-1]]
    np.testing.assert_array_equal(states[1:], np.where(accept, p.index, states[:-1]))


@pytest.mark.parametrize("scale", [0.0, 0.3, 2.0, 8.0])
def test_chain_follows_the_imh_rule(scale):
    rng = np.random.default_rng(1)
    log_w = rng.normal(size=300) * scale
    log_w[[3, 7]] = -np.inf  # zero-weight strings: proposed, never entered from a live state
    p, states = _chain(log_w, 20_000, seed=2)
    assert_follows_the_imh_rule(log_w, p, states)
    assert np.isfinite(log_w[states]).all()


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(st.floats(-30, 30) | st.just(float("-inf")), min_size=1, max_size=12).filter(
        lambda w: any(np.isfinite(w))
    ),
    steps=st.integers(1, 300),
    seed=st.integers(0, 2**32 - 1),
)
def test_chain_follows_the_imh_rule_property(weights, steps, seed):
    log_w = np.array(weights)
    p, states = _chain(log_w, steps, seed)
    assert len(states) == steps
    assert_follows_the_imh_rule(log_w, p, states)


def _exact_stationary(log_w):
    """Brute force: the IMH transition matrix on the pool (uniform proposals) and its left eigenvector."""
    n = len(log_w)
    w = np.exp(log_w - np.max(log_w))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(w[:, None] > 0, w[None, :] / w[:, None], 1.0)
    P = np.minimum(1.0, ratio) / n
    np.fill_diagonal(P, 0.0)
    np.fill_diagonal(P, 1.0 - P.sum(axis=1))
    vals, vecs = np.linalg.eig(P.T)
    v = np.real(vecs[:, np.argmin(np.abs(vals - 1.0))])
    return v / v.sum()


@pytest.mark.parametrize("target", ["global", "aligned", "none"])
def test_long_run_law_is_self_normalized_weights(target):
    rng = np.random.default_rng(7)
    n = 6
    logq = rng.normal(-10, 1, size=n)
    log_w = imh.log_importance_weights(target, rng.normal(0, 1, size=n), logq + rng.normal(0, 1, size=n),
                                           logq)
    wbar = imh.normalized_weights(log_w)
    np.testing.assert_allclose(wbar, _exact_stationary(log_w), atol=1e-10)
    _, states = _chain(log_w, 200_000, seed=11)
    freq = np.bincount(states, minlength=n) / len(states)
    np.testing.assert_allclose(freq, wbar, atol=0.01)


def test_targets_build_the_documented_weights():
    lw, la, lq = np.array([0.5, -1.0]), np.array([-3.0, -4.0]), np.array([-2.0, -5.0])
    np.testing.assert_array_equal(imh.log_importance_weights("global", lw, la, lq), lw)
    np.testing.assert_array_equal(imh.log_importance_weights("aligned", lw, la, lq), la - lq)
    np.testing.assert_array_equal(imh.log_importance_weights("none", lw, la, lq), [0.0, 0.0])
    with pytest.raises(PQError, match="target='prior'"):
        imh.log_importance_weights("prior", lw, la, lq)


def test_importance_weights_and_ess_match_direct_formulas():
    log_w = np.array([0.0, np.log(2.0), np.log(3.0), -np.inf])
    np.testing.assert_allclose(imh.normalized_weights(log_w), [1 / 6, 2 / 6, 3 / 6, 0.0])
    w = np.exp(log_w)
    assert imh.importance_ess(log_w) == pytest.approx(w.sum() ** 2 / (w**2).sum())
    # Stable far from zero: the same weights shifted by 1000 nats.
    np.testing.assert_allclose(imh.normalized_weights(log_w + 1000.0), [1 / 6, 2 / 6, 3 / 6, 0.0])


def test_all_zero_weights_is_a_clear_error():
    with pytest.raises(PQError, match="every importance weight is zero"):
        imh.normalized_weights(np.full(4, -np.inf))
    with pytest.raises(PQError, match="nowhere to start"):
        imh.draw_proposals(np.full(4, -np.inf), 10, np.random.default_rng(0))
    with pytest.raises(PQError, match="finite or -inf; got nan"):
        imh.normalized_weights(np.array([0.0, np.nan]))
    with pytest.raises(PQError, match="finite or -inf; got inf"):
        imh.draw_proposals(np.array([0.0, np.inf]), 10, np.random.default_rng(0))
    with pytest.raises(PQError, match="imh_steps=0"):
        imh.draw_proposals(np.zeros(4), 0, np.random.default_rng(0))


@given(st.integers(1, 3000))
def test_fft_size_is_the_smallest_5_smooth_length(target):
    def smooth(k):
        for q in (2, 3, 5):
            while k % q == 0:
                k //= q
        return k == 1

    size = imh.fft_size(target)
    assert size >= target and smooth(size)
    assert not any(smooth(k) for k in range(target, size))


@pytest.mark.parametrize("n", [2, 3, 7, 1000, 1001])
def test_autocorrelation_matches_direct_sum_at_every_lag(n):
    """Every lag, the last included: the padding leaves none wrapped around whatever the length."""
    x = np.random.default_rng(n).normal(size=n).cumsum()
    c = x - x.mean()
    direct = np.array([np.dot(c[: n - k], c[k:]) for k in range(n)]) / np.dot(c, c)
    np.testing.assert_allclose(imh.autocorrelation(x), direct, rtol=0, atol=1e-9)


def test_autocorrelation_matches_direct_sum():
    x = np.random.default_rng(3).normal(size=200).cumsum()
    c = x - x.mean()
    direct = np.array([np.dot(c[: len(c) - k], c[k:]) for k in range(len(c))]) / np.dot(c, c)
    np.testing.assert_allclose(imh.autocorrelation(x), direct, atol=1e-10)


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.9])
def test_integrated_autocorrelation_time_of_ar1(phi):
    rng = np.random.default_rng(5)
    e = rng.normal(size=200_000)
    x = np.empty_like(e)
    x[0] = e[0]
    for t in range(1, len(e)):  # small loop; AR(1) has tau = (1 + phi) / (1 - phi)
        x[t] = phi * x[t - 1] + e[t]
    assert imh.integrated_autocorrelation_time(x) == pytest.approx((1 + phi) / (1 - phi), rel=0.1)
    assert imh.autocorrelation(x)[1] == pytest.approx(phi, abs=0.01)


def test_run_chain_reports_acceptance_and_visits():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    flat = imh.run_chain(np.zeros(50), {"x": x}, 5000, np.random.default_rng(1))
    assert flat.acceptance_rate == 1.0  # equal weights: every proposal is taken
    assert flat.visits.sum() == 5000
    assert flat.tau["x"] == pytest.approx(1.0, abs=0.1)
    peaked = imh.run_chain(np.linspace(0, 12, 50), {"x": x}, 5000, np.random.default_rng(1))
    assert peaked.acceptance_rate < 0.2
    assert peaked.lag1["x"] > 0.5


def test_standard_errors_cover_the_true_expectation():
    """q = N(0, 1), pi = N(0.7, 1): w ~ exp(0.7 y). Over many pools the ~95% interval covers E_pi[y] = 0.7."""
    rng = np.random.default_rng(2024)
    hits, pools = 0, 300
    for k in range(pools):
        y = rng.normal(size=150)
        log_w = 0.7 * y
        chain = imh.run_chain(log_w, {"y": y}, 1500, np.random.default_rng(k))
        _, pool_var, target_var = imh.snis_mean_and_variance(log_w, y)
        se = imh.imh_standard_error(pool_var, target_var, chain.tau["y"], chain.steps)
        hits += abs(chain.mean["y"] - 0.7) <= 1.96 * se
    assert 0.90 <= hits / pools <= 0.99


def test_chain_seed_depends_on_seed_and_config_only():
    a = np.random.default_rng(imh.chain_seed(0, "temperature=1.0")).integers(1 << 30)
    b = np.random.default_rng(imh.chain_seed(0, "temperature=1.0")).integers(1 << 30)
    c = np.random.default_rng(imh.chain_seed(1, "temperature=1.0")).integers(1 << 30)
    d = np.random.default_rng(imh.chain_seed(0, "temperature=0.5")).integers(1 << 30)
    assert a == b and len({a, c, d}) == 3
