"""The request-level interface of a step-level model: `sample(requests)` gives each request exactly the row
that
`sample_batch` gives it alone, whatever the mix of adaptors and lengths in the call; `logprobs` is
`continuation_logprobs`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pqtradeoff.models.base import LanguageModel, SampleRequest
from pqtradeoff.models.decoding import sample_batch
from pqtradeoff.models.teacher_forcing import continuation_logprobs
from pqtradeoff.sampling.adaptors import parse
from pqtradeoff.sampling.sampler import row_keys

from bigram import BigramModel


def requests_for(model: BigramModel) -> list[SampleRequest]:
    """Runs of requests with different adaptors and length limits, one adaptor coming back after another."""
    out = []
    for run, (spec, length) in enumerate(
        [("ancestral", 5), ("top_k=2", 5), ("top_k=2", 3), ("ancestral", 5)]
    ):
        a = parse(spec)
        prompts = [[model.bos], [model.bos, 1 + run % 4], [model.bos, 2]]
        keys = row_keys(run, np.arange(3), np.arange(3), a)
        out += [SampleRequest(p, a, int(k), length) for p, k in zip(prompts, keys, strict=True)]
    return out


@pytest.mark.parametrize("batch_size", [None, 1, 2, 64])
def test_sample_gives_each_request_its_own_row(batch_size):
    model = BigramModel(vocab_size=6, seed=2)
    assert isinstance(model, LanguageModel)
    requests = requests_for(model)
    rows = model.sample(requests, batch_size=batch_size)
    assert len(rows) == len(requests)
    for r, row in zip(requests, rows, strict=True):
        with torch.inference_mode():
            alone = sample_batch(
                model, r.adaptor, [r.prompt_token_ids], np.array([r.key], dtype=np.uint64), r.max_new_tokens
            )[0]
        assert row.token_ids == alone.token_ids and row.finished == alone.finished
        assert len(row.token_ids) <= r.max_new_tokens
        np.testing.assert_allclose(
            [row.logq, row.logp_aligned, row.log_weight],
            [alone.logq, alone.logp_aligned, alone.log_weight],
            rtol=1e-6,
        )
    assert model.sample([]) == []


def test_logprobs_is_continuation_logprobs():
    model = BigramModel(vocab_size=6, seed=4)
    prompts, conts = [[5], [5, 1], [5]], [[1, 2, 0], [], [3]]
    got = model.logprobs(prompts, conts, batch_size=2, max_batch_tokens=4)
    want = continuation_logprobs(model, prompts, conts)
    assert [len(g) for g in got] == [3, 0, 1]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
