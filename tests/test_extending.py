"""The README's "Extending" recipes, each followed as written with a toy one: adaptor, reward, backend."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pqtradeoff.models import registry
from pqtradeoff.pipeline import rewards

from cli_helpers import cli, write_prompts

SRC = Path(__file__).resolve().parent.parent / "src" / "pqtradeoff"
README = Path(__file__).resolve().parent.parent / "README.md"

TOY_WARPER = '''
import math
import torch


class TopFractionWarper:
    """Keep the ceil(fraction * V) most likely tokens."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction

    def __call__(self, input_ids, scores: torch.Tensor) -> torch.Tensor:
        k = max(1, math.ceil(self.fraction * scores.shape[-1]))
        cut = scores.topk(k, dim=-1).values[..., -1:]
        return scores.masked_fill(scores < cut, float("-inf"))
'''
#: The recipe's one line, added to `Adaptor` after its last field.
TOY_FIELD = ('    top_fraction: float | None = _parameter(None, float, _open_unit, 1.0, '
             '"toy_warpers:TopFractionWarper", "fraction")\n')


def recipe(title: str) -> str:
    """The README's recipe under `### title` (to check the test follows what it says)."""
    text = README.read_text(encoding="utf-8")
    start = text.index("## Extending")
    section = text[start:text.index("\n## ", start + 1)]
    part = section[section.index(f"### {title}"):]
    return part[: part.find("\n### ", 4) if "\n### " in part[4:] else len(part)]


def test_adding_an_adaptor_is_one_field(tmp_path, monkeypatch):
    """A copy of sampling/adaptors.py with the recipe's one field: parsed, named and applied like the rest."""
    assert "_parameter(None, float" in recipe("An adaptor") and "module:Class" in recipe("An adaptor")
    source = (SRC / "sampling" / "adaptors.py").read_text(encoding="utf-8")
    at = source.index("\n    def __post_init__(self) -> None:", source.index("class Adaptor:"))
    (tmp_path / "toy_adaptors.py").write_text(source[:at] + "\n" + TOY_FIELD + source[at:])
    (tmp_path / "toy_warpers.py").write_text(TOY_WARPER)
    monkeypatch.syspath_prepend(str(tmp_path))
    toy = importlib.import_module("toy_adaptors")
    try:
        a = toy.parse("temperature=0.5,top_fraction=0.25")
        assert str(a) == "temperature=0.5,top_fraction=0.25" and a.family == "top_fraction=0.25"
        assert toy.parse(str(a)) == a and "top_fraction" in toy.TRUNCATIONS
        logits = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
        step = a.adapt(logits)
        kept = torch.isfinite(step.log_probs)
        expected = logits >= logits.topk(4, dim=-1).values[..., -1:]
        assert torch.equal(kept, expected)
        weights = torch.log_softmax(logits, -1) / 0.5
        log_z = torch.logsumexp(weights.masked_fill(~expected, -torch.inf), -1)
        assert torch.allclose(step.log_z.squeeze(-1), log_z)
        with pytest.raises(Exception, match="top_fraction=1.5"):
            toy.parse("top_fraction=1.5")
    finally:
        for name in ("toy_adaptors", "toy_warpers"):
            sys.modules.pop(name, None)


class WordCount:
    """The recipe's toy reward: the number of words of the continuation."""

    parameters = ()
    needs_prompt_context = False
    columns = ("text",)
    name = "word_count"

    def __call__(self, batch: pd.DataFrame) -> np.ndarray:
        return np.array([len(t.split()) for t in batch["text"]], dtype=np.float64)


def test_adding_a_reward_is_one_registry_entry(tiny_hf, tmp_path, monkeypatch, capsys):
    assert "REWARD_REGISTRY" in recipe("A reward")
    monkeypatch.setitem(rewards.REWARD_REGISTRY, "word_count", WordCount)
    prompts = write_prompts(tmp_path / "p.jsonl", ["hello world", "the cat"])
    assert cli(monkeypatch, capsys, "generate", "--model", tiny_hf.llama, "--prompts", prompts, "--adaptor",
               "ancestral", "--num-generations", 3, "--max-new-tokens", 5, "--seed", 0,
               "--out", tmp_path / "c", "--device", "cpu")[0] == 0
    code, _, err = cli(monkeypatch, capsys, "score", tmp_path / "c", "--prior", tiny_hf.prior,
                       "--reward", "word_count", "--out", tmp_path / "s")
    assert code == 0, err
    scored = pd.read_parquet(tmp_path / "s")
    assert scored["reward"].tolist() == [float(len(t.split())) for t in scored["text"]]


def test_adding_a_backend_is_one_registry_entry(tiny_hf, tmp_path, monkeypatch, capsys):
    """A toy backend (transformers' model, recorded as built by it) is chosen by --backend and samples the
    same corpus as hf does."""
    assert "BACKENDS" in recipe("A backend")
    built = []

    def toy_backend(spec, template, chat_template):
        built.append(spec.name)
        return registry.BACKENDS["hf"](spec, template, chat_template)

    monkeypatch.setitem(registry.BACKENDS, "toy", toy_backend)
    prompts = write_prompts(tmp_path / "p.jsonl", ["hello world", "the cat"])
    args = ["--model", tiny_hf.llama, "--prompts", prompts, "--adaptor", "top_k=5", "--num-generations", 3,
            "--max-new-tokens", 5, "--seed", 0, "--device", "cpu"]
    assert cli(monkeypatch, capsys, "generate", *args, "--backend", "toy", "--out", tmp_path / "toy")[0] == 0
    assert cli(monkeypatch, capsys, "generate", *args, "--out", tmp_path / "hf")[0] == 0
    assert built == [str(tiny_hf.llama)]
    toy, hf = pd.read_parquet(tmp_path / "toy"), pd.read_parquet(tmp_path / "hf")
    assert toy["text"].tolist() == hf["text"].tolist() and np.array_equal(toy["logq"], hf["logq"])
    code, _, err = cli(monkeypatch, capsys, "generate", *args, "--backend", "nope", "--out", tmp_path / "x")
    assert code == 2 and "--backend='nope' is invalid" in err and "hf, vllm, toy" in err
