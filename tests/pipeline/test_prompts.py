"""Prompt loading: every format gives the same rows; bad files give one-line PQErrors; seeded draws."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pqtradeoff.errors import PQError
from pqtradeoff.pipeline.prompts import load_prompts, subsample

TEXTS = ['hello, "world"', "NA", "multi\nline prompt", " leading space", "x" * 300, "ünïcödé ✓"]


def write_jsonl(path, records, blank_after=None):
    lines = [json.dumps(r) for r in records]
    if blank_after is not None:
        lines.insert(blank_after, "   ")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_datasets_folder(path, texts, chunks=2):
    """The layout `datasets.Dataset.save_to_disk` writes: Arrow IPC stream files listed in state.json."""
    path.mkdir()
    names = []
    step = -(-len(texts) // chunks)
    for k in range(chunks):
        table = pa.table({"prompt": texts[k * step:(k + 1) * step],
                          "other": list(range(len(texts[k * step:(k + 1) * step])))})
        name = f"data-{k:05d}-of-{chunks:05d}.arrow"
        with pa.ipc.new_stream(path / name, table.schema) as writer:
            writer.write_table(table)
        names.append({"filename": name})
    (path / "state.json").write_text(json.dumps({"_data_files": names, "_split": "test"}), encoding="utf-8")
    (path / "dataset_info.json").write_text("{}", encoding="utf-8")
    return path


def test_every_format_gives_the_same_rows(tmp_path):
    want = list(enumerate(TEXTS))
    jsonl = write_jsonl(tmp_path / "p.jsonl", [{"prompt": t, "id": i} for i, t in enumerate(TEXTS)],
                        blank_after=2)
    csv = tmp_path / "p.csv"
    pd.DataFrame({"id": range(len(TEXTS)), "prompt": TEXTS}).to_csv(csv, index=False)
    parquet = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": TEXTS}), parquet)
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(pa.table({"prompt": TEXTS[:4]}), folder / "part-0.parquet")
    pq.write_table(pa.table({"prompt": TEXTS[4:]}), folder / "part-1.parquet")
    saved = write_datasets_folder(tmp_path / "saved", TEXTS)
    for path in (jsonl, csv, parquet, folder, saved):
        assert load_prompts(path) == want, path


def test_prompt_field_and_max_chars(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"question": t} for t in TEXTS])
    got = load_prompts(path, field="question", max_chars=20)
    assert got == [(i, t) for i, t in enumerate(TEXTS) if len(t) <= 20]
    with pytest.raises(PQError, match="max_chars=0 is out of range"):
        load_prompts(path, field="question", max_chars=0)


@pytest.mark.parametrize("content, pattern", [
    ('{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": oops}\n', "line 3: not valid JSON"),
    ('{"prompt": "a"}\n\n["a list"]\n', "line 3: expected a JSON object"),
    ('{"prompt": "a"}\n{"text": "b"}\n', "line 2: no field 'prompt' \\(fields: text\\)"),
    ('{"prompt": "a"}\n{"prompt": 7}\n', "row 1 field 'prompt' is int"),
    ('{"prompt": null}\n', "row 0 has no value"),
    ("", "holds no prompts"),
    ("\n  \n", "holds no prompts"),
])
def test_bad_jsonl_is_one_line_error(tmp_path, content, pattern):
    path = tmp_path / "p.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PQError, match=pattern) as info:
        load_prompts(path)
    assert "\n" not in str(info.value)


def test_bad_files_of_other_formats(tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text("text\nhello\n", encoding="utf-8")
    with pytest.raises(PQError, match="no field 'prompt' \\(fields: text\\)"):
        load_prompts(csv)
    csv.write_text('prompt\n"unterminated\n', encoding="utf-8")
    with pytest.raises(PQError, match="malformed CSV"):
        load_prompts(csv)
    csv.write_text("", encoding="utf-8")
    with pytest.raises(PQError, match="holds no prompts"):
        load_prompts(csv)
    empty = tmp_path / "e.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], pa.string())}), empty)
    with pytest.raises(PQError, match="holds no prompts"):
        load_prompts(empty)
    with pytest.raises(PQError, match="does not exist"):
        load_prompts(tmp_path / "missing.jsonl")
    (tmp_path / "p.txt").write_text("hello\n", encoding="utf-8")
    with pytest.raises(PQError, match="unknown format '.txt'"):
        load_prompts(tmp_path / "p.txt")
    splits = tmp_path / "dd"
    splits.mkdir()
    (splits / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}), encoding="utf-8")
    with pytest.raises(PQError, match="several splits \\(train, test\\)"):
        load_prompts(splits)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(PQError, match="no Parquet files"):
        load_prompts(tmp_path / "nothing")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(PQError, match="line 2: not UTF-8"):
        load_prompts(tmp_path / "latin1.jsonl")
    (tmp_path / "junk.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(PQError, match="not a readable Parquet file"):
        load_prompts(tmp_path / "junk.parquet")


def test_draw_needs_both_settings_and_enough_prompts(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": t} for t in TEXTS])
    with pytest.raises(PQError, match="needs prompt_seed"):
        load_prompts(path, num_prompts=2)
    with pytest.raises(PQError, match="needs num_prompts"):
        load_prompts(path, prompt_seed=42)
    with pytest.raises(PQError, match="more than the 6 prompts"):
        load_prompts(path, num_prompts=7, prompt_seed=42)
    # the draw happens after the character filter, among the prompts that pass it
    got = load_prompts(path, num_prompts=2, prompt_seed=42, max_chars=20)
    assert len(got) == 2 and all(len(t) <= 20 for _, t in got)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 60), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_seeded_draw_properties(n, data, seed):
    """A draw is a subset in file order, reproducible, and the first k of one shuffle (as datasets'
    `shuffle(seed).select(range(k))`): drawing k+1 keeps the k drawn before."""
    rows = [(10 * i, f"p{i}") for i in range(n)]
    k = data.draw(st.integers(1, n))
    drawn = subsample(rows, k, seed)
    assert len(drawn) == k and drawn == sorted(drawn) and set(drawn) <= set(rows)
    assert subsample(rows, k, seed) == drawn
    if k < n:
        assert set(drawn) <= set(subsample(rows, k + 1, seed))
    assert subsample(rows, n, seed) == rows


def test_repeated_prompts_are_refused_unless_kept_on_purpose(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": t} for t in ("a", "b", "a", "c")])
    with pytest.raises(PQError, match=r"row 2 repeats row 0 \('a'\)"):
        load_prompts(path)
    assert load_prompts(path, allow_duplicates=True) == [(0, "a"), (1, "b"), (2, "a"), (3, "c")]


@pytest.mark.parametrize("text", ["", " ", "\n\t "])
def test_empty_and_whitespace_prompts_are_refused_by_row(tmp_path, text):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, {"prompt": text}])
    with pytest.raises(PQError, match="row 1 field 'prompt' is (empty|only whitespace)"):
        load_prompts(path)
