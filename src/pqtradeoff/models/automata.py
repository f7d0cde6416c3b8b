"""The algebra of weighted automata: backward values, normalizers, local normalization.

A *weighted automaton* has, for each state s and symbol v, a weight W(s, v) >= 0 and (for v != EOS) a next
state; the weight of a complete string (ending with EOS) is the product of its transition weights. Backward
values b(s) = W(s, EOS) + sum_v W(s, v) b(next(s, v)) solve (I - Q) b = c, where Q[s, s'] = sum of W(s, v)
over the words v leading to s' and c = W(:, EOS); Z = b(start). The sum over all strings is finite exactly
when the spectral radius of Q (over the states that matter) is below 1.

Convergence needs both an LU solve (I - Q) x = 1 with x >= 1 (an M-matrix test) and a spectral radius below
1 (dense eigenvalues up to DENSE_EIGEN_MAX states, ARPACK above); the radius is reported in every message.

Both the finite-state backend (`models.fsa`: termination check, the exact aligned model) and the closed forms
(`exact`: expected counts and expectations) build on this module; it knows neither of them. numpy and scipy
only, float64 throughout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

#: A spectral radius at or above 1 - RADIUS_TOL counts as "does not normalize": the sums are then
#: numerically indistinguishable from divergent ones.
RADIUS_TOL = 1e-9


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

    try:
        return float(np.abs(scipy.sparse.linalg.eigs(q, k=1, which="LM", return_eigenvectors=False)[0]))
    except scipy.sparse.linalg.ArpackNoConvergence:
        return float(np.max(np.abs(np.linalg.eigvals(q))))


def neumann_solve(q: np.ndarray) -> tuple[Any, bool]:
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
    lu, converges = neumann_solve(q)
    rho = spectral_radius(q)
    if not converges or rho >= 1.0 - RADIUS_TOL:
        return Backward(log_b, rho, False, _divergence_message(rho))
    with np.errstate(all="ignore"):
        b = scipy.linalg.lu_solve(lu, np.exp(wa.log_weights[live, wa.eos]))
    if not np.all(np.isfinite(b)) or np.any(b <= 0):
        return Backward(log_b, rho, False,
                        "does not normalize: the backward values are not finite and positive")
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
