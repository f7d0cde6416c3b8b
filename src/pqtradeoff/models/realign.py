"""Decoding-time realignment (DeRa, Liu et al., arXiv 2402.02992): the aligned model and its prior decoded in
lockstep, sampling from the token-level geometric mixture

    pi_lambda(v | y<t) proportional to p+(v | y<t)^lambda * p(v | y<t)^(1 - lambda)

(lambda = 1: the aligned model; 0: the prior; > 1 extrapolates), with the spec's warpers applied on top
(`dera=0.5,temperature=0.7`). `Realigned(aligned, prior)` is a `LanguageModel` that serves every request:
those with `dera` through `Lockstep` (one decoding state per model, stepped together), the others through
the aligned model itself; everything else (tokenizer, decoding, teacher forcing) is the aligned model's.

What each row records, so that the corpus contract holds unchanged (docs/scored-corpus.md):
- `logq`: log of the sampling distribution (the warpers applied to pi_lambda), as for any adaptor;
- `logp_aligned`: the aligned model's own T = 1 log-probability of the token (not pi_lambda's), so
  KL(q || p+) and the "aligned" IMH target read the same column for every configuration;
- `log_weight`: sum_t log Z_t with the globally normalized weights m(v)/T on the kept support, where
  m = lambda log p+ + (1 - lambda) log p is *not* renormalized: the global target is then
  (p+^lambda p^(1-lambda))^(1/T), which for p+ = p exp(r/beta)/Z is the aligned model at beta/lambda
  (tempered). `Adaptor.adapt` sees log_softmax(m), so log Z_t gains logsumexp(m)/T
  (`StepLanguageModel.rescore`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from pqtradeoff.errors import PQError
from pqtradeoff.models.base import SCORE_BATCH, SCORE_BATCH_TOKENS, LanguageModel, SampledRow, SampleRequest
from pqtradeoff.models.decoding import StepLanguageModel, sample_run
from pqtradeoff.sampling.adaptors import Adaptor, realigning


def check_pair(aligned: LanguageModel, prior: LanguageModel) -> None:
    """Refuse, in one line, a prior that cannot be mixed with the aligned model token by token."""
    if not isinstance(aligned, StepLanguageModel) or not isinstance(prior, StepLanguageModel):
        raise PQError("dera needs two step-level models (backend hf or fsa) decoded in lockstep; "
                      f"got {type(aligned).__name__} and {type(prior).__name__}")
    if prior.tokenizer_key != aligned.tokenizer_key or prior.vocab_size != aligned.vocab_size:
        raise PQError(f"dera mixes next-token distributions token by token, so the prior must share the "
                      f"aligned model's tokenizer: prior {getattr(prior, 'name', '?')!r} tokenizes "
                      f"differently "
                      f"(vocabulary {prior.vocab_size} vs {aligned.vocab_size})")


class _AlignedTokenization:
    """Tokenization, decoding and the model facts are the aligned model's (`self.aligned`)."""

    aligned: StepLanguageModel

    def _take_facts(self, aligned: StepLanguageModel) -> None:
        self.vocab_size, self.eos_token_id = aligned.vocab_size, aligned.eos_token_id
        self.eos_token_ids, self.tokenizer_key = aligned.eos_token_ids, aligned.tokenizer_key
        self.max_length = aligned.max_length

    def encode_prompt(self, prompt: str) -> list[int]:
        return self.aligned.encode_prompt(prompt)

    def empty_context(self) -> list[int]:
        return self.aligned.empty_context()

    def encode_continuation(self, text: str) -> list[int]:
        return self.aligned.encode_continuation(text)

    def decode(self, token_ids: list[int]) -> str:
        return self.aligned.decode(token_ids)


class _State(NamedTuple):
    aligned: Any
    prior: Any
    aligned_logp: torch.Tensor  # [B, V] the aligned model's log_softmax for the logits just returned
    log_mass: torch.Tensor  # [B] logsumexp of the unnormalized mixture m


class Lockstep(_AlignedTokenization, StepLanguageModel):
    """The step-level model whose logits are m = lambda log p+ + (1 - lambda) log p (float32 or float64 as the
    models give them), with the aligned model's log-probabilities kept beside them for `rescore`."""

    def __init__(self, aligned: StepLanguageModel, prior: StepLanguageModel, weight: float) -> None:
        check_pair(aligned, prior)
        self.aligned, self.prior, self.weight = aligned, prior, float(weight)
        self._take_facts(aligned)
        self.can_join = aligned.can_join and prior.can_join
        self.name = f"dera({getattr(aligned, 'name', 'aligned')}, {getattr(prior, 'name', 'prior')})"

    def _mix(self, aligned_logits: torch.Tensor, prior_logits: torch.Tensor) -> tuple[torch.Tensor, Any]:
        dtype = torch.promote_types(aligned_logits.dtype, prior_logits.dtype)
        dtype = torch.promote_types(dtype, torch.float32)
        logp_a = torch.log_softmax(aligned_logits.to(dtype), dim=-1)
        logp_p = torch.log_softmax(prior_logits.to(dtype).to(logp_a.device), dim=-1)
        if self.weight == 1.0:
            mixed = logp_a.clone()
        elif self.weight == 0.0:
            mixed = logp_p.clone()
        else:  # a token impossible for either model stays impossible (and -inf * (1 - lambda) is no NaN)
            both = torch.isfinite(logp_a) & torch.isfinite(logp_p)
            mixed = torch.where(both, self.weight * logp_a.masked_fill(~both, 0.0)
                                + (1.0 - self.weight) * logp_p.masked_fill(~both, 0.0),
                                torch.full_like(logp_a, float("-inf")))
        return mixed, (logp_a, torch.logsumexp(mixed, dim=-1))

    def start(self, prompts: list[list[int]]) -> tuple[torch.Tensor, _State]:
        logits_a, state_a = self.aligned.start(prompts)
        logits_p, state_p = self.prior.start(prompts)
        mixed, (logp_a, mass) = self._mix(logits_a, logits_p)
        return mixed, _State(state_a, state_p, logp_a, mass)

    def step(self, state: _State, tokens: torch.Tensor) -> tuple[torch.Tensor, _State]:
        logits_a, state_a = self.aligned.step(state.aligned, tokens)
        logits_p, state_p = self.prior.step(state.prior, tokens)
        mixed, (logp_a, mass) = self._mix(logits_a, logits_p)
        return mixed, _State(state_a, state_p, logp_a, mass)

    def keep(self, state: _State, rows: torch.Tensor) -> _State:
        return _State(self.aligned.keep(state.aligned, rows), self.prior.keep(state.prior, rows),
                      state.aligned_logp[rows], state.log_mass[rows])

    def join(self, state: _State, other: _State) -> _State:
        return _State(self.aligned.join(state.aligned, other.aligned),
                      self.prior.join(state.prior, other.prior),
                      torch.cat([state.aligned_logp, other.aligned_logp]),
                      torch.cat([state.log_mass, other.log_mass]))

    def state_bytes(self, length: int) -> int:
        return self.aligned.state_bytes(length) + self.prior.state_bytes(length)

    def rescore(self, state: _State, tokens: torch.Tensor, host: np.ndarray, adaptor: Adaptor) -> np.ndarray:
        """The aligned model's log p+ of each token in place of log pi_lambda's, and log Z_t of the
        unnormalized mixture weights (+ logsumexp(m)/T)."""
        host = host.copy()
        host[2] = state.aligned_logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).double().cpu().numpy()
        host[3] += state.log_mass.double().cpu().numpy() / adaptor.temperature
        return host

    def continuation_logits(self, prompts: list[list[int]], continuations: list[list[int]]) -> torch.Tensor:
        mixed, _ = self._mix(self.aligned.continuation_logits(prompts, continuations),
                             self.prior.continuation_logits(prompts, continuations))
        return mixed


class Realigned(_AlignedTokenization, LanguageModel):
    """The aligned model, able to sample `dera=...` requests with the prior decoded beside it."""

    def __init__(self, aligned: StepLanguageModel, prior: StepLanguageModel) -> None:
        check_pair(aligned, prior)
        self.aligned, self.prior = aligned, prior
        self._take_facts(aligned)
        self.name = getattr(aligned, "name", "aligned")
        self.device = getattr(aligned, "device", "auto")

    def logprobs(self, prompts: Sequence[list[int]], continuations: Sequence[list[int]], *,
                 batch_size: int = SCORE_BATCH,
                 max_batch_tokens: int = SCORE_BATCH_TOKENS) -> list[np.ndarray]:
        return self.aligned.logprobs(prompts, continuations, batch_size=batch_size,
                                     max_batch_tokens=max_batch_tokens)

    def sample(self, requests: Sequence[SampleRequest], *, batch_size: int | None = None) -> list[SampledRow]:
        """The requests of each DeRa adaptor (and length limit) in lockstep with the prior, wherever they
        stand in `requests`; all the others by the aligned model, in one call; rows in request order (a row
        depends on its request alone, as for every model)."""
        rows: list[SampledRow | None] = [None] * len(requests)
        runs: dict[Any, list[int]] = {}
        for i, r in enumerate(requests):
            realigns = isinstance(r.adaptor, Adaptor) and r.adaptor.realigns
            runs.setdefault((r.adaptor, r.max_new_tokens) if realigns else None, []).append(i)
        for key, at in runs.items():
            run = [requests[i] for i in at]
            sampled = (self.aligned.sample(run, batch_size=batch_size) if key is None else
                       sample_run(Lockstep(self.aligned, self.prior, key[0].dera), run, batch_size))
            for i, row in zip(at, sampled, strict=True):
                rows[i] = row
        return rows  # type: ignore[return-value]


def with_prior(aligned: LanguageModel, prior: LanguageModel | None, adaptors: Sequence[Any]) -> LanguageModel:
    """The model `generate` samples from: the aligned model, or `Realigned` when a `dera` adaptor is in the
    grid (refused in one line without a prior or with another tokenizer)."""
    dera = realigning(list(adaptors))
    if not dera:
        return aligned
    if prior is None:
        raise PQError(f"adaptor {dera[0]} (DeRa) needs the prior at generation time: give the prior "
                      "(generate --prior, or [prior] in the experiment)")
    return Realigned(aligned, prior)  # type: ignore[arg-type]
