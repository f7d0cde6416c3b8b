"""Many adaptors on the same logits: each one's log q(target) and log Z_t, for the what-if pass.

`AdaptorScorer(adaptors)(logits [N, V], targets [N])` gives, per position and adaptor, the adapted
log-probability of the target token and the log mass the adaptor keeps (float64 arrays [N, A]), what
`Adaptor.adapt` gives one adaptor at a time, computed so that the cost of an adaptor is about one pass over
the vocabulary instead of the several (and the sort) that applying transformers' warpers one by one takes:

- shared once per block of positions: the row maximum m, log-sum-exp, and the sums S_T = sum_v exp((x - m)/T)
  for every temperature T in use (numpy's SIMD exp into reused buffers), and, when a top-k or top-p adaptor
  is present, the `CANDIDATES` largest logits of each position (`torch.topk`);
- a temperature alone: log Z_T = log S_T - log S_1 / T, no further pass;
- top-k alone (k < `CANDIDATES`): kept = scores >= the k-th largest score, scores = logits / T in float32 as
  transformers' warpers compute them, decided on the candidates;
- top-p alone: the nucleus from the candidates' probabilities at T (S_T normalizes them): a token is kept when
  the mass of the tokens above it is below p, which is transformers' rule (cumulative probability in ascending
  order > 1 - p) written from the top; a row the candidates cannot decide (its nucleus reaches past them, or
  its cut lies within `MARGIN` of p) is decided on its whole sorted row by `nucleus.top_p_warp`'s own
  computation, the sort shared by every top-p adaptor of the block;
- every other adaptor (typical, min-p, eta, epsilon, top-n-sigma, and any combination) through
  `Adaptor.support` on the block, i.e. transformers' own warpers.

Exactness: the kept set must be the one sampling used. A top-k or top-p decision that the candidates could
make differently from transformers' float32 one - a tie at the cut, a nucleus reaching past the candidates,
or a cumulative mass within `MARGIN` of p at the cut (25x the float32 rounding of a probability of a logit
up to 60 in size) - is made another way: top-p on the sorted row as above, anything left (ties at the cut)
by the warpers themselves. log Z and log q are then the same numbers up to float rounding (not bit for bit:
the sums run in another order). Logits in float64 (the exact automata) or with a small vocabulary go
through `Adaptor.adapt`'s computation unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pqtradeoff.sampling.adaptors import TRUNCATIONS, Adaptor

#: Largest logits per position from which top-k and top-p are decided (more: a row falls back).
CANDIDATES = 256
#: A top-p cut whose cumulative mass lies within this of p is decided by transformers' warper itself.
MARGIN = 1e-4
#: Positions per block: the [block, V] float32 buffers stay a few tens of MB for a 150k vocabulary.
BLOCK = 64
#: Below this vocabulary size every adaptor takes the plain path (its passes are cheap there).
MIN_VOCAB = 1024


def _kind(a: Adaptor) -> str:
    on = [n for n in TRUNCATIONS if getattr(a, n) is not None]
    if a.realigns:
        raise ValueError(f"{a}: DeRa needs the prior's logits too")
    if a.is_identity:
        return "identity"
    if not on:
        return "temperature"
    if on == ["top_k"] and a.top_k < CANDIDATES:
        return "top_k"
    if on == ["top_p"]:
        return "top_p"
    return "generic"


class AdaptorScorer:
    """log q(target) and log Z_t under each of `adaptors`, per position (see the module)."""

    def __init__(self, adaptors: Sequence[Adaptor]) -> None:
        self.adaptors = list(adaptors)
        self.kinds = [_kind(a) for a in self.adaptors]
        self.temperatures = sorted({a.temperature for a, k in zip(self.adaptors, self.kinds, strict=True)
                                    if k in ("temperature", "top_p")} - {1.0})
        self.needs_candidates = any(k in ("top_k", "top_p") for k in self.kinds)
        self.decided = 0  # top-k / top-p row decisions made here, and those handed to the warpers
        self.handed_over = 0
        self.sorted_rows = 0  # top-p decisions made on a whole sorted row

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        n = logits.shape[0]
        if logits.dtype == torch.float64 or logits.shape[-1] < MIN_VOCAB or logits.device.type != "cpu":
            return repeated_rows_scores(logits, targets, self.adaptors)
        q, z = np.empty((n, len(self.adaptors))), np.empty((n, len(self.adaptors)))
        for s in range(0, n, BLOCK):
            x, t = logits[s:s + BLOCK], targets[s:s + BLOCK]
            q[s:s + BLOCK], z[s:s + BLOCK] = self._block(x.float().contiguous(), t)
        return q, z

    def _block(self, x: torch.Tensor, t: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        xn = x.numpy()
        rows = np.arange(xn.shape[0])
        m = xn.max(axis=1)
        d = np.subtract(xn, m[:, None])
        e = np.empty_like(d)
        log_s1 = np.log(np.exp(d, out=e).sum(axis=1, dtype=np.float64))
        shared = _Shared(x, t, m.astype(np.float64), log_s1 + m, {1.0: log_s1})
        shared.logp_t = xn[rows, t.numpy()].astype(np.float64) - shared.lse1
        for temp in self.temperatures:
            np.multiply(d, np.float32(1.0 / temp), out=e)
            shared.log_s[temp] = np.log(np.exp(e, out=e).sum(axis=1, dtype=np.float64))
        del d, e
        q, z = np.empty((len(rows), len(self.adaptors))), np.empty((len(rows), len(self.adaptors)))
        for j, (a, kind) in enumerate(zip(self.adaptors, self.kinds, strict=True)):
            if kind == "identity":
                q[:, j], z[:, j] = shared.logp_t, 0.0
            elif kind == "temperature":
                z[:, j] = shared.log_s[a.temperature] - log_s1 / a.temperature
                q[:, j] = shared.logp_t / a.temperature - z[:, j]
            elif kind in ("top_k", "top_p"):
                self.decided += len(rows)
                # the top CANDIDATES, then (top-p) the whole sorted row: each row is decided at the first
                # stage that can, and by the warper itself only where none can (ties at the cut)
                decide = _top_k if kind == "top_k" else _top_p
                todo = _from_top(a, decide, shared.candidates(), shared, rows, q[:, j], z[:, j])
                if kind == "top_p" and todo.size:
                    self.sorted_rows += len(todo)
                    todo = _sorted_top_p(a, shared, todo, q[:, j], z[:, j])
                self.handed_over += len(todo)
                if todo.size:
                    fq, fz = plain_scores(x[todo], t[todo], [a])
                    q[todo, j], z[todo, j] = fq[:, 0], fz[:, 0]
            else:
                q[:, j], z[:, j] = (v[:, 0] for v in plain_scores(x, t, [a]))
        return q, z


class _Shared:
    """What every adaptor of a block reads: the logits, targets, row maxima, log-sum-exp, log S_T per
    temperature, and (made when first needed, then kept) each row's largest logits, sorted descending."""

    def __init__(self, x: torch.Tensor, t: torch.Tensor, m: np.ndarray, lse1: np.ndarray,
                 log_s: dict[float, np.ndarray]) -> None:
        self.x, self.t, self.m, self.lse1, self.log_s = x, t, m, lse1, log_s
        self.x_t = x.gather(1, t[:, None])
        self.logp_t: np.ndarray = np.empty(0)
        self._candidates: torch.Tensor | None = None
        self._sorted: dict[int, torch.Tensor] = {}

    def candidates(self) -> torch.Tensor:
        """Every row's `CANDIDATES` largest logits, descending (one topk for the block, kept)."""
        if self._candidates is None:
            self._candidates = torch.topk(self.x, min(CANDIDATES, self.x.shape[1]), dim=1).values
        return self._candidates

    def ascending(self, rows: np.ndarray) -> torch.Tensor:
        """Whole rows sorted ascending (numpy's sort of the values alone, as `nucleus.sorted_values`), each
        sorted once and kept for every top-p adaptor of the block."""
        missing = [r for r in rows.tolist() if r not in self._sorted]
        if missing:
            block = torch.from_numpy(np.sort(self.x[missing].numpy(), axis=-1))
            self._sorted.update(zip(missing, block, strict=True))
        return torch.stack([self._sorted[r] for r in rows.tolist()])


def _from_top(a: Adaptor, decide, values: torch.Tensor, shared: _Shared, rows: np.ndarray, q: np.ndarray,
              z: np.ndarray) -> np.ndarray:
    """Decide `rows` from their largest logits `values` (descending) with `decide`; write q and z of the
    rows decided; return the others."""
    log_s = shared.log_s.get(a.temperature)  # top-p's S_T (top-k needs none)
    kept, count, unsure = decide(a, values, shared.x_t[rows], shared.m[rows],
                                 None if log_s is None else log_s[rows])
    cand_logp = values.double().numpy() - shared.lse1[rows, None]
    inside = np.arange(values.shape[1])[None, :] < count[:, None]
    scaled = np.where(inside, cand_logp / a.temperature, -np.inf)
    return _write(a, shared, rows, ~unsure, kept, scaled, q, z)


def _write(a: Adaptor, shared: _Shared, rows: np.ndarray, sure: np.ndarray, kept: np.ndarray,
           scaled: np.ndarray, q: np.ndarray, z: np.ndarray) -> np.ndarray:
    """log Z = logsumexp of the kept tokens' log p / T (`scaled`, -inf elsewhere) and log q of the target
    (-inf when not kept), written for the `sure` ones of `rows`; returns the others."""
    top = scaled.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(scaled - top).sum(axis=1))
    done = rows[sure]
    z[done] = log_z[sure]
    q[done] = np.where(kept[sure], shared.logp_t[done] / a.temperature - log_z[sure], -np.inf)
    return rows[~sure]


def _sorted_top_p(a: Adaptor, shared: _Shared, rows: np.ndarray, q: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Top-p on `rows` from their whole sorted logits: exactly `nucleus.top_p_warp`'s computation (sorted(x /
    T) is sorted(x) / T, value for value), so its cut is the warper's. Writes q and z of those rows; returns
    the rows it cannot decide (ties at the cut, which the warper breaks by its sort's index order)."""
    values = shared.ascending(rows) / a.temperature
    cumulative = values.softmax(dim=-1).cumsum(dim=-1)
    # the warper removes the prefix where cumulative <= 1 - p (never the last): the cumulative sum never
    # decreases, so its length is a binary search
    threshold = torch.full((len(rows), 1), 1 - a.top_p, dtype=cumulative.dtype)
    cut = torch.searchsorted(cumulative, threshold, right=True).clamp_(max=values.shape[1] - 1)
    first_kept = values.gather(-1, cut)
    tie = ((cut > 0) & (values.gather(-1, (cut - 1).clamp(min=0)) == first_kept)).squeeze(1).numpy()
    kept = (shared.x_t[rows] / a.temperature >= first_kept).squeeze(1).numpy()
    width = values.shape[1] - int(cut.min())  # the largest nucleus: only its columns enter log Z
    nucleus = values[:, -width:].double().numpy() - shared.lse1[rows, None] / a.temperature  # log p / T
    scaled = np.where(np.arange(values.shape[1] - width, values.shape[1])[None, :] >= cut.numpy(), nucleus,
                      -np.inf)
    return _write(a, shared, rows, ~tie, kept, scaled, q, z)


def _top_k(a: Adaptor, values: torch.Tensor, x_t: torch.Tensor, m: np.ndarray, log_s: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TopKLogitsWarper on scores = logits / T: kept when score >= the k-th largest score. Returns whether
    each target is kept, how many candidates are, and the rows to decide another way (the candidates' last
    still ties with the k-th: more equal scores may lie outside them; or a NaN)."""
    scaled = values / a.temperature
    kth = scaled[:, a.top_k - 1:a.top_k]
    count = (scaled >= kth).sum(1).numpy()
    unsure = (scaled[:, -1:] >= kth).squeeze(1).numpy() | ~torch.isfinite(kth).squeeze(1).numpy()
    kept = (x_t / a.temperature >= kth).squeeze(1).numpy()
    return kept, count, unsure


def _top_p(a: Adaptor, values: torch.Tensor, x_t: torch.Tensor, m: np.ndarray, log_s: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TopPLogitsWarper on scores = logits / T, from the top: a candidate is kept when the mass of the
    candidates above it is below p (their probabilities at T from S_T, log_s). Rows whose cut is within
    `MARGIN` of p, ties at the cut, or a nucleus that the candidates do not hold, are left undecided."""
    temp, p = a.temperature, a.top_p
    v = values.double().numpy()
    probs = np.exp((v - m[:, None]) / temp - log_s[:, None])
    cumulative = np.cumsum(probs, axis=1)
    before = cumulative - probs
    count = (before < p).sum(axis=1)  # >= 1: nothing lies above the largest
    rows = np.arange(len(v))
    inside = count < v.shape[1]
    last = np.clip(count - 1, 0, v.shape[1] - 1)
    nxt = np.clip(count, 0, v.shape[1] - 1)
    scaled = values / temp
    first_kept = scaled.gather(1, torch.from_numpy(last)[:, None])
    unsure = (~inside | (cumulative[:, -1] < p + MARGIN) | (p - before[rows, last] < MARGIN)
              | (before[rows, nxt] - p < MARGIN)
              | (scaled.gather(1, torch.from_numpy(nxt)[:, None]) == first_kept).squeeze(1).numpy()
              | ~np.isfinite(v).all(axis=1))
    kept = (x_t / temp >= first_kept).squeeze(1).numpy()
    return kept, count, unsure


def repeated_rows_scores(logits: torch.Tensor, targets: torch.Tensor, adaptors: Sequence[Adaptor]
                         ) -> tuple[np.ndarray, np.ndarray]:
    """`plain_scores`, each distinct row of logits adapted once: an automaton's positions share its states'
    few rows (the demo's: 13 distinct rows among 10^5 positions), and an adaptor's output depends on the row
    alone. The same numbers as `plain_scores` on every position, bit for bit."""
    unique, inverse = torch.unique(logits, dim=0, return_inverse=True)
    if unique.shape[0] * 2 > logits.shape[0]:
        return plain_scores(logits, targets, adaptors)
    return plain_scores(unique, targets, adaptors, rows=inverse)


def plain_scores(logits: torch.Tensor, targets: torch.Tensor, adaptors: Sequence[Adaptor],
                 rows: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per position and adaptor, log q(target) and log Z_t by `Adaptor.adapt`'s own computation: the
    log-softmax, the weights log p / T on the support transformers' warpers keep, their log-sum-exp (float64
    for float64 logits, float32 otherwise). Position p reads row `rows[p]` of `logits` (default: row p)."""
    rows = torch.arange(len(targets), device=logits.device) if rows is None else rows
    work = logits.to(torch.promote_types(logits.dtype, torch.float32))
    logp = torch.log_softmax(work, dim=-1)
    q = np.empty((len(targets), len(adaptors)))
    z = np.empty((len(targets), len(adaptors)))
    for j, a in enumerate(adaptors):
        if a.is_identity:
            q[:, j], z[:, j] = logp[rows, targets].double().cpu().numpy(), 0.0
            continue
        weights = logp / a.temperature
        if a.truncates:
            weights.masked_fill_(~a.support(work, fast_top_p=True), float("-inf"))
        log_z = torch.logsumexp(weights, dim=-1)
        q[:, j] = (weights[rows, targets] - log_z[rows]).double().cpu().numpy()
        z[:, j] = log_z[rows].double().cpu().numpy()
    return q, z
