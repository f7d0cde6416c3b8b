"""Closed forms for finite-state language models: normalizers, expected counts and expectations.

Everything here is linear algebra over the automaton's states, in float64, on top of the weighted-automaton
algebra of `pqtradeoff.models.automata` (backward values b, normalizer Z = b(start), convergence checks):

- forward values a = e_start^T (I - Q)^{-1} are the expected visits (for a normalized automaton), so the
  expected number of uses of transition (s, v) is a(s) W(s, v) b(next(s, v)) / Z.
- any transition-additive quantity f(y) = sum_t f(s_t, y_t) then has E[f] = sum_{s,v} counts(s, v) f(s, v);
  the entropy is log Z - E[log W].

On top of that, `law_expectations` gives the quantities the paper's plots need (E[log p], E[r], E[log p+], H,
length) under the law with given per-step log weights, and `local_expectations`, `global_expectations` and
`imh_target_expectations` apply it to the locally normalized adapted model q_gamma, the globally normalized
adaptor p_gamma, and the target of the IMH correction (the aligned model itself is q_gamma for `ancestral`).
A distribution that does not normalize is reported as such (`ExactResult.normalizes` False with a message),
never as a number. With `max_length` every distribution is
conditioned on complete strings of at most `max_length` tokens (EOS included), which always normalizes.
For IMH targets, `ExactResult.ess_fraction` is the exact importance-sampling efficiency of the proposals
(its second moment is one more weighted automaton), which says whether a Monte Carlo correction can work.

This module reads the models (`models.fsa`); the models never read it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.linalg
from scipy.special import logsumexp

from pqtradeoff.errors import PQError
from pqtradeoff.models.automata import WeightedAutomaton, backward, neumann_solve, transition_matrix
from pqtradeoff.sampling.adaptors import parse

if TYPE_CHECKING:
    from pqtradeoff.models.fsa import Alignment, FiniteStateLM
    from pqtradeoff.sampling.adaptors import Adaptor


# ------------------------------------------------------------------------------------- expected counts
@dataclass(frozen=True)
class Counts:
    """Expected transition counts of the normalized string distribution W(y)/Z, or why there is none."""

    normalizes: bool
    log_normalizer: float | None
    counts: np.ndarray | None  # [S, V] expected number of uses of transition (s, v) per string
    spectral_radius: float | None  # None with max_length (not needed there)
    message: str


def expected_counts(wa: WeightedAutomaton, start: int, max_length: int | None = None) -> Counts:
    """Forward-backward over states: counts(s, v) = a(s) W(s, v) b(next(s, v)) / Z.

    With `max_length` the distribution is conditioned on complete strings of at most `max_length` tokens
    (EOS included), computed by the time-unrolled recursions in log space.
    """
    if max_length is not None:
        if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < 1:
            raise PQError(f"max_length={max_length!r} is out of range: need an integer >= 1 (or None)")
        return _bounded_counts(wa, start, int(max_length))
    bw = backward(wa, start)
    if not bw.normalizes:
        return Counts(False, None, None, bw.spectral_radius, bw.message)
    live = np.isfinite(bw.log_backward)
    b = np.exp(bw.log_backward[live])
    lu, _ = neumann_solve(transition_matrix(wa)[np.ix_(live, live)])
    e = (np.flatnonzero(live) == start).astype(np.float64)
    a = np.zeros(wa.n_states)
    a[live] = scipy.linalg.lu_solve(lu, e, trans=1)
    b_full = np.zeros(wa.n_states)
    b_full[live] = b
    b_next = np.where(np.arange(wa.log_weights.shape[1]) == wa.eos, 1.0, b_full[wa.next_state])
    z = b_full[start]
    counts = a[:, None] * np.exp(wa.log_weights) * b_next / z
    return Counts(True, float(np.log(z)), np.clip(counts, 0.0, None), bw.spectral_radius, "")


def _bounded_counts(wa: WeightedAutomaton, start: int, max_length: int) -> Counts:
    """Counts for strings of at most `max_length` tokens: beta_k(s) = log weight of finishing from s within
    k tokens, alpha_t(s) = log weight of the length-t prefixes that end in s."""
    n, v = wa.log_weights.shape
    is_eos = np.arange(v) == wa.eos
    nxt = np.where(is_eos, 0, wa.next_state)
    lw = wa.log_weights
    betas = [np.full(n, -np.inf)]
    for _ in range(max_length):
        after = np.where(is_eos, 0.0, betas[-1][nxt])
        betas.append(logsumexp(lw + after, axis=1))
    log_z = betas[max_length][start]
    if not np.isfinite(log_z):
        return Counts(False, None, None, None,
                      f"does not normalize: no complete string of at most {max_length} tokens has positive "
                      "weight")
    alpha = np.full(n, -np.inf)
    alpha[start] = 0.0
    counts = np.zeros((n, v))
    targets = nxt[:, ~is_eos].reshape(-1)
    for t in range(max_length):
        after = np.where(is_eos, 0.0, betas[max_length - t - 1][nxt])
        counts += np.exp(alpha[:, None] + lw + after - log_z)
        alpha = _scatter_logsumexp((alpha[:, None] + lw)[:, ~is_eos].reshape(-1), targets, n)
    return Counts(True, float(log_z), counts, None, "")


def _scatter_logsumexp(values: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    """out[j] = logsumexp(values[index == j]) (-inf where empty), with one max shift for stability."""
    out = np.full(n, -np.inf)
    if not np.isfinite(values).any():
        return out
    shift = np.max(values[np.isfinite(values)])
    total = np.zeros(n)
    np.add.at(total, index, np.exp(values - shift))
    with np.errstate(divide="ignore"):
        return np.log(total) + shift


def expectation(counts: np.ndarray, table: np.ndarray) -> float:
    """E[sum_t f(s_t, y_t)] = sum counts * f, with 0 * (-inf) taken as 0 (unused transitions)."""
    with np.errstate(invalid="ignore"):
        terms = np.where(counts > 0, counts * table, 0.0)
    return float(np.sum(terms))


def importance_ess_fraction(
    next_state: np.ndarray, log_target: np.ndarray, log_proposal: np.ndarray, eos: int, start: int,
    max_length: int | None = None,
) -> float | None:
    """(sum_y A(y))^2 / (Q sum_y A(y)^2 / q(y)) for target weights A and proposal q, both products of
    per-transition factors, hence weighted automata: A^2/q has weights exp(2 log A - log q). Q is q's own
    normalizer (1, or its mass on strings of at most max_length tokens). None when the target has no
    normalizer; 0.0 when the second moment diverges."""
    def log_norm(table: np.ndarray) -> float | None:
        counts = expected_counts(WeightedAutomaton(next_state, table, eos), start, max_length)
        return counts.log_normalizer if counts.normalizes else None

    log_a = log_norm(log_target)
    if log_a is None:
        return None
    with np.errstate(invalid="ignore"):
        second = np.where(np.isfinite(log_target), 2 * log_target - log_proposal, -np.inf)
    if np.any(second == np.inf):  # the target puts weight where the proposal cannot go
        return 0.0
    log_second, log_q = log_norm(second), log_norm(log_proposal)
    if log_second is None or log_q is None:
        return 0.0
    return float(min(1.0, np.exp(2 * log_a - log_second - log_q)))


# ----------------------------------------------------------------------------------------- adaptors
@dataclass(frozen=True)
class AdaptedTables:
    """An adaptor applied to every state's next-symbol distribution of a model (all [S, V] float64)."""

    support: np.ndarray  # bool: tokens the adaptor keeps (decided on the logits sampling sees)
    log_weights: np.ndarray  # log p(v|s) / T on the support, -inf elsewhere: the global adaptor's weights
    log_z: np.ndarray  # [S] logsumexp of log_weights: log Z_t at each state
    log_probs: np.ndarray  # log_weights - log_z: the locally normalized adapted distribution q_gamma


def adapted_tables(model: FiniteStateLM, adaptor: Adaptor | str, prior: FiniteStateLM | None = None
                   ) -> AdaptedTables:
    """Apply `adaptor` to each state's distribution of `model` (with `dera`: to the unnormalized mixture
    m = lambda log p_model + (1 - lambda) log p_prior, `prior` on the same states).

    The kept support comes from `Adaptor.support` on the same float64 logits the pipeline samples from, so
    truncation decisions match sampling exactly; the weights are formed in float64 too.
    """
    return _adapted_tables(model, parse(adaptor), prior)


def realigned_log_weights(model: FiniteStateLM, prior: FiniteStateLM | None, weight: float) -> np.ndarray:
    """m = lambda log p+ + (1 - lambda) log p per state [S, V], not renormalized (what `models.realign`
    decodes; -inf where either model is impossible, as there)."""
    if weight == 1.0:
        return model.log_probs
    if prior is None or not prior.same_structure(model):
        raise PQError("dera's closed forms need the prior on the aligned model's states (fsa.align's prior)")
    if weight == 0.0:
        return prior.log_probs
    both = np.isfinite(model.log_probs) & np.isfinite(prior.log_probs)
    mixed = (weight * np.where(both, model.log_probs, 0.0)
             + (1.0 - weight) * np.where(both, prior.log_probs, 0.0))
    return np.where(both, mixed, -np.inf)


@functools.lru_cache(maxsize=256)
def _adapted_tables(model: FiniteStateLM, adaptor: Adaptor, prior: FiniteStateLM | None) -> AdaptedTables:
    """Cached: the local, global and IMH computations of one configuration share the same tables."""
    import torch  # lazy: torch

    # float64, exactly what `FiniteStateLM.start` gives, or the realigned mixture (a copy: read-only)
    base = model.log_probs if adaptor.dera is None else realigned_log_weights(model, prior, adaptor.dera)
    logits = torch.tensor(base)
    support = adaptor.support(logits).numpy()
    log_weights = np.where(support, base / adaptor.temperature, -np.inf)
    log_z = logsumexp(log_weights, axis=1)
    arrays = (support, log_weights, log_z, log_weights - log_z[:, None])
    for array in arrays:
        array.setflags(write=False)
    return AdaptedTables(*arrays)


# ----------------------------------------------------------------------------------------- expectations
@dataclass(frozen=True)
class ExactResult:
    """Exact expectations under one string distribution, or the reason it has none.

    Means are per string (sums over its tokens, EOS included). `log_normalizer` is log of the sum of the
    automaton weights (0 for locally normalized distributions, log Z_gamma for the global adaptor);
    `mean_log_weight` is E[sum_t log Z_t], the global-target IMH log weight, where an adaptor is involved.
    `ess_fraction` (IMH targets only) is the importance-sampling efficiency of proposals from q_gamma for
    this target, (E_q[w])^2 / E_q[w^2] in (0, 1]; 0.0 when E_q[w^2] is infinite (the weights have infinite
    variance and Monte Carlo corrections converge slowly, if at all). Fields are None (never NaN) when the
    distribution does not normalize.
    """

    distribution: str
    adaptor: str | None
    normalizes: bool
    message: str
    spectral_radius: float | None = None
    max_length: int | None = None
    log_normalizer: float | None = None
    mean_log_prior: float | None = None
    mean_reward: float | None = None
    mean_log_aligned: float | None = None
    entropy: float | None = None
    mean_length: float | None = None
    mean_log_weight: float | None = None
    ess_fraction: float | None = None
    mean_log_q: float | None = None  # E[sum_t log q(y_t)] under this law, for local laws (the KL axis)

    @property
    def kl_aligned(self) -> float | None:
        """KL(q || p+) = E_q[log q - log p+] for a locally normalized law q (None otherwise)."""
        if self.mean_log_q is None or self.mean_log_aligned is None:
            return None
        return self.mean_log_q - self.mean_log_aligned


def expectations(
    wa: WeightedAutomaton, start: int, tables: Mapping[str, np.ndarray], max_length: int | None = None
) -> tuple[Counts, dict[str, float]]:
    """E[sum_t f] for each named table f [S, V], plus `entropy` and `length`, under W(y)/Z from `start`."""
    counts = expected_counts(wa, start, max_length)
    if not counts.normalizes:
        return counts, {}
    values = {name: expectation(counts.counts, table) for name, table in tables.items()}
    values["entropy"] = counts.log_normalizer - expectation(counts.counts, wa.log_weights)
    values["length"] = float(counts.counts.sum())
    return counts, values


def law_expectations(
    alignment: Alignment,
    log_weights: np.ndarray,
    distribution: str,
    adaptor: Adaptor | None,
    prompt_ids: Sequence[int],
    max_length: int | None,
    log_step_z: np.ndarray | None = None,
    log_proposal: np.ndarray | None = None,
    log_q: np.ndarray | None = None,
) -> ExactResult:
    """Expectations under the law W(y)/Z with per-step log weights `log_weights` [S, V] on the aligned model's
    automaton, named `distribution`. `log_step_z` (log Z_t per state) adds E[sum_t log Z_t]; `log_proposal`
    adds the importance-sampling efficiency of proposals from that locally normalized model; `log_q` adds
    E[sum_t log q] (the law's own log-probabilities, for KL(q || p+))."""
    model = alignment.aligned
    wa = WeightedAutomaton(model.next_state, log_weights, model.eos_token_id)
    start = model.state_after(prompt_ids)
    tables = {
        "log_prior": alignment.prior.log_probs,
        "reward": alignment.reward.phi,
        "log_aligned": model.log_probs,
    }
    if log_q is not None:
        tables["log_q"] = log_q
    if log_step_z is not None:
        tables["log_weight"] = np.broadcast_to(log_step_z[:, None], log_weights.shape)
    counts, values = expectations(wa, start, tables, max_length)
    name = str(adaptor) if adaptor is not None else None
    if not counts.normalizes:
        return ExactResult(distribution, name, False, counts.message, counts.spectral_radius, max_length)
    ess = None
    if log_proposal is not None:
        ess = importance_ess_fraction(model.next_state, log_weights, log_proposal, model.eos_token_id, start,
                                      max_length)
    return ExactResult(
        distribution, name, True, "", counts.spectral_radius, max_length,
        log_normalizer=counts.log_normalizer,
        mean_log_prior=values["log_prior"],
        mean_reward=values["reward"],
        mean_log_aligned=values["log_aligned"],
        entropy=values["entropy"],
        mean_length=values["length"],
        mean_log_weight=values.get("log_weight"),
        ess_fraction=ess,
        mean_log_q=values.get("log_q"),
    )


def local_expectations(
    alignment: Alignment, adaptor: Adaptor | str, *, prompt_ids: Sequence[int] = (),
    max_length: int | None = None
) -> ExactResult:
    """(b) Expectations under q_gamma, the adaptor applied to p+ and renormalized at every step (what
    `generate` samples). It may fail to terminate (e.g. a truncation that removes EOS everywhere)."""
    adaptor = parse(adaptor)
    t = adapted_tables(alignment.aligned, adaptor, alignment.prior)
    return law_expectations(alignment, t.log_probs, "local", adaptor, prompt_ids, max_length, t.log_z,
                            log_q=t.log_probs)


def global_expectations(
    alignment: Alignment, adaptor: Adaptor | str, *, prompt_ids: Sequence[int] = (),
    max_length: int | None = None
) -> ExactResult:
    """(c) Expectations under p_gamma(y) proportional to prod_t gamma~(y_t | s_t), the globally normalized
    adaptor; `log_normalizer` is log Z_gamma. Reports `normalizes=False` where the sum diverges.
    `ess_fraction` tells how well proposals from q_gamma (the pool `generate` makes) cover p_gamma."""
    adaptor = parse(adaptor)
    t = adapted_tables(alignment.aligned, adaptor, alignment.prior)
    return law_expectations(alignment, t.log_weights, "global", adaptor, prompt_ids, max_length, t.log_z,
                            t.log_probs)


IMH_TARGETS = ("global", "aligned")


def imh_target_expectations(
    alignment: Alignment,
    adaptor: Adaptor | str,
    target: str = "global",
    *,
    prompt_ids: Sequence[int] = (),
    max_length: int | None = None,
) -> ExactResult:
    """Expectations under the law an IMH chain over proposals from q_gamma converges to.

    `target="global"`: p_gamma (the globally normalized adaptor). `target="aligned"`: p+ restricted to the
    strings q_gamma can propose (every token inside the adaptor's support) - p+ itself when the adaptor does
    not truncate - since the chain can only visit proposals.
    """
    adaptor = parse(adaptor)
    if target == "global":
        return global_expectations(alignment, adaptor, prompt_ids=prompt_ids, max_length=max_length)
    if target != "aligned":
        raise PQError(f"target={target!r} is not one of {', '.join(IMH_TARGETS)}")
    t = adapted_tables(alignment.aligned, adaptor, alignment.prior)
    log_weights = np.where(t.support, alignment.aligned.log_probs, -np.inf)
    return law_expectations(alignment, log_weights, "imh-aligned", adaptor, prompt_ids, max_length, t.log_z,
                            t.log_probs)
