"""`pqtradeoff run` interrupted: SIGKILL at three points of every stage, Ctrl-C, and two runs on one folder.

A run on the tiny offline models is killed with SIGKILL (kill -9: no clean-up runs) three times in each of
generate, score and analyze - each kill lands in a rerun of the previous kill's folder, wherever that rerun
is once the condition holds - then rerun to the end: every file equals an uninterrupted run's byte for byte,
except the top-level `_run.json`, which records wall times. SIGINT stops a run with one line and exit 130,
leaving no temporary file; a second `run` on a folder that a live `run` is writing is refused in one line.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import write_config, write_prompts

SRC = Path(__file__).resolve().parents[2] / "src"
SLOW_REWARD = ("import time\n\ndef reward(prompts, texts):\n    time.sleep(0.25)\n"
               "    return [float(len(t)) for t in texts]\n")
SHARDS = 8  # 2 adaptors x 4 generations, one generation per shard


@pytest.fixture(scope="module")
def experiment(tiny_hf, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("interrupted")
    (tmp / "slow_reward.py").write_text(SLOW_REWARD)
    prompts = write_prompts(tmp / "p.jsonl", ["hello there", "how are you", "tell me more"])
    config = write_config(tmp / "e.toml", tiny_hf.llama, tiny_hf.prior, prompts, num_generations=4,
                          reward='kind = "python:slow_reward:reward"')
    text = config.read_text().replace("imh_steps = 500", "imh_steps = 400000").replace("plots = false",
                                                                                      "plots = true")
    text = text.replace("corpora = 20", "corpora = 4000")
    config.write_text(text)
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tmp), str(SRC)]), "OMP_NUM_THREADS": "1"}
    return tmp, config, env


def _run(config: Path, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pqtradeoff", "run", str(config), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)


def _start(config: Path, out: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pqtradeoff", "run", str(config), "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _files(folder: Path) -> dict[str, bytes]:
    """Every file of a run's folder but its top-level `_run.json` (wall times) and the writers' lock files."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".pqtradeoff.lock" and p.relative_to(folder) != Path("_run.json")}


def _shards(folder: Path) -> int:
    return len(list(folder.glob("*.parquet"))) if folder.is_dir() else 0


def _wait(proc: subprocess.Popen, ready) -> None:
    """Poll until `ready()` holds or the process ends (at most 5 minutes)."""
    deadline = time.monotonic() + 300
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


def _kill_when(config: Path, out: Path, env: dict[str, str], ready, delay: float = 0.0) -> None:
    """Start the run, SIGKILL it once `ready()` holds (after `delay` s); fail if it ended first."""
    proc = _start(config, out, env)
    _wait(proc, ready)
    time.sleep(delay)
    assert proc.poll() is None, f"the run ended before the kill point: {proc.communicate()[1][-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_at_three_points_of_every_stage_then_rerun_is_byte_identical(experiment):
    tmp, config, env = experiment
    out = tmp / "run"
    whole = _run(config, out, env)
    assert whole.returncode == 0, whole.stderr
    reference = _files(out)
    assert any(name.startswith("analysis/") and name.endswith(".png") for name in reference)
    shutil.rmtree(out)  # the interrupted runs use the same --out, so every recorded command line is the same

    corpus, scored, analysis = out / "corpus", out / "scored", out / "analysis"
    for k in (1, 3, 5):  # generate: after k of 8 shards
        _kill_when(config, out, env, lambda k=k: _shards(corpus) >= k)
        assert k <= _shards(corpus) < SHARDS
    for k in (1, 3, 5):  # score: after k of 8 shards
        _kill_when(config, out, env, lambda k=k: _shards(scored) >= k)
        assert _shards(corpus) == SHARDS and k <= _shards(scored) < SHARDS
    for delay in (0.0, 0.5, 1.5):  # analyze: its IMH chains under way (400,000 steps x 2 configurations)
        _kill_when(config, out, env, lambda: _shards(scored) == SHARDS and analysis.exists(), delay)
        assert not (analysis / "summary.json").exists()
    rerun = _run(config, out, env)
    assert rerun.returncode == 0, rerun.stderr
    assert _files(out) == reference
    assert not [p for p in out.rglob(".*.tmp")]


def test_sigint_says_what_is_kept_exits_130_and_leaves_nothing_half_written(experiment):
    tmp, config, env = experiment
    out = tmp / "interrupted"
    proc = _start(config, out, env)
    _wait(proc, lambda: _shards(out / "scored") >= 2)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = proc.communicate(timeout=120)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert proc.returncode == 130, err
    assert lines[-1].startswith("interrupted: "), err[-3000:]
    assert "run the same command again to resume" in lines[-1]
    assert "Traceback" not in err
    assert not [p for p in out.rglob(".*.tmp")]  # what was being written is gone
    assert 2 <= _shards(out / "scored") < SHARDS and _shards(out / "corpus") == SHARDS
    finished = _run(config, out, env)
    assert finished.returncode == 0 and "score: partly reused" in finished.stderr, finished.stderr


def test_a_second_run_on_the_same_folder_is_refused_in_one_line(experiment):
    tmp, config, env = experiment
    out = tmp / "shared"
    first = _start(config, out, env)
    _wait(first, lambda: _shards(out / "corpus") >= 1)
    second = _run(config, out, env)
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 2 and len(lines) == 1, second.stderr
    assert lines[0].startswith("error: ") and "is being written by another process" in lines[0]
    assert f"pid {first.pid}" in lines[0] and "run" in lines[0]
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
