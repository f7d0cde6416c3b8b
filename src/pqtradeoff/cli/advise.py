"""`pqtradeoff advise ANALYSIS_DIR --min-reward R | --max-prior-loss L`: the cheapest adaptor or mixture."""

from __future__ import annotations

from pathlib import Path

import typer

from pqtradeoff.cli import app


@app.command()
def advise(
    analysis_dir: Path = typer.Argument(...,
                                        help="output folder of `pqtradeoff analyze` (holds summary.json)"),
    min_reward: float = typer.Option(None, "--min-reward", help="target: mean reward at least this"),
    max_prior_loss: float = typer.Option(None, "--max-prior-loss",
                                         help="target: mean log prior at most this many "
                                         "nats below the reference configuration's"),
    reference: str = typer.Option("temperature=1.0", help="reference configuration for --max-prior-loss"),
    confidence: float = typer.Option(0.95, help="confidence level of the intervals"),
    as_json: bool = typer.Option(False, "--json", help="print the advice as JSON"),
) -> None:
    """Cheapest way to a reward target: a frontier configuration, or a mixture of two neighbouring ones."""
    from pqtradeoff.analysis.advise import advise as make_advice  # lazy: scipy
    from pqtradeoff.analysis.advise import describe, read_summary  # lazy: scipy
    from pqtradeoff.io import to_json  # lazy: startup

    advice = make_advice(read_summary(analysis_dir), min_reward=min_reward, max_prior_loss=max_prior_loss,
                         reference=reference, confidence=confidence)
    if as_json:
        typer.echo(to_json(advice.to_json()), nl=False)
    else:
        typer.echo("\n".join(describe(advice)))
