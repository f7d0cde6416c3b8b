"""Shared fixtures: tiny Hugging Face checkpoints saved to a session folder (built once, loaded by path)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory) -> SimpleNamespace:
    """Folders of tiny random checkpoints: `llama` (aligned), `prior` (same tokenizer, other weights),
    `gpt2` (GPT-2 style tokenizer), `other` (a Llama whose vocabulary differs) and `reward` (pad == eos)."""
    from pqtradeoff.testing import build_causal, build_reward, word_tokenizer

    root = tmp_path_factory.mktemp("hf")
    return SimpleNamespace(
        llama=build_causal(root / "llama", "llama", seed=0),
        prior=build_causal(root / "prior", "llama", seed=1),
        gpt2=build_causal(root / "gpt2", "gpt2", seed=2),
        other=build_causal(root / "other", "llama", tokenizer=word_tokenizer("llama", extra=3), seed=3),
        reward=build_reward(root / "reward", seed=4),
    )


@pytest.fixture()
def pq_log(caplog, monkeypatch):
    """What the package logger ("pqtradeoff") said during the test, as `caplog`: its handler is put on the
    package logger itself, since a CLI test earlier in the session stops the logger's propagation."""
    logger = logging.getLogger("pqtradeoff")
    monkeypatch.setattr(logger, "propagate", False)
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="pqtradeoff")
    yield caplog
    logger.removeHandler(caplog.handler)


@pytest.fixture(scope="module")
def one_thread():
    """Run tiny models on one torch thread: on a shared, loaded machine 2 spinning threads are ~5x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
