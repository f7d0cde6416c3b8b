"""`pqtradeoff run CONFIG.toml --out DIR` (a whole experiment) and `pqtradeoff init` (a starting config)."""

from __future__ import annotations

from pathlib import Path

import typer

from pqtradeoff.cli import app
from pqtradeoff.errors import PQError


@app.command()
def run(
    config: Path = typer.Argument(..., help="Experiment file (TOML); `pqtradeoff init` writes one."),
    out: Path = typer.Option(None, "--out", help="Output folder: [aligned/,] corpus/, scored/, "
                                                 "analysis/ (rerun to resume or to grow the grid)."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the config with every default "
                                                                    "filled in, and stop."),
    executor: str = typer.Option(None, "--executor", help="Override [executor] kind: local | ray."),
    ray_address: str = typer.Option(None, "--ray-address", help="Override [executor] ray_address (joins that "
                                                                "Ray cluster; implies --executor ray)."),
    actors: int = typer.Option(None, "--actors", help="Override [executor] actors (Ray model replicas)."),
) -> None:
    """Run an experiment: generate -> score -> analyze, each stage reused when its inputs are unchanged."""
    from pqtradeoff.experiment.config import load_experiment, resolved_config, with_executor  # lazy: pydantic
    from pqtradeoff.experiment.run import run_experiment  # lazy: pandas

    settings = with_executor(load_experiment(config), kind=executor, ray_address=ray_address, actors=actors)
    if print_config:
        typer.echo(resolved_config(settings), nl=False)
        return
    if out is None:
        raise PQError("--out is required (the folder the run writes to)")
    result = run_experiment(settings, out)  # each stage says what it did on the package logger (stderr)
    _print_results(result.summary)
    _print_stage_table(result)
    typer.echo(f"time: {result.seconds:.1f} s, peak memory {result.peak_memory_mib:.0f} MiB   "
               f"report: {out / 'analysis' / 'report.html'}")


def _print_results(summary: dict) -> None:
    """The per-configuration means and the correlations, as plain text that fits 80 columns."""
    def num(value, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    def r(value) -> str:
        return "-" if value is None else f"{value:+.3f}"

    typer.echo("IMH-corrected means ± standard error, and the sampled pool's means")
    typer.echo(f"{'adaptor':<27}  {'log prior':>16} {'reward':>15} {'pool log p':>10} {'pool r':>7}")
    for c in summary["configs"]:
        typer.echo(f"{c['adaptor']:<27}  "
                   f"{num(c['mean_log_prior'], 2) + ' ± ' + num(c['mean_log_prior_se'], 2):>16} "
                   f"{num(c['mean_reward'], 3) + ' ± ' + num(c['mean_reward_se'], 3):>15} "
                   f"{num(c['local_mean_log_prior'], 2):>10} {num(c['local_mean_reward'], 3):>7}")
    s, k = summary["string_level"], summary["corpus_level"]
    typer.echo(f"string level: spearman {r(s['spearman'])}, pearson {r(s['pearson'])}")
    typer.echo(f"corpus level: spearman {r(k['spearman'])}, pearson {r(k['pearson'])}")
    a = summary.get("alignment") or {}
    if a.get("defined") and a.get("beta_hat") is not None:
        ci = a.get("beta_hat_ci")
        interval = f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else " (interval unbounded)"
        typer.echo(f"alignment: effective beta {a['beta_hat']:.3g}{interval}, within-prompt r "
                   f"{a['within_prompt_r']:+.3f}")
    elif a:
        typer.echo(f"alignment: not fitted: {a.get('reason') or a.get('note')}")
    from pqtradeoff.cli.analyze import describe_further_reward, describe_what_if_and_length

    for name, h in (summary.get("rewards") or {}).items():
        typer.echo(describe_further_reward(name, h))
    for line in describe_what_if_and_length(summary):
        typer.echo(line)
    if summary["skipped"]:
        typer.echo(f"{len(summary['skipped'])} configuration(s) skipped (reasons in summary.json and the "
                   "report)")
    _print_pair_study(summary.get("pair_study"))


def _print_pair_study(study: dict | None) -> None:
    """What `[align]` made of the true pair: the trained reward moved, and the DPO identity."""
    if not study:
        return
    t = study.get("trained_reward") or {}
    if "note" in t:
        typer.echo(f"aligned vs prior (T = 1): {t['note']}")
    elif t.get("difference") is not None:
        ci = t.get("ci")
        interval = (f" [{ci[0]:+.4f}, {ci[1]:+.4f}] ({100 * t['confidence']:.0f}%, {t['prompts']} prompts)"
                    if ci else f" (no interval: {t['prompts']} prompt(s))")
        typer.echo(f"aligned vs prior (T = 1), {t['column']}: {t['mean_aligned']:.4f} vs "
                   f"{t['mean_prior']:.4f}, difference {t['difference']:+.4f}{interval}")
    d = study.get("dpo_identity")
    if d and d.get("max_abs_error") is not None:
        typer.echo(f"DPO identity log p + r/beta = log p+ (beta {d['beta']:g}): largest error "
                   f"{d['max_abs_error']:.2e} over {d['strings']} strings ({d['finished']} finished)")


def _print_stage_table(result) -> None:
    """Stage, status, seconds and share of the run."""
    total = sum(s.seconds for s in result.stages) or 1.0
    for s in result.stages:
        typer.echo(f"  {s.stage:<9} {s.status:<14} {s.seconds:7.1f} s  {100 * s.seconds / total:5.1f} %  "
                   f"{s.detail}")


@app.command()
def init(
    example: str = typer.Option(None, "--example", help="Start from a shipped example: smollm2-dpo-vader "
                                                        "(a true pair made by align; offline, CPU), "
                                                        "smollm2-gemma-vader (offline, CPU), paper-rlhf, "
                                                        "paper-dpo (GPU, hub)."),
) -> None:
    """Print a commented starting config: `pqtradeoff init > my.toml`."""
    from pqtradeoff.experiment.config import example_config  # lazy: pandas

    typer.echo(example_config(example), nl=False)
