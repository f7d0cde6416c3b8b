"""The front door: the README's commands are the ones CI runs, and the CLI answers without torch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README.md must open with a bash block holding the two set-up commands"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_readme_has_two_setup_commands_and_ci_runs_the_test_one():
    commands = _readme_commands()
    assert len(commands) == 2
    main_job, tests = commands
    assert "pqtradeoff demo" in main_job and "pytest" in tests
    assert "torch==2.13.0" in main_job and "torch==2.13.0" in tests  # never a bare CUDA-pulling `torch`
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert tests in ci.splitlines()


def test_cli_help_lists_every_command_and_bad_input_is_one_line():
    out = subprocess.run([sys.executable, "-m", "pqtradeoff", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("toy", "analyze", "generate", "score", "demo"):
        assert command in out.stdout
    bad = subprocess.run([sys.executable, "-m", "pqtradeoff", "demo", "--family", "top_k=0"],
                         capture_output=True,
                         text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "top_k=0" in bad.stderr, bad.stderr


def test_out_of_memory_is_a_one_line_error(monkeypatch, capsys):
    import pytest

    from pqtradeoff import cli

    class OutOfMemoryError(RuntimeError):  # the name torch.cuda uses
        pass

    def boom():
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(cli, "app", boom)
    with pytest.raises(SystemExit) as stop:
        cli.main()
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ran out of memory" in err[0]
