"""`run` reuses a stage only when its inputs are byte-identical: every edit of an input (a reward, β, a shard
replaced under the same name, a model retrained in place) makes `run` print what a fresh run into an empty
folder prints (issue 19). Keyed on content digests, never on names, sizes or times."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from pqtradeoff.pipeline.digests import file_sha256, shard_digests, tree_sha256
from pqtradeoff.testing import build_causal

from cli_helpers import cli, write_config

pytestmark = pytest.mark.usefixtures("one_thread")

REWARDS = """
import numpy as np


def low(prompts, completions):
    rng = np.random.default_rng(len(prompts) + sum(map(len, completions)))
    return list(rng.uniform(0, 1, len(completions)))


def high(prompts, completions):
    rng = np.random.default_rng(len(prompts) + sum(map(len, completions)))
    return list(OFFSET + rng.uniform(0, 1, len(completions)))


OFFSET = 10.0
"""


@pytest.fixture()
def study(tiny_hf, tmp_path, monkeypatch):
    """A study folder: prompts, a reward module on sys.path, and copies of the two tiny models (so a test may
    retrain one in place without touching the session's)."""
    from cli_helpers import write_prompts

    prompts = write_prompts(tmp_path / "p.jsonl", ["hello world", "why", "tell me a story", "the cat sat"])
    (tmp_path / "rw_cache.py").write_text(REWARDS, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "rw_cache", raising=False)
    aligned, prior = tmp_path / "aligned", tmp_path / "prior"
    shutil.copytree(tiny_hf.llama, aligned)
    shutil.copytree(tiny_hf.prior, prior)
    return tmp_path, prompts, aligned, prior


def run(monkeypatch, capsys, config: Path, out: Path) -> tuple[int, str]:
    code, _, err = cli(monkeypatch, capsys, "run", config, "--out", out)
    return code, err


def summary(out: Path) -> dict:
    return json.loads((out / "analysis" / "summary.json").read_text())


def assert_as_fresh(monkeypatch, capsys, config: Path, out: Path, fresh: Path) -> None:
    """The analysis in `out` equals that of a fresh run of `config` into an empty folder."""
    code, err = run(monkeypatch, capsys, config, fresh)
    assert code == 0, err
    a, b = summary(out), summary(fresh)
    assert a["configs"] == b["configs"] and a["corpus_level"] == b["corpus_level"]
    shutil.rmtree(fresh)


def mean_reward(out: Path) -> float:
    return float(pd.read_parquet(out / "scored")["reward"].mean())


def test_a_new_reward_with_equal_shard_sizes_is_analysed_again(study, monkeypatch, capsys):
    tmp, prompts, aligned, prior = study
    config = write_config(tmp / "e.toml", aligned, prior, prompts, reward='kind = "python:rw_cache:low"')
    assert run(monkeypatch, capsys, config, tmp / "run")[0] == 0
    sizes = {p.name: p.stat().st_size for p in (tmp / "run" / "scored").glob("*.parquet")}
    before = summary(tmp / "run")
    assert 0 < mean_reward(tmp / "run") < 1

    config = write_config(tmp / "e.toml", aligned, prior, prompts, reward='kind = "python:rw_cache:high"')
    code, err = run(monkeypatch, capsys, config, tmp / "run")
    assert code == 0 and "score: ran" in err and "analyze: ran" in err, err
    # the trap of issue 19: same names, same sizes, other content
    assert {p.name: p.stat().st_size for p in (tmp / "run" / "scored").glob("*.parquet")} == sizes
    after = summary(tmp / "run")
    assert after["configs"] != before["configs"]
    assert 10 < mean_reward(tmp / "run") < 11
    assert_as_fresh(monkeypatch, capsys, config, tmp / "run", tmp / "fresh")

    code, err = run(monkeypatch, capsys, config, tmp / "run")
    assert code == 0 and "score: reused" in err and "analyze: reused" in err, err


def test_a_reward_module_edited_under_the_same_name_is_scored_again(study, monkeypatch, capsys):
    tmp, prompts, aligned, prior = study
    config = write_config(tmp / "e.toml", aligned, prior, prompts, reward='kind = "python:rw_cache:high"')
    assert run(monkeypatch, capsys, config, tmp / "run")[0] == 0
    assert 10 < mean_reward(tmp / "run") < 11

    source = tmp / "rw_cache.py"  # the same TOML; the function's code changed
    source.write_text(REWARDS.replace("OFFSET = 10.0", "OFFSET = 20.0"), encoding="utf-8")
    monkeypatch.delitem(sys.modules, "rw_cache")  # a new process would import the new source
    code, err = run(monkeypatch, capsys, config, tmp / "run")
    assert code == 0 and "scoring again" in err and "inputs_sha256.reward" in err, err
    assert "analyze: ran" in err and 20 < mean_reward(tmp / "run") < 21
    assert_as_fresh(monkeypatch, capsys, config, tmp / "run", tmp / "fresh")


def test_a_changed_dpo_beta_is_analysed_again(study, monkeypatch, capsys):
    tmp, prompts, aligned, prior = study
    config = write_config(tmp / "e.toml", aligned, prior, prompts, reward='kind = "dpo"\nbeta = 0.5')
    assert run(monkeypatch, capsys, config, tmp / "run")[0] == 0
    before = summary(tmp / "run")
    config = write_config(tmp / "e.toml", aligned, prior, prompts, reward='kind = "dpo"\nbeta = 0.25')
    code, err = run(monkeypatch, capsys, config, tmp / "run")
    assert code == 0 and "scoring again" in err and "analyze: ran" in err, err
    assert summary(tmp / "run")["configs"] != before["configs"]
    assert_as_fresh(monkeypatch, capsys, config, tmp / "run", tmp / "fresh")


def test_a_scored_shard_replaced_under_its_name_is_scored_again(study, monkeypatch, capsys):
    tmp, prompts, aligned, prior = study
    config = write_config(tmp / "e.toml", aligned, prior, prompts)
    assert run(monkeypatch, capsys, config, tmp / "run")[0] == 0
    scored = sorted((tmp / "run" / "scored").glob("*.parquet"))
    original = scored[0].read_bytes()
    for replace in (lambda: pd.read_parquet(scored[1]).to_parquet(scored[0], index=False),  # by hand
                    lambda: shutil.copyfile(scored[1], scored[0])):  # another shard's file, metadata and all
        replace()
        code, err = run(monkeypatch, capsys, config, tmp / "run")
        assert code == 0 and "score: partly reused: 1 of 4 shards scored, 3 reused" in err, err
        # scored again from the same corpus shard: the same bytes, so the analysis is rightly reused
        assert scored[0].read_bytes() == original and "analyze: reused" in err, err
    assert_as_fresh(monkeypatch, capsys, config, tmp / "run", tmp / "fresh")


def test_a_corpus_shard_replaced_under_its_name_is_scored_again(study, monkeypatch, capsys):
    tmp, prompts, aligned, prior = study
    config = write_config(tmp / "e.toml", aligned, prior, prompts)
    assert run(monkeypatch, capsys, config, tmp / "run")[0] == 0
    before = summary(tmp / "run")
    shard = sorted((tmp / "run" / "corpus").glob("*.parquet"))[0]
    rows = pd.read_parquet(shard)
    rows.iloc[: len(rows) // 2].to_parquet(shard, index=False)  # half its strings, same name
    code, err = run(monkeypatch, capsys, config, tmp / "run")
    assert code == 0 and "score: partly reused: 1 of 4 shards scored, 3 reused" in err, err
    assert "analyze: ran" in err
    assert summary(tmp / "run")["input"] != before["input"]
    scored = pd.read_parquet(tmp / "run" / "scored" / shard.name)
    assert len(scored) == len(rows) // 2


def test_a_prior_retrained_in_place_is_scored_again_and_an_aligned_one_refused(study, monkeypatch, capsys):
    tmp, prompts, aligned, prior = study
    config = write_config(tmp / "e.toml", aligned, prior, prompts)
    assert run(monkeypatch, capsys, config, tmp / "run")[0] == 0
    before = summary(tmp / "run")
    weights = {p.name: p.stat().st_size for p in prior.iterdir()}
    old = tree_sha256(prior)
    shutil.rmtree(prior)
    build_causal(prior, "llama", seed=5)  # the same folder and file sizes, other weights
    assert {p.name: p.stat().st_size for p in prior.iterdir()} == weights and tree_sha256(prior) != old
    code, err = run(monkeypatch, capsys, config, tmp / "run")
    assert code == 0 and "scoring again" in err and "inputs_sha256.prior" in err, err
    assert "generate: reused" in err and "analyze: ran" in err
    assert summary(tmp / "run")["configs"] != before["configs"]
    assert_as_fresh(monkeypatch, capsys, config, tmp / "run", tmp / "fresh")

    shutil.rmtree(aligned)
    build_causal(aligned, "llama", seed=6)
    capsys.readouterr()  # the build's own progress bar
    code, err = run(monkeypatch, capsys, config, tmp / "run")
    assert code == 2 and err.count("\n") == 1 and "inputs_sha256.model" in err, err


def test_digests_read_content_not_names(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"\x00" * 10)
    b.write_bytes(b"\x01" * 10)
    assert file_sha256(a) != file_sha256(b)
    assert file_sha256(a) == "01d448afd928065458cf670b60f5a594d735af0172c8d67f22a81680132681ca"  # sha256sum
    folder = tmp_path / "f"
    folder.mkdir()
    pd.DataFrame({"x": [1.0, 2.0]}).to_parquet(folder / "s.parquet")
    first = shard_digests(folder)
    pd.DataFrame({"x": [1.0, 3.0]}).to_parquet(folder / "s.parquet")
    assert shard_digests(folder).keys() == first.keys() and shard_digests(folder) != first
