"""Independent Metropolis-Hastings (IMH) correction of a pool of sampled strings, in numpy only.

The strings of one adaptor configuration were drawn from the locally normalized adaptor q. The theory speaks
of a target pi (the globally normalized adaptor, or the aligned model). IMH turns draws from q into a Markov
chain whose long-run law is pi restricted to the pool: a proposal y' is drawn uniformly from the pool and
accepted over the current y with probability min(1, w(y')/w(y)), w = pi/q. On a finite pool this chain's
stationary law is the self-normalized importance weights wbar_i = w_i / sum_j w_j.

The chain is inherently sequential, but one step only asks "does s_t = log w(y'_t) + E_t reach log w(y)?"
(E_t ~ Exp(1), i.e. log u_t = -E_t). So for every step a we find, vectorized over all steps at once, the first
later step whose s reaches the level log w(y'_a) (a galloping search on a sparse table of range maxima);
those "next acceptance" pointers form a forest, and the chain's acceptance times are the path from the first
state, which binary lifting lists without a Python loop. Cost O(L log L) numpy work; the result equals the
step-by-step loop (`imh_chain_naive`) exactly for the same random draws (tested).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from pqtradeoff.errors import PQError

Target = Literal["global", "aligned", "none"]
TARGETS: tuple[str, ...] = get_args(Target)


# ------------------------------------------------------------------------------------------ importance weights
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
        raise PQError(f"log importance weights must be finite or -inf; got {float(log_w[bad][0])!r} at index {int(np.flatnonzero(bad)[0])}")
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
    """A seed stream per (run seed, configuration): results never depend on the order configs are processed."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.SeedSequence([int(seed), *words])


@dataclass(frozen=True)
class Proposals:
    """The random draws of one chain: an initial state, then per step a proposed index and an Exp(1) variate."""

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
def imh_chain_naive(log_w: np.ndarray, proposals: Proposals) -> np.ndarray:
    """The textbook IMH loop, one step at a time (the reference the vectorized chain is tested against)."""
    lw = np.asarray(log_w, dtype=np.float64).tolist()
    states = [proposals.start]
    current = proposals.start
    for j, e in zip(proposals.index.tolist(), proposals.exp.tolist(), strict=True):
        if lw[j] + e >= lw[current]:  # log u <= log w(y') - log w(y), with log u = -e (same rounding as imh_chain)
            current = j
        states.append(current)
    return np.asarray(states, dtype=np.int64)


def _first_reaching(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each position a, the first index t > a with values[t] >= thresholds[a] (len(values) if none).

    Galloping search on a sparse table of range maxima (table[k][i] = max(values[i : i + 2^k]), +inf past the
    end so every search stops): each search first doubles its block until the block reaches the threshold,
    then descends inside the last doubling. Most searches end within a few steps (the next acceptance is
    near), so the table is built only as deep as the slowest search needs.
    """
    n = len(values)
    levels = max(1, int(np.ceil(np.log2(n + 2))))
    size = n + 1 + (1 << levels)
    table = [np.full(size, np.inf)]
    table[0][:n] = values
    start = np.arange(1, n + 1, dtype=np.int64)
    active = np.arange(n, dtype=np.int64)
    found_at: list[np.ndarray] = []  # per k: searches whose answer lies in [start + 2^(k-1), start + 2^k)
    for k in range(levels + 1):
        if k > 0:
            prev, half = table[-1], 1 << (k - 1)
            grown = np.full(size, np.inf)
            np.maximum(prev[: size - half], prev[half:], out=grown[: size - half])
            table.append(grown)
        hit = table[k][start[active]] >= thresholds[active]
        found_at.append(active[hit])
        active = active[~hit]
        if active.size == 0:
            break
    answer = np.full(n, n, dtype=np.int64)
    for k, nodes in enumerate(found_at):
        if nodes.size == 0:
            continue
        pos = start[nodes] + ((1 << (k - 1)) if k > 0 else 0)
        thr = thresholds[nodes]
        for j in range(k - 2, -1, -1):
            pos = np.where(table[j][pos] < thr, pos + (1 << j), pos)
        answer[nodes] = pos
    return np.minimum(answer, n)


def _path_from(pointer: np.ndarray, start: int, end: int) -> np.ndarray:
    """The nodes start, pointer[start], pointer[pointer[start]], ... before reaching `end` (binary lifting).

    `pointer` is strictly increasing along every path and `end` (= len(pointer) - 1) points to itself.
    """
    jumps = [pointer]
    depth_bits = max(1, int(np.ceil(np.log2(len(pointer) + 1))))
    for _ in range(depth_bits):
        jumps.append(jumps[-1][jumps[-1]])
    # Length of the path: descend the lifting table greedily from the start.
    node, length = start, 0
    for k in range(depth_bits, -1, -1):
        ahead = jumps[k][node]
        if ahead != end:
            node, length = ahead, length + (1 << k)
    hops = np.arange(length + 1, dtype=np.int64)
    nodes = np.full(length + 1, start, dtype=np.int64)
    for k in range(depth_bits + 1):
        move = (hops >> k) & 1 == 1
        nodes[move] = jumps[k][nodes[move]]
    return nodes


def imh_chain(log_w: np.ndarray, proposals: Proposals) -> np.ndarray:
    """The IMH chain's states (pool indices), L = len(proposals.index) + 1 of them, vectorized.

    Step t (1-based over the proposals) proposes j_t and accepts iff s_t = log w(j_t) + E_t >= log w(current).
    The state entered at step a (the start is step 0) is left at the first later step whose s reaches
    log w(state); these pointers are followed from step 0 to list the acceptance times, and the states are the
    accepted proposals carried forward. Equals `imh_chain_naive` for the same draws.
    """
    lw = np.asarray(log_w, dtype=np.float64)
    steps = len(proposals.index) + 1
    entered = np.empty(steps, dtype=np.int64)  # the state a chain would enter at each step if it accepted
    entered[0] = proposals.start
    entered[1:] = proposals.index
    s = np.empty(steps)
    s[0] = -np.inf  # step 0 is the start, never "reached" by a later search
    s[1:] = lw[proposals.index] + proposals.exp
    nxt = _first_reaching(s, lw[entered])
    pointer = np.append(nxt, steps)  # node `steps` is the end and points to itself
    accepted_at = _path_from(pointer, 0, steps)
    marks = np.zeros(steps, dtype=np.int64)
    marks[accepted_at] = accepted_at
    last_accept = np.maximum.accumulate(marks)
    return entered[last_accept]


# ------------------------------------------------------------------------------------------ chain diagnostics
def autocorrelation(x: np.ndarray) -> np.ndarray:
    """Normalized autocorrelation rho_0..rho_{L-1} of a series (FFT, zero-padded); all zeros if x is constant."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean()
    n = len(x)
    var = float(np.dot(centred, centred))
    if n < 2 or var <= 0.0:
        return np.zeros(n)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    spec = np.fft.rfft(centred, size)
    acov = np.fft.irfft(spec * np.conj(spec), size)[:n]
    return acov / acov[0]


def integrated_autocorrelation_time(x: np.ndarray, rho: np.ndarray | None = None) -> float:
    """tau = 1 + 2 sum_t rho_t by Geyer's initial monotone sequence estimator (tau >= 1 is not enforced:
    an antithetic chain may have tau < 1). A constant series has tau = 1 by convention.

    Pair sums Gamma_k = rho_2k + rho_2k+1 are kept while positive, then made non-increasing; tau = -1 + 2 sum Gamma.
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


def run_chain(log_w: np.ndarray, series: dict[str, np.ndarray], steps: int, rng: np.random.Generator) -> ChainSummary:
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
