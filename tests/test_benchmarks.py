"""The benchmark scripts keep running: each answers --help, and the generation roofline benchmark runs end to
end on a tiny checkpoint (every code path it times: ours, transformers' generate, scoring, the figure).

Speed itself is never asserted here (machines are noisy); the scripts print their own ratios.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_every_benchmark_answers_help(script):
    done = run(str(BENCHMARKS / script), "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_generation_roofline_runs_on_a_tiny_model(tiny_hf, tmp_path):
    figure = tmp_path / "speed.png"
    done = run(str(BENCHMARKS / "generation_roofline.py"), "--model", str(tiny_hf.llama), "--batches", "2,4",
               "--new-tokens", "5", "--hf-max-batch", "2", "--samples-per-prompt", "2",
               "--figure", str(figure))
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for line in ("roofline:", "best: ours at batch", "teacher-forced scoring", "time split of ours"):
        assert line in out, out
    assert figure.stat().st_size > 1000


def test_inference_alignment_runs_on_a_tiny_model(tiny_hf):
    done = run(str(BENCHMARKS / "inference_alignment.py"), "--model", str(tiny_hf.llama), "--prompts", "2",
               "--new-tokens", "4")
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for line in ("GEMM peak", "temperature=1.0,best_of_n=4", "temperature=1.0,dera=0.5", "best-of-4 costs"):
        assert line in out, out


def test_what_if_runs_on_a_tiny_model(tiny_hf):
    done = run(str(BENCHMARKS / "what_if.py"), "--model", str(tiny_hf.llama), "--rows", "8", "--new-tokens",
               "4", "--repeats", "1", "--adaptors", "temperature=0.8:1.2:0.2", "top_p=0.9", "top_k=3",
               "typical_p=0.9")
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for line in ("GEMM peak", "scoring (the prior's path)", "pass, 6 what-if adaptors", "the pass runs at",
                 "typical_p=0.9"):
        assert line in out, out
