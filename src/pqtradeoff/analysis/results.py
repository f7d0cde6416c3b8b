"""Typed results of `analyze`: plain dataclasses with documented fields and a `to_json()` each.

`run_analysis` returns a `Summary`; `Summary.to_json()` is summary.json, field for field
(docs/scored-corpus.md lists the fields). Report, figures and the CLI read attributes, never string keys.
Modelled on vLLM's typed outputs (`SamplerOutput`): data only, no behaviour beyond small accessors and
serialisation.

Per-series values (reward, log prior) are grouped in a `SeriesEstimate` per config; summary.json keeps them
flat, as before: `SeriesEstimate.mean` of the reward is `mean_reward`, `.se` is `mean_reward_se`, and so on
(`SERIES_JSON` is the mapping).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from pqtradeoff.analysis.fidelity import AlignmentFit
from pqtradeoff.analysis.length import LengthReport
from pqtradeoff.analysis.stats import Correlation, TradeoffFit
from pqtradeoff.analysis.what_if import WhatIfResult

if TYPE_CHECKING:
    from pqtradeoff.analysis.settings import AnalysisSettings

#: Names of the analysed series, as used in summary.json's flat field names.
SERIES_NAMES = ("reward", "log_prior")

#: SeriesEstimate attribute -> summary.json field pattern ({} is the series name).
SERIES_JSON = {
    "mean": "mean_{}", "se": "mean_{}_se", "se_pool": "mean_{}_se_pool", "se_chain": "mean_{}_se_chain",
    "snis_mean": "snis_mean_{}", "local_mean": "local_mean_{}", "local_mean_se": "local_mean_{}_se",
    "chain_ess": "chain_ess_{}", "tau": "tau_{}", "lag1": "lag1_{}", "corpus_mean_sd": "corpus_mean_{}_sd",
}


@dataclass
class SeriesEstimate:
    """One series (reward or log prior) of one configuration."""

    mean: float  # the IMH chain's average: estimate of the target's expectation
    se: float  # its standard error (pool and chain errors combined)
    se_pool: float  # the finite pool's part (self-normalized importance sampling, delta method)
    se_chain: float  # the chain's Monte Carlo part
    snis_mean: float  # the pool's exact self-normalized importance-sampling mean
    local_mean: float  # plain average of the sampled strings (the uncorrected, locally normalized adaptor)
    local_mean_se: float | None  # its standard error, sd / sqrt(n) (None with one string)
    chain_ess: float  # chain length / integrated autocorrelation time
    tau: float  # integrated autocorrelation time of the chain
    lag1: float  # lag-1 autocorrelation of the chain
    corpus_mean_sd: float | None  # spread of the bootstrapped corpus means (None with one corpus)


@dataclass
class ConfigResult:
    """Everything estimated for one adaptor configuration."""

    adaptor: str  # canonical spec string
    family: str  # the spec without temperature
    temperature: float
    n_strings: int  # strings used
    n_zero_weight: int  # strings the target gives no mass
    acceptance_rate: float  # fraction of chain steps that moved
    chain_steps: int
    chain_ess: float  # the smaller of the series' chain ESS
    importance_ess: float  # Kish's ESS of the weighted pool
    reward: SeriesEstimate
    log_prior: SeriesEstimate
    reliable: bool  # importance_ess >= settings.min_importance_ess
    string_level: Correlation  # over this config's strings
    corpus_level: Correlation  # over this config's bootstrapped corpora
    kl_aligned: float | None = None  # KL(q || p+) = E_q[logq - logp_aligned] over the sampled strings (nats)
    kl_aligned_se: float | None = None  # its standard error, sd / sqrt(n)
    power_alpha: float | None = None  # 1/T for an untruncated temperature: its global target is p+^alpha
    n_rows: int = 0  # rows read for this config
    n_dropped: int = 0  # n_rows - n_strings
    dropped_why: dict[str, int] = field(default_factory=dict)  # reason -> rows
    exact: dict[str, Any] = field(default_factory=dict)  # exact_* values given by the producer (demo)
    exact_comparison: dict[str, float] | None = None  # z_reward, z_log_prior against exact_mean_*
    on_frontier: bool = False  # Pareto-optimal among the configs' IMH means
    mean_length: float | None = None  # tokens per sampled string, EOS included (None: no token_ids)
    mean_log_prior_per_token: float | None = None  # sum of log prior / sum of tokens, sampled strings
    partial_spearman_given_length: float | None = None  # reward vs log prior given length, strings

    def series(self, name: str) -> SeriesEstimate:
        """The `reward` or `log_prior` series by name."""
        return getattr(self, name)

    @property
    def mean_reward(self) -> float:
        return self.reward.mean

    @property
    def mean_log_prior(self) -> float:
        return self.log_prior.mean

    def to_json(self) -> dict[str, Any]:
        """The flat summary.json object (series fields spelled `mean_reward`, `mean_reward_se`, ...)."""
        out: dict[str, Any] = {
            "adaptor": self.adaptor, "family": self.family, "temperature": self.temperature,
            "n_strings": self.n_strings, "n_zero_weight": self.n_zero_weight,
            "acceptance_rate": self.acceptance_rate, "chain_steps": self.chain_steps,
            "chain_ess": self.chain_ess, "importance_ess": self.importance_ess,
        }
        for name in SERIES_NAMES:
            values = asdict(self.series(name))
            out |= {pattern.format(name): values[attr] for attr, pattern in SERIES_JSON.items()}
        out |= {"kl_aligned": self.kl_aligned, "kl_aligned_se": self.kl_aligned_se,
                "power_alpha": self.power_alpha, "mean_length": self.mean_length,
                "mean_log_prior_per_token": self.mean_log_prior_per_token,
                "partial_spearman_given_length": self.partial_spearman_given_length}
        out |= {
            "reliable": self.reliable, "string_level": self.string_level.to_json(),
            "corpus_level": self.corpus_level.to_json(), "n_rows": self.n_rows, "n_dropped": self.n_dropped,
            "dropped_why": dict(self.dropped_why),
        }
        out |= self.exact
        out |= {"exact_comparison": self.exact_comparison, "on_frontier": self.on_frontier}
        return out


@dataclass
class SkippedConfig:
    """A configuration the analysis could not correct, with the reason.

    When it had usable strings (e.g. the target gave them all zero weight), their plain local means are
    recorded too: sampling that adaptor still gives them, so `advise` can use them.
    """

    adaptor: str
    reason: str
    n_strings: int = 0  # usable strings (0: none sampled, or all dropped)
    local_mean_reward: float | None = None
    local_mean_reward_se: float | None = None
    local_mean_log_prior: float | None = None
    local_mean_log_prior_se: float | None = None
    kl_aligned: float | None = None  # KL(q || p+) over its strings, as for an analysed config
    kl_aligned_se: float | None = None
    # best-of-N: log N - (N-1)/N, Beirami et al.'s upper bound on KL(best-of-N || its base sampler), and
    # their estimate (`sampling.best_of_n.kl_estimate`) per row with eps = the kept string's base probability
    kl_bound_base: float | None = None
    kl_base_estimate: float | None = None
    kl_base_estimate_se: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class InputReport:
    """What `clean_table` kept and dropped."""

    rows_read: int
    dropped_by_column: dict[str, int]  # a row bad in two columns counts in both
    dropped_total: int  # rows dropped for missing or non-finite values, each counted once
    unfinished: int  # strings without EOS among the rows kept so far
    unfinished_excluded: int  # of those, how many were excluded
    rows_used: int
    dropped_by_config: dict[str, dict[str, int]]  # adaptor -> reason -> rows (not in summary.json's `input`)
    warnings: list[str]  # the messages issued (in summary.json's top-level `warnings`)

    def to_json(self) -> dict[str, Any]:
        """summary.json's `input` object (the per-config reasons live in each config's `dropped_why`)."""
        return {k: v for k, v in asdict(self).items() if k not in ("warnings", "dropped_by_config")}


@dataclass
class ExactLine:
    """A trade-off line to draw on the corpus-level panel: mean reward = slope * mean log prior +
    intercept."""

    slope: float
    intercept: float
    label: str = "exact line"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Summary:
    """The result of `run_analysis`; `to_json()` is summary.json."""

    settings: AnalysisSettings  # the resolved settings
    seeds: dict[str, Any]  # the seed and how per-config streams derive from it
    input: InputReport
    warnings: list[str]
    notes: list[str]
    configs: list[ConfigResult]  # the analysed configurations, by family then temperature
    skipped: list[SkippedConfig]
    string_level: Correlation  # over all analysed configs' strings
    corpus_level: Correlation  # over all bootstrapped corpora
    config_level: Correlation  # over the configs' IMH means (one point per config)
    tradeoff: TradeoffFit  # the line across configs' IMH means
    alignment: AlignmentFit  # how faithfully the aligned model is the reweighted prior; the effective beta
    exact_lines: list[ExactLine]
    source_run: dict[str, Any] | None  # the scored corpus's _run.json
    run: dict[str, Any]  # this analysis's run record
    outputs: dict[str, Any]  # file names written (figures: name -> file)
    extra: dict[str, Any] = field(default_factory=dict)  # producer's top-level fields (demo: identity error)
    command: str = "analyze"
    what_if: list[WhatIfResult] = field(default_factory=list)  # what-if estimates (analysis.what_if)
    length: LengthReport | None = None  # the trade-off with length accounted for (analysis.length)

    def to_json(self) -> dict[str, Any]:
        """summary.json: the same fields, in the same order, as before the results were typed."""
        out: dict[str, Any] = {
            "command": self.command, "settings": self.settings.model_dump(mode="json"), "seeds": self.seeds,
            "input": self.input.to_json(), "warnings": list(self.warnings), "notes": list(self.notes),
            "configs": [c.to_json() for c in self.configs], "skipped": [s.to_json() for s in self.skipped],
            "string_level": self.string_level.to_json(), "corpus_level": self.corpus_level.to_json(),
            "config_level": self.config_level.to_json(), "tradeoff": self.tradeoff.to_json(),
            "alignment": self.alignment.to_json(),
            "what_if": [w.to_json() for w in self.what_if],
            "length": self.length.to_json() if self.length is not None else None,
            "exact_lines": [line.to_json() for line in self.exact_lines], "source_run": self.source_run,
            "run": self.run, "outputs": self.outputs,
        }
        return out | self.extra
