"""Benchmark the IMH chain: the vectorized search (`imh_chain`) against the plain loop (`imh_chain_naive`).

Both run the same chain on the same random draws (`draw_proposals`) and must return the same states (checked
here too). Pools of several sizes and weight spreads: log w ~ N(0, sigma^2), so sigma = 0 accepts every step
and a large sigma rejects almost every step (long runs on the heaviest strings). Each timing is the best of
`--repeats` runs; the ratio is loop time / vectorized time (above 1: the vectorized chain is faster).

    .venv/bin/python benchmarks/imh.py                 # 200,000 steps, the analysis default
    .venv/bin/python benchmarks/imh.py --steps 50000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pqtradeoff import correct

POOLS = (100, 2_000, 50_000)
SPREADS = (0.0, 1.0, 3.0, 10.0)


def best_time(fn, repeats: int) -> float:
    """The fastest of `repeats` calls, in seconds."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"IMH chain, {args.steps:,} steps, best of {args.repeats}")
    print(f"{'pool':>7} {'sigma':>6} {'accept':>7} {'loop ms':>9} {'vector ms':>10} {'loop/vector':>12}")
    ratios = []
    for n in POOLS:
        for sigma in SPREADS:
            rng = np.random.default_rng(n + int(10 * sigma))
            log_w = rng.normal(0.0, sigma, n) if sigma else np.zeros(n)
            proposals = correct.draw_proposals(log_w, args.steps, rng)
            loop_states = correct.imh_chain_naive(log_w, proposals)
            if not np.array_equal(loop_states, correct.imh_chain(log_w, proposals)):
                raise SystemExit(f"pool {n}, sigma {sigma}: the two chains differ")
            accept = float(np.mean(loop_states[1:] == proposals.index))
            loop = best_time(lambda: correct.imh_chain_naive(log_w, proposals), args.repeats)  # noqa: B023
            vector = best_time(lambda: correct.imh_chain(log_w, proposals), args.repeats)  # noqa: B023
            ratios.append(loop / vector)
            print(f"{n:>7} {sigma:>6g} {accept:>7.3f} {1e3 * loop:>9.1f} {1e3 * vector:>10.1f} {loop / vector:>11.2f}x")
    print(f"geometric mean loop/vector: {float(np.exp(np.mean(np.log(ratios)))):.2f}x "
          f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x)")


if __name__ == "__main__":
    main()
