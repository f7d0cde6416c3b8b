"""The checks a run with `[align]` makes on its true prior/aligned pair, beside the analysis.

- Did alignment move the model in the reward's direction? The aligned model's own samples at T = 1 (the
  study's `temperature=1.0` rows) against the prior's own samples at T = 1 (align's candidates, when they were
  sampled ancestrally), on the reward the model was trained on: the mean difference over the prompts both
  hold, with a t interval over prompts (strings of one prompt are not independent; prompts are).
- With the implicit DPO reward as the primary reward, the identity log p + r/beta = log p+ + log Z(x)
  (log Z = 0 for r = beta log(p+/p)) on every string, finished or cut: its largest error.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pqtradeoff.columns import Col, reward_column
from pqtradeoff.experiment.settings import ExperimentSettings
from pqtradeoff.sampling.adaptors import Adaptor, parse

#: The adaptor whose samples are "the model's own": ancestral sampling at T = 1.
OWN_SAMPLES = str(Adaptor())


def trained_reward_column(settings: ExperimentSettings) -> str | None:
    """The scored corpus's column holding the reward `[align]` trained on (None when the study lacks it)."""
    assert settings.align is not None
    if settings.reward == settings.align.reward:
        return Col.REWARD
    return next((reward_column(n) for n, r in settings.rewards.items() if r == settings.align.reward), None)


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, column_a: str, column_b: str,
                      confidence: float) -> dict[str, Any]:
    """Mean of `a[column_a]` minus mean of `b[column_b]`, by prompt: the mean over the prompts both hold of
    each prompt's mean difference, with its t interval over prompts."""
    from scipy import stats  # lazy: scipy

    ma = a.groupby(Col.PROMPT_ID)[column_a].mean()
    mb = b.groupby(Col.PROMPT_ID)[column_b].mean()
    common = ma.index.intersection(mb.index)
    d = (ma.loc[common] - mb.loc[common]).to_numpy(np.float64)
    d = d[np.isfinite(d)]
    out: dict[str, Any] = {"prompts": len(d),
                           "mean_aligned": float(ma.loc[common].mean()) if len(d) else None,
                           "mean_prior": float(mb.loc[common].mean()) if len(d) else None,
                           "difference": float(d.mean()) if len(d) else None, "ci": None,
                           "confidence": confidence}
    if len(d) >= 2:
        se = float(d.std(ddof=1) / math.sqrt(len(d)))
        crit = float(stats.t.ppf(0.5 + confidence / 2, len(d) - 1))
        out["ci"] = [out["difference"] - crit * se, out["difference"] + crit * se]
        out["excludes_zero"] = bool(out["ci"][0] > 0 or out["ci"][1] < 0)
    return out


def pair_study(settings: ExperimentSettings, out: Path) -> dict[str, Any]:
    """The checks of the module docstring, as plain values (kept in the run's summary, printed by `run`)."""
    from pqtradeoff.pipeline.align import CANDIDATES

    assert settings.align is not None
    scored = pd.read_parquet(out / "scored")
    found: dict[str, Any] = {}
    column = trained_reward_column(settings)
    own = scored[scored[Col.ADAPTOR].map(lambda s: str(parse(s))) == OWN_SAMPLES]
    candidates = out / "aligned" / f"{CANDIDATES}_scored"
    if column is None:
        found["trained_reward"] = {"note": "the study does not score the reward [align] trained on"}
    elif str(parse(settings.align.adaptor)) != OWN_SAMPLES or own.empty:
        found["trained_reward"] = {"note": "needs ancestral candidates ([align] adaptor) and the ancestral "
                                           "adaptor in the study's grid"}
    else:
        prior_own = pd.read_parquet(candidates, columns=[Col.PROMPT_ID, Col.REWARD])
        found["trained_reward"] = {"column": column, **paired_difference(own, prior_own, column, Col.REWARD,
                                                                         settings.analysis.confidence)}
        found["trained_reward"]["max_new_tokens"] = {"aligned": settings.sampling.max_new_tokens,
                                                     "prior": settings.align.max_new_tokens}
    if settings.reward.kind == "dpo":
        beta = float(settings.reward.beta)
        residual = (scored[Col.LOGP_PRIOR] + scored[Col.REWARD] / beta
                    - scored[Col.LOGP_ALIGNED]).to_numpy(float)
        found["dpo_identity"] = {"beta": beta, "align_beta": settings.align.beta, "strings": len(residual),
                                 "finished": int(scored[Col.FINISHED].astype(bool).sum()),
                                 "max_abs_error": float(np.abs(residual).max()) if len(residual) else None}
    return found
