"""The KL axis: KL(q || p+) = E_q[logq - logp_aligned] per configuration (exact: tests/exact/test_demo),
in summary.json, the report, its figure and `advise --json`; power sampling labelled."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pqtradeoff.analysis.advise import advise
from pqtradeoff.analysis.analyze import make_settings, run_analysis

from scored_helpers import make_scored


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    out = tmp_path_factory.mktemp("kl")
    frame = make_scored(seed=3)
    summary = run_analysis(frame, out, make_settings(corpora=20, corpus_size=40, imh_steps=2000, seed=0,
                                                     keep_unfinished=True))
    return out, frame, summary


def test_kl_is_the_mean_log_ratio_of_each_configs_strings(analysed):
    out, frame, summary = analysed
    written = json.loads((out / "summary.json").read_text())
    assert len(summary.configs) == 6
    for c, row in zip(summary.configs, written["configs"], strict=True):
        rows = frame[frame["adaptor"] == c.adaptor]
        d = (rows["logq"] - rows["logp_aligned"]).to_numpy()
        assert c.kl_aligned == pytest.approx(d.mean(), abs=1e-12)
        assert c.kl_aligned_se == pytest.approx(d.std(ddof=1) / np.sqrt(len(d)), abs=1e-12)
        assert row["kl_aligned"] == c.kl_aligned and row["kl_aligned_se"] == c.kl_aligned_se


def test_power_sampling_is_labelled_on_untruncated_temperatures_only(analysed):
    _, _, summary = analysed
    alphas = {c.adaptor: c.power_alpha for c in summary.configs}
    assert alphas["temperature=0.5"] == 2.0 and alphas["temperature=1.5"] == pytest.approx(1 / 1.5)
    assert alphas["temperature=0.5,top_k=30"] is None


def test_report_and_figure_show_the_kl_plane(analysed):
    out, _, summary = analysed
    assert summary.outputs["figures"]["reward_vs_kl"] == "reward_vs_kl.png"
    assert (out / "reward_vs_kl.png").stat().st_size > 10_000
    html = (out / "report.html").read_text()
    assert "Reward against KL from the aligned model" in html and "p₊^2" in html


def test_advise_json_carries_the_kl_plane(analysed):
    out, _, summary = analysed
    plane = advise(json.loads((out / "summary.json").read_text()), min_reward=1.0).to_json()["kl_plane"]
    assert [p["adaptor"] for p in plane] == [c.adaptor for c in summary.configs]
    assert all(p["kl_aligned"] == c.kl_aligned and p["mean_reward"] == c.reward.local_mean
               for p, c in zip(plane, summary.configs, strict=True))
