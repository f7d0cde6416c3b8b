"""Content digests: what every stage cache of `run` is keyed on, never names, sizes or modification times.

- `file_sha256(path)`: the SHA-256 of a file's bytes.
- `shard_digests(folder)`: name -> digest of each complete Parquet shard of a corpus folder.
- `model_sha256(spec)`: one digest of the files `from_pretrained` reads for a model (its folder, its GGUF
  file, the package's GGUF file, or the hub snapshot in the local cache).
- `reward_sha256(reward, reward_model)`: the content behind a reward's name (the source file of a
  `python:module:function` reward, the reward model's files); None for a built-in reward, whose settings say
  all there is.

A stage records these beside its settings; a rerun whose digests differ redoes the stage (or refuses, where
the change would alter rows already written). SHA-256 reads ~1-2 GB/s, so a paper-scale scored corpus costs
a fraction of a second (benchmarks/digests.py); a 7B model's 14 GB a few seconds per stage.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path
from typing import Any

#: A file in the Hugging Face cache is a link into `blobs/`, named by the SHA-256 of its content (LFS files).
_BLOB = re.compile(r"^[0-9a-f]{64}$")


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def shard_digests(directory: str | Path) -> dict[str, str]:
    """Name -> SHA-256 of every complete shard of a corpus folder (`pipeline.corpus.shard_files` order)."""
    from pqtradeoff.pipeline.corpus import shard_files  # lazy: pyarrow

    return {p.name: file_sha256(p) for p in shard_files(directory)}


def tree_sha256(path: str | Path) -> str:
    """One digest of a file, or of every file under a folder (relative paths and contents; names starting with
    '.' skipped: temporaries, `.git`, lock files). A file of the Hugging Face cache that links to a blob named
    by its SHA-256 is taken at that name, so a cached 7B snapshot is not read again."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path)
        if any(part.startswith(".") for part in rel.parts):
            continue
        target = f.resolve()
        digest = (target.name if f.is_symlink() and target.parent.name == "blobs" and _BLOB.match(target.name)
                  else file_sha256(f))
        h.update(f"{rel.as_posix()}\0{digest}\n".encode())
    return h.hexdigest()


def model_sha256(spec: Any) -> str | None:
    """Digest of a model's files (`models.sources.model_files`); None where they cannot be found before
    loading."""
    from pqtradeoff.models.sources import model_files  # lazy: keeps this module light

    where = model_files(spec)
    return None if where is None or not where.exists() else tree_sha256(where)


def reward_sha256(reward: Any, reward_model: Any = None) -> str | None:
    """Digest of what a reward's name stands for: a reward model's files, a `python:module:function` reward's
    module source (its file; modules it imports are not followed); None for a built-in reward."""
    if reward.kind == "model":
        return None if reward_model is None else model_sha256(reward_model)
    if reward.kind.startswith("python:"):
        module = reward.kind.split(":")[1]
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            return None
        origin = getattr(found, "origin", None)
        return file_sha256(origin) if origin and Path(origin).is_file() else None
    return None
