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
  bare Agg figures without pyplot, as all figures are (its import costs ~0.3 s).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402

from pqtradeoff.analysis.fidelity import AlignmentData  # noqa: E402
from pqtradeoff.analysis.results import ConfigResult, Summary  # noqa: E402
from pqtradeoff.columns import Col
from pqtradeoff.io import atomic_write  # noqa: E402

if TYPE_CHECKING:
    import pandas as pd  # annotations only: the toy's figures do not pay its import


def _subplots(figsize: tuple[float, float]) -> tuple[Any, Any]:
    """A figure with one axes, on a bare Agg canvas: what pyplot.subplots draws, without pyplot (its import
    costs ~0.3 s) or its global figure registry (nothing to close)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
#: Above this many points a scatter is drawn from a fixed, seeded subsample (the lines use every point).
MAX_SCATTER = 20_000
#: Above this many strings the string-level panel shows their density (hexagonal bins), not single points.
HEXBIN_ABOVE = 5_000
LEGEND_FONT = 8
#: Legend entries one column holds in a 5-inch figure; more go in two columns.
LEGEND_ROWS = 22


def save_metadata(fmt: str) -> dict[str, Any]:
    """Metadata that keeps the same figure byte-identical from run to run (no software name, no date)."""
    return {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
            "svg": {"Creator": None, "Date": None}}[fmt]


def _save(fig: Any, path: Path) -> str:
    fmt = path.suffix.lstrip(".")
    with matplotlib.rc_context({"svg.hashsalt": "pqtradeoff", "pdf.compression": 6}):
        atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=110, metadata=save_metadata(fmt)))
    return path.name


def _palette(families: list[str]) -> dict[str, Any]:
    cmap = matplotlib.colormaps["tab10" if len(families) <= 10 else "tab20"]
    return {f: cmap(i % cmap.N) for i, f in enumerate(families)}


def _markers(temperatures: list[float]) -> dict[float, str]:
    return {t: MARKERS[i % len(MARKERS)] for i, t in enumerate(sorted(temperatures))}


def _shades(temperatures: list[float]) -> dict[float, float]:
    """Temperature as a sequential shade: 0.35 (lightest, lowest T) to 1.0 (full colour, highest T)."""
    ts = sorted(set(temperatures))
    if len(ts) == 1:
        return {ts[0]: 1.0}
    return {t: 0.35 + 0.65 * i / (len(ts) - 1) for i, t in enumerate(ts)}


def _shade(colour: Any, amount: float) -> tuple[float, float, float]:
    """`colour` blended with white: amount 1 is the colour itself, smaller is lighter."""
    from matplotlib.colors import to_rgb

    rgb = np.array(to_rgb(colour))
    return tuple(1 - amount * (1 - rgb))


def _subsample(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    if len(frame) <= MAX_SCATTER:
        return frame
    keep = np.random.default_rng(seed).choice(len(frame), MAX_SCATTER, replace=False)
    return frame.iloc[np.sort(keep)]


def _fmt(value: float | None, spec: str = "+.3f") -> str:
    """A signed number with a true minus sign (U+2212), or n/a."""
    return "n/a" if value is None else format(value, spec).replace("-", "−")


def _outside_legend(fig: Any, ax: Any, **kwargs: Any) -> None:
    """The legend to the right of the axes, in readable type (the data keep the whole panel); a long one in
    two columns, so that it fits the figure's height."""
    entries = len(ax.get_legend_handles_labels()[0])
    if entries > LEGEND_ROWS:  # the second column widens the figure, not narrows the panel
        fig.set_size_inches(fig.get_figwidth() + 3.2, fig.get_figheight())
    ax.legend(fontsize=LEGEND_FONT, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
              frameon=False, ncol=2 if entries > LEGEND_ROWS else 1, **kwargs)


def _temperature_key(ax: Any, shade: dict[float, float]) -> None:
    """Legend entries for the temperature shades (drawn in grey)."""
    if len(shade) > 1:
        for t, amount in shade.items():
            ax.scatter([], [], color=_shade("black", amount * 0.8), marker="o", s=20, label=f"T = {t:g}")


def string_level(data: pd.DataFrame, summary: Summary, path: Path) -> str:
    """Strings: their density (or points) of reward against log prior, and each config's least-squares line."""
    configs = summary.configs
    families = sorted({c.family for c in configs})
    colour = _palette(families)
    shade = _shades([c.temperature for c in configs])
    fig, ax = _subplots((8.6, 5))
    used = data[data[Col.ADAPTOR].isin([c.adaptor for c in configs])]
    if len(used) > HEXBIN_ABOVE:
        bins = ax.hexbin(used[Col.LOGP_PRIOR], used[Col.REWARD], gridsize=70, bins="log", cmap="Greys", mincnt=1,
                         linewidths=0.0, rasterized=True)
        bar = fig.colorbar(bins, ax=ax, orientation="horizontal", pad=0.14, fraction=0.05, aspect=40)
        bar.set_label("strings per hexagon (log scale)", fontsize=LEGEND_FONT)
        ax.scatter([], [], marker="h", color="0.45", s=30, label=f"{len(used):,} strings (density)")
    else:
        ax.scatter(used[Col.LOGP_PRIOR], used[Col.REWARD], s=4, alpha=0.3, color="0.4", rasterized=True,
                   label=f"{len(used):,} strings")
    for c in configs:
        rows = data[data[Col.ADAPTOR] == c.adaptor]
        x, y = rows[Col.LOGP_PRIOR].to_numpy(float), rows[Col.REWARD].to_numpy(float)
        if len(x) >= 2 and np.ptp(x) > 0:
            slope, intercept = np.polyfit(x, y, 1)
            grid = np.quantile(x, [0.02, 0.98])  # over where this config's strings are
            ax.plot(grid, slope * grid + intercept, color=_shade(colour[c.family], shade[c.temperature]), lw=1.4)
    for f in families:
        ax.plot([], [], color=colour[f], lw=1.6, label=f"fit, {f}")
    _temperature_key(ax, {t: a for t, a in shade.items()})
    s = summary.string_level
    ax.set_title(f"String level: Spearman ρ = {_fmt(s.spearman)}, Pearson r = {_fmt(s.pearson)} "
                 f"(n = {s.n:,})")
    ax.set_xlabel("log prior probability of the string, log p(y)")
    ax.set_ylabel("reward r(y)")
    _outside_legend(fig, ax, title="least-squares fit per\nconfiguration: colour =\nfamily, shade = T",
                    title_fontsize=LEGEND_FONT, alignment="left")
    fig.tight_layout()
    return _save(fig, path)


def _exact_stars(ax: Any, configs: list[ConfigResult]) -> None:
    """Each config's exact expectations (when the producer knows them, e.g. the exact-model demo) as stars."""
    exact = [c.exact for c in configs
             if c.exact.get("exact_mean_log_prior") is not None and c.exact.get("exact_mean_reward") is not None]
    if exact:
        ax.scatter([e["exact_mean_log_prior"] for e in exact], [e["exact_mean_reward"] for e in exact],
                   marker="*", s=90, facecolor="none", edgecolor="black", label="exact expectations", zorder=4)


def _legend_keys(ax: Any, families: list[str], colour: dict[str, Any], marker: dict[float, str]) -> None:
    """Legend entries for colour = adaptor family and marker = temperature (invisible proxy points)."""
    for f in families:
        ax.scatter([], [], color=colour[f], marker="o", label=f)
    for t, m in marker.items():
        ax.scatter([], [], color="grey", marker=m, label=f"T = {t:g}")


def _finish(fig: Any, ax: Any, title: str, xlabel: str, ylabel: str, path: Path) -> str:
    """Title, axis labels and a legend beside the axes; save the figure. The title starts at the axes' left
    edge: centred over axes that the legend makes narrow, a long one ran off the figure."""
    ax.set_title(title, loc="left")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _outside_legend(fig, ax)
    fig.tight_layout()
    return _save(fig, path)


def beta_segment(x: np.ndarray, y: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """A segment of slope -beta through the centre of a cloud of points, kept inside the cloud's box (so a
    steep line does not run far above and below the data)."""
    cx, cy = float(np.mean(x)), float(np.mean(y))
    half_x = max(float(np.ptp(x)), 1e-12) / 2
    half_y = max(float(np.ptp(y)), 1e-12) / 2
    half = min(half_x, half_y / beta)
    grid = np.array([cx - half, cx + half])
    return grid, cy - beta * (grid - cx)


def _beta_lines(ax: Any, corpora: pd.DataFrame, summary: Summary) -> None:
    """Through each config's corpora, a short segment of slope -beta_hat (the fitted effective beta): the band
    on which that adaptor's typical corpora lie, with its own intercept."""
    beta = summary.alignment.beta_hat
    if beta is None or beta <= 0:
        return
    for _, rows in corpora.groupby(Col.ADAPTOR, sort=False):
        gx, gy = beta_segment(rows["mean_log_prior"].to_numpy(float), rows["mean_reward"].to_numpy(float), beta)
        ax.plot(gx, gy, color="black", lw=0.8, alpha=0.8, zorder=3)
    ax.plot([], [], color="black", lw=0.8, label=f"slope −β = {_fmt(-beta, '.3g')} (effective β) "
            "through each configuration")


def _sample_means(ax: Any, summary: Summary) -> None:
    """Best-of-N configurations (skipped by the IMH analysis: their law has no per-token log q): their plain
    sample means +-1 s.e. as grey squares, each named, on the same plane (not IMH-corrected)."""
    from pqtradeoff.sampling.adaptors import BestOfN, parse  # lazy: the figures' import stays light

    shown = [s for s in summary.skipped if s.local_mean_reward is not None and s.local_mean_log_prior is not None
             and isinstance(parse(s.adaptor), BestOfN)]
    for s in shown:
        ax.errorbar(s.local_mean_log_prior, s.local_mean_reward, xerr=s.local_mean_log_prior_se or 0.0,
                    yerr=s.local_mean_reward_se or 0.0, marker="s", ms=6, lw=0.8, color="tab:grey",
                    mec="black", zorder=4)
        ax.annotate(s.adaptor, (s.local_mean_log_prior, s.local_mean_reward), fontsize=6, xytext=(4, 4),
                    textcoords="offset points", zorder=4)
    if shown:
        ax.plot([], [], "s", color="tab:grey", mec="black",
                label="best-of-N: sample means ± 1 s.e. (not IMH-corrected)")


def what_if_curves(summary: Summary, local: bool = False) -> dict[str, list[Any]]:
    """Family -> its estimated what-if entries (sampled ones included), by temperature: the sweeps drawn as
    curves (families with at least two points), of the corrected means or (`local`) of the local ones."""
    curves: dict[str, list[Any]] = {}
    for w in summary.what_if:
        if w.skipped is None and (w.local_mean_reward if local else w.mean_reward) is not None:
            curves.setdefault(w.family, []).append(w)
    return {f: sorted(ws, key=lambda w: w.temperature) for f, ws in sorted(curves.items()) if len(ws) >= 2}


def _draw_what_if(ax: Any, summary: Summary, colour: dict[str, Any], local: bool = False) -> None:
    """Each family's what-if sweep as a curve of its corrected (or `local`, dashed) means by temperature with a
    band of +-1 s.e. in reward; sampled configurations' own points on it are drawn by the caller."""
    curves = what_if_curves(summary, local)
    prefix = "local_" if local else ""
    for family, ws in curves.items():
        x = np.array([getattr(w, f"{prefix}mean_log_prior") for w in ws])
        y = np.array([getattr(w, f"{prefix}mean_reward") for w in ws])
        se = np.array([getattr(w, f"{prefix}mean_reward_se") for w in ws])
        c = colour.get(family, "tab:grey")
        ax.plot(x, y, color=c, lw=1.2, alpha=0.9, zorder=2, ls="--" if local else "-")
        ax.fill_between(x, y - se, y + se, color=c, alpha=0.18, lw=0, zorder=1)
        ax.scatter(x, y, s=6, color=c, zorder=2)
        ax.annotate(f"T {ws[0].temperature:g}", (x[0], y[0]), fontsize=6, xytext=(3, -8),
                    textcoords="offset points", color=c)
        ax.annotate(f"T {ws[-1].temperature:g}", (x[-1], y[-1]), fontsize=6, xytext=(3, 3),
                    textcoords="offset points", color=c)
    if curves:
        ax.plot([], [], color="black", lw=1.2, ls="--" if local else "-",
                label=("what-if sweep, local q (what sampling gives)" if local else
                       "what-if sweep (from the pool, not sampled)") + " ± 1 s.e.")


def _families(summary: Summary) -> list[str]:
    return sorted({c.family for c in summary.configs} | set(what_if_curves(summary))
                  | set(what_if_curves(summary, local=True)))


def what_if(summary: Summary, path: Path) -> str:
    """The what-if sweeps on the corpus-level plane: a curve per family by temperature (corrected means solid,
    local means dashed, bands +-1 s.e.), the sampled configurations' own IMH means (filled) and local means
    (hollow) +-1 s.e. on them."""
    families = _families(summary)
    colour = _palette(families)
    fig, ax = _subplots((8.6, 5))
    _draw_what_if(ax, summary, colour)
    _draw_what_if(ax, summary, colour, local=True)
    for c in summary.configs:
        ax.errorbar(c.log_prior.mean, c.reward.mean, xerr=c.log_prior.se, yerr=c.reward.se, marker="o", ms=5,
                    lw=0.8, color=colour[c.family], mec="black", zorder=3)
        ax.errorbar(c.log_prior.local_mean, c.reward.local_mean, xerr=c.log_prior.local_mean_se or 0.0,
                    yerr=c.reward.local_mean_se or 0.0, marker="o", ms=5, lw=0.6, color=colour[c.family],
                    mfc="white", zorder=3)
    ax.plot([], [], "o", color="grey", mec="black", label="sampled configuration: IMH mean ± 1 s.e.")
    ax.plot([], [], "o", color="grey", mfc="white", label="sampled configuration: local mean ± 1 s.e.")
    exact = [w.exact for w in summary.what_if if not w.sampled and w.exact.get("exact_mean_reward") is not None]
    if exact:
        ax.scatter([e["exact_mean_log_prior"] for e in exact], [e["exact_mean_reward"] for e in exact],
                   marker="*", s=50, facecolor="none", edgecolor="black", lw=0.6, zorder=4,
                   label="exact expectations of the what-if adaptors")
    for f in families:
        ax.scatter([], [], color=colour[f], marker="o", s=20, label=f)
    return _finish(fig, ax, "What if: every adaptor's means estimated from the pooled corpus",
                   "mean log prior probability", "mean reward", path)


def length(summary: Summary, path: Path) -> str:
    """Is it just length? Left, middle: each configuration's local mean log prior and mean reward against its
    mean length. Right: within each length stratum, the configurations' local means and the stratum's
    trade-off line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot, as `_subplots`

    configs = [c for c in summary.configs if c.mean_length is not None]
    families = sorted({c.family for c in configs})
    colour = _palette(families)
    fig = Figure(figsize=(13, 4.0))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for c in configs:
        axes[0].scatter(c.mean_length, c.log_prior.local_mean, color=colour[c.family], s=18)
        axes[1].scatter(c.mean_length, c.reward.local_mean, color=colour[c.family], s=18)
    for ax, what in zip(axes[:2], ("local mean log prior", "local mean reward"), strict=True):
        ax.set_xlabel("mean length (tokens)")
        ax.set_ylabel(what)
    rep = summary.length
    axes[0].set_title("by configuration", loc="left", fontsize=9)
    styles = ("-", "--", "-.", ":")
    for i, s in enumerate(rep.strata if rep is not None else []):
        if s.slope is not None:
            axes[2].plot([], [], ls=styles[i % 4], color="black",
                         label=f"{s.lo}-{s.hi} tokens: slope {s.slope:+.3g} ({s.n_configs} configs)")
    for f in families:
        axes[2].scatter([], [], color=colour[f], s=18, label=f)
    if rep is not None and rep.defined:
        axes[2].set_title(f"within length strata: the trade-off {rep.verdict}", loc="left", fontsize=9)
    axes[2].set_xlabel("local mean log prior (within stratum)")
    axes[2].set_ylabel("local mean reward (within stratum)")
    _strata_points(axes[2], summary, colour, styles)
    axes[2].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.subplots_adjust(left=0.06, right=0.8, bottom=0.13, top=0.92, wspace=0.32)
    return _save(fig, path)


def _strata_points(ax: Any, summary: Summary, colour: dict[str, Any], styles: tuple[str, ...]) -> None:
    """Each length stratum's configuration means (`LengthReport.strata[*].means`) and their line."""
    from pqtradeoff.sampling.adaptors import parse  # lazy: the figures' import stays light

    for i, stratum in enumerate(summary.length.strata if summary.length is not None else []):
        xs = [m["mean_log_prior"] for m in stratum.means]
        ys = [m["mean_reward"] for m in stratum.means]
        for m in stratum.means:
            ax.scatter(m["mean_log_prior"], m["mean_reward"], s=14,
                       color=colour.get(parse(m["adaptor"]).family, "grey"))
        if len(xs) >= 2 and np.ptp(xs) > 0:
            slope, intercept = np.polyfit(xs, ys, 1)
            grid = np.array([min(xs), max(xs)])
            ax.plot(grid, slope * grid + intercept, ls=styles[i % 4], color="black", lw=0.9)


def corpus_level(corpora: pd.DataFrame, summary: Summary, path: Path) -> str:
    """Corpora: mean reward against mean log prior; colour = family, shade = temperature; each config's centre
    ringed; the pooled least-squares line; exact points and lines when the producer supplied them."""
    configs = summary.configs
    families = _families(summary)
    colour = _palette(families)
    shade = _shades([c.temperature for c in configs])
    fig, ax = _subplots((8.6, 5))
    _draw_what_if(ax, summary, colour)
    shown = _subsample(corpora)
    for (fam, temp), rows in shown.groupby(["family", "temperature"], sort=True):
        ax.scatter(rows["mean_log_prior"], rows["mean_reward"], s=5, alpha=0.3, color=_shade(colour[fam], shade[temp]),
                   linewidths=0, rasterized=True)
    centres = corpora.groupby(["family", "temperature"], sort=True)[["mean_log_prior", "mean_reward"]].mean()
    for (fam, temp), row in centres.iterrows():
        ax.scatter(row["mean_log_prior"], row["mean_reward"], s=28, color=_shade(colour[fam], shade[temp]),
                   edgecolor="black", linewidths=0.6, zorder=3)
    c = summary.corpus_level
    x, y = corpora["mean_log_prior"].to_numpy(float), corpora["mean_reward"].to_numpy(float)
    if len(x) >= 2 and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        grid = np.quantile(x, [0.01, 0.99])
        ax.plot(grid, slope * grid + intercept, color="black", lw=1.5, ls="--",
                label=f"pooled fit: ρ = {_fmt(c.spearman)}, r = {_fmt(c.pearson)}")
    _exact_stars(ax, configs)
    _beta_lines(ax, corpora, summary)
    _sample_means(ax, summary)
    xlim, ylim = ax.get_xlim(), ax.get_ylim()  # the data's view: exact lines are clipped to it
    for i, line in enumerate(summary.exact_lines):
        grid = np.array(xlim)
        ax.plot(grid, line.slope * grid + line.intercept, ls=("--", "-.", ":")[i % 3], lw=0.8, alpha=0.7,
                color="dimgray", label=line.label, zorder=1)
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)
    for f in families:
        ax.scatter([], [], color=colour[f], marker="o", s=20, label=f)
    _temperature_key(ax, shade)
    return _finish(fig, ax, "Corpus level: bootstrapped corpora from the IMH-corrected chains",
                   "corpus mean log prior probability", "corpus mean reward", path)


def frontier(summary: Summary, path: Path) -> str:
    """Config means with standard-error bars; the Pareto-optimal configs joined by a line."""
    configs = summary.configs
    families = sorted({c.family for c in configs})
    colour = _palette(families)
    marker = _markers(list({c.temperature for c in configs}))
    fig, ax = _subplots((8.6, 5))
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
        ax.plot(grid, t.slope * grid + t.intercept, ls=":", color="grey", label=f"fit across configurations: slope {_fmt(t.slope)}")
    _legend_keys(ax, families, colour, marker)
    return _finish(fig, ax, "Trade-off across configurations (IMH-corrected means ± 1 s.e.)",
                   "mean log prior probability", "mean reward", path)


def alignment(aligned: AlignmentData, summary: Summary, path: Path) -> str:
    """d = log p+ - log p against the reward, both minus their prompt's mean; fitted and nominal slopes."""
    fit = summary.alignment
    fig, ax = _subplots((8.6, 5))
    import pandas as pd

    shown = _subsample(pd.DataFrame({"r": aligned.r_centered, "d": aligned.d_centered}))
    ax.scatter(shown["r"], shown["d"], s=3, alpha=0.3, color="tab:blue", rasterized=True)
    grid = np.array([aligned.r_centered.min(), aligned.r_centered.max()])
    ax.plot(grid, fit.slope * grid, color="black", lw=1.5,
            label=f"fit: slope 1/β = {_fmt(fit.slope, '.4g')} (effective β = "
            + (f"{_fmt(fit.beta_hat, '.4g')})" if fit.beta_hat is not None else "undefined)"))
    if fit.nominal_beta is not None:
        ax.plot(grid, grid / fit.nominal_beta, color="tab:red", ls="--", lw=1,
                label=f"nominal β = {fit.nominal_beta:g}: slope {1 / fit.nominal_beta:.4g}")
    ax.set_title(f"Alignment fidelity: within-prompt r = {_fmt(fit.within_prompt_r)} "
                 f"({fit.n_strings} strings, {fit.n_prompts} prompt(s))")
    ax.set_xlabel("reward minus its prompt's mean")
    ax.set_ylabel("log p₊(y|x) − log p(y|x), minus its prompt's mean")
    ax.legend(fontsize=LEGEND_FONT)
    fig.tight_layout()
    return _save(fig, path)


def hull(summary: Summary, path: Path) -> str:
    """Local (uncorrected) means of every sampled config, +-1 s.e., and the upper-right convex-hull boundary:
    what sampling each adaptor, or mixing two, actually gives (the points `pqtradeoff advise` chooses from)."""
    from pqtradeoff.analysis.advise import efficient_hull, points_from_summary

    points, _ = points_from_summary(summary.to_json())
    fig, ax = _subplots((8.6, 5))
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
    return _finish(fig, ax, "What sampling gives: local means ± 1 s.e. and the upper-right hull",
                   "mean log prior (local, uncorrected)", "mean reward (local, uncorrected)", path)


def reward_vs_kl(summary: Summary, path: Path) -> str:
    """The plane the best-of-N literature uses: each sampled configuration's mean reward against its KL
    divergence from the aligned model, KL(q || p+) = E_q[log q - log p+], both over its own strings (what
    sampling it gives), +-1 s.e.; beside the paper's plane (mean log prior), not instead of it."""
    configs = [c for c in summary.configs if c.kl_aligned is not None]
    families = sorted({c.family for c in configs})
    colour = _palette(families)
    marker = _markers(list({c.temperature for c in configs}))
    fig, ax = _subplots((8.6, 5))
    for c in configs:
        ax.errorbar(c.kl_aligned, c.reward.local_mean, xerr=c.kl_aligned_se or 0.0, yerr=c.reward.local_mean_se or 0.0,
                    color=colour[c.family], marker=marker[c.temperature], ms=6, lw=0.8, mfc="none")
    if any(c.exact.get("exact_kl_aligned") is not None for c in configs):
        ax.scatter([c.exact["exact_kl_aligned"] for c in configs if "exact_kl_aligned" in c.exact],
                   [c.exact["exact_local_mean_reward"] for c in configs if "exact_kl_aligned" in c.exact],
                   marker="*", s=40, color="black", zorder=3, label="exact (closed form)")
    _legend_keys(ax, families, colour, marker)
    return _finish(fig, ax, "Reward against KL from the aligned model (local means ± 1 s.e.)",
                   "KL(q ‖ p₊) = E_q[log q − log p₊] (nats)", "mean reward (local)", path)


def draw_all(data: pd.DataFrame, corpora: pd.DataFrame, summary: Summary, out_dir: Path,
             aligned: AlignmentData | None = None, fmt: str = "png") -> dict[str, str]:
    """Draw the figures into out_dir as `fmt` files (png, pdf or svg); return {figure: file name}."""
    out_dir = Path(out_dir)
    return {
        "string_level": string_level(data, summary, out_dir / f"string_level.{fmt}"),
        "corpus_level": corpus_level(corpora, summary, out_dir / f"corpus_level.{fmt}"),
        "frontier": frontier(summary, out_dir / f"frontier.{fmt}"),
        "hull": hull(summary, out_dir / f"hull.{fmt}"),
        "reward_vs_kl": reward_vs_kl(summary, out_dir / f"reward_vs_kl.{fmt}"),
    } | ({"alignment": alignment(aligned, summary, out_dir / f"alignment.{fmt}")} if aligned is not None else {}) \
      | ({"what_if": what_if(summary, out_dir / f"what_if.{fmt}")}
         if what_if_curves(summary) or what_if_curves(summary, local=True) else {}) \
      | ({"length": length(summary, out_dir / f"length.{fmt}")}
         if summary.length is not None and summary.length.defined else {})


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
    ax.set_title(title, y=1.0, fontsize=12)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def save_bare(fig: Any, path: Path) -> None:
    """Write a bare figure atomically in the format its suffix names (png, pdf, svg); no timestamp metadata,
    so the same data give the same bytes."""
    fmt = Path(path).suffix.lstrip(".")
    options = TOY_PNG if fmt == "png" else {"format": fmt, "dpi": TOY_DPI, "metadata": save_metadata(fmt)}
    with matplotlib.rc_context({"svg.hashsalt": "pqtradeoff"}):
        atomic_write(path, lambda tmp: fig.savefig(tmp, **options))


def toy_distributions(model: Any, path: Path) -> None:
    """The toy's p₊, p and r over the strings (a `toy.ToyModel`), strings ordered by decreasing p₊: p₊ as a
    line (it is sorted), the prior and the reward as points (they are not: a line would only draw noise)."""
    from matplotlib.ticker import LogFormatter, LogLocator

    order = np.argsort(-model.posterior, kind="stable")
    rank = np.arange(1, len(order) + 1)
    fig = bare_figure(13, 3.8, left=0.85, right=0.1, top=0.45, wspace=0.3)
    axes = fig.subplots(1, 3)
    axes[0].plot(rank, model.posterior[order], color="tab:red")
    axes[0].set_yscale("log")
    axes[0].yaxis.set_major_locator(LogLocator(numticks=6))
    axes[0].yaxis.set_major_formatter(LogFormatter())  # "1e-20": plain text, no mathtext parsing
    _fixed_label(axes[0], "Aligned model p₊(y) ~ Dirichlet(α)", "string, by decreasing p₊(y)", "p₊(y)")
    axes[1].scatter(rank, model.prior[order], s=3, color="tab:blue", linewidths=0)
    _fixed_label(axes[1], "Prior p(y)", "string, by decreasing p₊(y)", "p(y)")
    axes[2].scatter(rank, model.reward[order], s=3, color="tab:green", linewidths=0)
    _fixed_label(axes[2], "Reward r(y) = log p₊(y) − log p(y)", "string, by decreasing p₊(y)", "r(y)")
    save_bare(fig, path)


def toy_string_scatter(model: Any, summary: dict[str, Any], path: Path) -> None:
    """The toy's log p(y) against r(y), one point per string."""
    fig = bare_figure(5.5, 4.2, left=0.75, top=0.45)
    ax = fig.subplots()
    ax.scatter(model.log_prior, model.reward, s=6, alpha=0.6, color="tab:purple", linewidths=0)
    _fixed_label(ax, f"Strings: Spearman ρ = {_fmt(summary['string_spearman'], '.3f')}", "log prior, log p(y)",
                 "reward, r(y)")
    save_bare(fig, path)


def toy_corpus_scatter(means: Any, summary: dict[str, Any], path: Path) -> None:
    """The toy's corpus mean log p against corpus mean r (a `toy.CorpusMeans`); typical corpora highlighted;
    the line mean r = -mean log p - H."""
    fig = bare_figure(5.5, 4.2, left=0.75, top=0.45)
    ax = fig.subplots()
    typ = means.typical
    ax.scatter(means.log_prior[~typ], means.reward[~typ], s=5, color="0.7", linewidths=0,
               label=f"atypical corpora ({int((~typ).sum()):,})")
    ax.scatter(means.log_prior[typ], means.reward[typ], s=7, color="tab:red", linewidths=0,
               label=f"typical corpora ({int(typ.sum()):,})")
    xs = np.linspace(means.log_prior.min(), means.log_prior.max(), 2)
    ax.plot(xs, -xs - summary["posterior_entropy"], color="black", lw=1, label="mean r = −mean log p − H(p₊)")
    _fixed_label(ax, f"Corpora: typical Spearman ρ = {_fmt(summary['typical_corpus_spearman'], '.3f')}",
                 "corpus mean log prior", "corpus mean reward")
    ax.legend(fontsize=LEGEND_FONT, loc="best")
    save_bare(fig, path)


def typical_corpora(panels: list[dict[str, Any]], path: Path) -> None:
    """One panel per untruncated global adaptor p_T (and DeRa's p_lambda): its bootstrapped corpora, the
    typical ones (|mean −log p_T − H(p_T)| < ε) highlighted, and its exact line mean r = −β·mean log p + β·c_T
    (slope −β/λ for DeRa), on which a typical corpus lies (the paper's toy figure, for the demo's automata)."""
    fig = bare_figure(4.3 * len(panels), 3.9, left=0.75, top=0.45, wspace=0.4)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, p in zip(axes, panels, strict=True):
        x, y, typ = p["x"], p["y"], p["typical"]
        ax.scatter(x[~typ], y[~typ], s=5, color="0.7", linewidths=0, label=f"atypical ({int((~typ).sum())})")
        ax.scatter(x[typ], y[typ], s=7, color="tab:red", linewidths=0, label=f"typical ({int(typ.sum())})")
        xs = np.linspace(x.min(), x.max(), 2)
        ax.plot(xs, p["slope"] * xs + p["intercept"], color="black", lw=1,
                label=f"exact line, slope {p['slope']:.3g}")
        _fixed_label(ax, f"{p['title']}, ε = {p['epsilon']:g}", "corpus mean log prior",
                     "corpus mean reward")
        ax.legend(fontsize=LEGEND_FONT, loc="best")
    save_bare(fig, path)
