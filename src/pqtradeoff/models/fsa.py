"""Exact finite-state language models: every quantity of the paper has a closed form for them.

- `FiniteStateLM`: a deterministic probabilistic automaton over a small word vocabulary plus EOS (the last
  token id), checked to terminate (spectral radius of the word-transition matrix < 1). It implements the
  pipeline's `LanguageModel` interface: whitespace-separated words, float64 logits = log p(v | state) (float64
  end to end, so the pipeline's numbers agree with the closed forms to rounding, ~1e-12).
- Builders: `random_ngram` (Dirichlet transitions, tunable EOS probability) and `estimate_ngram` (add-k
  counts from a text file, one string per line). States of an order-n model are the last n-1 symbols, the
  start state being all beginning-of-string padding.
- `TransitionReward`: r(y) = sum_t phi(state_t, y_t), e.g. a word-valence lexicon (`from_lexicon`).
- `align(prior, reward, beta)`: the aligned model p+(y) = p(y) exp(r(y)/beta) / Z as a locally normalized
  automaton, p+(v|s) = p(v|s) exp(phi(s,v)/beta) b(next)/b(s), with b from one linear solve and Z = b(start).

Linear algebra is float64 numpy (see `models.automata`); torch appears only at the model interface. The
closed forms over these models live in `exact.closed_forms`, the demo's models in `exact.demo_models`.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.special import logsumexp

from pqtradeoff.columns import Col
from pqtradeoff.errors import PQError
from pqtradeoff.models.automata import WeightedAutomaton, backward, locally_normalize
from pqtradeoff.models.decoding import StepLanguageModel

EOS = "</s>"
#: Dense linear algebra over states: larger automata are refused with a one-line error.
MAX_STATES = 4000
BOS = -1  # padding symbol in n-gram contexts


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise PQError(f"{name}={value!r} is out of range: need an integer {name} >= {low}")
    return int(value)


def _check_positive(name: str, value: Any) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value <= 0):
        raise PQError(f"{name}={value!r} is out of range: need a finite {name} > 0")
    return float(value)


def _frozen(array: np.ndarray) -> np.ndarray:
    out = np.array(array, copy=True)
    out.setflags(write=False)
    return out


# ------------------------------------------------------------------------------------------- automaton
class FiniteStateLM(StepLanguageModel):
    """A deterministic probabilistic automaton: p(v | s) and next(s, v) for states s and symbols v.

    Token ids 0..len(words)-1 are the words, `eos_token_id = len(words)` ends a string. After EOS the
    model sits in an absorbing final row (only EOS possible), so stepping finished rows is harmless.
    """

    max_length = None

    def __init__(
        self,
        words: Sequence[str],
        next_state: np.ndarray,
        log_probs: np.ndarray,
        start: int = 0,
        state_names: Sequence[str] | None = None,
        name: str = "fsa",
    ) -> None:
        words = tuple(words)
        self._check_words(words)
        self.words = words
        self.eos_token_id = len(words)
        self.vocab_size = len(words) + 1
        self.tokenizer_key = "fsa:" + hashlib.sha256("\x00".join(words).encode()).hexdigest()[:16]
        self.name = name
        log_probs = np.asarray(log_probs, dtype=np.float64)
        next_state = np.asarray(next_state)
        n = self._check_shapes(next_state, log_probs)
        self.start_state = _check_int("start", start, 0)
        if self.start_state >= n:
            raise PQError(f"start={start!r} is out of range: the automaton has {n} states")
        self.next_state = _frozen(np.where(np.arange(self.vocab_size) == self.eos_token_id, -1, next_state))
        self.log_probs = _frozen(self._normalized(log_probs))
        self.state_names = tuple(state_names) if state_names is not None else tuple(str(s) for s in range(n))
        if len(self.state_names) != n:
            raise PQError(f"state_names has {len(self.state_names)} entries for {n} states")
        self.termination_radius = self._check_terminates()
        final = np.full((1, self.vocab_size), -np.inf)
        final[0, self.eos_token_id] = 0.0
        self._logits = torch.from_numpy(np.vstack([self.log_probs, final]))  # float64
        steps = np.where(self.next_state < 0, n, self.next_state)
        self._steps = np.vstack([steps, np.full((1, self.vocab_size), n)]).astype(np.int64)
        self._next = torch.from_numpy(self._steps)

    # ------------------------------------------------------------------------------------- validation
    @staticmethod
    def _check_words(words: tuple[str, ...]) -> None:
        if len(words) < 2:
            raise PQError(f"vocabulary size {len(words)} is out of range: need at least 2 words")
        for w in words:
            if not isinstance(w, str) or not w or len(w.split()) != 1 or w != w.strip() or w == EOS:
                raise PQError(f"word {w!r} is not usable: need non-empty words without whitespace, not "
                              f"{EOS!r}")
        if len(set(words)) != len(words):
            dup = next(w for w, c in Counter(words).items() if c > 1)
            raise PQError(f"word {dup!r} appears twice in the vocabulary")

    def _check_shapes(self, next_state: np.ndarray, log_probs: np.ndarray) -> int:
        if log_probs.ndim != 2 or log_probs.shape[1] != self.vocab_size or log_probs.shape[0] < 1:
            raise PQError(f"log_probs has shape {log_probs.shape}: need [states, {self.vocab_size}]")
        n = log_probs.shape[0]
        if n > MAX_STATES:
            raise PQError(f"the automaton has {n} states: at most {MAX_STATES} are supported")
        if next_state.shape != log_probs.shape or not np.issubdtype(next_state.dtype, np.integer):
            raise PQError(f"next_state has shape {next_state.shape}: need integers of shape "
                          f"{log_probs.shape}")
        words = np.delete(next_state, self.eos_token_id, axis=1)
        if words.size and (words.min() < 0 or words.max() >= n):
            raise PQError(f"next_state holds a state outside 0..{n - 1}")
        if np.isnan(log_probs).any() or (log_probs == np.inf).any():
            raise PQError("log_probs holds NaN or +inf")
        return n

    @staticmethod
    def _normalized(log_probs: np.ndarray) -> np.ndarray:
        totals = logsumexp(log_probs, axis=1)
        bad = np.flatnonzero(~(np.abs(totals) < 1e-6))
        if bad.size:
            s = int(bad[0])
            raise PQError(f"log_probs row {s} sums to probability {math.exp(totals[s]):.9g}, not 1")
        return log_probs - totals[:, None]

    def _check_terminates(self) -> float:
        bw = backward(self.as_weighted())  # b(s) = P(the string from s ends) = 1 where it terminates
        rho = bw.spectral_radius
        if not bw.normalizes or not np.all(np.isfinite(bw.log_backward)):  # `backward` checks the radius too
            raise PQError(f"the automaton does not terminate: spectral radius {rho:.6g} of its word "
                          "transitions is not below 1 (give every state a path to EOS)")
        return rho

    # ------------------------------------------------------------------------------------- structure
    @property
    def n_states(self) -> int:
        return self.log_probs.shape[0]

    @property
    def probs(self) -> np.ndarray:
        return np.exp(self.log_probs)

    def as_weighted(self, log_weights: np.ndarray | None = None) -> WeightedAutomaton:
        """This automaton's graph with its own log-probabilities or the given log-weights [S, V]."""
        lw = self.log_probs if log_weights is None else np.asarray(log_weights, dtype=np.float64)
        return WeightedAutomaton(self.next_state, lw, self.eos_token_id)

    def with_log_probs(self, log_probs: np.ndarray, name: str | None = None) -> FiniteStateLM:
        """Same words, states and transitions; new next-symbol distributions."""
        return FiniteStateLM(self.words, self.next_state, log_probs, self.start_state, self.state_names,
                             name or self.name)

    def same_structure(self, other: FiniteStateLM) -> bool:
        return (self.words == other.words and self.start_state == other.start_state
                and np.array_equal(self.next_state, other.next_state))

    # ------------------------------------------------------------------------------------- paths
    def _check_ids(self, ids: Sequence[int], field: str) -> list[int]:
        out = [int(t) for t in ids]
        for t in out:
            if not 0 <= t < self.vocab_size:
                raise PQError(f"{field} token id {t} is out of range: need 0..{self.vocab_size - 1}")
        return out

    def state_after(self, prompt_ids: Sequence[int] = ()) -> int:
        """The state reached by walking the prompt's word ids from the start state."""
        s = self.start_state
        for t in self._check_ids(prompt_ids, "prompt"):
            if t == self.eos_token_id:
                raise PQError(f"prompt token id {t} is EOS: a prompt cannot end the string")
            s = int(self.next_state[s, t])
        return s

    def path_states(self, token_ids: Sequence[int], prompt_ids: Sequence[int] = ()) -> np.ndarray:
        """The state before each token of a continuation; EOS may only come last."""
        ids = self._check_ids(token_ids, "continuation")
        s = self.state_after(prompt_ids)
        states = np.empty(len(ids), dtype=np.int64)
        for i, t in enumerate(ids):
            states[i] = s
            if t == self.eos_token_id:
                if i != len(ids) - 1:
                    raise PQError(f"continuation has tokens after EOS (position {i} of {len(ids)})")
            else:
                s = int(self.next_state[s, t])
        return states

    def path_sum(self, table: np.ndarray, token_ids: Sequence[int], prompt_ids: Sequence[int] = ()) -> float:
        """sum_t table[s_t, y_t] along the continuation (float64)."""
        return float(self.path_sums(table, [prompt_ids], [token_ids])[0])

    def path_sums(self, table: np.ndarray, prompts: Sequence[Sequence[int]],
                  continuations: Sequence[Sequence[int]]) -> np.ndarray:
        """`path_sum` of every (prompt, continuation) pair, the paths walked in lockstep (one numpy step per
        token position, not one Python step per token), each path's terms summed by np.sum as before.

        Why: scoring 46,000 demo strings one path at a time cost ~0.4 s of Python. The checks are
        `path_states`'s (ids in range, EOS only last), with its messages for the first bad row.
        """
        rows = [np.asarray(c) for c in continuations]
        if any(r.size and not np.issubdtype(r.dtype, np.integer) for r in rows):  # the row-wise checks
            return np.array([float(np.sum(table[self.path_states(c, p), np.asarray(c, dtype=np.int64)]))
                             for p, c in zip(prompts, continuations, strict=True)], dtype=np.float64)
        lengths = np.array([r.size for r in rows], dtype=np.int64)
        flat = (np.concatenate([r.reshape(-1).astype(np.int64) for r in rows]) if rows
                else np.zeros(0, np.int64))
        bad = np.flatnonzero((flat < 0) | (flat >= self.vocab_size))
        if bad.size:
            self._check_ids([flat[bad[0]]], "continuation")
        ends = np.cumsum(lengths)
        eos = np.flatnonzero(flat == self.eos_token_id)
        early = eos[~np.isin(eos, ends - 1)]
        if early.size:
            row = int(np.searchsorted(ends, early[0], side="right"))
            position = int(early[0] - (ends[row] - lengths[row]))
            raise PQError(f"continuation has tokens after EOS (position {position} of {int(lengths[row])})")
        starts: dict[tuple[int, ...], int] = {}
        state = np.empty(len(rows), dtype=np.int64)
        for i, p in enumerate(prompts):
            key = tuple(int(t) for t in p)
            if key not in starts:
                starts[key] = self.state_after(key)
            state[i] = starts[key]
        states = np.empty_like(flat)  # the state before each token, in the same flat order
        first = ends - lengths
        for t in range(int(lengths.max(initial=0))):
            live = np.flatnonzero(lengths > t)
            at = first[live] + t
            tokens, now = flat[at], state[live]
            states[at] = now
            state[live] = np.where(tokens == self.eos_token_id, now, self.next_state[now, tokens])
        terms = table[states, flat]
        # np.sum of each path's terms, as `path_sum` always added them (numpy's pairwise order): the same bits
        return np.array([np.sum(terms[a:b]) for a, b in zip(first.tolist(), ends.tolist(), strict=True)],
                        dtype=np.float64)

    def log_prob(self, token_ids: Sequence[int], prompt_ids: Sequence[int] = ()) -> float:
        """log p(y | x) of the given tokens (EOS included if present), exactly, in float64."""
        return self.path_sum(self.log_probs, token_ids, prompt_ids)

    # ------------------------------------------------------------------------------------- tokenization
    def _encode(self, text: str, field: str) -> list[int]:
        if not isinstance(text, str):
            raise PQError(f"{field}={text!r} is not a string")
        index = {w: i for i, w in enumerate(self.words)}
        ids = []
        for w in text.split():
            if w not in index:
                raise PQError(f"{field} word {w!r} is not in the automaton's vocabulary ({len(self.words)} "
                              "words)")
            ids.append(index[w])
        return ids

    def encode_prompt(self, prompt: str) -> list[int]:
        return self._encode(prompt, "prompt")

    def encode_continuation(self, text: str) -> list[int]:
        return self._encode(text, "continuation")

    def empty_context(self) -> list[int]:
        """The prompt ids of the empty prompt: none (the start state)."""
        return []

    def decode(self, token_ids: list[int]) -> str:
        ids = self._check_ids(token_ids, "decode")
        return " ".join(self.words[t] for t in ids if t != self.eos_token_id)

    # ------------------------------------------------------------------------------------- interface
    def start(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        states = torch.tensor([self.state_after(p) for p in prompts], dtype=torch.long)
        return self._logits[states], states

    def step(self, state: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.as_tensor(tokens, dtype=torch.long).reshape(-1)
        if tokens.shape != state.shape:
            raise PQError(f"step got {tokens.numel()} tokens for {state.numel()} rows")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise PQError(f"step token ids must lie in 0..{self.vocab_size - 1}")
        new = self._next[state, tokens]
        return self._logits[new], new

    def keep(self, state: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return state[torch.as_tensor(rows, dtype=torch.long)]

    def continuation_logits(self, prompts: list[list[int]], continuations: list[list[int]]) -> torch.Tensor:
        if len(prompts) != len(continuations):
            raise PQError(f"{len(prompts)} prompts for {len(continuations)} continuations")
        width = max((len(c) for c in continuations), default=0)
        final = self.n_states
        lengths = np.array([len(c) for c in continuations], dtype=np.int64)
        tokens = np.zeros((len(prompts), width), dtype=np.int64)
        for b, c in enumerate(continuations):
            tokens[b, :len(c)] = c
        inside = np.arange(width)[None, :] < lengths[:, None]
        bad = inside & ((tokens < 0) | (tokens >= self.vocab_size))
        if bad.any():
            raise PQError(f"continuation token id {int(tokens[bad][0])} is out of range: need "
                          f"0..{self.vocab_size - 1}")
        states = np.full((len(prompts), width), final, dtype=np.int64)
        current = np.array([self.state_after(p) for p in prompts], dtype=np.int64)
        for t in range(width):  # one step of every row at once: the walk is vectorized over rows
            live = inside[:, t]
            states[live, t] = current[live]
            current = np.where(live, self._steps[current, tokens[:, t]], current)
        return self._logits[torch.from_numpy(states)]


# ------------------------------------------------------------------------------------------- n-grams
def ngram_states(n_words: int, order: int) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """The states of an order-n model (contexts of n-1 symbols, BOS-padded) and next_state [S, V+1].

    State 0 is the start (all padding); contexts are listed breadth first.
    """
    n_words = _check_int("vocabulary size", n_words, 2)
    order = _check_int("order", order, 1)
    m = order - 1
    count = sum(n_words**j for j in range(m + 1))
    if count > MAX_STATES:
        raise PQError(f"order={order} with {n_words} words needs {count} states: at most {MAX_STATES} "
                      "supported")
    contexts: list[tuple[int, ...]] = [(BOS,) * m]
    index = {contexts[0]: 0}
    rows = []
    for ctx in contexts:  # grows while iterating: breadth-first enumeration
        row = []
        for v in range(n_words):
            nxt = (ctx + (v,))[1:] if m else ()
            if nxt not in index:
                index[nxt] = len(contexts)
                contexts.append(nxt)
            row.append(index[nxt])
        rows.append(row + [-1])
    return np.array(rows, dtype=np.int64), contexts


def _state_names(contexts: list[tuple[int, ...]], words: Sequence[str]) -> list[str]:
    return [" ".join("<s>" if c == BOS else words[c] for c in ctx) or "<s>" for ctx in contexts]


def _default_words(n_words: int) -> tuple[str, ...]:
    return tuple(f"w{i}" for i in range(n_words))


def random_ngram(
    n_words: int = 8,
    order: int = 2,
    *,
    seed: int = 0,
    alpha: float = 1.0,
    eos_prob: float = 0.2,
    zipf: float = 0.0,
    allow_empty: bool = False,
    words: Sequence[str] | None = None,
) -> FiniteStateLM:
    """An order-n model with random next-word distributions.

    Each context draws its word distribution from Dirichlet(alpha * n_words * base), base the Zipf law
    (rank+1)^-zipf (uniform for zipf=0), so the same words tend to be frequent everywhere; EOS gets
    probability `eos_prob` (mean length about 1/eos_prob words). The start state gets no EOS unless
    `allow_empty` (or order is 1: the single state must end), so strings are not empty. `words`, when
    given, names the vocabulary and sets its size (`n_words` is then ignored); default names are w0, w1, ...
    """
    words = tuple(words) if words is not None else _default_words(_check_int("vocabulary size", n_words, 2))
    n_words = len(words)
    alpha = _check_positive("alpha", alpha)
    if not isinstance(eos_prob, (int, float)) or not 0.0 < eos_prob < 1.0:
        raise PQError(f"eos_prob={eos_prob!r} is out of range: need 0 < eos_prob < 1")
    if not isinstance(zipf, (int, float)) or not math.isfinite(zipf) or zipf < 0:
        raise PQError(f"zipf={zipf!r} is out of range: need a finite zipf >= 0")
    next_state, contexts = ngram_states(n_words, order)
    rng = np.random.default_rng(seed)
    base = (np.arange(1, n_words + 1, dtype=np.float64)) ** -float(zipf)
    base = alpha * n_words * base / base.sum()
    word_probs = rng.dirichlet(base, size=len(contexts))
    eos = np.full(len(contexts), float(eos_prob))
    if not allow_empty and order > 1:  # order 1 has one state, which must be able to end
        eos[0] = 0.0
    probs = np.hstack([word_probs * (1.0 - eos)[:, None], eos[:, None]])
    with np.errstate(divide="ignore"):
        log_probs = np.log(probs)
    name = f"random_ngram(order={order},words={n_words},seed={seed})"
    return FiniteStateLM(words, next_state, log_probs, 0, _state_names(contexts, words), name)


def read_sentences(path: str | Path) -> list[list[str]]:
    """Whitespace-separated words of each non-empty line of a UTF-8 text file."""
    path = Path(path)
    if not path.is_file():
        raise PQError(f"text file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PQError(f"text file {str(path)!r} is not UTF-8 text") from None
    return [line.split() for line in text.splitlines() if line.split()]


def estimate_ngram(
    path: str | Path, order: int = 2, *, k: float = 0.1, max_vocab: int | None = None
) -> FiniteStateLM:
    """An order-n model estimated from a text file (one string per line) with add-k smoothing.

    p(v | ctx) = (count(ctx, v) + k) / (count(ctx) + k (V + 1)) over the words and EOS. Words are ordered
    by decreasing frequency (ties alphabetically); with `max_vocab`, rarer words become `<unk>`.
    """
    order = _check_int("order", order, 1)
    k = _check_positive("k", k)
    if max_vocab is not None:
        max_vocab = _check_int("max_vocab", max_vocab, 2)
    sentences = read_sentences(path)
    if not sentences:
        raise PQError(f"text file {str(path)!r} has no usable tokens (no non-blank line)")
    freq = Counter(w for s in sentences for w in s)
    if EOS in freq:
        raise PQError(f"text file {str(path)!r} contains the reserved token {EOS!r}")
    ranked = sorted(freq, key=lambda w: (-freq[w], w))
    if max_vocab is not None and len(ranked) > max_vocab:
        kept = ranked[: max_vocab - 1]
        ranked = kept + (["<unk>"] if "<unk>" not in kept else [])
    if len(ranked) < 2:
        raise PQError(f"text file {str(path)!r} has vocabulary size {len(ranked)}: need at least 2 distinct "
                      "words")
    index = {w: i for i, w in enumerate(ranked)}
    unk = index.get("<unk>")
    next_state, contexts = ngram_states(len(ranked), order)
    ctx_index = {c: i for i, c in enumerate(contexts)}
    n_words = len(ranked)
    counts = np.zeros((len(contexts), n_words + 1))
    for sentence in sentences:
        ids = [index.get(w, unk) for w in sentence] + [n_words]
        ctx = (BOS,) * (order - 1)
        for t in ids:
            counts[ctx_index[ctx], t] += 1
            ctx = (ctx + (t,))[1:] if order > 1 else ()
    probs = (counts + k) / (counts.sum(axis=1, keepdims=True) + k * (n_words + 1))
    name = f"estimate_ngram({Path(path).name},order={order},k={k})"
    return FiniteStateLM(ranked, next_state, np.log(probs), 0, _state_names(contexts, ranked), name)


# ------------------------------------------------------------------------------------------- reward
@dataclass(frozen=True, eq=False)
class TransitionReward:
    """r(y) = sum_t phi(s_t, y_t) along the automaton's path (EOS transition included).

    Usable as the scoring stage's reward: `reward(batch)` reads `prompt_token_ids` and `token_ids`.
    """

    needs_prompt_context: ClassVar[bool] = False  # it reads token ids, never the prior's log-probabilities
    columns: ClassVar[tuple[str, ...]] = (Col.PROMPT_TOKEN_IDS, Col.TOKEN_IDS)
    automaton: FiniteStateLM
    phi: np.ndarray  # [S, V] float64
    name: str = "fsa-transition-reward"

    def __post_init__(self) -> None:
        phi = np.asarray(self.phi, dtype=np.float64)
        if phi.shape != self.automaton.log_probs.shape:
            raise PQError(f"phi has shape {phi.shape}: need {self.automaton.log_probs.shape} (states, "
                          "vocabulary)")
        if not np.isfinite(phi).all():
            raise PQError("phi holds a non-finite value: the reward of every transition must be finite")
        object.__setattr__(self, "phi", _frozen(phi))

    @classmethod
    def from_lexicon(
        cls, automaton: FiniteStateLM, values: Mapping[str, float], eos_value: float = 0.0,
        name: str = "lexicon"
    ) -> TransitionReward:
        """A state-independent word-valence reward: phi(s, w) = values[w] (0 for words not listed)."""
        unknown = [w for w in values if w not in automaton.words]
        if unknown:
            raise PQError(f"lexicon word {unknown[0]!r} is not in the automaton's vocabulary")
        row = np.array([float(values.get(w, 0.0)) for w in automaton.words] + [float(eos_value)])
        return cls(automaton, np.tile(row, (automaton.n_states, 1)), name)

    def score(self, token_ids: Sequence[int], prompt_ids: Sequence[int] = ()) -> float:
        """r(y) of a continuation after a prompt (float64)."""
        return self.automaton.path_sum(self.phi, token_ids, prompt_ids)

    def score_batch(self, prompts: Sequence[Sequence[int]],
                    continuations: Sequence[Sequence[int]]) -> np.ndarray:
        """r(y) of every continuation after its prompt: `score` of each, computed together."""
        return self.automaton.path_sums(self.phi, prompts, continuations)

    def __call__(self, batch: Any) -> np.ndarray:
        """The scoring stage's reward protocol: one value per corpus row (a pandas DataFrame)."""
        return self.score_batch(list(batch[Col.PROMPT_TOKEN_IDS]), list(batch[Col.TOKEN_IDS]))


# ------------------------------------------------------------------------------------------- alignment
@dataclass(frozen=True, eq=False)
class Alignment:
    """The prior, the reward, beta and the exact aligned model p+ with its backward values log b(s)."""

    prior: FiniteStateLM
    reward: TransitionReward
    beta: float
    aligned: FiniteStateLM
    log_backward: np.ndarray  # [S]: log Z(x) for a prompt that ends in state s

    @property
    def log_z(self) -> float:
        """log Z for the empty prompt."""
        return float(self.log_backward[self.prior.start_state])

    def log_z_at(self, prompt_ids: Sequence[int] = ()) -> float:
        return float(self.log_backward[self.prior.state_after(prompt_ids)])


def align(prior: FiniteStateLM, reward: TransitionReward, beta: float) -> Alignment:
    """The aligned model p+(y) proportional to p(y) exp(r(y)/beta), exactly, as a locally normalized
    automaton."""
    beta = _check_positive("beta", beta)
    if not prior.same_structure(reward.automaton):
        raise PQError("the reward was built on another automaton: its states do not match the prior's")
    with np.errstate(over="ignore"):
        log_w = prior.log_probs + reward.phi / beta
    if not np.isfinite(log_w[np.isfinite(prior.log_probs)]).all():
        raise PQError(f"beta={beta!r}: reward/beta overflows")
    bw = backward(prior.as_weighted(log_w))
    if not bw.normalizes:
        raise PQError(f"beta={beta!r}: Z = sum_y p(y) exp(r(y)/beta) diverges (spectral radius "
                      f"{bw.spectral_radius:.6g} >= 1); use a larger beta or a smaller reward")
    log_probs = locally_normalize(prior.as_weighted(log_w), bw.log_backward)
    aligned = prior.with_log_probs(log_probs, name=f"aligned({prior.name},beta={beta!r})")
    return Alignment(prior, reward, beta, aligned, _frozen(bw.log_backward))
