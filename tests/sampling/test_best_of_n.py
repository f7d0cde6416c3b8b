"""Best-of-N and soft best-of-N: the finite closed forms against enumeration over every N-tuple of
candidates, and the row-wise choice against its definition."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from pqtradeoff.errors import PQError
from pqtradeoff.sampling.best_of_n import Selection, finite_law, finite_summary, kl_bound, kl_estimate


def enumerated_law(p, r, n, soft):
    """Sum over all len(p)^n candidate tuples: their probability times each candidate's chance to stay."""
    law = np.zeros(len(p))
    for tup in itertools.product(range(len(p)), repeat=n):
        prob = math.prod(p[i] for i in tup)
        rewards = np.array([r[i] for i in tup])
        if soft is None:
            keep = (rewards == rewards.max()).astype(float)
        else:
            keep = np.exp(rewards / soft)
        keep /= keep.sum()
        for i, k in zip(tup, keep, strict=True):
            law[i] += prob * k
    return law


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("soft", [None, 0.3, 2.0])
def test_closed_forms_equal_enumeration(n, soft):
    rng = np.random.default_rng(n)
    p = rng.dirichlet(np.ones(5))
    r = np.array([0.5, -1.0, 0.5, 2.0, 0.1])  # a tie between strings 0 and 2
    law = finite_law(p, r, Selection(n, soft))
    np.testing.assert_allclose(law, enumerated_law(p, r, n, soft), rtol=1e-9, atol=1e-12)
    assert law.sum() == pytest.approx(1.0, abs=1e-10)
    if soft is None:  # tied strings are kept in proportion to their probability
        assert law[0] / law[2] == pytest.approx(p[0] / p[2])


def test_soft_limits_are_best_of_n_and_the_base_law():
    rng = np.random.default_rng(0)
    p, r = rng.dirichlet(np.ones(30)), rng.permutation(np.linspace(0.0, 3.0, 30))  # gaps of 0.1
    np.testing.assert_allclose(finite_law(p, r, Selection(4, 0.006)), finite_law(p, r, Selection(4)),
                               atol=1e-6)
    np.testing.assert_allclose(finite_law(p, r, Selection(4, 1e4)), p, rtol=1e-3)
    with pytest.raises(PQError, match="lambda=0.001 is too small for the finite closed form"):
        finite_law(p, r, Selection(4, 0.001))


def test_kl_stays_below_the_analytic_bound():
    rng = np.random.default_rng(1)
    p, r = rng.dirichlet(np.full(300, 0.3)), rng.normal(size=300)
    for n in (2, 4, 16):
        s = finite_summary(p, r, Selection(n))
        assert 0 < s["exact_kl"] <= s["kl_bound"] + 1e-12 and s["exact_mass"] == pytest.approx(1.0, abs=1e-9)


def test_choose_keeps_the_best_or_draws_softly():
    rewards = np.array([[0.0, 3.0, 1.0], [2.0, 2.0, -1.0]])
    best = Selection(3)
    assert best.choose(rewards, np.array([0.99, 0.1])).tolist() == [1, 0]
    assert best.choose(rewards, np.array([0.0, 0.6])).tolist() == [1, 1]  # a tie: split by the uniform
    soft = Selection(3, 1.0)
    u = np.random.default_rng(0).random(200_000)
    picks = soft.choose(np.repeat(rewards[:1], len(u), axis=0), u)
    expected = np.exp(rewards[0]) / np.exp(rewards[0]).sum()
    np.testing.assert_allclose(np.bincount(picks, minlength=3) / len(u), expected, atol=4e-3)


@pytest.mark.parametrize(("args", "message"), [((0,), "best_of_n=0 is out of range"),
                                               ((True,), "best_of_n=True"),
                                               ((4, 0.0), "lambda=0.0 is out of range"),
                                               ((4, -1.0), "lambda=-1.0"), ((4, float("nan")), "lambda=nan")])
def test_bad_selections_are_one_line(args, message):
    with pytest.raises(PQError, match=message):
        Selection(*args)


@pytest.mark.parametrize("n", [2, 4, 16])
@pytest.mark.parametrize("eps", [1e-6, 0.01, 0.2, 0.7, 0.99])
def test_kl_estimate_is_the_kl_of_a_best_outcome_with_mass_over_a_continuum(n, eps):
    """Beirami et al.'s estimate against the exact KL of the closed form (`finite_law`) on the law it models:
    the best outcome of mass eps, the rest spread over 200,000 distinct rewards (a near-continuum)."""
    many = 200_000
    probs = np.concatenate([[eps], np.full(many, (1 - eps) / many)])
    rewards = np.concatenate([[many + 1.0], np.arange(many, dtype=float)])
    exact = finite_summary(probs, rewards, Selection(n))
    assert exact["kl_estimate"] == pytest.approx(float(kl_estimate(n, eps)))
    assert float(kl_estimate(n, eps)) == pytest.approx(exact["exact_kl"], rel=1e-6, abs=1e-9)
    assert exact["exact_kl"] <= kl_bound(n) + 1e-12


def test_kl_estimate_limits():
    assert kl_estimate(8, 1.0) == pytest.approx(0.0, abs=1e-12)  # one outcome: best-of-N is the base law
    assert kl_estimate(8, 1e-300) == pytest.approx(kl_bound(8))  # no mass anywhere: the bound
    assert kl_estimate(1, 0.3) == pytest.approx(0.0, abs=1e-12)  # N = 1 is the base sampler
