"""The corpus analysis: scored corpus -> IMH-corrected estimates, bootstrapped corpora, correlations, trade-off.

Public API (also used by the exact-model demo):

- `AnalysisSettings`: the resolved settings (a pydantic model); `make_settings(**values)` builds one and turns a
  bad value into a one-line PQError naming the field.
- `clean_table(table, settings)`: validate and filter a scored-corpus DataFrame (missing columns -> PQError;
  NaN/inf values and unfinished strings dropped, counted, and warned about by column).
- `run_analysis(table, out_dir, settings, inputs=None)`: run everything on a DataFrame with the scored-corpus
  columns (steps: clean -> per config -> across configs -> write) and write summary.json, corpora.parquet,
  the figures and report.html atomically under out_dir; returns a typed `results.Summary`. `inputs`, an
  `ExtraInputs`, carries what a producer such as the demo adds (exact values, lines, notes, skipped configs).
- `analyze_dir(scored_dir, out_dir, settings)`: the same, reading a scored-corpus directory (the CLI).

Nothing here imports torch or the model side.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pqtradeoff.analysis import imh, stats
from pqtradeoff.analysis import length as length_analysis
from pqtradeoff.analysis import what_if as what_if_analysis
from pqtradeoff.analysis.fidelity import AlignmentData, AlignmentFit, fit_alignment
from pqtradeoff.analysis.results import (
    ConfigResult,
    ExactLine,
    InputReport,
    SeriesEstimate,
    SkippedConfig,
    Summary,
)
from pqtradeoff.analysis.settings import AnalysisSettings
from pqtradeoff.analysis.stats import Correlation, TradeoffFit
from pqtradeoff.columns import EXTRA_REWARD_PREFIX, ROW_KEY, Col, extra_reward_columns
from pqtradeoff.errors import PQError, validated
from pqtradeoff.io import check_output_folder, clear_owned, lock_folder, run_record, write_json
from pqtradeoff.pipeline.corpus import ANALYSIS_COLUMNS, RUN_RECORD, read_corpus, write_shard
from pqtradeoff.sampling import adaptors, best_of_n

#: Columns whose values must be finite for a row to be used (the quantities analysed).
VALUE_COLUMNS = (Col.REWARD, Col.LOGP_PRIOR)
#: Per target, the columns that build the log importance weight. NaN or +inf there drops the row; -inf in a
#: log-probability of the target means weight zero, which is allowed (logq must be finite: the row was sampled).
WEIGHT_COLUMNS = {"global": (Col.LOG_WEIGHT,), "aligned": (Col.LOGP_ALIGNED, Col.LOGQ), "none": ()}
SERIES = {"reward": Col.REWARD, "log_prior": Col.LOGP_PRIOR}
#: String columns `analyze_dir` reads (other string and list columns, texts and tokens, are never needed).
STRING_COLUMNS = (Col.ADAPTOR, Col.PRIOR_CONTEXT)
#: Texts `analyze_dir` keeps as Arrow-backed columns (no Python strings): the report's explorer shows a few.
TEXT_COLUMNS = (Col.PROMPT, Col.TEXT)
#: The list columns `analyze_dir` keeps (the what-if estimates read them).
WHAT_IF_COLUMNS = (Col.WHAT_IF_LOGQ, Col.WHAT_IF_LOG_WEIGHT)
#: Configurations analysed at once, at most (each holds a few ~30 MB count chunks; see `analyze_configs`).
MAX_WORKERS = 4


def make_settings(**values: Any) -> AnalysisSettings:
    """Build settings, turning a pydantic error into a one-line PQError naming the field and the value."""
    return validated(AnalysisSettings, **values)


# --------------------------------------------------------------------------------------------- validation
def _check_columns(table: pd.DataFrame) -> None:
    missing = [c for c in ANALYSIS_COLUMNS if c not in table.columns]
    if missing:
        raise PQError(
            f"scored corpus lacks required column(s) {', '.join(missing)}; need {', '.join(ANALYSIS_COLUMNS)}"
        )
    finished = table[Col.FINISHED]
    if not (pd.api.types.is_bool_dtype(finished) or pd.api.types.is_integer_dtype(finished)
            or (finished.dtype == object and finished.dropna().map(lambda v: isinstance(v, (bool, np.bool_))).all())):
        raise PQError(f"column 'finished' has dtype {finished.dtype}; need booleans (True when EOS was emitted)")
    for col in ANALYSIS_COLUMNS:
        if col in (Col.ADAPTOR, Col.FINISHED):
            continue
        if not pd.api.types.is_numeric_dtype(table[col]) or pd.api.types.is_bool_dtype(table[col]):
            raise PQError(f"column {col!r} has dtype {table[col].dtype}; need floating-point numbers")


#: Largest magnitude a value may have: the analysis squares and sums values (variances over up to ~1e8
#: strings), which overflow float64 past about 1e150; no real reward or log-probability comes near 1e100.
MAX_MAGNITUDE = 1e100


def _check_magnitudes(table: pd.DataFrame) -> None:
    """Refuse finite values so large that the analysis's sums would overflow (NaN estimates marked defined)."""
    for col in (*VALUE_COLUMNS, Col.LOGQ, Col.LOGP_ALIGNED, Col.LOG_WEIGHT):
        v = table[col].to_numpy(dtype=np.float64, na_value=np.nan)
        huge = np.flatnonzero(np.isfinite(v) & (np.abs(v) > MAX_MAGNITUDE))
        if huge.size:
            raise PQError(f"column {col!r} holds {v[huge[0]]:.6g} (row {int(huge[0])}, {huge.size} such row(s)): "
                          f"values beyond ±{MAX_MAGNITUDE:.0e} overflow the analysis's sums; rescale them")


def _check_duplicates(table: pd.DataFrame) -> None:
    """Refuse repeated (prompt_id, sample_id, adaptor) keys: a copied row would count as another string and
    shrink every standard error. The adaptor is compared in its canonical spelling."""
    if not all(c in table.columns for c in ROW_KEY):
        return
    dup = table.duplicated(list(ROW_KEY), keep="first").to_numpy()
    if dup.any():
        first = table.loc[dup].iloc[0]
        count = int(dup.sum())
        raise PQError(f"{count} row(s) repeat an earlier (prompt_id, sample_id, adaptor) key, the first being "
                      f"({first['prompt_id']}, {first['sample_id']}, {first['adaptor']!r}): a corpus copied into the "
                      "folder twice? Each sampled string must appear once")


def _canonical_adaptors(column: pd.Series) -> pd.Series:
    """Canonical spec strings (temperature included) for every row; PQError names a bad spec."""
    mapping: dict[Any, Any] = {}
    for raw in pd.unique(column.dropna()):
        if not isinstance(raw, str):
            raise PQError(f"column 'adaptor' holds {raw!r}; need adaptor spec strings such as 'temperature=0.5'")
        mapping[raw] = str(adaptors.parse(raw))
    return column.map(mapping)


def clean_table(table: pd.DataFrame, settings: AnalysisSettings) -> tuple[pd.DataFrame, InputReport]:
    """Validate a scored-corpus table and keep the rows the analysis can use (the input is not modified).

    Returns the kept rows (with a canonical `adaptor`) and a report: rows read, rows dropped per column (a
    row bad in two columns counts in both; `dropped_total` counts it once), unfinished strings excluded, and
    the warnings issued. Every drop is also a UserWarning naming the column and the count.
    """
    _check_columns(table)
    _check_magnitudes(table)
    data = table.loc[:, list(dict.fromkeys([*ANALYSIS_COLUMNS, *table.columns]))].copy()
    data[Col.ADAPTOR] = _canonical_adaptors(data[Col.ADAPTOR])
    _check_duplicates(data)
    bad: dict[str, np.ndarray] = {
        Col.ADAPTOR: data[Col.ADAPTOR].isna().to_numpy(),
        Col.FINISHED: data[Col.FINISHED].isna().to_numpy(),
    }
    for col in VALUE_COLUMNS:
        bad[col] = ~np.isfinite(data[col].to_numpy(dtype=np.float64, na_value=np.nan))
    for col in WEIGHT_COLUMNS[settings.target]:
        v = data[col].to_numpy(dtype=np.float64, na_value=np.nan)
        bad[col] = ~np.isfinite(v) if col == Col.LOGQ else (np.isnan(v) | (v == np.inf))
    messages: list[str] = []
    dropped: dict[str, int] = {}
    for col, mask in bad.items():
        count = int(mask.sum())
        if count:
            dropped[col] = count
            kind = "missing" if col in (Col.ADAPTOR, Col.FINISHED) else "NaN or infinite"
            if col in WEIGHT_COLUMNS[settings.target] and col != Col.LOGQ:
                kind = "NaN or +inf"
            messages.append(f"dropped {count} row(s) with {kind} values in column {col!r}")
    any_bad = np.logical_or.reduce(list(bad.values()))
    finished_all = data[Col.FINISHED].fillna(True).astype(bool).to_numpy()
    # Why each row is left out, by its first bad column (so a config's reasons add up to its dropped rows).
    why = np.full(len(data), "", dtype=object)
    if not settings.keep_unfinished:
        why[~finished_all] = "unfinished"
    for col, mask in reversed(bad.items()):
        why[mask] = f"missing {col}" if col in (Col.ADAPTOR, Col.FINISHED) else f"non-finite {col}"
    reasons = pd.DataFrame({Col.ADAPTOR: data[Col.ADAPTOR].to_numpy(), "why": why})
    by_config: dict[str, dict[str, int]] = {}
    for (adaptor, reason), count in reasons[why != ""].value_counts(sort=False).items():
        by_config.setdefault(adaptor, {})[reason] = int(count)  # rows without an adaptor fall out (NaN key)
    data = data.loc[~any_bad]
    finished = data[Col.FINISHED].astype(bool).to_numpy()
    unfinished = int((~finished).sum())
    if unfinished and not settings.keep_unfinished:
        messages.append(
            f"excluded {unfinished} unfinished string(s) (column 'finished' is False; --keep-unfinished keeps them)"
        )
        data = data.loc[finished]
    for message in messages:
        warnings.warn(message, UserWarning, stacklevel=2)
    report = InputReport(
        rows_read=int(len(table)), dropped_by_column=dropped, dropped_total=int(any_bad.sum()),
        unfinished=unfinished, unfinished_excluded=0 if settings.keep_unfinished else unfinished,
        rows_used=int(len(data)), dropped_by_config=by_config, warnings=messages,
    )
    return data.reset_index(drop=True), report


# ------------------------------------------------------------------------------------------- one config
def _order_key(spec: str) -> tuple[str, float]:
    a = adaptors.parse(spec)
    return (a.family, a.temperature)


def _local_mean_and_se(values: np.ndarray) -> tuple[float, float | None]:
    """Plain average of the sampled strings and its standard error sd / sqrt(n) (None with one string)."""
    n = len(values)
    return float(values.mean()), (float(np.std(values, ddof=1) / np.sqrt(n)) if n > 1 else None)


def analyze_config(
    adaptor: str, rows: pd.DataFrame, settings: AnalysisSettings
) -> tuple[ConfigResult, dict[str, np.ndarray]]:
    """IMH-correct one configuration's pool and draw its corpora. Returns (config result, corpus means).

    Raises PQError when the target gives every string zero weight (the caller reports the config as skipped).
    """
    spec = adaptors.parse(adaptor)
    if isinstance(spec, adaptors.Mixture):
        raise PQError("a mixture of adaptors: its pool's plain means are what sampling it gives (used by "
                      "`advise`); the IMH analysis corrects its components, sampled as configurations of their own")
    if isinstance(spec, adaptors.BestOfN):
        raise PQError(BEST_OF_N_REASON)
    log_w = imh.log_importance_weights(
        settings.target, rows[Col.LOG_WEIGHT].to_numpy(float), rows[Col.LOGP_ALIGNED].to_numpy(float),
        rows[Col.LOGQ].to_numpy(float),
    )
    n = len(rows)
    zero = int(np.sum(log_w == -np.inf))
    if zero == n:
        raise PQError(
            f"all {n} importance weights are zero (log weight -inf) under target {settings.target!r}: "
            "the target gives none of this configuration's strings any mass"
        )
    values = {name: rows[col].to_numpy(float) for name, col in SERIES.items()}
    seeds = imh.chain_seed(settings.seed, adaptor).spawn(2)
    chain = imh.run_chain(log_w, values, settings.imh_steps, np.random.default_rng(seeds[0]))
    means = stats.corpus_means(
        chain.visits, values, settings.corpora, settings.corpus_size, np.random.default_rng(seeds[1])
    )
    series: dict[str, SeriesEstimate] = {}
    for name in SERIES:
        mu, pool_var, target_var = imh.snis_mean_and_variance(log_w, values[name])
        local, local_se = _local_mean_and_se(values[name])
        series[name] = SeriesEstimate(
            mean=chain.mean[name],
            se=imh.imh_standard_error(pool_var, target_var, chain.tau[name], chain.steps),
            se_pool=float(np.sqrt(pool_var)),
            se_chain=float(np.sqrt(target_var * chain.tau[name] / chain.steps)),
            snis_mean=mu, local_mean=local, local_mean_se=local_se, chain_ess=chain.ess(name),
            tau=chain.tau[name], lag1=chain.lag1[name],
            corpus_mean_sd=float(np.std(means[name], ddof=1)) if settings.corpora > 1 else None,
        )
    importance_ess = imh.importance_ess(log_w)
    kl, kl_se = _local_mean_and_se(rows[Col.LOGQ].to_numpy(float) - rows[Col.LOGP_ALIGNED].to_numpy(float))
    result = ConfigResult(
        adaptor=adaptor, family=spec.family, temperature=spec.temperature, n_strings=n, n_zero_weight=zero,
        acceptance_rate=chain.acceptance_rate, chain_steps=chain.steps,
        chain_ess=min(chain.ess(k) for k in SERIES), importance_ess=importance_ess,
        reward=series["reward"], log_prior=series["log_prior"],
        reliable=importance_ess >= settings.min_importance_ess,
        string_level=stats.correlations(values["log_prior"], values["reward"], settings.confidence),
        corpus_level=stats.correlations(means["log_prior"], means["reward"], settings.confidence),
        kl_aligned=kl, kl_aligned_se=kl_se,
        power_alpha=power_alpha(spec),
    )
    return result, means


def power_alpha(spec: adaptors.Adaptor) -> float | None:
    """alpha = 1/T where the global target of `spec` is power sampling p+^alpha (an untruncated temperature
    on the aligned model alone); None for every other configuration."""
    if spec.truncates or spec.realigns:
        return None
    return spec.power


def analyze_configs(groups: Mapping[str, pd.DataFrame], settings: AnalysisSettings
                    ) -> dict[str, tuple[ConfigResult, dict[str, np.ndarray]] | PQError]:
    """`analyze_config` for every configuration (the PQError it raised in place of a result), on threads.

    Why threads: the corpus bootstrap (numpy's Poisson sampler), the FFTs and the counting release the GIL, so
    on a 2-core machine two configurations run at once at ~1.7x. Every configuration has its own random
    streams (`imh.chain_seed`) and computes single-threaded, so the results are the same bytes whatever
    the number of threads (min(MAX_WORKERS, usable CPUs, configurations)).
    """
    def one(adaptor: str) -> tuple[ConfigResult, dict[str, np.ndarray]] | PQError:
        try:
            return analyze_config(adaptor, groups[adaptor], settings)
        except PQError as err:
            return err

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, min(MAX_WORKERS, cpus, len(groups)))
    if workers == 1:
        return {adaptor: one(adaptor) for adaptor in groups}
    with ThreadPoolExecutor(workers) as pool:
        return dict(zip(groups, pool.map(one, groups), strict=True))


#: Why a best-of-N configuration is reported by its sample means.
BEST_OF_N_REASON = ("best-of-N: its law has no per-token log q (a kept row's logq is its candidate's under the "
                    "base adaptor), so the IMH correction does not apply; reported by its sample means "
                    "(local_mean_*), which are what sampling it gives")


def skipped_with_local_means(adaptor: str, reason: str, rows: pd.DataFrame | None) -> SkippedConfig:
    """A skipped config; its usable strings' plain means are kept (sampling that adaptor still gives them).
    A best-of-N configuration gets no KL(q || p+) (its logq is not its law's) but, for hard best-of-N, the
    analytic bound on KL(best-of-N || base) and Beirami et al.'s estimate of it: per row, the KL of best-of-N
    when the best outcome's base mass is the kept string's base probability exp(logq), averaged over rows
    (a plug-in: the kept string is the best the row saw; it tends to the bound as that mass vanishes)."""
    spec = adaptors.parse(adaptor)
    hard = isinstance(spec, adaptors.BestOfN) and spec.selection.soft is None
    bound = best_of_n.kl_bound(spec.selection.n) if hard else None
    if rows is None or rows.empty:
        return SkippedConfig(adaptor, reason, kl_bound_base=bound)
    reward, reward_se = _local_mean_and_se(rows[Col.REWARD].to_numpy(float))
    log_prior, log_prior_se = _local_mean_and_se(rows[Col.LOGP_PRIOR].to_numpy(float))
    kl, kl_se, estimate, estimate_se = None, None, None, None
    if not isinstance(spec, adaptors.BestOfN):
        kl, kl_se = _local_mean_and_se(rows[Col.LOGQ].to_numpy(float) - rows[Col.LOGP_ALIGNED].to_numpy(float))
    elif hard:
        estimate, estimate_se = _local_mean_and_se(
            best_of_n.kl_estimate(spec.selection.n, np.exp(rows[Col.LOGQ].to_numpy(float))))
    return SkippedConfig(adaptor, reason, len(rows), reward, reward_se, log_prior, log_prior_se, kl, kl_se,
                         bound, estimate, estimate_se)


# --------------------------------------------------------------------------------------- exact comparison
def _compare_exact(result: ConfigResult) -> dict[str, float] | None:
    """z-scores of the IMH means against exact values given for this config (None when none are given)."""
    out: dict[str, float] = {}
    for name in SERIES:
        exact = result.exact.get(f"exact_mean_{name}")
        if exact is None:
            continue
        s = result.series(name)
        out[f"z_{name}"] = z_score(s.mean, s.se, exact)
    return out or None


def z_score(estimate: float, se: float, exact: float) -> float:
    """(estimate - exact) / se; with se 0: 0 when they are equal, else inf."""
    diff = estimate - exact
    return diff / se if se > 0 else (0.0 if diff == 0 else float("inf"))


def _canonical_keys(mapping: Mapping[str, Any] | None) -> dict[str, Any]:
    """The same mapping keyed by canonical adaptor strings (PQError names an unreadable key)."""
    result: dict[str, Any] = {}
    for key, value in (mapping or {}).items():
        result[str(adaptors.parse(key))] = value
    return result


# ------------------------------------------------------------------------------------------ orchestration
@dataclass
class ExtraInputs:
    """What a producer (the exact-model demo) adds to an analysis beyond the scored table.

    - `exact`: adaptor (any spelling `adaptors.parse` reads) -> exact_* fields merged into that config's result,
      e.g. exact_mean_log_prior, exact_mean_reward, exact_entropy, exact_local_mean_log_prior. exact_mean_*
      become points on the corpus-level panel and the frontier, and the report gives their z-scores.
    - `exact_lines`: trade-off lines drawn on the corpus-level panel (`ExactLine`s, or dicts with slope,
      intercept, label).
    - `notes`: sentences shown in the report and stored in summary.json.
    - `skipped`: adaptor -> reason, for configurations the producer could not sample; listed with the ones
      the analysis skips itself.
    - `source`: the producer's run record (the scored corpus's `_run.json`), stored for provenance.
    - `extra`: top-level fields added to summary.json (e.g. the demo's `identity_max_abs_error`).
    - `what_if_adaptors`: the adaptors of the corpus's `what_if_logq` / `what_if_log_weight` columns, in
      order (`what_if_adaptors` of the scoring run's `_run.json`); `exact` may key them too.
    """

    exact: dict[str, dict[str, Any]] = field(default_factory=dict)
    exact_lines: list[ExactLine] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    source: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    what_if_adaptors: list[str] | None = None  # the adaptors of the what-if columns, in order (score's record)

    def __post_init__(self) -> None:
        self.exact_lines = [ExactLine(**line) if isinstance(line, dict) else line for line in self.exact_lines]


@dataclass
class _PerConfig:
    """What the per-configuration step hands to the next ones."""

    configs: list[ConfigResult]
    skipped: list[SkippedConfig]
    corpora: pd.DataFrame
    messages: list[str]


def _per_config(table: pd.DataFrame, data: pd.DataFrame, input_report: InputReport, settings: AnalysisSettings,
                inputs: ExtraInputs) -> _PerConfig:
    """Step 2: correct every configuration; skip (with the reason) those that cannot be corrected."""
    exact = _canonical_keys(inputs.exact)
    skipped = [SkippedConfig(a, r) for a, r in _canonical_keys(inputs.skipped).items()]
    messages: list[str] = []
    configs: list[ConfigResult] = []
    corpus_frames: list[pd.DataFrame] = []
    read_counts = _canonical_adaptors(table[Col.ADAPTOR]).value_counts()
    groups = dict(tuple(data.groupby(Col.ADAPTOR, sort=False)))
    outcomes = analyze_configs(groups, settings)
    for adaptor in sorted(set(groups) | set(read_counts.index), key=_order_key):
        rows = groups.get(adaptor)
        if rows is None:
            reason = f"no usable strings: all {int(read_counts[adaptor])} row(s) were dropped or unfinished"
            skipped.append(SkippedConfig(adaptor, reason))
            messages.append(f"skipped {adaptor}: {reason}")
            continue
        outcome = outcomes[adaptor]
        if isinstance(outcome, PQError):
            skipped.append(skipped_with_local_means(adaptor, str(outcome), rows))
            messages.append(f"skipped {adaptor}: {outcome}")
            warnings.warn(f"skipped {adaptor}: {outcome}", UserWarning, stacklevel=3)
            continue
        result, means = outcome
        if not result.reliable:
            message = (f"{adaptor}: the pool's importance-sampling ESS is {result.importance_ess:.3g} "
                       f"(< {settings.min_importance_ess:g}): a few strings carry the weight, and its standard "
                       "errors understate the uncertainty")
            messages.append(message)
            warnings.warn(message, UserWarning, stacklevel=3)
        result.n_rows = int(read_counts[adaptor])
        result.n_dropped = result.n_rows - result.n_strings
        result.dropped_why = input_report.dropped_by_config.get(adaptor, {})
        result.exact = dict(exact.get(adaptor, {}))
        result.exact_comparison = _compare_exact(result)
        for key, value in asdict(length_analysis.config_length(rows, length_analysis.LENGTH)).items():
            setattr(result, key, value)  # mean_length, mean_log_prior_per_token, partial_spearman_...
        configs.append(result)
        corpus_frames.append(pd.DataFrame({
            "adaptor": adaptor, "family": result.family, "temperature": result.temperature,
            "corpus_id": np.arange(settings.corpora, dtype=np.int64),
            "mean_reward": means["reward"], "mean_log_prior": means["log_prior"],
        }))
    if not configs:
        raise PQError("no configuration could be analysed: " + "; ".join(s.reason for s in skipped))
    unmatched = sorted(set(exact) - {c.adaptor for c in configs} - set(inputs.what_if_adaptors or ()))
    if unmatched:
        messages.append(f"exact values were given for configuration(s) not analysed: {', '.join(unmatched)}")
    return _PerConfig(configs, skipped, pd.concat(corpus_frames, ignore_index=True), messages)


@dataclass
class _AcrossConfigs:
    """Step 3's results: correlations at every level and the trade-off across configurations."""

    string_level: Correlation
    corpus_level: Correlation
    config_level: Correlation
    tradeoff: TradeoffFit
    messages: list[str]


def _across_configs(data: pd.DataFrame, per: _PerConfig, settings: AnalysisSettings) -> _AcrossConfigs:
    """Step 3: the Pareto frontier (marked on the configs), the trade-off fit, pooled correlations."""
    configs, messages = per.configs, []
    x = np.array([c.mean_log_prior for c in configs])
    y = np.array([c.mean_reward for c in configs])
    for result, on in zip(configs, stats.pareto_frontier(x, y), strict=True):
        result.on_frontier = bool(on)
    tradeoff = stats.tradeoff_fit(x, y, settings.confidence)
    tradeoff.frontier = [c.adaptor for c in sorted(configs, key=lambda c: -c.mean_log_prior) if c.on_frontier]
    if not tradeoff.defined:
        messages.append(f"corpus-level trade-off: {tradeoff.note}")
    used = data[data[Col.ADAPTOR].isin([c.adaptor for c in configs])]  # skipped configs' strings left out
    corpus_level = stats.correlations(per.corpora["mean_log_prior"], per.corpora["mean_reward"], settings.confidence)
    if len(configs) == 1:
        corpus_level.note = (
            (corpus_level.note + "; " if corpus_level.note else "")
            + "one configuration only: these corpora vary by resampling noise alone, so this is not the trade-off across configurations"
        )
    string_level = stats.correlations(
        used[Col.LOGP_PRIOR].to_numpy(float), used[Col.REWARD].to_numpy(float), settings.confidence
    )
    return _AcrossConfigs(string_level, corpus_level, stats.correlations(x, y, settings.confidence), tradeoff, messages)


def _alignment(data: pd.DataFrame, settings: AnalysisSettings, inputs: ExtraInputs
               ) -> tuple[AlignmentFit, AlignmentData | None]:
    """Step 3b: alignment fidelity and the effective beta, over every configuration's finished strings."""
    rng = np.random.default_rng(imh.chain_seed(settings.seed, "alignment"))
    return fit_alignment(data, inputs.source, settings.confidence, rng, nominal_beta=settings.beta)


def _what_if(table: pd.DataFrame, data: pd.DataFrame, settings: AnalysisSettings, inputs: ExtraInputs) -> list[what_if_analysis.WhatIfResult]:
    """Step 3c: the what-if estimates, when the corpus carries teacher-forced columns (or some are asked for)."""
    carried = inputs.what_if_adaptors
    if not carried:
        if settings.what_if:
            raise PQError("what_if needs the scored corpus's teacher-forced columns, and it has none: score it "
                          "with `pqtradeoff score ... --aligned MODEL --what-if SPEC` (in a run, "
                          "[analysis] what_if adds them)")
        return []
    counts = _canonical_adaptors(table[Col.ADAPTOR]).value_counts()
    sampled = {a: int(counts[a]) for a in carried if a in counts.index}
    results = what_if_analysis.what_if_estimates(data, carried, sampled, settings)
    exact = _canonical_keys(inputs.exact)
    for r in results:
        r.exact = dict(exact.get(r.adaptor, {}))
        z = {}
        for name in SERIES:
            for prefix, key in (("", f"exact_mean_{name}"), ("local_", f"exact_local_mean_{name}")):
                value, se = getattr(r, f"{prefix}mean_{name}"), getattr(r, f"{prefix}mean_{name}_se")
                if r.exact.get(key) is not None and value is not None and se is not None:
                    z[f"z_{prefix}{name}"] = z_score(value, se, r.exact[key])
        r.exact_comparison = z or None
    return results


def _write(summary: Summary, data: pd.DataFrame, corpora: pd.DataFrame, aligned: AlignmentData | None,
           out_dir: Path) -> None:
    """Step 4: corpora.parquet, the figures, summary.json, _run.json and report.html, each atomically."""
    from pqtradeoff.analysis import (
        plots,  # matplotlib only when we get this far
        report,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    lock_folder(out_dir, "analyze")
    clear_owned(out_dir, "analyze")  # a previous run's files (figures of any format) never outlive it
    write_shard(pa.Table.from_pandas(corpora, preserve_index=False), out_dir / "corpora.parquet")
    if summary.settings.plots:
        summary.outputs["figures"] = plots.draw_all(data, corpora, summary, out_dir, aligned,
                                                    summary.settings.figure_format)
    write_json(out_dir / "summary.json", summary.to_json())
    write_json(out_dir / RUN_RECORD, summary.run)
    report.write_report(summary, out_dir, data)


def run_analysis(
    table: pd.DataFrame, out_dir: str | Path, settings: AnalysisSettings, inputs: ExtraInputs | None = None
) -> Summary:
    """Analyse a scored-corpus DataFrame and write every output under `out_dir`; return the summary.

    Steps: clean the table, correct each configuration, compare across configurations (and fit the alignment
    identity over all strings), write.
    `inputs` carries what a producer adds (exact values, lines, notes, skipped configs, provenance).
    Raises PQError on a table it cannot use (missing columns, no usable rows, no config left).
    """
    inputs = inputs or ExtraInputs()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise PQError(f"out={str(out_dir)!r} exists and is not a directory")
    if length_analysis.LENGTH not in table.columns and Col.TOKEN_IDS in table.columns:
        table = table.assign(**{length_analysis.LENGTH: table[Col.TOKEN_IDS].map(len).astype(np.int64)})
    data, input_report = clean_table(table, settings)
    if data.empty:
        raise PQError("no usable rows: every row was dropped (" + "; ".join(input_report.warnings) + ")")
    per = _per_config(table, data, input_report, settings, inputs)
    across = _across_configs(data, per, settings)
    alignment, aligned = _alignment(data, settings, inputs)
    what_if = _what_if(table, data, settings, inputs)
    lengths = length_analysis.length_report(data, [c.adaptor for c in per.configs], length_analysis.LENGTH,
                                            settings.confidence)
    summary = Summary(
        settings=settings,
        seeds={"seed": settings.seed, "per_config": "numpy SeedSequence([seed, sha256(adaptor)[:16]]), spawned into chain and corpora streams"},
        input=input_report, warnings=[*input_report.warnings, *per.messages, *across.messages],
        notes=list(inputs.notes), configs=per.configs, skipped=per.skipped,
        string_level=across.string_level, corpus_level=across.corpus_level, config_level=across.config_level,
        tradeoff=across.tradeoff, alignment=alignment, exact_lines=list(inputs.exact_lines), source_run=inputs.source,
        run=run_record("analyze", settings.model_dump(mode="json")),
        outputs={"summary": "summary.json", "corpora": "corpora.parquet", "report": "report.html", "figures": {}},
        extra=dict(inputs.extra), what_if=what_if, length=lengths,
    )
    _write(summary, data, per.corpora, aligned, out_dir)
    return summary


def analyze_dir(scored_dir: str | Path, out_dir: str | Path, settings: AnalysisSettings) -> Summary:
    """Read a scored-corpus directory (with its `_run.json`, if any) and run the analysis on it.

    `out_dir` must not be, or be inside, the scored-corpus folder (its `_run.json` and a `corpora.parquet` the
    next analysis would read as rows), and must follow the output-folder rule of `pqtradeoff.io`."""
    scored, out = Path(scored_dir).resolve(), Path(out_dir).resolve()
    if out == scored or scored in out.parents:
        raise PQError(f"--out {str(out_dir)!r} is, or is inside, the scored-corpus folder {str(scored_dir)!r}: "
                      "choose another folder")
    check_output_folder(out_dir, "analyze")
    table = read_corpus(scored_dir, required=ANALYSIS_COLUMNS)
    for name in ANALYSIS_COLUMNS:
        kind = table.schema.field(name).type
        wanted = "strings" if name == Col.ADAPTOR else ("booleans" if name == Col.FINISHED else "floating-point numbers")
        is_text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
        if (name == Col.ADAPTOR) != is_text or pa.types.is_nested(kind):
            raise PQError(f"column {name!r} of {str(scored_dir)!r} is stored as {kind}; need {wanted}")
    for name in extra_reward_columns(table.column_names):
        kind = table.schema.field(name).type
        if not pa.types.is_floating(kind):
            raise PQError(f"column {name!r} of {str(scored_dir)!r} is stored as {kind}; need floating-point "
                          "numbers (a further reward)")
    nested = (
        pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
        for t in table.schema.types
    )
    keep = [c for c, skip in zip(table.column_names, nested, strict=True)
            if c in STRING_COLUMNS or c in WHAT_IF_COLUMNS or not skip]
    frame = table.select(keep).to_pandas()  # token lists are never needed here
    for name in TEXT_COLUMNS:  # texts: only the explorer's few strings are ever read (Arrow buffers, not copies)
        if name in table.column_names and (pa.types.is_string(table.schema.field(name).type)
                                          or pa.types.is_large_string(table.schema.field(name).type)):
            frame[name] = pd.Series(pd.arrays.ArrowExtensionArray(table.column(name)), index=frame.index)
    if Col.TOKEN_IDS in table.column_names:
        import pyarrow.compute as pc

        frame[length_analysis.LENGTH] = pc.list_value_length(table.column(Col.TOKEN_IDS)).to_numpy()
    record_path = Path(scored_dir) / RUN_RECORD
    source = None
    if record_path.is_file():
        try:
            source = json.loads(record_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise PQError(f"{str(record_path)!r} is not valid JSON: {err.msg} at line {err.lineno}") from None
    carried = carried_what_if(source, frame)
    further = further_reward_analyses(frame, Path(out_dir), settings, source, carried)
    return run_analysis(frame, out_dir, settings,
                        ExtraInputs(source=source, extra={"rewards": further} if further else {},
                                    what_if_adaptors=carried))


def carried_what_if(source: dict[str, Any] | None, frame: pd.DataFrame) -> list[str] | None:
    """The adaptors of the corpus's what-if columns (its scoring run's `what_if_adaptors`), or None."""
    names = ((source or {}).get("settings") or {}).get("what_if_adaptors")
    present = all(c in frame.columns for c in WHAT_IF_COLUMNS)
    if not names or not present:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise PQError("the scoring run's _run.json names its what_if_adaptors oddly: score the corpus again")
    return [str(adaptors.parse(n)) for n in names]


#: Where the analysis of each further reward (`reward_<name>`) is written, under the analysis folder.
REWARDS_FOLDER = "rewards"


def further_reward_analyses(frame: pd.DataFrame, out_dir: Path, settings: AnalysisSettings,
                            source: dict[str, Any] | None, carried: list[str] | None = None
                            ) -> dict[str, dict[str, Any]]:
    """Analyse each further reward column `reward_<name>` as if it were the reward: the whole analysis (the
    same rows, seeds and settings, so it equals analysing a corpus whose `reward` is that column), written to
    `out_dir/rewards/<name>/`; returns its headline numbers per name, for the main summary."""
    import shutil

    columns = extra_reward_columns(frame.columns)
    folder = out_dir / REWARDS_FOLDER
    if folder.is_dir():
        shutil.rmtree(folder)  # an earlier run's reward analyses never outlive it
    found: dict[str, dict[str, Any]] = {}
    for column in columns:
        name = column[len(EXTRA_REWARD_PREFIX):]
        kind = frame[column].dtype
        if not pd.api.types.is_float_dtype(kind):
            raise PQError(f"column {column!r} is stored as {kind}; need floating-point numbers")
        table = frame.drop(columns=columns).assign(**{Col.REWARD: frame[column].to_numpy()})
        sub = run_analysis(table, folder / name, settings, ExtraInputs(source=source, what_if_adaptors=carried))
        found[name] = headline(sub, f"{REWARDS_FOLDER}/{name}")
    return found


def headline(summary: Summary, folder: str) -> dict[str, Any]:
    """A reward's trade-off, correlations and alignment fit in a few numbers (the rest in its folder)."""
    t, a = summary.tradeoff, summary.alignment
    corr = {level: {"spearman": c.spearman, "spearman_ci": c.spearman_ci, "pearson": c.pearson,
                    "pearson_ci": c.pearson_ci, "n": c.n}
            for level, c in (("string_level", summary.string_level), ("corpus_level", summary.corpus_level))}
    return {"folder": folder, "summary": f"{folder}/summary.json", "report": f"{folder}/report.html",
            "tradeoff_slope": t.slope if t.defined else None, "tradeoff_slope_ci": t.slope_ci,
            **corr, "alignment": {"defined": a.defined, "reason": a.reason, "beta_hat": a.beta_hat,
                                  "beta_hat_ci": a.beta_hat_ci, "within_prompt_r": a.within_prompt_r,
                                  "within_prompt_r_ci": a.within_prompt_r_ci, "residual_sd": a.residual_sd}}
