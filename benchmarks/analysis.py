"""Benchmark `analyze` at the paper's scale against a row-by-row pandas implementation of the same algorithm.

Paper scale: 31 configurations x 2000 strings, 200,000 IMH steps per configuration, 2000 corpora of 200,000
strings each. The fast path is `analysis.analyze.run_analysis` end to end (chains, corpora, statistics,
figures, report). The baseline walks the chain and builds every corpus one pandas row at a time; it is timed
at a small scale and extrapolated linearly in the number of chain steps and of corpus rows.

    .venv/bin/python benchmarks/analysis.py            # paper scale
    .venv/bin/python benchmarks/analysis.py --quick    # 10x fewer steps and corpora
    .venv/bin/python benchmarks/analysis.py --repeat 3 # best of 3 (a shared machine varies from run to run)
    .venv/bin/python benchmarks/analysis.py --load     # load test: default settings, paper scale vs 50 x
    20,000

`--load` runs `run_analysis` with the default settings (200,000 IMH steps, 2,000 corpora of 2,000 strings per
configuration) at the paper's scale and at a large one, each in a fresh process (so each has its own peak
memory), and prints the time per string of each, their ratio, the peak RSS, where the time goes, and the
corpus
sampler against the count-vector (multinomial) sampler it replaced for pools larger than a corpus.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import resource
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from pqtradeoff.analysis import analyze
from pqtradeoff.analysis.analyze import make_settings, run_analysis

FAMILIES = (
    "",
    ",top_k=30",
    ",top_k=50",
    ",top_p=0.9",
    ",top_p=0.95",
    ",typical_p=0.9",
    ",eta_cutoff=0.0009",
    ",top_k=10",
    ",top_k=100",
    ",top_p=0.8",
)  # the first 7 x 5 temperatures: the paper-scale grid
TEMPERATURES = (0.5, 0.75, 1.0, 1.25, 1.5)
GOAL_S, GOAL_MIB = 10.0, 1024.0  # issue 14: paper scale within 10 s and 1 GB peak


def synthetic(configs: int, strings: int, seed: int = 0) -> pd.DataFrame:
    """A scored corpus with the paper's shape: per-config trade-off, positive string-level correlation."""
    rng = np.random.default_rng(seed)
    specs = [f"temperature={t}{f}" for f in FAMILIES for t in TEMPERATURES][:configs]
    frames = []
    for k, spec in enumerate(specs):
        t = TEMPERATURES[k % len(TEMPERATURES)]
        base = rng.normal(size=strings)
        logq = -60.0 + 10.0 * rng.normal(size=strings)
        frames.append(
            pd.DataFrame(
                {
                    "prompt_id": np.arange(strings) // 2,  # 2 generations per prompt, as in the paper
                    "adaptor": spec,
                    "finished": rng.random(strings) > 0.02,
                    "logq": logq,
                    "logp_aligned": logq + rng.normal(scale=2.0, size=strings),
                    "log_weight": 1.5 * base + rng.normal(scale=1.0, size=strings),
                    "logp_prior": -80.0 - 40.0 * t + 15.0 * base,
                    "reward": 1.5 * t + 0.5 * base + rng.normal(size=strings),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------------------- stage times
#: The stages of `run_analysis`, each (label, module, function): the function is wrapped by a timer.
STAGES = (
    ("IMH chains", "pqtradeoff.analysis.imh", "run_chain"),
    ("corpus bootstrap", "pqtradeoff.analysis.stats", "corpus_means"),
    ("correlations", "pqtradeoff.analysis.stats", "correlations"),
    ("alignment fit", "pqtradeoff.analysis.analyze", "fit_alignment"),
    ("cleaning", "pqtradeoff.analysis.analyze", "clean_table"),
    ("figures", "pqtradeoff.analysis.plots", "draw_all"),
    ("report", "pqtradeoff.analysis.report", "write_report"),
)


@contextlib.contextmanager
def stage_timer() -> Iterator[dict[str, float]]:
    """Seconds spent in each stage of `run_analysis`, summed over calls (wall clock, no profiler overhead).

    Each stage's function is replaced, for the duration, by a wrapper that adds its wall time to the dict; the
    stages never call one another, so the times do not overlap, except that configurations analysed on
    several threads (`analyze.MAX_WORKERS`) add their chain and corpus times side by side. 'correlations'
    includes scipy.special's first import where the run pays it.
    """
    import importlib

    times = {label: 0.0 for label, _, _ in STAGES}
    originals = []
    for label, module_name, name in STAGES:
        module = importlib.import_module(module_name)
        original = getattr(module, name)

        def timed(*args, _f=original, _label=label, **kwargs):
            start = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                times[_label] += time.perf_counter() - start

        originals.append((module, name, original))
        setattr(module, name, timed)
    try:
        yield times
    finally:
        for module, name, original in originals:
            setattr(module, name, original)


def stage_line(times: dict[str, float], wall: float, overlapping: bool = False) -> str:
    """The stages' times, the rest, and which stage dominates (with threads, the per-config stages' times are
    summed over threads and overlap: no rest is given)."""
    top = max(times, key=times.get)
    parts = "; ".join(f"{k} {v:.2f} s" for k, v in times.items())
    if overlapping:
        return f"{parts} (chains and corpora summed over threads: they overlap). Dominant: {top}"
    rest = wall - sum(times.values())
    return f"{parts}; other {rest:.2f} s. Dominant: {top} ({times[top] / wall:.0%} of the wall time)"


# ------------------------------------------------------------------------------------ row-by-row baseline
def naive_chain(pool: pd.DataFrame, steps: int, rng: np.random.Generator) -> pd.DataFrame:
    """IMH the textbook way: one pandas row per step, the chain kept as a list of rows."""
    current = pool.iloc[int(rng.integers(len(pool)))]
    rows = [current]
    for _ in range(steps - 1):
        proposal = pool.iloc[int(rng.integers(len(pool)))]
        if math.log(rng.random()) <= proposal["log_w"] - current["log_w"]:
            current = proposal
        rows.append(current)
    return pd.DataFrame(rows)


def naive_corpus(chain: pd.DataFrame, size: int, rng: np.random.Generator) -> tuple[float, float]:
    """One corpus: draw `size` chain rows one at a time and accumulate their reward and log prior."""
    reward = prior = 0.0
    for _ in range(size):
        row = chain.iloc[int(rng.integers(len(chain)))]
        reward += row["reward"]
        prior += row["logp_prior"]
    return reward / size, prior / size


def time_naive(frame: pd.DataFrame, steps: int, corpus_size: int, corpora: int) -> tuple[float, float]:
    """Seconds per chain step and per corpus row of the baseline, measured on one configuration."""
    pool = frame[frame["adaptor"] == frame["adaptor"].iloc[0]].assign(log_w=lambda d: d["log_weight"])
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    chain = naive_chain(pool, steps, rng)
    per_step = (time.perf_counter() - start) / steps
    start = time.perf_counter()
    for _ in range(corpora):
        naive_corpus(chain, corpus_size, rng)
    per_row = (time.perf_counter() - start) / (corpora * corpus_size)
    return per_step, per_row


# ------------------------------------------------------------------------------------------------ load test
def one_load_run(configs: int, strings: int) -> None:
    """Time `run_analysis` with default settings on configs x strings; print one JSON line (child process)."""
    import json

    frame = synthetic(configs, strings)
    settings = make_settings(seed=0)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), stage_timer() as parts:
        warnings.simplefilter("ignore")
        start, cpu_start = time.perf_counter(), time.process_time()
        run_analysis(frame, Path(tmp), settings)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    rows = int(len(frame))
    print(
        json.dumps(
            {
                "configs": configs,
                "strings": strings,
                "rows": rows,
                "wall_s": wall,
                "cpu_s": cpu,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "parts": dict(parts),
                "threads": min(analyze.MAX_WORKERS, len(os.sched_getaffinity(0)), configs),
            }
        )
    )


def sampler_ratio(pool: int = 20_000, corpora: int = 2000, size: int = 2000) -> tuple[float, float]:
    """Seconds of the count-vector (multinomial) sampler and of `stats.corpus_means` for one configuration."""
    from pqtradeoff.analysis import stats

    rng = np.random.default_rng(0)
    visits = rng.multinomial(200_000, np.full(pool, 1 / pool))
    values = {"r": rng.normal(size=pool), "p": rng.normal(size=pool)}
    start = time.perf_counter()
    visited = np.flatnonzero(visits)
    freq = visits[visited] / visits[visited].sum()
    table = np.stack([v[visited] for v in values.values()], axis=1)
    rows = max(1, 4_000_000 // visited.size)
    for lo in range(0, corpora, rows):
        stats.count_means(rng.multinomial(size, freq, size=min(corpora, lo + rows) - lo), table)
    counts = time.perf_counter() - start
    start = time.perf_counter()
    stats.corpus_means(visits, values, corpora, size, rng)
    return counts, time.perf_counter() - start


def load_test() -> None:
    import json
    import subprocess
    import sys

    results = []
    for configs, strings in ((31, 2000), (50, 20_000)):
        run = subprocess.run(
            [sys.executable, __file__, "--load-one", f"{configs}x{strings}"],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(run.stdout.strip().splitlines()[-1]))
    for r in results:
        print(
            f"{r['configs']} configs x {r['strings']:,} strings ({r['rows']:,} rows): {r['wall_s']:.1f} "
            f"s wall, "
            f"{r['cpu_s']:.1f} s CPU, {r['wall_s'] / r['rows'] * 1e6:.1f} us/string, "
            f"{r['wall_s'] / r['configs']:.2f} s/config, peak RSS {r['peak_rss_mib']:.0f} MiB"
        )
        print("   " + stage_line(r["parts"], r["wall_s"], overlapping=r["threads"] > 1))
    paper, large = results
    print(
        f"large / paper time per string: "
        f"{(large['wall_s'] / large['rows']) / (paper['wall_s'] / paper['rows']):.2f}"
        f"; per configuration: "
        f"{(large['wall_s'] / large['configs']) / (paper['wall_s'] / paper['configs']):.2f}"
    )
    counts, draws = sampler_ratio()
    print(
        f"corpus sampler, 20,000-string pool, 2,000 corpora x 2,000 strings: count vectors {counts:.2f} s, "
        f"draws {draws:.2f} s, ratio {counts / draws:.1f}x"
    )


def poisson_floor(frame: pd.DataFrame, settings, configs: int) -> tuple[float, int]:
    """numpy's Poisson sampler for one variate per (corpus, visited string) on one core (the floor of the
    bootstrap when it drew its counts with it), timed on the first configuration's chain (best of 3) and
    scaled to all configurations; and that configuration's visited strings."""
    from pqtradeoff.analysis import imh

    rows = frame[frame["adaptor"] == frame["adaptor"].iloc[0]]
    rng = np.random.default_rng(0)
    chain = imh.run_chain(rows["log_weight"].to_numpy(float), {}, settings.imh_steps, rng)
    visited = chain.visits[chain.visits > 0]
    lam = settings.corpus_size * visited / visited.sum()
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        rng.poisson(lam, size=(settings.corpora, lam.size))
        best = min(best, time.perf_counter() - start)
    return best * configs, int(lam.size)


def best_run(frame: pd.DataFrame, settings, repeat: int, workers: int):
    """The fastest of `repeat` runs of `run_analysis` with at most `workers` configurations at once:
    (wall, CPU, stage times, summary) of that run, and every run's wall time."""
    default, analyze.MAX_WORKERS = analyze.MAX_WORKERS, workers
    runs = []
    try:
        for _ in range(repeat):
            with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), stage_timer() as parts:
                warnings.simplefilter("ignore")
                start, cpu_start = time.perf_counter(), time.process_time()
                summary = run_analysis(frame, Path(tmp), settings)
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
                runs.append((wall, cpu, dict(parts), summary))
    finally:
        analyze.MAX_WORKERS = default
    return (*min(runs, key=lambda r: r[0]), [r[0] for r in runs])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10x fewer chain steps and corpora")
    parser.add_argument(
        "--load", action="store_true", help="load test: paper scale vs 50 configs x 20,000 strings"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of the fast path; the best is reported")
    parser.add_argument("--load-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_one:
        configs, strings = map(int, args.load_one.split("x"))
        return one_load_run(configs, strings)
    if args.load:
        return load_test()
    configs, strings = 31, 2000
    steps, corpora, corpus_size = (20_000, 200, 200_000) if args.quick else (200_000, 2000, 200_000)
    frame = synthetic(configs, strings)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    settings = make_settings(corpora=corpora, corpus_size=corpus_size, imh_steps=steps, seed=0)
    start = time.perf_counter()
    import matplotlib.pyplot  # noqa: F401  (paid once by a fresh process: timed here, not in the runs)
    import scipy.special  # noqa: F401  (the statistics' tests; scipy.stats is never imported)

    imports = time.perf_counter() - start
    print(
        f"scale: {configs} configs x {strings} strings, {steps:,} IMH steps/config, "
        f"{corpora:,} corpora x {corpus_size:,} strings/config; machine: {os.cpu_count()} CPU(s), "
        f"load average {os.getloadavg()[0]:.2f} before the runs (other processes may share the cores)"
    )
    results = {}
    for workers in (1, analyze.MAX_WORKERS):
        fast, cpu, parts, summary, walls = best_run(frame, settings, args.repeat, workers)
        results[workers] = fast
        if workers == 1:
            one_at_a_time_bootstrap = parts["corpus bootstrap"]
        threads = min(workers, len(os.sched_getaffinity(0)))
        print(
            f"fast (run_analysis end to end, figures and report included), {threads} config(s) at once, "
            f"best of {len(walls)} ({', '.join(f'{w:.2f}' for w in walls)} s): {fast:.2f} s wall, "
            f"{cpu:.2f} s CPU (all threads); trade-off slope {summary.tradeoff.slope:+.4f}"
        )
        print(f"   stages of the best run: {stage_line(parts, fast, overlapping=threads > 1)}")
    fast = results[analyze.MAX_WORKERS]
    floor, visited = poisson_floor(frame, settings, configs)
    print(f"numpy's Poisson sampler alone, one variate per corpus and visited string ({configs} x "
          f"{corpora:,} x ~{visited:,} cells; the floor of the sampler before, which the inverse-CDF "
          f"tables now beat): "
          f"{floor:.2f} s; the one-at-a-time run's whole bootstrap took {one_at_a_time_bootstrap:.2f} s "
          f"({floor / one_at_a_time_bootstrap:.2f}x numpy's sampler's speed)")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"threads / one at a time: {results[1] / fast:.2f}x; peak RSS {peak_rss:.0f} MiB "
          f"(before the runs {base_rss:.0f} MiB)")
    print(f"imports a fresh process pays once (scipy.special, matplotlib.pyplot), before the runs: "
          f"{imports:.2f} s; best run plus imports: {fast + imports:.2f} s")
    if not args.quick:
        met = fast + imports <= GOAL_S and peak_rss <= GOAL_MIB
        print(f"goal <= {GOAL_S:.0f} s (imports included) and <= {GOAL_MIB / 1024:.0f} GiB peak: "
              f"{'met' if met else 'NOT met'}")

    small_steps, small_corpora, small_size = 2000, 2, 2000
    per_step, per_row = time_naive(frame, small_steps, small_size, small_corpora)
    naive = per_step * steps * configs + per_row * corpus_size * corpora * configs
    print(
        f"naive row-by-row pandas, measured on {small_steps} steps and {small_corpora} x {small_size} "
        f"corpus rows: {per_step * 1e6:.1f} us/step, {per_row * 1e6:.1f} us/corpus row"
    )
    print(
        f"naive extrapolated linearly to the same scale: {naive:,.0f} s "
        f"(chains {per_step * steps * configs:,.0f} s + corpora "
        f"{per_row * corpus_size * corpora * configs:,.0f} s)"
    )
    print(f"ratio naive / fast: {naive / fast:,.0f}x (wall), {naive / cpu:,.0f}x (CPU)")


if __name__ == "__main__":
    main()
