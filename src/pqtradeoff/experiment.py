"""An experiment as one file: read, write and run a TOML config (`pqtradeoff run`, `init`, `--print-config`).

`load_experiment(path)` reads a TOML file (stdlib `tomllib`) into `ExperimentSettings`: a syntax error, an
unknown key or a bad value is a one-line PQError naming the file, the key and, where it can be found, the
line. Relative paths in the file (the prompts file, local model folders) are relative to the file.

`run_experiment(settings, out)` runs generate -> score -> analyze into `out/corpus`, `out/scored`,
`out/analysis`, loading each model once. Stages are cached by content (`digests`), never by names, sizes or
times: a stage whose settings and inputs are byte-identical is reused (and the run says so), a killed run
redoes only missing shards, a grown grid does only the new work; a change that would alter the corpus rows
already written (settings, prompts, the aligned model's files) is refused; a change of the reward or the
prior (its name or its content), of a corpus shard, or of the analysis settings redoes what depends on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import resource
import shutil
import time
import tomllib
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from pqtradeoff.analyze import analyze_dir
from pqtradeoff.corpus import run_settings
from pqtradeoff.digests import shard_digests
from pqtradeoff.errors import PQError, validation_message
from pqtradeoff.io import package_versions, run_record, write_json
from pqtradeoff.outdir import check_out
from pqtradeoff.settings import ExperimentSettings, describe_changes, fixed_changes
from pqtradeoff.stages import (
    SCORE_POLICY,
    ModelCache,
    run_generate,
    run_score,
    score_record_settings,
)

log = logging.getLogger("pqtradeoff")

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
STAGE_DIRS = {"generate": "corpus", "score": "scored", "analyze": "analysis"}


# ------------------------------------------------------------------------------------------------- reading
def load_experiment(path: str | Path) -> ExperimentSettings:
    """Read and validate an experiment file."""
    path = Path(path)
    if not path.is_file():
        raise PQError(f"config {str(path)!r} does not exist" if not path.exists() else
                      f"config {str(path)!r} is not a file")
    text = path.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise PQError(f"{path}: not valid TOML: {err}") from None
    raw = _resolve_paths(raw, path.parent)
    try:
        return ExperimentSettings(**raw)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        line = _line_of(text, key)
        where = f"{path}{f' line {line}' if line else ''}: "
        raise PQError(validation_message(err, where)) from None


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make the prompts file and local model folders relative to the config file's folder."""
    raw = json.loads(json.dumps(raw))  # a deep copy of plain data
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
    prompts = EXAMPLES_DIR / "prompts.jsonl"
    return text.replace('file = "prompts.jsonl"', f"file = {json.dumps(str(prompts))}")


# ------------------------------------------------------------------------------------------------- running
@dataclass
class StageReport:
    """One stage of a run: what happened (`ran`, `reused`, `partly reused`), how long, and a line to show."""

    stage: str
    status: str
    seconds: float
    detail: str
    result: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "status": self.status, "seconds": self.seconds, "detail": self.detail,
                "result": self.result}


@dataclass
class ExperimentResult:
    """What `run` did, stage by stage, with the analysis summary and the process's peak memory."""

    out_dir: Path
    stages: list[StageReport]
    summary: dict[str, Any]
    peak_memory_mib: float
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "stages": [s.to_json() for s in self.stages],
                "peak_memory_mib": self.peak_memory_mib, "seconds": self.seconds}


def _status(written: int, total: int) -> str:
    return "reused" if written == 0 else ("ran" if written == total else "partly reused")


def run_experiment(settings: ExperimentSettings, out: str | Path) -> ExperimentResult:
    """Run generate -> score -> analyze for one experiment into `out` (see the module docstring); each stage
    says what it did on the package logger (info)."""
    began = time.perf_counter()
    out = check_out(out)
    models = ModelCache()
    stages: list[StageReport] = []
    corpus, scored, analysis = (out / STAGE_DIRS[s] for s in ("generate", "score", "analyze"))

    t = time.perf_counter()
    gen = run_generate(settings.generate_settings(), corpus, models)
    stages.append(StageReport("generate", _status(gen.written, gen.shards), time.perf_counter() - t,
                              gen.describe(), gen.to_json()))
    log.info("generate: %s: %s", stages[-1].status, gen.describe())

    t = time.perf_counter()
    _reset_if_changed(scored, settings, models)
    sc = run_score(settings.score_settings(), corpus, scored, models)
    stages.append(StageReport("score", _status(sc.written, sc.shards), time.perf_counter() - t, sc.describe(),
                              sc.to_json()))
    log.info("score: %s: %s", stages[-1].status, sc.describe())

    t = time.perf_counter()
    summary, reused = _analysis(settings, scored, analysis)
    detail = (f"{len(summary['configs'])} configuration(s) analysed, {len(summary['skipped'])} skipped, "
              f"{summary['input']['rows_used']} strings")
    stages.append(StageReport("analyze", "reused" if reused else "ran", time.perf_counter() - t, detail))
    log.info("analyze: %s: %s", stages[-1].status, detail)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    result = ExperimentResult(out, stages, summary, peak, time.perf_counter() - began)
    record = run_record("run", settings.model_dump(mode="json"))
    write_json(out / "_run.json", record | {"result": result.to_json()})
    return result


def _reset_if_changed(scored: Path, settings: ExperimentSettings, models: ModelCache) -> None:
    """In a run the config is the truth: a changed reward or prior (in name or in content) rescoring
    everything, rather than refusing."""
    old = run_settings(scored) if scored.is_dir() else {}
    if not old:
        return
    new = score_record_settings(settings.score_settings(), scored.parent / STAGE_DIRS["generate"], models)
    changes = fixed_changes(old, new, SCORE_POLICY)
    if changes:
        log.info("score: settings changed (%s): scoring again", describe_changes(changes))
        shutil.rmtree(scored)


def analysis_inputs(settings: ExperimentSettings, scored: Path) -> dict[str, Any]:
    """What the analysis of a run reads: its settings, the content digest of every scored shard, and the
    versions of the packages that compute it. The cached analysis is reused only when all are identical."""
    return {"analysis": settings.analysis.model_dump(mode="json"), "shards_sha256": shard_digests(scored),
            "versions": package_versions()}


def _analysis(settings: ExperimentSettings, scored: Path, analysis: Path) -> tuple[dict[str, Any], bool]:
    """Analyse the scored corpus unless the same settings already analysed byte-identical shards."""
    inputs = analysis_inputs(settings, scored)
    fingerprint = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    stamp, summary_path = analysis / "_inputs.json", analysis / "summary.json"
    if stamp.is_file() and summary_path.is_file():
        try:
            if json.loads(stamp.read_text(encoding="utf-8")).get("fingerprint") == fingerprint:
                return json.loads(summary_path.read_text(encoding="utf-8")), True
        except ValueError:
            pass

    stamp.unlink(missing_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kept in summary.json and echoed by the CLI
        summary = analyze_dir(scored, analysis, settings.analysis)
    summary = summary.to_json() if hasattr(summary, "to_json") else summary
    write_json(stamp, {"fingerprint": fingerprint, "inputs": inputs})
    return summary, False
