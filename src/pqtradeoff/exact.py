"""Closed forms for finite-state language models: normalizers, expected counts and expectations.

Everything here is linear algebra over the automaton's states, in float64. A *weighted automaton* has, for
each state s and symbol v, a weight W(s, v) >= 0 and (for v != EOS) a next state; the weight of a complete
string (ending with EOS) is the product of its transition weights. Three facts carry the module:

- backward values b(s) = W(s, EOS) + sum_v W(s, v) b(next(s, v)) solve (I - Q) b = c, where
  Q[s, s'] = sum of W(s, v) over the words v leading to s' and c = W(:, EOS); Z = b(start). The sum over all
  strings is finite exactly when the spectral radius of Q (over the states that matter) is below 1.
- forward values a = e_start^T (I - Q)^{-1} are the expected visits (for a normalized automaton), so the
  expected number of uses of transition (s, v) is a(s) W(s, v) b(next(s, v)) / Z.
- any transition-additive quantity f(y) = sum_t f(s_t, y_t) then has E[f] = sum_{s,v} counts(s, v) f(s, v);
  the entropy is log Z - E[log W].

On top of that, `aligned_expectations`, `local_expectations`, `global_expectations` and
`imh_target_expectations` give the quantities the paper's plots need (E[log p], E[r], E[log p+], H, length)
for the aligned model, the locally normalized adapted model q_gamma, the globally normalized adaptor
p_gamma, and the target of the IMH correction. A distribution that does not normalize is reported as such
(`ExactResult.normalizes` False with a message), never as a number. With `max_length` every distribution is
conditioned on complete strings of at most `max_length` tokens (EOS included), which always normalizes.
For IMH targets, `ExactResult.ess_fraction` is the exact importance-sampling efficiency of the proposals
(its second moment is one more weighted automaton), which says whether a Monte Carlo correction can work.

Convergence needs both an LU solve (I - Q) x = 1 with x >= 1 (an M-matrix test) and a spectral radius below
1 (dense eigenvalues up to DENSE_EIGEN_MAX states, ARPACK above); the radius is reported in every message.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.linalg
from scipy.special import logsumexp

from pqtradeoff.errors import PQError

if TYPE_CHECKING:
    from pqtradeoff.adaptors import Adaptor
    from pqtradeoff.models.fsa import Alignment, FiniteStateLM

#: A spectral radius at or above 1 - RADIUS_TOL counts as "does not normalize": the sums are then
#: numerically indistinguishable from divergent ones.
RADIUS_TOL = 1e-9


# ------------------------------------------------------------------------------------- weighted automata
@dataclass(frozen=True)
class WeightedAutomaton:
    """Transition weights W(s, v) = exp(log_weights[s, v]) over a deterministic state graph.

    `next_state[s, v]` is the state after symbol v (ignored in the EOS column); -inf log-weights are
    impossible transitions.
    """

    next_state: np.ndarray  # [S, V] int
    log_weights: np.ndarray  # [S, V] float64
    eos: int

    @property
    def n_states(self) -> int:
        return self.log_weights.shape[0]

    def words(self) -> np.ndarray:
        """Column indices of the non-EOS symbols."""
        return np.array([v for v in range(self.log_weights.shape[1]) if v != self.eos], dtype=np.int64)


def transition_matrix(wa: WeightedAutomaton) -> np.ndarray:
    """Q[s, s'] = sum of W(s, v) over the words v with next(s, v) = s' (float64, [S, S])."""
    words = wa.words()
    n = wa.n_states
    q = np.zeros((n, n))
    rows = np.repeat(np.arange(n), len(words))
    cols = wa.next_state[:, words].reshape(-1)
    np.add.at(q, (rows, cols), np.exp(wa.log_weights[:, words]).reshape(-1))
    return q


#: Above this many states the spectral radius is found by ARPACK (a few matrix products) instead of a full
#: eigendecomposition, which takes seconds at 1000 states.
DENSE_EIGEN_MAX = 400


def spectral_radius(q: np.ndarray) -> float:
    """Largest |eigenvalue| of a square matrix (0 for an empty one)."""
    if q.size == 0:
        return 0.0
    if q.shape[0] <= DENSE_EIGEN_MAX:
        return float(np.max(np.abs(np.linalg.eigvals(q))))
    import scipy.sparse.linalg

    try:
        return float(np.abs(scipy.sparse.linalg.eigs(q, k=1, which="LM", return_eigenvectors=False)[0]))
    except scipy.sparse.linalg.ArpackNoConvergence:
        return float(np.max(np.abs(np.linalg.eigvals(q))))


def _neumann_solve(q: np.ndarray) -> tuple[Any, bool]:
    """LU of I - Q and whether sum_k Q^k converges, for a nonnegative Q.

    Q has spectral radius < 1 exactly when (I - Q) x = 1 has a solution x >= 1 (then Qx = x - 1 < x, and
    the Collatz-Wielandt bound gives rho <= 1 - 1/max x); max x >= 1/RADIUS_TOL counts as divergent.
    The LU is reused for the backward values.
    """
    n = q.shape[0]
    if n == 0:
        return None, True
    try:
        with np.errstate(all="ignore"):
            lu = scipy.linalg.lu_factor(np.eye(n) - q, check_finite=True)
            x = scipy.linalg.lu_solve(lu, np.ones(n))
    except (ValueError, scipy.linalg.LinAlgError):
        return None, False
    ok = bool(np.all(np.isfinite(x)) and np.all(x >= 1.0 - 1e-9) and np.max(x) < 1.0 / RADIUS_TOL)
    return lu, ok


def _closure(adjacency: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """States reachable from the boolean `seeds` along `adjacency[s, s']` (seeds included)."""
    seen = seeds.copy()
    frontier = seeds.copy()
    while frontier.any():
        new = adjacency[frontier].any(axis=0) & ~seen
        seen |= new
        frontier = new
    return seen


def live_states(wa: WeightedAutomaton, start: int | None = None) -> np.ndarray:
    """States that can finish a string with positive weight (and, given `start`, are reachable from it)."""
    edges = transition_matrix(wa) > 0
    alive = _closure(edges.T, np.isfinite(wa.log_weights[:, wa.eos]))
    if start is not None:
        seed = np.zeros(wa.n_states, dtype=bool)
        seed[start] = True
        alive &= _closure(edges, seed)
    return alive


@dataclass(frozen=True)
class Backward:
    """Backward values log b(s) (-inf where no string can finish), and whether they are finite."""

    log_backward: np.ndarray  # [S]
    spectral_radius: float
    normalizes: bool
    message: str


def backward(wa: WeightedAutomaton, start: int | None = None) -> Backward:
    """Solve (I - Q) b = c over the live states (see `live_states`); b(s) = total weight of strings from s."""
    live = live_states(wa, start)
    log_b = np.full(wa.n_states, -np.inf)
    if not live.any():
        return Backward(log_b, 0.0, False, "does not normalize: no complete string has positive weight")
    q = transition_matrix(wa)[np.ix_(live, live)]
    lu, converges = _neumann_solve(q)
    rho = spectral_radius(q)
    if not converges or rho >= 1.0 - RADIUS_TOL:
        return Backward(log_b, rho, False, _divergence_message(rho))
    with np.errstate(all="ignore"):
        b = scipy.linalg.lu_solve(lu, np.exp(wa.log_weights[live, wa.eos]))
    if not np.all(np.isfinite(b)) or np.any(b <= 0):
        return Backward(log_b, rho, False, "does not normalize: the backward values are not finite and positive")
    log_b[live] = np.log(b)
    return Backward(log_b, rho, True, "")


def _divergence_message(rho: float) -> str:
    return (f"does not normalize: the sum over strings diverges (spectral radius {rho:.6g} >= 1); "
            "give a max_length to condition on bounded strings")


def locally_normalize(wa: WeightedAutomaton, log_backward: np.ndarray) -> np.ndarray:
    """log q(v | s) = log W(s, v) + log b(next) - log b(s): the locally normalized automaton with the same
    string distribution. Rows of states with b(s) = 0 are all -inf (no string passes through them)."""
    log_next = np.where(np.arange(wa.log_weights.shape[1]) == wa.eos, 0.0, log_backward[wa.next_state])
    with np.errstate(invalid="ignore"):
        out = wa.log_weights + log_next - log_backward[:, None]
    out[~np.isfinite(log_backward)] = -np.inf
    return np.where(np.isnan(out), -np.inf, out)


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
    lu, _ = _neumann_solve(transition_matrix(wa)[np.ix_(live, live)])
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
                      f"does not normalize: no complete string of at most {max_length} tokens has positive weight")
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

    support: np.ndarray  # bool: tokens the adaptor keeps (decided on the float32 logits, as sampling does)
    log_weights: np.ndarray  # log p(v|s) / T on the support, -inf elsewhere: the global adaptor's weights
    log_z: np.ndarray  # [S] logsumexp of log_weights: log Z_t at each state
    log_probs: np.ndarray  # log_weights - log_z: the locally normalized adapted distribution q_gamma


def adapted_tables(model: FiniteStateLM, adaptor: Adaptor | str) -> AdaptedTables:
    """Apply `adaptor` to each state's distribution of `model`.

    The kept support comes from `Adaptor.support` on the same float32 logits the pipeline samples from, so
    truncation decisions match sampling exactly; the weights are then formed in float64.
    """
    from pqtradeoff.adaptors import parse

    return _adapted_tables(model, parse(adaptor))


@functools.lru_cache(maxsize=256)
def _adapted_tables(model: FiniteStateLM, adaptor: Adaptor) -> AdaptedTables:
    """Cached: the local, global and IMH computations of one configuration share the same tables."""
    import torch

    logits = torch.from_numpy(model.log_probs.astype(np.float32))
    support = adaptor.support(logits).numpy()
    log_weights = np.where(support, model.log_probs / adaptor.temperature, -np.inf)
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

    def require(self) -> ExactResult:
        """Return self, or raise PQError with the reason the distribution does not normalize."""
        if not self.normalizes:
            name = self.distribution + (f" adaptor={self.adaptor}" if self.adaptor else "")
            raise PQError(f"{name}: {self.message}")
        return self


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


def _result(
    alignment: Alignment,
    log_weights: np.ndarray,
    distribution: str,
    adaptor: Adaptor | None,
    prompt_ids: Sequence[int],
    max_length: int | None,
    log_step_z: np.ndarray | None = None,
    log_proposal: np.ndarray | None = None,
) -> ExactResult:
    model = alignment.aligned
    wa = WeightedAutomaton(model.next_state, log_weights, model.eos_token_id)
    start = model.state_after(prompt_ids)
    tables = {
        "log_prior": alignment.prior.log_probs,
        "reward": alignment.reward.phi,
        "log_aligned": model.log_probs,
    }
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
    )


def prior_expectations(
    alignment: Alignment, *, prompt_ids: Sequence[int] = (), max_length: int | None = None
) -> ExactResult:
    """Expectations under the prior p itself."""
    return _result(alignment, alignment.prior.log_probs, "prior", None, prompt_ids, max_length)


def aligned_expectations(
    alignment: Alignment, *, prompt_ids: Sequence[int] = (), max_length: int | None = None
) -> ExactResult:
    """(a) Expectations under the aligned model p+ (ancestral sampling at temperature 1)."""
    return _result(alignment, alignment.aligned.log_probs, "aligned", None, prompt_ids, max_length)


def local_expectations(
    alignment: Alignment, adaptor: Adaptor | str, *, prompt_ids: Sequence[int] = (), max_length: int | None = None
) -> ExactResult:
    """(b) Expectations under q_gamma, the adaptor applied to p+ and renormalized at every step (what
    `generate` samples). It may fail to terminate (e.g. a truncation that removes EOS everywhere)."""
    from pqtradeoff.adaptors import parse

    adaptor = parse(adaptor)
    t = adapted_tables(alignment.aligned, adaptor)
    return _result(alignment, t.log_probs, "local", adaptor, prompt_ids, max_length, t.log_z)


def global_expectations(
    alignment: Alignment, adaptor: Adaptor | str, *, prompt_ids: Sequence[int] = (), max_length: int | None = None
) -> ExactResult:
    """(c) Expectations under p_gamma(y) proportional to prod_t gamma~(y_t | s_t), the globally normalized
    adaptor; `log_normalizer` is log Z_gamma. Reports `normalizes=False` where the sum diverges.
    `ess_fraction` tells how well proposals from q_gamma (the pool `generate` makes) cover p_gamma."""
    from pqtradeoff.adaptors import parse

    adaptor = parse(adaptor)
    t = adapted_tables(alignment.aligned, adaptor)
    return _result(alignment, t.log_weights, "global", adaptor, prompt_ids, max_length, t.log_z, t.log_probs)


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
    from pqtradeoff.adaptors import parse

    adaptor = parse(adaptor)
    if target == "global":
        return global_expectations(alignment, adaptor, prompt_ids=prompt_ids, max_length=max_length)
    if target != "aligned":
        raise PQError(f"target={target!r} is not one of {', '.join(IMH_TARGETS)}")
    t = adapted_tables(alignment.aligned, adaptor)
    log_weights = np.where(t.support, alignment.aligned.log_probs, -np.inf)
    return _result(alignment, log_weights, "imh-aligned", adaptor, prompt_ids, max_length, t.log_z, t.log_probs)
