"""Batch layouts of Hugging Face forwards: padding, explicit positions, the teacher-forcing layout and the
common prefix of prompts, shared by decoding (`models.hf`) and fast scoring (`models.hf_scoring`)."""

from __future__ import annotations

import numpy as np
import torch


def left_pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids [B, L] and attention mask [B, L], each row right-aligned (left padding)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        if row:
            ids[b, width - len(row):] = torch.as_tensor(row, dtype=torch.long)
            mask[b, width - len(row):] = 1
    return ids.to(device), mask.to(device)


def right_pad(rows: list[list[int]], pad_id: int, device: torch.device, width: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids [B, W] and attention mask [B, W], each row left-aligned (right padding)."""
    width = max((len(r) for r in rows), default=0) if width is None else width
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        if row:
            ids[b, : len(row)] = torch.as_tensor(row, dtype=torch.long)
            mask[b, : len(row)] = 1
    return ids.to(device), mask.to(device)


def teacher_forced_inputs(prompts: list[list[int]], continuations: list[list[int]], pad_id: int,
                          device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and mask [B, P + T - 1] laid out [left-padded prompt | right-padded continuation[:-1]] (T = the
    longest continuation): column P - 1 + t predicts continuation[t] in every row, so the last T columns are
    exactly the predicting positions."""
    width = max(len(c) for c in continuations)
    p_ids, p_mask = left_pad(prompts, pad_id, device)
    c_ids, c_mask = right_pad([c[: width - 1] for c in continuations], pad_id, device, width - 1)
    return torch.cat([p_ids, c_ids], dim=1), torch.cat([p_mask, c_mask], dim=1)


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only (what `generate` uses with left padding); pads get 1."""
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)


def common_prefix(rows: list[tuple[int, ...]] | list[list[int]]) -> int:
    """Length of the longest common prefix of `rows`."""
    first, n = rows[0], min(len(r) for r in rows)
    for i in range(n):
        if any(r[i] != first[i] for r in rows):
            return i
    return n


def pad_left(x: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """`x` with zeros prepended along `dim` up to `width` (left padding of a mask or of cached
    keys/values)."""
    missing = width - x.shape[dim]
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_zeros(shape), x], dim=dim)


def length_groups(lengths: list[int], min_tokens: int, max_waste: float = 0.1) -> list[np.ndarray]:
    """Row indices grouped for prefill: sorted by length and cut into consecutive groups, each closed once it
    holds `min_tokens` real tokens, or at least half that when the next row would pad it by more than
    `max_waste` of its positions. One group (all rows, in order) when the whole batch pads no more than
    that."""
    lengths_np = np.asarray(lengths, dtype=np.int64)
    if lengths_np.size == 0 or lengths_np.max() * lengths_np.size <= (1 + max_waste) * lengths_np.sum():
        return [np.arange(lengths_np.size)]
    order = np.argsort(lengths_np, kind="stable")
    groups, start, tokens = [], 0, 0
    for i, row in enumerate(order):
        n, length = i - start, int(lengths_np[row])
        if n and tokens >= min_tokens // 2 and length * (n + 1) > (1 + max_waste) * (tokens + length):
            groups.append(order[start:i])
            start, tokens = i, 0
        tokens += length
        if tokens >= min_tokens:
            groups.append(order[start:i + 1])
            start, tokens = i + 1, 0
    if start < order.size:  # the rest: its own group if large enough, else the last group's tail
        if groups and tokens < min_tokens // 2:
            groups[-1] = np.concatenate([groups[-1], order[start:]])
        else:
            groups.append(order[start:])
    return groups
