"""Benchmark generate and score on a tiny-but-not-trivial Hugging Face model, against baselines in one run.

Model: a random Llama (6 layers, 256 dims, vocab 32,000) saved with a word-level tokenizer and loaded by path
through `HFModel`, as a hub checkpoint would be. Adaptor: the paper's `temperature=0.75,top_p=0.95`.

(a) generation: our `generate_corpus` (samples and records logq, logp_aligned and log_weight from the same
    logits, writes a Parquet shard) versus plain `model.generate` with the same processors and batch size,
    every sampling parameter stated. Goal: overhead <= 10%.
(b) prior scoring: `teacher_forcing.continuation_logprobs` (teacher-forced per-token log-probabilities) versus a bare
    forward pass over the same padded tokens (logits for the same T positions; the full-logits forward is
    printed too). Goal: <= 1.2x.
(c) scoring end to end: our `score_corpus` (prior in batched forward passes; logq/logp_aligned/log_weight
    already recorded while sampling) versus the naive way - re-run the aligned model on each string, apply
    transformers' processors position by position, then score the prior on each string. Goal: >= 3x.
The aligned model serves as the prior too (same cost as a second checkpoint of the same size).

    .venv/bin/python benchmarks/generate_score.py            # 16 strings x 64 new tokens, best of 3
    .venv/bin/python benchmarks/generate_score.py --quick    # 8 strings x 32 new tokens, best of 2
    python benchmarks/generate_score.py --device cuda --dtype bfloat16   # the GPU check, where one is lent
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers.generation.logits_process import LogitsProcessorList

from pqtradeoff.models.hf import HFModel
from pqtradeoff.models.hf_layout import left_pad, position_ids, right_pad
from pqtradeoff.models.teacher_forcing import continuation_logprobs
from pqtradeoff.pipeline.generate import PromptRecord, generate_corpus
from pqtradeoff.pipeline.rewards import DPOReward
from pqtradeoff.pipeline.score import score_corpus
from pqtradeoff.sampling.adaptors import parse
from pqtradeoff.testing import build_causal, generation_kwargs, word_tokenizer

SPEC = "temperature=0.75,top_p=0.95"
WORDS = "hello world tell me a story about the sun and the moon please how are you".split()


def best_of(repeats: int, fn) -> float:
    """Smallest wall time of `repeats` calls (the least disturbed by other processes)."""
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return min(times)


def _sync() -> None:
    """Wait for queued GPU work, so wall times cover it (no-op on the CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def make_prompts(lm: HFModel, n: int) -> list[PromptRecord]:
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 16)))) for _ in range(n)]
    return [PromptRecord(i, t, lm.encode_prompt(t)) for i, t in enumerate(texts)]


# ------------------------------------------------------------------------------------------- (a) generation
def plain_generate(lm: HFModel, prompts: list[PromptRecord], new_tokens: int, batch: int) -> int:
    """transformers' generate with every sampling parameter stated; returns the number of new tokens."""
    kwargs = generation_kwargs(parse(SPEC)) | {
        "num_beams": 1, "min_new_tokens": 0,
        "max_new_tokens": new_tokens, "pad_token_id": lm.pad_token_id, "eos_token_id": lm.eos_token_id,
        "use_cache": True,
    }
    produced = 0
    for start in range(0, len(prompts), batch):
        ids, mask = left_pad([p.token_ids for p in prompts[start:start + batch]], lm.pad_token_id, lm.device)
        with torch.inference_mode():
            out = lm.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        produced += int((out[:, ids.shape[1]:] != lm.pad_token_id).sum())
    return produced


def ours_generate(lm: HFModel, prompts: list[PromptRecord], new_tokens: int, batch: int, out: Path) -> Path:
    return generate_corpus(lm, prompts, [parse(SPEC)], num_generations=1, max_new_tokens=new_tokens, seed=0,
                           batch_size=batch, out_dir=out, settings={}, progress=False)


# ------------------------------------------------------------------------------------------ (b) prior
def bare_forward_inputs(lm: HFModel, prompts: list[list[int]], conts: list[list[int]], batch: int):
    """The padded tensors `continuation_logits` builds, made once ahead of time for the bare forward."""
    batches = []
    for start in range(0, len(prompts), batch):
        p, c = prompts[start:start + batch], conts[start:start + batch]
        width = max(len(x) for x in c)
        p_ids, p_mask = left_pad(p, lm.pad_token_id, lm.device)
        c_ids, c_mask = right_pad([x[: width - 1] for x in c], lm.pad_token_id, lm.device, width - 1)
        ids, mask = torch.cat([p_ids, c_ids], 1), torch.cat([p_mask, c_mask], 1)
        batches.append((ids, mask, position_ids(mask), width))
    return batches


def bare_forward(lm: HFModel, batches, keep_all: bool) -> None:
    with torch.inference_mode():
        for ids, mask, pos, width in batches:
            lm.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                     logits_to_keep=0 if keep_all else width)


# ------------------------------------------------------------------------------------------ (c) naive
def naive_rescore(lm: HFModel, prior: HFModel, df: pd.DataFrame) -> np.ndarray:
    """The authors' way: per string, re-run the aligned model and apply the processors position by position,
    then run the prior; returns [n, 4] = logq, logp_aligned, log_weight, logp_prior."""
    adaptor = parse(SPEC)
    procs = LogitsProcessorList(adaptor.processors())
    out = []
    with torch.inference_mode():
        for prompt, tokens in zip(df["prompt_token_ids"], df["token_ids"], strict=True):
            prompt, tokens = list(prompt), list(tokens)
            ids = torch.tensor([prompt + tokens], device=lm.device)
            logits = lm.model(ids).logits[0].float()
            logq = logp = logw = 0.0
            for t, token in enumerate(tokens):
                raw = logits[len(prompt) - 1 + t].unsqueeze(0)
                processed = procs(ids[:, : len(prompt) + t], raw.clone())
                lsm = torch.log_softmax(raw, -1)
                logq += torch.log_softmax(processed, -1)[0, token].item()
                logp += lsm[0, token].item()
                kept = (lsm / adaptor.temperature).masked_fill(~torch.isfinite(processed), -torch.inf)
                logw += torch.logsumexp(kept, -1).item()
            prior_logits = prior.model(ids).logits[0, len(prompt) - 1: -1].float()
            lp = torch.log_softmax(prior_logits, -1)[torch.arange(len(tokens)),
                                                     torch.tensor(tokens)].sum().item()
            out.append((logq, logp, logw, lp))
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 strings x 32 new tokens, best of 2")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (the GPU check, where a GPU is lent)")
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared machine, "
                        "spinning threads make every timing noisy)")
    args = parser.parse_args()
    rows, new_tokens, repeats, batch = (8, 32, 2, 8) if args.quick else (16, 64, 3, 8)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        path = build_causal(tmp / "model", "llama", tokenizer=word_tokenizer("llama", vocab_size=32000),
                            layers=6, hidden=256, heads=4, max_positions=512, init=0.1)
        lm = HFModel(str(path), device=args.device, dtype=args.dtype)
        print(f"model: Llama 6 layers, 256 dims, vocab {lm.vocab_size}, "
              f"{sum(p.numel() for p in lm.model.parameters()) / 1e6:.1f}M params, random weights; torch "
              f"threads {torch.get_num_threads()}; built in {time.perf_counter() - t0:.1f}s")
        print(f"work: {rows} strings, batch {batch}, {new_tokens} new tokens, adaptor {SPEC}, best of "
              f"{repeats}\n")
        prompts = make_prompts(lm, rows)

        # (a)
        plain_generate(lm, prompts[:batch], 4, batch)  # warm-up
        counter = iter(range(10**6))
        t_plain = best_of(repeats, lambda: plain_generate(lm, prompts, new_tokens, batch))
        t_ours = best_of(repeats,
                         lambda: ours_generate(lm, prompts, new_tokens, batch, tmp / f"gen{next(counter)}"))
        corpus = tmp / "gen0"
        df = pd.read_parquet(corpus)
        print("(a) generation (sampling + recording logq, logp_aligned, log_weight)")
        print(f"    plain model.generate          {t_plain:8.3f} s")
        tokens = df["token_ids"].map(len).sum()
        print(f"    ours generate_corpus          {t_ours:8.3f} s   ({tokens} tokens)")
        print(f"    overhead                      {100 * (t_ours / t_plain - 1):+7.1f} %   (goal <= +10%)\n")

        # (b)
        p_ids = [list(x) for x in df["prompt_token_ids"]]
        c_ids = [list(x) for x in df["token_ids"]]
        batches = bare_forward_inputs(lm, p_ids, c_ids, batch)
        bare_forward(lm, batches, keep_all=False)  # warm-up
        t_bare = best_of(repeats, lambda: bare_forward(lm, batches, keep_all=False))
        t_bare_all = best_of(repeats, lambda: bare_forward(lm, batches, keep_all=True))
        t_prior = best_of(repeats, lambda: continuation_logprobs(lm, p_ids, c_ids, batch_size=batch,
                                                                 max_batch_tokens=batch * new_tokens))
        print("(b) prior scoring (teacher-forced log-probabilities of the same tokens)")
        print(f"    bare forward, T positions     {t_bare:8.3f} s")
        print(f"    bare forward, all logits      {t_bare_all:8.3f} s")
        print(f"    ours continuation_logprobs    {t_prior:8.3f} s")
        print(f"    ratio to bare (T positions)   {t_prior / t_bare:8.2f} x   (goal <= 1.2x)\n")

        # (c)
        reward = DPOReward(0.1)
        t_score = best_of(repeats,
                          lambda: score_corpus(corpus, tmp / f"score{next(counter)}", prior=lm, reward=reward,
                                                        batch_size=batch, max_batch_tokens=batch * new_tokens,
                                                        settings={}, progress=False))
        t_naive = best_of(repeats, lambda: naive_rescore(lm, lm, df))
        naive = naive_rescore(lm, lm, df)
        scored = pd.read_parquet(next(tmp.glob("score*")))
        agree = np.abs(naive - scored[["logq", "logp_aligned", "log_weight", "logp_prior"]].to_numpy()).max()
        print("(c) scoring end to end (logq, logp_aligned, log_weight, logp_prior, reward)")
        print(f"    naive rescoring, per string   {t_naive:8.3f} s")
        print(f"    ours score_corpus             {t_score:8.3f} s")
        print(f"    speed-up                      {t_naive / t_score:8.2f} x   (goal >= 3x)")
        print(f"    max |naive - ours|            {agree:8.1e}   (same numbers)")
        print(f"    whole pipeline: plain generate + naive rescoring {t_plain + t_naive:.3f} s vs ours "
              f"{t_ours + t_score:.3f} s ({(t_plain + t_naive) / (t_ours + t_score):.2f} x)")


if __name__ == "__main__":
    main()
