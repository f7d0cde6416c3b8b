"""The paper's toy experiment: the probability-quality trade-off on a finite set of "strings".

Setting (Tan et al., 2024, toy experiment): n strings; the aligned model p+ ~ Dirichlet(alpha * 1); the prior
p = softmax(p+ ** (1/exponent) + Uniform(-noise, noise)); the reward r = log(p+ / p), so beta = 1 and Z = 1
and log p(y) + r(y) = log p+(y) for every string. Corpora are N iid draws from p+; a corpus is typical when
its average of -log p+ is within epsilon of H(p+). Averaging the identity over a typical corpus puts it within
epsilon of the line  mean r = -mean log p - H(p+):  more reward, less prior likelihood, corpus by corpus,
while over single strings log p and r can correlate positively.

A corpus of N iid draws from a finite distribution is summarised exactly by its count vector, which is
Multinomial(N, p+); every corpus statistic used here is a mean of a per-string value, i.e. counts @ values /
N. So we draw counts for all corpora at once instead of N * n_corpora single samples.

numpy and matplotlib only (no torch, no scipy: importing scipy.stats costs about a second, more than the
whole experiment), so `pqtradeoff toy` starts fast. The statistics (entropy, Spearman, Pearson, means over
count vectors) are `analysis.stats`'s numpy-only ones, which equal scipy's bit for bit; the figures are
`pqtradeoff.analysis.plots`'s toy figures (bare Agg figures, no pyplot).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pqtradeoff.analysis import stats
from pqtradeoff.errors import PQError
from pqtradeoff.io import lock_folder, run_record, write_json
from pqtradeoff.sampling.best_of_n import Selection, finite_summary

SUMMARY = "summary.json"
FIGURES = ("distributions.png", "string_scatter.png", "corpus_scatter.png")


@dataclass(frozen=True)
class ToySettings:
    """Every knob of the toy experiment, with the paper's values as defaults."""

    n_strings: int = 1000
    alpha: float = 0.1
    exponent: float = 42.0
    noise: float = 0.42
    n_corpora: int = 1000
    corpus_size: int = 100_000
    epsilon: float = 0.001
    seed: int = 42
    best_of_n: tuple[int, ...] = (2, 4, 16)  # N of the best-of-N and soft best-of-N checks (() for none)
    soft_lambda: float = 1.0  # soft best-of-N's temperature lambda
    bon_rows: int = 20_000  # kept strings sampled per best-of-N configuration

    def __post_init__(self) -> None:
        for name in ("n_strings", "n_corpora", "corpus_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise PQError(f"{name}={value!r} is out of range: need an integer > 0")
        if self.n_strings < 2:
            raise PQError(f"n_strings={self.n_strings!r} is out of range: need at least 2 strings")
        for name in ("alpha", "exponent", "epsilon"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise PQError(f"{name}={value!r} is out of range: need a finite number > 0")
        if not (isinstance(self.noise, (int, float)) and math.isfinite(self.noise) and self.noise >= 0):
            raise PQError(f"noise={self.noise!r} is out of range: need a finite number >= 0")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise PQError(f"seed={self.seed!r} is out of range: need an integer >= 0")
        if not isinstance(self.best_of_n, tuple):
            raise PQError(f"best_of_n={self.best_of_n!r}: give a tuple of integers N >= 1")
        for n in self.best_of_n:
            Selection(n, self.soft_lambda)  # one line naming best_of_n or lambda
        if isinstance(self.bon_rows, bool) or not isinstance(self.bon_rows, int) or self.bon_rows < 2:
            raise PQError(f"bon_rows={self.bon_rows!r} is out of range: need an integer >= 2")


@dataclass(frozen=True)
class ToyModel:
    """The three per-string quantities: aligned p+, prior p, reward r = log(p+/p)."""

    posterior: np.ndarray
    prior: np.ndarray
    reward: np.ndarray

    @property
    def log_posterior(self) -> np.ndarray:
        return np.log(self.posterior)

    @property
    def log_prior(self) -> np.ndarray:
        return np.log(self.prior)


@dataclass(frozen=True)
class CorpusMeans:
    """Per-corpus averages of the per-string quantities, and which corpora are typical."""

    neg_log_posterior: np.ndarray
    log_prior: np.ndarray
    reward: np.ndarray
    typical: np.ndarray


# ---------------------------------------------------------------------------------------------- model
def softmax(x: np.ndarray) -> np.ndarray:
    """exp(x) / sum(exp(x)), shifted by max(x) for stability; scipy.special.softmax's exact operations."""
    shifted = np.exp(x - np.max(x))
    return shifted / np.sum(shifted)


def streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for the model (Dirichlet + noise) and for the corpora, from one seed.

    Separate streams keep the model fixed when only the corpus settings change."""
    model_seq, corpus_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(model_seq), np.random.default_rng(corpus_seq)


def best_of_n_stream(seed: int) -> np.random.Generator:
    """The best-of-N checks' own stream: the third child of the seed (the first two are `streams`')."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])


def best_of_n_checks(settings: ToySettings, model: ToyModel) -> list[dict[str, Any]]:
    """Best-of-N and soft best-of-N over candidates drawn from p+ (the aligned model), scored by the reward:
    the Monte Carlo mean reward of `bon_rows` kept strings (N candidates each, one batched draw) against the
    closed form (`sampling.best_of_n.finite_law`), with the exact KL(pi || p+), the bound log N - (N-1)/N
    and Beirami et al.'s estimate from the best string's mass (best-of-N only)."""
    rng = best_of_n_stream(settings.seed)
    out = []
    for n in settings.best_of_n:
        for soft in (None, settings.soft_lambda):
            selection = Selection(n, soft)
            candidates = rng.choice(len(model.posterior), size=(settings.bon_rows, n), p=model.posterior)
            kept = candidates[np.arange(settings.bon_rows),
                              selection.choose(model.reward[candidates], rng.random(settings.bon_rows))]
            rewards = model.reward[kept]
            exact = finite_summary(model.posterior, model.reward, selection)
            se = float(rewards.std(ddof=1) / math.sqrt(len(rewards)))
            out.append({"n": n, "soft": soft, "mean_reward": float(rewards.mean()), "mean_reward_se": se,
                        "exact_mean_reward": exact["exact_mean_reward"],
                        "z": (float(rewards.mean()) - exact["exact_mean_reward"]) / se if se > 0 else 0.0,
                        "mean_log_prior": float(model.log_prior[kept].mean()),
                        "exact_kl_aligned": exact["exact_kl"],
                        "kl_bound": exact["kl_bound"] if soft is None else None,
                        "kl_estimate": exact["kl_estimate"]})
    return out


def make_model(settings: ToySettings, rng: np.random.Generator) -> ToyModel:
    """Draw p+ ~ Dirichlet(alpha), p = softmax(p+^(1/exponent) + U(-noise, noise)), r = log(p+/p)."""
    posterior = rng.dirichlet(np.full(settings.n_strings, float(settings.alpha)))
    if not (posterior > 0).all():
        raise PQError(
            f"alpha={settings.alpha!r} is too small: the Dirichlet draw gave strings probability 0 "
            "(their reward log(p+/p) is undefined); use a larger alpha"
        )
    noise = rng.uniform(-settings.noise, settings.noise, settings.n_strings)
    prior = softmax(posterior ** (1.0 / settings.exponent) + noise)
    if not (prior > 0).all():
        raise PQError(f"noise={settings.noise!r} is too large: the prior gives some strings probability 0 "
                      "(their reward log(p+/p) is undefined); use a smaller noise")
    reward = np.log(posterior) - np.log(prior)
    return ToyModel(posterior=posterior, prior=prior, reward=reward)


def draw_counts(probs: np.ndarray, n_corpora: int, corpus_size: int, rng: np.random.Generator) -> np.ndarray:
    """Count vectors [n_corpora, n] of corpora of `corpus_size` iid draws from `probs` (exactly
    Multinomial)."""
    return rng.multinomial(corpus_size, probs, size=n_corpora)


def measure_corpora(model: ToyModel, counts: np.ndarray, epsilon: float) -> CorpusMeans:
    """Means over each corpus (count vectors [c, n]); typical when |mean(-log p+) - H(p+)| < epsilon."""
    values = np.stack([-model.log_posterior, model.log_prior, model.reward], axis=1)  # [n, 3]
    means = stats.count_means(counts, values)
    typical = np.abs(means[:, 0] - stats.entropy(model.posterior)) < epsilon
    return CorpusMeans(means[:, 0], means[:, 1], means[:, 2], typical)


def tradeoff_deviation(means: CorpusMeans, posterior_entropy: float) -> float | None:
    """Largest |mean log p + mean r + H(p+)| over the typical corpora (beta = 1, log Z = 0); None if none."""
    if not means.typical.any():
        return None
    gap = means.log_prior[means.typical] + means.reward[means.typical] + posterior_entropy
    return float(np.abs(gap).max())


def summarize(settings: ToySettings, model: ToyModel, means: CorpusMeans) -> dict[str, Any]:
    """The summary fields of the experiment; checks the exact trade-off line on the typical corpora."""
    h_post = stats.entropy(model.posterior)
    s_spear, s_pear = stats.spearman_pearson(model.log_prior, model.reward)
    t_spear, t_pear = stats.spearman_pearson(means.log_prior[means.typical], means.reward[means.typical])
    a_spear, a_pear = stats.spearman_pearson(means.log_prior[~means.typical], means.reward[~means.typical])
    c_spear, c_pear = stats.spearman_pearson(means.log_prior, means.reward)
    deviation = tradeoff_deviation(means, h_post)
    # Rounding slack: the gap is a sum of three means of size ~H, each exact to a few ulps.
    slack = 64 * np.finfo(float).eps * max(1.0, h_post + float(np.abs(model.log_prior).max()))
    holds = deviation is None or deviation <= settings.epsilon + slack
    if not holds:
        raise RuntimeError(
            f"trade-off line violated: max |mean log p + mean r + H(p+)| = {deviation!r} > "
            f"epsilon={settings.epsilon!r}"
        )
    n_typical = int(means.typical.sum())
    return {
        "posterior_entropy": h_post,
        "prior_entropy": stats.entropy(model.prior),
        "string_spearman": s_spear,
        "string_pearson": s_pear,
        "n_corpora": settings.n_corpora,
        "n_typical": n_typical,
        "n_atypical": settings.n_corpora - n_typical,
        "typical_corpus_spearman": t_spear,
        "typical_corpus_pearson": t_pear,
        "atypical_corpus_spearman": a_spear,
        "atypical_corpus_pearson": a_pear,
        "all_corpus_spearman": c_spear,
        "all_corpus_pearson": c_pear,
        "beta": 1.0,
        "log_partition": 0.0,
        "tradeoff_line": "mean_reward = -mean_log_prior - posterior_entropy",
        "tradeoff_max_deviation": deviation,
        "tradeoff_holds": bool(holds),
        "epsilon": settings.epsilon,
    }


def simulate(settings: ToySettings) -> tuple[ToyModel, CorpusMeans, dict[str, Any]]:
    """Model, corpus means and summary for one setting (no files)."""
    model_rng, corpus_rng = streams(settings.seed)
    model = make_model(settings, model_rng)
    counts = draw_counts(model.posterior, settings.n_corpora, settings.corpus_size, corpus_rng)
    means = measure_corpora(model, counts, settings.epsilon)
    summary = summarize(settings, model, means)
    summary["base_mean_reward"] = float(model.posterior @ model.reward)
    summary["best_of_n"] = best_of_n_checks(settings, model)
    return model, means, summary


def figure_names(fmt: str = "png") -> tuple[str, ...]:
    """The toy's figure file names in format `fmt` (png, pdf or svg)."""
    return tuple(str(Path(name).with_suffix(f".{fmt}")) for name in FIGURES)


def run(settings: ToySettings, out: str | Path, figures: bool = True, figure_format: str = "png"
        ) -> dict[str, Any]:
    """Run the toy experiment and write `out/summary.json` (with the run record) and the figures.

    `out` follows the output-folder rule of `pqtradeoff.io`: empty, or a previous toy output, whose files
    are all replaced (a figure of an earlier run never stays beside the new summary)."""
    from pqtradeoff.io import FIGURE_FORMATS, check_output_folder, clear_owned

    if figure_format not in FIGURE_FORMATS:
        raise PQError(f"figure_format={figure_format!r} is not one of {', '.join(FIGURE_FORMATS)}")
    out = check_output_folder(out, "toy")
    model, means, summary = simulate(settings)
    out.mkdir(parents=True, exist_ok=True)
    lock_folder(out, "toy")
    clear_owned(out, "toy")
    names = figure_names(figure_format)
    if figures:
        from pqtradeoff.analysis import plots  # lazy: matplotlib

        plots.toy_distributions(model, out / names[0])
        plots.toy_string_scatter(model, summary, out / names[1])
        plots.toy_corpus_scatter(means, summary, out / names[2])
    record = run_record("toy", asdict(settings) | {"figure_format": figure_format, "figures": figures})
    write_json(out / SUMMARY, {**summary, "seed": settings.seed, "run": record})
    return summary
