"""The index-free top-p warp equals transformers' TopPLogitsWarper bit for bit, ties and edge rows
included."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from pqtradeoff.sampling.adaptors import Adaptor, parse
from pqtradeoff.sampling.nucleus import top_p_warp


def lm_like(rows: int, vocab: int, seed: int, step: float | None = None) -> torch.Tensor:
    """Zipf-shaped logits with noise; `step` rounds them to a grid so that many values tie exactly."""
    g = torch.Generator().manual_seed(seed)
    s = torch.empty(rows, 1).uniform_(0.6, 2.5, generator=g)
    logits = -s * torch.log1p(torch.rand(rows, vocab, generator=g) * vocab) + 0.3 * torch.randn(
        rows, vocab, generator=g
    )
    return torch.round(logits / step) * step if step else logits


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, 2**31 - 1),
    st.floats(0.001, 0.999),
    st.sampled_from([None, 0.5, 0.05, 1e-3]),
    st.sampled_from([1, 3]),
    st.none() | st.integers(1, 300),
)
def test_top_p_warp_equals_the_warper(seed, top_p, step, keep, top_k):
    scores = lm_like(6, 500, seed, step)
    if top_k is not None:  # -inf entries, as after a top-k warper
        scores = TopKLogitsWarper(top_k)(None, scores)
    warper = TopPLogitsWarper(top_p, min_tokens_to_keep=keep)
    assert torch.equal(top_p_warp(warper, scores), warper(None, scores.clone()))


def test_ties_at_the_cut_are_left_to_the_warper():
    """Two equal values straddle the cut: which one the warper keeps follows its sort, and so must ours."""
    scores = torch.tensor([[0.0, 0.0, 5.0, 5.0, -1.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    for top_p in (0.3, 0.5, 0.62, 0.9):
        warper = TopPLogitsWarper(top_p)
        assert torch.equal(top_p_warp(warper, scores), warper(None, scores.clone()))


def test_edge_rows():
    v = 64
    peaked = torch.full((v,), -20.0)
    peaked[7] = 5.0
    masked = torch.linspace(-3, 3, v)
    masked[::3] = float("-inf")
    scores = torch.stack([peaked, torch.zeros(v), masked, torch.full((v,), 1e30)])
    for top_p in (0.01, 0.5, 0.999):
        warper = TopPLogitsWarper(top_p)
        assert torch.equal(top_p_warp(warper, scores), warper(None, scores.clone()))


@pytest.mark.parametrize(
    "spec",
    [
        "top_p=0.9",
        "temperature=0.75,top_p=0.95",
        "temperature=1.5,top_k=40,top_p=0.8",
        "top_k=20,top_p=0.9,min_p=0.02,typical_p=0.95,epsilon_cutoff=0.0001",
        "temperature=0.5,min_p=0.1",
    ],
)
def test_support_equals_the_adaptors_own(spec):
    logits = torch.cat([lm_like(40, 2000, 1), lm_like(40, 2000, 2, step=0.05)]).reshape(2, 40, 2000)
    a = parse(spec)
    assert torch.equal(a.support(logits, fast_top_p=True), a.support(logits))
    assert Adaptor(top_p=0.5).support(logits[:, :0], fast_top_p=True).shape == (2, 0, 2000)


def test_a_cumulative_probability_equal_to_one_minus_top_p_is_removed():
    """`<=` at the cut: top_p chosen so that 1 - top_p is exactly one of the row's cumulative values."""
    scores = lm_like(1, 300, 5)
    cumulative = scores.sort().values.softmax(-1).cumsum(-1)[0]
    for k in (3, 50, 200):
        warper = TopPLogitsWarper(1 - float(cumulative[k]))
        want = warper(None, scores.clone())
        assert int(torch.isinf(want).sum()) == k + 1  # the exact hit is removed
        assert torch.equal(top_p_warp(warper, scores), want)
