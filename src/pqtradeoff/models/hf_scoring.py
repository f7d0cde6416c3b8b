"""Fast teacher-forced scoring for `HFModel`: shared prompt states and a fused LM head + log-softmax.

`shared_prompt_logprobs` gives what `teacher_forcing.continuation_logprobs` gives (per-token float64 log-probabilities
of each continuation given its prompt), computing less:
- prompts are run once, not once per row: rows are grouped by distinct prompt; within a window of distinct
  prompts the longest common prefix (a chat template's system prompt) is run once as a [1, c] pass, each
  distinct prompt's remaining suffix once (left-padded, behind the prefix's cached keys/values), and the
  continuations are then run in batches (ascending length, as the plain path batches them) behind the
  gathered prompt keys/values. Positions are explicit, the 2D mask covers
  [prefix | suffix pads | suffix | continuation | pads];
- the LM head only sees the positions that predict a continuation token (never padding, never prompt
  positions), and its logits are reduced to log p = logit[target] - logsumexp in chunks of positions, so the
  [B, T, V] logits are never held: the hidden states [B, T, H] come from the base model.

Memory: a continuation batch holds at most `batch_size` rows and `max_batch_tokens` padded continuation
tokens, as in the plain path, plus the keys/values of its rows' prompts; the prompt states of a window are at
most `PROMPT_STATE_FACTOR * max_batch_tokens` prompt tokens of keys/values (distinct prompts x the window's
longest prompt; a single longer prompt gets a window of its own).

Used only where it computes exactly what the model's own forward computes (`fast_scoring_parts`): a linear
output head read straight from the base model's last hidden state (no logit scaling or softcapping, checked
on the config and by a probe forward); otherwise callers fall back to the plain path. Prompt states are shared
only with plain growing caches (`HFModel.can_join`); a model with sliding-window layers (Gemma 3) runs the
plain path's layout [left-padded prompt | continuation] through the base model and the fused head.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pqtradeoff.errors import PQError
from pqtradeoff.models import onednn
from pqtradeoff.models.hf_layout import (
    common_prefix,
    left_pad,
    position_ids,
    right_pad,
    teacher_forced_inputs,
)
from pqtradeoff.models.teacher_forcing import length_batches

#: An `models.hf.HFModel` (which imports this module, so it is not imported here).
HFModel = Any

#: Prompt tokens (distinct prompts x longest prompt) whose keys/values a window holds, per max_batch_tokens.
PROMPT_STATE_FACTOR = 4
#: LM-head blocks (`head_logprobs`): positions x vocabulary entries whose logits are made and reduced at once.
HEAD_ROWS = 512
VOCAB_BLOCK = 2048


@dataclass(frozen=True)
class ScoringParts:
    """The base model (hidden states) and the output head's weight and bias, with the forward's argument
    name for the cache, and whether prompt states can be shared (plain growing caches: `HFModel.can_join`)."""

    base: Any
    weight: torch.Tensor
    bias: torch.Tensor | None
    cache_arg: str
    share: bool


def fast_scoring_parts(lm: HFModel) -> ScoringParts | None:
    """The parts of `lm` for the fast path, or None where its logits are not exactly head(base(x)).

    Computed once per model (cached on it)."""
    if "_fast_scoring_parts" not in lm.__dict__:
        lm.__dict__["_fast_scoring_parts"] = _find_parts(lm)
    return lm.__dict__["_fast_scoring_parts"]


def _find_parts(lm: HFModel) -> ScoringParts | None:
    model = lm.model
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for name, value in vars(config).items():
        if ("logit" in name or "output_mult" in name) and value not in (None, False, 1, 1.0):
            return None  # logit softcapping or scaling: the plain path applies it
    head = model.get_output_embeddings()
    base = getattr(model, "base_model", None)
    if not isinstance(head, torch.nn.Linear) or base is None or base is model:
        return None
    params = set(_parameters(base))
    cache_arg = "cache" if "cache" in params else "past_key_values"
    if not {"position_ids", "attention_mask", cache_arg} <= params:
        return None
    parts = ScoringParts(base, head.weight, head.bias, cache_arg, bool(lm.can_join))
    return parts if _probe(lm, parts) else None


def _parameters(module: Any) -> list[str]:
    return list(inspect.signature(module.forward).parameters)


@torch.inference_mode()
def _probe(lm: HFModel, parts: ScoringParts) -> bool:
    """Whether head(base(x)) reproduces the model's logits on a short sequence (catches a scaling that the
    config does not name)."""
    ids = (torch.arange(1, 9, device=lm.device) * 7919 % lm.vocab_size).view(1, -1)
    mask = torch.ones_like(ids)
    positions = torch.arange(ids.shape[1], device=lm.device).view(1, -1)
    want = lm.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
    hidden = parts.base(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
    got = onednn.linear(hidden, parts.weight, parts.bias).float()
    scale = float(want.abs().max()) + 1e-6
    return want.shape == got.shape and bool((want - got).abs().max() <= 1e-5 * max(1.0, scale))


def head_logprobs(parts: ScoringParts, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) [N] (float32; float64 for a float64 model) of hidden states [N, H].

    Blocked so the logits stay in cache: `HEAD_ROWS` positions x `VOCAB_BLOCK` logits at a time, each block
    reduced in place to its logsumexp (the blocks' then combined by one logsumexp) and its targets' logits
    picked, so no [N, V] tensor and no full-vocabulary temporaries are made."""
    dtype = torch.promote_types(parts.weight.dtype, torch.float32)
    vocab = parts.weight.shape[0]
    out = torch.empty(hidden.shape[0], dtype=dtype, device=hidden.device)
    for s in range(0, hidden.shape[0], HEAD_ROWS):
        h, t = hidden[s:s + HEAD_ROWS], targets[s:s + HEAD_ROWS]
        picked = torch.zeros(h.shape[0], dtype=dtype, device=h.device)
        blocks = []
        for lo in range(0, vocab, VOCAB_BLOCK):
            hi = min(lo + VOCAB_BLOCK, vocab)
            bias = None if parts.bias is None else parts.bias[lo:hi]
            logits = onednn.linear(h, parts.weight[lo:hi], bias).to(dtype)
            inside = (t >= lo) & (t < hi)
            got = logits.gather(1, (t - lo).clamp(0, hi - lo - 1).unsqueeze(1)).squeeze(1)
            picked = torch.where(inside, got, picked)
            top = logits.amax(1, keepdim=True)
            blocks.append(logits.sub_(top).exp_().sum(1).log_() + top.squeeze(1))
        out[s:s + HEAD_ROWS] = picked - torch.logsumexp(torch.stack(blocks, 1), dim=1)
    return out


#: Positions whose full logits `head_scores` makes at once (a [rows, V] float32 block).
HEAD_SCORE_ROWS = 64


def head_scores(parts: ScoringParts, hidden: torch.Tensor, targets: torch.Tensor, head: Any) -> np.ndarray:
    """`head(logits, targets)` (a numpy array [rows, k]) over hidden states [N, H], `HEAD_SCORE_ROWS`
    positions at a time: each block's full logits [rows, V] (float32; float64 for a float64 model) made by the
    output head, handed to `head`, and dropped."""
    dtype = torch.promote_types(parts.weight.dtype, torch.float32)
    out = []
    for s in range(0, hidden.shape[0], HEAD_SCORE_ROWS):
        logits = onednn.linear(hidden[s:s + HEAD_SCORE_ROWS], parts.weight, parts.bias).to(dtype)
        out.append(head(logits, targets[s:s + HEAD_SCORE_ROWS]))
    return np.concatenate(out) if out else np.zeros((0, 0))


def _reduce(parts: ScoringParts, hidden: torch.Tensor, targets: torch.Tensor, head: Any) -> np.ndarray:
    """log p of the targets (`head_logprobs`), or `head`'s scores of the full logits (`head_scores`)."""
    if head is None:
        return head_logprobs(parts, hidden, targets).double().cpu().numpy()
    return head_scores(parts, hidden, targets, head)


def prompt_windows(prompts: list[tuple[int, ...]], budget: int) -> list[list[int]]:
    """Consecutive runs of distinct prompts (indices) whose count x longest length stays within `budget`
    tokens (a longer prompt alone)."""
    windows: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i, p in enumerate(prompts):
        if current and (len(current) + 1) * max(longest, len(p)) > budget:
            windows.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, len(p))
    if current:
        windows.append(current)
    return windows


@dataclass
class PromptStates:
    """Keys/values of a window's distinct prompts: the common prefix [1, kvH, c, D] per layer, the suffixes
    left-padded [n, kvH, S, D] per layer with their mask [n, S], and each prompt's last hidden state
    [n, H]."""

    prefix: list[tuple[torch.Tensor, torch.Tensor]]
    suffix: list[tuple[torch.Tensor, torch.Tensor]]
    mask: torch.Tensor
    last: torch.Tensor
    c: int


def _run(parts: ScoringParts, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any
         ) -> torch.Tensor:
    """The base model's last hidden states [B, L, H] for `ids` behind `cache` (updated in place)."""
    kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "use_cache": True,
              parts.cache_arg: cache}
    return parts.base(**kwargs).last_hidden_state


def _cache_of(lm: HFModel, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    """A fresh cache holding `layers`' keys/values (plain growing layers: they are held, not copied)."""
    cache = lm._new_cache(buffered=False)
    for i, (k, v) in enumerate(layers):
        cache.update(k[:, :, :0], v[:, :, :0], i)  # initializes the layer; then hold k, v without a copy
        cache.layers[i].keys, cache.layers[i].values = k, v
    return cache


def prompt_states(lm: HFModel, parts: ScoringParts, prompts: list[tuple[int, ...]],
                  max_batch_tokens: int) -> PromptStates:
    """Run the common prefix once and each distinct prompt's suffix once (batched by suffix length under
    `max_batch_tokens` padded tokens)."""
    device, n = lm.device, len(prompts)
    c = min(common_prefix(prompts), min(len(p) for p in prompts) - 1)  # every suffix keeps >= 1 token
    prefix = lm._prefix_state(list(prompts[0][:c])) if c else []  # kept: the next window shares it
    width = max(len(p) for p in prompts) - c
    suffix: list[tuple[torch.Tensor, torch.Tensor]] = []
    mask = torch.zeros((n, width), dtype=torch.long, device=device)
    last: torch.Tensor | None = None
    order = sorted(range(n), key=lambda i: len(prompts[i]))
    start = 0
    while start < n:
        end = start + 1  # ascending length: the row added is the batch's longest
        while end < n and (end - start + 1) * (len(prompts[order[end]]) - c) <= max_batch_tokens:
            end += 1
        rows = order[start:end]
        ids, m = left_pad([list(prompts[i][c:]) for i in rows], lm.pad_token_id, device)
        b, s = ids.shape
        cache = _cache_of(lm, [(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in prefix])
        full = torch.cat([m.new_ones((b, c)), m], dim=1)
        hidden = _run(parts, ids, full, position_ids(full)[:, c:], cache)
        if last is None:
            last = hidden.new_empty((n, hidden.shape[-1]))
            suffix = [(k.new_zeros((n, k.shape[1], width, k.shape[3])),
                       v.new_zeros((n, v.shape[1], width, v.shape[3]))) for k, v in
                      ((layer.keys, layer.values) for layer in cache.layers)]
        index = torch.tensor(rows, device=device)
        last[index] = hidden[:, -1]
        mask[index, width - s:] = m
        for (k_all, v_all), layer in zip(suffix, cache.layers, strict=True):
            k_all[index, :, width - s:] = layer.keys[:, :, c:]
            v_all[index, :, width - s:] = layer.values[:, :, c:]
        start = end
    assert last is not None
    return PromptStates(prefix, suffix, mask, last, c)


def score_batch(lm: HFModel, parts: ScoringParts, states: PromptStates, slots: list[int],
                prompt_lengths: list[int], conts: list[list[int]], head: Any = None) -> list[np.ndarray]:
    """Per-token log-probabilities of `conts` (each non-empty), row r behind prompt state `slots[r]`."""
    device, b = lm.device, len(conts)
    index = torch.tensor(slots, device=device)
    lengths = torch.tensor([len(x) for x in conts], device=device)
    width = int(lengths.max())
    targets, _ = right_pad(conts, 0, device, width)
    first_hidden = states.last[index].unsqueeze(1)  # predicts conts[r][0]
    if width > 1:
        smask = states.mask[index]
        cut = int(smask.any(0).int().argmax())  # columns that are padding in every row of the batch
        smask = smask[:, cut:]
        layers = [(torch.cat([k.expand(b, -1, -1, -1), sk[index, :, cut:]], dim=2),
                   torch.cat([v.expand(b, -1, -1, -1), sv[index, :, cut:]], dim=2))
                  for (k, v), (sk, sv) in zip(states.prefix, states.suffix, strict=True)] if states.prefix \
            else [(sk[index, :, cut:], sv[index, :, cut:]) for sk, sv in states.suffix]
        ids, cmask = right_pad([x[:-1] for x in conts], lm.pad_token_id, device, width - 1)
        full = torch.cat([smask.new_ones((b, states.c)), smask, cmask], dim=1)
        start = torch.tensor(prompt_lengths, device=device).view(-1, 1)
        positions = (start + torch.arange(width - 1, device=device)).masked_fill(cmask == 0, 1)
        hidden = _run(parts, ids, full, positions, _cache_of(lm, layers))
        hidden = torch.cat([first_hidden, hidden], dim=1)
    else:
        hidden = first_hidden
    keep = torch.arange(width, device=device).view(1, -1) < lengths.view(-1, 1)
    logp = _reduce(parts, hidden[keep], targets[keep], head)
    return np.split(logp, np.cumsum([len(x) for x in conts])[:-1])


@torch.inference_mode()
def shared_prompt_logprobs(lm: HFModel, prompts: list[list[int]], continuations: list[list[int]], *,
                           batch_size: int, max_batch_tokens: int, head: Any = None) -> list[np.ndarray] | None:
    """`teacher_forcing.continuation_logprobs` with shared prompt states (see the module); None where the model
    does not allow the fast path (`fast_scoring_parts`). With `head` (logits [rows, V], targets [rows] ->
    numpy [rows, k]), each row's [length, k] scores of its positions' full logits instead (`head_scores`)."""
    if len(prompts) != len(continuations):
        raise PQError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    if any(len(p) == 0 for p in prompts):
        raise PQError("continuation_logits needs a token in each prompt (use empty_context() for none)")
    parts = fast_scoring_parts(lm)
    if parts is None:
        return None
    out = [np.zeros(0) for _ in continuations]
    lengths = [len(c) for c in continuations]
    if not parts.share:  # sliding-window or other caches: no shared prompt states, the fused head only
        rows = [i for i, c in enumerate(continuations) if c]
        for batch in length_batches(rows, lengths, batch_size, max_batch_tokens):
            logps = score_batch_unshared(lm, parts, [prompts[i] for i in batch],
                                         [continuations[i] for i in batch], head)
            _place(out, batch, logps)
        return out
    groups = rows_by_prompt(prompts, continuations)
    distinct = list(groups)
    for window in prompt_windows(distinct, PROMPT_STATE_FACTOR * max_batch_tokens):
        states = prompt_states(lm, parts, [distinct[w] for w in window], max_batch_tokens)
        slot_of = {i: slot for slot, w in enumerate(window) for i in groups[distinct[w]]}
        for batch in length_batches(list(slot_of), lengths, batch_size, max_batch_tokens):
            logps = score_batch(lm, parts, states, [slot_of[i] for i in batch],
                                [len(prompts[i]) for i in batch], [continuations[i] for i in batch], head)
            _place(out, batch, logps)
    return out


def rows_by_prompt(prompts: list[list[int]], continuations: list[list[int]]) -> dict[tuple[int, ...], list[int]]:
    """The rows with a non-empty continuation, grouped by their prompt (first appearance order)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (p, c) in enumerate(zip(prompts, continuations, strict=True)):
        if c:
            groups.setdefault(tuple(p), []).append(i)
    return groups


def _place(out: list[np.ndarray], rows: list[int], logps: list[np.ndarray]) -> None:
    for i, lp in zip(rows, logps, strict=True):
        out[i] = lp


def score_batch_unshared(lm: HFModel, parts: ScoringParts, prompts: list[list[int]], conts: list[list[int]],
                         head: Any = None) -> list[np.ndarray]:
    """`score_batch` without prompt states: one pass over [left-padded prompt | right-padded continuation],
    as `HFModel.continuation_logits` lays it out, its last T hidden states through `head_logprobs`."""
    device = lm.device
    lengths = torch.tensor([len(x) for x in conts], device=device)
    width = int(lengths.max())
    ids, mask = teacher_forced_inputs(prompts, conts, lm.pad_token_id, device)
    hidden = parts.base(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).last_hidden_state
    targets, _ = right_pad(conts, 0, device, width)
    keep = torch.arange(width, device=device).view(1, -1) < lengths.view(-1, 1)
    logp = _reduce(parts, hidden[:, -width:][keep], targets[keep], head)
    return np.split(logp, np.cumsum([len(x) for x in conts])[:-1])
