"""Benchmark the adaptors on a scoring-sized batch: all positions at once versus position by position.

A scorer holds logits [B, T, V] for a batch of continuations. The naive scorer loops in Python over the
B*T positions and calls the same function on each [1, V] row; the batched scorer calls it once on [B, T, V].
Both use `Adaptor.log_probs` (transformers' own warpers, in row chunks of `CHUNK_ELEMENTS`).

Logits are LM-like, not iid normal (which is unrealistically flat): for each position a Zipf law
p(rank) ~ rank^-s with its own exponent s ~ Uniform(1.0, 2.2), realised as logit = -s * log(1 + u * V) with
u ~ Uniform(0, 1) iid per token (u * V is approximately the token's rank), plus N(0, 0.3^2) noise. The
entropies this gives are printed (real LM next-token entropies range from ~0 to ~8 nats).

    .venv/bin/python benchmarks/adaptors.py            # [8, 256, 50000], 2,048 positions
    .venv/bin/python benchmarks/adaptors.py --quick    # [8, 32, 50000], 256 positions
    python benchmarks/adaptors.py --device cuda         # on a GPU machine: per-position calls pay launch
    latency

On a 2-core CPU the ratio is about 1x: each 50k-wide row already fills the vector units, so batching only
saves Python dispatch (measured: geometric mean 1.1x). On a GPU, where a per-position call pays kernel-launch
latency, batching should win by far more; that has not been measured yet (no GPU was lent).
"""

from __future__ import annotations

import argparse
import gc
import time

import torch

from pqtradeoff.sampling.adaptors import CHUNK_ELEMENTS, parse

#: The paper's grid families (one per family; temperatures cost the same as ancestral).
SPECS = ("ancestral", "temperature=0.5", "top_k=30", "top_p=0.9", "typical_p=0.9", "eta_cutoff=0.0009",
         "epsilon_cutoff=0.0003", "min_p=0.05")


def zipf_logits(batch: int, steps: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """LM-like logits [batch, steps, vocab]: a Zipf law per position with exponent ~ U(1.0, 2.2), plus
    noise."""
    g = torch.Generator().manual_seed(seed)
    s = torch.empty(batch, steps, 1).uniform_(1.0, 2.2, generator=g)
    logits = torch.rand(batch, steps, vocab, generator=g).mul_(vocab).log1p_().mul_(-s)
    return logits.add_(0.3 * torch.randn(batch, steps, vocab, generator=g))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_batched(spec: str, logits: torch.Tensor) -> float:
    adaptor = parse(spec)
    _sync(logits.device)
    t = time.perf_counter()
    out = adaptor.log_probs(logits)
    _sync(logits.device)
    elapsed = time.perf_counter() - t
    del out
    gc.collect()
    return elapsed


def time_positions(spec: str, logits: torch.Tensor) -> float:
    adaptor = parse(spec)
    rows = logits.reshape(-1, logits.shape[-1])
    _sync(logits.device)
    t = time.perf_counter()
    for i in range(rows.shape[0]):
        adaptor.log_probs(rows[i : i + 1])
    _sync(logits.device)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="[8, 32, 50000] instead of [8, 256, 50000]")
    parser.add_argument("--vocab", type=int, default=50_000)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the GPU check, run where one is lent)")
    args = parser.parse_args()
    batch, steps = (8, 32) if args.quick else (8, 256)
    logits = zipf_logits(batch, steps, args.vocab).to(args.device)
    entropy = -(torch.log_softmax(logits, -1).exp() * torch.log_softmax(logits, -1)).sum(-1)
    q = torch.quantile(entropy.flatten(), torch.tensor([0.05, 0.5, 0.95]))
    print(f"logits [{batch}, {steps}, {args.vocab}] float32, Zipf-shaped; next-token entropy (nats) "
          f"5%/50%/95%: {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f}; torch {torch.__version__}, "
          f"device {logits.device}, {torch.get_num_threads()} CPU threads, CHUNK_ELEMENTS={CHUNK_ELEMENTS}")
    del entropy
    positions = batch * steps
    print(f"{'adaptor':24s} {'batched s':>10s} {'by position s':>14s} {'ratio':>7s}   (goal >= 10x)")
    ratios = []
    for spec in SPECS:
        parse(spec).log_probs(logits[0, :2])  # warm-up: imports and first-call costs
        batched = time_batched(spec, logits)
        by_position = time_positions(spec, logits)
        ratios.append(by_position / batched)
        print(f"{spec:24s} {batched:10.2f} {by_position:14.2f} {ratios[-1]:6.1f}x   "
              f"({1e3 * batched / positions:.3f} vs {1e3 * by_position / positions:.3f} ms/position)")
    geo = torch.tensor(ratios).log().mean().exp().item()
    print(f"geometric mean ratio {geo:.1f}x over {len(SPECS)} adaptors")


if __name__ == "__main__":
    main()
