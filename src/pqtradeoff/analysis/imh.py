"""Independent Metropolis-Hastings (IMH) correction of a pool of sampled strings, in numpy only.

The strings of one adaptor configuration were drawn from the locally normalized adaptor q. The theory speaks
of a target pi (the globally normalized adaptor, or the aligned model). IMH turns draws from q into a Markov
chain whose long-run law is pi restricted to the pool: a proposal y' is drawn uniformly from the pool and
accepted over the current y with probability min(1, w(y')/w(y)), w = pi/q. On a finite pool this chain's
stationary law is the self-normalized importance weights wbar_i = w_i / sum_j w_j.

The chain is inherently sequential and runs as a plain loop over its pre-drawn randomness (`draw_proposals`:
proposals and Exp(1) variates E_t, log u_t = -E_t); a vectorized search over all steps measured no faster
(benchmarks/imh.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from pqtradeoff.errors import PQError

Target = Literal["global", "aligned", "none"]
TARGETS: tuple[str, ...] = get_args(Target)


# ------------------------------------------------------------------------------------------ importance
# weights
def log_importance_weights(
    target: str, log_weight: np.ndarray, logp_aligned: np.ndarray, logq: np.ndarray
) -> np.ndarray:
    """log w = log pi - log q for the chosen target (up to a constant, which IMH never needs).

    global: the globally normalized adaptor, log w = log_weight (sum over steps of log Z_t);
    aligned: the aligned model itself, log w = logp_aligned - logq (the authors' first code);
    none: no correction, log w = 0 (every proposal is accepted: the chain is plain resampling of the pool).
    """
    if target == "global":
        return np.asarray(log_weight, dtype=np.float64).copy()
    if target == "aligned":
        return np.asarray(logp_aligned, dtype=np.float64) - np.asarray(logq, dtype=np.float64)
    if target == "none":
        return np.zeros(len(np.asarray(logq)), dtype=np.float64)
    raise PQError(f"target={target!r} is unknown: use one of {', '.join(TARGETS)}")


def _checked(log_w: np.ndarray) -> np.ndarray:
    """Log weights as float64; NaN and +inf are refused (-inf, a zero weight, is fine)."""
    log_w = np.asarray(log_w, dtype=np.float64)
    bad = np.isnan(log_w) | (log_w == np.inf)
    if bad.any():
        raise PQError(f"log importance weights must be finite or -inf; got {float(log_w[bad][0])!r} at index "
                      f"{int(np.flatnonzero(bad)[0])}")
    return log_w


def normalized_weights(log_w: np.ndarray) -> np.ndarray:
    """Self-normalized importance weights wbar_i = w_i / sum_j w_j, computed stably in log space."""
    log_w = _checked(log_w)
    top = np.max(log_w)
    if not np.isfinite(top):
        raise PQError("every importance weight is zero (log weight -inf): the target gives the pool no mass")
    w = np.exp(log_w - top)
    return w / w.sum()


def importance_ess(log_w: np.ndarray) -> float:
    """Kish's effective sample size of the pool, (sum w)^2 / sum w^2 = 1 / sum wbar^2 (between 1 and n)."""
    wbar = normalized_weights(log_w)
    return float(1.0 / np.sum(wbar * wbar))


# ---------------------------------------------------------------------------------------------- random draws
def chain_seed(seed: int, key: str) -> np.random.SeedSequence:
    """A seed stream per (run seed, configuration): results never depend on the order configs are
    processed."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.SeedSequence([int(seed), *words])


@dataclass(frozen=True)
class Proposals:
    """The random draws of one chain: an initial state, then per step a proposed index and an Exp(1)
    variate."""

    start: int
    index: np.ndarray  # int64 [L-1]: proposed pool index at steps 1..L-1
    exp: np.ndarray  # float64 [L-1]: E_t, with log u_t = -E_t


def draw_proposals(log_w: np.ndarray, steps: int, rng: np.random.Generator) -> Proposals:
    """Draw a chain's randomness. The first state is uniform over the pool strings with nonzero weight."""
    if steps < 1:
        raise PQError(f"imh_steps={steps!r} is out of range: need at least 1 step")
    log_w = _checked(log_w)
    alive = np.flatnonzero(np.isfinite(log_w))
    if alive.size == 0:
        raise PQError("every importance weight is zero (log weight -inf): the chain has nowhere to start")
    start = int(alive[rng.integers(alive.size)])
    index = rng.integers(len(log_w), size=steps - 1)
    exp = rng.standard_exponential(steps - 1)
    return Proposals(start, index, exp)


# ------------------------------------------------------------------------------------------------- the chain
def imh_chain(log_w: np.ndarray, proposals: Proposals) -> np.ndarray:
    """The IMH chain's states (pool indices), L = len(proposals.index) + 1 of them.

    Step t proposes j_t and accepts iff log w(j_t) + E_t >= log w(current), i.e. log u_t <= log w(j_t) -
    log w(current) with log u_t = -E_t. The left side is known before the run (one vectorized sum); the
    loop keeps only the current level log w(current) and notes the steps that move, and the states follow
    from those (each is the proposal of the last move so far). A plain Python loop: at the analysis' 200,000
    steps it beats a vectorized search over all steps (benchmarks/imh.py), and it is simple.
    """
    lw = np.asarray(log_w, dtype=np.float64)
    proposed = lw[proposals.index]
    reach = (proposed + proposals.exp).tolist()  # log w(j_t) + E_t, the same float sum as step by step
    levels = proposed.tolist()
    level = float(lw[proposals.start])
    moves = []
    for t, value in enumerate(reach):
        if value >= level:
            level = levels[t]
            moves.append(t)
    last = np.full(len(reach), -1, dtype=np.int64)
    last[moves] = moves
    np.maximum.accumulate(last, out=last)  # the last move at or before each step (-1: none yet)
    states = np.empty(len(reach) + 1, dtype=np.int64)
    states[0] = proposals.start
    states[1:] = np.where(last >= 0, proposals.index[np.maximum(last, 0)], proposals.start)
    return states


# ------------------------------------------------------------------------------------------ chain diagnostics
def autocorrelation(x: np.ndarray) -> np.ndarray:
    """Normalized autocorrelation rho_0..rho_{L-1} of a series (FFT, zero-padded); all zeros if x is
    constant."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean()
    n = len(x)
    var = float(np.dot(centred, centred))
    if n < 2 or var <= 0.0:
        return np.zeros(n)
    size = fft_size(2 * n - 1)
    spec = np.fft.rfft(centred, size)
    acov = np.fft.irfft(spec.real**2 + spec.imag**2, size)[:n]  # the power spectrum's inverse: autocovariance
    return acov / acov[0]


def fft_size(target: int) -> int:
    """The smallest 2^a 3^b 5^c >= target: zero-padding the series to it leaves no lag wrapped around, and
    pocketfft is fast on it (at 200,000 steps, 400,000 points take ~5 ms; the next power of two, 524,288, ~13
    ms)."""
    best = 1 << max(0, (target - 1).bit_length())  # a power of two always qualifies
    fives = 1
    while fives < best:
        threes = fives
        while threes < best:
            twos = threes << max(0, (-(-target // threes) - 1).bit_length())  # threes * 2^k >= target
            best = min(best, twos)
            threes *= 3
        fives *= 5
    return best


def integrated_autocorrelation_time(x: np.ndarray, rho: np.ndarray | None = None) -> float:
    """tau = 1 + 2 sum_t rho_t by Geyer's initial monotone sequence estimator (tau >= 1 is not enforced:
    an antithetic chain may have tau < 1). A constant series has tau = 1 by convention.

    Pair sums Gamma_k = rho_2k + rho_2k+1 are kept while positive, then made non-increasing; tau = -1 + 2 sum
    Gamma.
    `rho` may pass the series' autocorrelation when the caller already has it.
    """
    rho = autocorrelation(x) if rho is None else rho
    if rho.size < 2 or rho[0] == 0.0:
        return 1.0
    pairs = rho[: (len(rho) // 2) * 2].reshape(-1, 2).sum(axis=1)
    nonpositive = np.flatnonzero(pairs <= 0.0)
    keep = pairs[: nonpositive[0]] if nonpositive.size else pairs
    if keep.size == 0:
        return 1.0
    monotone = np.minimum.accumulate(keep)
    return float(max(-1.0 + 2.0 * monotone.sum(), 1.0 / len(x)))


@dataclass(frozen=True)
class ChainSummary:
    """What one config's chain tells: visit counts per pool string and the diagnostics of the two series."""

    visits: np.ndarray  # int64 [n]: how often the chain sat on each pool string
    steps: int
    acceptance_rate: float  # fraction of steps 1..L-1 that moved to the proposal (self-proposals count)
    tau: dict[str, float]  # integrated autocorrelation time per series
    lag1: dict[str, float]  # lag-1 autocorrelation per series
    mean: dict[str, float]  # chain average per series

    def ess(self, name: str) -> float:
        """Effective sample size of the chain for one series: L / tau."""
        return self.steps / self.tau[name]


def run_chain(log_w: np.ndarray, series: dict[str, np.ndarray], steps: int,
              rng: np.random.Generator) -> ChainSummary:
    """Draw and run one IMH chain over a pool, and summarize it for each named per-string series."""
    proposals = draw_proposals(log_w, steps, rng)
    states = imh_chain(log_w, proposals)
    # A step accepts when it lands on its proposal (a proposal equal to the current state has ratio 1, so it
    # is accepted too): the acceptance count can be read off the states.
    moved = np.count_nonzero(states[1:] == proposals.index) if steps > 1 else 0
    tau, lag1, mean = {}, {}, {}
    for name, values in series.items():
        path = np.asarray(values, dtype=np.float64)[states]
        rho = autocorrelation(path)
        tau[name] = integrated_autocorrelation_time(path, rho)
        lag1[name] = float(rho[1]) if rho.size > 1 else 0.0
        mean[name] = float(path.mean())
    visits = np.bincount(states, minlength=len(log_w))
    rate = moved / (steps - 1) if steps > 1 else float("nan")
    return ChainSummary(visits, steps, float(rate), tau, lag1, mean)


# ------------------------------------------------------------------------------------------ standard errors
def snis_mean_and_variance(log_w: np.ndarray, x: np.ndarray) -> tuple[float, float, float]:
    """Self-normalized IS over the pool: (mu, delta-method variance, variance of x under wbar).

    mu = sum wbar_i x_i; Var(mu) ~ sum wbar_i^2 (x_i - mu)^2 (the delta method for a ratio estimator from n
    i.i.d. draws of q); var_pi = sum wbar_i (x_i - mu)^2 is the target's variance of x restricted to the pool.
    """
    wbar = normalized_weights(log_w)
    x = np.asarray(x, dtype=np.float64)
    mu = float(np.dot(wbar, x))
    dev2 = (x - mu) ** 2
    return mu, float(np.dot(wbar * wbar, dev2)), float(np.dot(wbar, dev2))


def imh_standard_error(pool_variance: float, target_variance: float, tau: float, steps: int) -> float:
    """Standard error of a chain average as an estimate of the target's expectation of x.

    Two independent sources add. Given the pool, the chain average estimates the pool's SNIS mean mu_pool
    with Monte Carlo variance var_pi(x) * tau / L (Markov-chain CLT with integrated autocorrelation time tau).
    Over pools, mu_pool estimates E_pi[x] with the SNIS delta-method variance sum wbar_i^2 (x_i - mu)^2. By
    the law of total variance, Var(chain mean) = E[Var(chain mean | pool)] + Var(E[chain mean | pool]), and
    E[chain mean | pool] = mu_pool for a chain at stationarity, so the variances add: the chain can be no
    better than the finite pool it resamples, however long it runs.
    """
    chain_var = target_variance * tau / steps
    return float(np.sqrt(pool_variance + chain_var))
