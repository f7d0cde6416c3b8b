"""The model interfaces the pipeline sees: requests in, rows out (like lm-evaluation-harness's `LM`).

`LanguageModel` is the request-level interface every backend serves: tokenization, `sample(requests) -> rows`
for `generate`, `logprobs(prompts, continuations) -> per-token arrays` for `score`. `generate_corpus` and
`score_corpus` call only these, so a backend that owns its decode loop (vLLM) implements them directly.

A backend driven token by token (Hugging Face models, exact finite-state automata) is a
`models.decoding.StepLanguageModel`: it inherits `sample` from the shared decoding loop there and `logprobs`
from `models.teacher_forcing`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pqtradeoff.sampling.adaptors import Adaptor

#: Scoring's batch limits when the user gives none (the one source of these defaults; generation chooses its
#: own, `decoding.choose_batch_size`): rows per forward pass, and padded tokens per forward pass.
SCORE_BATCH = 8
SCORE_BATCH_TOKENS = 4096
#: On CPU fewer positions per forward pass: ~1024 positions' activations stay in cache, while the GEMMs keep
#: their rate (benchmarks/scoring.py: 200-token continuations, 8 rows x 4096 tokens 74%, <= 1024 tokens 76-79%
#: of the roofline in CPU time).
SCORE_BATCH_TOKENS_CPU = 1024


def score_batch_tokens(prior: object) -> int:
    """The default `max_batch_tokens` of scoring with `prior` (None: no prior): lower on CPU."""
    on_cpu = str(getattr(prior, "device", "")).startswith("cpu")
    return SCORE_BATCH_TOKENS_CPU if on_cpu else SCORE_BATCH_TOKENS


# ------------------------------------------------------------------------------------------ requests, rows
@dataclass(frozen=True)
class SampleRequest:
    """One string to sample: its prompt ids, adaptor, row key (uint64, `sampler.row_keys`: the row's own
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
                 batch_size: int = SCORE_BATCH,
                 max_batch_tokens: int = SCORE_BATCH_TOKENS) -> list[np.ndarray]:
        """Per-token log-probabilities (float64, T = 1, no truncation) of each continuation given its prompt,
        teacher-forced; -inf kept for a token outside the model's support. Batching (at most `batch_size` rows
        and `max_batch_tokens` padded tokens at once) bounds memory and never changes the result beyond
        float rounding."""
