"""`pqtradeoff analyze SCORED_DIR --out DIR`: IMH correction, bootstrapped corpora, statistics, figures,
report.

The options come from `AnalysisSettings` (one option per field, named after it)."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer

from pqtradeoff.analysis.settings import AnalysisSettings
from pqtradeoff.cli import app
from pqtradeoff.cli.options import argument, option, settings_command

#: One option per field, named after it; `--format` (as on `demo` and `toy`) sets figure_format.
FLAGS = {("--format" if name == "figure_format" else f"--{name.replace('_', '-')}"): name
         for name in AnalysisSettings.model_fields}


def _analyze(settings: AnalysisSettings, scored_dir: Path, out: Path) -> None:
    from pqtradeoff.analysis.analyze import analyze_dir  # lazy: pandas

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # every warning is echoed below, once, and kept in summary.json
        summary = analyze_dir(scored_dir, out, settings)
    for message in summary.warnings:
        typer.echo(f"warning: {message}", err=True)
    t = summary.tradeoff
    slope = f"{t.slope:+.4g}" if t.defined else "undefined"
    typer.echo(
        f"analyzed {len(summary.configs)} configuration(s) ({len(summary.skipped)} skipped), "
        f"{summary.input.rows_used} strings; trade-off slope {slope}; wrote {out}/report.html"
    )
    typer.echo(describe_alignment(summary.alignment))
    for name, h in (summary.extra.get("rewards") or {}).items():
        typer.echo(describe_further_reward(name, h))
    for line in describe_what_if_and_length(summary.to_json()):
        typer.echo(line)


def describe_further_reward(name: str, h: dict) -> str:
    """One line on a further reward's analysis (`reward_<name>`): trade-off, correlations, effective beta."""
    def num(x):
        return "n/a" if x is None else f"{x:+.4g}"

    a = h["alignment"]

    def ci(pair):
        return f" [{pair[0]:.3g}, {pair[1]:.3g}]" if pair else " (interval unbounded)"

    fit = (f"effective beta {a['beta_hat']:.4g}{ci(a['beta_hat_ci'])}, within-prompt r "
           f"{a['within_prompt_r']:+.3f}{ci(a['within_prompt_r_ci'])}"
           if a["defined"] and a["beta_hat"] is not None else f"alignment not fitted: {a['reason']}")
    return (f"reward {name}: trade-off slope {num(h['tradeoff_slope'])}, Spearman string-level "
            f"{num(h['string_level']['spearman'])} / corpus-level {num(h['corpus_level']['spearman'])}, "
            f"{fit} ({h['report']})")


VERDICTS = {"survives": "the trade-off survives holding length fixed",
            "does not survive": "the trade-off does not survive holding length fixed",
            "cannot tell": "whether the trade-off survives holding length fixed cannot be told"}


def describe_what_if_and_length(summary: dict) -> list[str]:
    """Lines on the what-if estimates (how many, how many skipped, the ESS range) and the length verdict."""
    lines = []
    entries = [w for w in summary.get("what_if") or [] if not w["sampled"]]
    if entries:
        both = [w for w in entries if w["skipped"] is None and w["skipped_target"] is None]
        local = [w for w in entries if w["skipped"] is None and w["skipped_target"] is not None]
        ess = sorted(w["local_ess"] for w in entries if w["skipped"] is None)
        span = f"; local ESS {ess[0]:.0f} to {ess[-1]:.0f}" if ess else ""
        lines.append(f"what-if (never sampled, from the pool): {len(entries)} adaptor(s), {len(both)} "
                     f"estimated, {len(local)} only locally (the corrected target's ESS too low), "
                     f"{len(entries) - len(both) - len(local)} skipped{span} (what_if.png, summary.json)")
    length = summary.get("length") or {}
    if length.get("defined"):
        def num(x):
            return "n/a" if x is None else f"{x:+.3g}"

        lines.append(f"length: partial Spearman (reward, log prior | length) "
                     f"{num(length['partial_spearman_given_length'])}; slope across configurations "
                     f"{num(length['local_slope'])}, holding mean length fixed "
                     f"{num(length['covariate_slope'])}: {VERDICTS[length['verdict']]}")
    return lines


def describe_alignment(a) -> str:
    """One line on the alignment fit (effective beta), or why it was not fitted."""
    if a.defined and a.beta_hat is not None:
        ci = (f" [{a.beta_hat_ci[0]:.4g}, {a.beta_hat_ci[1]:.4g}]" if a.beta_hat_ci
              else " (interval covers infinity)")
        return (f"alignment: effective beta {a.beta_hat:.4g}{ci}, within-prompt r {a.within_prompt_r:+.4f} "
                f"({a.n_strings} strings, {a.n_prompts} prompt(s))")
    return f"alignment: not fitted: {a.reason or a.note}"


settings_command(app, "analyze", AnalysisSettings, FLAGS, _analyze,
                 leading=[argument("scored_dir", help="Scored-corpus folder (Parquet shards; see "
                                                      "docs/scored-corpus.md).")],
                 trailing=[option("out", ..., "--out",
                                  help="Output folder for summary.json, corpora.parquet, "
                                                            "figures and report.html.")],
                 help="Turn a scored corpus into the trade-off: per-config estimates, correlations, slope, "
                      "frontier, report.")
