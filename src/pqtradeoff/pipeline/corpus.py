"""The scored-corpus contract: the Parquet table every producer writes and every consumer reads.

A corpus is a directory of Parquet files (`pandas.read_parquet(dir)` reads it), one row per sampled string.
Files whose names start with '.' or '_' (temporary files, `_run.json`) are ignored by Parquet readers.
See docs/scored-corpus.md for the meaning of every column.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pqtradeoff.columns import Col
from pqtradeoff.errors import PQError, first_line
from pqtradeoff.io import RUN_RECORD, atomic_write, atomic_write_all, claim_folder, run_record, write_json
from pqtradeoff.pipeline.resume import check_resumable

#: Columns written by `generate` (the corpus before scoring).
GENERATED_SCHEMA = pa.schema([
    (Col.PROMPT_ID, pa.int64()),
    (Col.PROMPT, pa.string()),
    (Col.SAMPLE_ID, pa.int64()),
    (Col.ADAPTOR, pa.string()),
    (Col.TEXT, pa.string()),
    (Col.PROMPT_TOKEN_IDS, pa.list_(pa.int64())),
    (Col.TOKEN_IDS, pa.list_(pa.int64())),
    (Col.FINISHED, pa.bool_()),
    (Col.LOGQ, pa.float64()),
    (Col.LOGP_ALIGNED, pa.float64()),
    (Col.LOG_WEIGHT, pa.float64()),
])

#: Columns added by `score`.
SCORE_COLUMNS = pa.schema([
    (Col.LOGP_PRIOR, pa.float64()),
    (Col.REWARD, pa.float64()),
])

GENERATED_COLUMNS = tuple(GENERATED_SCHEMA.names)
#: What `analyze` needs at minimum.
ANALYSIS_COLUMNS = (Col.ADAPTOR, Col.FINISHED, Col.LOGQ, Col.LOGP_ALIGNED, Col.LOG_WEIGHT,
                    Col.LOGP_PRIOR, Col.REWARD)



def write_shard(table: pa.Table, path: str | Path) -> Path:
    """Write one shard atomically (temporary file + rename): a shard on disk is always complete."""
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def write_shards(tables: Sequence[tuple[pa.Table, str | Path]]) -> list[Path]:
    """Write shards computed together, each atomically, all before the first appears (`atomic_write_all`):
    a resumed run finds all of them or none, and so decodes the same shards together again."""
    return atomic_write_all([(path, lambda tmp, t=table: pq.write_table(t, tmp)) for table, path in tables])


def shard_files(directory: str | Path) -> list[Path]:
    """The complete shards of a corpus directory, in name order (hidden/underscore files skipped)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PQError(f"corpus directory {str(directory)!r} does not exist")
    return sorted(p for p in directory.glob("*.parquet") if not p.name.startswith((".", "_")))


def require_shards(directory: str | Path) -> list[Path]:
    """`shard_files`, or a one-line PQError when the folder holds none."""
    files = shard_files(directory)
    if not files:
        raise PQError(f"corpus directory {str(directory)!r} holds no Parquet shards")
    return files


def supersede(out_dir: Path, keep: set[str]) -> list[str]:
    """Move the shards of `out_dir` that are not in `keep` into `out_dir/_superseded/` (out of the corpus,
    still on disk): what is left is exactly what a fresh run of the current settings writes."""
    moved = []
    for path in shard_files(out_dir):
        if path.name not in keep:
            target = out_dir / "_superseded" / path.name
            target.parent.mkdir(exist_ok=True)
            path.replace(target)
            moved.append(path.name)
    return moved


def begin_run(
    out_dir: Path, command: str, settings: dict, policy: dict[str, str], keep: set[str]
) -> list[str]:
    """Make `out_dir` ready for `command` run with `settings`: refuse a resume whose recorded settings differ
    where `policy` forbids it, lock the folder for this process and delete half-written temporaries, move
    aside the shards not in `keep` (the
    ones this run plans), and record the run. Returns the names of the shards moved aside."""
    record = run_record(command, settings)
    check_resumable(out_dir, record, policy)
    claim_folder(out_dir, command)  # one writer per folder; then its stale temporaries go
    superseded = supersede(out_dir, keep)
    write_json(out_dir / RUN_RECORD, record)
    return superseded


def read_shard(path: Path, data: bytes | None = None) -> pa.Table:
    """One corpus shard (from `data`, its bytes already read, where given), or a one-line PQError naming the
    file when it is truncated or not Parquet."""
    try:
        return pq.read_table(path if data is None else pa.BufferReader(data))
    except (OSError, pa.ArrowException) as err:
        raise PQError(f"shard {str(path)!r} is not a readable Parquet file ({first_line(err)}): delete it "
                      "and rerun the stage that wrote it") from None


def run_settings(directory: str | Path) -> dict:
    """The settings a stage recorded in a folder's `_run.json` (empty if absent; PQError if unreadable)."""
    path = Path(directory) / RUN_RECORD
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text(encoding="utf-8")).get("settings", {}) or {}
    except (OSError, ValueError, AttributeError):
        settings = None
    if not isinstance(settings, dict):
        raise PQError(f"{str(path)!r} is not a readable run record: the settings it should hold (prompt "
                      "template, tokenizer) cannot be recovered; regenerate the corpus or restore the file")
    return settings


def read_corpus(directory: str | Path, required: tuple[str, ...] = ()) -> pa.Table:
    """Read every shard of a corpus directory and check that the `required` columns are present."""
    files = require_shards(directory)
    try:
        table = pa.concat_tables([read_shard(f) for f in files], promote_options="default")
    except pa.ArrowException as err:
        raise PQError(f"the shards of {str(directory)!r} do not share one schema "
                      f"({first_line(err)})") from None
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise PQError(f"corpus {str(directory)!r} lacks required column(s) {', '.join(missing)}")
    return table
