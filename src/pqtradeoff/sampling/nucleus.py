"""Top-p (nucleus) truncation exactly as transformers' `TopPLogitsWarper` computes it, without its index sort.

The warper sorts each row ascending with indices, takes `softmax(sorted).cumsum()`, removes the positions
whose cumulative probability is <= 1 - top_p (never the last), and scatters that mask back through the
indices. Everything it compares depends on the sorted *values* only, which are the same whichever sort
makes them; so we sort values alone (numpy's SIMD sort on the CPU: ~30x faster than torch.sort with indices
on a [128, 49152] batch, see benchmarks/generation_roofline.py), run the same softmax and cumsum on them,
and remove the tokens below the first kept value. A row whose removed and kept values tie at the cut (the
warper's choice among equal values follows its sort's index order) or that holds a NaN is handed to the
warper itself, so the result is the warper's, bit for bit, on every row.

`Adaptor.support(logits, fast_top_p=True)` applies it in place of the warper (`warp`); `Adaptor.adapt` does.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers.generation.logits_process import TopPLogitsWarper


def sorted_values(scores: torch.Tensor) -> torch.Tensor:
    """Each row's values in ascending order (no indices): numpy's vectorized sort on the CPU."""
    if scores.device.type == "cpu":
        return torch.from_numpy(np.sort(scores.numpy(), axis=-1))
    return torch.sort(scores, dim=-1).values


def top_p_warp(warper: TopPLogitsWarper, scores: torch.Tensor) -> torch.Tensor:
    """`warper(None, scores)` for 2-D float32 scores, computed from the sorted values alone."""
    values = sorted_values(scores)
    cumulative = values.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= (1 - warper.top_p)
    remove[..., -warper.min_tokens_to_keep:] = False
    cut = remove.sum(-1, keepdim=True)  # a prefix: the cumulative sum never decreases
    first_kept = values.gather(-1, cut)
    last_removed = values.gather(-1, (cut - 1).clamp(min=0))
    out = scores.masked_fill(scores < first_kept, warper.filter_value)
    unsure = ((cut > 0) & (last_removed == first_kept)).squeeze(-1) | torch.isnan(scores).any(-1)
    if bool(unsure.any()):
        rows = unsure.nonzero().squeeze(-1)
        out[rows] = warper(None, scores[rows])
    return out


def warp(proc, scores: torch.Tensor) -> torch.Tensor:
    """`proc(None, scores)` for one of transformers' warpers, with `top_p_warp` for its top-p warper."""
    return top_p_warp(proc, scores) if isinstance(proc, TopPLogitsWarper) else proc(None, scores)
