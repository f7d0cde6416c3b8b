"""generate and score with real transformers models (tiny, offline), checked against transformers itself.

- the recorded logq / logp_aligned / log_weight equal an independent teacher-forced recomputation: the
  model's own forward logits on the unpadded sequence, transformers' warpers (adaptor.processors()) applied
  position by position;
- batch size 1 and 8 give the same tokens and scores; logp_prior equals a direct computation;
- `pqtradeoff generate` killed with SIGKILL and rerun ends byte-for-byte equal to an uninterrupted run;
- bad inputs give `error: <one line>` and exit code 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers.generation.logits_process import LogitsProcessorList

from pqtradeoff.models.hf import HFModel, HFRewardModel
from pqtradeoff.pipeline.generate import PromptRecord, generate_corpus
from pqtradeoff.sampling import adaptors

from cli_helpers import cli, write_prompts

pytestmark = pytest.mark.usefixtures("one_thread")
SPECS = ["ancestral", "temperature=0.7,top_k=5", "temperature=1.3,top_p=0.8", "typical_p=0.9", "min_p=0.1",
         "eta_cutoff=0.01"]
TEXTS = ["hello world", "", "tell me a story about the moon please", "why"]


def make_prompts(lm: HFModel, texts=TEXTS) -> list[PromptRecord]:
    return [PromptRecord(i, t, lm.encode_prompt(t)) for i, t in enumerate(texts)]


def run_generate(lm, out, specs=SPECS, **kw) -> pd.DataFrame:
    args = dict(num_generations=3, max_new_tokens=8, seed=11, batch_size=8, settings={"model": lm.name},
                progress=False, save_token_logprobs=True)
    generate_corpus(lm, make_prompts(lm), [adaptors.parse(s) for s in specs], out_dir=out, **(args | kw))
    return pd.read_parquet(out).sort_values(["adaptor", "prompt_id", "sample_id"], ignore_index=True)


@pytest.fixture(scope="module")
def aligned(tiny_hf) -> HFModel:
    return HFModel(str(tiny_hf.llama), device="cpu")


@pytest.fixture(scope="module")
def corpus(aligned, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("corpus") / "c"
    return out, run_generate(aligned, out)


def recompute(lm: HFModel, adaptor: adaptors.Adaptor, prompt: list[int], tokens: list[int]):
    """Per-token (logq, logp, log Z) from one unpadded forward pass and transformers' own warpers."""
    procs = LogitsProcessorList(adaptor.processors())
    ids = torch.tensor([prompt + tokens])
    with torch.no_grad():
        logits = lm.model(ids).logits[0].float()
    out = []
    for t, token in enumerate(tokens):
        raw = logits[len(prompt) - 1 + t].unsqueeze(0)
        processed = procs(ids[:, : len(prompt) + t], raw.clone())
        logp = torch.log_softmax(raw, -1)
        kept = torch.isfinite(processed)
        log_z = torch.logsumexp((logp / adaptor.temperature).masked_fill(~kept, -torch.inf), -1)
        out.append((torch.log_softmax(processed, -1)[0, token].item(), logp[0, token].item(), log_z.item()))
    return np.array(out).reshape(-1, 3)


def test_recorded_scores_equal_teacher_forced_transformers_processors(aligned, corpus):
    _, df = corpus
    assert len(df) == len(SPECS) * len(TEXTS) * 3
    assert df["finished"].any() and not df["finished"].all()  # both the EOS and the length paths ran
    for row in df.itertuples():
        tokens = list(row.token_ids)
        want = recompute(aligned, adaptors.parse(row.adaptor), list(row.prompt_token_ids), tokens)
        assert np.isfinite(want).all()  # every sampled token lies in the adaptor's support
        np.testing.assert_allclose(row.token_logq, want[:, 0], atol=1e-4, rtol=0)
        np.testing.assert_allclose(row.token_logp_aligned, want[:, 1], atol=1e-4, rtol=0)
        np.testing.assert_allclose(row.token_log_z, want[:, 2], atol=1e-4, rtol=0)
        np.testing.assert_allclose([row.logq, row.logp_aligned, row.log_weight], want.sum(0), atol=5e-4,
                                   rtol=0)
        assert row.finished == (tokens[-1] == aligned.eos_token_id)
        assert row.finished or len(tokens) == 8
        assert aligned.eos_token_id not in tokens[:-1]
        assert row.text == aligned.decode(tokens)
        assert list(row.prompt_token_ids) == aligned.encode_prompt(row.prompt)


def test_batch_size_one_and_eight_agree(aligned, corpus, tmp_path):
    _, eight = corpus
    one = run_generate(aligned, tmp_path / "one", batch_size=1)
    assert [list(t) for t in one["token_ids"]] == [list(t) for t in eight["token_ids"]]
    for col in ("logq", "logp_aligned", "log_weight"):
        np.testing.assert_allclose(one[col], eight[col], atol=1e-5, rtol=0)


def prior_oracle(lm: HFModel, context: list[int], tokens: list[int]) -> float:
    with torch.no_grad():
        logits = lm.model(torch.tensor([context + tokens])).logits[0].float()
    logp = torch.log_softmax(logits[len(context) - 1: -1], -1)
    return float(logp[torch.arange(len(tokens)), torch.tensor(tokens)].double().sum()) if tokens else 0.0


def test_prior_scores_match_direct_computation_for_any_batching(tiny_hf, corpus, tmp_path):
    from pqtradeoff.pipeline.rewards import VaderReward
    from pqtradeoff.pipeline.score import score_corpus

    path, _ = corpus
    prior = HFModel(str(tiny_hf.prior), device="cpu")
    runs = {}
    for name, bs, mbt in (("one", 1, 4096), ("eight", 8, 20)):
        out = score_corpus(path, tmp_path / name, prior=prior, reward=VaderReward(), batch_size=bs,
                           max_batch_tokens=mbt, settings={}, progress=False).out_dir
        runs[name] = pd.read_parquet(out).sort_values(["adaptor", "prompt_id", "sample_id"],
                                                      ignore_index=True)
    np.testing.assert_allclose(runs["one"]["logp_prior"], runs["eight"]["logp_prior"], atol=1e-5, rtol=0)
    df = runs["eight"]
    assert (df["prior_tokenization"] == "token_ids").all()
    for row in df.sample(12, random_state=0).itertuples():
        want = prior_oracle(prior, list(row.prompt_token_ids), list(row.token_ids))
        assert row.logp_prior == pytest.approx(want, abs=1e-4)
    none = score_corpus(path, tmp_path / "none", prior=prior, reward=VaderReward(), prior_context="none",
                        settings={}, progress=False).out_dir
    for row in pd.read_parquet(none).head(8).itertuples():
        want = prior_oracle(prior, prior.empty_context(), list(row.token_ids))
        assert row.logp_prior == pytest.approx(want, abs=1e-4)


# ------------------------------------------------------------------------------------------------- CLI
def test_cli_generate_then_score_with_template_and_reward_model(tiny_hf, tmp_path, monkeypatch, capsys):
    prompts = write_prompts(tmp_path / "p.jsonl", ["hello world", "why", "tell me a story", "the cat sat"])
    template = "Human : {prompt} Assistant :"
    code, _, err = cli(monkeypatch, capsys, "generate", "--model", tiny_hf.llama, "--prompts", prompts,
                       "--adaptor", "top_k=5", "--adaptor", "temperature=0.5", "--num-generations", 2,
                       "--max-new-tokens", 5, "--seed", 3, "--template", template, "--num-prompts", 3,
                       "--prompt-seed", 42, "--max-batch-tokens", 30, "--out", tmp_path / "gen",
                       "--no-progress")
    assert code == 0, err
    settings = json.loads((tmp_path / "gen" / "_run.json").read_text())["settings"]
    lm = HFModel(str(tiny_hf.llama), device="cpu", template=template)
    longest = max(len(lm.encode_prompt(t)) for t in ["hello world", "why", "tell me a story", "the cat sat"])
    assert settings["prompts"]["template"] == template
    assert settings["batch_size"] == max(1, 30 // (longest + 5))
    gen = pd.read_parquet(tmp_path / "gen")
    assert gen["prompt_id"].nunique() == 3 and len(gen) == 3 * 2 * 2
    assert all(list(r.prompt_token_ids) == lm.encode_prompt(r.prompt) for r in gen.itertuples())

    code, _, err = cli(monkeypatch, capsys, "score", tmp_path / "gen", "--prior", tiny_hf.prior,
                       "--reward-model", tiny_hf.reward, "--out", tmp_path / "scored", "--no-progress")
    assert code == 0, err
    scored = pd.read_parquet(tmp_path / "scored")
    rm = HFRewardModel(str(tiny_hf.reward), device="cpu", batch_size=1, template=template)
    np.testing.assert_allclose(scored["reward"], rm(scored), atol=1e-5, rtol=0)
    assert rm.texts(["why"], ["no"]) == ["Human : why Assistant : no"]
    record = json.loads((tmp_path / "scored" / "_run.json").read_text())["settings"]
    assert record["prompt_template"] == template and record["prior_tokenization"] == "token_ids"

    code, _, err = cli(monkeypatch, capsys, "score", tmp_path / "gen", "--prior", tiny_hf.other,
                       "--reward", "dpo", "--beta", 0.1, "--out", tmp_path / "retok", "--no-progress")
    assert code == 0, err
    retok = pd.read_parquet(tmp_path / "retok")
    assert (retok["prior_tokenization"] == "retokenized").all()
    np.testing.assert_allclose(retok["reward"], 0.1 * (retok["logp_aligned"] - retok["logp_prior"]),
                               rtol=1e-12)


def test_cli_chat_template_corpus_scored_by_models_with_and_without_one(
    tiny_hf, tmp_path, monkeypatch, capsys
):
    prompts = write_prompts(tmp_path / "p.jsonl", ["hello world", "why"])
    code, _, err = cli(monkeypatch, capsys, "generate", "--model", tiny_hf.llama, "--prompts", prompts,
                       "--adaptor", "ancestral", "--num-generations", 2, "--max-new-tokens", 4, "--seed", 1,
                       "--chat-template", "--out", tmp_path / "gen", "--no-progress")
    assert code == 0, err
    gen = pd.read_parquet(tmp_path / "gen")
    chat = HFModel(str(tiny_hf.llama), device="cpu", chat_template=True)
    assert all(list(r.prompt_token_ids) == chat.encode_prompt(r.prompt) for r in gen.itertuples())
    # the GPT-2 prior has no chat template (and another tokenizer): it re-tokenizes, warns, reads the raw
    # prompt
    code, _, err = cli(monkeypatch, capsys, "score", tmp_path / "gen", "--prior", tiny_hf.gpt2,
                       "--reward-model", tiny_hf.reward, "--out", tmp_path / "scored", "--no-progress")
    assert code == 0 and "warning: the prior" in err and "no chat template" in err, err
    record = json.loads((tmp_path / "scored" / "_run.json").read_text())["settings"]
    assert record["prior_chat_template"] is False and record["reward_chat_template"] is True
    scored = pd.read_parquet(tmp_path / "scored")
    gpt2 = HFModel(str(tiny_hf.gpt2), device="cpu")
    for row in scored.itertuples():
        tokens = gpt2.encode_continuation(row.text) + ([gpt2.eos_token_id] if row.finished else [])
        assert row.logp_prior == pytest.approx(prior_oracle(gpt2, gpt2.encode_prompt(row.prompt), tokens),
                                               abs=1e-4)
    rm = HFRewardModel(str(tiny_hf.reward), device="cpu", chat_template=True)
    np.testing.assert_allclose(scored["reward"], rm(scored), atol=1e-5, rtol=0)


@pytest.mark.parametrize("content, extra, pattern", [
    ('{"prompt": "hi"}\n{"prompt": "x"\n', [], "line 2: not valid JSON"),
    ("", [], "holds no prompts"),
    ('{"text": "hi"}\n', [], "line 1: no field 'prompt'"),
    ('{"prompt": "' + " ".join(["hello"] * 70) + '"}\n', [], "prompt 0 has 71 tokens"),
    ('{"prompt": "hi"}\n', ["--adaptor", "top_q=0.5"], "unknown parameter 'top_q'"),
    ('{"prompt": "hi"}\n', ["--adaptor", "top_p=1.5"], "top_p=1.5 is out of range"),
    ('{"prompt": "hi"}\n', ["--dtype", "float8"], "dtype='float8'"),
])
def test_cli_bad_inputs_are_one_line_errors(tiny_hf, tmp_path, monkeypatch, capsys, content, extra, pattern):
    (tmp_path / "p.jsonl").write_text(content, encoding="utf-8")
    adaptor = [] if "--adaptor" in extra else ["--adaptor", "ancestral"]
    code, _, err = cli(monkeypatch, capsys, "generate", "--model", tiny_hf.llama, "--prompts",
                       tmp_path / "p.jsonl",
                       *adaptor, "--num-generations", 1, "--max-new-tokens", 4, "--seed", 0,
                       "--out", tmp_path / "out", "--no-progress", *extra)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and pattern in lines[0], err


def test_cli_score_bad_inputs(tiny_hf, corpus, tmp_path, monkeypatch, capsys):
    path, _ = corpus
    for args, pattern in (
        ([tmp_path / "nowhere", "--reward", "vader"], "does not exist"),
        ([path, "--reward", "vader", "--reward-model", tiny_hf.reward], "exactly one of"),
        ([path, "--prior", tiny_hf.prior, "--reward", "vader", "--prior-context", "all"],
         "--prior-context='all'"),
        ([path, "--prior", tmp_path / "no-model", "--reward", "vader"], "does not exist"),
    ):
        code, _, err = cli(monkeypatch, capsys, "score", *args, "--out", tmp_path / "s", "--no-progress")
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and pattern in lines[0], err


# ---------------------------------------------------------------------------------------------- resume
def test_kill_9_then_rerun_is_byte_identical_to_an_uninterrupted_run(tiny_hf, tmp_path, monkeypatch, capsys):
    prompts = write_prompts(tmp_path / "p.jsonl",
                            [f"hello world {w} {k}" for k in range(2) for w in "the a cat dog sat ran".split()
                             ])
    specs = ["ancestral", "top_k=5", "temperature=0.5,top_p=0.9", "typical_p=0.8"]
    common = ["generate", "--model", tiny_hf.llama, "--prompts", prompts, "--num-generations", 2,
              "--max-new-tokens", 16, "--seed", 5, "--batch-size", 4, "--device", "cpu", "--no-progress"]
    for s in specs:
        common += ["--adaptor", s]
    killed = tmp_path / "killed"
    log = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "pqtradeoff", *map(str, common), "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=log, env=os.environ | {"OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not list(killed.glob("*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()  # SIGKILL, as kill -9
    proc.wait()
    log.close()
    written = sorted(p.name for p in killed.glob("*.parquet"))
    assert 1 <= len(written) < 2 * len(specs), f"kill did not land mid-run: {written} {log.name}"

    assert cli(monkeypatch, capsys, *common, "--out", killed)[0] == 0  # the same command resumes
    assert cli(monkeypatch, capsys, *common, "--out", tmp_path / "whole")[0] == 0
    names = sorted(p.name for p in (tmp_path / "whole").glob("*.parquet"))
    assert len(names) == 2 * len(specs) and sorted(p.name for p in killed.glob("*.parquet")) == names
    for name in names:
        assert (killed / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    df = pd.read_parquet(killed)
    assert len(df) == len(specs) * 12 * 2 and not df.duplicated(["adaptor", "prompt_id", "sample_id"]).any()


def test_resume_with_other_settings_is_refused_before_loading_the_model(
    tiny_hf, tmp_path, monkeypatch, capsys
):
    prompts = write_prompts(tmp_path / "p.jsonl", ["hello world the", "a cat sat"])
    common = ["generate", "--prompts", prompts, "--num-generations", 1, "--max-new-tokens", 4,
              "--adaptor", "top_k=5", "--device", "cpu", "--no-progress", "--out", tmp_path / "c"]
    assert cli(monkeypatch, capsys, *common, "--model", tiny_hf.llama, "--seed", 1)[0] == 0
    code, _, err = cli(monkeypatch, capsys, *common, "--model", tmp_path / "no-such-model", "--seed", 2)
    assert code == 2 and "holds a run made with other settings (model.name:" in err
    assert "does not exist" not in err
