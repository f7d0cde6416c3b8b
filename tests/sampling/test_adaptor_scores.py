"""`sampling.adaptor_scores.AdaptorScorer` (many adaptors on the same logits) against `Adaptor.adapt`'s own
computation through transformers' warpers, one adaptor at a time: the same kept sets (log q finite exactly
where the warpers keep the target) and the same log Z and log q to float rounding, on logits built to be
hard - ties at the top and at the cut, flat rows whose nucleus reaches past the candidates, peaked rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pqtradeoff.sampling import adaptor_scores
from pqtradeoff.sampling.adaptor_scores import AdaptorScorer, plain_scores
from pqtradeoff.sampling.adaptors import expand_what_if, parse

ADAPTORS = expand_what_if([
    "temperature=0.5:1.5:0.25", "temperature=0.5:1.5:0.5,top_p=0.9", "temperature=0.7:1.3:0.3,top_k=50",
    "top_k=1", "top_k=2", "top_p=0.5", "top_p=0.99", "temperature=1.0,min_p=0.05", "ancestral",
    "temperature=0.8,top_k=20,top_p=0.9", "temperature=1.0,eta_cutoff=0.0009"])


def hard_logits(seed: int, rows: int = 96, vocab: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, vocab, generator=g) * torch.linspace(0.3, 12, rows)[:, None]
    x[:6, :8] = x[:6, :8].max()  # ties at the top
    x[6:14] = torch.round(x[6:14] * 2) / 2  # many ties everywhere, at every cut
    x[14:20, 100:] = -30.0  # a long flat tail of equal logits
    targets = torch.randint(0, vocab, (rows,), generator=g)
    targets[::2] = x[::2].argmax(1)  # half the targets are the top token
    targets[1::4] = x[1::4].argsort(1)[:, -40]  # some sit near a top-k / top-p cut
    return x, targets


def check_equal(x: torch.Tensor, t: torch.Tensor, ads) -> AdaptorScorer:
    scorer = AdaptorScorer(ads)
    q, z = scorer(x, t)
    pq, pz = plain_scores(x, t, ads)
    for j, a in enumerate(ads):
        assert np.array_equal(np.isfinite(q[:, j]), np.isfinite(pq[:, j])), a
        kept = np.isfinite(pq[:, j])
        np.testing.assert_allclose(q[kept, j], pq[kept, j], rtol=0, atol=5e-5, err_msg=str(a))
        np.testing.assert_allclose(z[:, j], pz[:, j], rtol=0, atol=5e-5, err_msg=str(a))
    return scorer


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_kept_sets_and_scores_as_the_warpers(seed, monkeypatch):
    monkeypatch.setattr(adaptor_scores, "MIN_VOCAB", 1)
    x, t = hard_logits(seed)
    scorer = check_equal(x, t, ADAPTORS)
    # every stage was exercised: candidates, whole sorted rows, the warper for ties
    assert scorer.decided > scorer.sorted_rows > 0 and scorer.handed_over > 0


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.3, 2.0), st.floats(0.05, 0.999), st.integers(1, 200))
def test_property_random_adaptor_on_random_logits(seed, temperature, top_p, top_k):
    adaptor_scores.MIN_VOCAB, old = 1, adaptor_scores.MIN_VOCAB
    try:
        g = torch.Generator().manual_seed(seed)
        scale = float(torch.rand(1, generator=g)) * 10 + 0.1
        x = torch.randn(16, 2048, generator=g) * scale
        t = torch.randint(0, 2048, (16,), generator=g)
        ads = [parse(f"temperature={temperature!r},top_p={top_p!r}"),
               parse(f"temperature={temperature!r},top_k={top_k}"), parse(f"temperature={temperature!r}")]
        check_equal(x, t, ads)
    finally:
        adaptor_scores.MIN_VOCAB = old


def test_small_vocabularies_and_float64_take_the_plain_path():
    x, t = hard_logits(3, rows=8, vocab=64)
    for logits in (x, x.double()):
        q, z = AdaptorScorer(ADAPTORS)(logits, t)
        pq, pz = plain_scores(logits, t, ADAPTORS)
        assert np.array_equal(q, pq) and np.array_equal(z, pz)
