"""Generate corpora from the aligned model under a grid of adaptors, recording what the analysis needs.

For every string, from the same logits that sampled it (no second pass):
- `logq`: log-probability under the locally normalized adapted model (the sampling distribution);
- `logp_aligned`: log-probability under the aligned model itself (T=1, no truncation);
- `log_weight`: sum over steps of log Z_t, the log mass the adaptor keeps (IMH weight for the global target).

Randomness is keyed by (seed, prompt_id, sample_id, adaptor): each row owns a stream of uniforms and samples
by inverse CDF on its adapted distribution, so its uniforms depend neither on the batch's other rows nor on
resuming. The logits do, in their last float32 bits (padding and the kernels' summation order change with the
batch's shape): across batch sizes `logq`, `logp_aligned` and `log_weight` agree to about 1e-5, not bit for
bit,
and a token whose uniform falls within ~1e-7 of a CDF step could differ. The same batch size reproduces the
same
bytes; float64 backends (the demo's exact models) are batch-invariant. Work is cut into shards (one
adaptor, a contiguous block of rows), each written atomically; a rerun
with the same settings skips the complete shards, so a killed run resumes and ends byte-for-byte equal.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from pqtradeoff.adaptors import Adaptor, Mixture
from pqtradeoff.corpus import GENERATED_SCHEMA, begin_run, write_shard
from pqtradeoff.errors import PQError
from pqtradeoff.io import StageResult, progress_bar
from pqtradeoff.models.base import LanguageModel, SampledRow, SampleRequest, StepLanguageModel

TOKEN_COLUMNS = pa.schema([
    ("token_logq", pa.list_(pa.float64())),
    ("token_logp_aligned", pa.list_(pa.float64())),
    ("token_log_z", pa.list_(pa.float64())),
])


@dataclass(frozen=True)
class PromptRecord:
    """A prompt as the aligned model sees it: its id (row in the prompt file), text and token ids."""

    prompt_id: int
    prompt: str
    token_ids: list[int]


# ------------------------------------------------------------------------------------------------ randomness
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer on uint64 arrays (wrapping arithmetic): a fast, well-mixed counter hash."""
    z = np.asarray(x, dtype=np.uint64) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def adaptor_key(adaptor: Adaptor | str) -> int:
    """A stable 64-bit key for an adaptor's canonical string (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(str(adaptor).encode()).digest()[:8], "little")


def row_keys(seed: int, prompt_ids: np.ndarray, sample_ids: np.ndarray, adaptor: Adaptor | str) -> np.ndarray:
    """One 64-bit key per row from (seed, prompt_id, sample_id, adaptor): the row's own random stream."""
    base = _mix64(np.array([seed], dtype=np.uint64) ^ np.array([adaptor_key(adaptor)], dtype=np.uint64))
    keys = _mix64(base ^ np.asarray(prompt_ids, dtype=np.uint64))
    return _mix64(keys ^ _mix64(np.asarray(sample_ids, dtype=np.uint64)))


def step_uniforms(keys: np.ndarray, step: int | np.ndarray) -> np.ndarray:
    """Uniforms in [0, 1) for step `step` (one for all rows, or one per row) of the rows with these keys
    (53 random bits each).

    Counter-based: the value for (row, step) is a hash of both, so a row draws the same numbers whatever the
    batch it is in, whichever rows finished before it, and whether the run was resumed.
    """
    counter = (np.atleast_1d(np.asarray(step, dtype=np.uint64)) + np.uint64(1)) << np.uint64(32)
    z = _mix64(keys ^ _mix64(counter))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


#: Entries per block of the CPU sampler's two-level CDF (a divisor of common vocabulary sizes: 32000, 49152,
#: 128256, 151936, 262144 are multiples of 128).
CDF_BLOCK = 128


def sample_inverse_cdf(log_probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row from log-probabilities [B, V]: the first index whose CDF exceeds u * total.

    Tokens outside the support (probability 0) can never be chosen. Probabilities are exponentiated and
    summed in float64, row by row, so the choice is stable across batch shapes. On the CPU the CDF has two
    levels: block sums of `CDF_BLOCK` entries, their running sum, and the running sum inside the one block
    the target falls in (a full float64 running sum over the vocabulary is a serial chain of additions: it
    was 60% of the sampler's time). Within float64 rounding both give the same token.
    """
    if log_probs.device.type == "cpu":
        return torch.from_numpy(_blocked_inverse_cdf(log_probs.float().numpy(), uniforms.double().numpy()))
    cdf = torch.cumsum(log_probs.double().exp(), dim=-1)
    total = cdf[:, -1:]
    _check_finite(bool(torch.isfinite(total).all()))
    target = uniforms.double().unsqueeze(-1) * total
    tokens = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return tokens.clamp_(max=log_probs.shape[-1] - 1)


def _check_finite(finite: bool) -> None:
    if not finite:
        raise PQError("the model produced NaN or infinite logits while sampling (common with --dtype "
                      "float16): use --dtype bfloat16 or float32")


def _blocked_inverse_cdf(log_probs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """`sample_inverse_cdf` on the host: block sums, their running sum, then one block's running sum."""
    rows, vocab = log_probs.shape
    blocks = -(-vocab // CDF_BLOCK)
    if vocab % CDF_BLOCK:  # pad with zero probability up to whole blocks
        weights = np.zeros((rows, blocks * CDF_BLOCK), dtype=np.float64)
        np.exp(log_probs, out=weights[:, :vocab])
    else:
        weights = np.exp(log_probs, dtype=np.float64)
    weights = weights.reshape(rows, blocks, CDF_BLOCK)
    block_cdf = np.cumsum(weights.sum(-1), axis=-1)
    total = block_cdf[:, -1]
    _check_finite(bool(np.isfinite(total).all()))
    target = uniforms * total
    # the first block whose running sum exceeds the target; never past the last block with mass
    last_block = np.argmax(block_cdf >= total[:, None], axis=-1)
    block = np.minimum((block_cdf <= target[:, None]).sum(-1), last_block)
    index = np.arange(rows)
    before = np.where(block > 0, block_cdf[index, np.maximum(block - 1, 0)], 0.0)
    inside = weights[index, block]
    within = (np.cumsum(inside, axis=-1) <= (target - before)[:, None]).sum(-1)
    # rounding may put the target past the block's own running sum: take its last entry with mass
    last_positive = CDF_BLOCK - 1 - np.argmax(inside[:, ::-1] > 0, axis=-1)
    return block * CDF_BLOCK + np.minimum(within, last_positive)


# ------------------------------------------------------------------------------------------------- sampling
def sample_step(adaptor: Adaptor, logits: torch.Tensor, keys: np.ndarray, steps: int | np.ndarray
                ) -> tuple[torch.Tensor, np.ndarray]:
    """One sampling step for rows with these keys at these steps: the tokens (on the logits' device) and, on
    the host, [token, log q, log p, log Z] per row (float64; one device-to-host copy per step)."""
    step = adaptor.adapt(logits)
    u = torch.from_numpy(step_uniforms(keys, steps)).to(logits.device)
    tokens = sample_inverse_cdf(step.log_probs, u)
    index = tokens.unsqueeze(-1)
    picked = torch.stack([tokens.double(), step.log_probs.gather(-1, index).squeeze(-1).double(),
                          step.logp.gather(-1, index).squeeze(-1).double(), step.log_z.squeeze(-1).double()])
    return tokens, picked.cpu().numpy()


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
    model: StepLanguageModel, adaptor: Adaptor, prompts: list[list[int]], keys: np.ndarray,
    max_new_tokens: int
) -> list[SampledRow]:
    """Sample one continuation per prompt under `adaptor`, recording its three log-scores per step.

    `keys` ([B] uint64, see `row_keys`) give each row its own stream of uniforms (`step_uniforms`). Finished
    rows are dropped from the model state (`model.keep`), so their cost stops when they emit EOS.
    """
    n = len(prompts)
    keys = np.asarray(keys, dtype=np.uint64)
    record = _Record(n, max_new_tokens, model.end_ids())
    logits, state = model.start(prompts)
    active = np.arange(n)
    for t in range(max_new_tokens):
        tokens, host = sample_step(adaptor, logits, keys[active], t)
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
    model: StepLanguageModel, adaptor: Adaptor, prompts: list[list[int]], keys: np.ndarray,
    max_new_tokens: int,
    batch_size: int,
) -> list[SampledRow]:
    """`sample_batch` on each prompt alone, computed with up to `batch_size` rows decoding together.

    Continuous batching: when strings finish, waiting prompts are prefilled and `join`ed into the running
    state, so the batch stays full. Each row draws its uniforms at its own step, so its tokens are those of
    `sample_batch` on that row alone (its scores up to float rounding: its logits come from other batches).
    Rows with the same prompt are prefilled once (`start_distinct`). Refills wait until 1/8 of the places
    are free, so the cost of a prefill call is shared. A model that cannot join states is sampled batch after
    batch.
    """
    n = len(prompts)
    keys = np.asarray(keys, dtype=np.uint64)
    if not model.can_join:
        return [row for start in range(0, n, batch_size) for row in sample_batch(
            model, adaptor, prompts[start:start + batch_size], keys[start:start + batch_size],
            max_new_tokens)]
    record = _Record(n, max_new_tokens, model.end_ids())
    lengths = record.lengths
    refill_at = max(1, batch_size // 8)
    admitted = min(n, batch_size)
    logits, state = start_distinct(model, prompts[:admitted])
    active = np.arange(admitted)
    while active.size:
        tokens, host = sample_step(adaptor, logits, keys[active], lengths[active])
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


# --------------------------------------------------------------------------------------------------- shards
def adaptor_slug(adaptor: Adaptor | str) -> str:
    """A file-name-safe, injective form of the canonical adaptor string: readable, plus a short hash (two
    specs that read alike once '+', '-' and the like are dropped, e.g. 1e+300 and 1e-300, still get two
    names)."""
    text = str(adaptor)
    readable = re.sub(r"[^A-Za-z0-9_.]+", "-", text.replace("=", "").replace(",", "__"))
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"


@dataclass(frozen=True)
class Shard:
    """One unit of work and one file: an adaptor, a sample id and a block of prompt ids.

    Its name is derived from what determines its rows: `group` (adaptor, prompt-id block, sample id) plus a
    digest of the block's prompts (ids, texts, token ids). Growing the grid or the number of generations adds
    shards without touching the others; a block whose prompts change gets a new digest, so its old file is
    superseded rather than silently reused.
    """

    name: str
    group: str
    adaptor: Adaptor
    rows: list[tuple[PromptRecord, int]]


def _block_digest(records: list[PromptRecord]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r.prompt_id}\t{r.prompt}\t{','.join(map(str, r.token_ids))}\n".encode())
    return h.hexdigest()[:10]


def plan_shards(
    prompts: list[PromptRecord], adaptors: list[Adaptor], num_generations: int, prompt_block: int,
    sample_block: int = 1,
) -> Iterator[Shard]:
    """Yield every shard: adaptor by adaptor, sample block by sample block, prompt-id block by block.

    A shard holds the prompts whose ids fall in one block of `prompt_block` ids and the sample ids of one
    block of `sample_block` (rows prompt-major, ids ascending). A partly filled sample block (num_generations
    not a multiple of sample_block) grows into a new shard when num_generations grows.
    """
    blocks: dict[int, list[PromptRecord]] = {}
    for p in sorted(prompts, key=lambda r: r.prompt_id):
        blocks.setdefault(p.prompt_id // prompt_block, []).append(p)
    digests = {b: _block_digest(records) for b, records in blocks.items()}
    for adaptor in adaptors:
        slug = adaptor_slug(adaptor)
        for first in range(0, num_generations, sample_block):
            samples = range(first, min(first + sample_block, num_generations))
            for b, records in blocks.items():
                group = f"{slug}-p{b * prompt_block:09d}-s{first:06d}"
                digest = digests[b] if len(samples) == sample_block else f"{digests[b][:7]}n{len(samples)}"
                yield Shard(f"{group}-{digest}.parquet", group, adaptor,
                            [(r, s) for r in records for s in samples])


def rows_to_table(
    model: LanguageModel, adaptor: Adaptor | Mixture, rows: list[tuple[PromptRecord, int]],
    sampled: list[SampledRow], save_token_logprobs: bool, components: np.ndarray | None = None,
) -> pa.Table:
    columns: dict[str, list] = {
        "prompt_id": [p.prompt_id for p, _ in rows],
        "prompt": [p.prompt for p, _ in rows],
        "sample_id": [s for _, s in rows],
        "adaptor": [str(adaptor)] * len(rows),
        "text": [model.decode(r.token_ids) for r in sampled],
        "prompt_token_ids": [list(p.token_ids) for p, _ in rows],
        "token_ids": [r.token_ids for r in sampled],
        "finished": [r.finished for r in sampled],
        "logq": [r.logq for r in sampled],
        "logp_aligned": [r.logp_aligned for r in sampled],
        "log_weight": [r.log_weight for r in sampled],
    }
    schema = GENERATED_SCHEMA
    if components is not None:  # a mixture: which component sampled each row
        columns["component"] = [int(c) for c in components]
        schema = pa.schema([*GENERATED_SCHEMA, ("component", pa.int64())])
    if save_token_logprobs:
        columns["token_logq"] = [r.token_logq for r in sampled]
        columns["token_logp_aligned"] = [r.token_logp_aligned for r in sampled]
        columns["token_log_z"] = [r.token_log_z for r in sampled]
        schema = pa.schema(list(schema) + list(TOKEN_COLUMNS))
    return pa.table(columns, schema=schema)


def shard_requests(shard: Shard, seed: int, max_new_tokens: int) -> list[SampleRequest]:
    """The sample requests of a shard's rows, each keyed by (seed, prompt_id, sample_id, adaptor). For a
    mixture, each row's adaptor is the component `mixture_components` chose for it."""
    keys = row_keys(seed, np.array([p.prompt_id for p, _ in shard.rows]),
                    np.array([s for _, s in shard.rows]), shard.adaptor)
    adaptors = [shard.adaptor] * len(keys)
    if isinstance(shard.adaptor, Mixture):
        adaptors = [shard.adaptor.components[c] for c in mixture_components(shard.adaptor, keys)]
    return [SampleRequest(list(p.token_ids), a, int(k), max_new_tokens)
            for (p, _), a, k in zip(shard.rows, adaptors, keys, strict=True)]


#: The step counter of the uniform that picks a mixture row's component.
MIXTURE_STEP = 2**31 - 1


def mixture_components(mixture: Mixture, keys: np.ndarray) -> np.ndarray:
    """Each row's component: chosen with the mixture's probabilities from the row's own stream (a counter no
    sampling step reaches: steps are < max_new_tokens <= 1e6), so it depends on the row alone."""
    return mixture.choose(step_uniforms(np.asarray(keys, dtype=np.uint64), MIXTURE_STEP))


@dataclass(frozen=True)
class ShardSampler:
    """Sample one shard with a model and write its file atomically; returns its rows and tokens. The same
    object runs in this process (local executor) and in each Ray actor, so both write identical files."""

    seed: int
    max_new_tokens: int
    batch_size: int | None
    save_token_logprobs: bool
    out_dir: Path

    def __call__(self, model: LanguageModel, shard: Shard) -> tuple[int, int]:
        requests = shard_requests(shard, self.seed, self.max_new_tokens)
        components = None
        if isinstance(shard.adaptor, Mixture):  # sample component by component, then restore the row order
            components = np.array([shard.adaptor.components.index(r.adaptor) for r in requests])
            order = np.argsort(components, kind="stable")
            by_component = model.sample([requests[i] for i in order], batch_size=self.batch_size)
            sampled: list[SampledRow] = [None] * len(requests)  # type: ignore[list-item]
            for i, row in zip(order, by_component, strict=True):
                sampled[i] = row
        else:
            sampled = model.sample(requests, batch_size=self.batch_size)
        table = rows_to_table(model, shard.adaptor, shard.rows, sampled, self.save_token_logprobs, components)
        write_shard(table, self.out_dir / shard.name)
        return len(sampled), sum(len(r.token_ids) for r in sampled)


#: Resume policy of the keys `generate_corpus` adds to the caller's settings (see `settings.resume_policy`).
CORPUS_POLICY = {"adaptors": "grow", "num_generations": "grow", "num_prompts": "grow", "batch_size": "free"}


class GenerateResult(StageResult):
    """What a `generate` run did (`tokens`: the tokens sampled now)."""

    TOKENS_KEY = "tokens_generated"


def generate_corpus(
    model: LanguageModel,
    prompts: list[PromptRecord],
    adaptors: list[Adaptor],
    *,
    num_generations: int,
    max_new_tokens: int,
    seed: int,
    batch_size: int | None,
    out_dir: Path,
    settings: dict[str, Any],
    save_token_logprobs: bool = False,
    progress: bool = True,
    prompt_block: int = 1024,
    sample_block: int = 1,
    policy: dict[str, str] | None = None,
    executor: Any = None,
    load_model: Callable[[], LanguageModel] | None = None,
) -> GenerateResult:
    """Sample `num_generations` continuations per prompt under each adaptor into a sharded Parquet corpus.

    `settings` is the caller's resolved configuration; it is recorded in `_run.json` with the pipeline's own
    settings and package versions. A rerun into the same folder resumes: complete shards are kept, missing
    ones written. Settings that `policy` marks "grow" (the grid, how many prompts or generations) may change
    between runs: only the new shards are sampled, and shards the new settings no longer plan are moved to
    `_superseded/`, so the folder ends as a fresh run of the new settings would leave it. Any other change is
    refused, naming the settings that differ. `batch_size=None` lets the model choose each shard's batch
    (`StepLanguageModel.sample`: from that shard's longest prompt + `max_new_tokens`), so a shard's rows
    depend
    on that shard alone (not on other prompts).

    `executor` (`settings.ExecutorSettings`; None: local) chooses where shards are sampled: here, one after
    another, or by a pool of Ray actors that each build their own replica with `load_model()` and write the
    same files (`executor.map_shards`). Planning, the resume check and superseding happen here either way.
    """
    for name, value, low in (("num_generations", num_generations, 1), ("max_new_tokens", max_new_tokens, 1),
                             ("batch_size", batch_size, 1), ("seed", seed, 0),
                             ("prompt_block", prompt_block, 1),
                             ("sample_block", sample_block, 1)):
        if value is None and name == "batch_size":
            continue
        if not isinstance(value, int) or value < low:
            raise PQError(f"{name}={value!r} is out of range: need an integer >= {low}")
    if not prompts:
        raise PQError("prompts is empty: nothing to generate")
    if not adaptors:
        raise PQError("no adaptor given: pass at least one --adaptor")
    if model.max_length is not None:
        for p in prompts:
            if len(p.token_ids) + max_new_tokens > model.max_length:
                raise PQError(
                    f"prompt {p.prompt_id} has {len(p.token_ids)} tokens; with "
                    f"max_new_tokens={max_new_tokens} it exceeds the model's context of {model.max_length} "
                    "tokens"
                )
    out_dir = Path(out_dir)
    resolved = dict(settings) | {
        "adaptors": [str(a) for a in adaptors], "num_generations": num_generations,
        "max_new_tokens": max_new_tokens, "seed": seed, "batch_size": batch_size,
        "prompt_block": prompt_block,
        "sample_block": sample_block, "save_token_logprobs": save_token_logprobs,
        "tokenizer_key": model.tokenizer_key, "eos_token_ids": list(model.end_ids()),
        "num_prompts": len(prompts),
    }
    shards = list(plan_shards(prompts, adaptors, num_generations, prompt_block, sample_block))
    superseded = begin_run(out_dir, "generate", resolved, CORPUS_POLICY | (policy or {}),
                           {s.name for s in shards})
    todo = [s for s in shards if not (out_dir / s.name).exists()]
    total_rows = sum(len(s.rows) for s in todo)
    work = ShardSampler(seed, max_new_tokens, batch_size, save_token_logprobs, out_dir)
    began = time.perf_counter()
    with progress_bar(progress, total_rows, "generate") as advance:
        from pqtradeoff.executor import run_shards  # lazy: startup

        tokens = run_shards("generate", work, model, load_model, todo, executor, out_dir,
                            str(getattr(model, "device", "auto")), advance)
    return GenerateResult(out_dir, len(shards), len(todo), len(shards) - len(todo), superseded, total_rows,
                          tokens, time.perf_counter() - began)
