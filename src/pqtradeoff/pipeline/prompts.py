"""Prompt files: JSONL, CSV, Parquet (a file or a folder of files) or a `datasets.save_to_disk` folder.

`load_prompts` returns `[(prompt_id, text)]` where `prompt_id` is the row's index in the file (its record
index for JSONL, blank lines skipped), so ids stay meaningful after filtering and subsampling. The optional
filters reproduce the paper's selection: prompts of at most `max_chars` characters, then `num_prompts` of
them drawn with `prompt_seed` - the same rows `datasets.Dataset.shuffle(seed).select(range(K))` picks
(numpy's `default_rng(seed).permutation`), returned in file order.

Bad input - a malformed JSONL line (reported with its line number), an empty file, a missing field, a value
that is not text - raises a one-line PQError. Reading a `datasets` folder needs only pyarrow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pqtradeoff.errors import PQError, first_line

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".arrow")


def load_prompts(
    path: str | Path,
    *,
    field: str = "prompt",
    num_prompts: int | None = None,
    prompt_seed: int | None = None,
    max_chars: int | None = None,
) -> list[tuple[int, str]]:
    """Read the prompts of `path`, filter by length, subsample; see the module docstring."""
    path = Path(path)
    if not path.exists():
        raise PQError(f"prompts file {str(path)!r} does not exist")
    values = read_field(path, field)
    if not values:
        raise PQError(f"prompts file {str(path)!r} holds no prompts")
    rows = [(i, check_text(path, field, i, v)) for i, v in enumerate(values)]
    if max_chars is not None:
        if max_chars < 1:
            raise PQError(f"max_chars={max_chars!r} is out of range: need an integer >= 1")
        rows = [(i, p) for i, p in rows if len(p) <= max_chars]
        if not rows:
            raise PQError(f"no prompt in {str(path)!r} has at most max_chars={max_chars} characters")
    return subsample(rows, num_prompts, prompt_seed)


def subsample(rows: list[tuple[int, str]], num_prompts: int | None, prompt_seed: int | None
              ) -> list[tuple[int, str]]:
    """`num_prompts` rows drawn without replacement with `prompt_seed`, kept in file order."""
    if num_prompts is None:
        if prompt_seed is not None:
            raise PQError(f"prompt_seed={prompt_seed!r} needs num_prompts (how many prompts to draw)")
        return rows
    if num_prompts < 1:
        raise PQError(f"num_prompts={num_prompts!r} is out of range: need an integer >= 1")
    if num_prompts > len(rows):
        raise PQError(f"num_prompts={num_prompts} is more than the {len(rows)} prompts available")
    if prompt_seed is None:
        raise PQError(f"num_prompts={num_prompts} needs prompt_seed (the seed that draws them)")
    if prompt_seed < 0:
        raise PQError(f"prompt_seed={prompt_seed!r} is out of range: need an integer >= 0")
    chosen = np.random.default_rng(prompt_seed).permutation(len(rows))[:num_prompts]
    return [rows[i] for i in sorted(chosen.tolist())]


def check_text(path: Path, field: str, index: int, value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        raise PQError(f"prompts file {str(path)!r}: row {index} has no value in field {field!r}")
    if not isinstance(value, str):
        raise PQError(f"prompts file {str(path)!r}: row {index} field {field!r} is {type(value).__name__}, "
                      "not text")
    return value


# ------------------------------------------------------------------------------------------------ readers
def read_field(path: Path, field: str) -> list[object]:
    """The values of column `field`, in file order, from any supported format."""
    if path.is_dir():
        return read_folder(path, field)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return read_jsonl(path, field)
    if suffix == ".csv":
        return read_csv(path, field)
    if suffix == ".parquet":
        return read_parquet([path], field)
    if suffix == ".arrow":
        return read_arrow([path], field)
    raise PQError(f"prompts file {str(path)!r}: unknown format {suffix or '(no suffix)'!r}; "
                  f"use one of {', '.join(SUFFIXES)} or a folder")


def read_jsonl(path: Path, field: str) -> list[object]:
    """One JSON object per line; blank lines are skipped, a bad line is reported by its number."""
    values = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise PQError(f"prompts file {str(path)!r} line {number}: not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise PQError(f"prompts file {str(path)!r} line {number}: not valid JSON "
                              f"({err.msg})") from None
            if not isinstance(record, dict):
                raise PQError(f"prompts file {str(path)!r} line {number}: expected a JSON object, "
                              f"got {type(record).__name__}")
            if field not in record:
                raise PQError(f"prompts file {str(path)!r} line {number}: no field {field!r} "
                              f"(fields: {', '.join(map(str, record)) or 'none'}); choose one with "
                              "--prompt-field")
            values.append(record[field])
    return values


def read_csv(path: Path, field: str) -> list[object]:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return []
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise PQError(f"prompts file {str(path)!r}: malformed CSV ({first_line(err)})") from None
    return column(path, field, list(frame.columns), lambda: frame[field].tolist())


def read_parquet(files: list[Path], field: str) -> list[object]:
    values: list[object] = []
    for f in files:
        try:
            names = pq.read_schema(f).names
            values += column(f, field, names,
                             lambda f=f: pq.read_table(f, columns=[field]).column(0).to_pylist())
        except (pa.ArrowInvalid, OSError) as err:
            raise PQError(f"prompts file {str(f)!r}: not a readable Parquet file "
                          f"({first_line(err)})") from None
    return values



def read_arrow(files: list[Path], field: str) -> list[object]:
    """Arrow IPC files as `datasets` writes them (stream format), or the IPC file format."""
    values: list[object] = []
    for f in files:
        try:
            table = pa.ipc.open_stream(f).read_all()
        except pa.ArrowInvalid:
            try:
                table = pa.ipc.open_file(f).read_all()
            except pa.ArrowInvalid:
                raise PQError(f"prompts file {str(f)!r} is not an Arrow file") from None
        values += column(f, field, table.column_names, lambda t=table: t.column(field).to_pylist())
    return values


def read_folder(path: Path, field: str) -> list[object]:
    """A `datasets.save_to_disk` folder (state.json lists its Arrow files) or a folder of Parquet files."""
    if (path / "dataset_dict.json").exists():
        splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
        raise PQError(f"prompts folder {str(path)!r} holds several splits ({', '.join(splits)}): "
                      f"pass one of them, e.g. {str(path / (splits[0] if splits else 'test'))!r}")
    state = path / "state.json"
    if state.exists():
        files = [path / d["filename"]
                 for d in json.loads(state.read_text(encoding="utf-8")).get("_data_files", [])]
        return read_arrow(files, field)
    parquet = sorted(p for p in path.rglob("*.parquet") if not p.name.startswith((".", "_")))
    if not parquet:
        raise PQError(f"prompts folder {str(path)!r} holds no Parquet files and no datasets state.json")
    return read_parquet(parquet, field)


def column(path: Path, field: str, names: list[str], get) -> list[object]:
    if field not in names:
        raise PQError(f"prompts file {str(path)!r} has no field {field!r} (fields: "
                      f"{', '.join(names) or 'none'}); choose one with --prompt-field")
    return get()
