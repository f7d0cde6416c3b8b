"""The analysis figures (matplotlib, Agg backend): the paper's two panels and the Pareto frontier.

- string_level.png: every string's (log prior, reward), one colour per adaptor family, with each config's
  least-squares line;
- corpus_level.png: every bootstrapped corpus's (mean log prior, mean reward), colour = family, marker =
  temperature, the pooled least-squares line with Spearman's rho and Pearson's r in the legend, and exact
  points / lines when the caller supplied them;
- frontier.png: each config's IMH-corrected means with +-1 standard-error bars, the Pareto frontier joined;
- alignment.png: log p+ - log p against the reward within prompts, the fitted slope 1/beta_hat, the nominal one;
- hull.png: every sampled config's local means and the upper-right convex-hull boundary (what `advise` uses).
The corpus-level panel also draws, through each config's corpora, a line of slope -beta_hat.
- the toy experiment's three figures (`toy_distributions`, `toy_string_scatter`, `toy_corpus_scatter`), drawn on
  bare Agg figures without pyplot, whose import the toy does not pay.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402

from pqtradeoff.alignment import AlignmentData  # noqa: E402
from pqtradeoff.io import atomic_write  # noqa: E402
from pqtradeoff.results import ConfigResult, Summary  # noqa: E402

if TYPE_CHECKING:
    import pandas as pd  # annotations only: the toy's figures do not pay its import


class _Pyplot:
    """matplotlib.pyplot, imported on first use: the toy's figures never need it (its import costs ~0.3 s)."""

    def __getattr__(self, name: str) -> Any:
        import matplotlib.pyplot

        return getattr(matplotlib.pyplot, name)


plt = _Pyplot()

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
#: Above this many points a scatter is drawn from a fixed, seeded subsample (the lines use every point).
MAX_SCATTER = 20_000


def _save(fig: plt.Figure, path: Path) -> str:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None}))
    plt.close(fig)
    return path.name


def _palette(families: list[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10" if len(families) <= 10 else "tab20")
    return {f: cmap(i % cmap.N) for i, f in enumerate(families)}


def _markers(temperatures: list[float]) -> dict[float, str]:
    return {t: MARKERS[i % len(MARKERS)] for i, t in enumerate(sorted(temperatures))}


def _subsample(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    if len(frame) <= MAX_SCATTER:
        return frame
    keep = np.random.default_rng(seed).choice(len(frame), MAX_SCATTER, replace=False)
    return frame.iloc[np.sort(keep)]


def _fmt(value: float | None, spec: str = "+.3f") -> str:
    return "n/a" if value is None else format(value, spec)


def string_level(data: pd.DataFrame, summary: Summary, path: Path) -> str:
    """Strings: reward against log prior, per-config regression lines."""
    configs = summary.configs
    families = sorted({c.family for c in configs})
    colour = _palette(families)
    fig, ax = plt.subplots(figsize=(7, 5))
    shown = _subsample(data[data["adaptor"].isin([c.adaptor for c in configs])])
    fam = shown["adaptor"].map({c.adaptor: c.family for c in configs})
    ax.scatter(shown["logp_prior"], shown["reward"], s=3, alpha=0.25, c=[colour[f] for f in fam], rasterized=True)
    for c in configs:
        rows = data[data["adaptor"] == c.adaptor]
        x, y = rows["logp_prior"].to_numpy(float), rows["reward"].to_numpy(float)
        if len(x) >= 2 and np.ptp(x) > 0:
            slope, intercept = np.polyfit(x, y, 1)
            grid = np.array([x.min(), x.max()])
            ax.plot(grid, slope * grid + intercept, color=colour[c.family], lw=1, alpha=0.8)
    for f in families:
        ax.plot([], [], color=colour[f], marker="o", ls="-", label=f)
    s = summary.string_level
    ax.set_title(f"String level: rho = {_fmt(s.spearman)}, r = {_fmt(s.pearson)} (n = {s.n})")
    ax.set_xlabel("log prior probability of the string, log p(y)")
    ax.set_ylabel("reward r(y)")
    ax.legend(fontsize=7, title="adaptor family", title_fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _exact_stars(ax: plt.Axes, configs: list[ConfigResult]) -> None:
    """Each config's exact expectations (when the producer knows them, e.g. the exact-model demo) as stars."""
    exact = [c.exact for c in configs
             if c.exact.get("exact_mean_log_prior") is not None and c.exact.get("exact_mean_reward") is not None]
    if exact:
        ax.scatter([e["exact_mean_log_prior"] for e in exact], [e["exact_mean_reward"] for e in exact],
                   marker="*", s=90, facecolor="none", edgecolor="black", label="exact expectations")


def _legend_keys(ax: plt.Axes, families: list[str], colour: dict[str, Any], marker: dict[float, str]) -> None:
    """Legend entries for colour = adaptor family and marker = temperature (invisible proxy points)."""
    for f in families:
        ax.scatter([], [], color=colour[f], marker="o", label=f)
    for t, m in marker.items():
        ax.scatter([], [], color="grey", marker=m, label=f"T = {t:g}")


def _finish(fig: plt.Figure, ax: plt.Axes, title: str, xlabel: str, ylabel: str, path: Path) -> str:
    """Title, axis labels and a compact two-column legend; save the figure."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return _save(fig, path)


def _beta_lines(ax: plt.Axes, corpora: pd.DataFrame, summary: Summary, colour: dict[str, Any]) -> None:
    """Through each config's corpora, a short line of slope -beta_hat (the fitted effective beta): the band
    on which that adaptor's typical corpora lie, with its own intercept."""
    beta = summary.alignment.beta_hat
    if beta is None or beta <= 0:
        return
    spans = corpora.groupby("adaptor", sort=False)["mean_log_prior"].agg(["min", "max", "mean"])
    centre_y = corpora.groupby("adaptor", sort=False)["mean_reward"].mean()
    family = {c.adaptor: c.family for c in summary.configs}
    for adaptor, row in spans.iterrows():
        half = max(row["max"] - row["min"], 1e-12) * 0.5
        grid = np.array([row["mean"] - half, row["mean"] + half])
        ax.plot(grid, centre_y[adaptor] - beta * (grid - row["mean"]), color=colour[family[adaptor]], lw=0.8,
                alpha=0.9)
    ax.plot([], [], color="grey", lw=0.8, label=f"slope -beta_hat = {-beta:.3g} through each config")


def corpus_level(corpora: pd.DataFrame, summary: Summary, path: Path) -> str:
    """Corpora: mean reward against mean log prior; colour = family, marker = temperature, pooled line."""
    configs = summary.configs
    families = sorted({c.family for c in configs})
    colour = _palette(families)
    marker = _markers(list({c.temperature for c in configs}))
    fig, ax = plt.subplots(figsize=(7, 5))
    shown = _subsample(corpora)
    for (fam, temp), rows in shown.groupby(["family", "temperature"], sort=True):
        ax.scatter(rows["mean_log_prior"], rows["mean_reward"], s=6, alpha=0.35, color=colour[fam],
                   marker=marker[temp], rasterized=True)
    c = summary.corpus_level
    x, y = corpora["mean_log_prior"].to_numpy(float), corpora["mean_reward"].to_numpy(float)
    if len(x) >= 2 and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        grid = np.array([x.min(), x.max()])
        ax.plot(grid, slope * grid + intercept, color="black", lw=1.5,
                label=f"pooled fit: rho = {_fmt(c.spearman)}, r = {_fmt(c.pearson)}")
    _exact_stars(ax, configs)
    _beta_lines(ax, corpora, summary, colour)
    xlim, ylim = ax.get_xlim(), ax.get_ylim()  # the data's view: exact lines are clipped to it
    for i, line in enumerate(summary.exact_lines):
        grid = np.array(xlim)
        ax.plot(grid, line.slope * grid + line.intercept, ls=("--", "-.", ":")[i % 3], lw=1,
                color="dimgray", label=line.label)
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)
    _legend_keys(ax, families, colour, marker)
    return _finish(fig, ax, "Corpus level: bootstrapped corpora from the IMH-corrected chains",
                   "corpus mean log prior probability", "corpus mean reward", path)


def frontier(summary: Summary, path: Path) -> str:
    """Config means with standard-error bars; the Pareto-optimal configs joined by a line."""
    configs = summary.configs
    families = sorted({c.family for c in configs})
    colour = _palette(families)
    marker = _markers(list({c.temperature for c in configs}))
    fig, ax = plt.subplots(figsize=(7, 5))
    for c in configs:
        ax.errorbar(c.log_prior.mean, c.reward.mean, xerr=c.log_prior.se, yerr=c.reward.se,
                    color=colour[c.family], marker=marker[c.temperature], ms=6, lw=0.8,
                    mfc=colour[c.family] if c.on_frontier else "none")
    front = sorted((c for c in configs if c.on_frontier), key=lambda c: c.mean_log_prior)
    ax.plot([c.mean_log_prior for c in front], [c.mean_reward for c in front], color="black", lw=1,
            label="Pareto frontier (filled markers)")
    _exact_stars(ax, configs)
    t = summary.tradeoff
    if t.defined:
        grid = np.array(ax.get_xlim())
        ax.plot(grid, t.slope * grid + t.intercept, ls=":", color="grey", label=f"fit across configs: slope {t.slope:+.3f}")
    _legend_keys(ax, families, colour, marker)
    return _finish(fig, ax, "Trade-off across configurations (IMH-corrected means +- 1 s.e.)",
                   "mean log prior probability", "mean reward", path)


def alignment(aligned: AlignmentData, summary: Summary, path: Path) -> str:
    """d = log p+ - log p against the reward, both minus their prompt's mean; fitted and nominal slopes."""
    fit = summary.alignment
    fig, ax = plt.subplots(figsize=(7, 5))
    import pandas as pd

    shown = _subsample(pd.DataFrame({"r": aligned.r_centered, "d": aligned.d_centered}))
    ax.scatter(shown["r"], shown["d"], s=3, alpha=0.3, color="tab:blue", rasterized=True)
    grid = np.array([aligned.r_centered.min(), aligned.r_centered.max()])
    ax.plot(grid, fit.slope * grid, color="black", lw=1.5,
            label=f"fit: slope 1/beta_hat = {fit.slope:.4g} (beta_hat = "
            + (f"{fit.beta_hat:.4g})" if fit.beta_hat is not None else "undefined)"))
    if fit.nominal_beta is not None:
        ax.plot(grid, grid / fit.nominal_beta, color="tab:red", ls="--", lw=1,
                label=f"nominal beta = {fit.nominal_beta:g}: slope {1 / fit.nominal_beta:.4g}")
    ax.set_title(f"Alignment fidelity: within-prompt r = {_fmt(fit.within_prompt_r)} "
                 f"({fit.n_strings} strings, {fit.n_prompts} prompt(s))")
    ax.set_xlabel("reward minus its prompt's mean")
    ax.set_ylabel("log p+(y|x) - log p(y|x), minus its prompt's mean")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def hull(summary: Summary, path: Path) -> str:
    """Local (uncorrected) means of every sampled config, +-1 s.e., and the upper-right convex-hull boundary:
    what sampling each adaptor, or mixing two, actually gives (the points `pqtradeoff advise` chooses from)."""
    from pqtradeoff.advise import efficient_hull, points_from_summary

    points, _ = points_from_summary(summary.to_json())
    fig, ax = plt.subplots(figsize=(7, 5))
    x = np.array([p.log_prior for p in points])
    y = np.array([p.reward for p in points])
    for p in points:
        ax.errorbar(p.log_prior, p.reward, xerr=p.log_prior_se, yerr=p.reward_se, marker="s" if p.imh_skipped else "o",
                    ms=5, lw=0.8, color="tab:grey" if p.imh_skipped else "tab:blue")
    edge = efficient_hull(x, y)
    ax.plot(x[edge], y[edge], color="black", lw=1.2, label="reachable frontier (mixtures of neighbours)")
    for i in edge:
        ax.annotate(points[i].adaptor, (x[i], y[i]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.plot([], [], "s", color="tab:grey", label="skipped by the IMH analysis (local means)")
    return _finish(fig, ax, "What sampling gives: local means +- 1 s.e. and the upper-right hull",
                   "mean log prior (local, uncorrected)", "mean reward (local, uncorrected)", path)


def draw_all(data: pd.DataFrame, corpora: pd.DataFrame, summary: Summary, out_dir: Path,
             aligned: AlignmentData | None = None) -> dict[str, str]:
    """Draw the three figures into out_dir; return {figure: file name}."""
    out_dir = Path(out_dir)
    return {
        "string_level": string_level(data, summary, out_dir / "string_level.png"),
        "corpus_level": corpus_level(corpora, summary, out_dir / "corpus_level.png"),
        "frontier": frontier(summary, out_dir / "frontier.png"),
        "hull": hull(summary, out_dir / "hull.png"),
    } | ({"alignment": alignment(aligned, summary, out_dir / "alignment.png")} if aligned is not None else {})


# ------------------------------------------------------------------------------------------- toy figures
# The toy's figures are built on bare Agg figures (no pyplot: its import and its global figure registry cost
# time) with fixed margins in inches (tight_layout would lay out and measure every text once more before the
# real draw), and PNGs compressed at zlib level 1 (about 10% larger files, faster to encode than level 6).
TOY_DPI = 100
TOY_PNG = {"format": "png", "dpi": TOY_DPI, "metadata": {"Software": None}, "pil_kwargs": {"compress_level": 1}}


def bare_figure(width: float, height: float, left: float = 0.8, bottom: float = 0.55, right: float = 0.15,
                top: float = 0.35, wspace: float = 0.0) -> Any:
    """An Agg-backed figure of width x height inches, axes area inset by the given margins (inches)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=TOY_DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        wspace=wspace)
    return fig


def _fixed_label(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    """Title at a fixed height (skips matplotlib's search for where it clears the tick labels), few ticks.

    Ticks and their labels are most of the drawing time; four or five per axis read as well as eight."""
    for axis in ("x", "y"):
        if getattr(ax, f"get_{axis}scale")() == "linear":
            ax.locator_params(axis=axis, nbins=4)
    ax.set_title(title, y=1.0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def save_bare(fig: Any, path: Path) -> None:
    """Write a bare figure's PNG atomically; no timestamp metadata, so the same data gives the same bytes."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, **TOY_PNG))


def toy_distributions(model: Any, path: Path) -> None:
    """The toy's p+, p and r over the strings (a `toy.ToyModel`), ordered by decreasing p+."""
    from matplotlib.ticker import LogFormatter, LogLocator

    order = np.argsort(-model.posterior, kind="stable")
    rank = np.arange(1, len(order) + 1)
    fig = bare_figure(13, 3.6, left=0.85, right=0.1, wspace=0.3)
    axes = fig.subplots(1, 3)
    axes[0].plot(rank, model.posterior[order], color="tab:red")
    axes[0].set_yscale("log")
    axes[0].yaxis.set_major_locator(LogLocator(numticks=6))
    axes[0].yaxis.set_major_formatter(LogFormatter())  # "1e-20": plain text, no mathtext parsing
    _fixed_label(axes[0], "aligned p+(y) ~ Dirichlet", "string (by p+)", "probability")
    axes[1].plot(rank, model.prior[order], color="tab:blue")
    _fixed_label(axes[1], "prior p(y)", "string (by p+)", "probability")
    axes[2].plot(rank, model.reward[order], color="tab:green")
    _fixed_label(axes[2], "reward r(y) = log p+(y)/p(y)", "string (by p+)", "reward")
    save_bare(fig, path)


def toy_string_scatter(model: Any, summary: dict[str, Any], path: Path) -> None:
    """The toy's log p(y) against r(y), one point per string."""
    fig = bare_figure(5, 4, left=0.65)
    ax = fig.subplots()
    ax.scatter(model.log_prior, model.reward, s=6, alpha=0.6, color="tab:purple")
    _fixed_label(ax, f"strings: Spearman {_fmt(summary['string_spearman'], '.3f')}", "log prior  log p(y)",
                 "reward  r(y)")
    save_bare(fig, path)


def toy_corpus_scatter(means: Any, summary: dict[str, Any], path: Path) -> None:
    """The toy's corpus mean log p against corpus mean r (a `toy.CorpusMeans`); typical corpora highlighted;
    the line mean r = -mean log p - H."""
    fig = bare_figure(5.5, 4.2, left=0.75)
    ax = fig.subplots()
    typ = means.typical
    ax.scatter(means.log_prior[~typ], means.reward[~typ], s=5, color="0.7", label=f"atypical ({int((~typ).sum())})")
    ax.scatter(means.log_prior[typ], means.reward[typ], s=7, color="tab:red", label=f"typical ({int(typ.sum())})")
    xs = np.linspace(means.log_prior.min(), means.log_prior.max(), 2)
    ax.plot(xs, -xs - summary["posterior_entropy"], color="black", lw=1, label="mean r = -mean log p - H(p+)")
    _fixed_label(ax, f"corpora: typical Spearman {_fmt(summary['typical_corpus_spearman'], '.3f')}",
                 "corpus mean log prior", "corpus mean reward")
    ax.legend(fontsize=7, loc="best")
    save_bare(fig, path)
