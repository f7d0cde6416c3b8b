"""Exact expectations against brute-force enumeration of strings, and against Monte Carlo sampling.

The enumeration walks the model through the pipeline's interface (start/step, float64 logits, the adaptor
applied per prefix) and sums over individual strings; the exact side uses linear solves over states. Prefixes
are only dropped when the total mass they could still carry is bounded below 1e-12 (checked).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from pqtradeoff.errors import PQError
from pqtradeoff.exact import closed_forms
from pqtradeoff.models.fsa import FiniteStateLM, TransitionReward, align, random_ngram
from pqtradeoff.sampling.adaptors import parse

from automata_helpers import aligned_expectations, bounded_prior, prior_expectations, sample

TAIL = 1e-12


# ----------------------------------------------------------------------------------------- fixtures
# Cyclic models need a dominant EOS for brute force to reach a 1e-12 tail with few strings; the bounded
# model (EOS forced after 4 words) has a finite language, so truncation adaptors can be tested with a
# moderate EOS probability and no tail at all.
def with_random_reward(prior: FiniteStateLM, seed: int, scale: float = 0.5, beta: float = 1.5):
    rng = np.random.default_rng(seed + 100)
    return align(prior, TransitionReward(prior, rng.normal(0.0, scale, prior.log_probs.shape)), beta)


@pytest.fixture(scope="module")
def bigram2():
    """Order 2, two words + EOS: 3 states with cycles."""
    return with_random_reward(random_ngram(2, 2, seed=1, alpha=0.7, eos_prob=0.85, allow_empty=True), 1)


@pytest.fixture(scope="module")
def unigram2():
    """Order 1, two words + EOS: a single state."""
    return with_random_reward(random_ngram(2, 1, seed=2, alpha=0.7, eos_prob=0.93, allow_empty=True), 2)


@pytest.fixture(scope="module")
def trigram2():
    """Order 3, two words + EOS: 7 states."""
    return with_random_reward(random_ngram(2, 3, seed=3, alpha=0.7, eos_prob=0.85, allow_empty=True), 3)


@pytest.fixture(scope="module")
def bounded3():
    """Three words + EOS, at most 4 words: 13 states, 121 strings."""
    return with_random_reward(bounded_prior(3, 4, seed=4), 4, scale=1.0)


# ----------------------------------------------------------------------------------------- enumeration
def enumerate_strings(alignment, weight_fn, *, bound: float = 1.0, prompt=(), max_length=None, cap=64):
    """Every complete string with its log weight and its exact float64 log p, r, log p+, length and sum of
    per-step log Z_t. `weight_fn(logits, states)` gets the aligned model's float64 logits and the automaton
    states of the live prefixes and returns (log weights [B, V] float64, log Z_t [B] or None).

    `bound` bounds the total weight of any state's completions, so a dropped prefix of weight w carries at
    most w * bound; at each length the lightest prefixes are dropped while their total stays below 1e-14 of
    the weight already finished (a lower bound on Z), and the total dropped is checked against 1e-12 Z.
    """
    model, prior, phi = alignment.aligned, alignment.prior, alignment.reward.phi
    eos = model.eos_token_id
    logits, state = model.start([list(prompt)])
    live = {"logw": np.zeros(1), "lp": np.zeros(1), "r": np.zeros(1), "lpa": np.zeros(1), "lz": np.zeros(1)}
    done = {k: [] for k in ("logw", "lp", "r", "lpa", "lz", "length")}
    dropped = 0.0
    for t in range(cap):
        s = state.numpy()
        logw, step_lz = weight_fn(logits, s)
        step_lz = np.zeros(len(s)) if step_lz is None else step_lz
        new = {
            "logw": live["logw"][:, None] + logw,
            "lp": live["lp"][:, None] + prior.log_probs[s],
            "r": live["r"][:, None] + phi[s],
            "lpa": live["lpa"][:, None] + model.log_probs[s],
            "lz": np.broadcast_to((live["lz"] + step_lz)[:, None], logw.shape),
        }
        fin = np.isfinite(new["logw"][:, eos])
        for k in ("logw", "lp", "r", "lpa", "lz"):
            done[k].append(new[k][fin, eos])
        done["length"].append(np.full(fin.sum(), t + 1))
        words = np.arange(model.vocab_size) != eos
        rows, cols = np.nonzero(np.isfinite(new["logw"]) & words[None, :])
        w = new["logw"][rows, cols]
        last = max_length is not None and t + 1 >= max_length
        keep = np.full(len(w), not last)
        if not last:  # drop the lightest prefixes while their total stays within 1e-14 of the finished weight
            budget = 1e-14 * sum(float(np.exp(x).sum()) for x in done["logw"])
            order = np.argsort(w)
            light = np.cumsum(np.exp(w[order])) * bound <= budget
            keep[order[light]] = False
            dropped += float(np.exp(w[~keep]).sum()) * bound
        if not keep.any():
            break
        rows, cols = rows[keep], cols[keep]
        assert len(rows) <= 400_000, f"enumeration too wide at length {t + 1}: choose a smaller model"
        live = {k: new[k][rows, cols] for k in live}
        logits, state = model.step(state[torch.from_numpy(rows)], torch.from_numpy(cols))
    else:
        raise AssertionError(f"enumeration did not finish within {cap} tokens")
    out = {k: np.concatenate(v) for k, v in done.items()}
    log_z = logsumexp(out["logw"])
    assert dropped <= TAIL * math.exp(log_z), f"dropped mass {dropped} too large"
    return out, log_z


def brute_expectations(strings, log_z, log_weight=False):
    p = np.exp(strings["logw"] - log_z)
    out = {"mean_log_weight": float(p @ strings["lz"])} if log_weight else {}
    return out | {
        "log_normalizer": log_z,
        "mean_log_prior": float(p @ strings["lp"]),
        "mean_reward": float(p @ strings["r"]),
        "mean_log_aligned": float(p @ strings["lpa"]),
        "entropy": float(-(p @ (strings["logw"] - log_z))),
        "mean_length": float(p @ strings["length"]),
    }


def by_state(table):
    """weight_fn reading a float64 [S, V] table at the live prefixes' states."""
    return lambda logits, states: (table[states], None)


def assert_matches(result, brute, rtol, atol):
    assert result.normalizes, result.message
    for name, value in brute.items():
        assert getattr(result, name) == pytest.approx(value, rel=rtol, abs=atol), name


def adaptor_weights(adaptor, local: bool):
    def fn(logits, states):
        step = adaptor.adapt(logits)
        weights = step.log_probs if local else step.log_weights
        return weights.double().numpy(), step.log_z.squeeze(-1).double().numpy()
    return fn


def row_bound(log_weights: np.ndarray, eos: int) -> float:
    """b(s) <= max_s W(s, EOS) / (1 - max_s sum_words W(s, v)), an elementary bound independent of solves."""
    w = np.exp(log_weights)
    words = np.delete(w, eos, axis=1).sum(axis=1).max()
    assert words < 1, "choose a model whose word weights sum below 1 for a checkable bound"
    return float(w[:, eos].max() / (1 - words))


# ----------------------------------------------------------------------------------------- aligned
@pytest.mark.parametrize("name", ["unigram2", "bigram2", "trigram2", "bounded3"])
def test_aligned_model_matches_enumeration(name, request):
    al = request.getfixturevalue(name)
    strings, log_z = enumerate_strings(al, by_state(al.aligned.log_probs))
    assert log_z == pytest.approx(0.0, abs=1e-12)  # p+ is normalized
    # Z = sum_y p(y) exp(r(y)/beta), enumerated independently of the backward solve
    z_brute = logsumexp(strings["lp"] + strings["r"] / al.beta)
    assert al.log_z == pytest.approx(z_brute, abs=1e-10)
    # the identity, string by string
    residual = strings["lp"] + strings["r"] / al.beta - strings["lpa"] - al.log_z
    assert np.max(np.abs(residual)) < 1e-9
    assert_matches(aligned_expectations(al), brute_expectations(strings, log_z), 1e-9, 1e-10)


def test_prior_expectations_match_enumeration(bigram2):
    al = bigram2
    strings, log_z = enumerate_strings(al, by_state(al.prior.log_probs))
    assert_matches(prior_expectations(al), brute_expectations(strings, log_z), 1e-9, 1e-10)


def test_expectations_after_a_prompt(bigram2):
    al = bigram2
    prompt = [1, 0]
    strings, log_z = enumerate_strings(al, by_state(al.aligned.log_probs), prompt=prompt)
    residual = strings["lp"] + strings["r"] / al.beta - strings["lpa"] - al.log_z_at(prompt)
    assert np.max(np.abs(residual)) < 1e-9
    result = aligned_expectations(al, prompt_ids=prompt)
    assert_matches(result, brute_expectations(strings, log_z), 1e-9, 1e-10)
    assert result.mean_log_prior != pytest.approx(aligned_expectations(al).mean_log_prior, abs=1e-3)


# ----------------------------------------------------------------------------------------- adaptors
SPECS = ["ancestral", "temperature=0.5", "temperature=1.5", "top_k=1", "top_k=2", "top_p=0.7",
         "temperature=0.75,top_p=0.9", "typical_p=0.5", "eta_cutoff=0.2", "min_p=0.3", "epsilon_cutoff=0.15",
         "top_n_sigma=0.8", "temperature=1.5,top_n_sigma=1.0,top_k=2"]
CYCLIC = [("bigram2", "ancestral"), ("bigram2", "temperature=0.5"), ("trigram2", "temperature=0.75,top_k=1"),
          ("unigram2", "temperature=1.25")]


def _cases():
    return [("bounded3", spec) for spec in SPECS] + CYCLIC


@pytest.mark.parametrize(("name", "spec"), _cases())
def test_local_adapted_matches_enumeration(name, spec, request):
    al, adaptor = request.getfixturevalue(name), parse(spec)
    strings, log_z = enumerate_strings(al, adaptor_weights(adaptor, local=True))
    assert log_z == pytest.approx(0.0, abs=1e-5)
    result = closed_forms.local_expectations(al, adaptor)
    brute = brute_expectations(strings, log_z, log_weight=True)
    brute["log_normalizer"] = 0.0
    brute["mean_log_q"] = float(np.exp(strings["logw"] - log_z) @ strings["logw"])  # the KL axis
    assert_matches(result, brute, 1e-5, 1e-5)
    assert result.kl_aligned == pytest.approx(brute["mean_log_q"] - brute["mean_log_aligned"], abs=1e-5)
    assert result.kl_aligned >= -1e-9 and (adaptor.is_identity or result.kl_aligned > 1e-6)
    assert result.adaptor == str(adaptor)


@pytest.mark.parametrize(("name", "spec"), _cases())
def test_global_adapted_matches_enumeration(name, spec, request):
    al, adaptor = request.getfixturevalue(name), parse(spec)
    tables = closed_forms.adapted_tables(al.aligned, adaptor)
    # for T <= 1 the weights are at most p+, so no state's completions weigh more than 1
    hot = adaptor.temperature > 1 and name != "bounded3"
    bound = row_bound(tables.log_weights, al.aligned.eos_token_id) if hot else 1.0
    strings, log_z = enumerate_strings(al, adaptor_weights(adaptor, local=False), bound=bound)
    result = closed_forms.global_expectations(al, adaptor)
    assert_matches(result, brute_expectations(strings, log_z, log_weight=True), 1e-5, 1e-5)
    if hot:
        assert log_z > 0  # weights summing above 1: a genuinely unnormalized automaton


@pytest.mark.parametrize(("name", "spec"),
                         [("bounded3", "temperature=0.5"), ("bounded3", "temperature=1.5,top_p=0.7"),
                                         ("bounded3", "eta_cutoff=0.2"), ("bigram2", "temperature=0.5")])
def test_importance_ess_fraction_matches_enumeration(name, spec, request):
    """ESS fraction (sum A)^2 / sum A^2/q, with q(y) = A(y) / prod_t Z_t for the global adaptor."""
    al, adaptor = request.getfixturevalue(name), parse(spec)
    strings, log_z = enumerate_strings(al, adaptor_weights(adaptor, local=False))
    brute = math.exp(2 * log_z - logsumexp(strings["logw"] + strings["lz"]))
    result = closed_forms.global_expectations(al, adaptor)
    assert result.ess_fraction == pytest.approx(brute, rel=1e-5)
    assert 0 < result.ess_fraction <= 1


def test_ess_fraction_is_zero_for_infinite_variance_and_one_for_the_proposal_itself(bounded3):
    # one state, p = (0.15, 0.15, EOS 0.7): q = p^2/Z at T=0.5, so E_q[(p/q)^2] sums the word weight
    # p^2/q = Z = 0.535 per word per step: 2 * 0.535 > 1, the second moment diverges
    prior = FiniteStateLM(["a", "b"], np.array([[0, 0, -1]]), np.log([[0.15, 0.15, 0.7]]))
    al = align(prior, TransitionReward(prior, np.zeros((1, 3))), 1.0)
    assert closed_forms.imh_target_expectations(al, "temperature=0.5", "aligned").ess_fraction == 0.0
    assert 0 < closed_forms.imh_target_expectations(al, "temperature=0.8", "aligned").ess_fraction < 1
    ess = closed_forms.global_expectations(bounded3, "ancestral").ess_fraction
    assert ess == pytest.approx(1.0, abs=1e-12)
    assert aligned_expectations(bounded3).ess_fraction is None


@pytest.mark.parametrize("spec", ["top_k=1", "top_p=0.7", "temperature=0.5,top_k=2", "typical_p=0.5"])
def test_imh_aligned_target_is_p_plus_on_the_kept_support(bounded3, spec):
    adaptor = parse(spec)

    def restricted(logits, states):
        keep = adaptor.support(logits).numpy()
        return np.where(keep, bounded3.aligned.log_probs[states], -np.inf), None

    strings, log_z = enumerate_strings(bounded3, restricted)
    result = closed_forms.imh_target_expectations(bounded3, adaptor, target="aligned")
    assert_matches(result, brute_expectations(strings, log_z), 1e-9, 1e-10)
    assert result.log_normalizer < 0  # truncation removes mass


def test_imh_global_target_is_the_global_adaptor(bounded3):
    a = closed_forms.imh_target_expectations(bounded3, "temperature=0.5,top_k=2", target="global")
    b = closed_forms.global_expectations(bounded3, "temperature=0.5,top_k=2")
    assert a == b
    untruncated = closed_forms.imh_target_expectations(bounded3, "temperature=0.5", target="aligned")
    aligned = aligned_expectations(bounded3)
    assert untruncated.mean_reward == pytest.approx(aligned.mean_reward, rel=1e-12)
    with pytest.raises(PQError, match="target='local'"):
        closed_forms.imh_target_expectations(bounded3, "ancestral", target="local")


def test_identity_in_expectation(trigram2):
    """E[log p] + E[r]/beta = E[log p+] + log Z under any distribution (the identity, averaged)."""
    al = trigram2
    for result in (aligned_expectations(al), closed_forms.local_expectations(al, "top_p=0.8"),
                   closed_forms.global_expectations(al, "temperature=0.6")):
        lhs = result.mean_log_prior + result.mean_reward / al.beta
        assert lhs == pytest.approx(result.mean_log_aligned + al.log_z, abs=1e-10)


# ----------------------------------------------------------------------------------------- divergence
def diverging_alignment():
    """One state; EOS 0.2, two words 0.4 each: sum_v sqrt(p(v)) = 1.26 > 1, so T=2 diverges."""
    log_probs = np.log([[0.4, 0.4, 0.2]])
    prior = FiniteStateLM(["a", "b"], np.array([[0, 0, -1]]), log_probs)
    return align(prior, TransitionReward(prior, np.zeros((1, 3))), 1.0)


def test_non_normalizing_global_adaptor_is_reported():
    al = diverging_alignment()
    result = closed_forms.global_expectations(al, "temperature=2")
    assert not result.normalizes
    assert "does not normalize" in result.message
    assert result.spectral_radius == pytest.approx(2 * math.sqrt(0.4), rel=1e-6)
    assert result.mean_log_prior is None and result.entropy is None and result.log_normalizer is None
    # 2 * 0.4^(1/T) < 1 exactly when T < 1.322: T=1.25 normalizes, T=1.5 does not
    hot = closed_forms.global_expectations(al, "temperature=1.25")
    assert hot.normalizes and hot.spectral_radius == pytest.approx(2 * 0.4**0.8, rel=1e-6)
    assert not closed_forms.global_expectations(al, "temperature=1.5").normalizes
    # the local adaptor at T=2 still terminates
    assert closed_forms.local_expectations(al, "temperature=2").normalizes


def test_max_length_normalizes_and_matches_enumeration():
    al = diverging_alignment()
    adaptor = parse("temperature=2")
    strings, log_z = enumerate_strings(al, adaptor_weights(adaptor, local=False), max_length=9)
    assert len(strings["logw"]) == sum(2**k for k in range(9))  # every string of at most 9 tokens
    result = closed_forms.global_expectations(al, adaptor, max_length=9)
    assert_matches(result, brute_expectations(strings, log_z, log_weight=True), 1e-5, 1e-5)
    assert result.max_length == 9


def test_max_length_agrees_with_unbounded_when_the_tail_is_negligible(trigram2):
    for spec in ("ancestral", "temperature=0.5,top_k=2", "temperature=1.25"):
        a = closed_forms.global_expectations(trigram2, spec)
        b = closed_forms.global_expectations(trigram2, spec, max_length=80)
        for name in ("log_normalizer", "mean_log_prior", "mean_reward", "entropy", "mean_length"):
            assert getattr(b, name) == pytest.approx(getattr(a, name), rel=1e-9, abs=1e-10), name


def test_local_adaptor_that_never_ends_is_reported():
    """top_k=1 keeps a word everywhere (EOS is never the likeliest): q_gamma never terminates."""
    log_probs = np.log([[0.5, 0.3, 0.2], [0.3, 0.5, 0.2]])
    prior = FiniteStateLM(["a", "b"], np.array([[1, 0, -1], [1, 0, -1]]), log_probs)
    al = align(prior, TransitionReward(prior, np.zeros((2, 3))), 1.0)
    result = closed_forms.local_expectations(al, "top_k=1")
    assert not result.normalizes and "does not normalize" in result.message
    # no string ends at all
    assert closed_forms.local_expectations(al, "top_k=1", max_length=5).normalizes is False


def test_max_length_must_be_positive(bounded3):
    with pytest.raises(PQError, match="max_length=0"):
        aligned_expectations(bounded3, max_length=0)


# ----------------------------------------------------------------------------------------- sampling
def test_ancestral_samples_match_exact_expectations():
    al = with_random_reward(random_ngram(3, 2, seed=5, eos_prob=0.3), 5)
    samples = sample(al.aligned, 4000, seed=7)
    lp = np.array([al.prior.log_prob(y) for y in samples])
    r = np.array([al.reward.score(y) for y in samples])
    lpa = np.array([al.aligned.log_prob(y) for y in samples])
    length = np.array([len(y) for y in samples])
    result = aligned_expectations(al)
    for values, target in ((lp, result.mean_log_prior), (r, result.mean_reward),
                           (-lpa, result.entropy), (length, result.mean_length)):
        se = values.std(ddof=1) / math.sqrt(len(values))
        assert abs(values.mean() - target) < 5 * se


def test_adapted_sampling_through_the_interface_matches_local_expectations():
    """Sample q_gamma the way generate does (start/step, adaptor per step) and compare to the exact means."""
    al = with_random_reward(random_ngram(3, 3, seed=6, eos_prob=0.3), 6)
    adaptor = parse("temperature=0.75,top_p=0.9")
    n = 3000
    gen = torch.Generator().manual_seed(0)
    logits, state = al.aligned.start([[] for _ in range(n)])
    tokens_so_far: list[list[int]] = [[] for _ in range(n)]
    alive = torch.arange(n)
    while alive.numel():
        tok = torch.multinomial(adaptor.log_probs(logits).exp(), 1, generator=gen).squeeze(1)
        for row, t in zip(alive.tolist(), tok.tolist(), strict=True):
            tokens_so_far[row].append(t)
        going = tok != al.aligned.eos_token_id
        logits, state = al.aligned.step(state, tok)
        logits, state, alive = logits[going], al.aligned.keep(state,
                                                              torch.nonzero(going).squeeze(1)), alive[going]
    result = closed_forms.local_expectations(al, adaptor)
    lp = np.array([al.prior.log_prob(y) for y in tokens_so_far])
    r = np.array([al.reward.score(y) for y in tokens_so_far])
    for values, target in ((lp, result.mean_log_prior), (r, result.mean_reward)):
        se = values.std(ddof=1) / math.sqrt(n)
        assert abs(values.mean() - target) < 5 * se


# ----------------------------------------------------------------------------------------- DeRa
def dera_weights(alignment, adaptor, local: bool):
    """weight_fn for `dera`: m = lambda log p+ + (1 - lambda) log p read from the two models' own tables at
    the live states, the spec's warpers on m, and for the global law the unnormalized m/T."""
    lam = adaptor.dera
    warpers = adaptor.without_dera()

    def fn(logits, states):
        a, p = alignment.aligned.log_probs[states], alignment.prior.log_probs[states]
        with np.errstate(invalid="ignore"):  # a token impossible for either model stays impossible
            m = np.where(np.isfinite(a) & np.isfinite(p), lam * a + (1 - lam) * p, -np.inf)
        step = warpers.adapt(torch.from_numpy(m))
        mass = logsumexp(m, axis=-1) / adaptor.temperature
        log_z = step.log_z.squeeze(-1).double().numpy() + mass
        if local:
            return step.log_probs.double().numpy(), log_z
        return step.log_weights.double().numpy() + mass[:, None], log_z
    return fn


@pytest.mark.parametrize("spec", ["dera=0.5", "dera=1.5", "dera=0.0", "temperature=0.75,dera=0.5,top_k=2"])
@pytest.mark.parametrize("local", [True, False])
def test_dera_matches_enumeration(bounded3, spec, local):
    adaptor = parse(spec)
    strings, log_z = enumerate_strings(bounded3, dera_weights(bounded3, adaptor, local))
    law = closed_forms.local_expectations if local else closed_forms.global_expectations
    result = law(bounded3, adaptor)
    brute = brute_expectations(strings, log_z, log_weight=True)
    if local:
        brute["log_normalizer"] = 0.0
    assert_matches(result, brute, 1e-6, 1e-6)


@pytest.mark.parametrize("lam", [0.25, 0.5, 2.0])
def test_global_dera_is_the_aligned_model_at_beta_over_lambda(trigram2, lam):
    """p+^lambda p^(1-lambda) = p exp(lambda r / beta) / Z^lambda: DeRa's global target is fsa.align(p, r,
    beta / lambda), a different computation (its own backward values and local normalization)."""
    dera = closed_forms.global_expectations(trigram2, parse(f"dera={lam}"))
    realigned = align(trigram2.prior, trigram2.reward, trigram2.beta / lam)
    direct = aligned_expectations(realigned)
    for name in ("mean_log_prior", "mean_reward", "entropy", "mean_length"):
        assert getattr(dera, name) == pytest.approx(getattr(direct, name), rel=1e-9, abs=1e-9), name
    # ... while the locally normalized mixture (what sampling gives) is another law
    local = closed_forms.local_expectations(trigram2, parse(f"dera={lam}"))
    assert abs(local.mean_reward - direct.mean_reward) > 1e-4


def test_dera_one_and_zero_are_the_aligned_model_and_the_prior(bigram2):
    one = closed_forms.local_expectations(bigram2, parse("dera=1.0"))
    zero = closed_forms.local_expectations(bigram2, parse("dera=0.0"))
    assert one.mean_reward == pytest.approx(aligned_expectations(bigram2).mean_reward, abs=1e-12)
    assert one.mean_log_weight == pytest.approx(0.0, abs=1e-12)
    assert zero.mean_log_prior == pytest.approx(prior_expectations(bigram2).mean_log_prior, abs=1e-12)
