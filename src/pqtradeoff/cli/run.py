"""`pqtradeoff run CONFIG.toml --out DIR` (a whole experiment) and `pqtradeoff init` (a starting config)."""

from __future__ import annotations

from pathlib import Path

import typer

from pqtradeoff.cli import app


@app.command()
def run(
    config: Path = typer.Argument(..., help="Experiment file (TOML); `pqtradeoff init` writes one."),
    out: Path = typer.Option(None, "--out", help="Output folder: corpus/, scored/, analysis/ (rerun to resume "
                                                 "or to grow the grid)."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the config with every default filled "
                                                                    "in, and stop."),
    executor: str = typer.Option(None, "--executor", help="Override [executor] kind: local | ray."),
    ray_address: str = typer.Option(None, "--ray-address", help="Override [executor] ray_address (joins that "
                                                                "Ray cluster; implies --executor ray)."),
    actors: int = typer.Option(None, "--actors", help="Override [executor] actors (Ray model replicas)."),
) -> None:
    """Run an experiment: generate -> score -> analyze, each stage reused when its inputs are unchanged."""
    from pqtradeoff.errors import PQError
    from pqtradeoff.experiment import (
        load_experiment,
        print_stage_table,
        resolved_config,
        run_experiment,
        with_executor,
    )

    settings = with_executor(load_experiment(config), kind=executor, ray_address=ray_address, actors=actors)
    if print_config:
        typer.echo(resolved_config(settings), nl=False)
        return
    if out is None:
        raise PQError("--out is required (the folder the run writes to)")
    result = run_experiment(settings, out, say=lambda line: typer.echo(line, err=True))
    _print_results(result.summary)
    print_stage_table(result)
    typer.echo(f"time: {result.seconds:.1f} s, peak memory {result.peak_memory_mib:.0f} MiB   "
               f"report: {out / 'analysis' / 'report.html'}")


def _print_results(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="Per configuration: IMH-corrected means (± s.e.) and the sampled pool's means")
    for col in ("adaptor", "log prior", "reward", "pool log prior", "pool reward"):
        table.add_column(col, justify="left" if col == "adaptor" else "right", no_wrap=col == "adaptor")
    def num(value, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for c in summary["configs"]:
        table.add_row(c["adaptor"], f"{num(c['mean_log_prior'], 2)} ± {num(c['mean_log_prior_se'], 2)}",
                      f"{num(c['mean_reward'], 3)} ± {num(c['mean_reward_se'], 3)}",
                      num(c["local_mean_log_prior"], 2), num(c["local_mean_reward"], 3))
    console.print(table)
    s, k = summary["string_level"], summary["corpus_level"]
    def r(value) -> str:
        return "-" if value is None else f"{value:+.3f}"

    console.print(f"string level: spearman {r(s['spearman'])}, pearson {r(s['pearson'])}   "
                  f"corpus level: spearman {r(k['spearman'])}, pearson {r(k['pearson'])}")
    if summary["skipped"]:
        console.print(f"{len(summary['skipped'])} configuration(s) skipped (reasons in summary.json and the report)")


@app.command()
def init(
    example: str = typer.Option(None, "--example", help="Start from a shipped example: smollm2-gemma-vader "
                                                        "(offline, CPU), paper-rlhf, paper-dpo (GPU, hub)."),
) -> None:
    """Print a commented starting config: `pqtradeoff init > my.toml`."""
    from pqtradeoff.experiment import example_config

    typer.echo(example_config(example), nl=False)
