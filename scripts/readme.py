"""The README's transcripts and figures, from real runs.

    python scripts/readme.py                  # run every transcript's command, rewrite README.md and docs/img
    python scripts/readme.py demo advise      # only these
    python scripts/readme.py --check demo     # run, and say whether README.md still shows what it prints
    python scripts/readme.py --keep runs-readme dpo   # run in runs-readme/ and keep what it wrote

Each transcript sits in README.md between `<!-- transcript NAME -->` and `<!-- /transcript -->`
(invisible when rendered): a fenced block holding what `pqtradeoff ARGV` prints in a scratch folder (so
paths print as the README gives them, `runs/demo/...`), cut by the transcript's own rule (which rows of a
long table, which lines of a long log; said in the README beside it), and the figures it names are copied
to docs/img. Wall times, rates and memory (`volatile`) change from run to run: `--check` and
tests/test_readme.py compare everything
else, character for character.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
IMAGES = ROOT / "docs" / "img"


@dataclass
class Transcript:
    """One command whose output the README shows."""

    name: str
    argv: list[str]  # after `pqtradeoff`, run in the scratch folder
    shown: Callable[[str, str], str | dict[str, str]]  # (stdout, stderr) -> the block's text, or blocks
    figures: dict[str, str] = field(default_factory=dict)  # file under the scratch folder -> docs/img name
    needs: str | None = None  # a transcript whose run this one reads (run first, same scratch folder)
    minutes: float = 0.5  # about how long it takes on a 2-core CPU


# ------------------------------------------------------------------------------------------------ the cuts
#: The demo table's rows the README shows (family, temperature as printed); the rest are counted.
DEMO_ROWS = [("ancestral", "0.5"), ("ancestral", "0.75"), ("ancestral", "1"), ("dera=0.5", "1"),
             ("top_k=3", "0.5"), ("top_k=3", "1.5"), ("top_n_sigma=1.0", "1")]
#: advise lines are cut at this width (" …" marks the cut).
ADVISE_WIDTH = 118
#: The stage lines a `run` logs on stderr (the rest of stderr - warnings, progress bars - is left out).
STAGE_LINE = re.compile(r"^(align|generate|score|analyze): ")


def _lines(text: str) -> list[str]:
    """Lines without the trailing blanks rich pads them with, progress bars left out."""
    return [line.rstrip() for line in text.rstrip("\n").splitlines() if "━━━" not in line]


def demo_shown(stdout: str, stderr: str) -> str:
    """The command, the table's title and header, the rows of DEMO_ROWS with a count of all rows, the rest."""
    lines = _lines(stdout)
    top = next(i for i, line in enumerate(lines) if "IMH-corrected means" in line)
    end = next(i for i, line in enumerate(lines) if line.startswith("string level"))
    rule = next(i for i in range(top, end) if lines[i].strip() and set(lines[i].strip()) == {"─"})
    header = [line for line in lines[top:rule + 1] if line.strip()]
    rows = [line for line in lines[rule + 1:end] if line.strip()]
    kept = [r for r in rows if tuple(r.split()[:2]) in DEMO_ROWS]
    return "\n".join(["$ pqtradeoff demo --out runs/demo", *header, *kept, f" …  ({len(rows)} rows)",
                      *lines[end:]])


def advise_shown(stdout: str, stderr: str) -> str:
    """Every line, those wider than ADVISE_WIDTH cut at a word and marked with " …"."""
    out = ["$ pqtradeoff advise runs/demo --min-reward 0.3"]
    for line in _lines(stdout):
        if len(line) > ADVISE_WIDTH:
            line = line[:line.rfind(" ", 0, ADVISE_WIDTH - 2)] + " …"
        out.append(line)
    return "\n".join(out)


def toy_shown(stdout: str, stderr: str) -> str:
    """The best-of-N lines of N = 4 and 16."""
    starts = ("best-of-4 ", "soft best-of-4 ", "best-of-16 ")
    keep = [line for line in _lines(stdout) if line.startswith(starts)]
    return "\n".join(["$ pqtradeoff toy --out runs/toy", "…", *keep])


def run_shown(stdout: str, stderr: str) -> str:
    """A `run`'s stage lines (stderr) and everything it prints on stdout."""
    stages = [line for line in _lines(stderr) if STAGE_LINE.match(line)]
    return "\n".join([*stages, *_lines(stdout)])


def dpo_shown(stdout: str, stderr: str) -> dict[str, str]:
    """Two blocks: what the run prints before its stage table, and the stage table with the time."""
    lines = _lines(stdout)
    table = next(i for i, line in enumerate(lines) if re.match(r"^  align\s", line))
    return {"dpo": "\n".join(lines[:table]), "dpo-stages": "\n".join(lines[table:])}


TRANSCRIPTS = {t.name: t for t in [
    Transcript("demo", ["demo", "--out", "runs/demo"], demo_shown,
               {f"runs/demo/{name}.png": f"demo_{name}.png" for name in
                ("corpus_level", "typical_corpora", "what_if", "reward_vs_kl")}),
    Transcript("advise", ["advise", "runs/demo", "--min-reward", "0.3"], advise_shown, needs="demo"),
    Transcript("toy", ["toy", "--out", "runs/toy"], toy_shown),
    Transcript("example", ["run", "examples/smollm2-gemma-vader.toml", "--out", "runs/example"], run_shown,
               {"runs/example/analysis/corpus_level.png": "example_corpus_level.png"}, minutes=3),
    Transcript("dpo", ["run", "examples/smollm2-dpo-vader.toml", "--out", "runs/dpo"], dpo_shown,
               {"runs/dpo/analysis/corpus_level.png": "dpo_corpus_level.png",
                "runs/dpo/analysis/rewards/vader/corpus_level.png": "dpo_vader_corpus_level.png",
                "runs/dpo/analysis/what_if.png": "dpo_what_if.png"}, minutes=20),
]}


# ------------------------------------------------------------------------------------------------ volatile
def volatile(text: str) -> str:
    """`text` with what changes from run to run masked: wall times, rates, memory, shares of the time."""
    text = re.sub(r"time: .*?(?=report:|\Z)", "time: <…> ", text, flags=re.S)
    text = re.sub(r"\d[\d,.]* tokens/s", "<…> tokens/s", text)
    return re.sub(r"(?m)^(  (?:align|generate|score|analyze)\s+(?:ran|reused|partly reused))\s+[\d.]+ s\s+"
                  r"[\d.]+ %", r"\1 <…>", text)  # the times' column width too


# ------------------------------------------------------------------------------------------------ running
def run(transcript: Transcript, scratch: Path, env: dict[str, str] | None = None) -> str | dict[str, str]:
    """Run the transcript's command in `scratch` and return the block's text (or several blocks' texts)."""
    if not (scratch / "examples").exists():
        (scratch / "examples").symlink_to(ROOT / "src" / "pqtradeoff" / "examples")
    env = (env or os.environ) | {"COLUMNS": "80", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-m", "pqtradeoff", *transcript.argv], cwd=scratch, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        command = " ".join(transcript.argv)
        raise SystemExit(f"{transcript.name}: `pqtradeoff {command}` failed:\n{done.stderr}")
    return transcript.shown(done.stdout, done.stderr)


def block(readme: str, name: str) -> tuple[int, int]:
    """Where transcript `name`'s fenced text starts and ends in the README."""
    pattern = rf"<!-- transcript {re.escape(name)} -->\n```\n(.*?)\n```\n<!-- /transcript -->"
    found = re.search(pattern, readme, re.S)
    if not found:
        raise SystemExit(f"README.md has no transcript {name!r} (<!-- transcript {name} --> ... )")
    return found.start(1), found.end(1)


def shown_in_readme(name: str, readme: str | None = None) -> str:
    readme = README.read_text(encoding="utf-8") if readme is None else readme
    start, end = block(readme, name)
    return readme[start:end]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"transcripts (default all: {', '.join(TRANSCRIPTS)})")
    parser.add_argument("--check", action="store_true", help="compare with README.md, change nothing")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="run in DIR (new or empty) and keep it: a run's summary.json")
    args = parser.parse_args()
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        raise SystemExit(f"--keep {args.keep}: the folder is not empty")
    names = args.names or list(TRANSCRIPTS)
    unknown = [n for n in names if n not in TRANSCRIPTS]
    if unknown:
        raise SystemExit(f"unknown transcript(s) {', '.join(unknown)}; known: {', '.join(TRANSCRIPTS)}")
    order = []
    for n in names:
        needs = TRANSCRIPTS[n].needs
        order += [m for m in (needs, n) if m and m not in order]
    stale = []
    with tempfile.TemporaryDirectory(prefix="pqtradeoff-readme-") as tmp:
        scratch = Path(tmp) if args.keep is None else args.keep.resolve()
        scratch.mkdir(parents=True, exist_ok=True)
        for n in order:
            t = TRANSCRIPTS[n]
            print(f"{n}: pqtradeoff {' '.join(t.argv)} (about {t.minutes:g} min)", flush=True)
            text = run(t, scratch)
            if n not in names:
                continue
            readme = README.read_text(encoding="utf-8")  # as it is now: a long run may outlast an edit
            for key, value in (text if isinstance(text, dict) else {n: text}).items():
                if volatile(value) != volatile(shown_in_readme(key, readme)):
                    stale.append(key)
                start, end = block(readme, key)
                readme = readme[:start] + value + readme[end:]
            if not args.check:
                README.write_text(readme, encoding="utf-8")
                for source, image in t.figures.items():
                    shutil.copyfile(scratch / source, IMAGES / image)
                print(f"rewrote {n} in README.md")
    if args.check:
        print("README.md shows what a fresh run prints" if not stale else f"stale: {', '.join(stale)}")
        raise SystemExit(1 if stale else 0)
    print("changed: " + (", ".join(stale) if stale else "nothing"))


if __name__ == "__main__":
    main()
