"""Atomic writes and run metadata: no half-written output, every output folder says what made it."""

from __future__ import annotations

import fnmatch
import json
import math
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

from pqtradeoff.errors import PQError

TRACKED_PACKAGES = (
    "pqtradeoff", "numpy", "scipy", "pandas", "pyarrow", "pydantic", "matplotlib", "plotly",
    "torch", "transformers", "tokenizers", "vadersentiment",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that can change our numbers (None where absent)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` on a hidden temporary file beside `path`, then rename it into place.

    A reader (or a resumed run) therefore sees either the whole file or none of it. The temporary name
    starts with '.', which pyarrow's dataset discovery ignores.
    """
    return atomic_write_all([(path, write)])[0]


def atomic_write_all(writes: Sequence[tuple[str | Path, Callable[[Path], None]]]) -> list[Path]:
    """`atomic_write` of several files, every one written before the first is renamed into place: files
    computed together appear together (only a kill between the renames, microseconds apart, splits them)."""
    temps: list[tuple[Path, Path]] = []
    try:
        for path, write in writes:
            path = Path(path)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise PQError(f"cannot write {str(path)!r}: {str(path.parent)!r} is a file, not a folder"
                              ) from None
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            temps.append((Path(tmp), path))
            write(Path(tmp))
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        for tmp_path, path in temps:
            os.replace(tmp_path, path)
    finally:
        for tmp_path, _ in temps:
            if tmp_path.exists():
                tmp_path.unlink()
    return [path for _, path in temps]


#: The lock file a writing process holds in its output folder (hidden: Parquet readers skip it).
LOCK_FILE = ".pqtradeoff.lock"
_held_locks: set[Path] = set()


def _holder(lock: Path) -> dict[str, Any] | None:
    """The process recorded in a lock file, or None when the file is gone or unreadable."""
    try:
        return json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _alive(holder: dict[str, Any] | None, lock: Path) -> bool:
    """Whether a lock's holder may still be writing: a running process on this machine, any process on another
    machine (it cannot be checked), or a lock file created in the last few seconds that is not written yet."""
    import time

    if holder is None:
        try:
            return time.time() - lock.stat().st_mtime < 5
        except OSError:
            return False
    if holder.get("host") != platform.node():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _release_locks() -> None:
    for lock in list(_held_locks):
        holder = _holder(lock)
        if holder and holder.get("pid") == os.getpid():
            lock.unlink(missing_ok=True)
    _held_locks.clear()


def lock_folder(directory: str | Path, command: str) -> Path:
    """Make this process the only writer of `directory`: a lock file naming the holder (pid, host, command).

    A second process is refused with a one-line PQError naming the holder; a lock whose process is dead (a run
    killed with kill -9) is taken over. The lock is held until this process exits (a process that runs several
    stages, or resumes into the same folder, takes it again freely).
    """
    import atexit
    import time

    lock = Path(directory) / LOCK_FILE
    me = {"pid": os.getpid(), "host": platform.node(), "command": command, "argv": sys.argv,
          "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if holder and holder.get("pid") == os.getpid() and holder.get("host") == platform.node():
                return lock
            if _alive(holder, lock):
                who = (f"pid {holder.get('pid')} on {holder.get('host')}, {holder.get('command')}, since "
                       f"{holder.get('since')}") if holder else "a process that is starting"
                raise PQError(f"--out {str(directory)!r} is being written by another process ({who}): "
                              f"wait for it "
                              f"to finish or choose another --out; if that process is gone, delete "
                              f"{str(lock)!r}") from None
            lock.unlink(missing_ok=True)  # stale: its holder is dead
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(me, f)
        if not _held_locks:
            atexit.register(_release_locks)
        _held_locks.add(lock)
        return lock
    raise PQError(f"--out {str(directory)!r}: could not take the lock {str(lock)!r}; another process "
                  f"keeps taking it")


def claim_folder(directory: str | Path, command: str) -> int:
    """Lock `directory` for this process (`lock_folder`), then delete the temporaries a killed run left there.

    Only the lock holder removes temporaries, so a second live writer's files are never touched: it is refused
    before it gets here. Returns the number of temporaries removed."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    lock_folder(directory, command)
    return remove_stale_temporaries(directory)


def remove_stale_temporaries(directory: str | Path) -> int:
    """Delete the hidden temporary files a killed run left in `directory`. Call it only while holding the
    folder's lock (`claim_folder`): another live writer's temporaries would look the same."""
    removed = 0
    for tmp in Path(directory).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def _json_default(obj: Any) -> Any:
    """What json cannot write itself (numpy and torch values were already turned into Python by `_finite`)."""
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def _finite(obj: Any) -> Any:
    """Replace NaN and infinities by None so the JSON is strict (readers in any language can load it)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return _finite(obj.item())
    if hasattr(obj, "tolist"):
        return _finite(obj.tolist())
    return obj


def to_json(obj: Any) -> str:
    """Strict JSON in the order the caller built it; NaN/inf become null."""
    return json.dumps(_finite(obj), indent=2, default=_json_default, allow_nan=False) + "\n"


def write_json(path: str | Path, obj: Any) -> Path:
    text = to_json(obj)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def run_record(command: str, settings: dict[str, Any]) -> dict[str, Any]:
    """What made an output folder: the command, its full resolved settings, and package versions."""
    return {
        "command": command,
        "argv": sys.argv,
        "settings": settings,
        "versions": package_versions(),
    }


#: The record every stage writes beside its outputs (a leading '_' keeps Parquet readers away from it).
RUN_RECORD = "_run.json"


@dataclass
class StageResult:
    """What a sharded stage (`generate`, `score`) did: shards planned, written now, found done and moved
    aside; the rows and tokens it processed now, and the seconds it took."""

    out_dir: Path
    shards: int
    written: int
    reused: int
    superseded: list[str]
    rows_written: int
    tokens: int
    seconds: float

    #: How a subclass names what it did to a shard, its token count (in `to_json`) and its throughput.
    VERB: ClassVar[str] = "written"
    TOKENS_KEY: ClassVar[str] = "tokens"
    RATE_LABEL: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "shards": self.shards, "written": self.written,
                "reused": self.reused, "superseded": self.superseded, "rows_written": self.rows_written,
                self.TOKENS_KEY: self.tokens, "seconds": self.seconds}

    def describe(self) -> str:
        moved = f", {len(self.superseded)} superseded (moved to _superseded/)" if self.superseded else ""
        rate = (f", {self.RATE_LABEL}{self.tokens / self.seconds:.0f} tokens/s"
                if self.tokens and self.seconds > 0 else "")
        return f"{self.written} of {self.shards} shards {self.VERB}, {self.reused} reused{moved}{rate}"


@contextmanager
def progress_bar(enabled: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A rich progress bar with ETA (or nothing):
    `with progress_bar(on, total, label) as advance: advance(n)`."""
    if not enabled or total == 0:
        yield lambda n: None
        return
    from rich.progress import (  # lazy: rich
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn()) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


# ------------------------------------------------------------------------------------------ output folders
# The rule for the output folders of `analyze`, `demo` and `toy`: what a command may write into, and what it
# replaces there.  The rule (docs/reliability.md): `--out` must be empty (or not exist yet), or hold only
# entries that the command itself writes (a previous run of the same command). Anything else in it - another
# command's outputs, a corpus, the user's own files - is refused with a one-line error naming the first such
# entry, before any work. Into a previous run, the command removes every file it owns just before it writes
# the new ones (figures in every format included), so no stale figure or report of an earlier run ever stays
# beside a new summary. The stages `generate` and `score` follow their own, resumable rule
# (`pipeline.resume.check_resumable`). : Figure formats the commands can write (`--format`).
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
