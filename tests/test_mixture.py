"""Mixtures of adaptors (`mix(0.3:spec|0.7:spec)`): parsing, choosing components, sampling, analysis."""

from __future__ import annotations

import numpy as np
import pytest

from pqtradeoff import adaptors
from pqtradeoff.errors import PQError


def test_a_mixture_parses_to_its_canonical_components_and_round_trips():
    m = adaptors.parse("mix(0.3:top_k=30,temperature=0.75|0.7:ancestral)")
    assert isinstance(m, adaptors.Mixture)
    assert str(m) == "mix(0.3:temperature=0.75,top_k=30|0.7:temperature=1.0)"
    assert adaptors.parse(str(m)) == m and m.family == "mixture"


def test_components_are_chosen_with_their_probabilities():
    m = adaptors.parse("mix(0.25:top_k=3|0.5:ancestral|0.25:temperature=0.5)")
    u = np.random.default_rng(0).random(200_000)
    counts = np.bincount(m.choose(u), minlength=3) / u.size
    assert np.allclose(counts, [0.25, 0.5, 0.25], atol=0.005)
    assert list(m.choose([0.0, 0.2499, 0.25, 0.7499, 0.75, 0.9999])) == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("spec, message", [
    ("mix(0.3:top_k=30|0.6:ancestral)", "sum to 1"),
    ("mix(0.5:ancestral|0.5:temperature=1.0)", "names a component twice"),
    ("mix(1:ancestral)", "at least two components"),
    ("mix(a:ancestral|0.5:top_k=3)", "is not probability:spec"),
    ("mix(0.5:ancestral|0.5:mix(0.5:top_k=3|0.5:top_k=4))", "no nested mixtures"),
    ("mix(0.5:ancestral|0.5:top_k=3", "closed by ')'"),
    ("mix(0.5:ancestral|0.5:top_k=0)", "top_k=0"),
])
def test_bad_mixtures_are_one_line_errors(spec, message):
    with pytest.raises(PQError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        adaptors.parse(spec)
    assert "\n" not in str(err.value)


def test_a_mixture_cannot_be_crossed_with_temperatures():
    with pytest.raises(PQError, match="is a mixture"):
        adaptors.parse_grid(["mix(0.5:ancestral|0.5:top_k=3)"], [0.5, 1.0])
