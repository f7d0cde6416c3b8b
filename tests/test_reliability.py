"""Bad input, as a newcomer or a hostile file gives it, across every command: one line, exit 2, nothing
written.

Each case names the command line, a phrase the one-line error must contain, and the test checks that the
command left no output behind (the --out folder absent, or unchanged when it existed). docs/reliability.md
lists and counts these cases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pqtradeoff.pipeline.corpus import GENERATED_COLUMNS

from cli_helpers import cli, write_prompts
from scored_helpers import make_scored, write_scored

SRC = Path(__file__).resolve().parents[1] / "src"


def _snapshot(folder: Path) -> dict[str, bytes] | None:
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _generated(tmp: Path, with_prior: bool = False) -> Path:
    """A corpus as `generate` writes it (no score columns; `logp_prior` too if asked), with a _run.json."""
    frame = make_scored(n=8)[[*GENERATED_COLUMNS, *(["logp_prior"] if with_prior else [])]]
    return write_scored(frame, tmp / "corpus", shards=1)


# ------------------------------------------------------------------------------------------ the bad inputs

#: The sampling options every `generate` case below gives (the model, prompts and --out vary).
SAMPLING_ARGS = ["--adaptor", "ancestral", "--num-generations", "2", "--max-new-tokens", "3", "--seed", "0"]

def _output_folder_case(command: str, kind: str, tmp: Path, out: Path) -> tuple[list[str], str, Path]:
    """The output-folder mistakes `demo` and `toy` share: --out is a file, holds foreign files, bad format."""
    if kind == "out-is-a-file":
        return [command, "--out", str(tmp / "file.txt")], "is a file, not a folder", tmp / "file.txt"
    if kind == "out-holds-foreign-files":
        out.mkdir()
        (out / "data.csv").write_text("1,2")
        return [command, "--out", str(out)], f"which `{command}` does not write", out
    return [command, "--out", str(out), "--format", "gif"], "figure_format='gif'", out


@dataclass
class _Case:
    """What every case of one command starts from."""

    tmp: Path
    out: Path
    scored: Path
    analyze_argv: list[str]  # analyze with a small valid scored corpus
    generate_argv: list[str]  # generate with a missing model folder


def _case_setup(tmp: Path, case: str) -> tuple[list[str], str, Path]:
    """(argv after `pqtradeoff`, a phrase of the expected error, the output folder that must stay
    untouched)."""
    scored = write_scored(make_scored(n=20), tmp / "scored")
    out = tmp / "out"
    a = ["analyze", str(scored), "--corpora", "5", "--corpus-size", "5", "--imh-steps", "50", "--no-plots"]
    (tmp / "file.txt").write_text("x")
    prompts = write_prompts(tmp / "p.jsonl", ["hi", "there"])
    g = [
        "generate",
        "--model",
        str(tmp / "no-model"),
        "--prompts",
        str(prompts),
        *SAMPLING_ARGS,
    ]
    c = _Case(tmp, out, scored, a, g)
    command = case.partition("/")[0]
    builder = {"analyze": _analyze_case, "demo": _demo_toy_case, "toy": _demo_toy_case,
               "generate": _generate_case, "score": _score_case, "run": _run_case,
               "prompts": _prompts_case, "config": _config_case}[command]
    return builder(c, case)


def _analyze_case(c: _Case, case: str) -> tuple[list[str], str, Path]:
    tmp, out, scored, a = c.tmp, c.out, c.scored, c.analyze_argv
    if case == "analyze/scored-dir-missing":
        return ["analyze", str(tmp / "nowhere"), "--out", str(out)], "does not exist", out
    if case == "analyze/out-is-the-scored-dir":
        return [*a, "--out", str(scored)], "is, or is inside, the scored-corpus folder", scored
    if case == "analyze/out-inside-the-scored-dir":
        return [*a, "--out", str(scored / "analysis")], "is, or is inside, the scored-corpus folder", scored
    if case == "analyze/out-holds-foreign-files":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        return [*a, "--out", str(out)], "which `analyze` does not write", out
    if case == "analyze/out-is-a-demo-folder":
        (out / "corpus").mkdir(parents=True)
        return [*a, "--out", str(out)], "holds the folder 'corpus'", out
    if case == "analyze/out-under-a-file":
        return [*a, "--out", str(tmp / "file.txt" / "x")], "which is a file", out
    if case == "analyze/duplicate-rows":
        frame = make_scored(n=20)
        dup = write_scored(pd.concat([frame, frame], ignore_index=True), tmp / "dup")
        return ["analyze", str(dup), "--out", str(out)], "(0, 0, 'temperature=0.5')", out
    if case == "analyze/duplicate-rows-other-spelling":
        frame = make_scored(n=20)
        copy = frame.copy()
        copy["adaptor"] = copy["adaptor"].str.replace("temperature=0.5", "temperature=0.50", regex=False)
        dup = write_scored(pd.concat([frame, copy], ignore_index=True), tmp / "dup")
        return (
            ["analyze", str(dup), "--out", str(out)],
            "repeat an earlier (prompt_id, sample_id, adaptor)",
            out,
        )
    if case in ("analyze/reward-as-strings", "analyze/finished-as-strings", "analyze/logq-as-strings"):
        col = case.split("/")[1].split("-")[0]
        frame = make_scored(n=20)
        frame[col] = frame[col].astype(str)
        bad = tmp / "strings"
        bad.mkdir()
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), bad / "s.parquet")
        return ["analyze", str(bad), "--out", str(out)], f"column {col!r} of", out
    if case in ("analyze/reward-1e308", "analyze/logp-prior-minus-1e308"):
        frame = make_scored(n=20)
        col, value = ("reward", 1e308) if "reward" in case else ("logp_prior", -1e308)
        frame.loc[3, col] = value
        return ["analyze", str(write_scored(frame, tmp / "huge")), "--out", str(out)], "overflow", out
    if case == "analyze/truncated-shard":
        shard = sorted(scored.glob("*.parquet"))[0]
        shard.write_bytes(shard.read_bytes()[:200])
        return [*a, "--out", str(out)], "is not a readable Parquet file", out
    if case == "analyze/text-file-named-parquet":
        (scored / "zz.parquet").write_text("prompt_id,reward\n1,2\n")
        return [*a, "--out", str(out)], "zz.parquet", out
    if case == "analyze/conflicting-schemas":
        frame = make_scored(n=20).iloc[:5].copy()
        frame["reward"] = "high"
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), scored / "zz.parquet")
        return [*a, "--out", str(out)], "do not share one schema", out
    if case == "analyze/corrupt-run-record":
        (scored / "_run.json").write_text("{not json")
        return [*a, "--out", str(out)], "is not valid JSON", out
    if case == "analyze/empty-folder":
        (tmp / "empty").mkdir()
        return ["analyze", str(tmp / "empty"), "--out", str(out)], "holds no Parquet shards", out
    if case == "analyze/bad-format":
        return [*a, "--out", str(out), "--format", "gif"], "--format='gif'", out
    if case == "analyze/bad-target":
        return [*a, "--out", str(out), "--target", "prior"], "target='prior'", out
    if case == "analyze/confidence-above-1":
        return [*a, "--out", str(out), "--confidence", "1.5"], "confidence=1.5", out
    if case == "analyze/zero-corpora":
        return [*a, "--out", str(out), "--corpora", "0"], "corpora=0", out
    if case == "analyze/what-if-without-columns":
        return [*a, "--out", str(out), "--what-if", "temperature=0.8"], "teacher-forced columns", out
    if case == "analyze/what-if-full-width-digit":
        return [*a, "--out", str(out), "--what-if", "temperature=０.8"], "is not a number", out
    if case == "analyze/bad-adaptor-spec":
        frame = make_scored(n=20)
        frame.loc[0, "adaptor"] = "banana=3"
        return ["analyze", str(write_scored(frame, tmp / "ba")), "--out", str(out)], "banana", out
    raise AssertionError(case)


def _demo_toy_case(c: _Case, case: str) -> tuple[list[str], str, Path]:
    tmp, out = c.tmp, c.out
    command, _, kind = case.partition("/")
    if command in ("demo", "toy") and kind in ("out-is-a-file", "out-holds-foreign-files", "bad-format"):
        return _output_folder_case(command, kind, tmp, out)
    if case == "demo/zero-temperature":
        return ["demo", "--out", str(out), "--temperature", "0"], "temperatures", out
    if case == "demo/text-diverges":
        text = tmp / "t.txt"
        text.write_text(
            "".join(f"a{i % 7} b{i % 5} c{i % 3} d{i % 11} e a b c d e a b c\n" for i in range(60))
        )
        return (
            ["demo", "--out", str(out), "--reward", "rarity", "--text", str(text)],
            "normalizes with this text",
            out,
        )
    if case == "toy/one-string":
        return ["toy", "--out", str(out), "--n-strings", "1"], "n_strings=1", out
    if case == "toy/zero-alpha":
        return ["toy", "--out", str(out), "--alpha", "0"], "alpha=0", out
    if case == "toy/negative-noise":
        return ["toy", "--out", str(out), "--noise", "-1"], "noise=-1", out
    raise AssertionError(case)


def _generate_case(c: _Case, case: str) -> tuple[list[str], str, Path]:
    tmp, out, g = c.tmp, c.out, list(c.generate_argv)
    if case == "generate/out-is-a-file":
        return [*g, "--out", str(tmp / "file.txt")], "is a file, not a folder", tmp / "file.txt"
    if case == "generate/out-under-a-file":
        return [*g, "--out", str(tmp / "file.txt" / "o")], "which is a file", out
    if case == "generate/prompts-missing":
        g[g.index("--prompts") + 1] = str(tmp / "none.jsonl")
        return [*g, "--out", str(out)], "none.jsonl", out
    if case == "generate/huge-num-generations":
        g[g.index("--num-generations") + 1] = "1000000000"
        return [*g, "--out", str(out)], "--num-generations=1000000000", out
    if case == "generate/seed-beyond-64-bits":
        g[g.index("--seed") + 1] = "18446744073709551616"
        return [*g, "--out", str(out)], "seed", out
    if case == "generate/model-folder-missing":
        return [*g, "--out", str(out)], "does not exist", out
    if case == "generate/bad-adaptor":
        g[g.index("--adaptor") + 1] = "top_k=-3"
        return [*g, "--out", str(out)], "top_k", out
    if case in ("generate/full-width-digit-adaptor", "generate/underscore-digits-adaptor",
                "generate/nan-top-p", "generate/inf-temperature", "generate/full-width-mixture-weight"):
        spec = {"generate/full-width-digit-adaptor": "top_k=３",
                "generate/underscore-digits-adaptor": "top_k=1_0",
                "generate/nan-top-p": "top_p=nan", "generate/inf-temperature": "temperature=inf",
                "generate/full-width-mixture-weight": "mix(０.5:top_k=3|0.5:top_k=4)"}[case]
        g[g.index("--adaptor") + 1] = spec
        return [*g, "--out", str(out)], "not", out
    if case == "generate/num-prompts-beyond-the-file":
        return [*g, "--num-prompts", "5", "--prompt-seed", "0", "--out", str(out)], "more than the 2", out
    if case == "generate/max-prompt-chars-keeps-none":
        return [*g, "--max-prompt-chars", "1", "--out", str(out)], "max_chars=1", out
    raise AssertionError(case)


def _score_case(c: _Case, case: str) -> tuple[list[str], str, Path]:
    tmp, out = c.tmp, c.out
    if case == "score/corpus-missing":
        return ["score", str(tmp / "nowhere"), "--reward", "vader", "--out", str(out)], "does not exist", out
    if case == "score/out-inside-the-corpus":
        corpus = _generated(tmp)
        return ["score", str(corpus), "--reward", "vader", "--out", str(corpus / "s")], "inside", corpus
    if case == "score/corrupt-run-record":
        corpus = _generated(tmp)
        (corpus / "_run.json").write_text("[1, 2")
        return (
            ["score", str(corpus), "--reward", "vader", "--out", str(out)],
            "not a readable run record",
            out,
        )
    if case == "score/python-reward-module-missing":
        corpus = _generated(tmp)
        return (
            ["score", str(corpus), "--reward", "python:no_such_module_xyz:f", "--out", str(out)],
            "cannot import module",
            out,
        )
    if case == "score/unknown-reward":
        corpus = _generated(tmp)
        return ["score", str(corpus), "--reward", "banana", "--out", str(out)], "banana", out
    if case == "score/python-reward-raises":
        frame = make_scored(n=8)[[*GENERATED_COLUMNS, "logp_prior"]]
        frame.loc[3, "text"] = "boom"
        corpus = write_scored(frame, tmp / "corpus", shards=1)
        (tmp / "bad_reward_mod.py").write_text(
            "def reward(prompts, texts):\n    return [1 / 0 if t == 'boom' else 0.0 for t in texts]\n"
        )
        return (
            ["score", str(corpus), "--reward", "python:bad_reward_mod:reward", "--out", str(out)],
            "raised ZeroDivisionError on row 3 of the batch (prompt_id=1, sample_id=1, adaptor=",
            out,
        )
    raise AssertionError(case)


def _run_case(c: _Case, case: str) -> tuple[list[str], str, Path]:
    tmp, out = c.tmp, c.out
    if case == "run/config-missing":
        return ["run", str(tmp / "none.toml"), "--out", str(out)], "none.toml", out
    if case == "run/incomplete-config":
        (tmp / "c.toml").write_text("[generate]\nbanana = 1\n")
        return ["run", str(tmp / "c.toml"), "--out", str(out)], "c.toml: models is required", out
    raise AssertionError(case)


def _datasets_folder(folder: Path, texts: list[str]) -> Path:
    """A `datasets.save_to_disk` folder (one Arrow stream file and its state.json), written with pyarrow."""
    folder.mkdir()
    table = pa.table({"prompt": texts})
    with pa.ipc.new_stream(str(folder / "data-00000-of-00001.arrow"), table.schema) as writer:
        writer.write_table(table)
    files = [{"filename": "data-00000-of-00001.arrow"}]
    (folder / "state.json").write_text(json.dumps({"_data_files": files}))
    (folder / "dataset_info.json").write_text("{}")
    return folder


def _prompts_source(tmp: Path, kind: str) -> tuple[Path, str]:
    """A bad prompts source of one kind, and a phrase of its one-line error."""
    import socket

    if kind == "fifo":
        os.mkfifo(tmp / "pipe.jsonl")  # never written to: reading it would block forever
        return tmp / "pipe.jsonl", "is a FIFO"
    if kind == "socket":
        path = tmp / "s.jsonl"
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        return path, "is a socket"
    if kind == "device":
        (tmp / "dev.jsonl").symlink_to("/dev/zero")  # endless, behind a link
        return tmp / "dev.jsonl", "is a device"
    if kind == "folder-holding-a-fifo":
        (tmp / "pf").mkdir()
        os.mkfifo(tmp / "pf" / "part.parquet")
        return tmp / "pf", "is a FIFO"
    files = {
        "empty-jsonl": ("p.jsonl", b"", "holds no prompts"),
        "jsonl-bad-line": ("p.jsonl", b'{"prompt": "a"}\n{"prompt": \n', "line 2: not valid JSON"),
        "jsonl-not-an-object": ("p.jsonl", b'["a"]\n', "expected a JSON object"),
        "jsonl-no-field": ("p.jsonl", b'{"text": "a"}\n', "no field 'prompt'"),
        "jsonl-not-utf8": ("p.jsonl", b'{"prompt": "a"}\n{"prompt": "\xff"}\n', "line 2: not UTF-8"),
        "jsonl-number-not-text": ("p.jsonl", b'{"prompt": 3}\n', "is int, not text"),
        "jsonl-null": ("p.jsonl", b'{"prompt": null}\n', "has no value"),
        "empty-prompt": ("p.jsonl", b'{"prompt": "a"}\n{"prompt": ""}\n', "row 1 field 'prompt' is empty"),
        "whitespace-prompt": ("p.jsonl", b'{"prompt": " \\n\\t "}\n', "is only whitespace"),
        "repeated-prompt": ("p.jsonl", b'{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "a"}\n',
                            "row 2 repeats row 0"),
        "csv-malformed": ("p.csv", b'prompt\n"unclosed\n', "malformed CSV"),
        "csv-no-field": ("p.csv", b"text\na\n", "no field 'prompt'"),
        "csv-empty": ("p.csv", b"", "holds no prompts"),
        "csv-empty-cell": ("p.csv", b'prompt\na\n""\n', "is empty"),
        "parquet-truncated": ("p.parquet", b"PAR1\x00\x01", "not a readable Parquet file"),
        "unknown-suffix": ("p.txt", b"hello\n", "unknown format '.txt'"),
        "arrow-garbage": ("p.arrow", b"not arrow at all", "not a readable Arrow file"),
    }
    if kind in files:
        name, data, needle = files[kind]
        (tmp / name).write_bytes(data)
        return tmp / name, needle
    if kind == "parquet-no-field":
        pq.write_table(pa.table({"text": ["a"]}), tmp / "p.parquet")
        return tmp / "p.parquet", "no field 'prompt'"
    if kind == "folder-without-parquet":
        (tmp / "pf").mkdir()
        (tmp / "pf" / "notes.txt").write_text("x")
        return tmp / "pf", "holds no Parquet files"
    folder = _datasets_folder(tmp / "ds", ["a", "b"])
    if kind == "datasets-corrupt-state":
        (folder / "state.json").write_text('{"_data_files": [')
        return folder, "is not valid JSON"
    if kind == "datasets-state-not-an-object":
        (folder / "state.json").write_text("[1]")
        return folder, "is not a JSON object"
    if kind == "datasets-no-data-files":
        (folder / "state.json").write_text("{}")
        return folder, "lists no data files"
    if kind == "datasets-incomplete":
        (folder / "data-00000-of-00001.arrow").unlink()
        return folder, "is incomplete"
    if kind == "datasets-truncated-arrow":
        data = folder / "data-00000-of-00001.arrow"
        data.write_bytes(data.read_bytes()[:40])
        return folder, "not a readable Arrow file"
    if kind == "datasets-dict":
        (folder / "state.json").unlink()
        os.rename(folder, tmp / "train")
        folder.mkdir()
        os.rename(tmp / "train", folder / "train")
        (folder / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))
        return folder, "is a DatasetDict with several splits (train)"
    if kind == "datasets-dict-corrupt":
        (folder / "dataset_dict.json").write_text("{spl")
        return folder, "dataset_dict.json' is not valid JSON"
    raise AssertionError(kind)


def _prompts_case(c: _Case, case: str) -> tuple[list[str], str, Path]:
    """A bad prompts source given to `generate` (checked before any model loads)."""
    g = list(c.generate_argv)
    path, needle = _prompts_source(c.tmp, case.partition("/")[2])
    g[g.index("--prompts") + 1] = str(path)
    return [*g, "--out", str(c.out)], needle, c.out


#: A complete experiment file (models that do not exist are never reached: the file is refused first).
CONFIG = """[models.aligned]
name = "{tmp}/aligned"
[models.prior]
name = "{tmp}/prior"
[prompts]
file = "{tmp}/p.jsonl"
chat_template = true
[sampling]
families = ["ancestral", "top_k=30"]
temperatures = [0.7, 1.0]
num_generations = 2
max_new_tokens = 8
seed = 42
[reward]
kind = "vader"
[analysis]
imh_steps = 2000
seed = 0
"""

#: case -> (old text, new text, a phrase of the error).
CONFIG_EDITS = {
    "seed-is-a-date": ("seed = 42", "seed = 2026-12-06", "sampling.seed: expected an integer, got a date"),
    "seed-is-a-time": ("seed = 42", "seed = 12:30:00", "got a time of day"),
    "seed-is-a-date-time": ("seed = 42", "seed = 2026-12-06T10:00:00", "got a date and time"),
    "count-is-a-boolean": ("num_generations = 2", "num_generations = true",
                           "line 11: sampling.num_generations: expected an integer, got the boolean true"),
    "count-is-text": ("num_generations = 2", 'num_generations = "2"',
                      "got the text '2'; write it without quotes"),
    "count-is-a-decimal": ("imh_steps = 2000", "imh_steps = 2e3", "got the decimal number 2000.0"),
    "temperature-is-text": ("temperatures = [0.7, 1.0]", 'temperatures = ["0.7"]',
                            "line 10: sampling.temperatures.0: expected a number, got the text '0.7'"),
    "flag-is-an-integer": ("chat_template = true", "chat_template = 1",
                           "expected true or false, got the integer 1"),
    "flag-is-text": ("chat_template = true", 'chat_template = "yes"', "expected true or false"),
    "list-is-text": ('families = ["ancestral", "top_k=30"]', 'families = "top_k=30"',
                     "sampling.families: expected a list"),
    "name-is-a-number": ('kind = "vader"', "kind = 3", "expected text"),
    "section-is-a-value": ("[reward]\nkind = \"vader\"", "reward = 3", "reward"),
    "full-width-digit-in-a-spec": ('"top_k=30"', '"top_k=３0"', "is not an integer (ASCII digits"),
    "underscore-digits-in-a-spec": ('"top_k=30"', '"top_k=3_0"', "is not an integer"),
    "nan-in-a-spec": ('"top_k=30"', '"top_p=nan"', "is not a number"),
    "what-if-full-width": ("seed = 0", 'seed = 0\nwhat_if = ["temperature=０.5:1.0:0.1"]', "is not a number"),
    "what-if-empty-range": ("seed = 0", 'seed = 0\nwhat_if = ["temperature=1.0:0.5:0.1"]', "empty range"),
    "negative-seed": ("seed = 42", "seed = -1", "sampling.seed=-1"),
    "seed-beyond-64-bits": ("seed = 42", "seed = 9223372036854775808", "seed"),
    "unknown-nested-key": ("seed = 42", "seed = 42\nsed = 1", "unknown key 'sampling.sed'"),
    "duplicate-key": ("seed = 42", "seed = 42\nseed = 43", "not valid TOML"),
    "not-toml": ("[reward]", "[reward", "not valid TOML"),
    "prompts-file-missing": ('file = "{tmp}/p.jsonl"', 'file = "{tmp}/none.jsonl"', "none.jsonl"),
    "prompts-file-a-fifo": ('file = "{tmp}/p.jsonl"', 'file = "{tmp}/pipe.jsonl"', "is a FIFO"),
}


def _config_case(c: _Case, case: str) -> tuple[list[str], str, Path]:
    """A bad experiment file given to `run`."""
    tmp, out, kind = c.tmp, c.out, case.partition("/")[2]
    write_prompts(tmp / "p.jsonl", ["hi", "there"])
    config = tmp / "c.toml"
    if kind == "not-utf8":
        config.write_bytes(CONFIG.format(tmp=tmp).encode() + b"# caf\xe9\n")
        return ["run", str(config), "--out", str(out)], "line 19: not UTF-8 text", out
    if kind == "empty-file":
        config.write_text("")
        return ["run", str(config), "--out", str(out)], "models is required", out
    if kind == "config-is-a-folder":
        (tmp / "cfg").mkdir()
        return ["run", str(tmp / "cfg"), "--out", str(out)], "is not a file", out
    if kind == "config-is-a-fifo":
        os.mkfifo(tmp / "c.toml")
        return ["run", str(tmp / "c.toml"), "--out", str(out)], "is not a file", out
    old, new, needle = CONFIG_EDITS[kind]
    if kind == "prompts-file-a-fifo":
        os.mkfifo(tmp / "pipe.jsonl")
    text = CONFIG.format(tmp=tmp)
    old, new = old.format(tmp=tmp), new.format(tmp=tmp)
    assert old in text, old
    config.write_text(text.replace(old, new, 1), encoding="utf-8")
    return ["run", str(config), "--out", str(out)], needle, out


PROMPT_SOURCES = [
    "fifo", "socket", "device", "folder-holding-a-fifo", "empty-jsonl", "jsonl-bad-line",
    "jsonl-not-an-object", "jsonl-no-field", "jsonl-not-utf8", "jsonl-number-not-text", "jsonl-null",
    "empty-prompt", "whitespace-prompt", "repeated-prompt", "csv-malformed", "csv-no-field", "csv-empty",
    "csv-empty-cell", "parquet-truncated", "parquet-no-field", "unknown-suffix", "arrow-garbage",
    "folder-without-parquet", "datasets-corrupt-state", "datasets-state-not-an-object",
    "datasets-no-data-files", "datasets-incomplete", "datasets-truncated-arrow", "datasets-dict",
    "datasets-dict-corrupt",
]

CASES = [
    "analyze/scored-dir-missing",
    "analyze/out-is-the-scored-dir",
    "analyze/out-inside-the-scored-dir",
    "analyze/out-holds-foreign-files",
    "analyze/out-is-a-demo-folder",
    "analyze/out-under-a-file",
    "analyze/duplicate-rows",
    "analyze/duplicate-rows-other-spelling",
    "analyze/reward-as-strings",
    "analyze/finished-as-strings",
    "analyze/logq-as-strings",
    "analyze/reward-1e308",
    "analyze/logp-prior-minus-1e308",
    "analyze/truncated-shard",
    "analyze/text-file-named-parquet",
    "analyze/conflicting-schemas",
    "analyze/corrupt-run-record",
    "analyze/empty-folder",
    "analyze/bad-format",
    "analyze/bad-target",
    "analyze/confidence-above-1",
    "analyze/zero-corpora",
    "analyze/bad-adaptor-spec",
    "demo/out-is-a-file",
    "demo/out-holds-foreign-files",
    "demo/bad-format",
    "demo/zero-temperature",
    "demo/text-diverges",
    "toy/out-is-a-file",
    "toy/out-holds-foreign-files",
    "toy/bad-format",
    "toy/one-string",
    "toy/zero-alpha",
    "toy/negative-noise",
    "generate/out-is-a-file",
    "generate/out-under-a-file",
    "generate/prompts-missing",
    "generate/huge-num-generations",
    "generate/seed-beyond-64-bits",
    "generate/model-folder-missing",
    "generate/bad-adaptor",
    "score/corpus-missing",
    "score/out-inside-the-corpus",
    "score/corrupt-run-record",
    "score/python-reward-module-missing",
    "score/unknown-reward",
    "score/python-reward-raises",
    "run/config-missing",
    "run/incomplete-config",
    "analyze/what-if-without-columns",
    "analyze/what-if-full-width-digit",
    "generate/full-width-digit-adaptor",
    "generate/underscore-digits-adaptor",
    "generate/nan-top-p",
    "generate/inf-temperature",
    "generate/full-width-mixture-weight",
    "generate/num-prompts-beyond-the-file",
    "generate/max-prompt-chars-keeps-none",
    *(f"prompts/{kind}" for kind in PROMPT_SOURCES),
    *(f"config/{kind}" for kind in (*CONFIG_EDITS, "not-utf8", "empty-file", "config-is-a-folder",
                                    "config-is-a-fifo")),
]


#: Failures found only once the stage runs (user code): the folder keeps `_run.json`, which never blocks
# the rerun.
FAILS_AFTER_START = {"score/python-reward-raises"}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys, case):
    import signal

    def hung(*_):
        raise AssertionError(f"{case}: no answer in 60 s (a read that blocks?)")

    signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)  # a FIFO or a device read would block forever: fail instead
    try:
        _check_case(tmp_path, monkeypatch, capsys, case)
    finally:
        signal.alarm(0)


def _check_case(tmp_path, monkeypatch, capsys, case):
    args, needle, out = _case_setup(tmp_path, case)
    monkeypatch.syspath_prepend(str(tmp_path))  # python:MODULE rewards written into tmp_path
    before = _snapshot(out)
    code, _, err = cli(monkeypatch, capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    if case in FAILS_AFTER_START:  # the run had started: its record (and lock) may stay, never an output file
        assert not list(out.glob("*.parquet")), f"{case} left a shard in {out}"
    else:
        assert _snapshot(out) == before, f"{case} changed {out}"


def test_the_documented_count_matches():
    text = (Path(__file__).resolve().parents[1] / "docs" / "reliability.md").read_text(encoding="utf-8")
    assert f"{len(CASES)} bad inputs" in text
    for case in CASES:
        assert f"`{case}`" in text, case


# ------------------------------------------------------------------------------------------ missing torch
@pytest.mark.parametrize(
    "command",
    [
        ["demo", "--out", "{tmp}/o"],
        [
            "generate",
            "--model",
            "m",
            "--prompts",
            "{tmp}/p.jsonl",
            *SAMPLING_ARGS,
            "--out",
            "{tmp}/o",
        ],
        ["score", "{tmp}/corpus", "--reward", "vader", "--out", "{tmp}/o"],
    ],
)
def test_without_torch_one_line_says_what_to_install(tmp_path, command):
    """A sitecustomize that hides torch and transformers, as on a machine with the analysis side only."""
    (tmp_path / "hide").mkdir()
    (tmp_path / "hide" / "sitecustomize.py").write_text(
        "import sys\nsys.modules['torch'] = None\nsys.modules['transformers'] = None\n"
    )
    write_prompts(tmp_path / "p.jsonl", ["hi"])
    _generated(tmp_path)
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tmp_path / "hide"), str(SRC)])}
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    run = subprocess.run(
        [sys.executable, "-m", "pqtradeoff", *args], capture_output=True, text=True, env=env, timeout=120
    )
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    assert "is not installed" in lines[0] and "pip install torch" in lines[0]
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------ --version and --help
def test_version(monkeypatch, capsys):
    from pqtradeoff import __version__

    code, out, _ = cli(monkeypatch, capsys, "--version")
    assert code == 0 and out.strip() == f"pqtradeoff {__version__}"


@pytest.mark.parametrize("command", ["", "analyze", "demo", "toy", "generate", "score", "run", "advise"])
def test_help_is_readable_at_80_columns(command):
    """Every option name appears whole, no line is cut (no ellipsis) or wider than 80 columns."""
    env = os.environ | {"COLUMNS": "80", "PYTHONPATH": str(SRC)}
    run = subprocess.run(
        [sys.executable, "-m", "pqtradeoff", *([command] if command else []), "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert "…" not in run.stdout
    if command == "generate":
        assert "--save-token-logprobs" in run.stdout and "float32 | bfloat16" in run.stdout.replace("\n", " ")


def test_demo_table_fits_80_columns_without_wrapping(tmp_path):
    env = os.environ | {"COLUMNS": "80", "PYTHONPATH": str(SRC)}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pqtradeoff",
            "demo",
            "--out",
            str(tmp_path / "d"),
            "--no-progress",
            "--family",
            "eta_cutoff=0.0009",
            "--family",
            "typical_p=0.9",
            "--temperature",
            "1.0",
            "--num-generations",
            "200",
            "--imh-steps",
            "500",
            "--corpora",
            "20",
            "--corpus-size",
            "50",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    rows = [line for line in run.stdout.splitlines() if "eta_cutoff" in line or "typical_p" in line]
    assert len(rows) == 2, run.stdout  # one line per configuration: no cell wrapped onto a second line
    assert all(len(line) <= 80 and "±" in line for line in rows), rows


# ---------------------------------------------------------------------- output folders: the ownership rule
def test_analyze_rerun_replaces_its_own_outputs_and_keeps_nothing_stale(tmp_path, monkeypatch, capsys):
    scored = write_scored(make_scored(n=20), tmp_path / "scored")
    out = tmp_path / "out"
    a = [
        "analyze",
        str(scored),
        "--out",
        str(out),
        "--corpora",
        "5",
        "--corpus-size",
        "5",
        "--imh-steps",
        "50",
    ]
    assert cli(monkeypatch, capsys, *a)[0] == 0
    assert (out / "corpus_level.png").is_file()
    assert cli(monkeypatch, capsys, *a, "--no-plots")[0] == 0
    assert not list(out.glob("*.png")), "figures of the earlier run stayed beside the new summary"
    assert cli(monkeypatch, capsys, *a, "--format", "svg")[0] == 0
    assert sorted(p.suffix for p in out.glob("*_level.*")) == [".svg", ".svg"]
    assert (
        not (out / ".pqtradeoff.lock").exists()
        or json.loads((out / ".pqtradeoff.lock").read_text())["pid"] == os.getpid()
    )


def test_toy_rerun_in_another_format_removes_the_old_figures(tmp_path, monkeypatch, capsys):
    out = tmp_path / "toy"
    small = ["--out", str(out), "--n-strings", "50", "--n-corpora", "30", "--corpus-size", "100"]
    assert cli(monkeypatch, capsys, "toy", *small)[0] == 0
    assert len(list(out.glob("*.png"))) == 3
    assert cli(monkeypatch, capsys, "toy", *small, "--format", "pdf")[0] == 0
    assert not list(out.glob("*.png")) and len(list(out.glob("*.pdf"))) == 3
    assert all(p.read_bytes().startswith(b"%PDF") for p in out.glob("*.pdf"))


# ------------------------------------------------------------------------------------------- two writers
def test_a_second_live_writer_is_refused_naming_the_holder(tmp_path):
    from pqtradeoff.errors import PQError
    from pqtradeoff.io import LOCK_FILE, claim_folder

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folder = tmp_path / "out"
        folder.mkdir()
        (folder / LOCK_FILE).write_text(
            json.dumps(
                {"pid": holder.pid, "host": os.uname().nodename, "command": "generate", "since": "now"}
            )
        )
        (folder / ".shard.parquet.abc.tmp").write_text("the live writer's temporary")
        with pytest.raises(PQError, match=f"another process \\(pid {holder.pid} on .*generate"):
            claim_folder(folder, "score")
        assert (folder / ".shard.parquet.abc.tmp").exists()  # the live writer's temporary is untouched
    finally:
        holder.kill()
        holder.wait()
    assert (
        claim_folder(folder, "score") == 1
    )  # a dead holder's lock is stale: taken over, temporaries removed
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_two_processes_analyzing_into_one_folder_one_is_refused(tmp_path):
    """Two real `analyze` processes started together into one --out: at most one holds the lock at a time;
    each
    either finishes or is refused with the one-line lock error, and the folder ends complete."""
    scored = write_scored(make_scored(n=200), tmp_path / "scored")
    args = [
        sys.executable,
        "-m",
        "pqtradeoff",
        "analyze",
        str(scored),
        "--out",
        str(tmp_path / "out"),
        "--corpora",
        "200",
        "--corpus-size",
        "200",
        "--imh-steps",
        "20000",
    ]
    env = os.environ | {"PYTHONPATH": str(SRC)}
    procs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for code, err in results:
        assert code == 0 or (code == 2 and "is being written by another process" in err), err
    assert any(code == 0 for code, _ in results)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["settings"]["imh_steps"] == 20000
    assert not (tmp_path / "out" / ".pqtradeoff.lock").exists()  # released at exit


# ------------------------------------------------------------------------------------------------ helpers
def test_smallest_normalizing_beta_is_right_at_the_threshold():
    """The suggested beta normalizes and a beta 5% below the threshold does not (brute force over a grid)."""
    from pqtradeoff.demo import smallest_normalizing_beta
    from pqtradeoff.exact import demo_models as dm
    from pqtradeoff.models import fsa

    prior = fsa.random_ngram(8, 2, seed=1, alpha=0.5, eos_prob=0.05, zipf=1.0)
    reward = dm.rarity_reward(prior, 3.0, 0.0, seed=1)
    works = smallest_normalizing_beta(prior, reward, 0.5)
    assert works is not None
    fsa.align(prior, reward, works)  # does not raise
    grid = np.geomspace(0.5, works, 200)
    normalizing = []
    for b in grid:
        try:
            fsa.align(prior, reward, b)
            normalizing.append(b)
        except Exception:
            pass
    assert normalizing and min(normalizing) > works / 1.15  # the suggestion is within 15% of the threshold


# ------------------------------------------------------------------------------------------ kill -9, resume
def _kill_after(args: list[str], folder: Path, shards: int, env: dict[str, str]) -> None:
    """Start `pqtradeoff ARGS`, SIGKILL it once `folder` holds `shards` finished shards (or it ends)."""
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "pqtradeoff", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while (
        len(list(folder.glob("*.parquet"))) < shards and proc.poll() is None and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    proc.kill()  # SIGKILL, as kill -9: no clean-up runs, the lock file stays behind
    proc.wait()


@pytest.mark.parametrize("kill_at", [1, 3, 5])
def test_score_killed_with_sigkill_then_rerun_is_byte_identical(tmp_path, kill_at):
    """`score` killed after 1, 3 or 5 of 6 shards, rerun: every shard equals an uninterrupted run's, byte for
    byte, and the dead run's lock is taken over."""
    frame = make_scored(n=16)[[*GENERATED_COLUMNS, "logp_prior"]]
    corpus = write_scored(frame, tmp_path / "corpus", shards=6)
    (tmp_path / "slow_reward.py").write_text(
        "import time\n\ndef reward(prompts, texts):\n    time.sleep(0.3)\n    return [float(len(t)) for t "
        "in texts]\n"
    )
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(SRC)])}
    common = ["score", str(corpus), "--reward", "python:slow_reward:reward", "--no-progress", "--out"]
    killed = tmp_path / "killed"
    _kill_after([*common, str(killed)], killed, kill_at, env)
    written = len(list(killed.glob("*.parquet")))
    assert kill_at <= written < 6, f"the kill did not land mid-run ({written} shards)"
    assert (killed / ".pqtradeoff.lock").exists()  # left by the killed process
    for extra in ([], []):  # rerun (resume), then once more (nothing left to do)
        run = subprocess.run(
            [sys.executable, "-m", "pqtradeoff", *common, str(killed), *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
    whole = subprocess.run(
        [sys.executable, "-m", "pqtradeoff", *common, str(tmp_path / "whole")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert whole.returncode == 0, whole.stderr
    names = sorted(p.name for p in (tmp_path / "whole").glob("*.parquet"))
    assert len(names) == 6 and sorted(p.name for p in killed.glob("*.parquet")) == names
    for name in names:
        assert (killed / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert not list(killed.glob(".*.tmp"))


def test_analyze_killed_with_sigkill_then_rerun_gives_the_same_outputs(tmp_path):
    """`analyze` killed once it has begun writing, rerun into the same folder: the outputs equal an
    uninterrupted run's (figures and corpora byte for byte; summary.json except the command line it
    records)."""
    scored = write_scored(make_scored(n=200), tmp_path / "scored")
    env = os.environ | {"PYTHONPATH": str(SRC)}
    common = [
        "analyze",
        str(scored),
        "--corpora",
        "300",
        "--corpus-size",
        "300",
        "--imh-steps",
        "20000",
        "--out",
    ]
    killed = tmp_path / "killed"
    _kill_after([*common, str(killed)], killed, 1, env)  # corpora.parquet is the first file written
    for out in (killed, tmp_path / "whole"):
        run = subprocess.run(
            [sys.executable, "-m", "pqtradeoff", *common, str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
    for name in ("corpora.parquet", "corpus_level.png", "string_level.png", "frontier.png", "hull.png"):
        assert (killed / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name

    def without_argv(folder: Path) -> dict:
        summary = json.loads((folder / "summary.json").read_text())
        summary["run"].pop("argv")
        return summary

    assert without_argv(killed) == without_argv(tmp_path / "whole")
