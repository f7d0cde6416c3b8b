"""The scored-corpus contract: the Parquet table every producer writes and every consumer reads.

A corpus is a directory of Parquet files (`pandas.read_parquet(dir)` reads it), one row per sampled string.
Files whose names start with '.' or '_' (temporary files, `_run.json`) are ignored by Parquet readers.
See docs/scored-corpus.md for the meaning of every column.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pqtradeoff.errors import PQError
from pqtradeoff.io import RUN_RECORD, atomic_write

#: Columns written by `generate` (the corpus before scoring).
GENERATED_SCHEMA = pa.schema([
    ("prompt_id", pa.int64()),
    ("prompt", pa.string()),
    ("sample_id", pa.int64()),
    ("adaptor", pa.string()),
    ("text", pa.string()),
    ("prompt_token_ids", pa.list_(pa.int64())),
    ("token_ids", pa.list_(pa.int64())),
    ("finished", pa.bool_()),
    ("logq", pa.float64()),
    ("logp_aligned", pa.float64()),
    ("log_weight", pa.float64()),
])

#: Columns added by `score`.
SCORE_COLUMNS = pa.schema([
    ("logp_prior", pa.float64()),
    ("reward", pa.float64()),
])

SCORED_SCHEMA = pa.schema(list(GENERATED_SCHEMA) + list(SCORE_COLUMNS))

GENERATED_COLUMNS = tuple(GENERATED_SCHEMA.names)
#: What `analyze` needs at minimum.
ANALYSIS_COLUMNS = ("adaptor", "finished", "logq", "logp_aligned", "log_weight", "logp_prior", "reward")



def write_shard(table: pa.Table, path: str | Path) -> Path:
    """Write one shard atomically (temporary file + rename): a shard on disk is always complete."""
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))


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


def run_settings(directory: str | Path) -> dict:
    """The settings a stage recorded in a folder's `_run.json` (empty if absent or unreadable)."""
    import json

    try:
        return json.loads((Path(directory) / RUN_RECORD).read_text(encoding="utf-8")).get("settings", {}) or {}
    except (OSError, ValueError):
        return {}


def read_corpus(directory: str | Path, required: tuple[str, ...] = ()) -> pa.Table:
    """Read every shard of a corpus directory and check that the `required` columns are present."""
    files = require_shards(directory)
    table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise PQError(f"corpus {str(directory)!r} lacks required column(s) {', '.join(missing)}")
    return table
