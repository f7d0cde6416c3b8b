"""Best-of-N and soft best-of-N: draw N candidates from a base sampler, keep one by its reward.

- best-of-N (Beirami et al., arXiv 2401.01879): keep the candidate with the highest reward (ties: uniformly
  among the tied candidates, so a tied string is kept in proportion to its probability);
- soft best-of-N with temperature lambda (Verdun et al., arXiv 2505.03156): keep candidate i with probability
  exp(r_i / lambda) / sum_j exp(r_j / lambda); lambda -> 0 is best-of-N, lambda -> inf the base sampler.

`choose` picks the kept candidate of many rows at once from one uniform per row (the row's own stream), so
a row's choice depends on its candidates alone. `finite_law` is the exact law of the kept string when the
base sampler is a finite distribution (the toy's), the oracle the Monte Carlo is checked against:

    best-of-N:  pi(y) = p(y) / P(R = r_y) * (F(r_y)^N - F(r_y-)^N),  F the base law's reward CDF;
    soft:       pi(y) = N p(y) w_y E[1 / (w_y + S)],  w = exp(r / lambda), S a sum of N - 1 iid w's
              = N p(y) w_y int_0^inf exp(-t w_y) M(t)^(N-1) dt,  M(t) = E[exp(-t w)] (1/x = int e^(-tx) dt),

the integral by the trapezoid rule on a logarithmic grid in t (smooth and decaying at both ends: its error is
below 1e-10 here; tests compare it with enumeration over all N-tuples).

KL(best-of-N || base) is at most log N - (N - 1)/N (`kl_bound`), which is the KL only when no outcome has
mass. `kl_estimate` is the KL for the case Beirami et al.'s proposed estimator addresses, one outcome with
mass eps (derived here, not copied: the KL of best-of-N over a base law made of the best outcome, mass eps,
and a continuum below it),

    (1 - eps)^N (log N + (N - 1) log(1 - eps) - (N - 1)/N) + (1 - (1 - eps)^N) log((1 - (1 - eps)^N) / eps),

exact for that law (the continuum's part is int_0^(1-eps) N u^(N-1) log(N u^(N-1)) du), -> the bound as
eps -> 0 and -> 0 as eps -> 1. numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pqtradeoff.errors import PQError


@dataclass(frozen=True)
class Selection:
    """How the kept candidate is chosen among `n`: the best (`soft` None) or softly, temperature `soft`."""

    n: int
    soft: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise PQError(f"best_of_n={self.n!r} is out of range: need an integer best_of_n >= 1")
        if self.soft is not None and (isinstance(self.soft, bool) or not isinstance(self.soft, (int, float))
                                      or not math.isfinite(self.soft) or self.soft <= 0):
            raise PQError(f"lambda={self.soft!r} is out of range: soft best-of-N needs a finite lambda > 0")

    def __str__(self) -> str:
        return f"best_of_n={self.n}" if self.soft is None else f"soft_best_of_n={self.n},lambda={self.soft!r}"

    def choose(self, rewards: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        """The kept candidate's index per row, from rewards [rows, n] and one uniform in [0, 1) per row."""
        rewards = np.asarray(rewards, dtype=np.float64)
        u = np.asarray(uniforms, dtype=np.float64)
        if rewards.ndim != 2 or rewards.shape[1] != self.n:
            raise PQError(f"{self}: need rewards of shape [rows, {self.n}], got {rewards.shape}")
        if not np.isfinite(rewards).all():
            raise PQError(f"{self}: a candidate's reward is not finite; cannot rank it")
        if self.soft is None:
            weights = (rewards == rewards.max(axis=1, keepdims=True)).astype(np.float64)  # ties: uniform
        else:
            weights = np.exp((rewards - rewards.max(axis=1, keepdims=True)) / self.soft)
        cdf = np.cumsum(weights, axis=1)
        picked = (cdf <= (u * cdf[:, -1])[:, None]).sum(axis=1)
        return np.minimum(picked, self.n - 1)


def kl_bound(n: int) -> float:
    """log N - (N - 1)/N: an upper bound on KL(best-of-N || base) (Beirami et al., Theorem 1)."""
    return math.log(n) - (n - 1) / n


def kl_estimate(n: int, eps: np.ndarray | float) -> np.ndarray:
    """Beirami et al.'s estimate of KL(best-of-N || base) when the best outcome has base mass `eps` (see the
    module): elementwise over an array of eps in (0, 1]."""
    e = np.clip(np.asarray(eps, dtype=np.float64), 1e-300, 1.0)
    log_rest = np.log1p(-np.minimum(e, 1 - 1e-16))  # log(1 - eps), no catastrophic rounding
    hit = -np.expm1(n * log_rest)  # 1 - (1 - eps)^N
    body = np.exp(n * log_rest) * (math.log(n) + (n - 1) * log_rest - (n - 1) / n)
    return np.maximum(body + hit * (np.log(hit) - np.log(e)), 0.0)


#: Largest (max r - min r) / lambda the soft closed form takes: exp(-600) is still a normal float64.
MAX_SOFT_SPREAD = 600.0


def finite_law(probs: np.ndarray, rewards: np.ndarray, selection: Selection, grid: int = 6000) -> np.ndarray:
    """The exact law of the kept string when the N candidates are iid draws from `probs` (see the module)."""
    p = np.asarray(probs, dtype=np.float64)
    r = np.asarray(rewards, dtype=np.float64)
    n = selection.n
    if selection.soft is None:
        levels, inverse = np.unique(r, return_inverse=True)
        mass = np.bincount(inverse, weights=p, minlength=len(levels))
        cdf = np.minimum(np.cumsum(mass), 1.0)
        below = np.concatenate([[0.0], cdf[:-1]])
        level_prob = cdf ** n - below ** n
        return p / mass[inverse] * level_prob[inverse]
    spread = float(r[p > 0].max() - r[p > 0].min()) / selection.soft
    if spread > MAX_SOFT_SPREAD:
        raise PQError(f"lambda={selection.soft!r} is too small for the finite closed form: the rewards span "
                      f"{spread:.3g} x lambda, and exp of that overflows (need <= {MAX_SOFT_SPREAD}); use "
                      "best-of-N, its lambda -> 0 limit, or a larger lambda")
    w = np.exp((r - r.max()) / selection.soft)  # in (0, 1]; the law does not change when w is scaled
    w_min = float(w[p > 0].min())
    # t from T0, far below 1 (the integrand is 1 + O(t) there: [0, T0] adds T0), to far past 1/w_min (where
    # exp(-t w) has decayed below e^-60); in log t the integrand is smooth: a step of 1/20 is plenty
    head = 1e-12
    top = math.log(60.0 / w_min)
    log_t = np.linspace(math.log(head), top, max(grid, int((top - math.log(head)) * 20)))
    t = np.exp(log_t)
    m = np.zeros_like(t)
    for rows in np.array_split(np.arange(len(w)), max(1, len(w) // 256)):
        m += p[rows] @ np.exp(-np.outer(w[rows], t))
    weight = m ** (n - 1) * t  # dt = t d(log t)
    integral = np.empty(len(w))
    for rows in np.array_split(np.arange(len(w)), max(1, len(w) // 256)):
        integral[rows] = np.trapezoid(np.exp(-np.outer(w[rows], t)) * weight, log_t, axis=1) + head
    return n * p * w * integral


def finite_summary(probs: np.ndarray, rewards: np.ndarray, selection: Selection) -> dict[str, float]:
    """Exact mean reward and KL(pi || p) of the kept string, with best-of-N's analytic bound
    log N - (N - 1)/N on that KL (Beirami et al.: an upper bound, tight only without ties) and their estimate
    from the best outcome's mass (best-of-N only)."""
    pi = finite_law(probs, rewards, selection)
    p = np.asarray(probs, dtype=np.float64)
    r = np.asarray(rewards, dtype=np.float64)
    kept = pi > 0
    return {
        "exact_mean_reward": float(pi @ r),
        "exact_kl": float(np.sum(pi[kept] * (np.log(pi[kept]) - np.log(p[kept])))),
        "kl_bound": kl_bound(selection.n),
        "kl_estimate": (float(kl_estimate(selection.n, p[r == r[p > 0].max()].sum()))
                        if selection.soft is None else None),
        "exact_mass": float(pi.sum()),
    }
