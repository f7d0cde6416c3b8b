"""`pqtradeoff demo`: the main job on the embedded default, exact finite-state models (no download)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from pqtradeoff.cli import app

if TYPE_CHECKING:
    from pqtradeoff.analysis.results import Summary


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="output folder"),
    seed: int | None = typer.Option(None, help="seed for sampling and the analysis"),
    model_seed: int | None = typer.Option(None, "--model-seed", help="seed of the random prior and reward"),
    reward: str | None = typer.Option(None, help="demo reward: rare-word (one prized rare word) | rarity"),
    n_words: int | None = typer.Option(None, "--n-words", help="vocabulary size of the random prior (EOS not counted)"),
    order: int | None = typer.Option(None, help="n-gram order of the prior"),
    beta: float | None = typer.Option(None, help="KL strength beta: p+ = p exp(r/beta) / Z"),
    text: Path = typer.Option(None, help="estimate the prior from this text file (one string per line)"),
    family: list[str] = typer.Option(None, "--family", help="adaptor without temperature (repeatable); "
                                     "default: the paper-like grid"),
    temperature: list[float] = typer.Option(None, "--temperature", help="temperatures (repeatable); "
                                            "default 0.5 0.75 1.0 1.25 1.5"),
    dera: list[float] = typer.Option(None, "--dera", help="DeRa lambda, sampled at T = 1 (repeatable); "
                                     "default 0.25 0.5 0.75 1.25"),
    what_if: list[str] = typer.Option(None, "--what-if", help="what-if adaptor, estimated from the pool "
                                      "without sampling (repeatable; ranges start:stop:step allowed)"),
    num_generations: int | None = typer.Option(None, "--num-generations", help="strings per configuration"),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens"),
    target: str | None = typer.Option(None, help="IMH target: global | aligned | none"),
    imh_steps: int | None = typer.Option(None, "--imh-steps"),
    corpora: int | None = typer.Option(None, help="bootstrapped corpora per configuration"),
    corpus_size: int | None = typer.Option(None, "--corpus-size"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    figure_format: str | None = typer.Option(None, "--format", help="figure format: png | pdf | svg"),
) -> None:
    """Run generate -> score -> analyze on exact finite-state models and compare with the closed forms.

    Options left out take the defaults of `pqtradeoff.demo.DemoSettings`; summary.json records the values used.
    """
    from pqtradeoff.io import check_output_folder
    from pqtradeoff.models.registry import require_torch

    require_torch()  # before anything imports torch (the automata, the sampler)
    check_output_folder(out, "demo")
    from pqtradeoff.demo import make_settings, run_demo

    given = dict(
        seed=seed, model_seed=model_seed, reward=reward, n_words=n_words, order=order, beta=beta, text=text,
        num_generations=num_generations, max_new_tokens=max_new_tokens, target=target, imh_steps=imh_steps,
        corpora=corpora, corpus_size=corpus_size, figure_format=figure_format,
        families=list(family) if family else None, temperatures=list(temperature) if temperature else None,
        dera=list(dera) if dera else None, what_if=list(what_if) if what_if else None,
    )
    # the defaults are DemoSettings' own (one source): only what the user wrote is passed
    settings = make_settings(**{k: v for k, v in given.items() if v is not None})
    summary, timings = run_demo(out, settings, progress=progress)
    _print_summary(summary, timings, out)


def _print_summary(summary: Summary, timings: dict[str, float], out: Path) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    # A light frame and one space between columns: the table fits 80 columns without wrapping a cell.
    table = Table(title="IMH-corrected means (± s.e.) against the exact values", box=box.SIMPLE_HEAD,
                  padding=(0, 1), pad_edge=False)
    for col in ("family", "T", "mean log prior", "exact", "mean reward", "exact"):
        table.add_column(col, justify="left" if col == "family" else "right", no_wrap=True)
    for c in summary.configs:
        table.add_row(c.family, f"{c.temperature:g}",
                      f"{c.log_prior.mean:.3f} ± {c.log_prior.se:.3f}", f"{c.exact['exact_mean_log_prior']:.3f}",
                      f"{c.reward.mean:.3f} ± {c.reward.se:.3f}", f"{c.exact['exact_mean_reward']:.3f}")
    console.print(table)
    s, k = summary.string_level, summary.corpus_level
    console.print(f"string level: spearman {s.spearman:+.3f}, pearson {s.pearson:+.3f}")
    console.print(f"corpus level: spearman {k.spearman:+.3f}, pearson {k.pearson:+.3f}")
    a = summary.alignment
    if a.defined and a.beta_hat is not None:
        console.print(f"alignment: effective beta {a.beta_hat:.6g} (nominal {a.nominal_beta:g}), within-prompt r "
                      f"{a.within_prompt_r:.6f}")
    _print_checks(console, summary)
    console.print(f"{len(summary.skipped)} configurations skipped (reasons in summary.json and the report)")
    console.print(f"identity max abs error: {summary.extra['identity_max_abs_error']:.2e}")
    console.print(f"time: {sum(timings.values()):.1f} s ({', '.join(f'{n} {v:.1f}' for n, v in timings.items())})")
    console.print(f"report: {out / 'report.html'}")


def _print_checks(console: Any, summary: Summary) -> None:
    """The KL axis, power sampling and DeRa against their closed forms, one line each."""
    kl = [(c.kl_aligned - c.exact["exact_kl_aligned"]) / c.kl_aligned_se for c in summary.configs
          if c.kl_aligned_se and c.exact.get("exact_kl_aligned") is not None]
    if kl:
        console.print(f"KL(q || p+): {sum(abs(z) < 4 for z in kl)} of {len(kl)} within 4 s.e. of exact")
    power = summary.extra.get("power_sampling") or []
    if power:
        console.print("power sampling p+^alpha (T = 1/alpha), z reward/log prior: "
                      + ", ".join(f"alpha {e['alpha']:.3g} {e['z_reward']:+.1f}/{e['z_log_prior']:+.1f}"
                                  for e in power))
    _print_what_if(console, summary)
    dera = [e for e in summary.extra.get("dera") or [] if e.get("skipped") is None]
    if dera:
        console.print("DeRa = p+ at beta/lambda, z reward/log prior: "
                      + ", ".join(f"lambda {e['lambda']:g} {e['z_reward']:+.1f}/{e['z_log_prior']:+.1f}"
                                  for e in dera))


def _print_what_if(console: Any, summary: Summary) -> None:
    """The what-if estimates (never sampled) against their closed forms, in one line."""
    new = [w for w in summary.what_if if not w.sampled]
    checked = [w for w in new if w.exact_comparison]
    if not new:
        return
    within = sum(all(abs(z) < 4 for z in w.exact_comparison.values()) for w in checked)
    ess = sorted(w.ess for w in new if w.ess is not None)
    sampled = [w for w in summary.what_if if w.sampled and w.skipped is None]
    console.print(f"what-if (never sampled, from the pool): {within} of {len(checked)} within 4 s.e. of exact "
                  f"on all four means, {sum(w.skipped is not None for w in new)} skipped; ESS "
                  + (f"{ess[0]:.0f} to {ess[-1]:.0f} (median {ess[len(ess) // 2]:.0f})" if ess else "n/a")
                  + f"; {len(sampled)} sampled configurations re-estimated from the pool")
