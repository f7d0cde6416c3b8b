"""Top-n-sigma truncation (Tang et al., arXiv 2411.07641): keep the tokens whose logit is within n standard
deviations of the largest, `logit >= max(logits) - n * std(logits)`.

transformers has no warper for it, so this is one in transformers' style (`__call__(input_ids, scores)`,
its argument checked by name), applied by `Adaptor` right after temperature and before every other
truncation, as the paper applies it to the (temperature-scaled) logits. The kept set does not depend on the
temperature: scaling the logits by 1/T scales both the gap to the maximum and sigma.

sigma is the standard deviation over the *finite* logits (tokens already at -inf, impossible for the model,
are outside every support; the exact automata have them), with Bessel's correction as `torch.std` - what
the paper's reference code and the vLLM/SGLang implementations compute. The largest logit always stays, so
nothing is left empty.
"""

from __future__ import annotations

import math

import torch

from pqtradeoff.errors import PQError


class TopNSigmaLogitsWarper:
    """Sets to `filter_value` every score below `max - n * sigma` of its row (sigma: the finite scores')."""

    def __init__(self, n: float, filter_value: float = -float("inf")) -> None:
        if isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(n) or n <= 0:
            raise PQError(f"top_n_sigma={n!r} is out of range: need a finite top_n_sigma > 0")
        self.n = float(n)
        self.filter_value = filter_value

    def __call__(self, input_ids: torch.LongTensor | None, scores: torch.FloatTensor) -> torch.FloatTensor:
        finite = torch.isfinite(scores)
        count = finite.sum(-1, keepdim=True)
        values = scores.masked_fill(~finite, 0.0)
        mean = values.sum(-1, keepdim=True) / count.clamp(min=1)
        deviations = (values - mean) * finite
        squares = deviations.square().sum(-1, keepdim=True)
        sigma = (squares / (count - 1).clamp(min=1)).sqrt()
        info = torch.finfo(scores.dtype)
        tiny = squares < info.tiny / info.eps  # squares underflowed (logits within ~1e-150 of each other)
        if bool(tiny.any()):
            scale = deviations.abs().amax(-1, keepdim=True)
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            scaled = scale * ((deviations / scale).square().sum(-1, keepdim=True)
                              / (count - 1).clamp(min=1)).sqrt()
            sigma = torch.where(tiny, scaled, sigma)
        top = scores.max(dim=-1, keepdim=True).values
        return scores.masked_fill(scores < top - self.n * sigma, self.filter_value)
