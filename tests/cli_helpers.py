"""Run the CLI in this process (the one-line error path) and write small prompt files and experiment configs,
for the tests."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """Run `pqtradeoff ARGS` through main(); (exit code, stdout, stderr)."""
    from pqtradeoff.cli import main

    monkeypatch.setattr(sys, "argv", ["pqtradeoff", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_prompts(path: Path, texts) -> Path:
    path.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def write_config(path: Path, aligned: Path, prior: Path, prompts: Path, families=("ancestral", "top_k=5"),
                 extra: str = "", num_generations: int = 2, reward: str = 'kind = "vader"') -> Path:
    path.write_text(f"""
[models.aligned]
name = "{aligned}"
device = "cpu"

[models.prior]
name = "{prior}"
device = "cpu"

[prompts]
file = "{prompts.name}"

[sampling]
adaptors = {json.dumps(list(families))}
num_generations = {num_generations}
max_new_tokens = 6
seed = 3

[reward]
{reward}

[analysis]
imh_steps = 500
corpora = 20
corpus_size = 8
keep_unfinished = true
plots = false
{extra}
""", encoding="utf-8")
    return path


def swap(text: str, old: str, new: str) -> str:
    """Replace `old` in a shipped example; fail loudly when the example no longer holds it."""
    assert old in text, f"the example changed: {old!r} not found"
    return text.replace(old, new)
