"""A truncating adaptor's sampling step computed on the tokens it keeps, not on the whole vocabulary.

`Adaptor.adapt` builds four [B, V] views (log-softmax, weights, mask, log-probabilities) and the sampler
exponentiates all V entries, most of them outside the support; top-p sorts every row and typical sorts it
with indices (0.2-0.4 s per step at 160 rows x 49,152 on this project's CPU, as long as the model step).
Here one truncation, after an optional temperature, is decided from each row's candidates (its largest
scores, or for typical its most typical tokens: `torch.topk`), and everything after that - log Z, the
adapted log-probabilities, the inverse-CDF draw - runs on the kept tokens only:

- top-k: the k largest scaled scores; a tie between the k-th and the (k+1)-th goes to the dense path;
- top-p: kept while the mass above a token is below p (transformers' rule, cumulative probability in
  ascending order > 1 - p, written from the top), in float64 from the candidates' probabilities;
- typical: the shifted scores |-log p - H| computed with the warper's own operations, its cut from the most
  typical candidates' cumulative mass; every token at or below the cut's shifted score is kept, as the
  warper keeps it. A row whose cut lies within `typical_margin` (about one row in five of real ones) or past
  the candidates is cut as the warper cuts it, by its own sort, softmax and cumsum of the row
  (`_typical_sorted`), without the warper's masked copies and the dense draw;
- min-p, epsilon, eta: a threshold on the log-probability (eta's from the entropy), so the kept tokens are
  the row's largest scores; a row with a token within `LOG_MARGIN` of its threshold goes to the warper.

Exactness: the kept set is the warper's. A cumulative mass within `MARGIN` of p at the cut (the warper's
float32 softmax and cumsum agree with our float64 sums to < 1e-6), a nucleus that reaches past the candidates
(`STAGES`: 256, then 4,096 for the rows that need more), a tie at the cut, or a NaN sends the row to
`Adaptor.adapt` and the dense sampler (typical's such rows: to its sorted cut, above). The recorded log p is
the same number (the full log-softmax), the weights are the same numbers (log p / T), log Z is a log-sum-exp
over the same terms in another order (float32, equal to ~1 ulp), and the draw is the same inverse CDF in
vocabulary order over the same probabilities (float64 sums in another order): a token can differ only where
its uniform falls within ~1e-7 of a CDF step, as between batch sizes (docs/reliability.md).

Used by `sampler.sample_step` on CPU float32 logits with at least `MIN_VOCAB` entries; other devices and
dtypes keep the dense computation.
"""

from __future__ import annotations

import numpy as np
import torch

from pqtradeoff.sampling.adaptors import TRUNCATIONS, Adaptor

#: Candidates per row at each stage; a row no stage can decide is adapted densely.
STAGES = (256, 4096)
#: A top-p or typical cut whose cumulative mass lies within this of the target is decided densely: 3x the
#: largest difference measured between the warper's float32 cumulative probabilities and float64 ones built
#: on a float32 log-sum-exp (6.2e-7; ours is float64), 8x the largest error of the warper's softmax
#: normalization (2.4e-7), on real SmolLM2 logits at temperatures 0.5-4.
MARGIN = 2e-6
#: The same for typical, whose warper normalizes the probabilities in the order of the shifted scores, the
#: least likely tokens last, where float32 summation drops them (measured up to 1.6e-5 off on real SmolLM2
#: rows at temperatures 0.5-4; tests/sampling/test_truncated.py builds a row where it is 4.9e-5): torch's
#: softmax sums a row in one accumulator of `lanes` float32 lanes (the i-th entry into lane i mod lanes), and
#: each addition errs by at most 2^-24 of its lane's sum, so the normalizer errs by at most
#: ceil(V / lanes) x 2^-24 of the total (1.8e-4 for 49,152 entries and AVX-512's 16 lanes), plus `MARGIN`
#: for the rest. Rows inside it are cut on the sorted row, exactly; a CPU whose vector width is not known
#: here counts one lane (every row is sorted: slower, as exact). The bound over the row's own probabilities,
#: the sum of min(p, 2^-24), is looser on real rows (median 5.5e-4 at temperature 1).
TYPICAL_LANES = {"AVX512": 16, "AVX2": 8}

#: A min-p, epsilon or eta row with a log-probability within this of its threshold is decided by the warper
#: (our threshold and log-probabilities agree with the warper's to ~2e-6 relative: its float32 entropy sum).
LOG_MARGIN = 2e-5
#: Below this vocabulary size the dense path is as cheap.
MIN_VOCAB = 1024
#: The families decided here; any other adaptor, or two truncations at once, stays dense.
FAMILIES = ("top_k", "top_p", "typical_p", "min_p", "epsilon_cutoff", "eta_cutoff")


def typical_margin(vocab: int) -> float:
    """The cumulative-mass margin inside which a typical row is cut on its sorted row (see above)."""
    lanes = TYPICAL_LANES.get(torch.backends.cpu.get_cpu_capability(), 1)
    return MARGIN + -(-vocab // lanes) * 2.0 ** -24


def family(adaptor: Adaptor) -> str | None:
    """The one truncation of `adaptor` this module computes, or None (dense path)."""
    on = [n for n in TRUNCATIONS if getattr(adaptor, n) is not None]
    if len(on) != 1 or on[0] not in FAMILIES:
        return None
    if on[0] == "top_k" and adaptor.top_k >= STAGES[-1]:
        return None
    return on[0]


def applies(adaptor: Adaptor, logits: torch.Tensor) -> bool:
    """Whether `sample_step` takes this module's path for these logits."""
    return (isinstance(adaptor, Adaptor) and family(adaptor) is not None and logits.device.type == "cpu"
            and logits.dtype == torch.float32 and logits.dim() == 2 and logits.shape[0] > 0
            and logits.shape[-1] >= MIN_VOCAB)


class Kept:
    """Each row's kept tokens, as candidates in descending score order and how many of them are kept."""

    def __init__(self, rows: int) -> None:
        self.parts: list[tuple[np.ndarray, torch.Tensor, np.ndarray]] = []  # (rows, indices [r, K], counts)
        self.todo = np.arange(rows)
        self.logp: torch.Tensor | None = None  # log_softmax of the logits, where deciding computed it

    def add(self, rows: np.ndarray, indices: torch.Tensor, counts: np.ndarray, sure: np.ndarray) -> None:
        """Record the `sure` rows of `rows` (candidates `indices`, the first `counts` kept); the rest stay."""
        if sure.any():
            self.parts.append((rows[sure], indices[torch.from_numpy(sure)], counts[sure]))
        self.todo = rows[~sure]


def kept_tokens(adaptor: Adaptor, logits: torch.Tensor) -> Kept:
    """Decide each row's kept tokens under `adaptor` (see the module); rows left in `.todo` need the dense
    path."""
    scores = logits / adaptor.temperature if adaptor.temperature != 1.0 else logits
    # a row with a NaN or +inf, or with nothing finite, is the warper's to decide (-inf entries are fine)
    usable = torch.isfinite(scores.amax(-1)).numpy()  # amax is NaN with a NaN, inf with +inf, -inf if all are
    kept = Kept(scores.shape[0])
    kept.todo = np.flatnonzero(usable)
    _decide(adaptor, scores, kept)
    kept.todo = np.sort(np.concatenate([kept.todo, np.flatnonzero(~usable)]))
    return kept


def _decide(adaptor: Adaptor, scores: torch.Tensor, kept: Kept) -> None:
    """Decide what the candidates can of the rows `kept.todo` of the scaled scores."""
    name = family(adaptor)
    if name in ("min_p", "epsilon_cutoff", "eta_cutoff"):
        _threshold(adaptor, scores, kept)
        return
    if name in ("top_p", "typical_p"):
        lse = _log_sum_exp(scores)  # every row (unusable ones' values are never read)
    if name == "typical_p":
        shifted, normalized = _shifted_scores(scores)
        if adaptor.temperature == 1.0:  # the scores are the logits: sample_kept's log p, computed once
            kept.logp = normalized
    near: list[np.ndarray] = []  # typical rows whose cut the candidates place within the margin
    for k in STAGES:
        rows = kept.todo
        if not rows.size:
            break
        width = min(k, scores.shape[-1])
        if name == "top_k":
            _top_k(adaptor.top_k, _take(scores, rows), rows, kept)
            break
        if name == "top_p":
            _top_p(adaptor.top_p, _take(scores, rows), lse[rows], width, rows, kept)
        else:
            near.append(_typical(adaptor.typical_p, _take(scores, rows), _take(shifted, rows), lse[rows],
                                 width, rows, kept))
    if name == "typical_p":  # near the margin or past the candidates: the warper's own cut, row sorted
        kept.todo = np.sort(np.concatenate([*near, kept.todo]))
        _typical_sorted(adaptor.typical_p, scores, shifted, kept)


def _log_sum_exp(scores: torch.Tensor) -> np.ndarray:
    """Each row's log-sum-exp in float64: max + log(sum(exp(x - max))), so that it carries only the float32
    sum's relative error (measured <= 2.4e-7 on real rows), not float32's rounding of a large log-sum-exp:
    the candidates' probabilities are then accurate well inside `MARGIN`."""
    top = scores.amax(-1, keepdim=True)
    total = torch.sub(scores, top).exp_().sum(-1)
    return (top.squeeze(-1).double() + total.double().log()).numpy()


def _top_k(k: int, scores: torch.Tensor, rows: np.ndarray, kept: Kept) -> None:
    """TopKLogitsWarper: kept when the score is >= the k-th largest; a (k+1)-th equal to it is a tie."""
    width = min(k + 1, scores.shape[-1])
    values, indices = torch.topk(scores, width, dim=-1)
    counts = np.full(len(rows), min(k, width), dtype=np.int64)
    sure = np.ones(len(rows), dtype=bool) if width <= k else (values[:, k] < values[:, k - 1]).numpy()
    kept.add(rows, indices, counts, sure)


def _top_p(p: float, scores: torch.Tensor, lse: np.ndarray, width: int, rows: np.ndarray, kept: Kept) -> None:
    """TopPLogitsWarper from the top: a candidate is kept when the probability above it is below p."""
    values, indices = torch.topk(scores, width, dim=-1)
    v = values.double().numpy()
    probs = np.exp(v - lse[:, None])
    before = np.cumsum(probs, axis=1) - probs
    counts = (before < p).sum(axis=1)  # >= 1: nothing lies above the largest
    index = np.arange(len(rows))
    last, nxt = counts - 1, np.minimum(counts, width - 1)
    sure = ((counts < width) & (p - before[index, last] >= MARGIN) & (before[index, nxt] - p >= MARGIN)
            & (v[index, nxt] < v[index, last]))
    kept.add(rows, indices, counts, sure)


def _shifted_scores(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TypicalLogitsWarper's |-log p - H|, the same float32 numbers (its operations, in place where it
    allocates), and the log-softmax it starts from."""
    normalized = torch.nn.functional.log_softmax(scores, dim=-1)
    work = torch.exp(normalized)
    ent = -work.mul_(normalized).nansum(-1, keepdim=True)
    return torch.neg(normalized, out=work).sub_(ent).abs_(), normalized


def _typical(mass: float, scores: torch.Tensor, shifted: torch.Tensor, lse: np.ndarray, width: int,
             rows: np.ndarray, kept: Kept) -> np.ndarray:
    """TypicalLogitsWarper from the most typical candidates: the cut is the first position whose cumulative
    mass reaches `mass`; every token whose shifted score is <= the cut's is kept. Rows whose cut lies past
    the candidates stay in `kept.todo` (the next stage); those within `typical_margin` of `mass` at the cut
    are returned (for `_typical_sorted`: more candidates would not move them away from it)."""
    values, indices = torch.topk(shifted, width, dim=-1, largest=False)
    s = values.numpy()  # ascending shifted scores
    logp = scores.gather(-1, indices).double().numpy() - lse[:, None]
    cumulative = np.cumsum(np.exp(logp), axis=1)
    cut = (cumulative < mass).sum(axis=1)
    index = np.arange(len(rows))
    cut_c = np.minimum(cut, width - 2)
    # inside: the cut and every token tied with it are among the candidates
    inside = (cut < width - 1) & (s[index, -1] > s[index, cut_c])
    counts = (s <= s[index, cut_c][:, None]).sum(axis=1)  # a prefix: s ascends
    margin = typical_margin(scores.shape[-1])
    clear = ((np.abs(cumulative[index, cut_c] - mass) >= margin)
             & ((cut_c == 0) | (np.abs(cumulative[index, np.maximum(cut_c - 1, 0)] - mass) >= margin)))
    kept.add(rows, indices, counts, inside & clear)
    kept.todo = rows[~inside]
    return rows[inside & ~clear]


def _typical_sorted(mass: float, scores: torch.Tensor, shifted: torch.Tensor, kept: Kept) -> None:
    """TypicalLogitsWarper's cut for the rows `kept.todo`, computed as the warper computes it: its sort of
    the shifted scores, the scores in that order, its softmax and cumsum over the row - the same calls on the
    same float32 numbers (each row is sorted and normalized on its own), so the same cut wherever the
    warper's rounding puts it. What this saves over the warper is its masked copies of the row and the dense
    draw; the sort itself stays."""
    rows = kept.todo
    if not rows.size:
        return
    part = _take(scores, rows)
    keys, order = torch.sort(_take(shifted, rows), dim=-1)
    cumulative = part.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
    last = (cumulative < mass).sum(dim=-1).clamp_(max=part.shape[-1] - 1)
    counts = (keys <= keys.gather(-1, last[:, None])).sum(dim=-1).numpy()  # a prefix: keys ascend
    kept.add(rows, order, counts, np.ones(len(rows), dtype=bool))


def _threshold(adaptor: Adaptor, scores: torch.Tensor, kept: Kept) -> None:
    """min-p, epsilon, eta: a threshold on the probability, log p >= log t per row, the most likely token
    always kept. The threshold is the warper's formula computed here (eta's entropy with the typical warper's
    operations); a row with a log-probability within `LOG_MARGIN` of it is left to the warper. The kept
    tokens are read off the mask in vocabulary order (`nonzero`: one pass, where `torch.topk` of a wide
    support cost more than the rest of the step); a row with no token at the threshold keeps its tokens at
    the largest score, ties included, as the warpers' `min_tokens_to_keep` does."""
    rows = kept.todo
    if not rows.size:
        return
    part = _take(scores, rows)
    normalized = torch.nn.functional.log_softmax(part, dim=-1)
    if adaptor.temperature == 1.0 and part is scores:  # the logits, every row: sample_kept's log p
        kept.logp = normalized
    if adaptor.min_p is not None:
        log_t = np.log(adaptor.min_p) + normalized.amax(-1).double().numpy()
    elif adaptor.epsilon_cutoff is not None:
        log_t = np.full(len(rows), np.log(adaptor.epsilon_cutoff))
    else:
        work = torch.exp(normalized)
        entropy = -work.mul_(normalized).nansum(-1).double().numpy()
        eps = adaptor.eta_cutoff
        log_t = np.log(np.minimum(eps, np.sqrt(eps) * np.exp(-entropy)))
    threshold = torch.from_numpy(log_t.astype(np.float32))[:, None]
    keep = normalized >= threshold
    empty = ~keep.any(-1)
    if bool(empty.any()):  # nothing reaches it: the warper keeps the tokens at the largest score
        keep[empty] = part[empty] == part[empty].amax(-1, keepdim=True)
    counts = keep.sum(-1).numpy()
    near = ((normalized - threshold).abs_() < LOG_MARGIN).any(-1).numpy()
    sure = np.flatnonzero(~near)
    if sure.size:
        where = _take(keep, sure).nonzero()  # (row, token), row-major: each row's tokens in vocabulary order
        c = counts[sure]
        starts = torch.from_numpy(np.cumsum(c) - c)
        rank = torch.arange(where.shape[0]) - starts[where[:, 0]]
        indices = torch.zeros((sure.size, int(c.max())), dtype=torch.long)
        indices[where[:, 0], rank] = where[:, 1]
        kept.parts.append((rows[sure], indices, c))
    kept.todo = rows[near]


def _take(t: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """The rows `rows` of `t` (no copy when they are all of them, in order)."""
    if len(rows) == t.shape[0] and (len(rows) == 0 or (rows[0] == 0 and (np.diff(rows) == 1).all())):
        return t
    return t[torch.from_numpy(rows)]


def sample_kept(adaptor: Adaptor, logits: torch.Tensor, kept: Kept, uniforms: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Draw the decided rows' tokens from their kept tokens; returns (rows, host [4, r]) as `sample_step`'s
    host array: token, log q, log p, log Z."""
    if not kept.parts:
        return np.zeros(0, dtype=np.int64), np.zeros((4, 0))
    rows = np.concatenate([r for r, _, _ in kept.parts])
    counts = np.concatenate([c for _, _, c in kept.parts])
    width = int(counts.max())
    vocab = logits.shape[-1]
    tokens = torch.full((len(rows), width), vocab, dtype=torch.long)
    start = 0
    for r, indices, c in kept.parts:
        w = min(width, indices.shape[1])
        block = indices[:, :w].clone()
        block[torch.from_numpy(np.arange(w)[None, :] >= c[:, None])] = vocab
        tokens[start:start + len(r), :w] = block
        start += len(r)
    tokens = torch.sort(tokens, dim=-1).values  # vocabulary order, the padding (= vocab) last
    valid = tokens < vocab
    # the same numbers as the dense path's (deciding may have computed them already, on the same logits)
    logp = kept.logp if kept.logp is not None else torch.log_softmax(logits, dim=-1)
    flat = torch.from_numpy(rows)[:, None] * vocab + tokens.clamp(max=vocab - 1)
    gathered = logp.view(-1)[flat]
    weights = gathered / adaptor.temperature if adaptor.temperature != 1.0 else gathered
    weights = weights.masked_fill(~valid, float("-inf"))
    log_z = torch.logsumexp(weights, dim=-1, keepdim=True)
    log_probs = (weights - log_z).double().numpy()
    probabilities = np.exp(log_probs)  # exp(-inf) = 0 for the padding
    cdf = np.cumsum(probabilities, axis=1)
    target = uniforms[rows] * cdf[:, -1]
    pick = (cdf <= target[:, None]).sum(axis=1)
    last_positive = width - 1 - np.argmax(probabilities[:, ::-1] > 0, axis=1)
    pick = np.minimum(pick, last_positive)
    index = np.arange(len(rows))
    chosen = tokens.numpy()[index, pick]
    host = np.stack([chosen.astype(np.float64), log_probs[index, pick],
                     logp.numpy()[rows, chosen].astype(np.float64), log_z[:, 0].double().numpy()])
    return rows, host
