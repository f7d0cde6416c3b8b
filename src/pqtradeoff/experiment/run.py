"""`run_experiment(settings, out)`: [align ->] generate -> score -> analyze into `out/aligned`, `out/corpus`,
`out/scored`, `out/analysis`, loading each model once.

Stages are cached by content (`pipeline.digests`), never by names, sizes or times: a stage whose settings and
inputs are byte-identical is reused (and the run says so), a killed run redoes only missing shards, a grown
grid does only the new work; a change that would alter the corpus rows already written (settings, prompts,
the aligned model's files) is refused; a change of the reward or the prior (its name or its content), of a
corpus shard, or of the analysis settings redoes what depends on it. With `[align]` the aligned model is made
in `out/aligned` and cached by content like every stage: the same prior, prompts, reward and training
settings reuse it; anything else retrains it, and the old model, with the corpus and the scores sampled from
it, moves to `out/_superseded/`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import resource
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pqtradeoff.analysis.analyze import analyze_dir
from pqtradeoff.errors import PQError
from pqtradeoff.experiment.settings import ExperimentSettings, ModelSpec
from pqtradeoff.experiment.stages import (
    SCORE_POLICY,
    ModelCache,
    run_align,
    run_generate,
    run_score,
    score_record_settings,
)
from pqtradeoff.io import check_out, lock_folder, package_versions, run_record, write_json
from pqtradeoff.pipeline.corpus import run_settings
from pqtradeoff.pipeline.digests import shard_digests
from pqtradeoff.pipeline.resume import describe_changes, fixed_changes

log = logging.getLogger("pqtradeoff")

STAGE_DIRS = {"align": "aligned", "generate": "corpus", "score": "scored", "analyze": "analysis"}


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
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    lock = lock_folder(out, "run")  # one `run` per folder: a second is refused before it loads a model
    try:
        return _run_stages(settings, out, began)
    except PQError:
        if created and [p.name for p in out.iterdir()] == [lock.name]:  # refused before it wrote anything
            lock.unlink(missing_ok=True)
            out.rmdir()
        raise


def _run_stages(settings: ExperimentSettings, out: Path, began: float) -> ExperimentResult:
    models = ModelCache()
    stages: list[StageReport] = []
    corpus, scored, analysis = (out / STAGE_DIRS[s] for s in ("generate", "score", "analyze"))

    aligned = None
    if settings.align is not None:
        t = time.perf_counter()
        aligned, report = _align(settings, out, models)
        stages.append(StageReport("align", "reused" if report.reused else "ran", time.perf_counter() - t,
                                  report.describe(), report.to_json()))
        log.info("align: %s: %s", stages[-1].status, report.describe())

    t = time.perf_counter()
    gen = run_generate(settings.generate_settings(aligned), corpus, models)
    stages.append(StageReport("generate", _status(gen.written, gen.shards), time.perf_counter() - t,
                              gen.describe(), gen.to_json()))
    log.info("generate: %s: %s", stages[-1].status, gen.describe())

    t = time.perf_counter()
    _reset_if_changed(scored, settings, models, aligned)
    sc = run_score(settings.score_settings(aligned), corpus, scored, models)
    stages.append(StageReport("score", _status(sc.written, sc.shards), time.perf_counter() - t, sc.describe(),
                              sc.to_json()))
    log.info("score: %s: %s", stages[-1].status, sc.describe())

    t = time.perf_counter()
    summary, reused = _analysis(settings, scored, analysis)
    detail = (f"{len(summary['configs'])} configuration(s) analysed, {len(summary['skipped'])} skipped, "
              f"{summary['input']['rows_used']} strings")
    stages.append(StageReport("analyze", "reused" if reused else "ran", time.perf_counter() - t, detail))
    log.info("analyze: %s: %s", stages[-1].status, detail)

    if settings.align is not None:
        from pqtradeoff.experiment.pair_study import pair_study  # lazy: scipy

        summary["pair_study"] = pair_study(settings, out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    result = ExperimentResult(out, stages, summary, peak, time.perf_counter() - began)
    record = run_record("run", settings.model_dump(mode="json"))
    write_json(out / "_run.json", record | {"result": result.to_json()})
    return result


def _align(settings: ExperimentSettings, out: Path, models: ModelCache) -> tuple[ModelSpec, Any]:
    """Make (or reuse) the aligned model in out/aligned; a retrained one supersedes what was sampled from the
    old one (corpus, scores), moved with it to out/_superseded/."""
    from pqtradeoff.pipeline.align import recorded_inputs

    folder = out / STAGE_DIRS["align"]
    old = recorded_inputs(folder) if folder.is_dir() else None
    tag = hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:12] if old else "unknown"
    aside = out / "_superseded" / tag
    report = run_align(settings.align_settings(), folder, models, aside=aside / STAGE_DIRS["align"])
    if not report.reused:
        for stage in ("generate", "score"):
            path = out / STAGE_DIRS[stage]
            if path.exists():
                aside.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(aside / path.name, ignore_errors=True)
                path.replace(aside / path.name)
                log.info("align: the aligned model changed: %s moved to %s", path.name, aside)
    prior = settings.models.prior
    assert prior is not None  # checked by ExperimentSettings
    return ModelSpec(name=str(folder.resolve()), device=prior.device, dtype=prior.dtype), report


def _reset_if_changed(scored: Path, settings: ExperimentSettings, models: ModelCache,
                      aligned: ModelSpec | None = None) -> None:
    """In a run the config is the truth: a changed reward or prior (in name or in content) rescoring
    everything, rather than refusing."""
    old = run_settings(scored) if scored.is_dir() else {}
    if not old:
        return
    new = score_record_settings(settings.score_settings(aligned), scored.parent / STAGE_DIRS["generate"],
                                models)
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
