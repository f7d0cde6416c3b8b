"""top-n-sigma against a brute-force reference written from the paper's definition (Tang et al., 2411.07641):
keep v where logit_v >= max(logits) - n * sigma(logits), sigma the standard deviation of the logits (finite
ones; Bessel-corrected, as torch.std and the reference code), applied after temperature."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pqtradeoff.errors import PQError
from pqtradeoff.sampling.adaptors import Adaptor, parse
from pqtradeoff.sampling.top_n_sigma import TopNSigmaLogitsWarper


def brute_support(logits: list[float], n: float) -> list[bool]:
    finite = [x for x in logits if np.isfinite(x)]
    sigma = statistics.stdev(finite) if len(finite) > 1 else 0.0
    top = max(logits)
    return [x >= top - n * sigma for x in logits]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-30, 30, allow_nan=False), min_size=2, max_size=40),
       st.floats(0.05, 4.0), st.integers(0, 3), st.sampled_from([0.5, 1.0, 2.0]))
def test_support_is_the_papers_definition(values, n, impossible, temperature):
    row = list(values)
    for i in range(min(impossible, len(row) - 1)):  # a few impossible tokens (-inf), as automata have
        row[i] = float("-inf")
    expected = brute_support(row, n)
    for dtype in (torch.float64, torch.float32):
        logits = torch.tensor([row], dtype=dtype)
        kept = Adaptor(temperature=temperature, top_n_sigma=n).support(logits)[0].tolist()
        if dtype == torch.float32:  # the cut may fall between float32 neighbours: compare away from it
            finite = [x for x in row if np.isfinite(x)]
            sigma = statistics.stdev(finite) if len(finite) > 1 else 0.0
            margin = [abs(x - (max(row) - n * sigma)) > 1e-3 * (1 + abs(x)) for x in row]
            kept = [k for k, m in zip(kept, margin, strict=True) if m]
            expected_here = [e for e, m in zip(expected, margin, strict=True) if m]
            assert kept == expected_here
        else:
            assert kept == expected


def test_kept_set_does_not_depend_on_temperature():
    logits = torch.randn(64, 500, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    sets = [Adaptor(temperature=t, top_n_sigma=1.5).support(logits) for t in (0.3, 1.0, 1.7)]
    assert all(torch.equal(sets[0], s) for s in sets[1:])
    assert 0 < sets[0].sum() < sets[0].numel()


def test_applied_before_top_k_and_renormalized():
    logits = torch.randn(8, 50, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    a = Adaptor(temperature=0.7, top_n_sigma=1.0, top_k=3)
    warped = TopNSigmaLogitsWarper(1.0)(None, logits / 0.7)
    expected = torch.zeros_like(logits, dtype=torch.bool)
    for i, row in enumerate(warped):
        kept = torch.isfinite(row).nonzero().squeeze(-1)
        top = kept[row[kept].argsort(descending=True)[:3]]
        expected[i, top] = True
    assert torch.equal(a.support(logits), expected)
    step = a.adapt(logits)
    assert torch.allclose(step.log_probs.exp().sum(-1), torch.ones(8, dtype=torch.float64))
    assert torch.allclose(step.log_z.squeeze(-1), torch.logsumexp(step.log_weights, -1))


def test_spec_names_and_order():
    a = parse("top_k=3,top_n_sigma=1")
    assert str(a) == "temperature=1.0,top_n_sigma=1.0,top_k=3"
    assert a.family == "top_n_sigma=1.0,top_k=3" and a.truncates and parse(str(a)) == a


@pytest.mark.parametrize("spec", ["top_n_sigma=0", "top_n_sigma=-1"])
def test_bad_values_are_one_line(spec):
    with pytest.raises(PQError, match=r"top_n_sigma=.* is out of range: need a finite top_n_sigma > 0"):
        parse(spec)


@pytest.mark.parametrize("spec", ["top_n_sigma=inf", "top_n_sigma=nan"])
def test_inf_and_nan_are_not_numbers_a_spec_reads(spec):
    with pytest.raises(PQError, match=r"top_n_sigma='(inf|nan)' is not a number \(ASCII digits"):
        parse(spec)


def test_warper_checks_its_argument_by_name():
    with pytest.raises(PQError, match="top_n_sigma=True"):
        TopNSigmaLogitsWarper(True)
