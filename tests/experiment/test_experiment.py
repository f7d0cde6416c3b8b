"""`pqtradeoff run CONFIG`: a whole study from one file, cached and resumable by content, on tiny HF
models."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pqtradeoff.errors import PQError
from pqtradeoff.experiment.config import load_experiment

from cli_helpers import cli, write_config, write_prompts

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def setup(tiny_hf, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", ["hello world", "why", "tell me a story", "the cat sat"])
    return tiny_hf, tmp_path, prompts


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.parquet"))}


def test_run_reuses_every_stage_and_a_grown_grid_does_only_the_new_work(setup, monkeypatch, capsys):
    tiny_hf, tmp, prompts = setup
    config = write_config(tmp / "e.toml", tiny_hf.llama, tiny_hf.prior, prompts)
    code, out, err = cli(monkeypatch, capsys, "run", config, "--out", tmp / "run")
    assert code == 0, err
    assert "generate: ran" in err and "score: ran" in err and "analyze: ran" in err
    assert "string level" in out and (tmp / "run" / "analysis" / "summary.json").is_file()

    code, _, err = cli(monkeypatch, capsys, "run", config, "--out", tmp / "run")
    assert code == 0 and "generate: reused" in err and "score: reused" in err and "analyze: reused" in err

    grown = write_config(tmp / "e.toml", tiny_hf.llama, tiny_hf.prior, prompts,
                         families=("ancestral", "top_k=5", "top_p=0.8"))
    code, _, err = cli(monkeypatch, capsys, "run", grown, "--out", tmp / "run")
    assert code == 0 and "generate: partly reused: 2 of 6 shards written, 4 reused" in err, err
    assert "score: partly reused: 2 of 6 shards scored, 4 reused" in err and "analyze: ran" in err

    code, _, err = cli(monkeypatch, capsys, "run", grown, "--out", tmp / "fresh")
    assert code == 0, err
    for stage in ("corpus", "scored"):
        assert shard_bytes(tmp / "run" / stage) == shard_bytes(tmp / "fresh" / stage)
    a = json.loads((tmp / "run" / "analysis" / "summary.json").read_text())
    b = json.loads((tmp / "fresh" / "analysis" / "summary.json").read_text())
    assert a["configs"] == b["configs"] and a["corpus_level"] == b["corpus_level"]


def test_run_refuses_a_change_that_alters_written_rows_and_rescores_a_changed_reward(
    setup, monkeypatch, capsys
):
    tiny_hf, tmp, prompts = setup
    config = write_config(tmp / "e.toml", tiny_hf.llama, tiny_hf.prior, prompts)
    assert cli(monkeypatch, capsys, "run", config, "--out", tmp / "run")[0] == 0
    text = config.read_text().replace("seed = 3", "seed = 4")
    config.write_text(text)
    code, _, err = cli(monkeypatch, capsys, "run", config, "--out", tmp / "run")
    assert code == 2 and "sampling.seed: 3 -> 4" in err and err.count("\n") == 1, err

    config = write_config(tmp / "e.toml", tiny_hf.llama, tiny_hf.prior, prompts,
                          reward='kind = "dpo"\nbeta = 0.5')
    code, _, err = cli(monkeypatch, capsys, "run", config, "--out", tmp / "run")
    assert code == 0 and "scoring again" in err and "generate: reused" in err, err
    scored = pd.read_parquet(tmp / "run" / "scored")
    assert (scored["reward"] - 0.5 * (scored["logp_aligned"] - scored["logp_prior"])).abs().max() < 1e-9


def test_batch_size_never_blocks_a_resume(setup, monkeypatch, capsys):
    tiny_hf, tmp, prompts = setup
    config = write_config(tmp / "e.toml", tiny_hf.llama, tiny_hf.prior, prompts)
    assert cli(monkeypatch, capsys, "run", config, "--out", tmp / "run")[0] == 0
    config.write_text(config.read_text() + "\n[compute]\nbatch_size = 2\nprogress = false\n")
    code, _, err = cli(monkeypatch, capsys, "run", config, "--out", tmp / "run")
    assert code == 0 and "generate: reused" in err, err


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("seed = 3", "seed = 3\nsed = 4"), "line 18: unknown key 'sampling.sed'"),
    (lambda t: t.replace("max_new_tokens = 6", "max_new_tokens = -6"), "line 16: sampling.max_new_tokens=-6"),
    (lambda t: t.replace("[reward]", "[reward"), "not valid TOML"),
    (lambda t: t.replace('"ancestral"', '"top_k=5"'), "more than once"),
    (lambda t: t.replace('[prompts]', '[prompts]\ntemplate = "no slot"'), "has no {prompt} slot"),
])
def test_bad_configs_are_one_line_errors_naming_the_key(setup, monkeypatch, capsys, edit, message):
    tiny_hf, tmp, prompts = setup
    config = write_config(tmp / "e.toml", tiny_hf.llama, tiny_hf.prior, prompts)
    config.write_text(edit(config.read_text()))
    code, _, err = cli(monkeypatch, capsys, "run", config, "--out", tmp / "run")
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp / "run").exists()  # nothing half-written


def test_print_config_and_init(setup, monkeypatch, capsys, tmp_path):
    tiny_hf, tmp, prompts = setup
    config = write_config(tmp / "e.toml", tiny_hf.llama, tiny_hf.prior, prompts)
    code, out, _ = cli(monkeypatch, capsys, "run", config, "--print-config")
    assert code == 0 and "corpus_size = 8" in out and "confidence = 0.95" in out  # defaults filled in
    for name in ("smollm2-gemma-vader", "paper-rlhf", "paper-dpo"):
        code, out, _ = cli(monkeypatch, capsys, "init", "--example", name)
        assert code == 0
        (tmp_path / f"{name}.toml").write_text(out)
        settings = load_experiment(tmp_path / f"{name}.toml")
        assert settings.prompts.file.is_absolute()
    rlhf = load_experiment(tmp_path / "paper-rlhf.toml")
    assert len(rlhf.sampling.grid()) == 35 and rlhf.prompts.num_prompts == 1000
    code, _, err = cli(monkeypatch, capsys, "init", "--example", "nope")
    assert code == 2 and "is not one of" in err


def test_missing_config_file(tmp_path):
    with pytest.raises(PQError, match="does not exist"):
        load_experiment(tmp_path / "none.toml")
