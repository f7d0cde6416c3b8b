"""Several rewards in one scored corpus: each further reward (`reward_<name>`) is analysed exactly as a corpus
whose `reward` is that column would be."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from pqtradeoff.analysis.analyze import analyze_dir, make_settings
from pqtradeoff.errors import PQError

from scored_helpers import make_scored, write_scored

SETTINGS = dict(corpora=40, corpus_size=30, imh_steps=400, seed=3, plots=False)
PROVENANCE = ("run", "source_run", "rewards")


def _comparable(path) -> dict:
    summary = json.loads(path.read_text())
    return {k: v for k, v in summary.items() if k not in PROVENANCE}


def test_two_rewards_are_analysed_independently_and_equal_the_one_reward_analyses(tmp_path):
    frame = make_scored(n=40)
    rng = np.random.default_rng(7)
    frame["reward_other"] = -frame["reward"] + rng.normal(scale=0.2, size=len(frame))
    both = write_scored(frame, tmp_path / "both")
    alone = write_scored(frame.drop(columns=["reward_other"]), tmp_path / "primary")
    other = write_scored(frame.drop(columns=["reward"]).rename(columns={"reward_other": "reward"}),
                         tmp_path / "other")
    settings = make_settings(**SETTINGS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = analyze_dir(both, tmp_path / "a", settings)
        analyze_dir(alone, tmp_path / "a_primary", settings)
        analyze_dir(other, tmp_path / "a_other", settings)
    primary = _comparable(tmp_path / "a_primary" / "summary.json")
    assert _comparable(tmp_path / "a" / "summary.json") == primary
    assert (_comparable(tmp_path / "a" / "rewards" / "other" / "summary.json")
            == _comparable(tmp_path / "a_other" / "summary.json"))
    head = summary.extra["rewards"]["other"]
    mine = json.loads((tmp_path / "a_other" / "summary.json").read_text())
    assert head["tradeoff_slope"] == mine["tradeoff"]["slope"]
    assert head["string_level"]["spearman"] == mine["string_level"]["spearman"]
    assert head["string_level"]["spearman"] * summary.string_level.spearman < 0  # really another reward
    assert "Further rewards" in (tmp_path / "a" / "report.html").read_text()


def test_a_rerun_without_the_further_reward_leaves_no_stale_folder(tmp_path):
    frame = make_scored(n=20)
    frame["reward_x"] = frame["reward"] * 2
    settings = make_settings(**SETTINGS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analyze_dir(write_scored(frame, tmp_path / "s1"), tmp_path / "a", settings)
        assert (tmp_path / "a" / "rewards" / "x" / "summary.json").is_file()
        analyze_dir(write_scored(frame.drop(columns=["reward_x"]), tmp_path / "s2"), tmp_path / "a", settings)
    assert not (tmp_path / "a" / "rewards").exists()
    assert "rewards" not in json.loads((tmp_path / "a" / "summary.json").read_text())


def test_a_further_reward_stored_as_text_is_one_line(tmp_path):
    frame = make_scored(n=20)
    frame["reward_x"] = "high"
    with pytest.raises(PQError, match="column 'reward_x' of .* is stored as string"):
        analyze_dir(write_scored(frame, tmp_path / "s"), tmp_path / "a", make_settings(**SETTINGS))
    assert isinstance(pd.read_parquet(tmp_path / "s"), pd.DataFrame)
