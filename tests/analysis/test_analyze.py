"""End-to-end analysis on a synthetic scored corpus: outputs, bad input, the CLI, determinism."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from pqtradeoff.analysis.analyze import ExtraInputs, analyze_dir, clean_table, make_settings, run_analysis
from pqtradeoff.errors import PQError
from pqtradeoff.io import to_json
from pqtradeoff.sampling import adaptors

from scored_helpers import make_scored, write_scored

SMALL = dict(corpora=60, corpus_size=50, imh_steps=3000, seed=3, plots=False)

def _settings(**over):
    return make_settings(**{**SMALL, **over})


def test_end_to_end_outputs_and_counts(tmp_path):
    frame = make_scored()
    frame.loc[[3, 4], "reward"] = [np.nan, np.inf]
    frame.loc[5, "logp_prior"] = -np.inf
    frame.loc[6, ["reward", "logp_prior"]] = np.nan  # bad twice: counted in both columns, dropped once
    scored = write_scored(frame, tmp_path / "scored")
    with pytest.warns(UserWarning) as record:
        summary = analyze_dir(scored, tmp_path / "out", _settings(plots=True))
    messages = [str(w.message) for w in record]
    assert any("3 row(s)" in m and "'reward'" in m for m in messages)
    assert any("2 row(s)" in m and "'logp_prior'" in m for m in messages)
    bad = frame.index.isin([3, 4, 5, 6])
    unfinished = int((~frame["finished"] & ~bad).sum())
    assert summary.input.dropped_total == 4
    assert summary.input.unfinished_excluded == unfinished > 0
    assert summary.input.rows_used == len(frame) - 4 - unfinished
    assert len(summary.configs) == 6 and summary.skipped == []
    first = summary.configs[0]
    for value in (first.reward.mean, first.reward.se, first.log_prior.mean, first.log_prior.se,
                  first.acceptance_rate, first.chain_ess, first.importance_ess, first.n_strings,
                  first.n_dropped, first.reward.lag1, first.reward.tau):
        assert value is not None
    assert first.n_rows - first.n_dropped == first.n_strings
    assert first.dropped_why["non-finite reward"] == 3 and first.dropped_why["non-finite logp_prior"] == 1
    for c in summary.configs:  # a row bad in one column is counted once, so the reasons add up
        assert sum(c.dropped_why.values()) == c.n_dropped
    assert sum(c.n_strings for c in summary.configs) == summary.input.rows_used
    # The synthetic trade-off is negative across configs and positive within them.
    assert summary.tradeoff.slope < 0 and summary.corpus_level.spearman < -0.5
    assert all(c.string_level.spearman > 0 for c in summary.configs)
    assert summary.source_run == {"command": "score", "settings": {"x": 1}}
    corpora = pd.read_parquet(tmp_path / "out" / "corpora.parquet")
    assert len(corpora) == 6 * SMALL["corpora"]
    assert set(corpora.columns) >= {"adaptor", "corpus_id", "mean_reward", "mean_log_prior"}
    for name in ("summary.json", "report.html", "string_level.png", "corpus_level.png", "frontier.png",
                 "_run.json", "alignment.png", "hull.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0, name
    html = (tmp_path / "out" / "report.html").read_text()
    assert "data:image/png;base64," in html and "Pareto frontier" in html
    assert "column &#39;reward&#39;" in html
    assert "At a glance" in html and "Alignment fidelity" in html and "reachable frontier" in html


def test_chain_means_follow_the_target(tmp_path):
    frame = make_scored(n=200, temps=(1.0,), families=("ancestral",))
    frame["log_weight"] = 2.0 * (frame["reward"] - frame["reward"].mean())  # weights favour high reward
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        glob = run_analysis(frame, tmp_path / "g", _settings(imh_steps=20_000)).configs[0]
        none = run_analysis(frame, tmp_path / "n", _settings(target="none")).configs[0]
    assert glob.reward.mean > glob.reward.local_mean + 3 * glob.reward.se
    assert abs(glob.reward.mean - glob.reward.snis_mean) < 3 * glob.reward.se_chain + 1e-12
    assert none.acceptance_rate == 1.0
    assert abs(none.reward.mean - none.reward.local_mean) < 4 * none.reward.se


def test_missing_column_is_named(tmp_path):
    with pytest.raises(PQError, match="lacks required column.*log_weight"):
        run_analysis(make_scored().drop(columns=["log_weight"]), tmp_path, _settings())
    with pytest.raises(PQError, match="column 'reward' has dtype"):
        run_analysis(make_scored().assign(reward="good"), tmp_path, _settings())
    as_text = make_scored()
    as_text["finished"] = as_text["finished"].map({True: "True", False: "False"})
    with pytest.raises(PQError, match="column 'finished' has dtype .*; need booleans"):
        run_analysis(as_text, tmp_path, _settings())


def test_a_pool_dominated_by_few_strings_is_warned_about(tmp_path):
    frame = make_scored()
    frame["log_weight"] = frame["log_weight"] * 1000.0  # one string per config carries all the weight
    with pytest.warns(UserWarning) as caught:
        summary = run_analysis(frame, tmp_path, _settings())
    messages = [str(w.message) for w in caught]
    assert any("importance-sampling ESS is 1" in m for m in messages)
    assert any("unfinished string" in m for m in messages)
    assert not any(c.reliable for c in summary.configs)
    assert any("understate the uncertainty" in w for w in summary.warnings)


def test_weight_columns_checked_per_target():
    frame = make_scored()
    frame.loc[0, "log_weight"] = np.nan
    frame.loc[1, "log_weight"] = -np.inf  # a zero weight: allowed
    with pytest.warns(UserWarning, match="1 row.*'log_weight'"):
        _, report = clean_table(frame, _settings(keep_unfinished=True))
    assert report.dropped_by_column == {"log_weight": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, aligned = clean_table(frame, _settings(target="aligned", keep_unfinished=True))
    assert aligned.dropped_by_column == {} and aligned.rows_used == len(frame)
    assert frame.loc[0, "log_weight"] != frame.loc[0, "log_weight"]  # input not modified (still NaN)


def test_config_with_all_zero_weights_is_skipped_and_said(tmp_path):
    frame = make_scored()
    dead = str(adaptors.parse("temperature=0.5,top_k=30"))
    frame.loc[frame["adaptor"].map(lambda s: str(adaptors.parse(s))) == dead, "log_weight"] = -np.inf
    with pytest.warns(UserWarning) as record:
        summary = run_analysis(frame, tmp_path, _settings(),
                               ExtraInputs(skipped={"temperature=2.0": "generation failed"}))
    assert any(re.search(r"all \d+ importance weights are zero", str(w.message)) for w in record)
    assert {s.adaptor for s in summary.skipped} == {dead, "temperature=2.0"}
    assert dead not in {c.adaptor for c in summary.configs} and len(summary.configs) == 5
    assert summary.string_level.n == sum(c.n_strings for c in summary.configs)
    html = (tmp_path / "report.html").read_text()
    assert "generation failed" in html and "importance weights are zero" in html
    frame["log_weight"] = -np.inf
    with pytest.raises(PQError, match="no configuration could be analysed"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_analysis(frame, tmp_path / "all", _settings())


def test_single_config_says_the_fit_is_undefined(tmp_path):
    frame = make_scored(families=("ancestral",), temps=(1.0,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = run_analysis(frame, tmp_path, _settings(plots=True))
    assert not summary.tradeoff.defined and "at least 2 configurations" in summary.tradeoff.note
    assert "one configuration only" in summary.corpus_level.note
    assert any("trade-off" in w for w in summary.warnings)
    assert "at least 2 configurations" in (tmp_path / "report.html").read_text()


def test_exact_values_are_merged_drawn_and_compared(tmp_path):
    frame = make_scored(families=("ancestral",), temps=(0.5, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = run_analysis(frame, tmp_path / "a", _settings())
    exact = {
        c.adaptor: {"exact_mean_reward": c.reward.mean + 0.5 * c.reward.se,
                    "exact_mean_log_prior": c.log_prior.mean, "exact_entropy": 12.0,
                    "exact_local_mean_reward": 0.0}
        for c in first.configs
    }
    far = next(c for c in first.configs if c.adaptor == "temperature=0.5")
    exact["temperature=0.5"]["exact_mean_log_prior"] = far.log_prior.mean - 10 * far.log_prior.se
    exact["temperature=1"] = exact.pop("temperature=1.0")  # any spelling parse() reads
    exact["temperature=9.0"] = {"exact_mean_reward": 1.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inputs = ExtraInputs(exact=exact, exact_lines=[{"slope": -1.0, "intercept": 0.0, "label": "theory"}],
                             notes=["demo run"])
        summary = run_analysis(frame, tmp_path / "b", _settings(plots=True), inputs)
    for c in summary.configs:
        assert c.exact["exact_entropy"] == 12.0
        assert c.exact_comparison["z_reward"] == pytest.approx(-0.5)
        assert c.exact_comparison["z_log_prior"] == pytest.approx(10.0 if c.adaptor == "temperature=0.5"
                                                                  else 0.0)
    html = (tmp_path / "b" / "report.html").read_text()
    assert "3 of 4 IMH-corrected means agree" in html and "demo run" in html
    assert "Outside: temperature=0.5 (log prior, z = 10.00)" in html
    assert any("not analysed: temperature=9.0" in w for w in summary.warnings)


def test_same_seed_same_bytes(tmp_path):
    frame = make_scored()
    runs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_analysis(frame, tmp_path / name, _settings(seed=seed, plots=True))
        runs.append({f: (tmp_path / name / f).read_bytes() for f in ("corpora.parquet", "frontier.png")}
                    | {"summary": json.loads((tmp_path / name / "summary.json").read_text())})
    assert runs[0] == runs[1]
    assert runs[0]["corpora.parquet"] != runs[2]["corpora.parquet"]


def test_threads_change_no_byte(tmp_path, monkeypatch):
    """Configurations analysed one at a time or several at once (forced even on one CPU) give the same files,
    the count-vector corpus sampler included (corpus_size >= 2x the pool), and a skipped config is still
    skipped."""
    import pqtradeoff.analysis.analyze as analyze

    frame = make_scored(n=40)
    frame.loc[frame["adaptor"] == "temperature=1.5", "log_weight"] = -np.inf  # all zero weights: skipped
    monkeypatch.setattr(analyze.os, "sched_getaffinity", lambda _: set(range(8)), raising=False)
    runs = []
    for workers in (1, 4):
        monkeypatch.setattr(analyze, "MAX_WORKERS", workers)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_analysis(frame, tmp_path / str(workers), _settings(corpus_size=500))
        out = tmp_path / str(workers)
        runs.append({f: (out / f).read_bytes() for f in ("corpora.parquet", "summary.json")})
    assert runs[0]["corpora.parquet"] == runs[1]["corpora.parquet"]
    assert runs[0]["summary.json"] == runs[1]["summary.json"]
    first = json.loads(runs[0]["summary.json"])
    assert [s["adaptor"] for s in first["skipped"]] == ["temperature=1.5"]


def test_bad_settings_name_the_field():
    with pytest.raises(PQError, match="corpora=0"):
        make_settings(corpora=0)
    with pytest.raises(PQError, match="target='prior'"):
        make_settings(target="prior")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pqtradeoff", "analyze", *args], capture_output=True,
                          text=True,
                          timeout=120)


def test_cli_success(tmp_path):
    scored = write_scored(make_scored(), tmp_path / "scored")
    ok = _cli(str(scored), "--out", str(tmp_path / "out"), "--corpora", "20", "--corpus-size", "30",
              "--imh-steps", "500", "--no-plots")
    assert ok.returncode == 0, ok.stderr
    assert "analyzed 6 configuration(s)" in ok.stdout and "warning: excluded" in ok.stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["settings"]["imh_steps"] == 500


@pytest.mark.parametrize("case",
                         ["missing_dir", "bad_target", "bad_confidence", "missing_column", "out_is_a_file"])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, capsys, case):
    from pqtradeoff.cli import main

    scored = write_scored(make_scored(), tmp_path / "scored")
    args, needle = {
        "missing_dir": ([str(tmp_path / "nowhere")], "does not exist"),
        "bad_target": ([str(scored), "--target", "prior"], "target='prior'"),
        "bad_confidence": ([str(scored), "--confidence", "1.5"], "confidence=1.5"),
        "missing_column": ([str(write_scored(make_scored().drop(columns=["reward"]), tmp_path / "nr"))],
                           "reward"),
        "out_is_a_file": ([str(scored)], "is a file, not a folder"),
    }[case]
    (tmp_path / "file").write_text("x")
    out = tmp_path / ("file" if case == "out_is_a_file" else "out")
    monkeypatch.setattr(sys, "argv", ["pqtradeoff", "analyze", *args, "--out", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], lines


def test_analysis_side_never_imports_the_model_side():
    """No torch, transformers, model implementation or model stage. The torch-free interfaces `models.base`
    (the scoring defaults the settings describe) and `models.registry` (backend names) may come in through
    the CLI's settings."""
    interfaces = ("pqtradeoff.models", "pqtradeoff.models.base", "pqtradeoff.models.registry")
    code = ("import sys, pqtradeoff.analysis.analyze, pqtradeoff.analysis.plots, pqtradeoff.analysis.report, "
            "pqtradeoff.cli.analyze, pqtradeoff.analysis.fidelity, pqtradeoff.analysis.advise, "
            "pqtradeoff.cli.advise; "
            "bad = [m for m in sys.modules if m in ('torch', 'transformers', 'pqtradeoff.pipeline.generate', "
            "'pqtradeoff.pipeline.score') or "
            f"(m.startswith('pqtradeoff.models') and m not in {interfaces!r})]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_summary_json_keeps_the_documented_field_names(tmp_path):
    """The typed results serialise to the flat summary.json the consumers know (docs/scored-corpus.md)."""
    frame = make_scored()
    dead = "temperature=0.5,top_k=30"
    frame.loc[frame["adaptor"] == dead, "log_weight"] = -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = run_analysis(frame, tmp_path, _settings())
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written == json.loads(to_json(summary.to_json()))
    assert list(written)[:4] == ["command", "settings", "seeds", "input"]
    config = written["configs"][0]
    for name in ("reward", "log_prior"):
        for key in ("mean_{}", "mean_{}_se", "mean_{}_se_pool", "mean_{}_se_chain", "snis_mean_{}",
                    "local_mean_{}",
                    "local_mean_{}_se", "chain_ess_{}", "tau_{}", "lag1_{}", "corpus_mean_{}_sd"):
            assert key.format(name) in config, key.format(name)
    typed = summary.configs[0]
    assert config["mean_reward_se"] == typed.reward.se
    assert config["local_mean_log_prior"] == typed.log_prior.local_mean
    assert config["string_level"]["spearman"] == typed.string_level.spearman
    # A skipped config with usable strings keeps their plain means, equal to a direct computation.
    rows = frame[(frame["adaptor"] == dead) & frame["finished"]]
    skipped = next(s for s in written["skipped"] if s["adaptor"] == dead)
    assert skipped["n_strings"] == len(rows)
    assert skipped["local_mean_reward"] == pytest.approx(rows["reward"].mean())
    assert skipped["local_mean_log_prior_se"] == pytest.approx(rows["logp_prior"].std(ddof=1)
                                                               / np.sqrt(len(rows)))


def test_alignment_block_from_a_scored_directory(tmp_path):
    """analyze_dir keeps prompt_id and prior_context; a prompt-less prior is refused with the reason."""
    frame = make_scored()
    frame["reward"] = 0.5 * (frame["logp_aligned"] - frame["logp_prior"])  # an implicit-DPO-like reward
    frame["prior_context"] = "prompt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = analyze_dir(write_scored(frame, tmp_path / "a"), tmp_path / "out_a", _settings(beta=0.5))
    fit = summary.alignment
    assert fit.defined and fit.beta_hat == pytest.approx(0.5, rel=1e-9) and fit.nominal_beta == 0.5
    used = frame[frame["finished"]]
    assert fit.n_strings == used.groupby("prompt_id").size().loc[lambda n: n >= 2].sum()
    written = json.loads((tmp_path / "out_a" / "summary.json").read_text())["alignment"]
    assert written["beta_hat"] == fit.beta_hat and written["defined"] is True
    frame["prior_context"] = "none"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = analyze_dir(write_scored(frame, tmp_path / "b"), tmp_path / "out_b", _settings())
    assert not summary.alignment.defined and "without the prompt" in summary.alignment.reason
