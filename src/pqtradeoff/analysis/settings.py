"""The analysis's settings (`analyze`, and the `[analysis]` section of an experiment file).

Here rather than in `experiment.settings` (which uses it as its `[analysis]` section), so that the analysis
imports nothing of the model side. Like every settings section: unknown keys refused, values checked, frozen.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Target = Literal["global", "aligned", "none"]


class AnalysisSettings(BaseModel):
    """Everything that changes the analysis's numbers; recorded in summary.json."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # as `experiment.settings` sections

    target: Target = Field("global", description="IMH target: global (globally normalized adaptor), aligned, "
                                                 "or none (no correction).")
    corpora: int = Field(2000, ge=1, le=10_000_000, description="Bootstrapped corpora per configuration.")
    corpus_size: int = Field(2000, ge=1, le=100_000_000, description="Strings per bootstrapped corpus.")
    imh_steps: int = Field(200_000, ge=2, le=10**9, description="IMH chain length per configuration.")
    keep_unfinished: bool = Field(False, description="Keep strings that never emitted EOS.")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="Random seed of the chains and corpora.")
    confidence: float = Field(0.95, gt=0.0, lt=1.0, description="Confidence level of every interval.")
    min_importance_ess: float = Field(10.0, ge=1.0, description="Flag configs whose pool importance-sampling "
                                                                "ESS is below this.")
    plots: bool = Field(True, description="Draw the figures.")
    interactive: bool = Field(True, description="Add the explorer to report.html: the trade-off plane and "
                              "the string-level panel, interactive (plotly embedded: ~5 MB more), with a "
                              "bounded sample of strings behind every point.")
    figure_format: Literal["png", "pdf", "svg"] = Field(
        "png", description="File format of the figures (pdf and svg are vector; the report embeds png and "
        "svg).")
    beta: float | None = Field(None, gt=0.0, allow_inf_nan=False,
                               description="Nominal KL strength the aligned model was trained with: drawn on "
                                           "the alignment panel and compared with the fitted beta (unset: "
                                           "not drawn).")
    what_if: list[str] = Field(
        default_factory=list,
        description="What-if adaptors estimated from the pooled corpus without sampling them (specs; a "
                    "parameter may be a range start:stop:step, e.g. temperature=0.5:1.5:0.05,top_p=0.9). "
                    "The scored corpus must carry their teacher-forced columns (score --what-if); in a run "
                    "the score stage adds them. Empty: every what-if adaptor the corpus carries.")
    what_if_min_ess: float = Field(100.0, ge=1.0, description="Skip a what-if adaptor whose importance "
                                                              "weights over the pool have an ESS below this.")

    @field_validator("what_if")
    @classmethod
    def _what_if(cls, specs: list[str]) -> list[str]:
        from pqtradeoff.sampling.adaptors import check_what_if

        return check_what_if(specs)
