"""References on the finite-state backend that only the tests use: ancestral samples, the alignment identity
on one string, and the closed forms under the prior and under the aligned model themselves."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pqtradeoff.exact import closed_forms
from pqtradeoff.models.fsa import Alignment, FiniteStateLM


def sample(model: FiniteStateLM, n: int, seed: int, max_length: int = 10_000,
           prompt_ids: Sequence[int] = ()) -> list[list[int]]:
    """`n` ancestral samples of `model` (token ids, EOS last when finished) by inverse CDF, in numpy:
    independent of the pipeline's torch sampler."""
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(model.probs, axis=1)
    states = np.full(n, model.state_after(prompt_ids))
    out: list[list[int]] = [[] for _ in range(n)]
    alive = np.arange(n)
    for _ in range(max_length):
        u = rng.random(len(alive))
        tokens = np.minimum((u[:, None] >= cdf[states[alive]]).sum(axis=1), model.vocab_size - 1)
        for row, tok in zip(alive, tokens, strict=True):
            out[row].append(int(tok))
        going = tokens != model.eos_token_id
        states[alive[going]] = model.next_state[states[alive[going]], tokens[going]]
        alive = alive[going]
        if not alive.size:
            break
    return out


def identity_residual(al: Alignment, token_ids: Sequence[int], prompt_ids: Sequence[int] = ()) -> float:
    """log p(y) + r(y)/beta - log p+(y) - log Z(x), which is 0 for every finished string.

    For an unfinished prefix the identity carries the backward value of its last state; it is added,
    so the residual is 0 up to rounding in both cases (and exactly 0 for an impossible string).
    """
    ids = list(token_ids)
    log_p, log_aligned = al.prior.log_prob(ids, prompt_ids), al.aligned.log_prob(ids, prompt_ids)
    if log_p == log_aligned == -math.inf:
        return 0.0  # an impossible string: both sides are -inf
    residual = log_p + al.reward.score(ids, prompt_ids) / al.beta - log_aligned - al.log_z_at(prompt_ids)
    if not ids or ids[-1] != al.prior.eos_token_id:
        residual += float(al.log_backward[al.prior.state_after(list(prompt_ids) + ids)])
    return residual


def prior_expectations(al: Alignment, *, prompt_ids: Sequence[int] = (),
                       max_length: int | None = None) -> closed_forms.ExactResult:
    """Expectations under the prior p itself."""
    return closed_forms.law_expectations(al, al.prior.log_probs, "prior", None, prompt_ids, max_length)


def aligned_expectations(al: Alignment, *, prompt_ids: Sequence[int] = (),
                         max_length: int | None = None) -> closed_forms.ExactResult:
    """Expectations under the aligned model p+ (ancestral sampling at temperature 1)."""
    return closed_forms.law_expectations(al, al.aligned.log_probs, "aligned", None, prompt_ids, max_length)


def bounded_prior(n_words: int = 3, depth: int = 4, seed: int = 0) -> FiniteStateLM:
    """States (position, last word); EOS has probability 1 at position `depth`."""
    rng = np.random.default_rng(seed)
    states = [(0, -1)] + [(i, w) for i in range(1, depth + 1) for w in range(n_words)]
    index = {st: k for k, st in enumerate(states)}
    next_state = np.zeros((len(states), n_words + 1), dtype=np.int64)
    probs = np.zeros((len(states), n_words + 1))
    for k, (i, _) in enumerate(states):
        if i == depth:
            next_state[k, :n_words] = k
            probs[k, n_words] = 1.0
            continue
        next_state[k, :n_words] = [index[(i + 1, w)] for w in range(n_words)]
        probs[k] = rng.dirichlet(np.full(n_words + 1, 0.8))
    with np.errstate(divide="ignore"):
        return FiniteStateLM([f"w{i}" for i in range(n_words)], next_state, np.log(probs))
