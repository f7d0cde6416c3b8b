"""The toy experiment: count-based corpora against naive sampling, summary consistency, CLI behaviour."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

from pqtradeoff import toy
from pqtradeoff.analysis import plots
from pqtradeoff.cli import main
from pqtradeoff.errors import PQError

SMALL = ["--n-strings", "50", "--n-corpora", "60", "--corpus-size", "2000", "--epsilon", "0.05"]


def test_model_follows_the_paper_construction() -> None:
    settings = toy.ToySettings(n_strings=300, seed=3)
    model_rng, _ = toy.streams(3)
    model = toy.make_model(settings, model_rng)
    # Same draws by hand, in the same order from the same stream.
    rng, _ = toy.streams(3)
    posterior = rng.dirichlet(np.full(300, 0.1))
    noise = rng.uniform(-0.42, 0.42, 300)
    logits = posterior ** (1 / 42) + noise
    prior = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(model.posterior, posterior, rtol=1e-12)
    np.testing.assert_allclose(model.prior, prior, rtol=1e-12)
    # beta = 1, Z = 1: log p + r = log p+ for every string.
    np.testing.assert_allclose(model.log_prior + model.reward, np.log(model.posterior), atol=1e-12)


def test_corpus_means_equal_means_over_the_expanded_samples() -> None:
    """counts @ values / N is the mean over the corpus written out string by string."""
    settings = toy.ToySettings(n_strings=20, n_corpora=5, corpus_size=777, epsilon=0.01, seed=1)
    model_rng, corpus_rng = toy.streams(1)
    model = toy.make_model(settings, model_rng)
    counts = toy.draw_counts(model.posterior, 5, 777, corpus_rng)
    assert counts.shape == (5, 20) and (counts.sum(axis=1) == 777).all()
    means = toy.measure_corpora(model, counts, settings.epsilon)
    entropy = -(model.posterior * np.log(model.posterior)).sum()
    for c in range(5):
        sample = np.repeat(np.arange(20), counts[c])
        assert means.neg_log_posterior[c] == pytest.approx(-np.log(model.posterior[sample]).mean(), abs=1e-12)
        assert means.log_prior[c] == pytest.approx(np.log(model.prior[sample]).mean(), abs=1e-12)
        assert means.reward[c] == pytest.approx(model.reward[sample].mean(), abs=1e-12)
        assert means.typical[c] == (abs(-np.log(model.posterior[sample]).mean() - entropy) < 0.01)


def test_count_corpora_match_naive_sampling_in_distribution() -> None:
    """Corpus means from multinomial counts vs from drawing each string: same mean, variance and law."""
    probs = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    values = np.array([-1.0, 0.5, 2.0, 3.0, -4.0])
    n, corpora = 400, 4000
    rng = np.random.default_rng(7)
    by_counts = toy.draw_counts(probs, corpora, n, rng) @ values / n
    naive = np.array([values[rng.choice(len(probs), size=n, p=probs)].mean() for _ in range(corpora)])
    mean = probs @ values
    var = (probs @ values**2 - mean**2) / n
    for sample in (by_counts, naive):
        assert abs(sample.mean() - mean) < 4 * np.sqrt(var / corpora)
        assert sample.var(ddof=1) == pytest.approx(var, rel=0.1)
        assert stats.skew(sample) == pytest.approx(stats.skew(naive), abs=0.15)
    assert stats.ks_2samp(by_counts, naive).pvalue > 1e-3


def test_summary_fields_are_consistent_with_scipy() -> None:
    settings = toy.ToySettings(n_strings=200, n_corpora=300, corpus_size=5000, epsilon=0.01, seed=5)
    model, means, summary = toy.simulate(settings)
    assert summary["posterior_entropy"] == pytest.approx(-(model.posterior * np.log(model.posterior)).sum())
    assert summary["prior_entropy"] == pytest.approx(-(model.prior * np.log(model.prior)).sum())
    assert summary["string_spearman"] == pytest.approx(stats.spearmanr(np.log(model.prior), model.reward)[0])
    assert summary["string_pearson"] == pytest.approx(np.corrcoef(np.log(model.prior), model.reward)[0, 1])
    typ = means.typical
    assert summary["n_typical"] == typ.sum() and summary["n_typical"] + summary["n_atypical"] == 300
    assert 3 <= summary["n_typical"] < 300, "the test needs both kinds of corpora"
    assert summary["typical_corpus_spearman"] == pytest.approx(
        stats.spearmanr(means.log_prior[typ], means.reward[typ])[0])
    assert summary["typical_corpus_pearson"] == pytest.approx(
        np.corrcoef(means.log_prior[typ], means.reward[typ])[0, 1])
    assert summary["atypical_corpus_spearman"] == pytest.approx(
        stats.spearmanr(means.log_prior[~typ], means.reward[~typ])[0])
    gap = np.abs(means.neg_log_posterior[typ] - summary["posterior_entropy"])
    assert summary["tradeoff_max_deviation"] == pytest.approx(gap.max(), abs=1e-12)
    assert summary["tradeoff_max_deviation"] <= settings.epsilon + 1e-12
    assert summary["tradeoff_holds"] is True


def test_paper_defaults_reproduce_the_finding() -> None:
    """Full paper scale (no figures): positive string-level, strongly negative typical-corpus correlation."""
    _, _, summary = toy.simulate(toy.ToySettings())
    assert summary["string_spearman"] > 0.2
    assert summary["n_typical"] > 50
    assert summary["typical_corpus_spearman"] < -0.5
    assert summary["tradeoff_max_deviation"] <= 0.001


def test_a_typical_corpus_off_the_line_is_caught() -> None:
    settings = toy.ToySettings(n_strings=10, n_corpora=3, corpus_size=10, epsilon=0.01)
    model = toy.make_model(settings, toy.streams(0)[0])
    entropy = float(stats.entropy(model.posterior))
    means = toy.CorpusMeans(
        neg_log_posterior=np.full(3, entropy), log_prior=np.array([-5.0, -6.0, -7.0]),
        reward=np.array([0.0, 1.0, 2.0]), typical=np.array([True, True, False]),
    )
    with pytest.raises(RuntimeError, match="trade-off line violated"):
        toy.summarize(settings, model, means)


def test_no_typical_corpus_gives_nulls_not_a_crash() -> None:
    settings = toy.ToySettings(n_strings=30, n_corpora=4, corpus_size=50, epsilon=1e-9, seed=2)
    _, _, summary = toy.simulate(settings)
    assert summary["n_typical"] == 0
    assert summary["typical_corpus_spearman"] is None and summary["tradeoff_max_deviation"] is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"epsilon": 0.0}, "epsilon"), ({"epsilon": -1.0}, "epsilon"), ({"alpha": 0.0}, "alpha"),
     ({"n_corpora": 0}, "n_corpora"), ({"corpus_size": -5}, "corpus_size"), ({"n_strings": 1}, "n_strings"),
     ({"exponent": float("inf")}, "exponent"), ({"noise": -0.1}, "noise"), ({"seed": -1}, "seed")],
)
def test_bad_settings_raise_pqerror_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(PQError, match=f"^{field}="):
        toy.ToySettings(**kwargs)


# ------------------------------------------------------------------------------------------------ CLI
def run_main(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> int:
    monkeypatch.setattr(sys, "argv", ["pqtradeoff", *args])
    try:
        main()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


@pytest.mark.parametrize(
    ("option", "value", "field"),
    [("--epsilon", "0", "epsilon"), ("--epsilon", "-0.5", "epsilon"), ("--n-corpora", "0", "n_corpora"),
     ("--corpus-size", "-1", "corpus_size"), ("--n-strings", "0", "n_strings"), ("--alpha", "0", "alpha"),
     ("--alpha", "-2", "alpha")],
)
def test_cli_bad_option_is_one_line_exit_2(monkeypatch, capsys, tmp_path, option, value, field) -> None:
    code = run_main(monkeypatch, ["toy", "--out", str(tmp_path / "o"), *SMALL, option, value])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: {field}=") and err.count("\n") == 1, err
    assert not (tmp_path / "o" / toy.SUMMARY).exists()


def test_cli_extreme_noise_and_out_that_is_a_file_are_one_line_errors(monkeypatch, capsys, tmp_path) -> None:
    code = run_main(monkeypatch, ["toy", "--out", str(tmp_path / "o"), *SMALL, "--noise", "1000"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: noise=1000.0 is too large") and err.count("\n") == 1, err
    (tmp_path / "afile").write_text("x")
    code = run_main(monkeypatch, ["toy", "--out", str(tmp_path / "afile"), *SMALL])
    err = capsys.readouterr().err
    assert code == 2 and "is a file, not a folder" in err and err.count("\n") == 1, err


def test_cli_same_seed_same_bytes_and_figures(monkeypatch, capsys, tmp_path) -> None:
    out = tmp_path / "toy"
    assert run_main(monkeypatch, ["toy", "--out", str(out), *SMALL, "--seed", "11"]) == 0
    first = (out / toy.SUMMARY).read_bytes()
    for name in toy.FIGURES:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run_main(monkeypatch, ["toy", "--out", str(out), *SMALL, "--seed", "11", "--no-figures"]) == 0
    assert (out / toy.SUMMARY).read_bytes() != first  # argv differs, so the record does
    assert run_main(monkeypatch, ["toy", "--out", str(out), *SMALL, "--seed", "11"]) == 0
    assert (out / toy.SUMMARY).read_bytes() == first
    summary = json.loads(first)
    assert summary["seed"] == 11 and summary["run"]["settings"]["seed"] == 11
    assert summary["run"]["settings"]["corpus_size"] == 2000 and summary["run"]["versions"]["numpy"]
    assert run_main(monkeypatch, ["toy", "--out", str(out), *SMALL, "--seed", "12"]) == 0
    other = json.loads((out / toy.SUMMARY).read_bytes())
    assert other["posterior_entropy"] != summary["posterior_entropy"]


def test_python_m_toy_runs_without_torch_and_reports_errors(tmp_path) -> None:
    """`python -m pqtradeoff` works end to end, never imports torch, and bad input is one line + exit 2."""
    script = (
        "import sys\n"
        "from pqtradeoff.cli import main\n"
        f"sys.argv = ['pqtradeoff', 'toy', '--out', {str(tmp_path / 'a')!r}, *{SMALL!r}, '--no-figures']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("NO-TORCH")
    bad = subprocess.run([sys.executable, "-m", "pqtradeoff", "toy", "--out", str(tmp_path / "b"), "--alpha",
                          "0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()] and "alpha=0.0" in bad.stderr
    assert "Traceback" not in bad.stderr


# ----------------------------------------------------------------------------------- numpy vs scipy
# pqtradeoff.toy avoids importing scipy (about a second at start-up); its statistics (analysis.stats's
# numpy-only
# ones, tested against scipy in tests/test_stats.py) and its softmax must be scipy's, bit for bit.
@settings(max_examples=100, deadline=None)
@given(st.integers(2, 500), st.floats(0.05, 5.0), st.integers(0, 2**32 - 1))
def test_softmax_equals_scipy_exactly(n: int, alpha: float, seed: int) -> None:
    logits = np.random.default_rng(seed).normal(size=n) * alpha * 10
    np.testing.assert_array_equal(toy.softmax(logits), special.softmax(logits))


def test_summary_equals_the_scipy_computation_exactly() -> None:
    settings_ = toy.ToySettings(n_strings=300, n_corpora=400, corpus_size=3000, epsilon=0.01, seed=9)
    model, means, summary = toy.simulate(settings_)
    typ = means.typical
    assert summary["posterior_entropy"] == float(stats.entropy(model.posterior))
    assert summary["prior_entropy"] == float(stats.entropy(model.prior))
    assert summary["string_spearman"] == float(stats.spearmanr(model.log_prior, model.reward).statistic)
    assert summary["typical_corpus_pearson"] == float(stats.pearsonr(means.log_prior[typ],
                                                                     means.reward[typ]).statistic)
    assert summary["all_corpus_spearman"] == float(stats.spearmanr(means.log_prior, means.reward).statistic)


# ----------------------------------------------------------------------------------------------- figures
@pytest.mark.parametrize("settings_", [toy.ToySettings(n_corpora=300, corpus_size=2000, epsilon=0.01),
                                       toy.ToySettings(n_strings=40, n_corpora=50, corpus_size=500, seed=3)])
def test_figures_keep_every_label_inside_the_canvas(monkeypatch, tmp_path, settings_) -> None:
    """Fixed margins (no tight_layout) must still leave every title, label and tick label fully visible."""
    figures = []
    monkeypatch.setattr(plots, "save_bare", lambda fig, path: figures.append(fig))
    toy.run(settings_, tmp_path)
    assert len(figures) == 3
    for fig in figures:
        renderer = fig.canvas.get_renderer()
        fig.canvas.draw()
        canvas = fig.bbox
        for ax in fig.axes:
            box = ax.get_tightbbox(renderer)  # the axes with its title, labels and drawn tick labels
            assert canvas.x0 <= box.x0 and box.x1 <= canvas.x1, (ax.get_title(), box.extents, canvas.extents)
            assert canvas.y0 <= box.y0 and box.y1 <= canvas.y1, (ax.get_title(), box.extents, canvas.extents)
        boxes = [ax.get_tightbbox(renderer) for ax in fig.axes]
        for left, right in zip(boxes, boxes[1:], strict=False):  # side-by-side panels must not overlap
            assert left.x1 < right.x0, (left.extents, right.extents)


def test_toy_run_imports_neither_scipy_nor_pyplot(tmp_path) -> None:
    script = (
        "import sys\n"
        "from pqtradeoff import toy\n"
        f"toy.run(toy.ToySettings(n_strings=30, n_corpora=20, corpus_size=300), {str(tmp_path)!r})\n"
        "print(sorted(m for m in ('scipy', 'matplotlib.pyplot', 'torch') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert all((tmp_path / name).stat().st_size > 1000 for name in toy.FIGURES)


def test_best_of_n_agrees_with_its_closed_form() -> None:
    """Best-of-N and soft best-of-N over candidates from p+ (the paper's toy): Monte Carlo within 4 s.e.
    of the finite closed form at N = 2, 4, 16; reward grows with N; hard best-of-N's KL stays below
    log N - (N-1)/N."""
    _, _, summary = toy.simulate(toy.ToySettings(n_corpora=10, corpus_size=1000))
    entries = summary["best_of_n"]
    assert [(e["n"], e["soft"]) for e in entries] == [(n, s) for n in (2, 4, 16) for s in (None, 1.0)]
    for e in entries:
        assert abs(e["mean_reward"] - e["exact_mean_reward"]) < 4 * e["mean_reward_se"], e
        assert e["exact_mean_reward"] > summary["base_mean_reward"]
    hard = [e for e in entries if e["soft"] is None]
    assert [e["exact_mean_reward"] for e in hard] == sorted(e["exact_mean_reward"] for e in hard)
    assert all(0 < e["exact_kl_aligned"] <= e["kl_bound"] + 1e-12 for e in hard)
    soft = [e for e in entries if e["soft"] is not None]
    assert all(s["exact_mean_reward"] < h["exact_mean_reward"] for s, h in zip(soft, hard, strict=True))


def test_best_of_n_leaves_the_papers_numbers_alone() -> None:
    """Its draws come from their own stream: the corpora and their statistics do not move."""
    with_bon = toy.simulate(toy.ToySettings(n_corpora=50, corpus_size=1000))[2]
    without = toy.simulate(toy.ToySettings(n_corpora=50, corpus_size=1000, best_of_n=()))[2]
    assert without["best_of_n"] == []
    assert {k: v for k, v in with_bon.items() if k != "best_of_n"} == \
        {k: v for k, v in without.items() if k != "best_of_n"}


@pytest.mark.parametrize(("field", "value", "message"), [("best_of_n", (0,), "best_of_n=0"),
                                                         ("soft_lambda", -1.0, "lambda=-1.0"),
                                                         ("best_of_n", [2], "give a tuple")])
def test_bad_best_of_n_settings_are_one_line(field, value, message) -> None:
    with pytest.raises(PQError, match=message):
        toy.ToySettings(**{field: value})
