"""The rule for the output folders of `analyze`, `demo` and `toy`: what a command may write into, and what it
replaces there.

The rule (docs/reliability.md): `--out` must be empty (or not exist yet), or hold only entries that the
command
itself writes (a previous run of the same command). Anything else in it - another command's outputs, a corpus,
the user's own files - is refused with a one-line error naming the first such entry, before any work. Into a
previous run, the command removes every file it owns just before it writes the new ones (figures in every
format included), so no stale figure or report of an earlier run ever stays beside a new summary.
The stages `generate` and `score` follow their own, resumable rule (`pipeline.resume.check_resumable`).
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

from pqtradeoff.errors import PQError

#: Figure formats the commands can write (`--format`).
FIGURE_FORMATS = ("png", "pdf", "svg")
_FIGURES = tuple(f"*.{ext}" for ext in FIGURE_FORMATS)
_HIDDEN = (".*.tmp", ".pqtradeoff.lock")

#: Per command: the files it writes (glob patterns on names directly in --out), and the sub-folders it
# manages.
OWNED: dict[str, tuple[str, ...]] = {
    "analyze": ("summary.json", "corpora.parquet", "report.html", "_run.json", *_FIGURES, *_HIDDEN),
    "toy": ("summary.json", *_FIGURES, *_HIDDEN),
}
OWNED["demo"] = OWNED["analyze"]
FOLDERS: dict[str, tuple[str, ...]] = {"analyze": ("rewards",), "toy": (),
                                       "demo": ("corpus", "scored", "rewards")}


def _owned(name: str, command: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in OWNED[command])


def check_out(out: Path | str) -> Path:
    """An output location must be a folder (or not exist yet) under a writable parent: checked before any
    work."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PQError(f"--out {str(out)!r} is a file, not a folder")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise PQError(f"--out {str(out)!r} is under {str(parent)!r}, which is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PQError(f"--out {str(out)!r}: {str(parent)!r} is not writable")
    return out


def check_output_folder(out: Path | str, command: str) -> Path:
    """Refuse an `--out` that holds anything `command` does not write itself (checked before any work)."""
    out = check_out(out)
    if not out.is_dir():
        return out
    for entry in sorted(out.iterdir()):
        is_folder = entry.is_dir()
        if (is_folder and entry.name in FOLDERS[command]) or (not is_folder and _owned(entry.name, command)):
            continue
        kind = "folder" if is_folder else "file"
        raise PQError(f"--out {str(out)!r} holds the {kind} {entry.name!r}, which `{command}` does not "
                      f"write: "
                      f"choose an empty or new folder (a previous `{command}` output folder is replaced)")
    return out


def clear_owned(out: Path | str, command: str) -> list[str]:
    """Delete the files `command` owns directly in `out` (not its sub-folders, not the lock); return their
    names."""
    out = Path(out)
    if not out.is_dir():
        return []
    removed = []
    for entry in sorted(out.iterdir()):
        if entry.is_file() and _owned(entry.name, command) and entry.name != ".pqtradeoff.lock":
            entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return removed
