"""`pqtradeoff generate`: sample a corpus from a Hugging Face model under a grid of adaptors.

Thin: parses and validates (adaptors and prompts before the model is loaded, so bad input fails fast),
builds `HFModel`, encodes the prompts and calls `pqtradeoff.generate.generate_corpus`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import typer

from pqtradeoff.cli import app


@app.command()
def generate(
    model: str = typer.Option(..., "--model", help="Aligned model: hub id or local folder (AutoModelForCausalLM)."),
    prompts: Path = typer.Option(..., "--prompts", help="JSONL, CSV, Parquet file/folder or datasets folder."),
    adaptor: list[str] = typer.Option(..., "--adaptor", help="Adaptor spec, e.g. ancestral, top_k=50, "
                                      "temperature=0.75,top_p=0.95; repeat for a grid."),
    num_generations: int = typer.Option(..., "--num-generations", help="Samples per prompt and adaptor."),
    max_new_tokens: int = typer.Option(..., "--max-new-tokens", help="Longest continuation, in tokens."),
    seed: int = typer.Option(..., "--seed", help="Sampling seed; rows are keyed by (seed, prompt, sample, adaptor)."),
    out: Path = typer.Option(..., "--out", help="Output folder (rerun the same command to resume)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Rows sampled together (default: as many as "
                                          "a 4 GiB budget holds, at most 128)."),
    template: str | None = typer.Option(None, "--template", help="Prompt format, e.g. 'Human: {prompt} Assistant:'."),
    chat_template: bool = typer.Option(False, "--chat-template", help="Format prompts with the tokenizer's chat "
                                       "template (one user turn, generation prompt added)."),
    prompt_field: str = typer.Option("prompt", "--prompt-field", help="Column/field holding the prompt text."),
    num_prompts: int | None = typer.Option(None, "--num-prompts", help="Draw this many prompts (needs --prompt-seed)."),
    prompt_seed: int | None = typer.Option(None, "--prompt-seed", help="Seed of the prompt draw."),
    max_prompt_chars: int | None = typer.Option(None, "--max-prompt-chars",
                                                help="Keep prompts of at most this many characters (before drawing)."),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda"),
    dtype: str = typer.Option("float32", "--dtype", help="float32|bfloat16|float16"),
    save_token_logprobs: bool = typer.Option(False, "--save-token-logprobs", help="Also store per-token arrays."),
    max_batch_tokens: int | None = typer.Option(None, "--max-batch-tokens", help="Cap batch rows x (longest "
                                                "prompt + max new tokens): the batch size shrinks to fit."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Sample continuations from an aligned model, recording logq, logp_aligned and log_weight per string."""
    from pqtradeoff.adaptors import parse_grid
    from pqtradeoff.errors import PQError
    from pqtradeoff.prompts import load_prompts

    adaptors = parse_grid(adaptor)
    for name, value in (("batch_size", batch_size), ("max_batch_tokens", max_batch_tokens)):
        if value is not None and value < 1:
            raise PQError(f"{name}={value!r} is out of range: need an integer >= 1")
    rows = load_prompts(prompts, field=prompt_field, num_prompts=num_prompts, prompt_seed=prompt_seed,
                        max_chars=max_prompt_chars)

    if not progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    from pqtradeoff.generate import PromptRecord, choose_batch_size, generate_corpus
    from pqtradeoff.io import check_resumable
    from pqtradeoff.models.hf import HFModel

    digest = hashlib.sha256("\n".join(f"{i}\t{t}" for i, t in rows).encode()).hexdigest()
    settings = {
        "model": model, "prompts_file": str(Path(prompts).resolve()), "prompt_field": prompt_field,
        "prompt_sample_size": num_prompts, "prompt_seed": prompt_seed, "max_prompt_chars": max_prompt_chars,
        "prompts_sha256": digest, "template": template, "chat_template": chat_template,
        "device": device, "dtype": dtype, "requested_batch_size": batch_size, "max_batch_tokens": max_batch_tokens,
    }
    # Refuse a resume with other settings before spending minutes loading a large model.
    check_resumable(out, {"settings": settings | {
        "adaptors": [str(a) for a in adaptors], "num_generations": num_generations,
        "max_new_tokens": max_new_tokens, "seed": seed, "save_token_logprobs": save_token_logprobs}})
    lm = HFModel(model, device=device, dtype=dtype, template=template, chat_template=chat_template)
    records = [PromptRecord(i, text, lm.encode_prompt(text)) for i, text in rows]
    longest = max(len(r.token_ids) for r in records) + max_new_tokens
    effective = batch_size if batch_size is not None else choose_batch_size(lm, longest)
    if max_batch_tokens is not None:
        effective = max(1, min(effective, max_batch_tokens // longest))
    path = generate_corpus(lm, records, adaptors, num_generations=num_generations, max_new_tokens=max_new_tokens,
                           seed=seed, batch_size=effective, out_dir=out, settings=settings,
                           save_token_logprobs=save_token_logprobs, progress=progress)
    typer.echo(f"corpus: {path} ({len(records)} prompts x {num_generations} x {len(adaptors)} adaptors)")
