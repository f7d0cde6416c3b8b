"""Finite-state LMs: the model interface, the builders (against naive counting), the reward, the exact
aligned model, and one-line errors for bad input."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pqtradeoff.errors import PQError
from pqtradeoff.models import automata
from pqtradeoff.models.fsa import (
    EOS,
    FiniteStateLM,
    TransitionReward,
    align,
    estimate_ngram,
    ngram_states,
    random_ngram,
)
from pqtradeoff.sampling.adaptors import parse

from automata_helpers import aligned_expectations, identity_residual, prior_expectations, sample


def random_alignment(seed: int, order: int = 2, n_words: int = 4, beta: float = 1.0):
    prior = random_ngram(n_words, order, seed=seed, eos_prob=0.25)
    rng = np.random.default_rng(seed)
    # phi <= 0.1 and beta >= 0.5 keep every row's word weight below 0.75 e^0.2 < 1: Z is finite
    return align(prior, TransitionReward(prior, rng.uniform(-0.6, 0.1, prior.log_probs.shape)), beta)


@pytest.fixture(scope="module")
def al():
    return random_alignment(0, order=2, n_words=4)


# ----------------------------------------------------------------------------------------- interface
def test_start_logits_are_the_float64_log_probabilities(al):
    logits, state = al.prior.start([[], [1, 2]])
    assert logits.dtype == torch.float64 and logits.shape == (2, al.prior.vocab_size)
    assert torch.equal(logits[0], torch.tensor(al.prior.log_probs[al.prior.start_state]))
    assert torch.equal(logits[1], torch.tensor(al.prior.log_probs[al.prior.state_after([1, 2])]))
    assert torch.allclose(torch.logsumexp(logits, -1), torch.zeros(2, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("spec", ["ancestral", "temperature=0.5", "top_k=2", "top_p=0.9", "min_p=0.2",
                                  "typical_p=0.9", "epsilon_cutoff=0.05", "eta_cutoff=0.0009",
                                  "temperature=1.5,top_k=3,top_p=0.95"])
def test_float64_logits_go_through_the_adaptors_like_float32_ones(al, spec):
    """transformers' warpers on the automata's float64 logits: the same kept support as on float32 logits
    (no logit of this model sits on a truncation boundary), float64 results, equal up to float32 rounding."""
    logits = torch.tensor(al.aligned.log_probs)
    wide, narrow = parse(spec).adapt(logits), parse(spec).adapt(logits.float())
    assert wide.log_probs.dtype == wide.log_weights.dtype == wide.log_z.dtype == torch.float64
    assert torch.equal(torch.isfinite(wide.log_probs), torch.isfinite(narrow.log_probs))
    kept = torch.isfinite(wide.log_probs)
    assert torch.allclose(wide.log_probs[kept], narrow.log_probs[kept].double(), atol=1e-5)
    assert torch.allclose(wide.log_z, narrow.log_z.double(), atol=1e-5)
    # float64 end to end: the kept distribution is the model's own, renormalized, to float64 rounding
    expected = torch.log_softmax(torch.where(kept, logits / parse(spec).temperature, -torch.inf), -1)
    assert torch.allclose(wide.log_probs[kept], expected[kept], atol=1e-12, rtol=0)


def test_impossible_tokens_get_minus_infinity():
    with np.errstate(divide="ignore"):
        log_probs = np.log([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    prior = FiniteStateLM(["a", "b"], np.array([[1, 0, -1], [1, 1, -1]]), log_probs)
    logits, _ = prior.start([[]])
    assert logits[0, 0] == 0 and torch.isinf(logits[0, 1:]).all() and (logits[0, 1:] < 0).all()


@pytest.mark.parametrize("model_name", ["prior", "aligned"])
def test_continuation_logits_agree_with_start_and_step(al, model_name):
    model = getattr(al, model_name)
    rng = np.random.default_rng(1)
    prompts = [[], [0], [3, 1, 2], []]
    conts = [list(rng.integers(0, 4, size=n)) + [model.eos_token_id] for n in (3, 0, 5)] + [[2, 2]]
    forced = model.continuation_logits(prompts, conts)
    assert forced.shape == (4, 6, model.vocab_size) and forced.dtype == torch.float64
    for b, (p, c) in enumerate(zip(prompts, conts, strict=True)):
        logits, state = model.start([p])
        for t, tok in enumerate(c):
            assert torch.equal(forced[b, t], logits[0])
            logits, state = model.step(state, torch.tensor([tok]))
    # a row's logits do not depend on the batch's other rows
    alone = model.continuation_logits([prompts[2]], [conts[2]])
    assert torch.equal(alone[0], forced[2])


def test_step_after_eos_allows_only_eos_and_keep_selects_rows(al):
    model = al.prior
    logits, state = model.start([[], [], [1]])
    logits, state = model.step(state, torch.tensor([model.eos_token_id, 0, 1]))
    assert logits[0, model.eos_token_id] == 0 and torch.isinf(logits[0, :-1]).all()
    kept = model.keep(state, torch.tensor([2, 1]))
    assert kept.tolist() == [state[2].item(), state[1].item()]
    with pytest.raises(PQError, match="token ids"):
        model.step(state, torch.tensor([0, 0, model.vocab_size]))


def test_log_prob_is_the_sum_of_teacher_forced_log_probabilities(al):
    ids = [1, 3, 0, 0, al.aligned.eos_token_id]
    logits = al.aligned.continuation_logits([[2]], [ids])[0].double()
    summed = torch.log_softmax(logits, -1)[torch.arange(len(ids)), torch.tensor(ids)].sum().item()
    assert al.aligned.log_prob(ids, [2]) == pytest.approx(summed, abs=1e-5)
    with pytest.raises(PQError, match="after EOS"):
        al.aligned.log_prob([al.aligned.eos_token_id, 1])


def test_tokenization_round_trip_and_keys(al):
    text = "w1 w3 w0"
    ids = al.prior.encode_continuation(text)
    assert ids == [1, 3, 0]
    assert al.prior.decode(ids + [al.prior.eos_token_id]) == text
    assert al.prior.encode_prompt("") == [] == al.prior.empty_context()
    assert al.prior.tokenizer_key == al.aligned.tokenizer_key
    assert random_ngram(4, 2, seed=0, words=["a", "b", "c", "d"]).tokenizer_key != al.prior.tokenizer_key
    with pytest.raises(PQError, match="'zz'"):
        al.prior.encode_prompt("w1 zz")


# ----------------------------------------------------------------------------------------- builders
def test_ngram_states_count_and_transitions():
    next_state, contexts = ngram_states(3, 3)
    assert len(contexts) == 1 + 3 + 9
    index = {c: i for i, c in enumerate(contexts)}
    for c, row in zip(contexts, next_state, strict=True):
        for v in range(3):
            assert contexts[row[v]] == (c + (v,))[1:]
    assert index[(-1, -1)] == 0


def naive_ngram(lines: list[str], order: int, k: float, vocab: list[str]):
    """p(v | context) from a plain dictionary of counts, the textbook way."""
    counts: dict[tuple, Counter] = {}
    for line in lines:
        toks = ["<s>"] * (order - 1) + line.split() + [EOS]
        for i in range(order - 1, len(toks)):
            counts.setdefault(tuple(toks[i - order + 1:i]), Counter())[toks[i]] += 1
    symbols = vocab + [EOS]

    def prob(context: tuple, v: str) -> float:
        c = counts.get(context, Counter())
        return (c[v] + k) / (sum(c.values()) + k * len(symbols))
    return prob


@pytest.mark.parametrize("order", [1, 2, 3])
def test_estimate_ngram_matches_naive_counts(tmp_path, order):
    lines = ["the cat sat", "the dog sat down", "", "a cat ran", "the cat sat"]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n")
    model = estimate_ngram(path, order, k=0.5)
    prob = naive_ngram([ln for ln in lines if ln], order, 0.5, list(model.words))
    # by frequency, ties alphabetically
    assert model.words == ("cat", "sat", "the", "a", "dog", "down", "ran")
    symbols = list(model.words) + [EOS]
    for name, row in zip(model.state_names, model.probs, strict=True):
        context = tuple(name.split()) if order > 1 else ()
        for v, sym in enumerate(symbols):
            assert row[v] == pytest.approx(prob(context, sym), rel=1e-12)
    # a whole string's probability through the interface
    ids = model.encode_continuation("the cat ran") + [model.eos_token_id]
    direct = sum(math.log(prob(tuple((["<s>"] * (order - 1) + ["the", "cat", "ran"])[i:i + order - 1]), s))
                 for i, s in enumerate(["the", "cat", "ran", EOS]))
    assert model.log_prob(ids) == pytest.approx(direct, rel=1e-12)


def test_estimate_ngram_max_vocab_maps_rare_words_to_unk(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a a a b b c d\na b e\n")
    model = estimate_ngram(path, 1, k=1.0, max_vocab=3)
    assert model.words == ("a", "b", "<unk>")
    prob = naive_ngram(["a a a b b <unk> <unk>", "a b <unk>"], 1, 1.0, ["a", "b", "<unk>"])
    assert model.probs[0, 2] == pytest.approx(prob((), "<unk>"))


def test_random_ngram_shape_eos_and_determinism():
    a = random_ngram(5, 2, seed=3, eos_prob=0.3)
    b = random_ngram(5, 2, seed=3, eos_prob=0.3)
    assert np.array_equal(a.log_probs, b.log_probs)
    assert a.probs[0, a.eos_token_id] == 0  # no empty string by default
    assert np.allclose(a.probs[1:, a.eos_token_id], 0.3)
    assert prior_expectations(align(a, TransitionReward(a, np.zeros(a.log_probs.shape)), 1.0)).mean_length \
        == pytest.approx(1 + 1 / 0.3)


# ----------------------------------------------------------------------------------------- reward & alignment
def test_reward_from_lexicon_and_dataframe_protocol(al):
    reward = TransitionReward.from_lexicon(al.prior, {"w0": 1.0, "w2": -0.5}, eos_value=0.25)
    ids = [0, 2, 1, 0, al.prior.eos_token_id]
    assert reward.score(ids) == pytest.approx(1.0 - 0.5 + 0 + 1.0 + 0.25)
    batch = pd.DataFrame({"prompt_token_ids": [[], [3]], "token_ids": [ids, [2]]})
    assert reward(batch).tolist() == pytest.approx([1.75, -0.5])
    with pytest.raises(PQError, match="'nope'"):
        TransitionReward.from_lexicon(al.prior, {"nope": 1.0})


def test_aligned_model_is_exact_for_every_short_string(al):
    """p+(y) = p(y) exp(r(y)/beta) / Z on all strings of up to 4 words, Z from a brute-force power series."""
    prior, reward = al.prior, al.reward
    w = prior.probs * np.exp(reward.phi / al.beta)
    with np.errstate(divide="ignore"):
        q = automata.transition_matrix(prior.as_weighted(np.log(w)))
    z_series = np.zeros(prior.n_states)
    term = w[:, prior.eos_token_id].copy()
    for _ in range(400):  # b = sum_k Q^k c
        z_series += term
        term = q @ term
    assert al.log_z == pytest.approx(math.log(z_series[prior.start_state]), rel=1e-10)
    import itertools
    for n in range(5):
        for words in itertools.product(range(4), repeat=n):
            ids = list(words) + [prior.eos_token_id]
            assert abs(identity_residual(al, ids)) < 1e-10
            assert abs(identity_residual(al, ids[:-1])) < 1e-10  # unfinished prefixes too
    assert prior.log_prob([prior.eos_token_id]) == -math.inf  # the empty string is impossible ...
    assert identity_residual(al, [prior.eos_token_id]) == 0.0  # ... and the identity reads -inf = -inf


def test_align_rejects_diverging_rewards_and_bad_beta(al):
    big = TransitionReward(al.prior, np.full(al.prior.log_probs.shape, 3.0))
    with pytest.raises(PQError, match="diverges"):
        align(al.prior, big, 1.0)
    assert align(al.prior, big, 20.0).log_z > 0  # a larger beta tames it
    for beta in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(PQError, match="beta="):
            align(al.prior, al.reward, beta)
    other = random_ngram(4, 1, seed=0)
    with pytest.raises(PQError, match="another automaton"):
        align(other, al.reward, 1.0)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), order=st.integers(1, 3), n_words=st.integers(2, 4),
       beta=st.floats(0.5, 4.0))
def test_identity_on_sampled_strings(seed, order, n_words, beta):
    """For random automata: p+ rows are distributions, and the identity holds on samples from p+ and p."""
    a = random_alignment(seed, order, n_words, beta)
    assert np.allclose(a.aligned.probs.sum(axis=1), 1.0, atol=1e-12)
    for y in sample(a.aligned, 30, seed=seed) + sample(a.prior, 30, seed=seed + 1):
        assert abs(identity_residual(a, y)) < 1e-9
    e = aligned_expectations(a)
    assert e.mean_log_prior + e.mean_reward / beta == pytest.approx(e.mean_log_aligned + a.log_z, abs=1e-9)


# ----------------------------------------------------------------------------------------- bad input
def one_line_error(fn, *args, match: str, **kwargs):
    with pytest.raises(PQError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)


def test_bad_builder_inputs(tmp_path):
    one_line_error(random_ngram, 1, 2, match="vocabulary size")
    one_line_error(random_ngram, 3, 0, match="order=0")
    one_line_error(random_ngram, 3, 2, eos_prob=1.0, match="eos_prob=1.0")
    one_line_error(random_ngram, 3, 2, alpha=-1.0, match="alpha=-1.0")
    one_line_error(random_ngram, 200, 3, match="states")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n")
    one_line_error(estimate_ngram, empty, match="no usable tokens")
    single = tmp_path / "single.txt"
    single.write_text("hello hello\nhello\n")
    one_line_error(estimate_ngram, single, match="vocabulary size 1")
    one_line_error(estimate_ngram, tmp_path / "missing.txt", match="does not exist")
    one_line_error(estimate_ngram, single, 0, match="order=0")
    one_line_error(estimate_ngram, single, k=0.0, match="k=0.0")


def test_bad_automata():
    nxt = np.array([[0, 0, -1]])
    one_line_error(FiniteStateLM, ["a", "b"], nxt, np.array([[math.log(0.5), math.log(0.5), -np.inf]]),
                   match="does not terminate")
    one_line_error(FiniteStateLM, ["a", "b"], nxt, np.log([[0.5, 0.4, 0.3]]), match="sums to probability")
    one_line_error(FiniteStateLM, ["a", "a"], nxt, np.log([[0.4, 0.4, 0.2]]), match="appears twice")
    one_line_error(FiniteStateLM, ["a"], np.array([[0, -1]]), np.log([[0.5, 0.5]]), match="vocabulary size 1")
    one_line_error(FiniteStateLM, ["a", "b c"], nxt, np.log([[0.4, 0.4, 0.2]]), match="'b c'")
    one_line_error(FiniteStateLM, ["a", "b"], np.array([[0, 5, -1]]), np.log([[0.4, 0.4, 0.2]]),
                   match="next_state")
    model = FiniteStateLM(["a", "b"], nxt, np.log([[0.4, 0.4, 0.2]]))
    one_line_error(model.state_after, [model.eos_token_id], match="EOS")
    one_line_error(model.decode, [7], match="token id 7")
    one_line_error(TransitionReward, model, np.zeros((2, 3)), match="phi has shape")
    one_line_error(TransitionReward, model, np.array([[0.0, np.inf, 0.0]]), match="non-finite")



def _walked_sum(lm, table, prompt, ids):
    """The row-by-row reference: `path_states`'s walk, then np.sum of the path's terms."""
    return float(np.sum(table[lm.path_states(ids, prompt), np.asarray(ids, dtype=np.int64)]))


@pytest.mark.parametrize("order", [1, 2, 3])
def test_path_sums_equal_one_path_at_a_time(al, order):
    """`path_sums` (every path in lockstep) equals the walk of each path alone, bit for bit, on random
    continuations of random lengths (empty, ending in EOS or not) after several prompts, as lists or arrays;
    bad ids and tokens after EOS give `path_states`'s errors."""
    lm = random_alignment(order, order=order, n_words=5).prior
    rng = np.random.default_rng(order)
    table = rng.normal(size=lm.log_probs.shape)
    words = lm.vocab_size - 1
    prompts, rows = [], []
    for k in range(300):
        ids = rng.integers(0, words, size=int(rng.integers(0, 40))).tolist()
        if rng.random() < 0.6:
            ids.append(lm.eos_token_id)
        prompts.append([] if k % 3 else rng.integers(0, words, size=2).tolist())
        rows.append(np.array(ids, dtype=np.int64) if k % 2 else ids)
    got = lm.path_sums(table, prompts, rows)
    want = [_walked_sum(lm, table, p, list(map(int, c))) for p, c in zip(prompts, rows, strict=True)]
    assert got.tolist() == want
    with pytest.raises(PQError, match="out of range"):
        lm.path_sums(table, [[], []], [[0], [words + 1]])
    with pytest.raises(PQError, match=r"tokens after EOS \(position 1 of 3\)"):
        lm.path_sums(table, [[], []], [[0, 1], [2, lm.eos_token_id, 0]])
