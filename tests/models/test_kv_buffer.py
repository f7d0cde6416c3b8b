"""`BufferLayer` (in-place KV cache) against a reference kept by plain concatenation, and HF decoding with it
against decoding with transformers' own `DynamicLayer`.

The reference keeps per row only its real columns (what the attention mask lets through); after every
operation the buffer's live block must hold those columns right-aligned, bit for bit. Padding columns may
hold anything finite (they are masked out), so they are checked for finiteness only.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pqtradeoff.models.decoding import sample_rows
from pqtradeoff.models.kv_buffer import BufferLayer
from pqtradeoff.sampling import adaptors
from pqtradeoff.sampling.sampler import row_keys

from test_continuous_batching import eos_prone

HEADS, DIM = 2, 3


class Reference:
    """Each row's real keys (values are keys + 0.5), as a list of [heads, length, dim] tensors."""

    def __init__(self) -> None:
        self.rows: list[torch.Tensor] = []

    def check(self, layer: BufferLayer) -> None:
        assert layer.keys.shape[0] == len(self.rows)
        width = layer.keys.shape[2]
        assert layer.get_seq_length() == width
        assert torch.isfinite(layer.keys).all() and torch.isfinite(layer.values).all()
        for b, real in enumerate(self.rows):
            n = real.shape[1]
            assert n <= width
            assert torch.equal(layer.keys[b, :, width - n:], real)
            assert torch.equal(layer.values[b, :, width - n:], real + 0.5)


def fresh(rng: np.random.Generator, rows: int, width: int) -> torch.Tensor:
    return torch.from_numpy(rng.standard_normal((rows, HEADS, width, DIM)).astype(np.float32))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), ops=st.lists(st.sampled_from(["step", "keep", "expand", "join",
                                                                    "reserve"]),
                                                     min_size=1, max_size=25))
def test_buffer_layer_matches_concatenation(seed, ops):
    rng = np.random.default_rng(seed)
    layer, ref = BufferLayer(), Reference()
    first = fresh(rng, int(rng.integers(1, 4)), int(rng.integers(1, 6)))
    layer.update(first, first + 0.5)
    ref.rows = list(first)
    ref.check(layer)
    for op in ops:
        n = len(ref.rows)
        if op == "step":  # one new column for every row (sometimes several, as a prefill chunk would)
            new = fresh(rng, n, int(rng.integers(1, 3)))
            keys, values = layer.update(new, new + 0.5)
            assert keys.data_ptr() == layer.keys.data_ptr() and values.shape == keys.shape
            ref.rows = [torch.cat([r, c], dim=1) for r, c in zip(ref.rows, new, strict=True)]
        elif op == "keep" and n > 1:  # finished rows leave; the rest in any order; leading pads dropped
            rows = rng.permutation(n)[: int(rng.integers(1, n + 1))]
            width, longest = layer.get_seq_length(), max(ref.rows[i].shape[1] for i in rows)
            layer.select(torch.from_numpy(rows), width - longest)
            ref.rows = [ref.rows[i] for i in rows]
        elif op == "expand":  # a prompt's state copied to its samples: more rows than before
            rows = rng.integers(0, n, size=int(rng.integers(n + 1, n + 4)))
            layer.select(torch.from_numpy(rows), 0)
            ref.rows = [ref.rows[i] for i in rows]
        elif op == "join":  # newcomers, narrower or wider than the live block
            other = BufferLayer()
            lengths = rng.integers(1, layer.get_seq_length() + 4, size=int(rng.integers(1, 4)))
            block = fresh(rng, len(lengths), int(lengths.max()))
            other.update(block, block + 0.5)
            layer.append(other.keys, other.values)
            ref.rows += [block[b, :, block.shape[2] - int(n_):] for b, n_ in enumerate(lengths)]
        elif op == "reserve":  # room made ahead of joins: the live block unchanged
            layer.reserve(n + int(rng.integers(0, 4)), layer.get_seq_length() + int(rng.integers(0, 4)))
        ref.check(layer)


def test_reserve_lets_joins_write_in_place():
    layer = BufferLayer()
    block = torch.ones(2, HEADS, 3, DIM)
    layer.update(block, block)
    layer.reserve(2 + 3 + 4, 6)  # two joins to come: 3 rows 6 wide, 4 rows 5 wide
    storage = layer.buf_k.data_ptr()
    for rows, width in ((3, 6), (4, 5)):
        more = torch.full((rows, HEADS, width, DIM), 2.0)
        layer.append(more, more)
        assert layer.buf_k.data_ptr() == storage
    assert layer.keys.shape == (9, HEADS, 6, DIM)
    assert torch.equal(layer.keys[:2, :, 3:], block) and bool((layer.keys[:2, :, :3] == 0).all())
    assert bool((layer.keys[2:5] == 2).all()) and bool((layer.keys[5:, :, :1] == 0).all())


def test_keep_copies_only_the_rows_that_move():
    layer = BufferLayer()
    block = torch.arange(5 * HEADS * 4 * DIM, dtype=torch.float32).reshape(5, HEADS, 4, DIM)
    layer.update(block, block)
    storage = layer.buf_k.data_ptr()
    layer.select(torch.tensor([0, 4, 2, 3]), 1)  # row 1 finished: row 4 takes its place
    assert layer.buf_k.data_ptr() == storage  # no new buffer
    assert torch.equal(layer.keys, block[[0, 4, 2, 3], :, 1:])


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("spec", ["ancestral", "temperature=0.7,top_p=0.8"])
def test_hf_decoding_with_buffers_equals_transformers_cache(tiny_hf, arch, spec, monkeypatch):
    """Same prompts, keys and batch: rows with our buffers and with transformers' DynamicLayer agree (tokens
    exactly, scores to float32 rounding: the attention reads the same numbers through other strides)."""
    lm = eos_prone(str(getattr(tiny_hf, arch)))  # strings end at every step: keep and join run
    assert lm.can_join
    a = adaptors.parse(spec)
    words = "hello world tell me a story about the moon please why".split()
    rng = np.random.default_rng(3)
    texts = [" ".join(rng.choice(words, size=int(rng.integers(0, 9)))) for _ in range(10) for _ in range(2)]
    prompts = [lm.encode_prompt(t) for t in texts]
    keys = row_keys(4, np.arange(len(prompts)), np.zeros(len(prompts), dtype=np.int64), a)
    with torch.inference_mode():
        ours = sample_rows(lm, a, prompts, keys, max_new_tokens=9, batch_size=6)
    assert all(type(layer) is BufferLayer for layer in lm._new_cache().layers)
    plain = lm._new_cache
    monkeypatch.setattr(lm, "_new_cache", lambda buffered=True: plain(buffered=False))
    with torch.inference_mode():
        theirs = sample_rows(lm, a, prompts, keys, max_new_tokens=9, batch_size=6)
    assert [r.token_ids for r in ours] == [r.token_ids for r in theirs]
    assert len({len(r.token_ids) for r in ours}) > 2  # rows finished at different steps: keep and join ran
    for name in ("logq", "logp_aligned", "log_weight"):
        np.testing.assert_allclose([getattr(r, name) for r in ours], [getattr(r, name) for r in theirs],
                                   atol=1e-5, rtol=0)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_shared_prefix_prefilled_once_gives_the_same_rows(tiny_hf, arch, monkeypatch):
    """Prompts with a long common beginning (a chat template's system prompt): `start` prefills it once and
    copies it to every row (kept for the next call); rows equal those of the plain prefill."""
    import pqtradeoff.models.hf as hf

    lm = eos_prone(str(getattr(tiny_hf, arch)))
    system = "please tell me a story about the moon why hello world please tell me".split()
    rng = np.random.default_rng(5)
    words = "hello world tell me a story about the moon please why".split()
    texts = [" ".join(system + list(rng.choice(words, size=int(rng.integers(0, 5))))) for _ in range(8)]
    prompts = [lm.encode_prompt(t) for t in texts for _ in range(2)]
    assert lm._shared_prefix(prompts) >= hf.MIN_SHARED_PREFIX
    a = adaptors.parse("temperature=0.9,top_k=5")
    keys = row_keys(6, np.arange(len(prompts)), np.zeros(len(prompts), dtype=np.int64), a)
    with torch.inference_mode():
        shared = sample_rows(lm, a, prompts, keys, max_new_tokens=8, batch_size=5)
        kept = lm._prefix[0]  # the last refill's common prefix, kept for the next call
        assert len(kept) >= hf.MIN_SHARED_PREFIX and all(tuple(p[: len(kept)]) == kept for p in prompts)
        monkeypatch.setattr(hf, "MIN_SHARED_PREFIX", 10**9)
        assert lm._shared_prefix(prompts) == 0
        plain = sample_rows(lm, a, prompts, keys, max_new_tokens=8, batch_size=5)
    assert [r.token_ids for r in shared] == [r.token_ids for r in plain]
    assert len({len(r.token_ids) for r in shared}) > 1  # rows ended at different steps: refills ran
    for name in ("logq", "logp_aligned", "log_weight"):
        np.testing.assert_allclose([getattr(r, name) for r in shared], [getattr(r, name) for r in plain],
                                   atol=1e-5, rtol=0)
