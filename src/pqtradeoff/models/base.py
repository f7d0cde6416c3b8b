"""The one model interface the pipeline sees, for Hugging Face models and exact finite-state automata alike.

`generate` samples through `start`/`step` (incremental: KV cache or automaton state); `score` and the tests
teacher-force through `continuation_logits`. Everything returned is logits over the model's vocabulary,
float32 or float64 as the backend chooses (Hugging Face models: float32; automata: float64, so that exact
values stay exact); the pipeline applies adaptors and log_softmax itself in that precision (half-precision
logits are raised to float32), so both kinds of model are treated identically.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch


class LanguageModel(ABC):
    """An autoregressive language model over token ids, with an end-of-string token."""

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
