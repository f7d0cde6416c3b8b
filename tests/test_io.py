"""Atomic writes, strict JSON, the resume check and the clean-up of a killed run's temporaries."""

from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pytest

from pqtradeoff.errors import PQError
from pqtradeoff.io import RUN_RECORD, atomic_write, remove_stale_temporaries, to_json, write_json
from pqtradeoff.pipeline.resume import check_resumable


# ------------------------------------------------------------------------------------------ atomic_write
def test_atomic_write_creates_folders_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a" / "b" / "out.txt"
    seen = []

    def write(tmp):
        seen.append(tmp)
        assert tmp.parent == target.parent and tmp.name.startswith(".out.txt.") and tmp.suffix == ".tmp"
        assert not target.exists()  # nothing is visible under the final name while writing
        tmp.write_text("done")

    assert atomic_write(target, write) == target
    assert target.read_text() == "done" and not seen[0].exists()
    assert os.listdir(target.parent) == ["out.txt"]


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(target, fail)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]  # the temporary was removed


def test_atomic_write_gives_the_usual_permissions(tmp_path):
    target = atomic_write(tmp_path / "out.txt", lambda tmp: tmp.write_text("x"))
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600


def test_atomic_write_under_a_file_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(PQError, match="is a file, not a folder"):
        atomic_write(tmp_path / "file" / "out.txt", lambda tmp: tmp.write_text("x"))


def test_remove_stale_temporaries_removes_only_hidden_temporaries(tmp_path):
    for name in (".shard.parquet.abc.tmp", ".x.tmp", "shard.parquet", "keep.tmp", ".hidden"):
        (tmp_path / name).write_text("x")
    assert remove_stale_temporaries(tmp_path) == 2
    assert sorted(os.listdir(tmp_path)) == [".hidden", "keep.tmp", "shard.parquet"]
    assert remove_stale_temporaries(tmp_path) == 0


# ------------------------------------------------------------------------------------------ strict JSON
def test_write_json_is_strict_nan_and_infinities_become_null(tmp_path):
    obj = {"nan": float("nan"), "inf": math.inf, "list": [1.0, -math.inf, np.float64("nan")],
           "array": np.array([0.5, np.nan]), "scalar": np.float32(2.0), "int": np.int64(3), "path": tmp_path}
    path = write_json(tmp_path / "s.json", obj)
    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    back = json.loads(text)
    assert back == {"nan": None, "inf": None, "list": [1.0, None, None], "array": [0.5, None], "scalar": 2.0,
                    "int": 3, "path": str(tmp_path)}
    assert list(back) == list(obj)  # the caller's order is kept


def test_to_json_refuses_what_it_cannot_write():
    with pytest.raises(TypeError, match="object"):
        to_json({"x": object()})


# ------------------------------------------------------------------------------------------ resuming
def test_check_resumable_allows_same_or_new_settings_and_refuses_changed_ones(tmp_path):
    check_resumable(tmp_path, {"settings": {"seed": 0}})  # no record yet: a fresh folder
    write_json(tmp_path / RUN_RECORD, {"settings": {"seed": 0, "model": "gpt2"}})
    # a record beside no output: replaceable
    check_resumable(tmp_path, {"settings": {"seed": 1, "model": "gpt2"}})
    (tmp_path / "shard.parquet").write_bytes(b"")
    check_resumable(tmp_path, {"settings": {"seed": 0, "model": "gpt2"}})
    check_resumable(tmp_path, {"settings": {"seed": 0, "batch": 8}})  # a key the old run did not record
    with pytest.raises(PQError) as info:
        check_resumable(tmp_path, {"settings": {"seed": 1, "model": "gpt2"}})
    message = str(info.value)
    assert "\n" not in message and "seed: 0 -> 1" in message and "model" not in message


def test_atomic_write_all_writes_every_file_or_none(tmp_path):
    from pqtradeoff.io import atomic_write_all

    def fail(tmp):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_all([(tmp_path / "a.txt", lambda t: t.write_text("a")), (tmp_path / "b.txt", fail)])
    assert list(tmp_path.iterdir()) == []  # the first file was written, but never renamed into place
    paths = atomic_write_all([(tmp_path / "a.txt", lambda t: t.write_text("a")),
                              (tmp_path / "b.txt", lambda t: t.write_text("b"))])
    assert [p.read_text() for p in paths] == ["a", "b"] and sorted(p.name for p in tmp_path.iterdir()) == \
        ["a.txt", "b.txt"]
