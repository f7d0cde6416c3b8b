"""Wall time of `pqtradeoff demo` with its defaults, as a user runs it (a fresh process), against the 10 s
goal, with the start-up share: the imports, library by library (`python -X importtime`), and the stages.

    .venv/bin/python benchmarks/demo.py            # default demo, fresh process, stages, imports
    .venv/bin/python benchmarks/demo.py --repeat 3

The goal has no baseline to divide by: it is the figure the README quotes. Per-stage times come from an
in-process run of the same settings after the heavy libraries are imported, so the fresh-process figure minus
their sum is start-up (interpreter, imports) and printing. The import table comes from one more fresh run
under `-X importtime`: each library's own import time (cumulative, counted once where it is first imported).

No `--device`: the demo's automata are float64 tensors over a 12-word vocabulary, where a GPU would only add
kernel-launch latency, and its analysis is numpy; the GPU lines are in benchmarks/generation_roofline.py,
generate_score.py and adaptors.py (`--device cuda`).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S = 10.0
LIBRARIES = ("torch", "transformers", "scipy", "matplotlib", "pandas", "pyarrow", "pydantic", "jinja2",
             "numpy")


def demo_command(out: Path, importtime: bool = False) -> list[str]:
    return [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "pqtradeoff", "demo",
            "--out", str(out), "--no-progress"]


def import_seconds(stderr: str) -> tuple[dict[str, float], float]:
    """Per library, the cumulative import time of its root imports in a `-X importtime` log; and the time of
    the roots not nested in another listed library's import (the libraries' total, each second counted once).

    The log lists each import after the ones it triggered (children first), indented by depth; an import of
    library L is a root when the import that triggered it (the next line one level shallower) is not of L.
    """
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        depth = (len(name) - len(name.lstrip())) // 2
        rows.append((depth, name.strip().split(".")[0], int(cumulative) / 1e6))
    totals, together = dict.fromkeys(LIBRARIES, 0.0), 0.0
    for i, (depth, library, seconds) in enumerate(rows):
        if library not in totals:
            continue
        ancestors, level = [], depth
        for d, name, _ in rows[i + 1:]:
            if d < level:
                ancestors.append(name)
                level = d
        if not ancestors or ancestors[0] != library:
            totals[library] += seconds
            if not any(a in totals for a in ancestors):
                together += seconds
    return totals, together


def child_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children: on a shared machine, the work a fresh
    run did, which other processes' load does not stretch as it stretches the wall time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    walls, cpus = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            t, cpu = time.perf_counter(), child_cpu()
            subprocess.run(demo_command(Path(tmp) / "demo"), check=True, capture_output=True)
            walls.append(time.perf_counter() - t)
            cpus.append(child_cpu() - cpu)
    with tempfile.TemporaryDirectory() as tmp:
        run = subprocess.run(demo_command(Path(tmp) / "demo", importtime=True), check=True,
                             capture_output=True, text=True)
    imports, together = import_seconds(run.stderr)
    start = time.perf_counter()
    import matplotlib.pyplot  # noqa: F401  (imported before the in-process run: its stages exclude imports)
    import scipy.stats  # noqa: F401
    import transformers.generation  # noqa: F401

    import pqtradeoff.pipeline.generate  # noqa: F401
    import pqtradeoff.pipeline.score  # noqa: F401
    from pqtradeoff.demo import make_settings, run_demo

    imported = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        _, timings = run_demo(Path(tmp) / "demo", make_settings(), progress=False)
    best = min(walls)
    stages = sum(timings.values())
    print(f"machine: {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.2f}")
    print(f"pqtradeoff demo (fresh process): best of {len(walls)} "
          f"({', '.join(f'{w:.1f}' for w in walls)} s): {best:.1f} s  "
          f"(goal <= {GOAL_S:.0f} s: {'met' if best <= GOAL_S else 'NOT met'}); CPU of the fresh runs "
          f"{', '.join(f'{c:.1f}' for c in cpus)} s (the best {min(cpus):.1f} s)")
    print(f"in-process stages (libraries imported beforehand, in {imported:.1f} s): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items())
          + f"; total {stages:.1f} s; start-up and printing {best - stages:.1f} s "
            f"({(best - stages) / best:.0%} of the fresh run)")
    print("imports of a fresh run (-X importtime, each library's own cumulative time): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in imports.items() if v > 0)
          + f"; together (each second once) {together:.2f} s, {together / best:.0%} of the fresh run")


if __name__ == "__main__":
    main()
