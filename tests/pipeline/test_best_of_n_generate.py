"""Best-of-N through `generate`: N candidates per row in one decode, ranked by the reward, one kept.

Oracle: an automaton with a finite language (every string of at most 4 words), whose strings and their
probabilities under p+ are enumerated, so the kept string's law is `best_of_n.finite_law` exactly."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from pqtradeoff.errors import PQError
from pqtradeoff.models.fsa import TransitionReward, align
from pqtradeoff.pipeline.generate import PromptRecord, generate_corpus
from pqtradeoff.sampling.adaptors import parse
from pqtradeoff.sampling.best_of_n import finite_law, kl_estimate

from automata_helpers import bounded_prior


@pytest.fixture(scope="module")
def finite():
    prior = bounded_prior(3, 4, seed=4)
    rng = np.random.default_rng(4)
    reward = TransitionReward(prior, rng.normal(0.0, 1.0, prior.log_probs.shape))
    return align(prior, reward, 1.0), reward


def language(model):
    """Every complete string (words then EOS) with its probability."""
    eos = model.eos_token_id
    out = {}
    for length in range(0, 5):
        for words in itertools.product(range(eos), repeat=length):
            y = [*words, eos]
            lp = model.log_prob(y)
            if np.isfinite(lp):
                out[tuple(y)] = math.exp(lp)
    return out


def run(finite, tmp_path, spec, n=4000, seed=0, batch_size=None):
    al, reward = finite
    prompt = PromptRecord(0, "", al.aligned.encode_prompt(""))
    generate_corpus(al.aligned, [prompt], [parse(spec)], num_generations=n, max_new_tokens=8, seed=seed,
                    batch_size=batch_size, out_dir=tmp_path, settings={}, sample_block=n, progress=False,
                    reward=reward)
    return pd.read_parquet(tmp_path)


@pytest.mark.parametrize("spec", ["best_of_n=4", "soft_best_of_n=4,lambda=0.5",
                                  "temperature=0.7,best_of_n=2"])
def test_kept_strings_follow_the_closed_form(finite, tmp_path, spec):
    al, reward = finite
    bon = parse(spec)
    table = run(finite, tmp_path, spec)
    if bon.base.temperature == 1.0:
        strings = language(al.aligned)
    else:  # the base sampler q_T, enumerated the same way from its locally normalized tables
        from pqtradeoff.exact.closed_forms import adapted_tables
        q = al.aligned.with_log_probs(adapted_tables(al.aligned, bon.base).log_probs)
        strings = language(q)
    ys = list(strings)
    p = np.array([strings[y] for y in ys])
    r = np.array([reward.score(list(y)) for y in ys])
    exact = float(finite_law(p, r, bon.selection) @ r)
    kept = table["bon_rewards"].map(list).to_list()
    assert all(len(k) == bon.selection.n for k in kept)
    values = np.array([reward.score(list(t)) for t in table["token_ids"]])
    assert np.allclose(values, [k[i] for k, i in zip(kept, table["bon_kept"], strict=True)])
    if bon.selection.soft is None:  # the kept one is the best
        assert np.allclose(values, [max(k) for k in kept])
    se = values.std(ddof=1) / math.sqrt(len(values))
    assert abs(values.mean() - exact) < 4 * se, (values.mean(), exact, se)
    assert exact > float(p @ r)  # best-of-N moves the mean reward up


def test_rows_depend_on_the_row_alone(finite, tmp_path):
    a = run(finite, tmp_path / "a", "best_of_n=4", n=300, batch_size=7)
    b = run(finite, tmp_path / "b", "best_of_n=4", n=300, batch_size=300)
    pd.testing.assert_frame_equal(a.sort_values("sample_id").reset_index(drop=True),
                                  b.sort_values("sample_id").reset_index(drop=True))


def test_best_of_n_without_a_reward_is_one_line(finite, tmp_path):
    al, _ = finite
    prompt = PromptRecord(0, "", al.aligned.encode_prompt(""))
    with pytest.raises(PQError, match="best-of-N.*ranks its candidates by the reward at generation time"):
        generate_corpus(al.aligned, [prompt], [parse("best_of_n=2")], num_generations=2, max_new_tokens=4,
                        seed=0, batch_size=None, out_dir=tmp_path, settings={}, progress=False)
    assert not any(tmp_path.iterdir())


def test_analysis_reports_best_of_n_by_its_sample_means(finite, tmp_path):
    from pqtradeoff.analysis.advise import advise
    from pqtradeoff.analysis.analyze import make_settings, run_analysis
    from pqtradeoff.pipeline.score import score_corpus

    al, reward = finite
    prompt = PromptRecord(0, "", al.aligned.encode_prompt(""))
    generate_corpus(al.aligned, [prompt], [parse("ancestral"), parse("best_of_n=4")], num_generations=500,
                    max_new_tokens=8, seed=0, batch_size=None, out_dir=tmp_path / "corpus", settings={},
                    sample_block=500, progress=False, reward=reward)
    scored = score_corpus(tmp_path / "corpus", tmp_path / "scored", prior=al.prior, reward=reward,
                          settings={}, progress=False).out_dir
    table = pd.read_parquet(scored)
    summary = run_analysis(table, tmp_path / "analysis",
                           make_settings(corpora=20, corpus_size=50, imh_steps=2000, seed=0, plots=False))
    assert [c.adaptor for c in summary.configs] == ["temperature=1.0"]
    (bon,) = summary.skipped
    rows = table[table["adaptor"] == "temperature=1.0,best_of_n=4"]
    assert bon.adaptor == "temperature=1.0,best_of_n=4" and "best-of-N" in bon.reason
    assert bon.local_mean_reward == pytest.approx(rows["reward"].mean())
    assert bon.kl_aligned is None and bon.kl_bound_base == pytest.approx(math.log(4) - 0.75)
    per_row = kl_estimate(4, np.exp(rows["logq"].to_numpy(float)))  # the kept string's base probability
    assert bon.kl_base_estimate == pytest.approx(per_row.mean())
    assert 0 < bon.kl_base_estimate < bon.kl_bound_base  # these strings have mass: below the bound
    assert bon.local_mean_reward > summary.configs[0].reward.local_mean
    advice = advise(summary.to_json(), min_reward=float(bon.local_mean_reward))
    assert advice.imh_skipped_used == ["temperature=1.0,best_of_n=4"]
