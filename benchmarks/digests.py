"""Benchmark what a cached `run` pays to key its stages on content: hashing a paper-scale scored corpus.

`run` reuses a stage only when its inputs are byte-identical (`pipeline.digests`), so every rerun reads and
hashes the scored shards. This writes a synthetic scored corpus of the paper's scale (default 62,000 rows in
35 shards, one per adaptor configuration: token ids of up to 256 tokens, prompts, texts, the float columns),
then times `digests.shard_digests` on it against two limits measured in the same run: SHA-256 of the same
bytes already in memory (the hash's own rate), and reading the files without hashing (the disk/page cache).
Each timing is the best of `--repeats`.

    .venv/bin/python benchmarks/digests.py
    .venv/bin/python benchmarks/digests.py --rows 200000
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pqtradeoff.pipeline.digests import shard_digests


def write_corpus(folder: Path, rows: int, shards: int, seed: int = 0) -> int:
    """A scored corpus with the contract's columns and realistic widths; returns its size in bytes."""
    rng = np.random.default_rng(seed)
    words = np.array(["the", "cat", "sat", "on", "a", "mat", "and", "then", "slept", "well", "today"])
    for s, block in enumerate(np.array_split(np.arange(rows), shards)):
        n = len(block)
        lengths = rng.integers(1, 257, n)
        frame = pd.DataFrame({
            "prompt_id": block // 2, "prompt": [f"prompt number {i}" for i in block // 2],
            "sample_id": block % 2,
            "adaptor": f"temperature={0.5 + 0.25 * (s % 5)},config={s}",
            "text": [" ".join(rng.choice(words, k)) for k in lengths],
            "prompt_token_ids": [rng.integers(0, 32_000, 40) for _ in range(n)],
            "token_ids": [rng.integers(0, 32_000, k) for k in lengths],
            "finished": rng.random(n) < 0.9,
            **{c: rng.normal(-100, 30, n) for c in ("logq", "logp_aligned", "log_weight", "logp_prior")},
            "reward": rng.normal(0, 1, n),
        })
        frame.to_parquet(folder / f"shard-{s:03d}.parquet", index=False)
    return sum(p.stat().st_size for p in folder.glob("*.parquet"))


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=62_000, help="strings (paper scale: ~62,000)")
    parser.add_argument("--shards", type=int, default=35, help="shards (the paper's grid: 35 configurations)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        size = write_corpus(folder, args.rows, args.shards)
        files = sorted(folder.glob("*.parquet"))
        data = [f.read_bytes() for f in files]
        ours = best(lambda: shard_digests(folder), args.repeats)
        in_memory = best(lambda: [hashlib.sha256(d).hexdigest() for d in data], args.repeats)
        reading = best(lambda: [f.read_bytes() for f in files], args.repeats)
    mib = size / 2**20
    print(f"scored corpus: {args.rows:,} rows in {args.shards} shards, {mib:.1f} MiB")
    print(f"shard_digests: {ours * 1000:.1f} ms ({mib / ours:.0f} MiB/s)")
    print(f"limit, SHA-256 of the bytes in memory: {in_memory * 1000:.1f} ms ({mib / in_memory:.0f} MiB/s); "
          f"ratio to it {in_memory / ours:.2f}")
    print(f"reading the files alone: {reading * 1000:.1f} ms; hashing + reading vs the sum of both: "
          f"{(in_memory + reading) / ours:.2f}")


if __name__ == "__main__":
    main()
