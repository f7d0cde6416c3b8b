"""Benchmark `pqtradeoff toy`: corpora as multinomial counts versus drawing every string of every corpus.

Fast path: the whole command in-process (`pqtradeoff.toy.run`: model, 1,000 count vectors, statistics, three
figures, summary.json), and also as a fresh `python -m pqtradeoff toy` process (interpreter and imports
included). Naive path: the same pipeline, but each corpus is built as the straightforward code does it,
`rng.choice(n, size=corpus_size, p=p_plus)` followed by per-sample look-ups and means (1e8 draws at paper
scale). The naive sampling runs on a reduced number of corpora and is extrapolated linearly (its cost is
exactly proportional to the number of corpora); the non-sampling part (model, statistics, figures, JSON) is
measured. The naive pipeline is measured twice: in this (warm) process, against the fast in-process time, and
as a fresh process of its own (interpreter, the same numpy/matplotlib/pqtradeoff imports, first-figure costs),
against the fast fresh process. The fresh naive process skips the CLI's typer import, so that comparison
slightly favours it.

    .venv/bin/python benchmarks/toy.py            # naive on 20 corpora per repeat, extrapolated to 1,000
    .venv/bin/python benchmarks/toy.py --quick    # naive on 5 corpora per repeat
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402

from pqtradeoff import toy  # noqa: E402
from pqtradeoff.analysis import plots


def naive_corpus_means(model: toy.ToyModel, n_corpora: int, corpus_size: int, epsilon: float,
                       rng: np.random.Generator) -> toy.CorpusMeans:
    """Draw every string of every corpus, then average the per-sample values."""
    entropy = -(model.posterior * np.log(model.posterior)).sum()
    rows = []
    for _ in range(n_corpora):
        sample = rng.choice(len(model.posterior), size=corpus_size, p=model.posterior)
        rows.append((-np.log(model.posterior[sample]).mean(), np.log(model.prior[sample]).mean(),
                     model.reward[sample].mean()))
    means = np.array(rows)
    return toy.CorpusMeans(means[:, 0], means[:, 1], means[:, 2], np.abs(means[:, 0] - entropy) < epsilon)


def naive_run(settings: toy.ToySettings, out: Path, n_naive: int) -> tuple[float, float]:
    """The toy pipeline with naive corpora on `n_naive` corpora: (sampling seconds, everything-else
    seconds)."""
    from pqtradeoff.io import run_record, write_json

    t0 = time.perf_counter()
    model_rng, corpus_rng = toy.streams(settings.seed)
    model = toy.make_model(settings, model_rng)
    t1 = time.perf_counter()
    means = naive_corpus_means(model, n_naive, settings.corpus_size, settings.epsilon, corpus_rng)
    t2 = time.perf_counter()
    small = toy.ToySettings(**{**settings.__dict__, "n_corpora": n_naive})
    summary = toy.summarize(small, model, means)
    plots.toy_distributions(model, out / toy.FIGURES[0])
    plots.toy_string_scatter(model, summary, out / toy.FIGURES[1])
    plots.toy_corpus_scatter(means, summary, out / toy.FIGURES[2])
    write_json(out / toy.SUMMARY, {**summary, "run": run_record("toy-naive", small.__dict__)})
    t3 = time.perf_counter()
    return t2 - t1, (t1 - t0) + (t3 - t2)


def naive_process(out: Path, n_naive: int) -> float:
    """The naive pipeline as a fresh process on `n_naive` corpora, extrapolated to the paper's 1,000
    corpora."""
    t = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--naive-child", str(out), "--n-naive", str(n_naive)],
                          check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t
    sample_s = json.loads(done.stdout.strip().splitlines()[-1])["sample_s"]
    return wall + sample_s * (toy.ToySettings().n_corpora / n_naive - 1)


def timed(call) -> float:
    """Wall seconds of one call."""
    t = time.perf_counter()
    call()
    return time.perf_counter() - t


def spread(times: list[float]) -> str:
    return f"{min(times):8.3f} s  (spread {min(times):.3f}-{max(times):.3f} over {len(times)} runs)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="naive path on 5 corpora per repeat instead of 20")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of every measurement (best is used)")
    # internal: one fresh naive process
    parser.add_argument("--naive-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--n-naive", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = toy.ToySettings()  # the paper's scale: 1,000 strings, 1,000 corpora of 100,000 draws
    if args.naive_child is not None:
        sample_s, _ = naive_run(settings, args.naive_child, args.n_naive)
        print(json.dumps({"sample_s": sample_s}))
        return
    n_naive = 5 if args.quick else 20
    scale = settings.n_corpora / n_naive

    # Fast and naive measurements alternate, so both see the same load on a shared machine; the best of each
    # is compared.
    fast, counts, naive_sampling, naive_rest, naive_total, cli, naive_fresh = [], [], [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        toy.run(toy.ToySettings(n_strings=20, n_corpora=5, corpus_size=100), out / "warm")  # fonts, caches
        model = toy.make_model(settings, toy.streams(settings.seed)[0])
        command = [sys.executable, "-m", "pqtradeoff", "toy", "--out", str(out / "cli")]
        for _ in range(args.repeats):
            fast.append(timed(lambda: toy.run(settings, out / "fast")))
            counts.append(timed(lambda rng=toy.streams(settings.seed)[1]: toy.draw_counts(
                model.posterior, settings.n_corpora, settings.corpus_size, rng)))
            sample_s, rest_s = naive_run(settings, out / "naive", n_naive)
            naive_sampling.append(sample_s * scale)
            naive_rest.append(rest_s)
            naive_total.append(sample_s * scale + rest_s)
            cli.append(timed(lambda: subprocess.run(command, check=True, capture_output=True)))
            naive_fresh.append(naive_process(out / "naive-process", n_naive))

    draws = settings.n_corpora * settings.corpus_size
    print(f"paper scale: {settings.n_strings} strings, {settings.n_corpora} corpora x {settings.corpus_size} "
          f"draws = {draws:.0e} draws; naive sampling measured on {n_naive} corpora per run, extrapolated "
          "linearly")
    print(f"{'fast   corpora as counts (multinomial, all corpora at once):':60s}{spread(counts)}")
    print(f"{'fast   whole command in-process:':60s}{spread(fast)}")
    print(f"{'fast   whole command as `python -m pqtradeoff toy` process:':60s}{spread(cli)}")
    label = f"naive  sampling, extrapolated to {settings.n_corpora} corpora:"
    print(f"{label:60s}{spread(naive_sampling)}")
    print(f"{'naive  everything else (model, stats, figures, json):':60s}{spread(naive_rest)}")
    print(f"{'naive  whole command in-process:':60s}{spread(naive_total)}")
    print(f"{'naive  whole command as a fresh process:':60s}{spread(naive_fresh)}")
    print(f"{'ratio  corpora only (naive sampling / counts):':60s}{min(naive_sampling) / min(counts):8.1f}x")
    print(f"{'ratio  whole command in-process (goal >= 20x):':60s}{min(naive_total) / min(fast):8.1f}x")
    print(f"{'ratio  whole command, fresh process vs fresh process:':60s}{min(naive_fresh) / min(cli):8.1f}x")
    label = "ratio  whole command, fast fresh process vs naive warm:"
    print(f"{label:60s}{min(naive_total) / min(cli):8.1f}x")


if __name__ == "__main__":
    main()
