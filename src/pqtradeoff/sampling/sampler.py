"""The sampler: each row's own random stream, and one token per row by inverse CDF on its adapted
distribution.

Randomness is keyed by (seed, prompt_id, sample_id, adaptor): `row_keys` gives each row a 64-bit key, and
`step_uniforms(keys, step)` a uniform per row and step, a hash of both (counter-based). So a row draws the
same
numbers whatever batch it is in, whichever rows finished before it, and whether the run was resumed; the
decoding loop (`models.decoding`) and every backend draw from the same streams. `sample_step` adapts the
logits
(`sampling.adaptors`), picks the tokens and returns the three log-scores the corpus records.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from pqtradeoff.errors import PQError
from pqtradeoff.sampling import truncated
from pqtradeoff.sampling.adaptors import Adaptor, Mixture

# ------------------------------------------------------------------------------------------------ randomness
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer on uint64 arrays (wrapping arithmetic): a fast, well-mixed counter hash."""
    z = np.asarray(x, dtype=np.uint64) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def adaptor_key(adaptor: Adaptor | str) -> int:
    """A stable 64-bit key for an adaptor's canonical string (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(str(adaptor).encode()).digest()[:8], "little")


def row_keys(seed: int, prompt_ids: np.ndarray, sample_ids: np.ndarray, adaptor: Adaptor | str) -> np.ndarray:
    """One 64-bit key per row from (seed, prompt_id, sample_id, adaptor): the row's own random stream."""
    base = _mix64(np.array([seed], dtype=np.uint64) ^ np.array([adaptor_key(adaptor)], dtype=np.uint64))
    keys = _mix64(base ^ np.asarray(prompt_ids, dtype=np.uint64))
    return _mix64(keys ^ _mix64(np.asarray(sample_ids, dtype=np.uint64)))


def step_uniforms(keys: np.ndarray, step: int | np.ndarray) -> np.ndarray:
    """Uniforms in [0, 1) for step `step` (one for all rows, or one per row) of the rows with these keys
    (53 random bits each).

    Counter-based: the value for (row, step) is a hash of both, so a row draws the same numbers whatever the
    batch it is in, whichever rows finished before it, and whether the run was resumed.
    """
    counter = (np.atleast_1d(np.asarray(step, dtype=np.uint64)) + np.uint64(1)) << np.uint64(32)
    z = _mix64(keys ^ _mix64(counter))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


#: The step counter of the uniform that picks a mixture row's component.
MIXTURE_STEP = 2**31 - 1


#: The step counter of the uniform that picks a best-of-N row's kept candidate (no sampling step reaches it).
BEST_OF_N_STEP = 2**31 - 2


def candidate_keys(keys: np.ndarray, n: int) -> np.ndarray:
    """[rows * n] keys of each row's N best-of-N candidates, row after row: each candidate its own stream,
    derived from the row's key alone (so a row's candidates depend neither on its batch nor on resuming)."""
    keys = np.asarray(keys, dtype=np.uint64)
    return _mix64(np.repeat(keys, n) ^ _mix64(np.tile(np.arange(1, n + 1, dtype=np.uint64), len(keys))))


def mixture_components(mixture: Mixture, keys: np.ndarray) -> np.ndarray:
    """Each row's component: chosen with the mixture's probabilities from the row's own stream (a counter no
    sampling step reaches: steps are < max_new_tokens <= 1e6), so it depends on the row alone."""
    return mixture.choose(step_uniforms(np.asarray(keys, dtype=np.uint64), MIXTURE_STEP))


# ------------------------------------------------------------------------------------------------- sampling
#: Entries per block of the CPU sampler's two-level CDF (a divisor of common vocabulary sizes: 32000, 49152,
#: 128256, 151936, 262144 are multiples of 128).
CDF_BLOCK = 128


def sample_inverse_cdf(log_probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row from log-probabilities [B, V]: the first index whose CDF exceeds u * total.

    Tokens outside the support (probability 0) can never be chosen. Probabilities are exponentiated and
    summed in float64, row by row, so the choice is stable across batch shapes. On the CPU the CDF has two
    levels: block sums of `CDF_BLOCK` entries, their running sum, and the running sum inside the one block
    the target falls in (a full float64 running sum over the vocabulary is a serial chain of additions: it
    was 60% of the sampler's time). Within float64 rounding both give the same token.
    """
    if log_probs.device.type == "cpu":
        return torch.from_numpy(_blocked_inverse_cdf(log_probs.float().numpy(), uniforms.double().numpy()))
    cdf = torch.cumsum(log_probs.double().exp(), dim=-1)
    total = cdf[:, -1:]
    _check_finite(bool(torch.isfinite(total).all()))
    target = uniforms.double().unsqueeze(-1) * total
    tokens = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return tokens.clamp_(max=log_probs.shape[-1] - 1)


def _check_finite(finite: bool) -> None:
    if not finite:
        raise PQError("the model produced NaN or infinite logits while sampling (common with --dtype "
                      "float16): use --dtype bfloat16 or float32")


def _blocked_inverse_cdf(log_probs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """`sample_inverse_cdf` on the host: block sums, their running sum, then one block's running sum."""
    rows, vocab = log_probs.shape
    blocks = -(-vocab // CDF_BLOCK)
    if vocab % CDF_BLOCK:  # pad with zero probability up to whole blocks
        weights = np.zeros((rows, blocks * CDF_BLOCK), dtype=np.float64)
        np.exp(log_probs, out=weights[:, :vocab])
    else:
        weights = np.exp(log_probs, dtype=np.float64)
    weights = weights.reshape(rows, blocks, CDF_BLOCK)
    block_cdf = np.cumsum(weights.sum(-1), axis=-1)
    total = block_cdf[:, -1]
    _check_finite(bool(np.isfinite(total).all()))
    target = uniforms * total
    # the first block whose running sum exceeds the target; never past the last block with mass
    last_block = np.argmax(block_cdf >= total[:, None], axis=-1)
    block = np.minimum((block_cdf <= target[:, None]).sum(-1), last_block)
    index = np.arange(rows)
    before = np.where(block > 0, block_cdf[index, np.maximum(block - 1, 0)], 0.0)
    inside = weights[index, block]
    within = (np.cumsum(inside, axis=-1) <= (target - before)[:, None]).sum(-1)
    # rounding may put the target past the block's own running sum: take its last entry with mass
    last_positive = CDF_BLOCK - 1 - np.argmax(inside[:, ::-1] > 0, axis=-1)
    return block * CDF_BLOCK + np.minimum(within, last_positive)


def sample_step(adaptor: Adaptor, logits: torch.Tensor, keys: np.ndarray, steps: int | np.ndarray
                ) -> tuple[torch.Tensor, np.ndarray]:
    """One sampling step for rows with these keys at these steps: the tokens (on the logits' device) and, on
    the host, [token, log q, log p, log Z] per row (float64; one device-to-host copy per step)."""
    uniforms = step_uniforms(keys, steps)
    if truncated.applies(adaptor, logits):  # a truncating adaptor on the CPU: computed on its kept tokens
        kept = truncated.kept_tokens(adaptor, logits)
        host = np.empty((4, logits.shape[0]))
        rows, decided = truncated.sample_kept(adaptor, logits, kept, uniforms)
        host[:, rows] = decided
        if kept.todo.size:  # rows the candidates cannot decide: the dense computation
            rest = torch.from_numpy(kept.todo)
            host[:, kept.todo] = _dense_step(adaptor, logits[rest], uniforms[kept.todo])[1]
        return torch.from_numpy(host[0].astype(np.int64)), host
    return _dense_step(adaptor, logits, uniforms)


def _dense_step(adaptor: Adaptor, logits: torch.Tensor, uniforms: np.ndarray
                ) -> tuple[torch.Tensor, np.ndarray]:
    """`sample_step` over the whole vocabulary: `Adaptor.adapt`, then the inverse CDF."""
    step = adaptor.adapt(logits)
    u = torch.from_numpy(uniforms).to(logits.device)
    tokens = sample_inverse_cdf(step.log_probs, u)
    index = tokens.unsqueeze(-1)
    picked = torch.stack([tokens.double(), step.log_probs.gather(-1, index).squeeze(-1).double(),
                          step.logp.gather(-1, index).squeeze(-1).double(), step.log_z.squeeze(-1).double()])
    return tokens, picked.cpu().numpy()
