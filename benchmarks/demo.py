"""Wall time of `pqtradeoff demo` with its defaults, as a user runs it (a fresh process), against the 20 s
goal.

    .venv/bin/python benchmarks/demo.py            # default demo, fresh process, plus per-stage timings
    .venv/bin/python benchmarks/demo.py --repeat 3

The goal has no baseline to divide by: it is the figure the README quotes. Per-stage times come from an
in-process run of the same settings, so the fresh-process figure minus their sum is start-up (imports).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S = 20.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    walls = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "pqtradeoff", "demo", "--out", str(Path(tmp) / "demo"),
                            "--no-progress"], check=True, capture_output=True)
            walls.append(time.perf_counter() - t)
    from pqtradeoff.demo import make_settings, run_demo

    with tempfile.TemporaryDirectory() as tmp:
        _, timings = run_demo(Path(tmp) / "demo", make_settings(), progress=False)
    best = min(walls)
    print(f"pqtradeoff demo (fresh process): best of {len(walls)}: {best:.1f} s  (goal < {GOAL_S:.0f} s: "
          f"{'met' if best < GOAL_S else 'NOT met'})")
    print("in-process stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items())
          + f"; total {sum(timings.values()):.1f} s; start-up and printing "
            f"{best - sum(timings.values()):.1f} s")


if __name__ == "__main__":
    main()
