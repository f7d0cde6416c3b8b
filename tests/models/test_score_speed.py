"""The fast teacher-forced path (`models.hf_scoring`: shared prompt states, fused LM head) against a naive
per-row forward of transformers over prompt + continuation, on tiny Llama and GPT-2 checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pqtradeoff.errors import PQError
from pqtradeoff.models import hf_scoring
from pqtradeoff.models.hf import HFModel
from pqtradeoff.models.teacher_forcing import continuation_logprobs, plain_continuation_logprobs
from pqtradeoff.testing import build_causal, word_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
ATOL = 1e-4  # nats, float32


@pytest.fixture(scope="module", params=["llama", "gpt2", "llama_pad_eos"])
def lm(request, tiny_hf, tmp_path_factory) -> HFModel:
    if request.param == "llama_pad_eos":
        tok = word_tokenizer("llama")
        tok.pad_token = tok.eos_token
        path = build_causal(tmp_path_factory.mktemp("pad_eos"), "llama", tokenizer=tok, seed=5)
        model = HFModel(str(path), device="cpu")
        assert model.pad_token_id == model.eos_token_id
        return model
    return HFModel(str(getattr(tiny_hf, request.param)), device="cpu")


def naive_logprobs(lm: HFModel, prompts: list[list[int]], conts: list[list[int]]) -> list[np.ndarray]:
    """Each row alone: transformers' forward over prompt + continuation, log_softmax in float64, gathered."""
    out = []
    with torch.no_grad():
        for p, c in zip(prompts, conts, strict=True):
            logits = lm.model(torch.tensor([p + c])).logits[0].double()
            logp = torch.log_softmax(logits, -1)
            out.append(np.array([logp[len(p) - 1 + t, tok].item() for t, tok in enumerate(c)]))
    return out


def rows(lm: HFModel, seed: int = 0) -> tuple[list[list[int]], list[list[int]]]:
    """Prompts sharing a system prefix (some identical, one a prefix of the others, a 1-token one, one with
    nothing in common), continuations of 0 to 9 tokens (EOS and the pad id among them)."""
    rng = np.random.default_rng(seed)
    v = lm.vocab_size

    def ids(n: int) -> list[int]:
        return [int(x) for x in rng.integers(3, v, n)]

    system = ids(6)
    distinct = [system + ids(k) for k in (1, 3, 5, 2)] + [system, [system[0]], ids(4), system[:3]]
    prompts = [distinct[i % len(distinct)] for i in range(3 * len(distinct))]  # each prompt 3 times
    conts = [ids(int(rng.integers(0, 10))) for _ in prompts]
    conts[1] = [lm.eos_token_id, lm.pad_token_id, 5]
    conts[2] = []
    conts[4] = [7]
    return prompts, conts


def assert_close(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert [g.shape for g in got] == [w.shape for w in want]
    assert all(g.dtype == np.float64 for g in got)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=ATOL, rtol=0)


@pytest.mark.parametrize(("batch_size", "max_batch_tokens"), [(1, 4096), (3, 16), (64, 8192), (8, 5)])
def test_fast_path_matches_naive_forward(lm, batch_size, max_batch_tokens):
    prompts, conts = rows(lm)
    assert hf_scoring.fast_scoring_parts(lm) is not None
    got = lm.fast_logprobs(prompts, conts, batch_size=batch_size, max_batch_tokens=max_batch_tokens)
    assert got is not None
    assert_close(got, naive_logprobs(lm, prompts, conts))
    assert_close(continuation_logprobs(lm, prompts, conts, batch_size=batch_size,
                                       max_batch_tokens=max_batch_tokens), got)


def test_head_blocks_and_windows_do_not_change_results(lm, monkeypatch):
    """Several LM-head blocks (a partial last one), several row chunks, and prompt windows split small."""
    prompts, conts = rows(lm, seed=1)
    want = naive_logprobs(lm, prompts, conts)
    monkeypatch.setattr(hf_scoring, "VOCAB_BLOCK", 16)
    monkeypatch.setattr(hf_scoring, "HEAD_ROWS", 5)
    monkeypatch.setattr(hf_scoring, "PROMPT_STATE_FACTOR", 1)
    assert lm.vocab_size % 16 != 0
    assert_close(lm.fast_logprobs(prompts, conts, batch_size=4, max_batch_tokens=20), want)


def test_without_shared_prompt_states_the_fused_head_still_matches(tiny_hf):
    """A model whose cache cannot be shared (sliding-window layers: `can_join` False) runs the plain layout
    through the base model and the fused head."""
    lm = HFModel(str(tiny_hf.llama), device="cpu")
    lm.can_join = False
    prompts, conts = rows(lm, seed=5)
    parts = hf_scoring.fast_scoring_parts(lm)
    assert parts is not None and not parts.share
    got = lm.fast_logprobs(prompts, conts, batch_size=3, max_batch_tokens=12)
    assert got is not None
    assert_close(got, naive_logprobs(lm, prompts, conts))


def test_plain_path_matches_naive_forward(lm):
    prompts, conts = rows(lm, seed=2)
    want = naive_logprobs(lm, prompts, conts)
    assert_close(plain_continuation_logprobs(lm, prompts, conts, batch_size=5), want)


def test_batches_and_windows_stay_within_their_budgets(lm, monkeypatch):
    prompts, conts = rows(lm, seed=3)
    batches, windows = [], []
    score_batch, prompt_states = hf_scoring.score_batch, hf_scoring.prompt_states

    def spy_batch(lm_, parts, states, slots, lengths, cs, head=None):
        batches.append((len(cs), max(map(len, cs))))
        return score_batch(lm_, parts, states, slots, lengths, cs, head)

    def spy_states(lm_, parts, ps, budget):
        windows.append((len(ps), max(map(len, ps))))
        return prompt_states(lm_, parts, ps, budget)

    monkeypatch.setattr(hf_scoring, "score_batch", spy_batch)
    monkeypatch.setattr(hf_scoring, "prompt_states", spy_states)
    lm.fast_logprobs(prompts, conts, batch_size=4, max_batch_tokens=12)
    assert all(n <= 4 and (n == 1 or n * width <= 12) for n, width in batches)
    assert all(n == 1 or n * longest <= hf_scoring.PROMPT_STATE_FACTOR * 12 for n, longest in windows)
    assert len(windows) > 1 and sum(n for n, _ in batches) == sum(1 for c in conts if c)


def test_scaled_or_softcapped_logits_fall_back_to_the_plain_path(tiny_hf):
    scaled = HFModel(str(tiny_hf.llama), device="cpu")

    def halve(module, args, output):
        output.logits = output.logits * 0.5
        return output

    scaled.model.register_forward_hook(halve)  # a scaling the config does not name: caught by the probe
    prompts, conts = rows(scaled, seed=4)
    assert scaled.fast_logprobs(prompts, conts, batch_size=8, max_batch_tokens=64) is None
    assert_close(continuation_logprobs(scaled, prompts, conts), naive_logprobs(scaled, prompts, conts))

    capped = HFModel(str(tiny_hf.llama), device="cpu")
    capped.model.config.final_logit_softcapping = 30.0
    assert hf_scoring.fast_scoring_parts(capped) is None


def test_common_prefix_and_windows():
    assert hf_scoring.common_prefix([(1, 2, 3), (1, 2, 4), (1, 2)]) == 2
    assert hf_scoring.common_prefix([(5,), (6, 1)]) == 0
    prompts = [(1,) * n for n in (3, 3, 8, 2, 2, 2, 20)]
    windows = hf_scoring.prompt_windows(prompts, 10)
    assert [i for w in windows for i in w] == list(range(len(prompts)))
    assert all(len(w) == 1 or len(w) * max(len(prompts[i]) for i in w) <= 10 for w in windows)


def test_fast_path_bad_inputs(lm):
    with pytest.raises(PQError, match="a token in each prompt"):
        lm.fast_logprobs([[]], [[1]], batch_size=8, max_batch_tokens=64)
    with pytest.raises(PQError, match="2 prompts but 1 continuations"):
        lm.fast_logprobs([[1], [2]], [[1]], batch_size=8, max_batch_tokens=64)


def test_cpu_scoring_default_caps_positions_per_forward(lm):
    from pqtradeoff.models.base import SCORE_BATCH_TOKENS, SCORE_BATCH_TOKENS_CPU, score_batch_tokens

    assert score_batch_tokens(lm) == SCORE_BATCH_TOKENS_CPU < SCORE_BATCH_TOKENS
    assert score_batch_tokens(None) == SCORE_BATCH_TOKENS
