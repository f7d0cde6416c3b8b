"""Step-level models and the decoding loop they share: `StepLanguageModel` and `sample_rows`.

A `StepLanguageModel` is driven token by token (Hugging Face models, exact finite-state automata): it
implements `start`/`step`/`keep` (incremental: KV cache or automaton state) and `continuation_logits`
(teacher-forced), and inherits `sample` from this module's loop (continuous batching over the counter-based
random streams of `sampling.sampler`) and `logprobs` from `models.teacher_forcing`. Everything it returns is
logits over the model's vocabulary, float32 or float64 as the backend chooses (Hugging Face models: float32;
automata: float64, so that exact values stay exact); adaptors and log_softmax are applied in that precision
(half-precision logits are raised to float32), so both kinds of model are treated identically.

Each row draws its uniforms at its own step, so its tokens depend neither on the batch's other rows nor on
resuming; its scores agree across batch sizes to float rounding (about 1e-5 for float32 logits).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pqtradeoff.errors import PQError
from pqtradeoff.models.base import SCORE_BATCH, SCORE_BATCH_TOKENS, LanguageModel, SampledRow, SampleRequest
from pqtradeoff.models.teacher_forcing import continuation_logprobs
from pqtradeoff.sampling.adaptors import Adaptor
from pqtradeoff.sampling.sampler import sample_step


class StepLanguageModel(LanguageModel):
    """A model driven token by token; `sample` and `logprobs` are the pipeline's shared implementation."""

    def sample(self, requests: Sequence[SampleRequest], *, batch_size: int | None = None) -> list[SampledRow]:
        """`sample_rows` on each run of consecutive requests with the same length limit, whatever their
        adaptors (a generate call's shards of one prompt block, a mixture's components: one batch that stays
        full); `batch_size=None` takes `choose_batch_size` for the run's longest prompt + max_new_tokens, so
        the batch, and the rows, depend on the run alone."""
        rows: list[SampledRow] = []
        for run in runs_of(requests, by_adaptor=False):
            rows += sample_run(self, run, batch_size)
        return rows

    def logprobs(self, prompts: Sequence[list[int]], continuations: Sequence[list[int]], *,
                 batch_size: int = SCORE_BATCH,
                 max_batch_tokens: int = SCORE_BATCH_TOKENS) -> list[np.ndarray]:
        """`teacher_forcing.continuation_logprobs`: teacher-forced through `continuation_logits`."""
        return continuation_logprobs(self, list(prompts), list(continuations), batch_size=batch_size,
                                     max_batch_tokens=max_batch_tokens)

    # ---------------------------------------------------------------------------------------- incremental
    @abstractmethod
    def start(self, prompts: list[list[int]]) -> tuple[torch.Tensor, Any]:
        """Begin a batch: logits [B, V] (float32 or float64) for the first continuation token, and an opaque
        state."""

    @abstractmethod
    def step(self, state: Any, tokens: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Feed one token per row ([B] long); return the next logits [B, V] (float32 or float64) and the new
        state."""

    @abstractmethod
    def keep(self, state: Any, rows: torch.Tensor) -> Any:
        """Restrict the state to the rows indexed by `rows` ([B'] long), to stop computing finished strings.
        An index may repeat: that row's state is copied (`start_distinct` prefills a prompt once)."""

    #: whether `join` can append rows to a running state: `sample_rows` then refills the places of
    #: finished strings with waiting ones (continuous batching); without it, it samples batch after batch.
    can_join: bool = False

    def join(self, state: Any, other: Any) -> Any:
        """One state holding `state`'s rows followed by `other`'s (both from this model's
        `start`/`step`/`keep`; neither may be reused). Only where `can_join`."""
        raise NotImplementedError(f"{type(self).__name__} cannot join decoding states (can_join is False)")

    def rescore(self, state: Any, tokens: torch.Tensor, host: np.ndarray, adaptor: Adaptor) -> np.ndarray:
        """`sample_step`'s host array [token, log q, log p, log Z] for the logits `state` came with, corrected
        where the logits are not the aligned model's own (`models.realign`). Default: unchanged."""
        return host

    def state_bytes(self, length: int) -> int:
        """Bytes of decoding state one row holds at `length` tokens (a KV cache grows with it), for choosing
        the batch size from a memory budget. Default: nothing worth counting (an automaton's state id)."""
        return 0

    # ---------------------------------------------------------------------------------------- teacher-forced
    @abstractmethod
    def continuation_logits(self, prompts: list[list[int]], continuations: list[list[int]]) -> torch.Tensor:
        """Teacher-forced logits [B, T, V] (float32 or float64), T = longest continuation: position t holds
        the logits that predict `continuations[b][t]` given the prompt and `continuations[b][:t]`. Positions
        past a row's length are padding and must be ignored by the caller. Results must not depend on the
        batch's other rows or on padding (up to float rounding)."""


def runs_of(requests: Sequence[SampleRequest], *, by_adaptor: bool = True) -> list[Sequence[SampleRequest]]:
    """The runs of consecutive requests with the same length limit and (`by_adaptor`) the same adaptor."""

    def key(r: SampleRequest) -> tuple:
        return (r.adaptor, r.max_new_tokens) if by_adaptor else (r.max_new_tokens,)

    out, start = [], 0
    while start < len(requests):
        end = start + 1
        while end < len(requests) and key(requests[end]) == key(requests[start]):
            end += 1
        out.append(requests[start:end])
        start = end
    return out


def sample_run(model: StepLanguageModel, run: Sequence[SampleRequest], batch_size: int | None
               ) -> list[SampledRow]:
    """`sample_rows` on one run (one length limit; each request's own adaptor); `batch_size=None` takes
    `choose_batch_size` for its longest prompt + max_new_tokens."""
    first = run[0]
    prompts = [list(r.prompt_token_ids) for r in run]
    keys = np.array([r.key for r in run], dtype=np.uint64)
    batch = batch_size or choose_batch_size(model, max(len(p) for p in prompts) + first.max_new_tokens)
    with torch.inference_mode():
        return sample_rows(model, [r.adaptor for r in run], prompts, keys, first.max_new_tokens, batch)


class RowAdaptors:
    """Each row's adaptor, as the distinct adaptors and an index into them: a batch may mix a grid's adaptors
    (every row is sampled by its own), and a step runs each adaptor once, on its rows."""

    def __init__(self, adaptors: Adaptor | Sequence[Adaptor], n: int) -> None:
        if isinstance(adaptors, Adaptor):
            adaptors = [adaptors] * n
        if len(adaptors) != n:
            raise PQError(f"adaptors has {len(adaptors)} entries for {n} rows: need one adaptor per row")
        distinct: dict[Adaptor, int] = {}
        self.which = np.array([distinct.setdefault(a, len(distinct)) for a in adaptors], dtype=np.int64)
        self.distinct = list(distinct)

    def step(self, model: StepLanguageModel, state: Any, logits: torch.Tensor, rows: np.ndarray,
             keys: np.ndarray, steps: int | np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """`sample_step` and `model.rescore` for the batch's rows (`rows`: their indices into this object),
        each under its own adaptor; returns the tokens (on the logits' device) and the host array."""
        if len(self.distinct) == 1:
            tokens, host = sample_step(self.distinct[0], logits, keys, steps)
            return tokens, model.rescore(state, tokens, host, self.distinct[0])
        which = self.which[rows]
        steps = np.broadcast_to(np.asarray(steps), which.shape)
        groups = [(self.distinct[a], np.flatnonzero(which == a)) for a in np.unique(which)]
        tokens = torch.empty(which.size, dtype=torch.long, device=logits.device)
        host = np.empty((4, which.size))
        for adaptor, at in groups:
            index = torch.from_numpy(at).to(logits.device)
            tokens[index], host[:, at] = sample_step(adaptor, logits[index], keys[at], steps[at])
        rescored = host.copy()
        for adaptor, at in groups:  # a rescore may depend on the adaptor (DeRa's T): each group its own
            rescored[:, at] = model.rescore(state, tokens, host, adaptor)[:, at]
        return tokens, rescored


class _Record:
    """The rows being sampled: tokens, per-step (logq, logp_aligned, log Z), lengths and finished flags."""

    def __init__(self, n: int, max_new_tokens: int, end_ids: tuple[int, ...]) -> None:
        self.tokens = np.zeros((n, max_new_tokens), dtype=np.int64)
        self.scores = np.zeros((3, n, max_new_tokens), dtype=np.float64)  # logq, logp_aligned, log_z per step
        self.lengths = np.zeros(n, dtype=np.int64)
        self.finished = np.zeros(n, dtype=bool)
        self.end_ids = np.array(end_ids, dtype=np.int64)

    def take(self, active: np.ndarray, host: np.ndarray) -> np.ndarray:
        """Store one step of the `active` rows (`sample_step`'s host array); returns which of them ended."""
        t = self.lengths[active]
        self.tokens[active, t] = host[0].astype(np.int64)
        self.scores[:, active, t] = host[1:]
        self.lengths[active] += 1
        ended = np.isin(self.tokens[active, t], self.end_ids)
        self.finished[active[ended]] = True
        return ended

    def rows(self) -> list[SampledRow]:
        return [_sampled_row(self.tokens[i], self.scores[:, i], int(self.lengths[i]), bool(self.finished[i]))
                for i in range(len(self.lengths))]


def sample_batch(
    model: StepLanguageModel, adaptor: Adaptor | Sequence[Adaptor], prompts: list[list[int]],
    keys: np.ndarray,
    max_new_tokens: int
) -> list[SampledRow]:
    """Sample one continuation per prompt under `adaptor` (one for all rows, or one per row), recording its
    three log-scores per step.

    `keys` ([B] uint64, see `row_keys`) give each row its own stream of uniforms (`step_uniforms`). Finished
    rows are dropped from the model state (`model.keep`), so their cost stops when they emit EOS.
    """
    n = len(prompts)
    keys = np.asarray(keys, dtype=np.uint64)
    row_adaptors = RowAdaptors(adaptor, n)
    record = _Record(n, max_new_tokens, model.end_ids())
    logits, state = model.start(prompts)
    active = np.arange(n)
    for t in range(max_new_tokens):
        tokens, host = row_adaptors.step(model, state, logits, active, keys[active], t)
        done_np = record.take(active, host)
        if t == max_new_tokens - 1 or done_np.all():
            break
        if done_np.any():
            alive = np.flatnonzero(~done_np)
            alive_device = torch.from_numpy(alive).to(tokens.device)
            state = model.keep(state, alive_device)
            active = active[alive]
            tokens = tokens[alive_device]
        logits, state = model.step(state, tokens)
    return record.rows()


def sample_rows(
    model: StepLanguageModel, adaptor: Adaptor | Sequence[Adaptor], prompts: list[list[int]],
    keys: np.ndarray,
    max_new_tokens: int,
    batch_size: int,
) -> list[SampledRow]:
    """`sample_batch` on each prompt alone, computed with up to `batch_size` rows decoding together.

    Continuous batching: when strings finish, waiting prompts are prefilled and `join`ed into the running
    state, so the batch stays full. Each row draws its uniforms at its own step, so its tokens are those of
    `sample_batch` on that row alone (its scores up to float rounding: its logits come from other batches).
    Rows with the same prompt are prefilled once (`start_distinct`). Refills wait until 1/8 of the places
    are free, so the cost of a prefill call is shared. A model that cannot join states is sampled batch after
    batch. `adaptor` is one for every row or one per row: rows under different adaptors decode together
    (each step samples each adaptor's rows by that adaptor), so a grid over the same prompts keeps the batch
    full and prefills each prompt once where one adaptor's rows alone would drain.
    """
    n = len(prompts)
    keys = np.asarray(keys, dtype=np.uint64)
    row_adaptors = RowAdaptors(adaptor, n)
    if not model.can_join:
        return [row for start in range(0, n, batch_size) for row in sample_batch(
            model, [row_adaptors.distinct[a] for a in row_adaptors.which[start:start + batch_size]],
            prompts[start:start + batch_size], keys[start:start + batch_size], max_new_tokens)]
    record = _Record(n, max_new_tokens, model.end_ids())
    lengths = record.lengths
    refill_at = max(1, batch_size // 8)
    admitted = min(n, batch_size)
    logits, state = start_distinct(model, prompts[:admitted])
    active = np.arange(admitted)
    while active.size:
        tokens, host = row_adaptors.step(model, state, logits, active, keys[active], lengths[active])
        ended = record.take(active, host)
        alive = fill_from_tail(~ended & (lengths[active] < max_new_tokens))
        if alive.size < active.size:
            active = active[alive]
            if alive.size:
                alive_device = torch.from_numpy(alive).to(tokens.device)
                state, tokens = model.keep(state, alive_device), tokens[alive_device]
        if active.size:
            logits, state = model.step(state, tokens)
        free, waiting = batch_size - active.size, n - admitted
        if waiting and free >= min(refill_at, waiting):
            new = np.arange(admitted, admitted + min(free, waiting))
            new_logits, new_state = start_distinct(model, [prompts[i] for i in new])
            if active.size:
                state, logits = model.join(state, new_state), torch.cat([logits, new_logits])
            else:
                state, logits = new_state, new_logits
            active, admitted = np.concatenate([active, new]), admitted + new.size
    return record.rows()


def fill_from_tail(alive: np.ndarray) -> np.ndarray:
    """Indices of the `True` places of `alive`, ordered so that as few rows as possible move: the places of
    finished rows among the first `alive.sum()` are taken by the last live rows (a cache then copies only
    those rows, not every row after the first finished one)."""
    keep = np.arange(int(alive.sum()))
    holes = np.flatnonzero(~alive[: keep.size])
    if holes.size:
        keep[holes] = keep.size + np.flatnonzero(alive[keep.size:])
    return keep


def start_distinct(model: StepLanguageModel, prompts: list[list[int]]) -> tuple[torch.Tensor, Any]:
    """`model.start(prompts)`, prefilling each distinct prompt once and copying its state to its rows (a
    corpus samples every prompt `num_generations` times, in consecutive rows)."""
    distinct: dict[tuple[int, ...], int] = {}
    index = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]
    if len(distinct) == len(prompts):
        return model.start(prompts)
    logits, state = model.start([list(p) for p in distinct])
    rows = torch.tensor(index, device=logits.device)
    return logits[rows], model.keep(state, rows)


def _sampled_row(tokens: np.ndarray, scores: np.ndarray, length: int, finished: bool) -> SampledRow:
    """A row from its recorded steps; correctly rounded float64 sums, independent of batch and order."""
    q, p, z = (scores[k, :length].tolist() for k in range(3))
    return SampledRow(tokens[:length].tolist(), finished, math.fsum(q), math.fsum(p), math.fsum(z), q, p, z)


#: Memory a default batch may take (decoding state and per-row working tensors): fixed rather than read
#: from the free memory, so that the chosen batch, which a resumed run must repeat, is reproducible.
DEFAULT_MEMORY_BUDGET = 4 << 30


#: Most rows a default batch holds: with the KV cache written in place, 256 rows beat 128 on a CPU (the GEMM
#: rate still grows from 128 to 256 rows; benchmarks/generation_roofline.py: 53% against 49% of the roofline).
MAX_DEFAULT_BATCH = 256


#: Bytes per vocabulary entry a sampling step holds per row: float32 logits, log_softmax, adapted weights
#: and log-probabilities, and the sampler's float64 probabilities (its CDF is kept per block).
STEP_BYTES_PER_ENTRY = 4 * 4 + 8


def choose_batch_size(
    model: StepLanguageModel, max_length: int, memory_bytes: int = DEFAULT_MEMORY_BUDGET,
    max_rows: int = MAX_DEFAULT_BATCH,
) -> int:
    """The most rows (at most `max_rows`, at least 1) whose decoding state at `max_length` tokens and sampling
    working memory fit in `memory_bytes`. The state is counted 2.5 times: an in-place KV cache grows by half
    its width when full, and the old and new buffers coexist while it is copied.
    """
    if not isinstance(max_length, int) or max_length < 1:
        raise PQError(f"max_length={max_length!r} is out of range: need an integer >= 1")
    if not isinstance(memory_bytes, int) or memory_bytes < 1:
        raise PQError(f"memory_bytes={memory_bytes!r} is out of range: need an integer >= 1")
    per_row = 5 * model.state_bytes(max_length) // 2 + STEP_BYTES_PER_ENTRY * model.vocab_size
    return max(1, min(max_rows, memory_bytes // max(per_row, 1)))
