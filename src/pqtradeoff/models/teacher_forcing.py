"""Teacher forcing: per-token log-probabilities of given continuations, the batching that bounds their memory.

`continuation_logprobs` is what every step model's `logprobs` (and so `score`) runs: a model's own fast path
where it has one (`HFModel.fast_logprobs`, `models.hf_scoring`), else `plain_continuation_logprobs` through
its `continuation_logits`. Both batch rows with `length_batches`: at most `batch_size` rows and
`max_batch_tokens` padded tokens per forward pass.
"""

from __future__ import annotations

import numpy as np
import torch

from pqtradeoff.models.base import SCORE_BATCH, SCORE_BATCH_TOKENS, LanguageModel


def length_batches(rows: list[int], lengths: list[int], batch_size: int, max_batch_tokens: int
                   ) -> list[list[int]]:
    """`rows` in ascending `lengths`, cut into batches of at most `batch_size` rows and `max_batch_tokens`
    rows x longest length (a longer row alone), the batching of teacher-forced scoring (both
    of its paths)."""
    batches: list[list[int]] = []
    batch: list[int] = []
    for i in sorted(rows, key=lambda r: lengths[r]):  # ascending: the row added is the batch's longest
        if batch and (len(batch) + 1 > batch_size or (len(batch) + 1) * lengths[i] > max_batch_tokens):
            batches.append(batch)
            batch = []
        batch.append(i)
    if batch:
        batches.append(batch)
    return batches


def continuation_logprobs(
    model: LanguageModel, prompts: list[list[int]], continuations: list[list[int]], *,
    batch_size: int = SCORE_BATCH, max_batch_tokens: int = SCORE_BATCH_TOKENS,
) -> list[np.ndarray]:
    """Per-token log-probabilities (float64 arrays) of each continuation given its prompt, teacher-forced.

    A model with a `fast_logprobs` method (`HFModel`: each prompt computed once, the LM head fused with the
    log-softmax) computes them itself under the same batching limits; otherwise, or where it returns None,
    `plain_continuation_logprobs` does.
    """
    fast = getattr(model, "fast_logprobs", None)
    if fast is not None:
        result = fast(prompts, continuations, batch_size=batch_size, max_batch_tokens=max_batch_tokens)
        if result is not None:
            return result
    return plain_continuation_logprobs(model, prompts, continuations, batch_size=batch_size,
                                       max_batch_tokens=max_batch_tokens)


def plain_continuation_logprobs(
    model: LanguageModel, prompts: list[list[int]], continuations: list[list[int]], *,
    batch_size: int = SCORE_BATCH, max_batch_tokens: int = SCORE_BATCH_TOKENS,
) -> list[np.ndarray]:
    """Per-token log-probabilities (float64 arrays) of each continuation given its prompt, teacher-forced.

    Rows are grouped into batches of at most `batch_size` rows and `max_batch_tokens` padded continuation
    tokens, so the [B, T, V] logits held at once stay bounded. log p = logit[target] - logsumexp(logits):
    no second [B, T, V] tensor is made. -inf (a token outside the model's support) is kept, never clamped.
    """
    out = [np.zeros(0) for _ in continuations]
    lengths = [max(len(c), 1) for c in continuations]
    for batch in length_batches(list(range(len(continuations))), lengths, batch_size, max_batch_tokens):
        conts = [continuations[i] for i in batch]
        width = max(len(c) for c in conts)
        if width == 0:
            continue
        with torch.inference_mode():
            logits = model.continuation_logits([prompts[i] for i in batch], conts)
            padded = np.zeros((len(batch), width), dtype=np.int64)
            for r, c in enumerate(conts):
                padded[r, : len(c)] = c
            targets = torch.from_numpy(padded).to(logits.device)  # one host-to-device copy
            dtype = torch.promote_types(logits.dtype, torch.float32)  # half -> float32; float64 stays exact
            picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1).to(dtype)
            step = max(1, width // 8)  # logsumexp in slices of positions: its temporaries stay small
            lse = torch.cat([torch.logsumexp(logits[:, t:t + step].to(dtype), dim=-1)
                             for t in range(0, width, step)], 1)
            logp = (picked - lse).double().cpu().numpy()
        for r, i in enumerate(batch):
            out[i] = logp[r, : len(conts[r])].copy()
    return out


def adaptor_scores(
    model: LanguageModel, prompts: list[list[int]], continuations: list[list[int]], adaptors: list, *,
    batch_size: int = SCORE_BATCH, max_batch_tokens: int = SCORE_BATCH_TOKENS,
) -> tuple[np.ndarray, np.ndarray]:
    """Each continuation's log q_a(y) and log weight sum_t log Z_t under every adaptor `a`, teacher-forced:
    two float64 arrays [rows, adaptors].

    One forward pass of `model` per batch serves every adaptor (`sampling.adaptor_scores.AdaptorScorer` on
    its logits: each adaptor about one pass over the vocabulary, kept sets decided as transformers' warpers
    decide them). A model with `fast_head_scores` (`HFModel`: prompts run once, the LM head in blocks of
    positions) computes the logits its own way under the same batching limits. log q_a is -inf where a token
    lies outside a's support. For the configuration that sampled a string these equal its recorded `logq`
    and `log_weight` up to float rounding (a full forward pass against the incremental one).
    """
    from pqtradeoff.sampling.adaptor_scores import AdaptorScorer  # lazy: numpy kernels

    scorer = AdaptorScorer(adaptors)
    n, k = len(continuations), len(adaptors)
    logq, log_weight = np.zeros((n, k)), np.zeros((n, k))
    fast = getattr(model, "fast_head_scores", None)
    per_row = None
    if fast is not None and n:
        per_row = fast(prompts, continuations, lambda logits, targets: np.hstack(scorer(logits, targets)),
                       batch_size=batch_size, max_batch_tokens=max_batch_tokens)
    if per_row is not None:
        for i, scores in enumerate(per_row):
            logq[i], log_weight[i] = scores[:, :k].sum(axis=0), scores[:, k:].sum(axis=0)
        return logq, log_weight
    lengths = [max(len(c), 1) for c in continuations]
    for batch in length_batches(list(range(n)), lengths, batch_size, max_batch_tokens):
        conts = [continuations[i] for i in batch]
        sizes = np.array([len(c) for c in conts])
        if sizes.max() == 0:
            continue
        with torch.inference_mode():
            logits = model.continuation_logits([prompts[i] for i in batch], conts)
            rows = np.repeat(np.arange(len(conts)), sizes)
            cols = np.arange(len(rows)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
            index = (torch.from_numpy(rows).to(logits.device), torch.from_numpy(cols).to(logits.device))
            flat = logits[index]  # [positions, V]: no padding
            targets = torch.tensor([t for c in conts for t in c], dtype=torch.long, device=flat.device)
            q, z = scorer(flat, targets)
        for j in range(k):  # sums per row in float64; -inf stays -inf (no +inf ever occurs)
            logq[batch, j] = np.bincount(rows, weights=q[:, j], minlength=len(batch))
            log_weight[batch, j] = np.bincount(rows, weights=z[:, j], minlength=len(batch))
    return logq, log_weight
