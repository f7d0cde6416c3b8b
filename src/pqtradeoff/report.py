"""report.html: one self-contained page (figures embedded as base64 PNG) that explains every number.

Written for a reader who never read the paper: each table is preceded by what its columns mean.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from pqtradeoff.io import atomic_write
from pqtradeoff.results import Summary
from pqtradeoff.stats import Correlation

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45;color:#222}
table{border-collapse:collapse;font-size:12px;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}img{max-width:100%;border:1px solid #ddd}
.warn{background:#fff4e0;border-left:4px solid #e0a000;padding:.4em .8em}.note{color:#555;font-size:13px}
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return _e(value)


def _ci(ci: list[float] | None) -> str:
    return "n/a" if not ci else f"[{ci[0]:.4g}, {ci[1]:.4g}]"


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    head = "".join(f"<th class='l'>{_e(h)}</th>" if i < left else f"<th>{_e(h)}</th>" for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f"<td class='l'>{c}</td>" if i < left else f"<td>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure(out_dir: Path, name: str | None, caption: str) -> str:
    if not name or not (out_dir / name).is_file():
        return ""
    data = base64.b64encode((out_dir / name).read_bytes()).decode("ascii")
    return f"<figure><img alt='{_e(caption)}' src='data:image/png;base64,{data}'><figcaption class='note'>{_e(caption)}</figcaption></figure>"


def _correlation_rows(label: str, c: Correlation) -> list[str]:
    return [_e(label), _num(c.n), _num(c.spearman), _ci(c.spearman_ci), _num(c.spearman_p),
            _num(c.pearson), _ci(c.pearson_ci), _num(c.pearson_p), _e(c.note or "")]


TARGET_WORDS = {
    "global": "the globally normalized adaptor (each string weighted by the probability mass the adaptor kept "
              "along it: log importance weight = log_weight)",
    "aligned": "the aligned model itself (log importance weight = logp_aligned - logq), as in the authors' first code",
    "none": "no correction (every proposal accepted: plain resampling of the sampled strings)",
}


def _intro(s: Summary) -> str:
    st = s.settings
    return f"""
<h1>Probability-quality trade-off: analysis report</h1>
<p>An aligned language model was sampled with several <b>sampling adaptors</b> (temperature, top-k, top-p, ...).
Every sampled string has a <b>reward</b> (how good a reward model finds it) and a <b>log prior probability</b>
(how likely the model <i>before</i> alignment finds it). The paper's claim: across <i>corpora</i> (large sets of
strings), more average reward comes with less average prior log-probability - a trade-off whose slope is about
minus the alignment strength beta - even though across single <i>strings</i> the two can be positively
correlated. The adaptor decides where on the trade-off a corpus lands.</p>
<p>The strings of each configuration were drawn from the <i>locally normalized</i> adaptor. The theory speaks of a
target distribution; here the target is <b>{_e(st.target)}</b>: {_e(TARGET_WORDS[st.target])}. An
independent Metropolis-Hastings (IMH) chain of {st.imh_steps:,} steps per configuration re-weights the sampled
strings toward that target; {st.corpora:,} corpora of {st.corpus_size:,} strings are then drawn from each
chain. Seed {st.seed}; intervals are {st.confidence:.0%} confidence intervals.</p>"""


def _beta_words(s: Summary) -> str:
    """One sentence on the effective beta (or why there is none)."""
    a = s.alignment
    if not a.defined:
        return f"The effective beta could not be fitted: {a.reason}."
    if a.beta_hat is None or a.beta_hat_ci is None:
        return (f"The reward does not explain what alignment changed: within prompts, log p+ - log p and the reward "
                f"correlate at r = {_num(a.within_prompt_r)} ({_ci(a.within_prompt_r_ci)}); no beta fits.")
    nominal = ""
    if a.nominal_beta is not None:
        inside = a.beta_hat_ci[0] <= a.nominal_beta <= a.beta_hat_ci[1]
        nominal = f" The nominal beta {a.nominal_beta:g} lies {'inside' if inside else 'outside'} that interval."
    return (f"Effective beta {a.beta_hat:.4g} ({a.confidence:.0%} CI {_ci(a.beta_hat_ci)}; from r on d: "
            f"{_num(a.beta_hat_reverse)}), within-prompt correlation of log p+ - log p with the reward "
            f"{_num(a.within_prompt_r)} (1 = the aligned model is exactly the prior reweighted by this reward).{nominal}")


def _overview(s: Summary) -> str:
    """The findings in a few lines, before the detail."""
    items = [
        f"String level: Spearman {_num(s.string_level.spearman, 3)}, Pearson {_num(s.string_level.pearson, 3)} "
        f"over {s.string_level.n:,} strings. Corpus level: Spearman {_num(s.corpus_level.spearman, 3)}, Pearson "
        f"{_num(s.corpus_level.pearson, 3)} over {s.corpus_level.n:,} corpora.",
        _beta_words(s),
    ]
    beta = s.alignment.beta_hat
    if beta is not None and beta > 0:
        intercepts = [c.mean_reward + beta * c.mean_log_prior for c in s.configs]
        items.append(f"Per target: each configuration's corpora lie on a line of slope -beta_hat = {-beta:.4g}; the "
                     f"intercepts (mean reward + beta_hat x mean log prior) run from {min(intercepts):.4g} to "
                     f"{max(intercepts):.4g} across the {len(s.configs)} configurations (the short lines on the "
                     "corpus-level panel).")
    t = s.tradeoff
    if t.defined:
        items.append(f"Across configurations: mean reward = {t.slope:.4g} x mean log prior + {t.intercept:.4g} "
                     f"(slope CI {_ci(t.slope_ci)}).")
    items.append("Why the slopes differ: each adaptor's globally normalized target has its own typical set, on its "
                 "own line of slope -beta with its own intercept; the fit across adaptors joins points from "
                 "different lines, so it measures how the adaptors move the intercept, not beta.")
    return "<h2>At a glance</h2><ul>" + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>"


def _alignment(s: Summary, out_dir: Path) -> str:
    a = s.alignment
    figs = s.outputs.get("figures", {})
    head = f"""
<h2>Alignment fidelity and the effective beta</h2>
<p class='note'>If the aligned model were exactly the prior reweighted by the reward, p+(y|x) = p(y|x) exp(r/beta) /
Z(x), every string would satisfy d = log p+(y|x) - log p(y|x) = r/beta - log Z(x): within a prompt, d is a straight
line in r with slope 1/beta. We fit d on r with one intercept per prompt (prompts with at least 2 finished strings),
pooling {_e(a.pooling)}. Intervals: percentile bootstrap over {_e(a.bootstrap_unit or 'prompts')}
({a.bootstrap_replicates:,} replicates).</p><p>{_e(_beta_words(s))}{_e(' ' + a.note if a.note else '')}</p>"""
    if not a.defined:
        return head
    rows = [[_e("slope of d on r (1/beta)"), _num(a.slope), _ci(a.slope_ci)],
            [_e("beta_hat = 1/slope"), _num(a.beta_hat), _ci(a.beta_hat_ci)],
            [_e("beta_hat_reverse (slope of r on d)"), _num(a.beta_hat_reverse), _ci(a.beta_hat_reverse_ci)],
            [_e("within-prompt correlation"), _num(a.within_prompt_r), _ci(a.within_prompt_r_ci)],
            [_e("residual sd of d"), _num(a.residual_sd), ""]]
    log_z = [p.log_z for p in a.prompts]
    spread = [p.log_z_sd for p in a.prompts if p.log_z_sd is not None]
    z_words = ""
    if log_z:
        z_words = (f"<p>Estimated log Z(x) = mean of r/beta_hat - d over each prompt's strings, for {len(log_z):,} "
                   f"prompt(s): from {min(log_z):.4g} to {max(log_z):.4g}"
                   + (f"; its median spread within a prompt is {sorted(spread)[len(spread) // 2]:.3g}" if spread else "")
                   + " (per prompt in summary.json).</p>")
    return (head + _table(["quantity", "estimate", "interval"], rows) + z_words
            + _figure(out_dir, figs.get("alignment"), "d against r, both minus their prompt's mean; black: fit; "
                      "red dashed: the nominal beta (analyze --beta)."))


def _hull(s: Summary, out_dir: Path) -> str:
    figs = s.outputs.get("figures", {})
    return f"""
<h2>What sampling gives: the reachable frontier</h2>
<p class='note'>The IMH-corrected means above describe the globally normalized targets; sampling an adaptor gives
its local law, whose plain means are shown here for every sampled configuration (including those the correction
skipped). Sampling from adaptor A with probability lambda, else from B, has expectations exactly lambda A + (1 -
lambda) B, so the whole convex hull is reachable, and its upper-right boundary holds the useful choices.
<code>pqtradeoff advise DIR --min-reward R</code> (or <code>--max-prior-loss L</code>) picks the cheapest point
on it.</p>
{_figure(out_dir, figs.get('hull'), 'Local means +- 1 s.e.; black: the upper-right hull boundary.')}"""


def _input(s: Summary) -> str:
    i = s.input
    parts = [f"<h2>Input</h2><p>{i.rows_read:,} rows read; {i.rows_used:,} used. "
             f"{i.dropped_total:,} dropped for missing or non-finite values; {i.unfinished:,} strings did not "
             f"finish (no end-of-sequence token) and {i.unfinished_excluded:,} of those were excluded.</p>"]
    if i.dropped_by_column:
        parts.append(_table(["column", "rows dropped"], [[_e(k), _num(v)] for k, v in i.dropped_by_column.items()]))
    if s.warnings:
        parts.append("<div class='warn'><b>Warnings</b><ul>" + "".join(f"<li>{_e(w)}</li>" for w in s.warnings) + "</ul></div>")
    if s.skipped:
        parts.append("<h3>Skipped configurations</h3>" + _table(
            ["adaptor", "reason"], [[_e(k.adaptor), _e(k.reason)] for k in s.skipped], left=2))
    if s.notes:
        parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{_e(n)}</li>" for n in s.notes) + "</ul>")
    return "".join(parts)


def _configs(s: Summary) -> str:
    rows = []
    for c in s.configs:
        rows.append([
            _e(c.adaptor), _num(c.n_strings), _num(c.n_dropped),
            _e("; ".join(f"{k}: {v}" for k, v in c.dropped_why.items())),
            _num(c.reward.mean), _num(c.reward.se), _num(c.log_prior.mean), _num(c.log_prior.se),
            _num(c.reward.local_mean), _num(c.log_prior.local_mean), _num(c.acceptance_rate, 3),
            _num(c.chain_ess, 4), _num(c.importance_ess, 4), _num(c.reward.lag1, 3), _num(c.reward.tau, 3),
            "yes" if c.reliable else "<b>no</b>",
        ])
    return f"""
<h2>Per configuration</h2>
<p class='note'><b>strings</b>: sampled strings used; <b>dropped</b>: rows of this configuration left out, and
<b>why</b> (a non-finite value in the named column, or an unfinished string). <b>mean reward / mean log prior</b>: the IMH chain's averages, estimates of the target's expected
reward and expected log prior. <b>s.e.</b>: their standard errors, combining two independent sources: the finite
pool of sampled strings (self-normalized importance sampling, delta method) and the chain's own Monte Carlo error
(variance x autocorrelation time / chain length); no chain can be more precise than the pool it resamples.
<b>local</b>: the plain averages of the sampled strings, i.e. what the locally normalized adaptor gives without
correction. <b>acceptance</b>: fraction of chain steps that moved to the proposed string. <b>chain ESS</b>: chain
length divided by the integrated autocorrelation time (the smaller of reward's and log prior's; Geyer's initial
monotone sequence). <b>IS ESS</b>: the pool's importance-sampling effective sample size (sum w)^2 / sum w^2: how
many equally weighted strings the weighted pool is worth; a few dominant weights make it small. <b>lag-1</b>
and <b>tau</b>: the chain's lag-1 autocorrelation and integrated autocorrelation time for the reward series (1 means
independent draws). <b>reliable</b>: "no" when the IS ESS is below {s.settings.min_importance_ess:g}; then the
pool is dominated by a few strings and the standard errors understate the real uncertainty.</p>
""" + _table(["adaptor", "strings", "dropped", "why dropped", "mean reward", "s.e.", "mean log prior", "s.e.", "local reward",
              "local log prior", "acceptance", "chain ESS", "IS ESS", "lag-1", "tau", "reliable"], rows)


def _correlations(s: Summary, out_dir: Path) -> str:
    figs = s.outputs.get("figures", {})
    rows = [_correlation_rows("all strings pooled", s.string_level)]
    rows += [_correlation_rows(c.adaptor, c.string_level) for c in s.configs]
    crow = [_correlation_rows("all corpora pooled", s.corpus_level)]
    crow += [_correlation_rows("configuration means (one point per config)", s.config_level)]
    crow += [_correlation_rows(c.adaptor, c.corpus_level) for c in s.configs]
    head = ["over", "n", "Spearman rho", "CI", "p", "Pearson r", "CI", "p", "note"]
    return f"""
<h2>String level</h2>
<p class='note'>Each point is one sampled string (before correction). Spearman's rho measures whether higher
log prior goes with higher reward in rank order, Pearson's r whether it does linearly; both run from -1 to 1.
The p-value is the probability of a correlation at least this strong if there were none; the interval is a
Fisher-z confidence interval assuming independent strings.</p>
{_figure(out_dir, figs.get('string_level'), 'Reward against log prior for every string; lines: least-squares fit per configuration.')}
{_table(head, rows, left=1)}
<h2>Corpus level</h2>
<p class='note'>Each point is one bootstrapped corpus: its average reward against its average log prior. The
paper's finding is a strongly negative correlation here. Pooled over configurations, most of the spread is
between configurations, so its effective number of independent points is closer to the number of
configurations than to the number of corpora: read the pooled interval as optimistic; the row "configuration
means" (one point per configuration, its IMH-corrected means) and the trade-off fit below give the honest
uncertainty across configurations. Within one configuration, corpora differ only by resampling noise.</p>
{_figure(out_dir, figs.get('corpus_level'), 'Corpus means; colour = adaptor family, marker = temperature; black line: pooled fit.')}
{_table(head, crow, left=1)}"""


def _tradeoff(s: Summary, out_dir: Path) -> str:
    t = s.tradeoff
    figs = s.outputs.get("figures", {})
    if t.defined:
        words = (f"Across the {t.n_configs} configurations, each nat of prior log-probability given up buys "
                 f"{-t.slope:.4g} units of reward on average (slope {t.slope:.4g}, {t.confidence:.0%} CI "
                 f"{_ci(t.slope_ci)}, R^2 {_num(t.r_squared)}). This exchange rate across adaptors need not equal -beta: the theory's slope "
                 f"-beta is that of the band on which one distribution's typical corpora lie, and each adaptor has its "
                 f"own intercept (see the exact lines on the corpus-level panel, where a producer provides them).")
    else:
        words = "The trade-off fit is not available."
    note = f" {t.note}." if t.note else ""
    rows = []
    for c in sorted(s.configs, key=lambda c: -c.mean_log_prior):
        rows.append([_e(c.adaptor), _num(c.mean_log_prior), _num(c.mean_reward),
                     "<b>yes</b>" if c.on_frontier else "no"])
    return f"""
<h2>The trade-off</h2>
<p class='note'>A straight line fit (ordinary least squares) of each configuration's mean reward against its mean
log prior. Its slope is the "exchange rate" between prior likelihood and reward.</p><p>{_e(words)}{_e(note)}</p>
<p class='note'>The <b>Pareto frontier</b>: configurations that no other configuration beats on both axes at
once (filled markers in the figure). Moving along it you can only gain reward by losing prior likelihood.</p>
{_figure(out_dir, figs.get('frontier'), 'Configuration means with +-1 standard error; the black line joins the frontier.')}
{_table(["adaptor (by mean log prior, high to low)", "mean log prior", "mean reward", "on frontier"], rows)}"""


def _exact(s: Summary) -> str:
    with_exact = [c for c in s.configs if c.exact_comparison]
    if not with_exact:
        return ""
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
            rows.append([_e(c.adaptor), _e(name.replace("_", " ")), _num(series.mean), _num(series.se),
                         _num(c.exact[f"exact_mean_{name}"]), _num(z[f"z_{name}"], 3),
                         _num(c.exact.get(f"exact_local_mean_{name}")), _num(series.local_mean)])
    return f"""
<h2>Against exact values</h2>
<p>The exact expectations of the target are known for these models. {within} of {total} IMH-corrected means agree
with the exact values within 3 standard errors (z = (estimate - exact) / s.e.; |z| above 3 would point to a bias or
an interval that is too narrow); the largest |z| is {largest:.2f}.{_e(" Outside: " + "; ".join(outside) + ".") if outside else ""} The last two columns show what the local, uncorrected adaptor gives: its exact
expectation and the plain average of the sampled strings - the gap to the exact target value is what the
correction removes.</p>
{_table(["adaptor", "quantity", "IMH mean", "s.e.", "exact", "z", "exact local", "sampled local"], rows, left=2)}"""


def render(summary: Summary, out_dir: Path) -> str:
    """The report as one HTML string (figures read from out_dir and embedded)."""
    body = (_intro(summary) + _overview(summary) + _input(summary) + _configs(summary)
            + _correlations(summary, out_dir) + _tradeoff(summary, out_dir) + _alignment(summary, out_dir)
            + _hull(summary, out_dir) + _exact(summary))
    versions = ", ".join(f"{k} {v}" for k, v in summary.run["versions"].items() if v)
    body += f"<h2>Provenance</h2><p class='note'>Settings and seeds are in summary.json. Versions: {_e(versions)}.</p>"
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>pqtradeoff analysis</title><style>{CSS}</style></head><body>{body}</body></html>\n"


def write_report(summary: Summary, out_dir: str | Path) -> Path:
    """Write report.html atomically into out_dir."""
    out_dir = Path(out_dir)
    text = render(summary, out_dir)
    return atomic_write(out_dir / "report.html", lambda tmp: tmp.write_text(text, encoding="utf-8"))
