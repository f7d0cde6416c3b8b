"""Prompt files: JSONL, CSV, Parquet (a file or a folder of files) or a `datasets.save_to_disk` folder.

`load_prompts` returns `[(prompt_id, text)]` where `prompt_id` is the row's index in the file (its record
index for JSONL, blank lines skipped), so ids stay meaningful after filtering and subsampling. The optional
filters reproduce the paper's selection: prompts of at most `max_chars` characters, then `num_prompts` of
them drawn with `prompt_seed` - the same rows `datasets.Dataset.shuffle(seed).select(range(K))` picks
(numpy's `default_rng(seed).permutation`), returned in file order.

Bad input - a malformed JSONL line (reported with its line number), an empty file, a missing field, a value
that is not text, an empty or whitespace-only prompt, a prompt that repeats an earlier one (unless
`allow_duplicates`), a corrupt or incomplete `datasets` folder or one holding several splits - raises a
one-line PQError. Anything that is not a regular file or a folder (a FIFO, a device, a socket, also behind a
link) is refused before it is opened, so a pipe that never ends cannot hang the run. Reading a `datasets`
folder needs only pyarrow.
"""

from __future__ import annotations

import json
import os
import stat
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
    allow_duplicates: bool = False,
) -> list[tuple[int, str]]:
    """Read the prompts of `path`, filter by length, subsample; see the module docstring."""
    path = Path(path)
    if not path.exists():
        raise PQError(f"prompts file {str(path)!r} does not exist")
    values = read_field(path, field)
    if not values:
        raise PQError(f"prompts file {str(path)!r} holds no prompts")
    rows = [(i, check_text(path, field, i, v)) for i, v in enumerate(values)]
    if not allow_duplicates:
        first: dict[str, int] = {}
        for i, text in rows:
            if text in first:
                raise PQError(f"prompts file {str(path)!r}: row {i} repeats row {first[text]} "
                              f"({text[:40]!r}): a repeated prompt counts twice in every mean; remove it, or "
                              "keep the copies with allow_duplicates (--allow-duplicate-prompts)")
            first[text] = i
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
    if not value.strip():
        raise PQError(f"prompts file {str(path)!r}: row {index} field {field!r} is "
                      f"{'empty' if not value else 'only whitespace'}: give every row a prompt (the template "
                      "alone is no prompt)")
    return value


def regular(path: Path, what: str = "prompts file") -> Path:
    """`path` when it is a regular file (after links); a one-line PQError, before opening it, otherwise."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise PQError(f"{what} {str(path)!r} does not exist") from None
    except OSError as err:
        raise PQError(f"{what} {str(path)!r} cannot be read ({err.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
        raise PQError(f"{what} {str(path)!r} is {kind}: give a regular file or a folder")
    return path


# ------------------------------------------------------------------------------------------------ readers
def read_field(path: Path, field: str) -> list[object]:
    """The values of column `field`, in file order, from any supported format."""
    if path.is_dir():
        return read_folder(path, field)
    regular(path)
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
        regular(f)
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
        regular(f)
        try:
            table = pa.ipc.open_stream(f).read_all()
        except (pa.ArrowInvalid, OSError):
            try:
                table = pa.ipc.open_file(f).read_all()
            except (pa.ArrowInvalid, OSError):
                raise PQError(f"prompts file {str(f)!r} is not a readable Arrow file (truncated or of "
                              "another kind)") from None
        values += column(f, field, table.column_names, lambda t=table: t.column(field).to_pylist())
    return values


def read_folder(path: Path, field: str) -> list[object]:
    """A `datasets.save_to_disk` folder (state.json lists its Arrow files) or a folder of Parquet files."""
    if (path / "dataset_dict.json").exists():
        record = _json_record(path / "dataset_dict.json")
        splits = record.get("splits") if isinstance(record.get("splits"), list) else []
        splits = [str(s) for s in splits] or sorted(p.name for p in path.iterdir() if p.is_dir())
        raise PQError(f"prompts folder {str(path)!r} is a DatasetDict with several splits "
                      f"({', '.join(splits) or 'none listed'}): pass one of them, e.g. "
                      f"{str(path / (splits[0] if splits else 'test'))!r}")
    state = path / "state.json"
    if state.exists():
        entries = _json_record(state).get("_data_files")
        if not isinstance(entries, list) or not entries or not all(
                isinstance(d, dict) and isinstance(d.get("filename"), str) for d in entries):
            raise PQError(f"prompts folder {str(state)!r} lists no data files (_data_files): not a complete "
                          "datasets folder; save it again with Dataset.save_to_disk")
        files = [path / d["filename"] for d in entries]
        missing = [f for f in files if not f.exists()]
        if missing:
            raise PQError(f"prompts folder {str(path)!r} is incomplete: {missing[0].name!r}, listed in "
                          f"state.json, is missing ({len(missing)} of {len(files)} data files)")
        return read_arrow(files, field)
    parquet = sorted(p for p in path.rglob("*.parquet") if not p.name.startswith((".", "_")))
    if not parquet:
        raise PQError(f"prompts folder {str(path)!r} holds no Parquet files and no datasets state.json")
    return read_parquet(parquet, field)


def _json_record(path: Path) -> dict:
    """A datasets folder's JSON record (state.json, dataset_dict.json) as a dict; PQError if unreadable."""
    regular(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PQError(f"prompts folder file {str(path)!r} is not valid JSON ({first_line(err)}): the "
                      "datasets folder is corrupt") from None
    if not isinstance(record, dict):
        raise PQError(f"prompts folder file {str(path)!r} is not a JSON object: the datasets folder is "
                      "corrupt")
    return record


def column(path: Path, field: str, names: list[str], get) -> list[object]:
    if field not in names:
        raise PQError(f"prompts file {str(path)!r} has no field {field!r} (fields: "
                      f"{', '.join(names) or 'none'}); choose one with --prompt-field")
    return get()
