"""report.html: one self-contained page (figures embedded) that explains every number.

Written for a reader who never read the paper: a summary first, then each table preceded by what its columns
mean, and every piece of jargon (IMH, ESS, Pareto frontier, ...) defined where it first appears.

The page is rendered from the jinja2 template `templates/report.html.j2` with autoescaping on, so every value
that comes from the data (adaptor names, warnings, notes, prompts) is shown as text, never read as HTML.
This module only computes the values and formats the numbers (`number`, `p_value`, `interval`).
"""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

import pandas as pd
from markupsafe import Markup, escape

from pqtradeoff.analysis.results import Summary
from pqtradeoff.analysis.stats import Correlation
from pqtradeoff.io import atomic_write

#: Significant digits of every estimate in the report.
DIGITS = 4
#: p-values below this are shown as "< 1e-300": float64 cannot tell them apart from 0 (its floor is ~2e-308).
P_FLOOR = 1e-300

TARGET_WORDS = {
    "global": "the globally normalized adaptor (each string weighted by the probability mass the adaptor kept "
              "along it: log importance weight = log_weight)",
    "aligned": "the aligned model itself (log importance weight = logp_aligned - logq), as in the authors' first code",
    "none": "no correction (every proposal accepted: plain resampling of the sampled strings)",
}
MIME = {"png": "image/png", "svg": "image/svg+xml"}


# ------------------------------------------------------------------------------------------ numbers
def number(value: Any, digits: int = DIGITS) -> str:
    """A number for reading: integers with thousands separators; floats with `digits` significant digits in
    plain notation between 1e-4 and 1e7, in scientific notation outside; a true minus sign; None -> n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        text = f"{value:,}"
    elif isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        size = abs(value)
        if value == 0:
            text = "0"
        elif 1e-4 <= size < 1e7:
            decimals = max(0, digits - 1 - math.floor(math.log10(size)))
            text = f"{value:,.{decimals}f}"
        else:
            text = f"{value:.{digits - 1}e}"
    else:
        return str(value)
    return "−" + text[1:] if text.startswith("-") else text  # a true minus sign in front; exponents stay ASCII


def p_value(value: float | None) -> str:
    """A p-value: 3 significant digits; below the float floor "< 1e-300", never "0"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if value < P_FLOOR:
        return "< 1e-300"
    return number(float(value), 3)


def interval(ci: list[float] | None, digits: int = DIGITS) -> str:
    return "n/a" if not ci else f"[{number(ci[0], digits)}, {number(ci[1], digits)}]"


# ------------------------------------------------------------------------------------------ figures
def figure(out_dir: Path, name: str | None, caption: str) -> dict[str, str] | None:
    """A figure for the template: embedded as a data URI (png, svg), or linked (pdf: browsers do not show it
    in an <img>); None when it was not drawn."""
    if not name or not (out_dir / name).is_file():
        return None
    fmt = Path(name).suffix.lstrip(".")
    if fmt not in MIME:
        return {"link": name, "caption": caption}
    data = base64.b64encode((out_dir / name).read_bytes()).decode("ascii")
    return {"src": f"data:{MIME[fmt]};base64,{data}", "caption": caption}


# ------------------------------------------------------------------------------------------ sentences
def correlation_row(label: str, c: Correlation) -> list[str]:
    return [label, number(c.n), number(c.spearman, 3), interval(c.spearman_ci, 3), p_value(c.spearman_p),
            number(c.pearson, 3), interval(c.pearson_ci, 3), p_value(c.pearson_p), c.note or ""]


def beta_words(s: Summary) -> str:
    """One sentence on the effective beta (or why there is none)."""
    a = s.alignment
    if not a.defined:
        return f"The effective beta could not be fitted: {a.reason}."
    if a.beta_hat is None or a.beta_hat_ci is None:
        return (f"The reward does not explain what alignment changed: within prompts, log p+ - log p and the reward "
                f"correlate at r = {number(a.within_prompt_r)} ({interval(a.within_prompt_r_ci)}); no beta fits.")
    nominal = ""
    if a.nominal_beta is not None:
        slack = 1e-9 * abs(a.nominal_beta)  # an exact fit's interval is a point, equal to beta up to rounding
        inside = a.beta_hat_ci[0] - slack <= a.nominal_beta <= a.beta_hat_ci[1] + slack
        nominal = f" The nominal beta {a.nominal_beta:g} lies {'inside' if inside else 'outside'} that interval."
    return (f"Effective beta {number(a.beta_hat)} ({a.confidence:.0%} CI {interval(a.beta_hat_ci)}; from r on d: "
            f"{number(a.beta_hat_reverse)}), within-prompt correlation of log p+ - log p with the reward "
            f"{number(a.within_prompt_r)} (1 = the aligned model is exactly the prior reweighted by this reward)."
            f"{nominal}")


def reading(s: Summary) -> str:
    """One sentence that reads the two correlations together."""
    sl, cl = s.string_level.spearman, s.corpus_level.spearman
    if sl is None or cl is None:
        return "One of the correlations is undefined (see its note below), so the two levels cannot be compared."
    if cl < 0 <= sl:
        return ("Single strings with a higher prior probability tend to have a higher reward, yet corpora with a "
                "higher average prior probability have a lower average reward: the paper's trade-off, visible only "
                "at the corpus level.")
    if cl < 0:
        return ("Both levels correlate negatively: prior probability and reward trade off for corpora, and for "
                "single strings too.")
    return ("The corpus-level correlation is not negative: these configurations show no probability-quality "
            "trade-off (see the notes below for why that may be).")


def at_a_glance(s: Summary) -> list[str]:
    """The findings in a few sentences, before the detail."""
    items = [
        f"String level: Spearman {number(s.string_level.spearman, 3)}, Pearson {number(s.string_level.pearson, 3)} "
        f"over {s.string_level.n:,} strings. Corpus level: Spearman {number(s.corpus_level.spearman, 3)}, Pearson "
        f"{number(s.corpus_level.pearson, 3)} over {s.corpus_level.n:,} corpora.",
        reading(s),
    ]
    t = s.tradeoff
    if t.defined:
        items.append(f"Across configurations: mean reward = {number(t.slope)} × mean log prior + "
                     f"{number(t.intercept)} (slope {t.confidence:.0%} CI {interval(t.slope_ci)}).")
    else:
        items.append(f"Across configurations: no trade-off line ({t.note}).")
    items.append(f"{len(s.configs)} configuration(s) analysed, {len(s.skipped)} skipped"
                 + (": " + ", ".join(k.adaptor for k in s.skipped[:6]) + (", ..." if len(s.skipped) > 6 else "")
                    + " (reasons under Input)." if s.skipped else "."))
    items.append(beta_words(s))
    beta = s.alignment.beta_hat
    if beta is not None and beta > 0:
        intercepts = [c.mean_reward + beta * c.mean_log_prior for c in s.configs]
        items.append(f"Per target: each configuration's corpora lie on a line of slope -beta_hat = {number(-beta)}; "
                     f"the intercepts (mean reward + beta_hat × mean log prior) run from {number(min(intercepts))} to "
                     f"{number(max(intercepts))} across the {len(s.configs)} configurations (the short lines on the "
                     "corpus-level panel).")
    items.append("Why the slopes differ: each adaptor's globally normalized target has its own typical set, on its "
                 "own line of slope -beta with its own intercept; the fit across adaptors joins points from "
                 "different lines, so it measures how the adaptors move the intercept, not beta.")
    return items


def tradeoff_words(s: Summary) -> str:
    t = s.tradeoff
    if not t.defined:
        return "The trade-off fit is not available." + (f" {t.note}." if t.note else "")
    return (f"Across the {t.n_configs} configurations, each nat of prior log-probability given up buys "
            f"{number(-t.slope)} units of reward on average (slope {number(t.slope)}, {t.confidence:.0%} CI "
            f"{interval(t.slope_ci)}, R² {number(t.r_squared)}). This exchange rate across adaptors need not equal "
            "-beta: the theory's slope -beta is that of the band on which one distribution's typical corpora lie, "
            "and each adaptor has its own intercept (see the exact lines on the corpus-level panel, where a producer "
            "provides them)." + (f" {t.note}." if t.note else ""))


def exact_block(s: Summary) -> dict[str, Any] | None:
    """The comparison with exact values (None when the producer gave none)."""
    with_exact = [c for c in s.configs if c.exact_comparison]
    if not with_exact:
        return None
    rows, within, total, outside, largest = [], 0, 0, [], 0.0
    for c in with_exact:
        z = c.exact_comparison or {}
        for name in ("reward", "log_prior"):
            if f"z_{name}" not in z:
                continue
            total += 1
            within += abs(z[f"z_{name}"]) <= 3
            largest = max(largest, abs(z[f"z_{name}"]))
            if abs(z[f"z_{name}"]) > 3:
                outside.append(f"{c.adaptor} ({name.replace('_', ' ')}, z = {z[f'z_{name}']:.2f})")
            series = c.series(name)
            rows.append([c.adaptor, name.replace("_", " "), number(series.mean), number(series.se),
                         number(c.exact[f"exact_mean_{name}"]), number(z[f"z_{name}"], 3),
                         number(c.exact.get(f"exact_local_mean_{name}")), number(series.local_mean)])
    return {"within": within, "total": total, "largest": f"{largest:.2f}", "outside": "; ".join(outside),
            "rows": rows}


def further_reward_rows(rewards: dict[str, Any]) -> list[list[str]]:
    """One row per further reward (`reward_<name>`): its headline numbers and a link to its own report."""
    rows = []
    for name, h in rewards.items():
        a = h["alignment"]
        beta = (f"{number(a['beta_hat'])} {interval(a['beta_hat_ci'])}" if a["defined"] and a["beta_hat"]
                is not None else f"not fitted: {a['reason']}")
        rows.append([name, number(h["tradeoff_slope"]), number(h["string_level"]["spearman"]),
                     number(h["corpus_level"]["spearman"]), beta,
                     Markup(f'<a href="{escape(h["report"])}">{escape(h["report"])}</a>')])
    return rows


def _pm(value: float | None, se: float | None) -> str:
    return "" if value is None else f"{number(value)} ± {number(se)}"


def what_if_exact_words(s: Summary) -> str | None:
    """How the never-sampled what-if estimates compare with exact values, where the producer knows them."""
    checked = [w for w in s.what_if if not w.sampled and w.exact_comparison]
    if not checked:
        return None
    within = sum(all(abs(z) < 4 for z in w.exact_comparison.values()) for w in checked)
    return (f"Against their closed forms: {within} of {len(checked)} never-sampled adaptors have all four means "
            "(corrected and local, reward and log prior) within 4 standard errors of the exact values.")


def context(s: Summary, out_dir: Path) -> dict[str, Any]:
    """Everything the template shows, as plain values and pre-formatted strings."""
    figs = s.outputs.get("figures", {})
    st = s.settings
    a = s.alignment
    i = s.input
    log_z = [p.log_z for p in a.prompts] if a.defined else []
    spread = sorted(p.log_z_sd for p in a.prompts if p.log_z_sd is not None) if a.defined else []
    return {
        "further_rewards": further_reward_rows(s.extra.get("rewards") or {}),
        "s": s, "st": st, "number": number, "p_value": p_value, "interval": interval,
        "target_words": TARGET_WORDS[st.target], "at_a_glance": at_a_glance(s), "beta_words": beta_words(s),
        "dropped_by_column": [[k, number(v)] for k, v in i.dropped_by_column.items()],
        "estimates": [[c.adaptor, number(c.n_strings), number(c.n_dropped),
                       "; ".join(f"{k}: {v}" for k, v in c.dropped_why.items()),
                       number(c.reward.mean), number(c.reward.se), number(c.log_prior.mean), number(c.log_prior.se),
                       number(c.reward.local_mean), number(c.log_prior.local_mean)] for c in s.configs],
        "diagnostics": [[c.adaptor, number(c.acceptance_rate, 3), number(c.chain_ess, 4),
                         number(c.importance_ess, 4), number(c.reward.lag1, 3), number(c.reward.tau, 3),
                         c.reliable] for c in s.configs],
        "string_rows": [correlation_row("all strings pooled", s.string_level)]
        + [correlation_row(c.adaptor, c.string_level) for c in s.configs],
        "corpus_rows": [correlation_row("all corpora pooled", s.corpus_level),
                        correlation_row("configuration means (one point per config)", s.config_level)]
        + [correlation_row(c.adaptor, c.corpus_level) for c in s.configs],
        "tradeoff_words": tradeoff_words(s),
        "frontier_rows": [[c.adaptor, number(c.mean_log_prior), number(c.mean_reward), c.on_frontier]
                          for c in sorted(s.configs, key=lambda c: -c.mean_log_prior)],
        "alignment_rows": [["slope of d on r (1/beta)", number(a.slope), interval(a.slope_ci)],
                           ["beta_hat = 1/slope", number(a.beta_hat), interval(a.beta_hat_ci)],
                           ["beta_hat_reverse (slope of r on d)", number(a.beta_hat_reverse),
                            interval(a.beta_hat_reverse_ci)],
                           ["within-prompt correlation", number(a.within_prompt_r), interval(a.within_prompt_r_ci)],
                           ["residual sd of d", number(a.residual_sd), ""]] if a.defined else [],
        "log_z": {"n": len(log_z), "low": number(min(log_z)), "high": number(max(log_z)),
                  "spread": number(spread[len(spread) // 2], 3) if spread else None} if log_z else None,
        "exact": exact_block(s),
        "versions": ", ".join(f"{k} {v}" for k, v in s.run["versions"].items() if v),
        "figures": {
            "string_level": figure(out_dir, figs.get("string_level"), "Reward against log prior for every string "
                                   "(density of strings where they are many); lines: least-squares fit per "
                                   "configuration."),
            "corpus_level": figure(out_dir, figs.get("corpus_level"), "Corpus means; colour = adaptor family, shade "
                                   "= temperature, ringed dots = each configuration's centre; dashed: pooled fit."),
            "frontier": figure(out_dir, figs.get("frontier"), "Configuration means ± 1 standard error; the black "
                               "line joins the frontier."),
            "alignment": figure(out_dir, figs.get("alignment"), "d against r, both minus their prompt's mean; black: "
                                "fit; red dashed: the nominal beta (analyze --beta)."),
            "hull": figure(out_dir, figs.get("hull"), "Local means ± 1 s.e.; black: the upper-right hull boundary."),
            "reward_vs_kl": figure(out_dir, figs.get("reward_vs_kl"), "Local mean reward against KL(q ‖ p₊), ± 1 "
                                   "s.e.; stars: exact values where the producer knows them."),
            "what_if": figure(out_dir, figs.get("what_if"), "Each family's what-if sweep by temperature, from the "
                              "pool (solid: corrected means; dashed: local means, what sampling gives; bands ± 1 "
                              "s.e. in reward); filled and hollow points: the sampled configurations' own IMH and "
                              "local means."),
            "length": figure(out_dir, figs.get("length"), "Left: each configuration's local mean log prior (o) and "
                             "reward (x) against its mean length. Right: within each length stratum, the "
                             "configurations' local means and the stratum's trade-off line."),
        },
        "what_if_rows": [[w.adaptor, w.sampled, _pm(w.mean_reward, w.mean_reward_se),
                          _pm(w.mean_log_prior, w.mean_log_prior_se),
                          _pm(w.local_mean_reward, w.local_mean_reward_se),
                          _pm(w.local_mean_log_prior, w.local_mean_log_prior_se),
                          number(w.ess, 4) if w.ess is not None else "",
                          w.skipped or w.skipped_target or ""] for w in s.what_if],
        "what_if_exact": what_if_exact_words(s),
        "length": s.length if s.length is not None and s.length.defined else None,
        "length_rows": [[c.adaptor, number(c.mean_length), number(c.mean_log_prior_per_token),
                         number(c.partial_spearman_given_length)] for c in s.configs],
        "kl_rows": [[c.adaptor, f"{number(c.kl_aligned)} ± {number(c.kl_aligned_se)}",
                     number(c.exact.get("exact_kl_aligned")) if "exact_kl_aligned" in c.exact else "",
                     number(c.reward.local_mean),
                     f"p₊^{c.power_alpha:.3g}" if c.power_alpha is not None else ""]
                    for c in sorted(s.configs, key=lambda c: c.kl_aligned or 0.0)],
    }


def _environment() -> Any:
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("pqtradeoff.analysis", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True)


def explorer_block(summary: Summary, out_dir: Path, data: pd.DataFrame, budget: int) -> dict[str, Any]:
    """The explorer's scripts (plotly.js, its data within `budget` bytes, the page script) and what it embeds,
    for the template."""
    from pqtradeoff.analysis import explorer

    values = explorer.explorer_data(data, summary.to_json(), out_dir, budget)
    return {"plotly": Markup(explorer.plotly_js()), "data": Markup(explorer.dumps(values)),
            "script": Markup(explorer.page_script()), "limits": values["limits"], "rewards": values["rewards"],
            "page_limit_mb": explorer.PAGE_LIMIT_MB, "hex_across": explorer.HEX_ACROSS}


def render(summary: Summary, out_dir: Path, data: pd.DataFrame | None = None) -> str:
    """The report as one HTML string (figures read from out_dir and embedded); with the rows the analysis
    used (`data`) and `settings.interactive`, the explorer too, its data sized so that the page stays under
    `explorer.PAGE_LIMIT_MB`."""
    from pqtradeoff.analysis import explorer

    template = _environment().get_template("report.html.j2")
    values = context(summary, Path(out_dir)) | {"explorer": None}
    static = template.render(values)
    if data is None or data.empty or not summary.settings.interactive:
        return static
    budget = (explorer.PAGE_LIMIT_MB * 10**6 - len(static.encode("utf-8")) - len(explorer.plotly_js())
              - len(explorer.page_script()) - explorer.PAGE_MARGIN)
    values["explorer"] = explorer_block(summary, Path(out_dir), data, budget)
    return template.render(values)


def write_report(summary: Summary, out_dir: str | Path, data: pd.DataFrame | None = None) -> Path:
    """Write report.html atomically into out_dir."""
    out_dir = Path(out_dir)
    text = render(summary, out_dir, data)
    return atomic_write(out_dir / "report.html", lambda tmp: tmp.write_text(text, encoding="utf-8"))
