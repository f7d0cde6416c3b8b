"""Generate corpora from the aligned model under a grid of adaptors, recording what the analysis needs.

For every string, from the same logits that sampled it (no second pass):
- `logq`: log-probability under the locally normalized adapted model (the sampling distribution);
- `logp_aligned`: log-probability under the aligned model itself (T=1, no truncation);
- `log_weight`: sum over steps of log Z_t, the log mass the adaptor keeps (IMH weight for the global target).

Randomness is keyed by (seed, prompt_id, sample_id, adaptor): each row owns a stream of uniforms and samples
by inverse CDF on its adapted distribution, so its uniforms depend neither on the batch's other rows nor on
resuming. The logits do, in their last float32 bits (padding and the kernels' summation order change with the
batch's shape): across batches a token's log-probabilities agree to about 1e-5, not bit for bit (a string's
sums over 64 tokens to ~1e-3), and a token whose uniform falls that close to a CDF step can differ, and the
string with it (SmolLM2-135M, 160 short answers, batch 256 against 40: 6 of 160 ancestral strings, none of
160 under top-p 0.95). The same batch reproduces the same bytes; float64 backends (the demo's exact models)
are batch-invariant.

Work is cut into shards (one adaptor, a contiguous block of rows), each written atomically; a rerun with the
same settings skips the complete shards, so a killed run resumes and ends byte-for-byte equal. The shards of
one block of rows under the grid's adaptors are decoded together, in groups of at least `PACK_ROWS` rows
where the block has them (`pack_shards`: one batch that stays full as short strings end, each prompt
prefilled once), and a group's files appear together, so a resumed run decodes the same shards together
again.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pqtradeoff.columns import Col
from pqtradeoff.errors import PQError
from pqtradeoff.io import StageResult, progress_bar
from pqtradeoff.models.base import LanguageModel, SampledRow, SampleRequest
from pqtradeoff.pipeline.corpus import GENERATED_SCHEMA, begin_run, write_shard, write_shards
from pqtradeoff.sampling.adaptors import Adaptor, BestOfN, Mixture
from pqtradeoff.sampling.sampler import (
    BEST_OF_N_STEP,
    candidate_keys,
    mixture_components,
    row_keys,
    step_uniforms,
)

TOKEN_COLUMNS = pa.schema([
    (Col.TOKEN_LOGQ, pa.list_(pa.float64())),
    (Col.TOKEN_LOGP_ALIGNED, pa.list_(pa.float64())),
    (Col.TOKEN_LOG_Z, pa.list_(pa.float64())),
])


@dataclass(frozen=True)
class PromptRecord:
    """A prompt as the aligned model sees it: its id (row in the prompt file), text and token ids."""

    prompt_id: int
    prompt: str
    token_ids: list[int]


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


@dataclass(frozen=True)
class ShardGroup:
    """Shards with the same rows under different adaptors, decoded in one batch and written together
    (`pack_shards`): as one adaptor's short strings end, the others' rows keep the batch full, and each
    prompt is prefilled once for all of them."""

    shards: tuple[Shard, ...]

    @property
    def name(self) -> str:
        """The first shard's name and how many follow (what the executors check against the plan)."""
        return f"{self.shards[0].name}+{len(self.shards) - 1}"


def packable(adaptor: Any) -> bool:
    """Whether a shard under `adaptor` decodes with others: not best-of-N (its candidates and their reward
    are its own), not DeRa (its rows run in lockstep with the prior, a run of their own)."""
    if isinstance(adaptor, BestOfN):
        return False
    components = adaptor.components if isinstance(adaptor, Mixture) else (adaptor,)
    return not any(getattr(c, "realigns", False) for c in components)


#: Rows a `ShardGroup` gathers before it is split (where a block's shards under the grid hold more): four
#: full default batches (`decoding.MAX_DEFAULT_BATCH`), so the drain at a group's end is a small part of it,
#: while shards that already hold as many rows stay units of their own (one per Ray actor on a cluster).
PACK_ROWS = 1024


def pack_shards(shards: list[Shard]) -> list[Shard | ShardGroup]:
    """The units of work of `shards`: the packable shards with the same rows (one prompt block, one sample
    block) joined into groups of at least `PACK_ROWS` rows where they have them (as many groups as whole
    `PACK_ROWS`, as even as can be, in grid order), placed where the first of them comes; a shard alone stays
    a Shard."""
    same_rows: dict[tuple, list[Shard]] = {}
    order: list[Any] = []
    for shard in shards:
        if not packable(shard.adaptor):
            order.append(shard)
            continue
        key = tuple((p.prompt_id, s) for p, s in shard.rows)
        if key not in same_rows:
            same_rows[key] = []
            order.append(same_rows[key])
        same_rows[key].append(shard)
    units: list[Shard | ShardGroup] = []
    for item in order:
        if isinstance(item, Shard):
            units.append(item)
            continue
        parts = max(1, min(len(item), len(item) * len(item[0].rows) // PACK_ROWS))
        for chunk in np.array_split(np.arange(len(item)), parts):
            members = tuple(item[i] for i in chunk)
            units.append(members[0] if len(members) == 1 else ShardGroup(members))
    return units


def rows_to_table(
    model: LanguageModel, adaptor: Adaptor | Mixture, rows: list[tuple[PromptRecord, int]],
    sampled: list[SampledRow], save_token_logprobs: bool, components: np.ndarray | None = None,
    candidates: tuple[np.ndarray, np.ndarray] | None = None,
) -> pa.Table:
    columns: dict[str, list] = {
        Col.PROMPT_ID: [p.prompt_id for p, _ in rows],
        Col.PROMPT: [p.prompt for p, _ in rows],
        Col.SAMPLE_ID: [s for _, s in rows],
        Col.ADAPTOR: [str(adaptor)] * len(rows),
        Col.TEXT: [model.decode(r.token_ids) for r in sampled],
        Col.PROMPT_TOKEN_IDS: [list(p.token_ids) for p, _ in rows],
        Col.TOKEN_IDS: [r.token_ids for r in sampled],
        Col.FINISHED: [r.finished for r in sampled],
        Col.LOGQ: [r.logq for r in sampled],
        Col.LOGP_ALIGNED: [r.logp_aligned for r in sampled],
        Col.LOG_WEIGHT: [r.log_weight for r in sampled],
    }
    schema = GENERATED_SCHEMA
    if components is not None:  # a mixture: which component sampled each row
        columns[Col.COMPONENT] = [int(c) for c in components]
        schema = pa.schema([*GENERATED_SCHEMA, (Col.COMPONENT, pa.int64())])
    if candidates is not None:  # best-of-N: every candidate's reward and which one was kept
        rewards, kept = candidates
        columns[Col.BON_REWARDS] = [list(map(float, r)) for r in rewards]
        columns[Col.BON_KEPT] = [int(k) for k in kept]
        schema = pa.schema([*schema, (Col.BON_REWARDS, pa.list_(pa.float64())), (Col.BON_KEPT, pa.int64())])
    if save_token_logprobs:
        columns[Col.TOKEN_LOGQ] = [r.token_logq for r in sampled]
        columns[Col.TOKEN_LOGP_ALIGNED] = [r.token_logp_aligned for r in sampled]
        columns[Col.TOKEN_LOG_Z] = [r.token_log_z for r in sampled]
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


@dataclass(frozen=True)
class ShardSampler:
    """Sample one shard with a model and write its file atomically; returns its rows and tokens. The same
    object runs in this process (local executor) and in each Ray actor, so both write identical files."""

    seed: int
    max_new_tokens: int
    batch_size: int | None
    save_token_logprobs: bool
    out_dir: Path
    reward: Any = None  # best-of-N's reward (a `pipeline.rewards.Reward`), called on the candidates

    def __call__(self, model: LanguageModel, shard: Shard | ShardGroup) -> tuple[int, int]:
        if isinstance(shard, Shard) and isinstance(shard.adaptor, BestOfN):
            return self._best_of_n(model, shard)
        return self._sample(model, shard.shards if isinstance(shard, ShardGroup) else (shard,))

    def _sample(self, model: LanguageModel, shards: tuple[Shard, ...]) -> tuple[int, int]:
        """The shards in one `model.sample` call, row by row (each row under every shard's adaptor in turn,
        so a prompt's rows are admitted, and prefilled, together; a mixture's rows each under its component),
        then every file written together."""
        per_shard = [shard_requests(s, self.seed, self.max_new_tokens) for s in shards]
        k = len(per_shard)
        sampled = model.sample([r for row in zip(*per_shard, strict=True) for r in row],
                               batch_size=self.batch_size)
        tables = []
        for j, (shard, requests) in enumerate(zip(shards, per_shard, strict=True)):
            components = None
            if isinstance(shard.adaptor, Mixture):  # which component sampled each row
                components = np.array([shard.adaptor.components.index(r.adaptor) for r in requests])
            table = rows_to_table(model, shard.adaptor, shard.rows, sampled[j::k], self.save_token_logprobs,
                                  components)
            tables.append((table, self.out_dir / shard.name))
        write_shards(tables)
        return len(sampled), sum(len(r.token_ids) for r in sampled)

    def _best_of_n(self, model: LanguageModel, shard: Shard) -> tuple[int, int]:
        """N candidates per row from the base adaptor in one decode of N * rows, each scored by the reward,
        one kept per row by the selection (from the row's own stream); every candidate's reward recorded."""
        bon: BestOfN = shard.adaptor  # type: ignore[assignment]
        n = bon.selection.n
        rows = shard_requests(shard, self.seed, self.max_new_tokens)
        keys = np.array([r.key for r in rows], dtype=np.uint64)
        requests = [SampleRequest(r.prompt_token_ids, bon.base, int(k), r.max_new_tokens)
                    for r, k in zip([r for r in rows for _ in range(n)], candidate_keys(keys, n),
                                    strict=True)]
        sampled = model.sample(requests, batch_size=self.batch_size)
        pairs = [pair for pair in shard.rows for _ in range(n)]
        table = rows_to_table(model, bon.base, pairs, sampled, False).to_pandas()
        rewards = np.asarray(self.reward(table), dtype=np.float64).reshape(len(rows), n)
        kept = bon.selection.choose(rewards, step_uniforms(keys, BEST_OF_N_STEP))
        chosen = [sampled[i * n + int(k)] for i, k in enumerate(kept)]
        out = rows_to_table(model, bon, shard.rows, chosen, self.save_token_logprobs,
                            candidates=(rewards, kept))
        write_shard(out, self.out_dir / shard.name)
        return len(chosen), sum(len(r.token_ids) for r in sampled)


#: Resume policy of the keys `generate_corpus` adds to the caller's settings (see `resume.resume_policy`).
CORPUS_POLICY = {"adaptors": "grow", "num_generations": "grow", "num_prompts": "grow", "batch_size": "free",
                 "pack_adaptors": "free"}


class GenerateResult(StageResult):
    """What a `generate` run did (`tokens`: the tokens sampled now)."""

    TOKENS_KEY = "tokens_generated"


def _check_request(model: LanguageModel, prompts: list[PromptRecord], adaptors: list[Adaptor], *,
                   num_generations: int, max_new_tokens: int, seed: int, batch_size: int | None,
                   prompt_block: int, sample_block: int) -> None:
    """Refuse, in one line naming the value, what `generate_corpus` cannot do (before any file is written)."""
    for name, value, low in (("num_generations", num_generations, 1), ("max_new_tokens", max_new_tokens, 1),
                             ("batch_size", batch_size, 1), ("seed", seed, 0),
                             ("prompt_block", prompt_block, 1),
                             ("sample_block", sample_block, 1)):
        if value is None and name == "batch_size":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise PQError(f"{name}={value!r} is out of range: need an integer >= {low}")
    if not prompts:
        raise PQError("prompts is empty: nothing to generate")
    seen: set[int] = set()
    for p in prompts:
        if p.prompt_id in seen:  # its rows would repeat another's (prompt_id, sample_id, adaptor) keys
            raise PQError(f"prompt_id {p.prompt_id} is given twice: every prompt needs its own id")
        seen.add(p.prompt_id)
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


def check_best_of_n(adaptors: list[Any], reward: Any, executor: Any) -> None:
    """Refuse, in one line, a best-of-N configuration that cannot rank its candidates here."""
    bon = [a for a in adaptors if isinstance(a, BestOfN)]
    if not bon:
        return
    if reward is None:
        raise PQError(f"adaptor {bon[0]} (best-of-N) ranks its candidates by the reward at generation time: "
                      "give the reward (generate --reward KIND / --reward-model, or [reward] in the "
                      "experiment)")
    needs = [c for c in reward.columns if c not in GENERATED_SCHEMA.names]
    if needs:
        raise PQError(f"adaptor {bon[0]} (best-of-N): reward {reward.name!r} reads {', '.join(needs)}, which "
                      "only the score stage adds; rank by a reward of the text (vader, a reward model, "
                      "python:)")
    if executor is not None and executor.kind != "local":
        raise PQError(f"adaptor {bon[0]} (best-of-N) runs on the local executor only for now")


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
    pack_adaptors: bool = True,
    policy: dict[str, str] | None = None,
    executor: Any = None,
    load_model: Callable[[], LanguageModel] | None = None,
    reward: Any = None,
) -> GenerateResult:
    """Sample `num_generations` continuations per prompt under each adaptor into a sharded Parquet corpus.

    `settings` is the caller's resolved configuration; it is recorded in `_run.json` with the pipeline's own
    settings and package versions. A rerun into the same folder resumes: complete shards are kept, missing
    ones written. Settings that `policy` marks "grow" (the grid, how many prompts or generations) may change
    between runs: only the new shards are sampled, and shards the new settings no longer plan are moved to
    `_superseded/`, so the folder ends as a fresh run of the new settings would leave it. Any other change is
    refused, naming the settings that differ. `batch_size=None` lets the model choose each shard's batch
    (`StepLanguageModel.sample`: from that shard's longest prompt + `max_new_tokens`), so a shard's rows
    depend on that shard alone (not on other prompts). `pack_adaptors` decodes the missing shards of one block
    of rows together, in groups of at least `PACK_ROWS` rows (`pack_shards`): their rows are the same either
    way, and their scores' last float bits depend on which shards were decoded together (all of a block's in
    a fresh run; a grown grid's new ones among themselves), as they depend on `batch_size`.

    `executor` (`ExecutorSettings`; None: local) chooses where shards are sampled: here, one after
    another, or by a pool of Ray actors that each build their own replica with `load_model()` and write the
    same files (`executor.map_shards`). Planning, the resume check and superseding happen here either way.
    `reward` (a `pipeline.rewards.Reward`) ranks the candidates of the best-of-N configurations.
    """
    _check_request(model, prompts, adaptors, num_generations=num_generations, max_new_tokens=max_new_tokens,
                   seed=seed, batch_size=batch_size, prompt_block=prompt_block, sample_block=sample_block)
    if not isinstance(pack_adaptors, bool):
        raise PQError(f"pack_adaptors={pack_adaptors!r} is not a boolean: give true or false")
    check_best_of_n(adaptors, reward, executor)
    out_dir = Path(out_dir)
    resolved = dict(settings) | {
        "adaptors": [str(a) for a in adaptors], "num_generations": num_generations,
        "max_new_tokens": max_new_tokens, "seed": seed, "batch_size": batch_size,
        "prompt_block": prompt_block, "sample_block": sample_block, "pack_adaptors": pack_adaptors,
        "save_token_logprobs": save_token_logprobs, "tokenizer_key": model.tokenizer_key,
        "eos_token_ids": list(model.end_ids()), "num_prompts": len(prompts),
    }
    shards = list(plan_shards(prompts, adaptors, num_generations, prompt_block, sample_block))
    superseded = begin_run(out_dir, "generate", resolved, CORPUS_POLICY | (policy or {}),
                           {s.name for s in shards})
    todo = [s for s in shards if not (out_dir / s.name).exists()]
    total_rows = sum(len(s.rows) for s in todo)
    units = pack_shards(todo) if pack_adaptors else todo
    work = ShardSampler(seed, max_new_tokens, batch_size, save_token_logprobs, out_dir, reward)
    began = time.perf_counter()
    with progress_bar(progress, total_rows, "generate") as advance:
        from pqtradeoff.pipeline.executor import run_shards  # lazy: startup

        tokens = run_shards("generate", work, model, load_model, units, executor, out_dir,
                            str(getattr(model, "device", "auto")), advance)
    return GenerateResult(out_dir, len(shards), len(todo), len(shards) - len(todo), superseded, total_rows,
                          tokens, time.perf_counter() - began)
