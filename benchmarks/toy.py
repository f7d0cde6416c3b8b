"""Benchmark `pqtradeoff toy`: corpora as multinomial counts versus drawing every string of every corpus.

Fast path: the whole command in-process (`pqtradeoff.toy.run`: model, 1,000 count vectors, statistics, three
figures, summary.json), and also as a fresh `python -m pqtradeoff toy` process (interpreter and imports included).
Naive path: the same pipeline, but each corpus is built as the straightforward code does it,
`rng.choice(n, size=corpus_size, p=p_plus)` followed by per-sample look-ups and means (1e8 draws at paper scale).
The naive sampling runs on a reduced number of corpora and is extrapolated linearly (its cost is exactly
proportional to the number of corpora); the non-sampling part (model, statistics, figures, JSON) is measured.
The naive pipeline is measured twice: in this (warm) process, against the fast in-process time, and as a fresh
process of its own (interpreter, the same numpy/matplotlib/pqtradeoff imports, first-figure costs), against the
fast fresh process. The fresh naive process skips the CLI's typer import, so that comparison slightly favours it.

    .venv/bin/python benchmarks/toy.py            # naive on 50 corpora, extrapolated to 1,000
    .venv/bin/python benchmarks/toy.py --quick    # naive on 10 corpora
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
    """The toy pipeline with naive corpora on `n_naive` corpora: (sampling seconds, everything-else seconds)."""
    from pqtradeoff.io import run_record, write_json

    t0 = time.perf_counter()
    model_rng, corpus_rng = toy.streams(settings.seed)
    model = toy.make_model(settings, model_rng)
    t1 = time.perf_counter()
    means = naive_corpus_means(model, n_naive, settings.corpus_size, settings.epsilon, corpus_rng)
    t2 = time.perf_counter()
    small = toy.ToySettings(**{**settings.__dict__, "n_corpora": n_naive})
    summary = toy.summarize(small, model, means)
    toy.plot_distributions(model, out / toy.FIGURES[0])
    toy.plot_string_scatter(model, summary, out / toy.FIGURES[1])
    toy.plot_corpus_scatter(means, summary, out / toy.FIGURES[2])
    write_json(out / toy.SUMMARY, {**summary, "run": run_record("toy-naive", small.__dict__)})
    t3 = time.perf_counter()
    return t2 - t1, (t1 - t0) + (t3 - t2)


def naive_process(out: Path, n_naive: int) -> tuple[float, float]:
    """The naive pipeline as a fresh process on `n_naive` corpora: (process wall seconds, its sampling seconds)."""
    t = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--naive-child", str(out), "--n-naive", str(n_naive)],
                          check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t
    return wall, json.loads(done.stdout.strip().splitlines()[-1])["sample_s"]


def timed(runs: int, call) -> list[float]:
    """Wall seconds of `runs` calls."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return times


def spread(times: list[float]) -> str:
    return f"{min(times):8.3f} s  (spread {min(times):.3f}-{max(times):.3f}, {len(times)} runs)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="naive path on 10 corpora instead of 50")
    parser.add_argument("--repeats", type=int, default=3, help="fast-path repeats (best is reported)")
    parser.add_argument("--naive-child", type=Path, help=argparse.SUPPRESS)  # internal: one fresh naive process
    parser.add_argument("--n-naive", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = toy.ToySettings()  # the paper's scale: 1,000 strings, 1,000 corpora of 100,000 draws
    if args.naive_child is not None:
        sample_s, _ = naive_run(settings, args.naive_child, args.n_naive)
        print(json.dumps({"sample_s": sample_s}))
        return
    n_naive = 10 if args.quick else 50
    scale = settings.n_corpora / n_naive

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        toy.run(toy.ToySettings(n_strings=20, n_corpora=5, corpus_size=100), out / "warm")  # fonts, caches

        fast = timed(args.repeats, lambda: toy.run(settings, out / "fast"))
        _, corpus_rng = toy.streams(settings.seed)
        model = toy.make_model(settings, toy.streams(settings.seed)[0])
        counts = timed(1, lambda: toy.draw_counts(model.posterior, settings.n_corpora, settings.corpus_size,
                                                  corpus_rng))
        command = [sys.executable, "-m", "pqtradeoff", "toy", "--out", str(out / "cli")]
        cli = timed(args.repeats, lambda: subprocess.run(command, check=True, capture_output=True))

        sample_s, rest_s = naive_run(settings, out / "naive", n_naive)
        naive_sampling = sample_s * scale
        naive_total = naive_sampling + rest_s
        child_wall, child_sample_s = naive_process(out / "naive-process", n_naive)
        naive_process_total = child_wall + child_sample_s * (scale - 1)

    draws = settings.n_corpora * settings.corpus_size
    print(f"paper scale: {settings.n_strings} strings, {settings.n_corpora} corpora x {settings.corpus_size} draws "
          f"= {draws:.0e} draws")
    print(f"fast   corpora as counts (multinomial, all corpora at once): {counts[0]:8.3f} s")
    print(f"fast   whole command in-process:                            {spread(fast)}")
    print(f"fast   whole command as `python -m pqtradeoff toy` process: {spread(cli)}")
    print(f"naive  sampling measured on {n_naive} corpora:                    {sample_s:8.3f} s")
    print(f"naive  sampling extrapolated to {settings.n_corpora} corpora:              {naive_sampling:8.3f} s")
    print(f"naive  everything else (model, stats, figures, json):        {rest_s:8.3f} s")
    print(f"naive  whole command in-process (extrapolated):              {naive_total:8.3f} s")
    print(f"naive  whole command as a fresh process (extrapolated):      {naive_process_total:8.3f} s  "
          f"(measured {child_wall:.3f} s on {n_naive} corpora)")
    print(f"ratio  corpora only (naive sampling / counts):               {naive_sampling / counts[0]:8.1f}x")
    print(f"ratio  whole command in-process (goal >= 20x):               {naive_total / min(fast):8.1f}x")
    print(f"ratio  whole command, fresh process vs fresh process:        {naive_process_total / min(cli):8.1f}x")
    print(f"ratio  whole command, fast fresh process vs naive warm:      {naive_total / min(cli):8.1f}x")


if __name__ == "__main__":
    main()
