"""Benchmark `analyze` at the paper's scale against a row-by-row pandas implementation of the same algorithm.

Paper scale: 31 configurations x 2000 strings, 200,000 IMH steps per configuration, 2000 corpora of 200,000
strings each. The fast path is `pqtradeoff.analyze.run_analysis` end to end (chains, corpora, statistics,
figures, report). The baseline walks the chain and builds every corpus one pandas row at a time; it is timed
at a small scale and extrapolated linearly in the number of chain steps and of corpus rows.

    .venv/bin/python benchmarks/analysis.py            # paper scale
    .venv/bin/python benchmarks/analysis.py --quick    # 10x fewer steps and corpora
"""

from __future__ import annotations

import argparse
import math
import resource
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from pqtradeoff.analyze import make_settings, run_analysis

FAMILIES = ("", ",top_k=30", ",top_k=50", ",top_p=0.9", ",top_p=0.95", ",typical_p=0.9", ",eta_cutoff=0.0009")
TEMPERATURES = (0.5, 0.75, 1.0, 1.25, 1.5)


def synthetic(configs: int, strings: int, seed: int = 0) -> pd.DataFrame:
    """A scored corpus with the paper's shape: per-config trade-off, positive string-level correlation."""
    rng = np.random.default_rng(seed)
    specs = [f"temperature={t}{f}" for f in FAMILIES for t in TEMPERATURES][:configs]
    frames = []
    for k, spec in enumerate(specs):
        t = TEMPERATURES[k % len(TEMPERATURES)]
        base = rng.normal(size=strings)
        logq = -60.0 + 10.0 * rng.normal(size=strings)
        frames.append(pd.DataFrame({
            "prompt_id": np.arange(strings) // 2,  # 2 generations per prompt, as in the paper
            "adaptor": spec, "finished": rng.random(strings) > 0.02, "logq": logq,
            "logp_aligned": logq + rng.normal(scale=2.0, size=strings),
            "log_weight": 1.5 * base + rng.normal(scale=1.0, size=strings),
            "logp_prior": -80.0 - 40.0 * t + 15.0 * base,
            "reward": 1.5 * t + 0.5 * base + rng.normal(size=strings),
        }))
    return pd.concat(frames, ignore_index=True)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10x fewer chain steps and corpora")
    args = parser.parse_args()
    configs, strings = 31, 2000
    steps, corpora, corpus_size = (20_000, 200, 200_000) if args.quick else (200_000, 2000, 200_000)
    frame = synthetic(configs, strings)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    settings = make_settings(corpora=corpora, corpus_size=corpus_size, imh_steps=steps, seed=0)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start, cpu_start = time.perf_counter(), time.process_time()
        summary = run_analysis(frame, Path(tmp), settings)
        fast, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"scale: {configs} configs x {strings} strings, {steps:,} IMH steps/config, "
          f"{corpora:,} corpora x {corpus_size:,} strings/config")
    print(f"fast (run_analysis end to end, figures and report included): {fast:.2f} s wall, {cpu:.2f} s CPU "
          f"(wall > CPU means other processes shared the cores); "
          f"peak RSS {peak_rss:.0f} MiB (before the run {base_rss:.0f} MiB); "
          f"trade-off slope {summary.tradeoff.slope:+.4f}")

    small_steps, small_corpora, small_size = 2000, 2, 2000
    per_step, per_row = time_naive(frame, small_steps, small_size, small_corpora)
    naive = per_step * steps * configs + per_row * corpus_size * corpora * configs
    print(f"naive row-by-row pandas, measured on {small_steps} steps and {small_corpora} x {small_size} "
          f"corpus rows: {per_step * 1e6:.1f} us/step, {per_row * 1e6:.1f} us/corpus row")
    print(f"naive extrapolated linearly to the same scale: {naive:,.0f} s "
          f"(chains {per_step * steps * configs:,.0f} s + corpora "
          f"{per_row * corpus_size * corpora * configs:,.0f} s)")
    print(f"ratio naive / fast: {naive / fast:,.0f}x (wall), {naive / cpu:,.0f}x (CPU)")


if __name__ == "__main__":
    main()
