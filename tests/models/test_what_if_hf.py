"""What-if scoring on real transformers models (tiny, offline).

- `score --what-if`: each string's teacher-forced log q and log weight under the configuration that sampled
  it equal what sampling recorded (float32, within 1e-4 nats), whatever the batching;
- a what-if adaptor's means from a pool of two other temperatures agree (within 4 s.e.) with a pool actually
  sampled from it under the same seed discipline;
- `pqtradeoff run` with `[analysis] what_if`: the score stage adds the columns, the summary lists the
  estimates, a rerun reuses every stage.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pqtradeoff.analysis.analyze import analyze_dir, make_settings
from pqtradeoff.columns import Col
from pqtradeoff.errors import PQError
from pqtradeoff.models.hf import HFModel
from pqtradeoff.pipeline.generate import PromptRecord, generate_corpus
from pqtradeoff.pipeline.rewards import make_reward
from pqtradeoff.pipeline.score import score_corpus
from pqtradeoff.sampling.adaptors import expand_what_if, parse

from cli_helpers import cli, write_config, write_prompts

pytestmark = pytest.mark.usefixtures("one_thread")
SPECS = ["ancestral", "temperature=0.7,top_k=5", "temperature=1.3,top_p=0.8", "typical_p=0.9", "min_p=0.1",
         "eta_cutoff=0.01"]
TEXTS = ["hello world", "", "tell me a story about the moon please", "why"]


@pytest.fixture(scope="module")
def models(tiny_hf):
    return HFModel(str(tiny_hf.llama), device="cpu"), HFModel(str(tiny_hf.prior), device="cpu")


def sample(lm, out, specs, n, seed=5):
    prompts = [PromptRecord(i, t, lm.encode_prompt(t)) for i, t in enumerate(TEXTS)]
    generate_corpus(lm, prompts, [parse(s) for s in specs], num_generations=n, max_new_tokens=8, seed=seed,
                    batch_size=64, out_dir=out, settings={"model": lm.name}, progress=False)
    return out


def score(models, corpus, out, what_if, batch_size=8):
    aligned, prior = models
    return score_corpus(corpus, out, prior=prior, reward=make_reward("dpo", beta=1.0), settings={},
                        progress=False, aligned=aligned, what_if=expand_what_if(what_if),
                        batch_size=batch_size).out_dir


@pytest.mark.parametrize("kernel", ["plain", "fast"])
def test_teacher_forced_scores_equal_the_recorded_ones_for_any_batching(models, tmp_path, monkeypatch,
                                                                       kernel):
    from pqtradeoff.sampling import adaptor_scores

    if kernel == "fast":  # the tiny vocabulary would take the plain path: force the shared-pass kernel
        monkeypatch.setattr(adaptor_scores, "MIN_VOCAB", 1)
    corpus = sample(models[0], tmp_path / "c", SPECS, 3)
    a = pd.read_parquet(score(models, corpus, tmp_path / "s1", ["temperature=0.9"], batch_size=1))
    b = pd.read_parquet(score(models, corpus, tmp_path / "s8", ["temperature=0.9"], batch_size=8))
    order = json.loads((tmp_path / "s1" / "_run.json").read_text())["settings"]["what_if_adaptors"]
    assert order == sorted(str(parse(s)) for s in SPECS) + ["temperature=0.9"]
    j = a[Col.ADAPTOR].map(order.index).to_numpy()
    rows = np.arange(len(a))
    for column, recorded in ((Col.WHAT_IF_LOGQ, Col.LOGQ), (Col.WHAT_IF_LOG_WEIGHT, Col.LOG_WEIGHT)):
        mine = np.stack(a[column].to_numpy())
        np.testing.assert_allclose(mine[rows, j], a[recorded], rtol=0, atol=1e-4)
        np.testing.assert_allclose(mine, np.stack(b[column].to_numpy()), rtol=0, atol=1e-4)
    assert np.isfinite(np.stack(a[Col.WHAT_IF_LOGQ].to_numpy())[:, -1]).all()  # untruncated: full support


def test_what_if_means_agree_with_a_pool_sampled_from_that_adaptor(models, tmp_path):
    pool = sample(models[0], tmp_path / "pool", ["temperature=0.7", "temperature=1.4"], 150)
    scored = score(models, pool, tmp_path / "scored", ["temperature=1.0"])
    settings = make_settings(keep_unfinished=True, what_if=["temperature=1.0"], imh_steps=2000, corpora=5,
                             corpus_size=10, plots=False, what_if_min_ess=50)
    estimate = analyze_dir(scored, tmp_path / "a", settings).what_if[0]
    assert estimate.adaptor == "temperature=1.0" and estimate.skipped is None and not estimate.sampled

    direct = sample(models[0], tmp_path / "direct", ["temperature=1.0"], 150)
    table = pd.read_parquet(score(models, direct, tmp_path / "direct_scored", ["temperature=1.0"]))
    for name, column in (("reward", Col.REWARD), ("log_prior", Col.LOGP_PRIOR)):
        values = table[column].to_numpy(float)
        se_direct = values.std(ddof=1) / np.sqrt(len(values))
        mean, se = getattr(estimate, f"local_mean_{name}"), getattr(estimate, f"local_mean_{name}_se")
        assert abs(mean - values.mean()) < 4 * np.hypot(se, se_direct), (name, mean, values.mean())
    lengths = table[Col.TOKEN_IDS].map(len).to_numpy(float)
    assert abs(estimate.mean_length - lengths.mean()) < 4 * 3 * lengths.std(ddof=1) / np.sqrt(len(lengths))


def test_what_if_needs_the_aligned_model(models, tmp_path):
    corpus = sample(models[0], tmp_path / "c", ["ancestral"], 1)
    with pytest.raises(PQError, match="need the aligned model"):
        score_corpus(corpus, tmp_path / "s", prior=models[1], reward=make_reward("vader"), settings={},
                     progress=False, what_if=expand_what_if(["temperature=0.5"]))


def test_run_with_what_if_adds_the_columns_and_reuses_every_stage(tiny_hf, tmp_path, monkeypatch, capsys):
    prompts = write_prompts(tmp_path / "p.jsonl", ["hello world", "why", "tell me a story", "the cat sat"])
    extra = 'what_if = ["temperature=0.8:1.2:0.2", "temperature=1.0,top_k=3"]\nwhat_if_min_ess = 2'
    config = write_config(tmp_path / "e.toml", tiny_hf.llama, tiny_hf.prior, prompts, extra=extra,
                          num_generations=4)
    code, _, err = cli(monkeypatch, capsys, "run", config, "--out", tmp_path / "run")
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "analysis" / "summary.json").read_text())
    assert [w["adaptor"] for w in summary["what_if"]] == [
        "temperature=0.8", "temperature=1.0", "temperature=1.2", "temperature=1.0,top_k=3"]
    assert summary["what_if"][1]["sampled"] and not summary["what_if"][0]["sampled"]
    assert all("mean_length" in c and "partial_spearman_given_length" in c for c in summary["configs"])
    code, _, err = cli(monkeypatch, capsys, "run", config, "--out", tmp_path / "run")
    assert code == 0 and "score: reused" in err and "analyze: reused" in err, err
    config = write_config(tmp_path / "e.toml", tiny_hf.llama, tiny_hf.prior, prompts, num_generations=4,
                          extra='what_if = ["temperature=0.9"]\nwhat_if_min_ess = 2')
    code, _, err = cli(monkeypatch, capsys, "run", config, "--out", tmp_path / "run")
    assert code == 0 and "score: ran" in err and "generate: reused" in err, err
    summary = json.loads((tmp_path / "run" / "analysis" / "summary.json").read_text())
    assert [w["adaptor"] for w in summary["what_if"]] == ["temperature=0.9"]
