"""The model-agnostic generate stage, on a tiny bigram model: records, sampling law, keys, resume."""

from __future__ import annotations

import collections
import math

import numpy as np
import pandas as pd
import pytest
import torch
from transformers.generation.logits_process import LogitsProcessorList

from pqtradeoff.errors import PQError
from pqtradeoff.pipeline.generate import PromptRecord, adaptor_slug, generate_corpus
from pqtradeoff.sampling import adaptors
from pqtradeoff.sampling.sampler import row_keys, sample_inverse_cdf, step_uniforms

from bigram import BigramModel

SPECS = ["ancestral", "temperature=0.5", "top_k=2", "temperature=1.5,top_p=0.8", "typical_p=0.9", "min_p=0.2"]


def _prompts(model: BigramModel, n: int = 3) -> list[PromptRecord]:
    texts = ["", "w1", "w2 w3", "w3"][:n]
    return [PromptRecord(i, t, model.encode_prompt(t)) for i, t in enumerate(texts)]


def _generate(tmp_path, model, specs=SPECS, **kw):
    args = dict(num_generations=4, max_new_tokens=6, seed=7, batch_size=3, settings={"model": "bigram"},
                progress=False, prompt_block=2)
    args |= kw
    result = generate_corpus(model, _prompts(model), [adaptors.parse(s) for s in specs], out_dir=tmp_path,
                             **args)
    return pd.read_parquet(result.out_dir)


def test_recorded_scores_equal_teacher_forced_transformers_processors(tmp_path):
    model = BigramModel(seed=1)
    df = _generate(tmp_path / "c", model)
    assert len(df) == len(SPECS) * 3 * 4
    for row in df.itertuples():
        a = adaptors.parse(row.adaptor)
        procs = LogitsProcessorList(a.processors())
        ids = list(row.token_ids)
        logits = model.continuation_logits([list(row.prompt_token_ids)], [ids])[0]
        logq = logp = logw = 0.0
        for t, tok in enumerate(ids):
            processed = procs(None, logits[t:t + 1].clone())
            logq += torch.log_softmax(processed, -1)[0, tok].item()
            base = torch.log_softmax(logits[t], -1)
            logp += base[tok].item()
            kept = torch.isfinite(processed[0])
            logw += torch.logsumexp(base[kept] / a.temperature, 0).item()
        assert row.logq == pytest.approx(logq, abs=1e-4)
        assert row.logp_aligned == pytest.approx(logp, abs=1e-4)
        assert row.log_weight == pytest.approx(logw, abs=1e-4)
        assert row.finished == (ids[-1] == model.eos_token_id)
        assert row.finished or len(ids) == 6
        assert model.eos_token_id not in ids[:-1]


def test_sampling_law_matches_logq():
    """Inverse-CDF sampling draws each string with probability exp(logq): compare frequencies, many draws."""
    model = BigramModel(vocab_size=4, seed=3, eos_bias=1.0)
    a = adaptors.parse("temperature=0.8,top_k=3")
    n = 20000
    from pqtradeoff.models.decoding import sample_batch
    from pqtradeoff.sampling.sampler import row_keys

    keys = row_keys(0, np.zeros(n, dtype=np.int64), np.arange(n), a)
    rows = sample_batch(model, a, [[model.bos]] * n, keys, max_new_tokens=2)
    counts = collections.Counter(tuple(r.token_ids) for r in rows)
    logq = {tuple(r.token_ids): r.logq for r in rows}
    for seq, c in counts.items():
        p = math.exp(logq[seq])
        assert abs(c / n - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-3
    assert sum(math.exp(v) for v in logq.values()) == pytest.approx(1.0, abs=1e-5)


def test_inverse_cdf_never_picks_outside_support():
    logp = torch.log(torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0]]).repeat(1000, 1))
    u = torch.linspace(0, 1 - 1e-12, 1000, dtype=torch.float64)
    tokens = sample_inverse_cdf(logp, u)
    assert set(tokens.tolist()) == {1, 3}


def test_rows_do_not_depend_on_batch_size(tmp_path):
    model = BigramModel(seed=2)
    a = _generate(tmp_path / "b1", model, batch_size=1)
    b = _generate(tmp_path / "b7", model, batch_size=7)
    assert a["token_ids"].map(tuple).tolist() == b["token_ids"].map(tuple).tolist()
    np.testing.assert_allclose(a["logq"], b["logq"], atol=1e-9)


def test_step_uniforms_are_uniform_and_independent():
    """The counter-based stream: uniform marginals (KS), no correlation between rows or between steps."""
    from scipy import stats

    from pqtradeoff.sampling.sampler import row_keys, step_uniforms

    keys = row_keys(3, np.arange(20000) // 7, np.arange(20000) % 7, "temperature=1.0")
    u0, u1 = step_uniforms(keys, 0), step_uniforms(keys, 1)
    assert stats.kstest(u0, "uniform").pvalue > 1e-3 and stats.kstest(u1, "uniform").pvalue > 1e-3
    assert abs(np.corrcoef(u0, u1)[0, 1]) < 0.03
    assert abs(np.corrcoef(u0[:-1], u0[1:])[0, 1]) < 0.03
    assert len(np.unique(keys)) == len(keys)


def row_uniforms(seed: int, prompt_id: int, sample_id: int, adaptor: str, n: int) -> np.ndarray:
    """The first `n` uniforms of one row's stream."""
    key = row_keys(seed, np.array([prompt_id]), np.array([sample_id]), adaptor)
    return np.array([step_uniforms(key, t)[0] for t in range(n)])


def test_keys_are_stable_and_distinct():
    u1 = row_uniforms(7, 0, 0, "temperature=1.0", 5)
    assert np.array_equal(u1, row_uniforms(7, 0, 0, "temperature=1.0", 5))
    for other in [(8, 0, 0, "temperature=1.0"), (7, 1, 0, "temperature=1.0"), (7, 0, 1, "temperature=1.0"),
                  (7, 0, 0, "temperature=0.5")]:
        assert not np.array_equal(u1, row_uniforms(*other, 5))
    assert "=" not in adaptor_slug(adaptors.parse("temperature=0.75,top_p=0.95"))


def test_resume_after_losing_shards_is_byte_identical(tmp_path):
    model = BigramModel(seed=4)
    _generate(tmp_path / "full", model)
    _generate(tmp_path / "part", model)
    shards = sorted((tmp_path / "part").glob("*.parquet"))
    assert len(shards) > 3
    for s in shards[1::2]:  # as if killed: some shards never written
        s.unlink()
    _generate(tmp_path / "part", model)
    for s in sorted((tmp_path / "full").glob("*.parquet")):
        assert s.read_bytes() == (tmp_path / "part" / s.name).read_bytes()


def test_resume_with_other_settings_is_refused(tmp_path):
    model = BigramModel(seed=4)
    _generate(tmp_path / "c", model)
    with pytest.raises(PQError, match="seed: 7 -> 8") as err:
        _generate(tmp_path / "c", model, seed=8)
    assert "max_new_tokens" not in str(err.value)  # only the settings that differ are named


@pytest.mark.parametrize("kw, field", [({"num_generations": 0}, "num_generations"),
                                       ({"max_new_tokens": 0}, "max_new_tokens"),
                                       ({"seed": -1}, "seed"), ({"batch_size": 0}, "batch_size")])
def test_bad_settings(tmp_path, kw, field):
    with pytest.raises(PQError, match=field):
        _generate(tmp_path / "c", BigramModel(), **kw)


def test_prompt_longer_than_context(tmp_path):
    model = BigramModel()
    model.max_length = 4
    with pytest.raises(PQError, match="context of 4 tokens"):
        _generate(tmp_path / "c", model)


def test_token_logprob_columns(tmp_path):
    df = _generate(tmp_path / "c", BigramModel(seed=5), specs=["top_k=3"], save_token_logprobs=True)
    for row in df.itertuples():
        assert len(row.token_logq) == len(row.token_ids)
        assert sum(row.token_logq) == pytest.approx(row.logq)
        assert sum(row.token_log_z) == pytest.approx(row.log_weight)


def test_every_end_id_finishes_a_string(tmp_path):
    model = BigramModel(seed=4)
    model.eos_token_ids = (0, 3)
    df = _generate(tmp_path / "c", model, specs=["ancestral"], max_new_tokens=12)
    for ids, fin in zip(df["token_ids"], df["finished"], strict=True):
        assert not {0, 3} & set(ids[:-1])
        assert fin == (ids[-1] in (0, 3))
    assert (df["token_ids"].map(lambda ids: ids[-1]) == 3).any()


def test_nan_logits_are_an_error_not_a_token(tmp_path):
    model = BigramModel(seed=4)
    model.table[model.bos, 2] = float("nan")
    with pytest.raises(PQError, match="NaN or infinite logits"):
        _generate(tmp_path / "c", model, specs=["ancestral"])


def _shards(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.parquet"))}


@pytest.mark.parametrize("grow", [
    {"specs": SPECS[:3]},  # one adaptor more
    {"num_generations": 2},  # more generations
    {"prompts": 4},  # one prompt more: block 0 (ids 0-1) is reused, block 1 (id 2 -> ids 2-3) superseded
])
def test_growing_the_grid_writes_only_the_new_shards_and_ends_as_a_fresh_run(tmp_path, grow):
    model = BigramModel(seed=4)
    small = {"specs": SPECS[:2], "num_generations": 3 if "num_generations" in grow else 4,
             "prompts": 3}
    big = {"specs": SPECS[:3] if "specs" in grow else SPECS[:2], "num_generations": 4,
           "prompts": 4 if "prompts" in grow else 3}

    def run(folder, cfg):
        args = dict(num_generations=cfg["num_generations"], max_new_tokens=6, seed=7, batch_size=3,
                    settings={"model": "bigram"}, progress=False, prompt_block=2)
        return generate_corpus(model, _prompts(model, cfg["prompts"]),
                               [adaptors.parse(s) for s in cfg["specs"]],
                               out_dir=folder, **args)

    run(tmp_path / "grown", small)
    before = _shards(tmp_path / "grown")
    result = run(tmp_path / "grown", big)
    fresh = run(tmp_path / "fresh", big)
    assert _shards(tmp_path / "grown") == _shards(tmp_path / "fresh")  # same files, same bytes
    assert result.written == fresh.written - result.reused and result.written < fresh.written
    kept = set(before) & set(_shards(tmp_path / "grown"))
    assert result.reused == len(kept) > 0
    if "prompts" in grow:  # the block whose prompts changed was superseded, not mixed in
        assert result.superseded and all((tmp_path / "grown" / "_superseded" / n).exists()
                                         for n in result.superseded)
    again = run(tmp_path / "grown", big)
    assert again.written == 0 and again.reused == fresh.shards


def test_shard_names_do_not_collide():
    a, b = adaptors.parse("temperature=1e+300"), adaptors.parse("temperature=1e-300")
    assert adaptor_slug(a) != adaptor_slug(b)


def sequential_inverse_cdf(log_probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """The plain definition: a float64 running sum over the whole vocabulary, searched once."""
    cdf = torch.cumsum(log_probs.double().exp(), dim=-1)
    tokens = torch.searchsorted(cdf, uniforms.double().unsqueeze(-1) * cdf[:, -1:], right=True).squeeze(-1)
    return tokens.clamp_(max=log_probs.shape[-1] - 1)


@pytest.mark.parametrize("vocab", [5, 128, 300, 49152])
def test_blocked_inverse_cdf_equals_the_plain_running_sum(vocab):
    """Two-level CDF (block sums, then one block) against the full running sum: the same token for every row
    (a disagreement needs a uniform within float64 rounding of a CDF step), on peaked, flat and truncated
    distributions, with whole blocks of zero probability."""
    g = torch.Generator().manual_seed(vocab)
    for scale in (0.3, 3.0, 12.0):
        logits = torch.randn(64, vocab, generator=g) * scale
        logits[::3, vocab // 3:] = float("-inf")  # truncated rows: trailing blocks without mass
        logits[1::3, : vocab // 2] = float("-inf")  # leading blocks without mass
        log_probs = torch.log_softmax(logits, dim=-1)
        u = torch.rand(64, dtype=torch.float64, generator=g)
        u[:4] = torch.tensor([0.0, 1e-300, 0.5, 0.999])
        assert torch.equal(sample_inverse_cdf(log_probs, u), sequential_inverse_cdf(log_probs, u))
        # a uniform within rounding of 1 may pick another of the last tokens, never one outside the support
        extreme = sample_inverse_cdf(log_probs, torch.full((64,), 1 - 2**-53, dtype=torch.float64))
        assert bool(torch.isfinite(log_probs.gather(-1, extreme.unsqueeze(-1))).all())


@pytest.mark.parametrize("kw, message", [({"num_generations": True}, "num_generations=True"),
                                         ({"seed": True}, "seed=True")])
def test_a_boolean_is_not_a_count(tmp_path, kw, message):
    with pytest.raises(PQError, match=message):
        _generate(tmp_path / "c", BigramModel(), **kw)


def test_two_prompts_with_one_id_are_refused_before_anything_is_written(tmp_path):
    model = BigramModel()
    prompts = [PromptRecord(0, t, model.encode_prompt(t)) for t in ("w1", "w2")]
    with pytest.raises(PQError, match="prompt_id 0 is given twice"):
        generate_corpus(model, prompts, [adaptors.parse("ancestral")], out_dir=tmp_path / "c",
                        num_generations=2, max_new_tokens=3, seed=0, batch_size=2,
                        settings={"model": "bigram"}, progress=False)
    assert not (tmp_path / "c").exists()


def test_pack_shards_joins_a_block_of_rows_under_every_packable_adaptor():
    from pqtradeoff.pipeline.generate import ShardGroup, pack_shards, plan_shards

    model = BigramModel(seed=1)
    grid = [adaptors.parse(s) for s in ["ancestral", "best_of_n=2", "top_k=2", "dera=0.5",
                                        "mix(0.5:top_k=2|0.5:ancestral)"]]
    shards = list(plan_shards(_prompts(model), grid, num_generations=2, prompt_block=2))
    units = pack_shards(shards)
    groups = [u for u in units if isinstance(u, ShardGroup)]
    alone = [u for u in units if not isinstance(u, ShardGroup)]
    names = [s.name for g in groups for s in g.shards] + [s.name for s in alone]
    assert sorted(names) == sorted(s.name for s in shards)  # every shard, once
    assert len(groups) == 2 * 2  # prompt blocks x sample ids
    for g in groups:  # ancestral, top-k and the mixture; best-of-N and DeRa decode alone
        assert [str(s.adaptor) for s in g.shards] == [str(grid[0]), str(grid[2]), str(grid[4])]
        assert all(s.rows == g.shards[0].rows for s in g.shards)
    assert sorted(str(s.adaptor) for s in alone) == sorted([str(grid[1])] * 4 + [str(grid[3])] * 4)
    assert pack_shards(shards[:1]) == shards[:1]  # a shard alone is not a group


def test_pack_shards_splits_a_block_past_pack_rows_evenly(monkeypatch):
    from pqtradeoff.pipeline import generate
    from pqtradeoff.pipeline.generate import ShardGroup, pack_shards, plan_shards

    model = BigramModel(seed=1)
    grid = [adaptors.parse(f"top_k={k}") for k in range(1, 8)]
    shards = list(plan_shards(_prompts(model), grid, num_generations=1, prompt_block=4))  # 7 shards of 3 rows
    sizes = {}
    for rows in (1000, 9, 6, 3):
        monkeypatch.setattr(generate, "PACK_ROWS", rows)
        units = pack_shards(shards)
        sizes[rows] = [len(u.shards) if isinstance(u, ShardGroup) else 1 for u in units]
        assert [s.name for u in units for s in (u.shards if isinstance(u, ShardGroup) else (u,))] == \
            [s.name for s in shards]  # grid order kept
    # 21 rows: one group below 9 rows a group; 21 // 9 = 2 groups, 21 // 6 = 3, 21 // 3 = 7 (each alone)
    assert sizes == {1000: [7], 9: [4, 3], 6: [3, 2, 2], 3: [1] * 7}


def test_packed_shards_are_the_files_shard_by_shard_writes(tmp_path, monkeypatch):
    """The bigram's logits do not depend on the batch (float64, a table), so the files must be byte for byte
    those of shard by shard, while each block of rows is one `sample` call for the whole grid."""
    model = BigramModel(seed=4)
    calls = []
    sample = model.sample
    monkeypatch.setattr(model, "sample", lambda requests, **kw: calls.append(
        {str(r.adaptor) for r in requests}) or sample(requests, **kw))
    _generate(tmp_path / "packed", model)
    packed_calls, calls[:] = list(calls), []
    _generate(tmp_path / "alone", model, pack_adaptors=False)
    assert _shards(tmp_path / "packed") == _shards(tmp_path / "alone")
    assert len(packed_calls) == 2 * 4 and all(len(c) == len(SPECS) for c in packed_calls)
    assert len(calls) == len(SPECS) * 2 * 4 and all(len(c) == 1 for c in calls)
    with pytest.raises(PQError, match=r"pack_adaptors='yes' is not a boolean"):
        _generate(tmp_path / "bad", model, pack_adaptors="yes")
