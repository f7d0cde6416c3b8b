"""`advise`: hull frontier, mixtures and their intervals on synthetic summaries whose answers are known by
hand."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from pqtradeoff.analysis.advise import advise, describe, efficient_hull
from pqtradeoff.errors import PQError

from scored_helpers import make_scored

SE = 0.1
CRIT = 1.959963984540054
#: (mean log prior, mean reward). Upper-right hull: A, B, C, D (slopes -0.5, -2/3, -2); E, F, G lie below it.
POINTS = {
    "temperature=1.5": (-10.0, 5.0),  # A
    "temperature=1.25": (-8.0, 4.0),  # B
    "temperature=1.0": (-5.0, 2.0),  # C
    "temperature=0.5": (-4.0, 0.0),  # D
    "temperature=0.75,top_k=30": (-6.0, 1.5),  # F
    "temperature=1.0,top_p=0.9": (-6.45, 2.95),  # G, just below the B-C segment, close to its middle
}
SKIPPED = {"temperature=1.0,top_k=30": (-9.0, 3.0)}  # E: skipped by IMH, local means recorded


def summary() -> dict:
    def local(x, y):
        return {"local_mean_log_prior": x, "local_mean_log_prior_se": SE, "local_mean_reward": y,
                "local_mean_reward_se": SE}
    return {
        "configs": [{"adaptor": a, "n_strings": 100, **local(*xy)} for a, xy in POINTS.items()],
        "skipped": [{"adaptor": a, "reason": "all weights zero", "n_strings": 50, **local(*xy)}
                    for a, xy in SKIPPED.items()]
        + [{"adaptor": "temperature=2.0", "reason": "diverges", "n_strings": 0, "local_mean_reward": None,
            "local_mean_reward_se": None, "local_mean_log_prior": None, "local_mean_log_prior_se": None}],
    }


def test_min_reward_between_vertices_mixes_the_two_neighbours():
    advice = advise(summary(), min_reward=3.0)
    c = advice.choice
    assert advice.reachable and c.kind == "mixture"
    assert c.adaptors == ["temperature=1.25", "temperature=1.0"] and c.weights == pytest.approx([0.5, 0.5])
    assert c.mean_reward.mean == pytest.approx(3.0) and c.mean_log_prior.mean == pytest.approx(-6.5)
    se = math.sqrt(0.25 * SE**2 * 2)
    assert c.mean_reward.se == pytest.approx(se)
    assert c.mean_reward.ci == pytest.approx([3 - CRIT * se, 3 + CRIT * se])
    assert advice.best_single.adaptors == ["temperature=1.25"]  # B: E reaches 3 too but keeps less log prior
    assert advice.indistinguishable == ["temperature=1.0,top_p=0.9"]
    assert advice.frontier == ["temperature=0.5", "temperature=1.0", "temperature=1.25", "temperature=1.5"]
    assert advice.imh_skipped_used == ["temperature=1.0,top_k=30"] and "temperature=2.0" in advice.excluded


def test_min_reward_at_a_vertex_or_below_everything_is_one_config():
    assert advise(summary(), min_reward=4.0).choice.adaptors == ["temperature=1.25"]
    low = advise(summary(), min_reward=-1.0)
    assert low.choice.kind == "config" and low.choice.adaptors == ["temperature=0.5"]
    assert low.choice.mean_reward.se == pytest.approx(SE)


def test_out_of_reach_says_which_direction():
    advice = advise(summary(), min_reward=6.0)
    assert not advice.reachable and advice.choice is None
    assert "temperature=1.5" in advice.direction and "above 1.5" in advice.direction


def test_max_prior_loss_relative_to_the_reference():
    advice = advise(summary(), max_prior_loss=2.0)  # reference temperature=1.0 at -5: threshold -7
    c = advice.choice
    assert advice.target["min_mean_log_prior"] == pytest.approx(-7.0)
    assert c.adaptors == ["temperature=1.25", "temperature=1.0"]
    assert c.weights == pytest.approx([2 / 3, 1 / 3])
    assert c.mean_log_prior.mean == pytest.approx(-7.0) and c.mean_reward.mean == pytest.approx(10 / 3)
    assert advice.best_single.adaptors == ["temperature=1.0,top_p=0.9"]  # G: above -7 with more reward than C
    assert advise(summary(), max_prior_loss=0.0).choice.adaptors == ["temperature=1.0"]
    assert advise(summary(), max_prior_loss=50.0).choice.adaptors == ["temperature=1.5"]
    with pytest.raises(PQError, match="reference='temperature=3.0'"):
        advise(summary(), max_prior_loss=1.0, reference="temperature=3.0")


def test_bad_targets_are_refused():
    with pytest.raises(PQError, match="exactly one target"):
        advise(summary())
    with pytest.raises(PQError, match="exactly one target"):
        advise(summary(), min_reward=1.0, max_prior_loss=1.0)
    with pytest.raises(PQError, match="max_prior_loss=-1"):
        advise(summary(), max_prior_loss=-1.0)


def test_efficient_hull_against_brute_force_directions():
    """A point is on the upper-right hull iff it maximises w . p for some direction w in the open positive
    quadrant."""
    rng = np.random.default_rng(0)
    angles = np.linspace(0, np.pi / 2, 20001)[1:-1]
    for _ in range(30):
        n = int(rng.integers(1, 25))
        x, y = rng.normal(size=n), rng.normal(size=n)
        if rng.random() < 0.3:
            x = np.round(x, 1)  # ties in x
        hull = efficient_hull(x, y)
        scores = np.cos(angles)[:, None] * x[None, :] + np.sin(angles)[:, None] * y[None, :]
        winners = set(np.argmax(scores, axis=1).tolist())
        assert set(hull) == winners, (x, y, hull, winners)
        assert all(x[a] < x[b] and y[a] > y[b] for a, b in zip(hull, hull[1:], strict=False))


def test_cli_text_and_json(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps(summary()))
    run = [sys.executable, "-m", "pqtradeoff", "advise", str(tmp_path)]
    text = subprocess.run([*run, "--min-reward", "3"], capture_output=True, text=True, timeout=120)
    assert text.returncode == 0, text.stderr
    assert "mix temperature=1.25 (probability 0.500) with temperature=1.0" in text.stdout
    assert "IMH analysis skipped them: temperature=1.0,top_k=30" in text.stdout
    out = subprocess.run([*run, "--min-reward", "3", "--json"], capture_output=True, text=True, timeout=120)
    parsed = json.loads(out.stdout)
    assert parsed["choice"]["kind"] == "mixture" and parsed["choice"]["weights"] == pytest.approx([0.5, 0.5])
    bad = subprocess.run([*run], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "exactly one target" in bad.stderr


def test_advice_on_a_real_analysis_uses_local_means_of_every_sampled_config(tmp_path):
    import warnings

    from pqtradeoff.analysis.analyze import make_settings, run_analysis
    from pqtradeoff.io import to_json
    from pqtradeoff.sampling.adaptors import parse

    frame = make_scored()
    dead = "temperature=1.5,top_k=30"  # the IMH target gives it no mass; sampling it still works
    frame.loc[frame["adaptor"] == dead, "log_weight"] = -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = run_analysis(frame, tmp_path,
                               make_settings(corpora=20, corpus_size=20, imh_steps=500, plots=False))
    used = frame[frame["finished"]].assign(adaptor=lambda d: d["adaptor"].map(lambda s: str(parse(s))))
    means = used.groupby("adaptor")[["reward", "logp_prior"]].mean()
    middle = float(means["reward"].median())
    advice = advise(json.loads(to_json(summary.to_json())), min_reward=middle)
    assert dead in advice.imh_skipped_used and set(advice.frontier) <= set(means.index)
    c = advice.choice
    expected = sum(w * means.loc[a, "reward"] for w, a in zip(c.weights, c.adaptors, strict=True))
    assert c.mean_reward.mean == pytest.approx(expected) and expected >= middle - 1e-12
    prior = sum(w * means.loc[a, "logp_prior"] for w, a in zip(c.weights, c.adaptors, strict=True))
    assert c.mean_log_prior.mean == pytest.approx(prior)
    # nothing reachable that meets the target keeps more prior log-probability than the choice
    assert all(means.loc[a, "logp_prior"] <= prior + 1e-9 for a in means.index
               if means.loc[a, "reward"] >= middle)


def what_if_entry(adaptor: str, reward: float, log_prior: float, sampled=False, skipped=None) -> dict:
    from pqtradeoff.sampling.adaptors import parse

    a = parse(adaptor)
    return {"adaptor": adaptor, "family": a.family, "temperature": a.temperature, "sampled": sampled,
            "skipped": skipped, "local_mean_reward": reward, "local_mean_reward_se": 0.01,
            "local_mean_log_prior": log_prior, "local_mean_log_prior_se": 0.02, "local_ess": 500.0}


def test_what_if_curves_answer_per_family_and_say_they_are_estimates():
    s = summary() | {"what_if": [
        what_if_entry("temperature=0.8,top_p=0.9", 1.0, -5.0),
        what_if_entry("temperature=0.9,top_p=0.9", 2.1, -6.0),
        what_if_entry("temperature=1.1,top_p=0.9", 2.6, -7.0),
        what_if_entry("temperature=1.2,top_p=0.9", 9.0, -1.0, skipped="ESS 3 < 100"),  # never used
        what_if_entry("temperature=1.0", 2.5, -6.2, sampled=True),  # a sampled one: its own point already
        what_if_entry("temperature=0.6,top_k=3", 0.5, -3.0)]}
    advice = advise(s, min_reward=2.0)
    by = {w["family"]: w for w in advice.what_if}
    assert set(by) == {"top_p=0.9", "top_k=3"}
    assert by["top_p=0.9"]["adaptor"] == "temperature=0.9,top_p=0.9"  # the cheapest reaching 2.0
    assert not by["top_k=3"]["meets"]
    text = "\n".join(describe(advice))
    assert "not sampled" in text and "temperature=0.9,top_p=0.9 (mean reward 2.1" in text
    loss = advise(s, max_prior_loss=2.0, reference="temperature=1.0")  # the reference's -5.0: >= -7.0
    assert {w["family"]: w["adaptor"] for w in loss.what_if if w["meets"]} == {
        "top_p=0.9": "temperature=1.1,top_p=0.9", "top_k=3": "temperature=0.6,top_k=3"}
