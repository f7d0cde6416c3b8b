"""`pqtradeoff analyze SCORED_DIR --out DIR`: IMH correction, bootstrapped corpora, statistics, figures, report."""

from __future__ import annotations

from pathlib import Path

import typer

from pqtradeoff.cli import app


@app.command()
def analyze(
    scored_dir: Path = typer.Argument(..., help="scored-corpus directory (Parquet shards; see docs/scored-corpus.md)"),
    out: Path = typer.Option(..., "--out", help="output directory for summary.json, corpora.parquet, figures, report.html"),
    target: str = typer.Option("global", help="IMH target: global (globally normalized adaptor), aligned, or none"),
    corpora: int = typer.Option(2000, help="bootstrapped corpora per configuration"),
    corpus_size: int = typer.Option(2000, help="strings per bootstrapped corpus"),
    imh_steps: int = typer.Option(200_000, help="IMH chain length per configuration"),
    keep_unfinished: bool = typer.Option(False, "--keep-unfinished", help="keep strings that never emitted EOS"),
    seed: int = typer.Option(0, help="random seed (chains and corpora)"),
    confidence: float = typer.Option(0.95, help="confidence level of every interval"),
    min_importance_ess: float = typer.Option(10.0, help="flag configs whose pool importance-sampling ESS is below this"),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="draw the figures"),
    beta: float = typer.Option(None, help="nominal KL strength of the aligned model: drawn on the alignment panel "
                               "and compared with the fitted beta"),
) -> None:
    """Turn a scored corpus into the trade-off: per-config estimates, correlations, slope, frontier, report."""
    import warnings

    from pqtradeoff.analyze import analyze_dir, make_settings

    settings = make_settings(
        target=target, corpora=corpora, corpus_size=corpus_size, imh_steps=imh_steps,
        keep_unfinished=keep_unfinished, seed=seed, confidence=confidence,
        min_importance_ess=min_importance_ess, plots=plots, beta=beta,
    )
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
    a = summary.alignment
    if a.defined and a.beta_hat is not None:
        ci = f" [{a.beta_hat_ci[0]:.4g}, {a.beta_hat_ci[1]:.4g}]" if a.beta_hat_ci else " (interval covers infinity)"
        typer.echo(f"alignment: effective beta {a.beta_hat:.4g}{ci}, within-prompt r {a.within_prompt_r:+.4f} "
                   f"({a.n_strings} strings, {a.n_prompts} prompt(s))")
    else:
        typer.echo(f"alignment: not fitted: {a.reason or a.note}")
