"""Resuming a stage into a folder it wrote before: which recorded settings may change, and the check.

Every settings field has a resume policy (`experiment.settings`: `json_schema_extra={"resume": ...}`):
"fixed" (the default: changing it would alter rows already written), "grow" (it only adds or removes whole
shards) or "free" (it cannot change any output). `check_resumable` compares a folder's `_run.json` with the
settings of a new run under that policy.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pqtradeoff.errors import PQError
from pqtradeoff.io import RUN_RECORD


def resume_policy(model: type[BaseModel], prefix: str = "") -> dict[str, str]:
    """Dotted field path -> "fixed" | "grow" | "free", walking nested sections."""
    out: dict[str, str] = {}
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        nested = _section_type(field.annotation)
        if nested is not None:
            out |= resume_policy(nested, path + ".")
        else:
            out[path] = str(extra.get("resume", "fixed"))
    return out


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The Section class inside `X` or `X | None`, else None."""
    candidates = [annotation, *typing.get_args(annotation)]
    for c in candidates:
        if isinstance(c, type) and issubclass(c, BaseModel):
            return c
    return None


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (a None section stays one key)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def fixed_changes(old: dict[str, Any], new: dict[str, Any],
                  policy: dict[str, str]) -> list[tuple[str, Any, Any]]:
    """The (key, old, new) of every "fixed" setting that differs between two settings dicts (nested or flat).

    Keys are compared where both sides recorded them, a section recorded as None (e.g. no prior) counting as
    recording each of its keys as None; a key only one side knows at all (a setting added by a newer version)
    is not compared."""
    old, new = flatten(old), flatten(new)

    def value(side: dict[str, Any], key: str) -> tuple[bool, Any]:
        while True:
            if key in side:
                return True, side[key]
            if "." not in key:
                return False, None
            key = key.rsplit(".", 1)[0]
            if key in side and side[key] is not None:
                return False, None

    changes = []
    for key in sorted(set(old) | set(new), key=lambda k: (k.split(".")[0] in DIGEST_KEYS, k)):
        (in_old, a), (in_new, b) = value(old, key), value(new, key)
        if in_old and in_new and a != b and policy_of(key, policy) == "fixed":
            changes.append((key, a, b))
    return changes


#: Recorded digests of a stage's inputs (`pipeline.digests`): listed after the settings the user wrote, whose
#: change they often only follow (a new model name is also a new model digest).
DIGEST_KEYS = ("inputs_sha256", "prompts_sha256")


def policy_of(key: str, policy: dict[str, str]) -> str:
    """The policy of a dotted key: its own, else that of the nearest enclosing section, else "fixed"."""
    while True:
        if key in policy:
            return policy[key]
        if "." not in key:
            return "fixed"
        key = key.rsplit(".", 1)[0]


def describe_changes(changes: list[tuple[str, Any, Any]]) -> str:
    """`key: old -> new; ...` for a one-line message (long values shortened)."""
    def short(v: Any) -> str:
        text = repr(v)
        return text if len(text) <= 60 else text[:57] + "..."

    return "; ".join(f"{k}: {short(a)} -> {short(b)}" for k, a, b in changes)


def check_resumable(out_dir: Path, record: dict[str, Any], policy: dict[str, str] | None = None) -> list[str]:
    """Refuse to mix two different runs in one folder; return the settings that changed but may change.

    An existing `_run.json` must hold the same settings, compared key by key after flattening nested sections,
    except the keys `policy` marks "grow" (they only add or remove whole shards) or "free" (they cannot change
    any output). A record beside no output at all (a run that failed before writing anything) never blocks.
    """
    path = Path(out_dir) / RUN_RECORD
    if not path.exists():
        return []
    try:
        old = json.loads(path.read_text(encoding="utf-8")).get("settings", {}) or {}
    except (OSError, ValueError, AttributeError):
        raise PQError(f"{str(path)!r} is not a readable run record: delete it or use a new --out "
                      "folder") from None
    if not any(p.suffix in (".parquet", ".json") and not p.name.startswith((".", "_"))
               for p in Path(out_dir).iterdir()):
        return []
    policy = policy or {}
    changes = fixed_changes(old, record["settings"], policy)
    if changes:
        raise PQError(f"--out {str(out_dir)!r} holds a run made with other settings "
                      f"({describe_changes(changes)}); use a new --out folder, or the old settings to resume")
    old, new = flatten(old), flatten(record["settings"])
    return [k for k in new if k in old and old[k] != new[k] and policy_of(k, policy) == "grow"]
