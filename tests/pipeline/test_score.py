"""The model-agnostic score stage and the built-in rewards, on a tiny bigram model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pqtradeoff.errors import PQError
from pqtradeoff.models.teacher_forcing import continuation_logprobs
from pqtradeoff.pipeline.generate import PromptRecord, generate_corpus
from pqtradeoff.pipeline.rewards import DPOReward, FunctionReward
from pqtradeoff.pipeline.score import score_corpus
from pqtradeoff.sampling import adaptors

from bigram import BigramModel


@pytest.fixture()
def corpus(tmp_path):
    model = BigramModel(seed=11, eos_bias=0.5)
    prompts = [PromptRecord(i, t, model.encode_prompt(t)) for i, t in enumerate(["", "w1 w2", "w3"])]
    generate_corpus(model, prompts, [adaptors.parse("ancestral"), adaptors.parse("temperature=0.5,top_k=3")],
                    num_generations=5, max_new_tokens=8, seed=3, batch_size=4, out_dir=tmp_path / "gen",
                    settings={}, progress=False, prompt_block=2)
    return tmp_path / "gen"


def _direct_logprob(model: BigramModel, context: list[int], cont: list[int]) -> float:
    prev, total = context[-1], 0.0
    for tok in cont:
        total += torch.log_softmax(model.table[prev].double(), -1)[tok].item()
        prev = tok
    return total


def test_prior_logprobs_equal_direct_computation(corpus, tmp_path):
    prior = BigramModel(seed=12, key="bigram")  # same tokenizer as the aligned model: scores stored ids
    out = score_corpus(corpus, tmp_path / "s", prior=prior, reward=DPOReward(0.1), batch_size=3,
                       max_batch_tokens=10, settings={}, progress=False).out_dir
    df = pd.read_parquet(out)
    assert (df["prior_tokenization"] == "token_ids").all()
    for row in df.itertuples():
        expected = _direct_logprob(prior, list(row.prompt_token_ids), list(row.token_ids))
        assert row.logp_prior == pytest.approx(expected, abs=1e-4)
        assert row.reward == pytest.approx(0.1 * (row.logp_aligned - row.logp_prior))


def test_scores_do_not_depend_on_batch_size(corpus, tmp_path):
    prior = BigramModel(seed=12)
    a = pd.read_parquet(score_corpus(corpus, tmp_path / "a", prior=prior, reward=DPOReward(1.0), batch_size=1,
                                     settings={}, progress=False).out_dir)
    b = pd.read_parquet(score_corpus(corpus, tmp_path / "b", prior=prior, reward=DPOReward(1.0), batch_size=8,
                                     max_batch_tokens=64, settings={}, progress=False).out_dir)
    np.testing.assert_allclose(a["logp_prior"], b["logp_prior"], atol=1e-5)


def test_other_tokenizer_rescores_text_and_context_none(corpus, tmp_path):
    prior = BigramModel(seed=12, key="other-tokenizer")
    reward = FunctionReward(lambda prompts, completions: [len(c) for c in completions], "python:test:len")
    df = pd.read_parquet(score_corpus(corpus, tmp_path / "s", prior=prior, reward=reward,
                                      prior_context="none", settings={}, progress=False).out_dir)
    assert (df["prior_tokenization"] == "retokenized").all()
    assert (df["prior_context"] == "none").all()
    for row in df.itertuples():
        cont = prior.encode_continuation(row.text) + ([0] if row.finished else [])
        assert row.logp_prior == pytest.approx(_direct_logprob(prior, [prior.bos], cont), abs=1e-4)


def test_token_budget_bounds_batches():
    calls = []
    model = BigramModel()
    original = model.continuation_logits

    def spy(prompts, conts):
        out = original(prompts, conts)
        calls.append(out.shape[0] * out.shape[1])
        return out

    model.continuation_logits = spy
    conts = [[1, 2, 3, 0]] * 10 + [[1] * 9]
    logps = continuation_logprobs(model, [[5]] * 11, conts, batch_size=100, max_batch_tokens=12)
    assert max(calls) <= 12
    assert [len(x) for x in logps] == [4] * 10 + [9]


def test_nonfinite_rewards_are_counted_not_hidden(corpus, tmp_path, pq_log):
    def half_nan(prompts, completions):
        return [float("nan") if i % 2 else 1.0 for i in range(len(completions))]

    reward = FunctionReward(half_nan, "python:test:half_nan")
    out = score_corpus(corpus, tmp_path / "s", prior=BigramModel(seed=12), reward=reward, settings={},
                       progress=False).out_dir
    report = json.loads((out / "_score_report.json").read_text())
    df = pd.read_parquet(out)
    assert report["totals"]["reward_nonfinite"] == int(df["reward"].isna().sum()) > 0
    assert any(r.levelname == "WARNING" and "reward nonfinite" in r.getMessage() for r in pq_log.records)


def test_resume_skips_scored_shards_and_matches(corpus, tmp_path):
    prior = BigramModel(seed=12)
    full = score_corpus(corpus, tmp_path / "full", prior=prior, reward=DPOReward(1.0), settings={},
                        progress=False).out_dir
    part = score_corpus(corpus, tmp_path / "part", prior=prior, reward=DPOReward(1.0), settings={},
                        progress=False).out_dir
    shards = sorted(part.glob("*.parquet"))
    shards[0].unlink()
    score_corpus(corpus, part, prior=prior, reward=DPOReward(1.0), settings={}, progress=False)
    for s in sorted(full.glob("*.parquet")):
        assert s.read_bytes() == (part / s.name).read_bytes()


def test_score_bad_inputs(corpus, tmp_path):
    with pytest.raises(PQError, match="prior_context='both'"):
        score_corpus(corpus, tmp_path / "s", prior=BigramModel(), reward=DPOReward(1.0), prior_context="both",
                     settings={}, progress=False)
    with pytest.raises(PQError, match="is the corpus folder itself"):
        score_corpus(corpus, corpus, prior=BigramModel(), reward=DPOReward(1.0), settings={}, progress=False)
    with pytest.raises(PQError, match="does not exist"):
        score_corpus(tmp_path / "nope", tmp_path / "s", prior=BigramModel(), reward=DPOReward(1.0),
                     settings={},
                     progress=False)


def test_dpo_reward_needs_the_prompt_context(corpus, tmp_path):
    with pytest.raises(PQError, match="needs --prior-context prompt"):
        score_corpus(corpus, tmp_path / "s", prior=BigramModel(seed=12), reward=DPOReward(1.0),
                     prior_context="none", settings={}, progress=False)


class _Declared:
    """A reward known only by what it declares (not a DPOReward)."""

    def __init__(self, needs_prompt_context: bool, columns: tuple[str, ...]) -> None:
        self.name, self.needs_prompt_context, self.columns = "declared", needs_prompt_context, columns

    def __call__(self, batch: pd.DataFrame) -> np.ndarray:
        return np.zeros(len(batch))


def test_score_goes_by_what_the_reward_declares(corpus, tmp_path):
    with pytest.raises(PQError, match="reward 'declared' needs --prior-context prompt"):
        score_corpus(corpus, tmp_path / "a", prior=BigramModel(seed=12), reward=_Declared(True, ("text",)),
                     prior_context="none", settings={}, progress=False)
    with pytest.raises(PQError, match="lacks column\\(s\\) answer that reward 'declared' reads"):
        score_corpus(corpus, tmp_path / "b", prior=BigramModel(seed=12), reward=_Declared(False, ("answer",)),
                     settings={}, progress=False)
    out = score_corpus(corpus, tmp_path / "c", prior=BigramModel(seed=12), reward=_Declared(False, ("text",)),
                       prior_context="none", settings={}, progress=False).out_dir
    assert (pd.read_parquet(out)["reward"] == 0.0).all()


def test_prior_context_length_is_checked(corpus, tmp_path):
    prior = BigramModel(seed=12)
    prior.max_length = 3
    with pytest.raises(PQError, match="longer than the prior's context of 3"):
        score_corpus(corpus, tmp_path / "s", prior=prior, reward=DPOReward(1.0), settings={}, progress=False)


def test_report_counts_shards_of_an_interrupted_run(corpus, tmp_path):
    def all_nan(prompts, completions):
        return [float("nan")] * len(completions)

    reward = FunctionReward(all_nan, "python:test:all_nan")
    out = score_corpus(corpus, tmp_path / "s", prior=BigramModel(seed=12), reward=reward, settings={},
                       progress=False).out_dir
    shards = sorted(out.glob("*.parquet"))
    for s in shards[1:]:  # as if killed after the first shard
        s.unlink()
    (out / ".stale.parquet.abc.tmp").write_bytes(b"half")
    score_corpus(corpus, out, prior=BigramModel(seed=12), reward=reward, settings={}, progress=False)
    report = json.loads((out / "_score_report.json").read_text())
    assert report["totals"]["reward_nonfinite"] == len(pd.read_parquet(out)) == report["totals"]["rows"]
    assert not list(out.glob(".*.tmp"))
