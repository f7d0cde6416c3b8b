"""Score a generated corpus: `logp_prior` under the prior (teacher-forced) and `reward`, shard by shard.

The prior scores the stored token ids when it tokenizes like the aligned model (same `tokenizer_key`);
otherwise it scores the decoded text re-tokenized by its own tokenizer (EOS appended for finished strings).
Which one was used is recorded per row in `prior_tokenization`. Log-probabilities are accumulated in float64
from float32 logits (float64 where the backend gives float64), batch by batch under a token budget, so memory
stays bounded even for a 150k vocabulary. The batch size is not bit-invariant: it decides which strings
share a forward pass (their padding, and the kernels' summation order), which moves float32 logits in their
last bits, so `logp_prior` agrees across batch sizes to about 1e-5 nats (7e-6 seen), not bit for bit; the
same batch size reproduces the same bytes. `HFModel`'s fast path (`models.hf_scoring`: each prompt run once,
the LM head fused with the log-softmax) moves them likewise: per token within 3.4e-5 nats of the plain path
on SmolLM2-135M (benchmarks/scoring.py), within 1e-4 of transformers' own per-row forward in the tests. The
float64 backends (the demo's exact models) are invariant. Output shards keep every input column and are
written atomically, each recording the digest of the corpus shard it was scored from (`scored_from`); a rerun
skips the shards already scored from byte-identical corpus shards and scores the others again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pqtradeoff.columns import Col, extra_reward_columns, reward_column
from pqtradeoff.errors import PQError, first_line
from pqtradeoff.io import StageResult, progress_bar, write_json
from pqtradeoff.models.base import SCORE_BATCH, SCORE_BATCH_TOKENS, LanguageModel
from pqtradeoff.pipeline.corpus import (
    GENERATED_COLUMNS,
    SCORE_COLUMNS,
    begin_run,
    read_shard,
    require_shards,
    run_settings,
    shard_files,
    write_shard,
)
from pqtradeoff.pipeline.digests import bytes_sha256, file_sha256
from pqtradeoff.pipeline.rewards import PRIOR_CONTEXTS, Reward

log = logging.getLogger("pqtradeoff")


def prior_inputs(
    prior: LanguageModel, df: pd.DataFrame, prior_context: str, same_tokenizer: bool
) -> tuple[list[list[int]], list[list[int]]]:
    """The (prompt ids, continuation ids) the prior scores for each row of a corpus shard."""
    if same_tokenizer:
        conts = [list(map(int, ids)) for ids in df[Col.TOKEN_IDS]]
    else:
        conts = [prior.encode_continuation(text) + ([prior.eos_token_id] if fin else [])
                 for text, fin in zip(df[Col.TEXT], df[Col.FINISHED], strict=True)]
    if prior_context == "none":
        prompts = [prior.empty_context()] * len(df)
    elif same_tokenizer:
        prompts = [list(map(int, ids)) for ids in df[Col.PROMPT_TOKEN_IDS]]
    else:
        prompts = [prior.encode_prompt(p) for p in df[Col.PROMPT]]
    return prompts, conts


#: Resume policy of the keys `score_corpus` records beside the caller's settings: the corpus may grow (more
#: shards to score) and batching never changes which rows are written.
#: `what_if_adaptors` grows with the grid; each shard records its own list and is scored again when it
#: differs.
SCORE_POLICY = {"generate_settings": "free", "batch_size": "free", "max_batch_tokens": "free",
                "what_if_adaptors": "free"}


def score_corpus(
    corpus_dir: Path,
    out_dir: Path,
    *,
    prior: LanguageModel | None,
    reward: Reward,
    extra_rewards: Mapping[str, Reward] | None = None,
    prior_context: str = "prompt",
    batch_size: int = SCORE_BATCH,
    max_batch_tokens: int = SCORE_BATCH_TOKENS,
    settings: dict[str, Any],
    progress: bool = True,
    policy: dict[str, str] | None = None,
    executor: Any = None,
    load_models: Any = None,
    aligned: LanguageModel | None = None,
    what_if: Sequence[Any] = (),
) -> ScoreResult:
    """Add `logp_prior` and `reward` to every shard of `corpus_dir`, writing the scored corpus to `out_dir`.

    With `prior=None` the corpus must already carry `logp_prior` (e.g. to re-score only the reward).
    `extra_rewards` (name -> reward) add one column each, `reward_<name>` (`columns.reward_column`), beside
    the primary `reward`: a study can hold, say, the implicit DPO reward and the reward the model was trained
    on. Further-reward columns of the input that are not among them are dropped (never left stale).
    Non-finite rewards and -inf prior log-probabilities are counted and reported in `_score_report.json`
    and on the console; they are kept in the table for the analysis to drop and count.

    `executor` (`ExecutorSettings`; None: local) chooses where shards are scored: here, or by a pool
    of Ray actors that each build their own `(prior, reward)` with `load_models()` and write the same files.

    `what_if` (adaptors; with `aligned`, the model that sampled the corpus) adds two list columns per string,
    `what_if_logq` and `what_if_log_weight`: its log q and log weight under every plain configuration the
    corpus sampled and every what-if adaptor, in the order recorded as `what_if_adaptors` in `_run.json`
    (one teacher-forced pass of `aligned` per batch for all of them: `teacher_forcing.adaptor_scores`).
    The analysis estimates each what-if adaptor's means from the pooled corpus with them.
    """
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    if prior_context not in PRIOR_CONTEXTS:
        raise PQError(f"prior_context={prior_context!r} is not one of {', '.join(PRIOR_CONTEXTS)}")
    for name, value in (("batch_size", batch_size), ("max_batch_tokens", max_batch_tokens)):
        if not isinstance(value, int) or value < 1:
            raise PQError(f"{name}={value!r} is out of range: need an integer >= 1")
    if corpus_dir.resolve() == out_dir.resolve():
        raise PQError(f"--out {str(out_dir)!r} is the corpus folder itself: choose another folder")
    files = require_shards(corpus_dir)
    rewards = reward_columns(reward, extra_rewards)
    for r in rewards.values():
        check_reward_needs(r, prior_context)
    corpus_settings = run_settings(corpus_dir)
    aligned_key = corpus_settings.get("tokenizer_key")
    same_tokenizer = prior is not None and aligned_key is not None and aligned_key == prior.tokenizer_key
    resolved = dict(settings) | {
        "corpus_dir": str(corpus_dir), "prior_context": prior_context, "batch_size": batch_size,
        "max_batch_tokens": max_batch_tokens, "reward_name": reward.name,
        **({"extra_rewards": {c: r.name for c, r in rewards.items() if c != Col.REWARD}}
           if extra_rewards else {}),
        "prior_tokenization": None if prior is None else ("token_ids" if same_tokenizer else "retokenized"),
        "generate_settings": corpus_settings,
    }
    teacher_forced = what_if_adaptors(files, what_if) if what_if else []
    if teacher_forced:
        if aligned is None:
            raise PQError("what-if adaptors need the aligned model that sampled the corpus (--aligned) to "
                          "teacher-force every string under each of them")
        if not hasattr(aligned, "continuation_logits"):
            raise PQError(f"what-if scoring teacher-forces the aligned model through its logits: the "
                          f"{type(aligned).__name__} backend gives none (use the hf backend)")
        if executor is not None and getattr(executor, "kind", "local") != "local":
            raise PQError("what-if scoring runs on the local executor only: drop --what-if or use "
                          "--executor local")
        if aligned_key is not None and aligned.tokenizer_key != aligned_key:
            raise PQError(f"--aligned tokenizes differently from the model that sampled the corpus "
                          f"({aligned.tokenizer_key!r} vs {aligned_key!r}): give the corpus's own model")
        resolved["what_if_adaptors"] = [str(a) for a in teacher_forced]
    superseded = begin_run(out_dir, "score", resolved, SCORE_POLICY | (policy or {}), {f.name for f in files})

    wanted = [str(a) for a in teacher_forced] or None
    todo = [f for f in files if scored_from(out_dir / f.name) != file_sha256(f)
            or what_if_of(out_dir / f.name) != wanted]
    total = sum(_num_rows(f) for f in todo)
    began = time.perf_counter()
    work = ShardScorer(prior_context, same_tokenizer, batch_size, max_batch_tokens, out_dir,
                       tuple(teacher_forced))
    with progress_bar(progress, total, "score") as advance:
        from pqtradeoff.pipeline.executor import run_shards  # lazy: startup

        tokens = run_shards("score", work, (prior, rewards, aligned), load_models, todo, executor, out_dir,
                            str(getattr(prior, "device", "auto")), advance)
    _write_report(out_dir)
    return ScoreResult(out_dir, len(files), len(todo), len(files) - len(todo), superseded, total, tokens,
                       time.perf_counter() - began)


def what_if_adaptors(files: Sequence[Path], what_if: Sequence[Any]) -> list[Any]:
    """The adaptors `score --what-if` teacher-forces: every plain configuration the corpus sampled (they
    make the pool's proposal; mixtures, best-of-N and DeRa rows stay out of it), in canonical order, then the
    what-if adaptors not among them."""
    from pqtradeoff.sampling.adaptors import Adaptor, parse

    sampled: dict[str, Any] = {}
    for f in files:
        for spec in pq.read_table(f, columns=[Col.ADAPTOR]).column(0).unique().to_pylist():
            try:
                a = parse(spec)
            except PQError as err:
                raise PQError(f"shard {f.name!r}: {err}") from None
            if isinstance(a, Adaptor) and not a.realigns:
                sampled.setdefault(str(a), a)
    out = [sampled[k] for k in sorted(sampled)]
    out += [a for a in what_if if str(a) not in sampled]
    return out


def reward_columns(reward: Reward, extra: Mapping[str, Reward] | None = None) -> dict[str, Reward]:
    """Column -> reward: the primary `reward` first, then `reward_<name>` for each further one."""
    columns = {Col.REWARD: reward}
    for name, r in (extra or {}).items():
        try:
            columns[reward_column(name)] = r
        except ValueError as err:
            raise PQError(str(err)) from None
    return columns


def check_reward_needs(reward: Reward, prior_context: str) -> None:
    """A reward that reads log pi_ref(y|x) (it declares `needs_prompt_context`) needs the prior given the
    prompt."""
    if reward.needs_prompt_context and prior_context != "prompt":
        raise PQError(f"reward {reward.name!r} needs --prior-context prompt: it compares log pi(y|x) with "
                      "log pi_ref(y|x), both given the prompt")


@dataclass(frozen=True)
class ShardScorer:
    """Score one corpus shard with `(prior, reward)` and write the scored shard atomically under the same
    name; returns its rows and the prior tokens it scored. The same object runs in this process
    (local executor) and in each Ray actor, so both write identical files."""

    prior_context: str
    same_tokenizer: bool
    batch_size: int
    max_batch_tokens: int
    out_dir: Path
    what_if: tuple[Any, ...] = ()

    def __call__(self, models: tuple[Any, ...], path: Path) -> tuple[int, int]:
        prior, rewards = models[0], models[1]
        aligned = models[2] if len(models) > 2 else None
        rewards = rewards if isinstance(rewards, dict) else reward_columns(rewards)
        prior_context, same_tokenizer, out_dir = self.prior_context, self.same_tokenizer, self.out_dir
        tokens = 0
        data = path.read_bytes()  # one read: the digest is of the very bytes scored
        table = read_shard(path, data)
        missing = [c for c in GENERATED_COLUMNS if c not in table.column_names]
        if missing:
            raise PQError(f"shard {path.name!r} lacks required column(s) {', '.join(missing)}")
        df = table.to_pandas()
        if prior is not None:
            prompts, conts = prior_inputs(prior, df, prior_context, same_tokenizer)
            _check_context(prior, prompts, conts, path.name)
            per_token = prior.logprobs(prompts, conts, batch_size=self.batch_size,
                                       max_batch_tokens=self.max_batch_tokens)
            tokens = sum(len(c) for c in conts)
            df[Col.LOGP_PRIOR] = [float(np.sum(t)) for t in per_token]
            df[Col.PRIOR_TOKENIZATION] = "token_ids" if same_tokenizer else "retokenized"
            df[Col.PRIOR_CONTEXT] = prior_context
        elif Col.LOGP_PRIOR not in df.columns:
            raise PQError(f"shard {path.name!r} has no logp_prior column and no --prior was given")
        df = df.drop(columns=[c for c in (Col.WHAT_IF_LOGQ, Col.WHAT_IF_LOG_WEIGHT) if c in df.columns])
        if self.what_if:
            from pqtradeoff.models.teacher_forcing import adaptor_scores  # lazy: torch

            prompts = [list(map(int, ids)) for ids in df[Col.PROMPT_TOKEN_IDS]]
            conts = [list(map(int, ids)) for ids in df[Col.TOKEN_IDS]]
            logq, log_weight = adaptor_scores(aligned, prompts, conts, list(self.what_if),
                                              batch_size=self.batch_size,
                                              max_batch_tokens=self.max_batch_tokens)
            df[Col.WHAT_IF_LOGQ] = list(logq)
            df[Col.WHAT_IF_LOG_WEIGHT] = list(log_weight)
        df = df.drop(columns=[c for c in extra_reward_columns(df.columns) if c not in rewards])
        for column, reward in rewards.items():
            df[column] = self._reward_values(reward, df, path.name, scored_prior=prior is not None)
        counts = _nonfinite_counts(df)
        for key in ("reward_nonfinite", "logp_prior_neg_inf"):
            if counts[key]:
                log.warning("%s: %d of %d rows have %s", path.name, counts[key], len(df),
                            key.replace("_", " "))
        scored = pa.Table.from_pandas(df, preserve_index=False)
        meta = (scored.schema.metadata or {}) | {SOURCE_KEY: bytes_sha256(data).encode()}
        if self.what_if:
            meta[WHAT_IF_KEY] = json.dumps([str(a) for a in self.what_if]).encode()
        write_shard(scored.replace_schema_metadata(meta), out_dir / path.name)
        return len(df), tokens

    @staticmethod
    def _reward_values(reward: Reward, df: pd.DataFrame, shard: str, scored_prior: bool) -> np.ndarray:
        """One reward's value per row, after checking the shard holds what it reads."""
        if not scored_prior and reward.needs_prompt_context and Col.PRIOR_CONTEXT in df.columns and \
                (df[Col.PRIOR_CONTEXT] != "prompt").any():
            raise PQError(f"shard {shard!r}: its logp_prior was scored without the prompt; "
                          f"reward {reward.name!r} needs it scored with --prior-context prompt")
        missing = [c for c in reward.columns if c not in df.columns]
        if missing:
            raise PQError(f"shard {shard!r} lacks column(s) {', '.join(missing)} that reward "
                          f"{reward.name!r} reads")
        values = np.asarray(reward(df), dtype=np.float64)
        if values.shape != (len(df),):
            raise PQError(f"reward {reward.name!r} returned {values.shape} values for {len(df)} strings")
        return values


#: The key of a scored shard's Parquet metadata that holds the SHA-256 of the corpus shard it was scored from.
SOURCE_KEY = b"pqtradeoff.source_sha256"
#: The key of a scored shard's Parquet metadata that names the adaptors of its what-if columns, in order.
WHAT_IF_KEY = b"pqtradeoff.what_if_adaptors"


def _shard_metadata(path: Path) -> dict[bytes, bytes]:
    """A scored shard's Parquet key-value metadata ({}: absent or unreadable)."""
    try:
        return pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return {}


def scored_from(path: Path) -> str | None:
    """The digest of the corpus shard that a scored shard was made from (None: absent, unreadable, or written
    without one, e.g. by hand): a rerun scores again every shard whose source is not byte-identical now."""
    value = _shard_metadata(path).get(SOURCE_KEY)
    return value.decode() if value else None


def what_if_of(path: Path) -> list[str] | None:
    """The adaptors of a scored shard's what-if columns, in order (None: it has none or is unreadable)."""
    value = _shard_metadata(path).get(WHAT_IF_KEY)
    return json.loads(value) if value else None


def _num_rows(path: Path) -> int:
    try:
        return pq.read_metadata(path).num_rows
    except (OSError, pa.ArrowException) as err:
        raise PQError(f"shard {str(path)!r} is not a readable Parquet file ({first_line(err)}): delete it "
                      "and rerun the stage that wrote it") from None


class ScoreResult(StageResult):
    """What a `score` run did (`tokens`: the tokens the prior scored now)."""

    VERB = "scored"
    TOKENS_KEY = "prior_tokens"
    RATE_LABEL = "prior "


def _nonfinite_counts(df: pd.DataFrame) -> dict[str, int]:
    return {"rows": len(df), "reward_nonfinite": int((~np.isfinite(df[Col.REWARD].to_numpy(float))).sum()),
            "logp_prior_neg_inf": int(np.isneginf(df[Col.LOGP_PRIOR].to_numpy(float)).sum())}


def _write_report(out_dir: Path) -> None:
    """`_score_report.json`: counts of non-finite scores per shard, recounted from every scored shard on disk,
    so a resumed run reports the shards an interrupted run wrote too."""
    shards = {f.name: _nonfinite_counts(pq.read_table(f, columns=SCORE_COLUMNS.names).to_pandas())
              for f in shard_files(out_dir)}
    totals = {key: sum(c[key] for c in shards.values())
              for key in ("rows", "reward_nonfinite", "logp_prior_neg_inf")}
    write_json(out_dir / "_score_report.json", {"totals": totals, "shards": shards})


def _check_context(prior: LanguageModel, prompts: list[list[int]], conts: list[list[int]],
                   shard: str) -> None:
    """A prior cannot score past its context: refuse rather than crash or extrapolate positions silently."""
    if prior.max_length is None:
        return
    for i, (p, c) in enumerate(zip(prompts, conts, strict=True)):
        if len(p) + len(c) > prior.max_length:
            raise PQError(f"shard {shard!r} row {i}: prompt + continuation is {len(p) + len(c)} tokens, "
                          f"longer than the prior's context of {prior.max_length}")
