"""Continuous batching (`sample_rows`) gives each row exactly what `sample_batch` gives it alone.

On the bigram model (logits independent of the batch: rows must be identical) and on tiny Llama and GPT-2
checkpoints (KV caches joined with left padding, trimmed as rows finish: same tokens, scores to float
rounding), with strings cut by max_new_tokens and strings ending at their first step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pqtradeoff.errors import PQError
from pqtradeoff.models.decoding import choose_batch_size, sample_batch, sample_rows
from pqtradeoff.models.hf import HFModel, kv_cache_bytes
from pqtradeoff.pipeline.generate import PromptRecord, generate_corpus
from pqtradeoff.sampling import adaptors
from pqtradeoff.sampling.sampler import row_keys, step_uniforms

from bigram import BigramModel

SPECS = ["ancestral", "temperature=0.7,top_k=3", "temperature=1.3,top_p=0.8"]


def one_at_a_time(model, adaptor, prompts, keys, max_new_tokens):
    return [
        sample_batch(model, adaptor, [p], keys[i : i + 1], max_new_tokens)[0] for i, p in enumerate(prompts)
    ]


def assert_same_rows(got, want, atol):
    assert [r.token_ids for r in got] == [r.token_ids for r in want]
    assert [r.finished for r in got] == [r.finished for r in want]
    for name in ("logq", "logp_aligned", "log_weight"):
        np.testing.assert_allclose(
            [getattr(r, name) for r in got], [getattr(r, name) for r in want], atol=atol, rtol=0
        )
    for name in ("token_logq", "token_logp_aligned", "token_log_z"):
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(getattr(g, name), getattr(w, name), atol=atol, rtol=0)


def assert_cases_covered(rows, max_new_tokens):
    """The test is only meaningful if rows ended at their first step, by EOS later, and by the length cap."""
    lengths = [len(r.token_ids) for r in rows]
    assert any(r.finished and len(r.token_ids) == 1 for r in rows), lengths
    assert any(r.finished and 1 < len(r.token_ids) for r in rows), lengths
    assert any(not r.finished and len(r.token_ids) == max_new_tokens for r in rows), lengths


def test_start_distinct_prefills_each_prompt_once():
    from pqtradeoff.models.decoding import start_distinct

    model = BigramModel(vocab_size=6, seed=3)
    calls = []
    start = model.start
    model.start = lambda prompts: calls.append(prompts) or start(prompts)
    prompts = [[5, 1], [5, 1], [5, 2], [5, 1]]
    logits, state = start_distinct(model, prompts)
    assert calls == [[[5, 1], [5, 2]]]
    want_logits, want_state = start(prompts)
    assert torch.equal(logits, want_logits) and torch.equal(state, want_state)


def test_step_uniforms_per_row_steps_equal_scalar_steps():
    keys = row_keys(1, np.arange(6), np.arange(6) % 2, "temperature=1.0")
    steps = np.array([0, 3, 1, 0, 7, 2])
    want = [step_uniforms(keys[i : i + 1], int(s))[0] for i, s in enumerate(steps)]
    assert step_uniforms(keys, steps).tolist() == want


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("batch_size", [1, 2, 5, 64])
def test_bigram_rows_are_identical_to_one_at_a_time(spec, batch_size):
    model = BigramModel(vocab_size=6, seed=3, eos_bias=-1.0)
    a = adaptors.parse(spec)
    rng = np.random.default_rng(0)
    prompts = [[model.bos] + rng.integers(1, 5, size=int(rng.integers(0, 4))).tolist() for _ in range(20)]
    prompts = [p for p in prompts for _ in range(2)]  # repeated prompts, as in a corpus
    keys = row_keys(5, np.arange(40), np.zeros(40, dtype=np.int64), a)
    got = sample_rows(model, a, prompts, keys, max_new_tokens=5, batch_size=batch_size)
    want = one_at_a_time(model, a, prompts, keys, 5)
    assert_same_rows(got, want, atol=0)
    assert_cases_covered(want, 5)


def test_a_model_that_cannot_join_is_sampled_batch_after_batch():
    model = BigramModel(vocab_size=6, seed=3, eos_bias=-1.0)
    model.can_join = False
    model.join = None  # would fail if called
    a = adaptors.parse("temperature=0.7,top_k=3")
    prompts = [[model.bos, 1 + i % 4] for i in range(11)]
    keys = row_keys(2, np.arange(11), np.zeros(11, dtype=np.int64), a)
    assert_same_rows(
        sample_rows(model, a, prompts, keys, 6, batch_size=4),
        one_at_a_time(model, a, prompts, keys, 6),
        atol=0,
    )


def eos_prone(path: str) -> HFModel:
    """A tiny checkpoint whose EOS logit is large in some contexts, so that strings end at all steps."""
    lm = HFModel(path, device="cpu")
    head = lm.model.get_output_embeddings().weight
    with torch.no_grad():
        head[lm.eos_token_id] = head[lm.eos_token_id] * 4 + head[:, :].mean(0)
    return lm


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny_lm(request, tiny_hf) -> HFModel:
    return eos_prone(str(getattr(tiny_hf, request.param)))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("spec", SPECS)
def test_hf_rows_are_the_same_as_one_at_a_time(tiny_lm, spec):
    assert tiny_lm.can_join
    a = adaptors.parse(spec)
    words = "hello world tell me a story about the moon please why".split()
    rng = np.random.default_rng(1)
    texts = [" ".join(rng.choice(words, size=int(rng.integers(0, 9)))) for _ in range(12)]
    texts = [t for t in texts for _ in range(2)]  # each prompt twice in a row, as in a corpus: prefilled once
    prompts = [tiny_lm.encode_prompt(t) for t in texts]
    keys = row_keys(9, np.arange(24), np.zeros(24, dtype=np.int64), a)
    want = one_at_a_time(tiny_lm, a, prompts, keys, 7)
    assert_cases_covered(want, 7)
    for batch_size in (3, 8):
        with torch.inference_mode():
            got = sample_rows(tiny_lm, a, prompts, keys, max_new_tokens=7, batch_size=batch_size)
        assert_same_rows(got, want, atol=1e-5)


@pytest.mark.usefixtures("one_thread")
def test_prefill_in_length_groups_gives_the_same_rows(tiny_lm, monkeypatch):
    """Prompts of many lengths prefilled in groups of similar length (joined, then put back in order): the
    same tokens and scores as one at a time."""
    from pqtradeoff.models import hf

    monkeypatch.setitem(hf.PREFILL_GROUP_TOKENS, "cpu", 6)
    a = adaptors.parse("temperature=1.3,top_p=0.8")
    words = "hello world tell me a story about the moon please why".split()
    rng = np.random.default_rng(4)
    texts = [" ".join(rng.choice(words, size=int(rng.integers(0, 12)))) for _ in range(16)]
    prompts = [tiny_lm.encode_prompt(t) for t in texts]
    shared = tiny_lm._shared_prefix(prompts)
    assert len(hf.length_groups([len(p) - shared for p in prompts], 6)) > 2
    keys = row_keys(3, np.arange(16), np.zeros(16, dtype=np.int64), a)
    want = one_at_a_time(tiny_lm, a, prompts, keys, 6)
    with torch.inference_mode():
        got = sample_rows(tiny_lm, a, prompts, keys, max_new_tokens=6, batch_size=16)
    assert_same_rows(got, want, atol=1e-5)


# ------------------------------------------------------------------------------------------ batch size
def test_choose_batch_size_fits_the_budget(tiny_hf):
    lm = HFModel(str(tiny_hf.llama), device="cpu")
    config = lm.model.config
    per_token = (
        config.num_hidden_layers
        * config.num_key_value_heads
        * (config.hidden_size // config.num_attention_heads)
        * 2
        * 4
    )
    assert kv_cache_bytes(config, 10, torch.float32) == 10 * per_token
    assert lm.state_bytes(10) == 10 * per_token
    per_row = 5 * 40 * per_token // 2 + 24 * lm.vocab_size
    assert choose_batch_size(lm, 40, memory_bytes=7 * per_row) == 7
    assert choose_batch_size(lm, 40, memory_bytes=7 * per_row - 1) == 6
    assert choose_batch_size(lm, 40, memory_bytes=1) == 1
    assert choose_batch_size(lm, 40, memory_bytes=10**12, max_rows=99) == 99
    with pytest.raises(PQError, match="max_length"):
        choose_batch_size(lm, 0)
    with pytest.raises(PQError, match="memory_bytes"):
        choose_batch_size(lm, 10, memory_bytes=0)


def test_generate_corpus_without_batch_size_chooses_per_shard(tmp_path):
    """batch_size=None: each shard is sampled with the batch chosen for its own longest prompt, so its bytes
    equal an explicit run with that batch (and do not depend on other shards' prompts)."""
    import json

    model = BigramModel(seed=2)
    prompts = [PromptRecord(0, "", model.encode_prompt("")), PromptRecord(1, "w1", model.encode_prompt("w1"))]
    common = dict(num_generations=3, max_new_tokens=4, seed=1, settings={}, progress=False, prompt_block=1)
    auto = generate_corpus(
        model, prompts, [adaptors.parse("ancestral")], batch_size=None, out_dir=tmp_path / "a", **common
    ).out_dir
    assert json.loads((auto / "_run.json").read_text())["settings"]["batch_size"] is None
    for p in prompts:  # one shard per prompt block here: explicit batch = the one chosen for that shard
        chosen = choose_batch_size(model, len(p.token_ids) + 4)
        explicit = generate_corpus(
            model,
            [p],
            [adaptors.parse("ancestral")],
            batch_size=chosen,
            out_dir=tmp_path / f"e{p.prompt_id}",
            **common,
        ).out_dir
        for f in explicit.glob("*.parquet"):
            assert f.read_bytes() == (auto / f.name).read_bytes()


@pytest.mark.usefixtures("one_thread")
def test_hf_rows_under_a_mix_of_adaptors_are_each_rows_own(tiny_lm):
    """A batch mixing adaptors (a packed grid) samples each row by its own adaptor: each row is the row
    `sample_batch` gives it alone under that adaptor (same tokens, scores to float rounding)."""
    grid = [adaptors.parse(s) for s in [*SPECS, "typical_p=0.8", "min_p=0.1"]]
    words = "hello world tell me a story about the moon please why".split()
    rng = np.random.default_rng(3)
    texts = [" ".join(rng.choice(words, size=int(rng.integers(0, 9)))) for _ in range(6)]
    rows = [(t, a) for t in texts for a in grid]  # each prompt under every adaptor, as generate packs them
    prompts = [tiny_lm.encode_prompt(t) for t, _ in rows]
    keys = np.array([row_keys(5, np.array([i]), np.zeros(1, dtype=np.int64), a)[0]
                     for i, (_, a) in enumerate(rows)], dtype=np.uint64)
    want = [sample_batch(tiny_lm, a, [p], keys[i:i + 1], 7)[0] for i, (p, (_, a)) in enumerate(
        zip(prompts, rows, strict=True))]
    assert_cases_covered(want, 7)
    with torch.inference_mode():
        got = sample_rows(tiny_lm, [a for _, a in rows], prompts, keys, max_new_tokens=7, batch_size=8)
    assert_same_rows(got, want, atol=1e-5)


def test_one_adaptor_per_row_or_one_for_all():
    model = BigramModel(vocab_size=6, seed=3)
    a = adaptors.parse("top_k=2")
    with pytest.raises(PQError, match="adaptors has 2 entries for 3 rows"):
        sample_rows(model, [a, a], [[model.bos]] * 3, np.arange(3, dtype=np.uint64), 4, batch_size=2)
