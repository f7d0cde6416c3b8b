"""`pqtradeoff demo`: the whole pipeline on exact finite-state models, with closed forms beside Monte Carlo.

The same generate -> score -> analyze stages as for Hugging Face models, run on an automaton prior p, a
transition-additive reward r and the exact aligned automaton p+ = p exp(r/beta) / Z. Every quantity the
analysis estimates has a closed form here (`exact.closed_forms`), so the report can show the Monte Carlo
corpora falling on the theory, and say whether the IMH-corrected means agree with the exact ones.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pqtradeoff.analysis.analyze import ExtraInputs, run_analysis, z_score
from pqtradeoff.analysis.analyze import make_settings as analysis_settings
from pqtradeoff.analysis.imh import Target
from pqtradeoff.analysis.results import Summary
from pqtradeoff.columns import Col
from pqtradeoff.errors import PQError, validated
from pqtradeoff.exact import closed_forms
from pqtradeoff.io import write_json
from pqtradeoff.models.automata import WeightedAutomaton, transition_matrix
from pqtradeoff.sampling.adaptors import Adaptor, parse_grid

DEFAULT_FAMILIES = ("ancestral", "top_k=3", "top_k=6", "top_p=0.9", "top_p=0.95", "typical_p=0.9",
                    "eta_cutoff=0.0009", "top_n_sigma=1.0")
DEFAULT_TEMPERATURES = (0.5, 0.75, 1.0, 1.25, 1.5)
#: DeRa's lambdas, each sampled at T = 1 (`dera=LAMBDA`): its global target is p+ at beta/lambda.
DEFAULT_DERA = (0.25, 0.5, 0.75, 1.25)
#: What-if adaptors, none of them in the default grid: estimated from the pooled corpus, never sampled, and
#: checked against their closed forms.
DEFAULT_WHAT_IF = ("temperature=0.55:1.45:0.1", "temperature=0.6:1.4:0.2,top_k=4",
                   "temperature=0.6:1.4:0.2,top_p=0.85", "temperature=0.6:1.4:0.2,top_k=5",
                   "temperature=0.6:1.4:0.2,top_p=0.8")


class DemoSettings(BaseModel):
    """Everything that defines a demo run (recorded in summary.json)."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, ge=0, description="seed for sampling and the analysis")
    model_seed: int = Field(0, ge=0, description="seed of the random prior and reward")
    n_words: int = Field(12, ge=2, description="vocabulary size of the random prior (EOS not counted)")
    order: int = Field(2, ge=1, description="n-gram order of the prior")
    beta: float = Field(1.0, gt=0.0, description="KL strength: p+ = p exp(r / beta) / Z")
    reward: Literal["rare-word", "rarity"] = Field(
        "rare-word", description="rare-word: a lexicon that charges each word and prizes one rare word "
        "(demo_models.demo_models); rarity: pays for every word's rarity (demo_models.rarity_reward)")
    eos_prob: float = Field(0.35, gt=0.0, lt=1.0, description="rarity reward's prior: probability of ending")
    rarity: float = Field(0.8, ge=0.0,
                          description="reward per nat of word rarity: phi = rarity * (top - log p)")
    word_cost: float = Field(1.0, description="rarity reward's cost of each word (EOS costs nothing)")
    text: Annotated[Path, Field(strict=False)] | None = Field(
        None, description="estimate the prior from this text file instead (one string a line)")
    families: list[str] = Field(default_factory=lambda: list(DEFAULT_FAMILIES))
    temperatures: list[float] = Field(default_factory=lambda: list(DEFAULT_TEMPERATURES))
    dera: list[float] = Field(default_factory=lambda: list(DEFAULT_DERA),
                              description="DeRa lambdas, each a configuration dera=LAMBDA at T = 1 (the "
                                          "prior decoded beside the aligned model)")
    what_if: list[str] = Field(default_factory=lambda: list(DEFAULT_WHAT_IF),
                               description="what-if adaptors (ranges start:stop:step allowed), estimated "
                                           "from the pooled corpus and compared with their closed forms")
    num_generations: int = Field(2000, ge=2, description="strings sampled per configuration")
    max_new_tokens: int = Field(200, ge=1)
    batch_size: int = Field(2000, ge=1)
    target: Target = "global"
    min_ess_fraction: float = Field(0.05, ge=0.0, le=1.0,
                                    description="skip configs whose exact IMH efficiency "
                                    "(importance-sampling ESS fraction) is below this: their correction is "
                                    "unreliable")
    imh_steps: int = Field(50_000, ge=2)
    corpora: int = Field(500, ge=1)
    corpus_size: int = Field(2000, ge=1)
    figure_format: Literal["png", "pdf", "svg"] = Field("png", description="file format of the figures")

    @model_validator(mode="after")
    def _options_of_the_chosen_reward(self) -> DemoSettings:
        """Refuse options the chosen reward would silently ignore."""
        if self.reward == "rare-word":
            rarity_only = ("n_words", "eos_prob", "rarity", "word_cost", "text")
            changed = [k for k in rarity_only if getattr(self, k) != type(self).model_fields[k].default]
            if changed:
                raise ValueError(f"{changed[0]} applies to --reward rarity only (the rare-word lexicon has "
                                 "its own 12-word prior)")
        return self

    @field_validator("temperatures")
    @classmethod
    def _positive(cls, values: list[float]) -> list[float]:
        bad = [t for t in values if not t > 0]
        if bad or not values:
            raise ValueError(f"temperatures={values!r}: need one or more temperatures > 0")
        return values


def make_settings(**values: Any) -> DemoSettings:
    """Build settings, turning a validation failure into a one-line PQError naming the field and value."""
    return validated(DemoSettings, **values)


def build_models(settings: DemoSettings) -> Any:
    """The prior (random n-gram, or estimated from `text`), the rarity reward and the exact aligned model."""
    from pqtradeoff.exact import demo_models as dm  # lazy: torch
    from pqtradeoff.models import fsa  # lazy: torch

    if settings.text is None and settings.reward == "rare-word":
        return dm.demo_models(settings.model_seed, beta=settings.beta, order=settings.order)
    if settings.text is None:
        prior = fsa.random_ngram(settings.n_words, settings.order, seed=settings.model_seed, alpha=0.5,
                                 eos_prob=settings.eos_prob, zipf=1.0,
                                 words=dm.DEMO_WORDS[: settings.n_words]
                                 if settings.n_words <= len(dm.DEMO_WORDS)
                                 else None)
    else:
        prior = fsa.estimate_ngram(settings.text, order=settings.order)
    reward = dm.rarity_reward(prior, settings.rarity, settings.word_cost, seed=settings.model_seed)
    try:
        return dm.DemoModels(prior, reward, fsa.align(prior, reward, settings.beta))
    except PQError as err:
        if "diverges" not in str(err):
            raise
        works = smallest_normalizing_beta(prior, reward, settings.beta)
        hint = (f"--beta {works:.3g} or more normalizes with this text" if works is not None
                else "no beta up to 1e6 normalizes it")
        raise PQError(f"{err}: {hint} (or lower --rarity / raise --word-cost)") from None


def smallest_normalizing_beta(prior: Any, reward: Any, beta: float, ceiling: float = 1e6) -> float | None:
    """About the smallest beta above `beta` at which p(y) exp(r(y)/beta) normalizes (None below `ceiling`):
    doubling until it does, then bisection to 1%, rounded up so the suggestion itself works."""
    from pqtradeoff.models.automata import backward

    def normalizes(b: float) -> bool:
        with np.errstate(over="ignore"):
            log_w = prior.log_probs + reward.phi / b
        return bool(np.isfinite(log_w[np.isfinite(prior.log_probs)]).all()
                    and backward(prior.as_weighted(log_w)).normalizes)

    low, high = beta, beta * 2
    while not normalizes(high):
        low, high = high, high * 2
        if high > ceiling:
            return None
    while high / low > 1.01:
        mid = (low * high) ** 0.5
        low, high = (low, mid) if normalizes(mid) else (mid, high)
    rounded = float(f"{high * 1.01:.2g}")
    return rounded if normalizes(rounded) else float(f"{high * 1.1:.3g}")


def exact_values(
    alignment: Any, adaptor: Adaptor, target: str, min_ess_fraction: float = 0.05,
    max_length: int | None = None
) -> tuple[dict[str, float] | None, str | None]:
    """Closed-form per-config values under the IMH target and under local q; or the reason there are none.

    Whether a configuration is usable is decided on the unbounded distributions (a target whose sum over all
    strings diverges, or whose importance weights have infinite variance, is skipped). The values compared
    with the Monte Carlo estimates are then conditioned on finishing within `max_length` tokens, EOS
    included, exactly as the analysis keeps only the strings that finished within `--max-new-tokens`.
    """
    def laws(bound: int | None) -> tuple[Any, Any]:
        local = closed_forms.local_expectations(alignment, adaptor, max_length=bound)
        corrected = local if target == "none" else closed_forms.imh_target_expectations(
            alignment, adaptor, target, max_length=bound)
        return local, corrected

    local, corrected = laws(None)
    if not local.normalizes:
        return None, f"the locally normalized adaptor (sampling) {local.message}"
    if not corrected.normalizes:
        return None, f"the {target} target {corrected.message}"
    if corrected.ess_fraction is not None and corrected.ess_fraction < min_ess_fraction:
        return None, (f"the {target} target exists, but its importance weights under the sampling "
                      f"distribution have {'infinite' if corrected.ess_fraction == 0 else 'near-infinite'} "
                      f"variance (exact IMH efficiency {corrected.ess_fraction:.3g} < {min_ess_fraction:g}): "
                      "no finite pool can correct towards it reliably")
    efficiency = corrected.ess_fraction
    if max_length is not None and cut_probability(alignment, adaptor, max_length) > 1e-12:
        local, corrected = laws(max_length)
    values = {
        "exact_mean_log_prior": corrected.mean_log_prior,
        "exact_mean_reward": corrected.mean_reward,
        "exact_entropy": corrected.entropy,
        "exact_mean_length": corrected.mean_length,
        "exact_log_normalizer": corrected.log_normalizer,
        "exact_imh_efficiency": efficiency,
        "exact_local_mean_log_prior": local.mean_log_prior,
        "exact_local_mean_reward": local.mean_reward,
        "exact_local_entropy": local.entropy,
        "exact_kl_aligned": local.kl_aligned,
    }
    return values, None


def cut_probability(alignment: Any, adaptor: Adaptor, max_length: int) -> float:
    """Probability that sampling (the local adaptor) has not emitted EOS after `max_length` tokens: the
    mass `generate` cuts off. Where it is negligible, conditioning on finishing changes nothing measurable
    and the (slower) bounded closed forms are not needed."""
    tables = closed_forms.adapted_tables(alignment.aligned, adaptor, alignment.prior)
    model = alignment.aligned
    q = transition_matrix(WeightedAutomaton(model.next_state, tables.log_probs, model.eos_token_id))
    start = np.zeros(q.shape[0])
    start[model.start_state] = 1.0
    return float((start @ np.linalg.matrix_power(q, max_length)).sum())


def line_label(adaptor: Adaptor) -> str:
    """The label of an adaptor's exact trade-off line (`tradeoff_lines`)."""
    if adaptor.dera is not None:
        return f"exact line, dera={adaptor.dera:g}"
    return f"exact line, T={adaptor.temperature:g}"


def tradeoff_lines(alignment: Any, adaptors: list[Adaptor], beta: float) -> list[dict[str, Any]]:
    """Exact trade-off lines mean r = -beta' * mean log p + c for the untruncated global adaptors.

    For p_T proportional to p+^(1/T), log p_T(y) = (log p(y) + r(y)/beta - log Z)/T - log Z_T; a typical
    corpus has mean log p_T close to -H(p_T), so mean log p + mean r / beta = T (log Z_T - H(p_T)) + log Z:
    slope -beta. For DeRa (`dera=lambda`, T = 1) the global law is p exp(lambda r/beta) / const, so
    mean log p + lambda mean r / beta = lambda log Z + log Z_lambda - H: the line of slope -beta/lambda.
    """
    lines = []
    for a in adaptors:
        if a.truncates or (a.dera is not None and (a.temperature != 1.0 or a.dera == 0.0)):
            continue
        g = closed_forms.global_expectations(alignment, a)
        if not g.normalizes:
            continue
        if a.dera is None:
            slope, c = beta, a.temperature * (g.log_normalizer - g.entropy) + alignment.log_z
        else:
            slope, c = beta / a.dera, a.dera * alignment.log_z + g.log_normalizer - g.entropy
        lines.append({"slope": -slope, "intercept": slope * c, "label": line_label(a)})
    return lines


def run_demo(
    out_dir: str | Path, settings: DemoSettings, progress: bool = True
) -> tuple[Summary, dict[str, float]]:
    """Run generate -> score -> analyze on the demo automata and write everything under `out_dir`.

    Returns the summary (its `to_json()` is `out_dir/summary.json`, byte-identical for the same settings) and
    the wall time of each stage (printed, not stored, so that outputs stay reproducible).
    """
    import torch  # lazy: torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the automata's tensors are tiny: more threads only add synchronisation
    try:
        return _run(Path(out_dir), settings, progress)
    finally:
        torch.set_num_threads(threads)


def _run(out_dir: Path, settings: DemoSettings, progress: bool) -> tuple[Summary, dict[str, float]]:
    timings: dict[str, float] = {}
    t = time.perf_counter()
    models = build_models(settings)
    kept, exact_by_config, skipped = _exact_grid(models, settings)
    what_if, what_if_exact, what_if_dropped = _exact_what_if(models, settings, kept)
    exact_by_config |= what_if_exact
    timings["models_and_exact_s"] = time.perf_counter() - t
    record = settings.model_dump(mode="json", exclude={"figure_format"})  # the format changes no sample
    scored = _sample_and_score(models, kept, settings, record, out_dir, progress, timings, what_if)
    table = pd.read_parquet(scored)
    identity_error = _identity_error(table, models, settings.max_new_tokens)

    t = time.perf_counter()
    beta = models.alignment.beta
    notes = [
        f"Exact finite-state models: prior {models.prior.name}, reward {models.reward.name}, "
        f"beta={beta:g}, log Z = {models.alignment.log_z:.6f}. The identity log p(y) + r(y)/beta = "
        f"log p+(y) + log Z holds on every finished sampled string up to {identity_error:.2e} (float64 "
        "throughout). Exact values are conditioned on finishing within "
        f"max_new_tokens={settings.max_new_tokens}, as the analysis keeps finished strings only.",
    ]
    # The exact lines are those of the global temperature family: drawn only when that is the target.
    lines = tradeoff_lines(models.alignment, kept, beta) if settings.target == "global" else []
    analysis = analysis_settings(target=settings.target, imh_steps=settings.imh_steps,
                                 corpora=settings.corpora,
                                 corpus_size=settings.corpus_size, seed=settings.seed, beta=beta,
                                 figure_format=settings.figure_format)
    if what_if_dropped:
        notes.append("what-if adaptors without a usable closed form, left out: "
                     + "; ".join(f"{a} ({why})" for a, why in what_if_dropped.items()))
    from pqtradeoff.pipeline.corpus import run_settings

    carried = run_settings(scored).get("what_if_adaptors") or None
    inputs = ExtraInputs(exact=exact_by_config, exact_lines=lines, notes=notes, skipped=skipped,
                         source={"demo": record, "scored_dir": str(scored)},
                         extra={"identity_max_abs_error": identity_error, "log_z": models.alignment.log_z},
                         what_if_adaptors=carried)
    summary = run_analysis(table, out_dir, analysis, inputs)
    if settings.target == "global":
        summary.extra["power_sampling"] = power_sampling_check(models.alignment, summary,
                                                               settings.max_new_tokens)
        summary.extra["dera"] = dera_check(models, summary, settings.max_new_tokens)
    if lines:
        summary.extra["typical_corpora"] = typical_corpora(out_dir, summary, kept, lines, beta,
                                                           settings.figure_format)
    if settings.target == "global" or lines:
        write_json(out_dir / "summary.json", summary.to_json())
    timings["analyze_s"] = time.perf_counter() - t
    return summary, timings


def _with_exact(models: Any, settings: DemoSettings, adaptors: list[Adaptor]
                ) -> tuple[list[Adaptor], dict[str, Any], dict[str, str]]:
    """The adaptors with a usable closed form (with their exact values), and why the others have none."""
    kept, exact, reasons = [], {}, {}
    for a in adaptors:
        values, reason = exact_values(models.alignment, a, settings.target, settings.min_ess_fraction,
                                      max_length=settings.max_new_tokens)
        if values is None:
            reasons[str(a)] = reason
        else:
            kept.append(a)
            exact[str(a)] = values
    return kept, exact, reasons


def _exact_grid(models: Any, settings: DemoSettings) -> tuple[list[Adaptor], dict[str, Any], dict[str, str]]:
    """The grid's configurations that normalize (with their exact values) and why the others were skipped."""
    grid = parse_grid(settings.families, settings.temperatures)
    dera = parse_grid([f"dera={lam!r}" for lam in settings.dera])
    grid += [a for a in dera if str(a) not in map(str, grid)]
    kept, exact_by_config, skipped = _with_exact(models, settings, grid)
    if not kept:
        raise PQError("no adaptor configuration normalizes: nothing to sample; see --family / --temperature")
    return kept, exact_by_config, skipped


def _exact_what_if(models: Any, settings: DemoSettings, kept: list[Adaptor]
                   ) -> tuple[list[Adaptor], dict[str, Any], dict[str, str]]:
    """The what-if adaptors with their exact values (those without a usable closed form, and the sampled
    ones, are left out of the list: the sampled ones are teacher-forced anyway)."""
    from pqtradeoff.sampling.adaptors import expand_what_if

    sampled = {str(a) for a in kept}
    what_if = [a for a in expand_what_if(settings.what_if) if str(a) not in sampled]
    return _with_exact(models, settings, what_if)


def _sample_and_score(models: Any, kept: list[Adaptor], settings: DemoSettings, record: dict[str, Any],
                      out_dir: Path, progress: bool, timings: dict[str, float],
                      what_if: list[Adaptor] | None = None) -> Path:
    """The pipeline's own `generate` and `score` stages on the exact models: the scored corpus's folder."""
    from pqtradeoff.models.realign import with_prior  # lazy: torch
    from pqtradeoff.pipeline.generate import PromptRecord, generate_corpus  # lazy: torch
    from pqtradeoff.pipeline.score import score_corpus  # lazy: torch

    t = time.perf_counter()
    prompt = PromptRecord(0, "", models.aligned.encode_prompt(""))
    sampler = with_prior(models.aligned, models.prior, kept)  # the prior decodes beside it for dera=...
    corpus = generate_corpus(sampler, [prompt], kept, num_generations=settings.num_generations,
                             max_new_tokens=settings.max_new_tokens, seed=settings.seed,
                             batch_size=settings.batch_size, out_dir=out_dir / "corpus",
                             sample_block=settings.num_generations,
                             settings={"model": models.aligned.name, "demo": record},
                             progress=progress).out_dir
    timings["generate_s"] = time.perf_counter() - t
    t = time.perf_counter()
    scored = score_corpus(corpus, out_dir / "scored", prior=models.prior, reward=models.reward,
                          batch_size=settings.batch_size, max_batch_tokens=settings.batch_size * 64,
                          settings={"prior": models.prior.name, "demo": record}, progress=progress,
                          aligned=models.aligned if what_if else None, what_if=what_if or ()).out_dir
    timings["score_s"] = time.perf_counter() - t
    return scored


def _identity_error(table: pd.DataFrame, models: Any, max_new_tokens: int) -> float:
    """The largest |log p + r/beta - log p+ - log Z| over the finished sampled strings (0 in theory)."""
    residual = (table[Col.LOGP_PRIOR] + table[Col.REWARD] / models.alignment.beta - table[Col.LOGP_ALIGNED]
                - models.alignment.log_z)
    finished = table[Col.FINISHED].to_numpy(bool)
    if not finished.any():
        raise PQError(f"no sampled string finished within max_new_tokens={max_new_tokens}: raise it")
    return float(np.abs(residual[finished]).max())


def power_sampling_check(alignment: Any, summary: Summary, max_length: int) -> list[dict[str, Any]]:
    """The global target of an untruncated `temperature=T` is power sampling p+^alpha, alpha = 1/T (Karan &
    Du, arXiv 2510.14901): its exact means, from the law with weights alpha * log p+ (no adaptor code), beside
    the IMH means (z-scores) and the global-adaptor closed form (their difference, 0 up to rounding)."""
    out = []
    for c in summary.configs:
        if c.power_alpha is None or not c.exact:
            continue
        alpha = c.power_alpha
        law = closed_forms.law_expectations(alignment, alpha * alignment.aligned.log_probs,
                                            f"power {alpha:g}", None, (), max_length)
        if not law.normalizes:
            continue
        out.append({
            "adaptor": c.adaptor, "alpha": alpha, "exact_mean_reward": law.mean_reward,
            "exact_mean_log_prior": law.mean_log_prior,
            "z_reward": z_score(c.reward.mean, c.reward.se, law.mean_reward),
            "z_log_prior": z_score(c.log_prior.mean, c.log_prior.se, law.mean_log_prior),
            "closed_form_difference": max(abs(law.mean_reward - c.exact["exact_mean_reward"]),
                                          abs(law.mean_log_prior - c.exact["exact_mean_log_prior"])),
        })
    return out


def dera_check(models: Any, summary: Summary, max_length: int) -> list[dict[str, Any]]:
    """DeRa's global target p+^lambda p^(1-lambda) is the aligned model at beta/lambda: for each untruncated
    `dera=lambda` at T = 1, the exact means of `fsa.align(prior, reward, beta/lambda)` (its own backward
    solve), the IMH means' z-scores against them, and their difference from the DeRa closed form."""
    from pqtradeoff.models import fsa  # lazy: torch

    out = []
    beta = models.alignment.beta
    for c in summary.configs:
        a = parse_grid([c.adaptor])[0]
        if a.dera is None or a.truncates or a.temperature != 1.0 or not c.exact or a.dera == 0.0:
            continue
        entry: dict[str, Any] = {"adaptor": c.adaptor, "lambda": a.dera, "beta_over_lambda": beta / a.dera}
        try:
            realigned = fsa.align(models.prior, models.reward, beta / a.dera)
        except PQError as err:
            out.append(entry | {"skipped": str(err)})
            continue
        law = closed_forms.law_expectations(realigned, realigned.aligned.log_probs, "aligned", None, (),
                                            max_length)
        out.append(entry | {
            "exact_mean_reward": law.mean_reward, "exact_mean_log_prior": law.mean_log_prior,
            "z_reward": z_score(c.reward.mean, c.reward.se, law.mean_reward),
            "z_log_prior": z_score(c.log_prior.mean, c.log_prior.se, law.mean_log_prior),
            "closed_form_difference": max(abs(law.mean_reward - c.exact["exact_mean_reward"]),
                                          abs(law.mean_log_prior - c.exact["exact_mean_log_prior"])),
            "skipped": None,
        })
    return out


#: Typicality of a corpus of p_T: |mean(-log p_T) - H(p_T)| < TYPICAL_EPSILON nats (the demo's corpora are
#: 2,000 strings, not the toy's 100,000, so the band is wider than the toy's 0.001).
TYPICAL_EPSILON = 0.05


def typical_corpora(out_dir: Path, summary: Summary, kept: list[Adaptor], lines: list[dict[str, Any]],
                    beta: float, figure_format: str) -> dict[str, dict[str, float]]:
    """For each untruncated global adaptor p_T: which bootstrapped corpora are typical, and how far the
    corpora lie from the exact line on average. Exactly, log p_T(y) = (log p(y) + r(y)/beta - log Z)/T -
    log Z_T, so a corpus's mean log p_T + H(p_T) = (mean log p + mean r/beta - c_T)/T with the line's c_T:
    its deviation from the line, in nats of log p_T. Draws `typical_corpora.<fmt>`; returns counts and the
    mean deviation with a standard error from the IMH means' (summed: conservative)."""
    from pqtradeoff.analysis import plots  # lazy: matplotlib

    corpora = pd.read_parquet(out_dir / "corpora.parquet")
    by_label = {line["label"]: line for line in lines}
    results = {c.adaptor: c for c in summary.configs}
    out: dict[str, dict[str, float]] = {}
    panels = []
    for a in kept:
        line = by_label.get(line_label(a))
        if a.truncates or line is None or str(a) not in results:
            continue
        rows = corpora[corpora[Col.ADAPTOR] == str(a)]
        x, y = rows["mean_log_prior"].to_numpy(float), rows["mean_reward"].to_numpy(float)
        slope = -line["slope"]  # beta, or beta/lambda for DeRa
        deviation = (x + y / slope - line["intercept"] / slope) / a.temperature
        typical = np.abs(deviation) < TYPICAL_EPSILON
        c = results[str(a)]
        out[str(a)] = {
            "epsilon": TYPICAL_EPSILON, "corpora": int(len(rows)), "typical": int(typical.sum()),
            "mean_deviation": float(deviation.mean()),
            "deviation_se": float((c.log_prior.se + c.reward.se / slope) / a.temperature),
        }
        panels.append({"x": x, "y": y, "typical": typical, "slope": line["slope"],
                       "intercept": line["intercept"], "temperature": a.temperature,
                       "title": f"DeRa λ = {a.dera:g}" if a.dera is not None else f"T = {a.temperature:g}",
                       "epsilon": TYPICAL_EPSILON})
    if panels and summary.settings.plots:
        name = f"typical_corpora.{figure_format}"
        plots.typical_corpora(panels, out_dir / name)
        summary.outputs["figures"]["typical_corpora"] = name
    return out
