"""An experiment as one file: read and write a TOML config (`run`'s input, `init`, `--print-config`).

`load_experiment(path)` reads a TOML file (stdlib `tomllib`) into `ExperimentSettings`: a syntax error, an
unknown key or a bad value is a one-line PQError naming the file, the key and, where it can be found, the
line. Relative paths in the file (the prompts file, local model folders) are relative to the file.
`to_toml` / `resolved_config` write settings back as commented TOML; `example_config` gives a shipped example.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from pqtradeoff.errors import PQError, validation_message
from pqtradeoff.experiment.settings import ExperimentSettings

log = logging.getLogger("pqtradeoff")

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


# ------------------------------------------------------------------------------------------------- reading
def load_experiment(path: str | Path) -> ExperimentSettings:
    """Read and validate an experiment file."""
    path = Path(path)
    if not path.is_file():
        raise PQError(f"config {str(path)!r} does not exist" if not path.exists() else
                      f"config {str(path)!r} is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise PQError(f"{path} line {line}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                      f"{err.start}); save the file as UTF-8") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise PQError(f"{path}: not valid TOML: {err}") from None
    raw = _resolve_paths(raw, path.parent)
    try:
        return ExperimentSettings(**raw)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"] if not isinstance(p, int))  # an item: its list's line
        line = _line_of(text, key)
        where = f"{path}{f' line {line}' if line else ''}: "
        raise PQError(validation_message(err, where)) from None


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make the prompts file and local model folders relative to the config file's folder."""
    raw = copy.deepcopy(raw)  # TOML values may be dates and times: the settings refuse them by name
    prompts = raw.get("prompts")
    if (isinstance(prompts, dict) and isinstance(prompts.get("file"), str)
            and not Path(prompts["file"]).is_absolute()):
        prompts["file"] = str((base / prompts["file"]).resolve())
    for spec in (raw.get("models") or {}).values() if isinstance(raw.get("models"), dict) else []:
        name = spec.get("name") if isinstance(spec, dict) else None
        if isinstance(name, str) and name.startswith(("./", "../")):
            spec["name"] = str((base / name).resolve())
    return raw


def _line_of(text: str, dotted: str) -> int | None:
    """The line where a dotted key is set: `[a.b]` header then `c =`, or `c =` anywhere as a fallback."""
    parts = dotted.split(".")
    lines = text.splitlines()
    section: list[str] = []
    fallback = None
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        header = re.match(r"^\[([^\[\]]+)\]", stripped)
        if header:
            section = [s.strip() for s in header.group(1).split(".")]
            if section == parts:
                return number
            continue
        key = re.match(r"^([A-Za-z0-9_\-]+)\s*=", stripped)
        if key and section + [key.group(1)] == parts[:len(section) + 1] and len(section) + 1 == len(parts):
            return number
        if key and key.group(1) == parts[-1] and fallback is None:
            fallback = number
    return fallback


def with_executor(settings: ExperimentSettings, **overrides: Any) -> ExperimentSettings:
    """The settings with the `[executor]` keys that the command line gives (None: keep the file's) replaced;
    a Ray address alone implies the ray executor."""
    from pqtradeoff.errors import validated

    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return settings
    if "ray_address" in given:
        given.setdefault("kind", "ray")
    values = settings.model_dump()
    values["executor"] = values["executor"] | given
    return validated(ExperimentSettings, **values)


# ------------------------------------------------------------------------------------------------- writing
def to_toml(values: dict[str, Any], descriptions: dict[str, str] | None = None) -> str:
    """A TOML text for nested settings: one table per section, unset values as comments (TOML has no null),
    each key preceded by its help when `descriptions` gives one."""
    lines: list[str] = []

    def emit(table: dict[str, Any], prefix: str) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        if prefix and (scalars or not table):
            lines.append(f"\n[{prefix}]")
        for key, value in scalars.items():
            path = f"{prefix}.{key}" if prefix else key
            if descriptions and descriptions.get(path):
                lines.append(f"# {descriptions[path]}")
            lines.append(f"# {key} =  (unset)" if value is None else f"{key} = {_toml_value(value)}")
        for key, value in table.items():
            if isinstance(value, dict):
                emit(value, f"{prefix}.{key}" if prefix else key)

    emit(values, "")
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def descriptions_of(model: Any, prefix: str = "") -> dict[str, str]:
    """Dotted key -> help text, from the settings models' field descriptions."""
    out: dict[str, str] = {}
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        for c in [info.annotation, *typing.get_args(info.annotation)]:
            if isinstance(c, type) and issubclass(c, BaseModel):
                out |= descriptions_of(c, path + ".")
                break
        else:
            if info.description:
                out[path] = info.description
    return out


def resolved_config(settings: ExperimentSettings) -> str:
    """The config with every default filled in (`run CONFIG --print-config`)."""
    return to_toml(settings.model_dump(mode="json"), descriptions_of(ExperimentSettings))


def example_names() -> list[str]:
    return sorted(p.stem for p in EXAMPLES_DIR.glob("*.toml"))


def example_config(name: str | None) -> str:
    """A commented starting config: a shipped example by name, or the smallest complete one."""
    if name is None:
        name = "smollm2-gemma-vader"
    path = EXAMPLES_DIR / f"{name}.toml"
    if not path.is_file():
        raise PQError(f"--example {name!r} is not one of {', '.join(example_names())}")
    text = path.read_text(encoding="utf-8")
    for prompts in sorted(EXAMPLES_DIR.glob("*.jsonl")):  # the shipped prompt files, by their full path
        text = text.replace(f'file = "{prompts.name}"', f"file = {json.dumps(str(prompts))}")
    return text
