"""The demo's models: the default prior and lexicon show the phenomenon the demo is about."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from pqtradeoff.errors import PQError
from pqtradeoff.exact import closed_forms
from pqtradeoff.exact.demo_models import demo_models, with_rare_word
from pqtradeoff.models.fsa import random_ngram

from automata_helpers import sample


def test_demo_models_show_the_phenomenon():
    """Over the strings an adaptor grid generates, log p(y) and r(y) are positively rank-correlated, while
    the exact means of the globally normalized adaptors trade prior likelihood for reward across
    configurations; every configuration that normalizes is well conditioned for the IMH correction."""
    demo = demo_models()
    log_prior, reward, points = [], [], []
    for family in ("", ",top_k=2", ",top_p=0.9", ",typical_p=0.9"):
        for t in (0.5, 0.75, 1.0, 1.25, 1.5):
            spec = f"temperature={t}{family}"
            tables = closed_forms.adapted_tables(demo.aligned, spec)
            q = demo.aligned.with_log_probs(np.array(tables.log_probs))
            for y in sample(q, 250, seed=int(10 * t), max_length=500):
                log_prior.append(demo.prior.log_prob(y))
                reward.append(demo.reward.score(y))
            result = closed_forms.global_expectations(demo.alignment, spec)
            if result.normalizes:
                assert result.spectral_radius < 0.85 and result.ess_fraction > 0.2, spec
                points.append((result.mean_log_prior, result.mean_reward))
    assert spearmanr(log_prior, reward).statistic > 0.08  # about 0.2, standard error about 0.02
    assert len(points) >= 10
    xs, ys = zip(*points, strict=True)
    assert np.corrcoef(xs, ys)[0, 1] < -0.5


def test_with_rare_word_sets_the_probability_everywhere():
    base = random_ngram(4, 2, seed=1, eos_prob=0.3)
    rare = with_rare_word(base, 3, 0.01)
    assert np.allclose(rare.probs[:, 3], 0.01)
    assert np.allclose(rare.probs[:, base.eos_token_id], base.probs[:, base.eos_token_id])
    ratio = rare.probs[:, :3] / base.probs[:, :3]
    assert np.allclose(ratio, ratio[:, :1])  # the other words keep their proportions
    with pytest.raises(PQError, match="prob=1.5"):
        with_rare_word(base, 3, 1.5)
