"""`pqtradeoff toy`: the paper's toy experiment (registered on the app; implemented in pqtradeoff.toy)."""

from __future__ import annotations

from pathlib import Path

import typer

from pqtradeoff.cli import app


@app.command()
def toy(
    out: Path = typer.Option(Path("runs/toy"), "--out", help="Output folder: summary.json and the figures."),
    n_strings: int | None = typer.Option(None, "--n-strings", help="Number of strings (support size)."),
    alpha: float | None = typer.Option(None, "--alpha", help="Dirichlet concentration of the aligned model p+."),
    exponent: float | None = typer.Option(None, "--exponent", help="Prior p = softmax(p+ ** (1/exponent) + noise)."),
    noise: float | None = typer.Option(None, "--noise", help="Prior noise ~ Uniform(-noise, noise)."),
    n_corpora: int | None = typer.Option(None, "--n-corpora", help="Number of corpora drawn from p+."),
    corpus_size: int | None = typer.Option(None, "--corpus-size", help="Strings per corpus (iid draws from p+)."),
    epsilon: float | None = typer.Option(None, "--epsilon", help="Typicality: |mean(-log p+) - H(p+)| < epsilon."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of every random draw."),
    best_of_n: list[int] = typer.Option(None, "--best-of-n", help="N of a best-of-N check (repeatable); "
                                        "default 2 4 16."),
    soft_lambda: float | None = typer.Option(None, "--soft-lambda", help="Soft best-of-N's lambda."),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Write the figures."),
    figure_format: str = typer.Option("png", "--format", help="Figure format: png, pdf or svg."),
) -> None:
    """Reproduce the paper's toy experiment: string-level vs corpus-level correlation of log prior and reward.

    Options left out take the defaults of `pqtradeoff.toy.ToySettings` (the paper's settings); summary.json
    records the values used.
    """
    from pqtradeoff import toy as toy_lib

    given = dict(n_strings=n_strings, alpha=alpha, exponent=exponent, noise=noise, n_corpora=n_corpora,
                 corpus_size=corpus_size, epsilon=epsilon, seed=seed, soft_lambda=soft_lambda,
                 best_of_n=tuple(best_of_n) if best_of_n else None)
    # the defaults are ToySettings' own (one source): only what the user wrote is passed
    settings = toy_lib.ToySettings(**{k: v for k, v in given.items() if v is not None})
    summary = toy_lib.run(settings, out, figures=figures, figure_format=figure_format)
    fields = (
        "posterior_entropy", "prior_entropy", "string_spearman", "string_pearson", "n_typical",
        "typical_corpus_spearman", "typical_corpus_pearson", "atypical_corpus_spearman",
        "atypical_corpus_pearson", "tradeoff_max_deviation",
    )
    for name in fields:
        value = summary[name]
        typer.echo(f"{name:26s} {value:.6g}" if isinstance(value, float) else f"{name:26s} {value}")
    for e in summary["best_of_n"]:
        name = f"best-of-{e['n']}" if e["soft"] is None else f"soft best-of-{e['n']} (lambda {e['soft']:g})"
        typer.echo(f"{name:26s} mean reward {e['mean_reward']:.4f} ± {e['mean_reward_se']:.4f}, exact "
                   f"{e['exact_mean_reward']:.4f}; KL(pi || p+) {e['exact_kl_aligned']:.4f}"
                   + (f" <= log N - (N-1)/N = {e['kl_bound']:.4f} (estimate from the best string's mass "
                      f"{e['kl_estimate']:.4f})" if e["kl_bound"] is not None else ""))
    typer.echo(f"wrote {out / toy_lib.SUMMARY}")
