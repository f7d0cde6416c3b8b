"""The kept-token sampling step against the dense one and against transformers' warpers' own supports."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_nucleus import lm_like

from pqtradeoff.errors import PQError
from pqtradeoff.sampling import sampler, truncated
from pqtradeoff.sampling.adaptors import Adaptor, parse

GRID = ["top_k=30", "top_k=50", "top_p=0.9", "top_p=0.95", "typical_p=0.9", "eta_cutoff=0.0009",
        "epsilon_cutoff=0.0003", "min_p=0.05", "top_k=1", "top_p=0.3", "typical_p=0.2"]
TEMPERATURES = [1.0, 0.5, 0.75, 1.5]


def logits_batch(seed: int, vocab: int = 2000) -> torch.Tensor:
    """LM-like rows, peaked and flat, some on a grid (many exact ties), some with -inf entries, one NaN."""
    rows = [lm_like(24, vocab, seed), 3 * lm_like(8, vocab, seed + 1), 0.3 * lm_like(8, vocab, seed + 2),
            lm_like(8, vocab, seed + 3, step=0.05), lm_like(4, vocab, seed + 4, step=1.0)]
    masked = lm_like(4, vocab, seed + 5)
    masked[:, ::3] = float("-inf")
    nan = lm_like(1, vocab, seed + 6)
    nan[0, 5] = float("nan")
    return torch.cat([*rows, masked, nan]).contiguous()


def kept_sets(adaptor, logits) -> dict[int, set[int]]:
    kept = truncated.kept_tokens(adaptor, logits)
    out = {}
    for rows, indices, counts in kept.parts:
        for r, idx, c in zip(rows.tolist(), indices.tolist(), counts.tolist(), strict=True):
            out[r] = set(idx[:c])
    assert not set(out) & set(kept.todo.tolist())
    assert set(out) | set(kept.todo.tolist()) == set(range(logits.shape[0]))
    return out


def warper_sets(adaptor, logits) -> list[set[int]]:
    support = adaptor.support(logits)
    return [set(torch.nonzero(row).squeeze(-1).tolist()) for row in support]


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("spec", GRID)
def test_kept_tokens_are_the_warpers_support(spec, temperature):
    adaptor = parse(f"temperature={temperature},{spec}" if temperature != 1.0 else spec)
    logits = logits_batch(7)
    ours, theirs = kept_sets(adaptor, logits), warper_sets(adaptor, logits[:-1])  # eta's warper refuses NaN
    for r, kept in ours.items():
        assert kept == theirs[r], (spec, temperature, r)
    assert logits.shape[0] - 1 not in ours  # the NaN row goes to the dense path


@pytest.mark.parametrize("spec", [*GRID, "temperature=0.8,top_k=40", "temperature=0.75,top_p=0.95"])
def test_sampling_step_equals_the_dense_step(spec):
    """Same tokens; log p the same number; log q and log Z the same up to float32 summation order."""
    adaptor = parse(spec)
    logits = logits_batch(11)[:-1]  # the NaN row: below
    keys = sampler.row_keys(0, np.arange(logits.shape[0]), np.zeros(logits.shape[0], dtype=np.int64), spec)
    for step in range(3):
        tokens, host = sampler.sample_step(adaptor, logits, keys, step)
        dense_tokens, dense = sampler._dense_step(adaptor, logits, sampler.step_uniforms(keys, step))
        assert torch.equal(tokens, dense_tokens)
        assert np.array_equal(host[0], dense[0]) and np.array_equal(host[2], dense[2])
        np.testing.assert_allclose(host[[1, 3]], dense[[1, 3]], rtol=0, atol=2e-6)


def test_a_nan_row_is_refused_as_on_the_dense_path():
    logits = logits_batch(3)
    keys = np.arange(logits.shape[0], dtype=np.uint64)
    with pytest.raises(PQError, match="NaN or infinite logits"):
        sampler.sample_step(parse("top_p=0.9"), logits, keys, 0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**31 - 1), st.sampled_from(["top_p", "typical_p"]), st.floats(0.01, 0.995),
       st.sampled_from([1.0, 0.6, 1.3]), st.sampled_from([None, 0.05, 1e-3]))
def test_nucleus_cuts_equal_the_warpers(seed, name, mass, temperature, step):
    spec = f"{name}={mass!r}"
    adaptor = parse(f"temperature={temperature},{spec}" if temperature != 1.0 else spec)
    logits = lm_like(12, 1500, seed, step)
    theirs = warper_sets(adaptor, logits)
    for r, kept in kept_sets(adaptor, logits).items():
        assert kept == theirs[r]


@pytest.mark.parametrize(("spec", "most"), [("top_k=30", 8), ("top_p=0.95", 8), ("eta_cutoff=0.0009", 8),
                                            ("typical_p=0.9", 0)])
def test_lm_like_rows_are_decided_on_their_candidates(spec, most):
    """The fast path is taken: on untied LM-like rows at most one row in ten goes to the dense path (typical:
    none, its margin rows are cut on the sorted row)."""
    logits = torch.cat([lm_like(40, 4000, 3), 2 * lm_like(40, 4000, 4)])
    assert truncated.kept_tokens(parse(spec), logits).todo.size <= most


def test_which_adaptors_and_logits_take_the_path():
    x = lm_like(4, 2000, 0)
    assert truncated.applies(parse("top_p=0.9"), x)
    assert not truncated.applies(parse("ancestral"), x)
    assert not truncated.applies(parse("temperature=0.7"), x)
    assert not truncated.applies(parse("top_k=40,top_p=0.9"), x)  # two truncations: dense
    assert not truncated.applies(parse("top_k=5000"), x)
    assert not truncated.applies(parse("top_p=0.9"), x.double())
    assert not truncated.applies(parse("top_p=0.9"), x[:, :500])
    assert not truncated.applies(parse("top_p=0.9"), x[:0])


def tiny_tail_row(seed: int = 0) -> torch.Tensor:
    """300 likely tokens and 48,852 each too small to survive float32 addition to their partial sums: the
    typical warper, normalizing in the order of its shifted scores (the tail last), drops their 4.9e-5 of
    mass, so its cumulative probabilities run that much above the exact ones."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((49152,), -14.5) + 0.1 * torch.rand(49152, generator=g)
    x[:300] = torch.randn(300, generator=g)
    return x[None]


def test_typical_leaves_a_cut_the_warpers_rounding_can_move_to_the_warper(monkeypatch):
    x = tiny_tail_row()
    shifted = truncated._shifted_scores(x)[0]
    order = torch.sort(shifted, -1).indices
    exact = np.cumsum(torch.softmax(x.double(), -1).gather(-1, order)[0].numpy())
    adaptor = Adaptor(typical_p=float(exact[150] + 1e-5))  # the exact cut and the warper's differ
    theirs = warper_sets(adaptor, x)[0]
    assert kept_sets(adaptor, x)[0] == theirs  # within the margin: cut on the sorted row, as the warper cuts
    monkeypatch.setattr(truncated, "typical_margin", lambda vocab: 2e-6)  # below the warper's error: wrong
    assert kept_sets(adaptor, x)[0] != theirs


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("mass", [0.9, 0.2, 0.999])
def test_typical_cut_on_the_sorted_row_is_the_warpers(monkeypatch, temperature, mass):
    """Every row through `_typical_sorted` (the margin made 1, as on a CPU of unknown vector width): peaked,
    flat, tied on a grid, masked rows, and the tiny-tail row whose warper cut float64 would place elsewhere;
    rows sorted as a subset of the batch."""
    monkeypatch.setattr(truncated, "typical_margin", lambda vocab: 1.0)
    adaptor = parse(f"temperature={temperature},typical_p={mass}" if temperature != 1.0 else
                    f"typical_p={mass}")
    logits = logits_batch(5, vocab=49152)[:-1]
    logits = torch.cat([logits, tiny_tail_row(1)]).contiguous()
    ours, theirs = kept_sets(adaptor, logits), warper_sets(adaptor, logits)
    assert set(ours) == set(range(logits.shape[0]))  # nothing left to the dense path
    for r, kept in ours.items():
        assert kept == theirs[r], r
    tokens, host = sampler.sample_step(adaptor, logits, np.arange(logits.shape[0], dtype=np.uint64), 0)
    dense_tokens, dense = sampler._dense_step(adaptor, logits, sampler.step_uniforms(
        np.arange(logits.shape[0], dtype=np.uint64), 0))
    assert torch.equal(tokens, dense_tokens)
    np.testing.assert_allclose(host[[1, 3]], dense[[1, 3]], rtol=0, atol=2e-6)


def test_typical_margin_bounds_the_warpers_normalization(monkeypatch):
    """The margin is the bound on the warper's float32 normalizer over its sorted row, ceil(V / lanes) x
    2^-24 (+ MARGIN), and it covers the warper's cumulative masses against float64 ones on the tiny-tail row
    (its error 4.9e-5) and on LM-like rows; a CPU of unknown vector width counts one lane."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert truncated.typical_margin(49152) == truncated.MARGIN + 3072 * 2.0**-24
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert truncated.typical_margin(49152) == truncated.MARGIN + 6144 * 2.0**-24
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    assert truncated.typical_margin(1000) == truncated.MARGIN + 1000 * 2.0**-24
    monkeypatch.undo()
    rows = torch.cat([tiny_tail_row(2), lm_like(6, 49152, 9), 2 * lm_like(6, 49152, 10)])
    order = torch.sort(truncated._shifted_scores(rows)[0], -1).indices
    ordered = rows.gather(-1, order)
    warper = ordered.softmax(-1).cumsum(-1).double()
    exact = ordered.double().softmax(-1).cumsum(-1)
    error = (warper - exact).abs().amax(-1)
    assert float(error[0]) > 1e-5  # the tail's loss shows
    assert float(error.max()) < truncated.typical_margin(49152)


def test_a_row_below_the_epsilon_cutoff_keeps_its_tied_most_likely_tokens():
    """No token reaches the cutoff: the warper keeps every token at the largest score (its
    min_tokens_to_keep, ties included); so does the kept-token path. (eta's threshold is at most
    sqrt(eps) x exp(-H) <= the largest probability, and min-p's is a fraction of it: never empty.)"""
    x = torch.zeros(2, 5000)
    x[0, [7, 100, 4000]] = 1.0  # three tied maxima, each with probability 5.4e-4 < 0.001
    x[1, 5] = 1.0
    adaptor = parse("epsilon_cutoff=0.001")
    ours, theirs = kept_sets(adaptor, x), warper_sets(adaptor, x)
    assert ours[0] == theirs[0] == {7, 100, 4000}
    assert ours[1] == theirs[1] == {5}
