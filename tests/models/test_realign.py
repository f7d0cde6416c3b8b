"""DeRa (`models.realign`): the aligned model and its prior decoded in lockstep.

Oracles: for Hugging Face models, each model's own teacher-forced logits over the sampled string, mixed by
hand; for automata, the closed forms' tables (path sums, exact to float64) and their expectations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pqtradeoff.errors import PQError
from pqtradeoff.exact import closed_forms
from pqtradeoff.models.base import SampleRequest
from pqtradeoff.models.fsa import TransitionReward, align, random_ngram
from pqtradeoff.models.hf import HFModel
from pqtradeoff.models.realign import Realigned, with_prior
from pqtradeoff.sampling.adaptors import parse
from pqtradeoff.sampling.sampler import row_keys

pytestmark = pytest.mark.usefixtures("one_thread")


def requests(prompts, spec, n, max_new_tokens, seed=0):
    adaptor = parse(spec)
    pid = np.repeat(np.arange(len(prompts)), n)
    keys = row_keys(seed, pid, np.tile(np.arange(n), len(prompts)), adaptor)
    return [SampleRequest(list(prompts[p]), adaptor, int(k), max_new_tokens)
            for p, k in zip(pid, keys, strict=True)]


@pytest.fixture(scope="module")
def hf_pair(tiny_hf):
    return HFModel(str(tiny_hf.llama), device="cpu"), HFModel(str(tiny_hf.prior), device="cpu")


@pytest.mark.parametrize("spec", ["dera=0.5", "temperature=0.8,dera=1.5,top_k=20"])
def test_hf_rows_record_the_mixture_the_aligned_model_and_the_global_mass(hf_pair, spec):
    aligned, prior = hf_pair
    adaptor = parse(spec)
    prompts = [aligned.encode_prompt(p) for p in ("hello world", "the cat sat")]
    rows = Realigned(aligned, prior).sample(requests(prompts, spec, 3, 8), batch_size=4)
    lam, warpers = adaptor.dera, adaptor.without_dera()
    for row, prompt in zip(rows, np.repeat(np.arange(2), 3), strict=True):
        cont = [row.token_ids]
        la = torch.log_softmax(aligned.continuation_logits([prompts[prompt]], cont)[0].double(), -1)
        lp = torch.log_softmax(prior.continuation_logits([prompts[prompt]], cont)[0].double(), -1)
        m = lam * la + (1 - lam) * lp
        step = warpers.adapt(m)
        tok = torch.tensor(row.token_ids).unsqueeze(-1)
        np.testing.assert_allclose(row.token_logq, step.log_probs.gather(-1, tok).squeeze(-1), atol=2e-4)
        np.testing.assert_allclose(row.token_logp_aligned, la.gather(-1, tok).squeeze(-1), atol=2e-4)
        global_z = torch.logsumexp(torch.where(torch.isfinite(step.log_weights), m / adaptor.temperature,
                                               -torch.inf), -1)
        np.testing.assert_allclose(row.token_log_z, global_z, atol=2e-4)
        assert row.log_weight == pytest.approx(math.fsum(row.token_log_z))


def test_other_requests_are_the_aligned_models_own_rows(hf_pair):
    aligned, prior = hf_pair
    prompts = [aligned.encode_prompt("hello")]
    reqs = requests(prompts, "temperature=0.9", 4, 6)
    assert Realigned(aligned, prior).sample(reqs, batch_size=2) == aligned.sample(reqs, batch_size=2)


def test_dera_refused_without_a_prior_or_with_another_tokenizer(tiny_hf, hf_pair):
    aligned, _ = hf_pair
    with pytest.raises(PQError, match=r"dera=0.5.*needs the prior at generation time"):
        with_prior(aligned, None, [parse("dera=0.5")])
    assert with_prior(aligned, None, [parse("top_k=5")]) is aligned
    for other in (tiny_hf.other, tiny_hf.gpt2):
        with pytest.raises(PQError, match="must share the aligned model's tokenizer"):
            with_prior(aligned, HFModel(str(other), device="cpu"), [parse("dera=0.5")])


@pytest.mark.parametrize("spec", ["dera=-0.5", "dera=nan", "dera=x"])
def test_bad_dera_values_are_one_line(spec):
    with pytest.raises(PQError, match="dera="):
        parse(spec)


@pytest.fixture(scope="module")
def automata():
    prior = random_ngram(4, 2, seed=3, eos_prob=0.3)
    rng = np.random.default_rng(3)
    return align(prior, TransitionReward(prior, rng.normal(0.0, 0.7, prior.log_probs.shape)), 1.0)


@pytest.mark.parametrize("spec", ["dera=0.5", "dera=2.0", "temperature=0.7,dera=0.5,top_p=0.9"])
def test_automata_rows_match_the_closed_forms_tables_and_means(automata, spec):
    adaptor = parse(spec)
    rows = Realigned(automata.aligned, automata.prior).sample(requests([[]], spec, 3000, 200, seed=1))
    tables = closed_forms.adapted_tables(automata.aligned, adaptor, automata.prior)
    finished = [r for r in rows if r.finished]
    assert len(finished) > 2900
    for r in finished[:200]:
        assert r.logq == pytest.approx(automata.aligned.path_sum(tables.log_probs, r.token_ids), abs=1e-9)
        assert r.logp_aligned == pytest.approx(automata.aligned.log_prob(r.token_ids), abs=1e-9)
        z = np.broadcast_to(tables.log_z[:, None], tables.log_probs.shape)
        assert r.log_weight == pytest.approx(automata.aligned.path_sum(z, r.token_ids), abs=1e-9)
    exact = closed_forms.local_expectations(automata, adaptor)
    reward = np.array([automata.reward.score(r.token_ids) for r in finished])
    se = reward.std(ddof=1) / math.sqrt(len(reward))
    assert abs(reward.mean() - exact.mean_reward) < 4 * se
