"""What-if estimates from one pool (`analysis.what_if`): closed forms, brute force, direct sampling.

- the demo: >= 20 adaptors never sampled, against their closed forms (>= 90% within 4 s.e. on all four
  means), and every sampled configuration re-estimated from the pool equals its direct estimate within s.e.;
- the teacher-forced columns (`score --what-if`): for the configuration that sampled a string, its recorded
  logq and log_weight (exact automata: to 1e-9; no batching dependence);
- the estimator: coverage rules, the balance-heuristic proposal on a brute-force finite example;
- bad input is one line: a malformed or empty sweep, a what-if on a corpus without the columns.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pqtradeoff.analysis.analyze import make_settings
from pqtradeoff.analysis.what_if import covers, snis, what_if_estimates
from pqtradeoff.columns import Col
from pqtradeoff.demo import make_settings as demo_settings
from pqtradeoff.demo import run_demo
from pqtradeoff.errors import PQError
from pqtradeoff.sampling.adaptors import expand_what_if, parse

from cli_helpers import cli

SMALL = dict(families=["ancestral", "top_k=3", "top_p=0.9"], temperatures=[0.5, 0.75, 1.0, 1.25], dera=[0.5],
             num_generations=800, batch_size=800, imh_steps=20_000, corpora=50, corpus_size=800,
             what_if=["temperature=0.55:1.05:0.05", "temperature=0.6:1.2:0.2,top_k=4",
                      "temperature=0.6:1.0:0.2,top_p=0.8", "temperature=0.6:1.2:0.2,top_k=2"])


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("whatif")
    summary, _ = run_demo(out, demo_settings(**SMALL), progress=False)
    return out, summary


def test_never_sampled_adaptors_agree_with_their_closed_forms(demo):
    out, summary = demo
    grid = {c.adaptor for c in summary.configs} | {s.adaptor for s in summary.skipped}
    new = [w for w in summary.what_if if not w.sampled]
    assert not ({w.adaptor for w in new} & grid)
    checked = [w for w in new if w.skipped is None]
    assert len(checked) >= 20
    within = [all(abs(z) < 4 for z in w.exact_comparison.values()) for w in checked]
    assert sum(within) >= 0.9 * len(checked)
    assert all(len(w.exact_comparison) == 4 for w in checked)  # global and local, reward and log prior
    assert all(w.ess >= 100 and w.local_ess >= 100 for w in checked)
    written = json.loads((out / "summary.json").read_text())["what_if"]
    assert [w["adaptor"] for w in written] == [w.adaptor for w in summary.what_if]
    assert {"mean_reward", "mean_reward_se", "local_mean_log_prior_se", "ess", "skipped",
            "exact_mean_reward"} <= set(written[-1])
    assert (out / "what_if.png").is_file() and (out / "corpus_level.png").is_file()


def test_sampled_configurations_reestimated_from_the_pool_equal_their_direct_estimates(demo):
    _, summary = demo
    direct = {c.adaptor: c for c in summary.configs}
    pairs = [(w, direct[w.adaptor]) for w in summary.what_if if w.sampled and w.skipped is None
             and w.adaptor in direct]
    assert len(pairs) >= 10
    z = []
    for w, c in pairs:
        for name in ("reward", "log_prior"):
            s = c.series(name)
            z.append((getattr(w, f"local_mean_{name}") - s.local_mean) / s.local_mean_se)
            z.append((getattr(w, f"mean_{name}") - s.mean) / s.se)
    assert np.mean(np.abs(z) < 4) >= 0.95, z


def test_teacher_forced_columns_equal_what_sampling_recorded(demo):
    out, _ = demo
    table = pd.read_parquet(out / "scored")
    record = json.loads((out / "scored" / "_run.json").read_text())["settings"]
    order = record["what_if_adaptors"]
    assert not any(parse(a).realigns for a in order)  # DeRa rows stay out of the pool
    rows = table[table[Col.ADAPTOR].isin(order)]
    assert len(rows) > 1000
    j = rows[Col.ADAPTOR].map(order.index).to_numpy()
    logq = np.stack(rows[Col.WHAT_IF_LOGQ].to_numpy())[np.arange(len(rows)), j]
    log_weight = np.stack(rows[Col.WHAT_IF_LOG_WEIGHT].to_numpy())[np.arange(len(rows)), j]
    np.testing.assert_allclose(logq, rows[Col.LOGQ], rtol=0, atol=1e-9)
    np.testing.assert_allclose(log_weight, rows[Col.LOG_WEIGHT], rtol=0, atol=1e-9)


def test_length_fields_of_every_config(demo):
    out, summary = demo
    tokens = pd.read_parquet(out / "scored",
                             columns=[Col.ADAPTOR, Col.TOKEN_IDS, Col.FINISHED, Col.LOGP_PRIOR])
    tokens = tokens[tokens[Col.FINISHED]]
    for c in summary.configs:
        mine = tokens[tokens[Col.ADAPTOR] == c.adaptor]
        lengths = mine[Col.TOKEN_IDS].map(len)
        assert c.mean_length == pytest.approx(lengths.mean())
        assert c.mean_log_prior_per_token == pytest.approx(mine[Col.LOGP_PRIOR].sum() / lengths.sum())
        assert c.partial_spearman_given_length is None or -1 <= c.partial_spearman_given_length <= 1
    report = summary.length
    assert report.defined and report.verdict in ("survives", "does not survive", "cannot tell")
    assert "Length." in report.paragraph and report.strata


def brute_partial_spearman(x, y, z):
    """Residuals of rank regressions, correlated: the textbook definition, computed another way."""
    from scipy.stats import rankdata

    rx, ry, rz = (rankdata(v) for v in (x, y, z))
    design = np.column_stack([np.ones_like(rz), rz])
    ex = rx - design @ np.linalg.lstsq(design, rx, rcond=None)[0]
    ey = ry - design @ np.linalg.lstsq(design, ry, rcond=None)[0]
    return float(np.corrcoef(ex, ey)[0, 1])


def test_partial_spearman_against_residual_definition():
    from pqtradeoff.analysis.length import partial_spearman

    rng = np.random.default_rng(0)
    z = rng.integers(1, 30, 500).astype(float)
    x = -z + rng.normal(size=500)
    y = 0.5 * z + rng.normal(size=500) + 0.3 * x
    assert partial_spearman(x, y, z) == pytest.approx(brute_partial_spearman(x, y, z), abs=1e-12)


# ------------------------------------------------------------------------------------------ the estimator
def test_coverage_rules():
    untruncated, k50, k30 = parse("temperature=0.7"), parse("top_k=50"), parse("temperature=2.0,top_k=30")
    assert covers(untruncated, k30) and covers(k50, k30) and not covers(k30, k50)
    assert covers(parse("temperature=1.2,top_p=0.95"), parse("temperature=1.0,top_p=0.9"))
    assert not covers(parse("temperature=0.8,top_p=0.95"), parse("temperature=1.0,top_p=0.9"))
    assert not covers(parse("top_p=0.9"), parse("top_k=3"))
    assert covers(parse("typical_p=0.9"), parse("typical_p=0.9"))
    assert not covers(parse("typical_p=0.9"), parse("temperature=0.9,typical_p=0.9"))


def finite_pool(seed: int = 0, n: int = 4000):
    """Strings 0..5 with known q under two sampled configs and one what-if, weights from one mixture."""
    rng = np.random.default_rng(seed)
    q = {"temperature=1.0": np.array([0.3, 0.2, 0.2, 0.1, 0.1, 0.1]),
         "temperature=0.5": np.array([0.6, 0.2, 0.1, 0.05, 0.03, 0.02]),
         "temperature=0.7": np.array([0.45, 0.25, 0.15, 0.07, 0.05, 0.03])}
    reward = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    counts = {"temperature=1.0": n, "temperature=0.5": n // 2}
    rows = []
    for spec, count in counts.items():
        for s in rng.choice(6, size=count, p=q[spec]):
            rows.append((spec, int(s)))
    order = list(q)
    frame = pd.DataFrame({
        Col.ADAPTOR: [r[0] for r in rows], Col.REWARD: [reward[r[1]] for r in rows],
        Col.LOGP_PRIOR: [-float(r[1]) for r in rows], Col.LOGP_ALIGNED: [0.0] * len(rows),
        Col.WHAT_IF_LOGQ: [np.log([q[a][r[1]] for a in order]) for r in rows],
        Col.WHAT_IF_LOG_WEIGHT: [np.zeros(3) for _ in rows],
    })
    return frame, order, counts, q, reward


def test_balance_heuristic_estimate_against_the_exact_expectation():
    frame, order, counts, q, reward = finite_pool()
    results = what_if_estimates(frame, order, counts, make_settings(target="none"))
    by = {r.adaptor: r for r in results}
    target = by["temperature=0.7"]
    assert not target.sampled and target.skipped is None
    exact = float(q["temperature=0.7"] @ reward)
    assert abs(target.local_mean_reward - exact) < 4 * target.local_mean_reward_se
    # the mixture proposal: a sampled config re-estimated from the whole pool, exactly as the formula
    qa = np.exp(np.stack(frame[Col.WHAT_IF_LOGQ]))
    mix = (counts["temperature=1.0"] * qa[:, 0] + counts["temperature=0.5"] * qa[:, 1]) / sum(counts.values())
    w = qa[:, 1] / mix
    assert by["temperature=0.5"].local_mean_reward == pytest.approx(float(w @ frame[Col.REWARD] / w.sum()))
    mean, se, ess = snis(np.log(w), frame[Col.REWARD].to_numpy())
    assert by["temperature=0.5"].local_mean_reward_se == pytest.approx(se)
    assert by["temperature=0.5"].local_ess == pytest.approx(ess)


def test_low_ess_and_uncovered_adaptors_are_skipped_with_a_reason():
    frame, order, counts, _, _ = finite_pool(n=60)
    results = what_if_estimates(frame, order, counts, make_settings(target="none", what_if_min_ess=1000))
    assert all(r.skipped and "ESS" in r.skipped and r.mean_reward is None for r in results)
    truncated = frame.assign(**{Col.ADAPTOR: frame[Col.ADAPTOR].str.replace("temperature=1.0",
                                                                            "temperature=1.0,top_k=3")})
    order2 = ["temperature=1.0,top_k=3", "temperature=0.5", "temperature=0.7,top_k=4"]
    counts2 = {"temperature=1.0,top_k=3": 60, "temperature=0.5": 30}
    results = what_if_estimates(truncated, order2, counts2, make_settings(target="none", what_if_min_ess=10))
    wide = next(r for r in results if r.adaptor == "temperature=0.7,top_k=4")
    assert wide.skipped is None  # the untruncated T = 0.5 covers it
    results = what_if_estimates(truncated[truncated[Col.ADAPTOR] != "temperature=0.5"], order2,
                                {"temperature=1.0,top_k=3": 60},
                                make_settings(target="none", what_if_min_ess=10))
    wide = next(r for r in results if r.adaptor == "temperature=0.7,top_k=4")
    assert wide.skipped.startswith("the pool cannot be shown to cover") and wide.mean_reward is None


# ------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("specs", "message"), [
    (["temperature=1.5:0.5:0.1"], "empty range"),
    (["temperature=0.5:1.5"], "is not a range start:stop:step"),
    (["temperature=0.5:1.5:0"], "step > 0"),
    (["temperature=0.5:x:0.1"], "'x' is not a number"),
    (["top_k=1.5:4:1"], "is not an integer"),
    ([""], "is empty"),
    (["temperature=1.0,best_of_n=4"], "one plain adaptor"),
    (["dera=0.5"], "one plain adaptor"),
    (["temperature=0.1:100:0.01"], "at most 1000"),
])
def test_malformed_sweeps_are_one_line(specs, message):
    with pytest.raises(PQError, match=message):
        expand_what_if(specs)
    with pytest.raises(PQError, match=message):
        make_settings(what_if=specs)


def test_sweep_expansion_crosses_ranges_and_drops_repeats():
    got = [str(a) for a in expand_what_if(["temperature=0.5:0.7:0.1,top_k=2:4:2", "temperature=0.6,top_k=2"])]
    assert got == ["temperature=0.5,top_k=2", "temperature=0.5,top_k=4", "temperature=0.6,top_k=2",
                   "temperature=0.6,top_k=4", "temperature=0.7,top_k=2", "temperature=0.7,top_k=4"]


def test_cli_what_if_without_teacher_forced_columns_is_one_line(demo, tmp_path, monkeypatch, capsys):
    from scored_helpers import make_scored, write_scored  # a scored corpus without what-if columns

    scored = write_scored(make_scored(), tmp_path / "scored")
    code, _, err = cli(monkeypatch, capsys, "analyze", scored, "--out", tmp_path / "a", "--what-if",
                       "temperature=0.8")
    assert code == 2 and err.count("\n") == 1
    assert "teacher-forced columns" in err and "--what-if" in err
    out, _ = demo
    code, _, err = cli(monkeypatch, capsys, "analyze", out / "scored", "--out", tmp_path / "b", "--what-if",
                       "temperature=0.33", "--imh-steps", "1000", "--corpora", "5", "--no-plots")
    assert code == 2 and err.count("\n") == 1 and "temperature=0.33" in err and "score it again" in err
    code, _, err = cli(monkeypatch, capsys, "analyze", out / "scored", "--out", tmp_path / "c", "--what-if",
                       "temperature=0.5:0.4:0.1")
    assert code == 2 and err.count("\n") == 1 and "empty range" in err


def test_cli_analyze_reads_the_what_if_columns(demo, tmp_path, monkeypatch, capsys):
    out, summary = demo
    code, _, err = cli(monkeypatch, capsys, "analyze", out / "scored", "--out", tmp_path / "a", "--what-if",
                       "temperature=0.55:0.65:0.1", "--imh-steps", "2000", "--corpora", "5", "--no-plots")
    assert code == 0, err
    written = json.loads((tmp_path / "a" / "summary.json").read_text())["what_if"]
    # the two asked for, then nothing else (sampled configurations only when asked or when none is named)
    assert [w["adaptor"] for w in written] == ["temperature=0.55", "temperature=0.65"]
    ours = {w.adaptor: w for w in summary.what_if}
    assert written[0]["local_mean_reward"] == pytest.approx(ours["temperature=0.55"].local_mean_reward)
