"""benchmarks/gpu_check.py is not dead code: its hf part runs on CPU with a tiny model and passes its own
checks
(its vllm part needs a GPU and has not run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_help():
    done = _run("--help")
    assert done.returncode == 0 and "--backend-only" in done.stdout


def test_hf_part_on_cpu(tmp_path, tiny_hf):
    out = tmp_path / "check.json"
    done = _run(
        "--backend-only",
        "hf",
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--model",
        str(tiny_hf.llama),
        "--prompts",
        "2",
        "--samples",
        "2",
        "--max-new-tokens",
        "6",
        "--specs",
        "temperature=0.7,top_k=5",
        "typical_p=0.9",
        "--json",
        str(out),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ALL OK" in done.stdout
    figures = json.loads(out.read_text())
    assert [r["spec"] for r in figures["generation"]] == [
        "temperature=0.7,top_k=5",
        "temperature=1.0,typical_p=0.9",
    ]
    for r in figures["generation"]:
        assert (
            r["strings"] == 4 and r["tokens"] > 0 and max(r["max_gap_logq"], r["max_gap_log_weight"]) < 1e-4
        )
    assert figures["scoring"][0]["backend"] == "hf" and figures["scoring"][0]["tokens_per_s"] > 0
