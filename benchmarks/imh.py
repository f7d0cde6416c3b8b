"""Benchmark the IMH chain: the plain loop the package uses (`imh.imh_chain`) against a vectorized search.

The vectorized chain lived in `pqtradeoff.analysis.imh` until this benchmark showed it no faster than the loop
(about 0.34-1.24x of the loop's speed at 200,000 steps on a 2-core CPU); it is kept here as the measured
alternative. For every step a it finds, vectorized over all steps, the first later step whose s_t = log
w(y'_t) + E_t reaches the level log w(y'_a) (a galloping search on a sparse table of range maxima); those
"next acceptance" pointers form a forest, and the chain's acceptance times are the path from the first state,
listed by binary lifting. Cost O(L log L) numpy work against the loop's L Python steps.

Both run the same chain on the same random draws (`draw_proposals`) and must return the same states (checked
here). Pools of several sizes and weight spreads: log w ~ N(0, sigma^2), so sigma = 0 accepts every step
and a large sigma rejects almost every step (long runs on the heaviest strings). Each timing is the best of
`--repeats` runs; the ratio is loop time / vectorized time (above 1: the vectorized chain is faster; the
vectorized chain would be worth its ~120 lines at >= 2x).

    .venv/bin/python benchmarks/imh.py                 # 200,000 steps, the analysis default
    .venv/bin/python benchmarks/imh.py --steps 50000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pqtradeoff.analysis import imh

POOLS = (100, 2_000, 50_000)
SPREADS = (0.0, 1.0, 3.0, 10.0)


def _first_reaching(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each position a, the first index t > a with values[t] >= thresholds[a] (len(values) if none).

    Galloping search on a sparse table of range maxima (table[k][i] = max(values[i : i + 2^k]), +inf past the
    end so every search stops): each search first doubles its block until the block reaches the threshold,
    then descends inside the last doubling. Most searches end within a few steps (the next acceptance is
    near), so the table is built only as deep as the slowest search needs.
    """
    n = len(values)
    levels = max(1, int(np.ceil(np.log2(n + 2))))
    size = n + 1 + (1 << levels)
    table = [np.full(size, np.inf)]
    table[0][:n] = values
    start = np.arange(1, n + 1, dtype=np.int64)
    active = np.arange(n, dtype=np.int64)
    found_at: list[np.ndarray] = []  # per k: searches whose answer lies in [start + 2^(k-1), start + 2^k)
    for k in range(levels + 1):
        if k > 0:
            prev, half = table[-1], 1 << (k - 1)
            grown = np.full(size, np.inf)
            np.maximum(prev[: size - half], prev[half:], out=grown[: size - half])
            table.append(grown)
        hit = table[k][start[active]] >= thresholds[active]
        found_at.append(active[hit])
        active = active[~hit]
        if active.size == 0:
            break
    answer = np.full(n, n, dtype=np.int64)
    for k, nodes in enumerate(found_at):
        if nodes.size == 0:
            continue
        pos = start[nodes] + ((1 << (k - 1)) if k > 0 else 0)
        thr = thresholds[nodes]
        for j in range(k - 2, -1, -1):
            pos = np.where(table[j][pos] < thr, pos + (1 << j), pos)
        answer[nodes] = pos
    return np.minimum(answer, n)


def _path_from(pointer: np.ndarray, start: int, end: int) -> np.ndarray:
    """The nodes start, pointer[start], pointer[pointer[start]], ... before reaching `end` (binary lifting).

    `pointer` is strictly increasing along every path and `end` (= len(pointer) - 1) points to itself.
    """
    jumps = [pointer]
    depth_bits = max(1, int(np.ceil(np.log2(len(pointer) + 1))))
    for _ in range(depth_bits):
        jumps.append(jumps[-1][jumps[-1]])
    # Length of the path: descend the lifting table greedily from the start.
    node, length = start, 0
    for k in range(depth_bits, -1, -1):
        ahead = jumps[k][node]
        if ahead != end:
            node, length = ahead, length + (1 << k)
    hops = np.arange(length + 1, dtype=np.int64)
    nodes = np.full(length + 1, start, dtype=np.int64)
    for k in range(depth_bits + 1):
        move = (hops >> k) & 1 == 1
        nodes[move] = jumps[k][nodes[move]]
    return nodes


def vectorized_chain(log_w: np.ndarray, proposals: imh.Proposals) -> np.ndarray:
    """The IMH chain's states (pool indices), L = len(proposals.index) + 1 of them, vectorized (the
    alternative).

    Step t (1-based over the proposals) proposes j_t and accepts iff s_t = log w(j_t) + E_t >= log w(current).
    The state entered at step a (the start is step 0) is left at the first later step whose s reaches
    log w(state); these pointers are followed from step 0 to list the acceptance times, and the states are the
    accepted proposals carried forward. Equals `imh.imh_chain` for the same draws (checked below).
    """
    lw = np.asarray(log_w, dtype=np.float64)
    steps = len(proposals.index) + 1
    entered = np.empty(steps, dtype=np.int64)  # the state a chain would enter at each step if it accepted
    entered[0] = proposals.start
    entered[1:] = proposals.index
    s = np.empty(steps)
    s[0] = -np.inf  # step 0 is the start, never "reached" by a later search
    s[1:] = lw[proposals.index] + proposals.exp
    nxt = _first_reaching(s, lw[entered])
    pointer = np.append(nxt, steps)  # node `steps` is the end and points to itself
    accepted_at = _path_from(pointer, 0, steps)
    marks = np.zeros(steps, dtype=np.int64)
    marks[accepted_at] = accepted_at
    last_accept = np.maximum.accumulate(marks)
    return entered[last_accept]


def best_time(fn, repeats: int) -> float:
    """The fastest of `repeats` calls, in seconds."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
            proposals = imh.draw_proposals(log_w, args.steps, rng)
            loop_states = imh.imh_chain(log_w, proposals)
            if not np.array_equal(loop_states, vectorized_chain(log_w, proposals)):
                raise SystemExit(f"pool {n}, sigma {sigma}: the two chains differ")
            accept = float(np.mean(loop_states[1:] == proposals.index))
            loop = best_time(lambda: imh.imh_chain(log_w, proposals), args.repeats)  # noqa: B023
            vector = best_time(lambda: vectorized_chain(log_w, proposals), args.repeats)  # noqa: B023
            ratios.append(loop / vector)
            print(f"{n:>7} {sigma:>6g} {accept:>7.3f} {1e3 * loop:>9.1f} {1e3 * vector:>10.1f} "
                  f"{loop / vector:>11.2f}x")
    print(f"geometric mean loop/vector: {float(np.exp(np.mean(np.log(ratios)))):.2f}x "
          f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x)")


if __name__ == "__main__":
    main()
