"""The model interfaces the pipeline sees: requests in, rows out (like lm-evaluation-harness's `LM`).

`LanguageModel` is the request-level interface every backend serves: tokenization, `sample(requests) -> rows`
for `generate`, `logprobs(prompts, continuations) -> per-token arrays` for `score`. `generate_corpus` and
`score_corpus` call only these, so a backend that owns its decode loop (vLLM) implements them directly.

`StepLanguageModel` is a backend driven token by token (Hugging Face models, exact finite-state automata):
it implements `start`/`step`/`keep` (incremental: KV cache or automaton state) and `continuation_logits`
(teacher-forced), and inherits `sample` and `logprobs` from the pipeline's shared implementation
(`generate.sample_rows`: continuous batching, counter-based randomness; `score.continuation_logprobs`).
Everything it returns is logits over the model's vocabulary, float32 or float64 as the backend chooses
(Hugging
Face models: float32; automata: float64, so that exact values stay exact); the pipeline applies adaptors and
log_softmax itself in that precision (half-precision logits are raised to float32), so both kinds of model are
treated identically.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from pqtradeoff.adaptors import Adaptor


# ------------------------------------------------------------------------------------------ requests, rows
@dataclass(frozen=True)
class SampleRequest:
    """One string to sample: its prompt ids, adaptor, row key (uint64, `generate.row_keys`: the row's own
    random stream) and length limit."""

    prompt_token_ids: list[int]
    adaptor: Adaptor
    key: int
    max_new_tokens: int


@dataclass
class SampledRow:
    """One sampled continuation: its tokens (EOS included when emitted) and its per-step and summed scores
    (`logq` under the adapted model, `logp_aligned` under the aligned model at T = 1, `log_weight` the summed
    log mass the adaptor keeps; see docs/backends.md)."""

    token_ids: list[int]
    finished: bool
    logq: float
    logp_aligned: float
    log_weight: float
    token_logq: list[float]
    token_logp_aligned: list[float]
    token_log_z: list[float]


# ------------------------------------------------------------------------------------------ request level
class LanguageModel(ABC):
    """An autoregressive language model over token ids, with an end-of-string token, served by request."""

    #: id of the end-of-string token; a continuation that emits it is `finished`.
    eos_token_id: int
    #: every id that ends a string, when there are several (chat models end a turn with their own token);
    #: empty means just `eos_token_id`. Use `end_ids()`.
    eos_token_ids: tuple[int, ...] = ()
    #: size of the last axis of the logits.
    vocab_size: int
    #: a string that is equal for two models exactly when they tokenize identically (scoring by token ids
    #: is only valid then).
    tokenizer_key: str
    #: longest prompt + continuation the model accepts (None: unbounded).
    max_length: int | None = None

    def end_ids(self) -> tuple[int, ...]:
        """The ids that end a string (`eos_token_id` first)."""
        return self.eos_token_ids or (self.eos_token_id,)

    # --------------------------------------------------------------------------------------- tokenization
    @abstractmethod
    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of a prompt as the model sees it (BOS and template included where the model uses
        them)."""

    @abstractmethod
    def empty_context(self) -> list[int]:
        """Token ids to condition on when a continuation is scored without its prompt
        (`--prior-context none`):
        BOS for a Hugging Face model (EOS where it has no BOS, as GPT-2), the start state (no ids) for an
        automaton. May be empty only for models whose `start`/`continuation_logits` accept an empty prompt."""

    @abstractmethod
    def encode_continuation(self, text: str) -> list[int]:
        """Token ids of a continuation text that follows a prompt (no BOS); used to re-tokenize for
        scoring."""

    @abstractmethod
    def decode(self, token_ids: list[int]) -> str:
        """Text of continuation token ids, special tokens (EOS) dropped."""

    # ------------------------------------------------------------------------------------------- requests
    @abstractmethod
    def sample(self, requests: Sequence[SampleRequest], *, batch_size: int | None = None) -> list[SampledRow]:
        """One row per request, in order. A row's tokens depend only on its request (prompt, adaptor, key,
        max_new_tokens), never on the other requests or on `batch_size` (rows decoding together; None: the
        backend's choice)."""

    @abstractmethod
    def logprobs(self, prompts: Sequence[list[int]], continuations: Sequence[list[int]], *,
                 batch_size: int = 8,
                 max_batch_tokens: int = 4096) -> list[np.ndarray]:
        """Per-token log-probabilities (float64, T = 1, no truncation) of each continuation given its prompt,
        teacher-forced; -inf kept for a token outside the model's support. Batching (at most `batch_size` rows
        and `max_batch_tokens` padded tokens at once) bounds memory and never changes the result beyond
        float rounding."""


# --------------------------------------------------------------------------------------------- step level
class StepLanguageModel(LanguageModel):
    """A model driven token by token; `sample` and `logprobs` are the pipeline's shared implementation."""

    def sample(self, requests: Sequence[SampleRequest], *, batch_size: int | None = None) -> list[SampledRow]:
        """`generate.sample_rows` on each run of consecutive requests with the same adaptor and length limit
        (a shard is one run); `batch_size=None` takes `generate.choose_batch_size` for the run's longest
        prompt + max_new_tokens, so the batch, and the rows, depend on the run alone."""
        from pqtradeoff.generate import choose_batch_size, sample_rows

        rows: list[SampledRow] = []
        start = 0
        while start < len(requests):
            first = requests[start]
            end = start + 1
            while end < len(requests) and (requests[end].adaptor, requests[end].max_new_tokens) == \
                    (first.adaptor, first.max_new_tokens):
                end += 1
            run = requests[start:end]
            prompts = [list(r.prompt_token_ids) for r in run]
            keys = np.array([r.key for r in run], dtype=np.uint64)
            batch = batch_size or choose_batch_size(self, max(len(p) for p in prompts) + first.max_new_tokens)
            with torch.inference_mode():
                rows += sample_rows(self, first.adaptor, prompts, keys, first.max_new_tokens, batch)
            start = end
        return rows

    def logprobs(self, prompts: Sequence[list[int]], continuations: Sequence[list[int]], *,
                 batch_size: int = 8,
                 max_batch_tokens: int = 4096) -> list[np.ndarray]:
        """`score.continuation_logprobs`: teacher-forced through `continuation_logits`."""
        from pqtradeoff.score import continuation_logprobs

        return continuation_logprobs(self, list(prompts), list(continuations), batch_size=batch_size,
                                     max_batch_tokens=max_batch_tokens)

    # ---------------------------------------------------------------------------------------- incremental
    @abstractmethod
    def start(self, prompts: list[list[int]]) -> tuple[torch.Tensor, Any]:
        """Begin a batch: logits [B, V] (float32 or float64) for the first continuation token, and an opaque
        state."""

    @abstractmethod
    def step(self, state: Any, tokens: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Feed one token per row ([B] long); return the next logits [B, V] (float32 or float64) and the new
        state."""

    @abstractmethod
    def keep(self, state: Any, rows: torch.Tensor) -> Any:
        """Restrict the state to the rows indexed by `rows` ([B'] long), to stop computing finished strings.
        An index may repeat: that row's state is copied (`generate.start_distinct` prefills a prompt once)."""

    #: whether `join` can append rows to a running state: `generate.sample_rows` then refills the places of
    #: finished strings with waiting ones (continuous batching); without it, it samples batch after batch.
    can_join: bool = False

    def join(self, state: Any, other: Any) -> Any:
        """One state holding `state`'s rows followed by `other`'s (both from this model's
        `start`/`step`/`keep`; neither may be reused). Only where `can_join`."""
        raise NotImplementedError(f"{type(self).__name__} cannot join decoding states (can_join is False)")

    def state_bytes(self, length: int) -> int:
        """Bytes of decoding state one row holds at `length` tokens (a KV cache grows with it), for choosing
        the batch size from a memory budget. Default: nothing worth counting (an automaton's state id)."""
        return 0

    # ---------------------------------------------------------------------------------------- teacher-forced
    @abstractmethod
    def continuation_logits(self, prompts: list[list[int]], continuations: list[list[int]]) -> torch.Tensor:
        """Teacher-forced logits [B, T, V] (float32 or float64), T = longest continuation: position t holds
        the logits that predict `continuations[b][t]` given the prompt and `continuations[b][:t]`. Positions
        past a row's length are padding and must be ignored by the caller. Results must not depend on the
        batch's other rows or on padding (up to float rounding)."""


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
