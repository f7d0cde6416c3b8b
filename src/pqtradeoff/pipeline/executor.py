"""The Ray executor: shards computed by a pool of Ray Data actors, each holding one model replica.

`generate_corpus` and `score_corpus` plan their shards, check the resume and supersede old files themselves;
what is left to do goes in here as a Ray Data dataset of shard descriptions (one row, and one block, per
shard). `map_batches` runs a callable class, `ShardActor`, under `ActorPoolStrategy(size=actors)`: each actor
builds its model(s) once (`load()`), then computes the shards it is given with the same function object the
local executor runs (`generate.ShardSampler`, `score.ShardScorer`), which writes each shard file atomically
under the local executor's name. The folder is therefore the same whichever executor wrote it, so a run killed
under Ray resumes under Ray or locally. Only small status rows (name, rows, tokens) come back to the driver.

Ray is imported here only, and only when the executor is ray (`pip install "pqtradeoff[ray]"`). Pinned:
ray[data]==2.60.0, where `map_batches(..., compute=ray.data.ActorPoolStrategy(size=n))` is the way to ask for
a fixed actor pool (`concurrency=` is deprecated there).
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pqtradeoff.errors import PQError, first_line

EXTRA_HINT = 'pip install "pqtradeoff[ray]"'
#: Seconds to wait for a Ray cluster's port to answer before saying it is unreachable.
CONNECT_TIMEOUT = 5.0
#: Ray's default ports: the GCS (`ray start --head`) and the Ray Client server (`ray://`).
GCS_PORT, CLIENT_PORT = 6379, 10001
#: Longest temp dir path for a local Ray instance: Ray puts unix sockets under it (limit ~107 bytes).
MAX_TEMP_DIR = 48


def require_ray() -> Any:
    """The ray module (with Ray Data), or a one-line PQError naming the extra."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise PQError(f"executor='ray' needs Ray, which is not installed: {EXTRA_HINT}") from None
    return ray


def parse_address(address: str) -> tuple[str, int] | None:
    """(host, port) that a Ray address must answer on, or None for `auto`/`local` (Ray finds the cluster)."""
    text = address.strip()
    if text in ("auto", "local"):
        return None
    client = text.startswith("ray://")
    text = text.removeprefix("ray://")
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not port:
        return text, CLIENT_PORT if client else GCS_PORT
    if not port.isdigit() or not host:
        raise PQError(f"--ray-address {address!r} is not host:port, ray://host:port or auto")
    return host, int(port)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """A one-line PQError, after at most `timeout` seconds, when nothing listens at the address (Ray itself
    retries for a minute and then prints a long traceback)."""
    target = parse_address(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as err:
        raise PQError(f"--ray-address {address!r}: no Ray cluster answers at {target[0]}:{target[1]} "
                      f"({first_line(err)}); start one with `ray start --head`, or leave --ray-address out "
                      "for a local instance") from None


def connect(address: str | None, temp_dir: Path) -> Any:
    """The ray module, initialized: joined to the cluster at `address`, or a local instance whose temp dir
    is `temp_dir` (or a short folder under the system temp dir when that path is too long for Ray's sockets).
    A Ray already initialized in this process (a test session, an earlier stage) is used as it is."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    if address is not None:
        check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise PQError(f"--ray-address {address!r}: could not join the Ray cluster "
                          f"({first_line(err)})") from None
        return ray
    temp_dir = Path(temp_dir).resolve()
    if len(str(temp_dir)) > MAX_TEMP_DIR:
        temp_dir = Path(tempfile.mkdtemp(prefix="pqray-"))
    temp_dir.mkdir(parents=True, exist_ok=True)
    ray.init(_temp_dir=str(temp_dir), include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             configure_logging=False)
    return ray


def gpus_per_actor(ray: Any, settings: Any, device: str) -> float:
    """The GPUs each actor reserves: the setting, else 1 where the cluster has GPUs and the model may use
    one."""
    if settings.gpus_per_actor is not None:
        return float(settings.gpus_per_actor)
    return 1.0 if not str(device).startswith("cpu") and ray.cluster_resources().get("GPU", 0) > 0 else 0.0


class ShardActor:
    """One model replica per Ray actor: built once by `load()`, then `work(models, shard)` for each shard of
    the batches Ray Data sends; returns one status row per shard (name, rows, tokens, seconds, actor pid)."""

    def __init__(self, load: Callable[[], Any], work: Callable[[Any, Any], tuple[int, int]],
                 shards: Sequence[Any],
                 torch_threads: int) -> None:
        import torch

        torch.set_num_threads(torch_threads)
        self.models = load()
        self.work = work
        self.shards = list(shards)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out: dict[str, list] = {"name": [], "rows": [], "tokens": [], "seconds": [], "pid": []}
        for index, name in zip(batch["index"], batch["name"], strict=True):
            shard = self.shards[int(index)]
            if shard.name != name:
                raise PQError(f"shard {int(index)} is {shard.name!r}, not {name!r}: the plan changed")
            began = time.perf_counter()
            rows, tokens = self.work(self.models, shard)
            out["name"].append(str(name))
            out["rows"].append(rows)
            out["tokens"].append(tokens)
            out["seconds"].append(time.perf_counter() - began)
            out["pid"].append(os.getpid())
        return out


def run_shards(stage: str, work: Callable[[Any, Any], tuple[int, int]], models: Any,
               load: Callable[[], Any] | None, shards: Sequence[Any], settings: Any, out_dir: Path,
               device: str, advance: Callable[[int], None]) -> int:
    """Compute `shards` where the executor settings say: here with `models` (local), or on Ray actors that
    call `load` (ray). Advances the progress by each shard's rows; returns the tokens computed."""
    tokens = 0
    if settings is None or settings.kind == "local":
        for shard in shards:
            rows, done = work(models, shard)
            tokens += done
            advance(rows)
        return tokens
    if load is None:
        raise PQError(f"executor='ray' needs a loader of the {stage} models that the actors can call")
    for status in map_shards(stage, load, work, shards, settings, out_dir, device):
        tokens += status["tokens"]
        advance(status["rows"])
    return tokens


def map_shards(stage: str, load: Callable[[], Any], work: Callable[[Any, Any], tuple[int, int]],
               shards: Sequence[Any], settings: Any, out_dir: Path, device: str = "auto"
               ) -> Iterator[dict[str, Any]]:
    """Compute `shards` on a pool of `settings.actors` Ray actors (`ShardActor(load, work, shards)`), yielding
    each shard's status row as it completes. A local Ray instance keeps its sessions and logs in
    `out_dir/_ray`; `device` is the model's (a cpu model reserves no GPU unless asked). A failed actor
    stops the run with its error in one line; the
    shards already written stay, so rerunning the command resumes."""
    if not shards:
        return
    ray = connect(settings.ray_address, Path(out_dir) / "_ray")
    items = [{"index": i, "name": s.name} for i, s in enumerate(shards)]  # a Shard, or a corpus file's Path
    dataset = ray.data.from_items(items, override_num_blocks=len(items))  # one block per shard
    threads = max(1, int(settings.cpus_per_actor))
    dataset = dataset.map_batches(
        ShardActor, batch_size=1, fn_constructor_kwargs={"load": load, "work": work, "shards": list(shards),
                                                           "torch_threads": threads},
        compute=ray.data.ActorPoolStrategy(size=settings.actors), num_cpus=settings.cpus_per_actor,
        num_gpus=gpus_per_actor(ray, settings, device), batch_format="default")
    failure = None
    try:
        for row in dataset.iter_rows():
            yield {"name": str(row["name"]), "rows": int(row["rows"]), "tokens": int(row["tokens"]),
                   "seconds": float(row["seconds"]), "pid": int(row["pid"])}
    except PQError:
        raise
    except Exception as err:  # Ray wraps the actor's exception (RayTaskError, UserCodeException, ...)
        failure = actor_error(err)
    if failure is not None:
        # Drop the failed pipeline before raising: the error's traceback keeps this frame, and a live dataset
        # keeps its actors and their CPUs/GPUs, which a rerun in this process would wait for forever.
        del dataset
        raise PQError(f"{stage}: a Ray actor failed: {failure}; the shards already written are kept: "
                      f"rerun the "
                      "same command to resume")


def actor_error(err: BaseException) -> str:
    """The actor's own error as one line `Type: message` (a PQError: its message alone). Ray hands it back as
    text inside its wrapper (`RayTaskError(UserCodeException)`, the remote traceback in the message): the
    first
    unindented `Type: message` line of that traceback that is not Ray's own; else the innermost wrapped
    error."""
    for line in str(err).splitlines():
        found = _RAISED.match(line)
        if found and not found.group(1).startswith("ray."):
            kind, message = found.group(1).rsplit(".", 1)[-1], found.group(2).strip()
            return message if kind == "PQError" else f"{kind}: {message}"
    inner, seen = err, set()
    while id(inner) not in seen:
        seen.add(id(inner))
        nxt = getattr(inner, "cause", None) or inner.__cause__
        if not isinstance(nxt, BaseException):
            break
        inner = nxt
    return first_line(inner) if isinstance(inner, PQError) else f"{type(inner).__name__}: {first_line(inner)}"


#: `module.Type: message`, the last line(s) of a Python traceback.
_RAISED = re.compile(r"^((?:[A-Za-z_]\w*\.)*[A-Z]\w*): (.*)$")


__all__ = ["require_ray", "connect", "map_shards", "check_reachable", "ShardActor", "EXTRA_HINT"]
