"""Model backends found by name, resolved in one place (the settings' `backend` field, `--backend` on the
CLI).

A backend is a function `(spec, template, chat_template) -> LanguageModel` (the request-level interface of
`models/base.py`): `hf` (transformers, a step-level model) and `vllm` (GPU, its own decode loop). The exact
finite-state models are built in memory by the demo, not named in a config.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from pqtradeoff.errors import PQError

TORCH_HINT = ("pip install torch==2.13.0 (or the build for your CUDA from pytorch.org), then "
              "pip install -e \".[models]\"")


def require_torch() -> None:
    """One line when torch is absent (the exact-model demo needs torch but not transformers)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise PQError(f"PyTorch is not installed, and this command needs it: {TORCH_HINT}")


def require_model_packages() -> None:
    """One line, not a 38-line ModuleNotFoundError, when the model side is not installed."""
    for module, what in (("torch", "PyTorch"), ("transformers", "transformers")):
        if importlib.util.find_spec(module) is None:
            raise PQError(f"{what} is not installed, and model stages need it: {TORCH_HINT}")


def _hf(spec: Any, template: str | None, chat_template: bool) -> Any:
    from pqtradeoff.models.hf import HFModel  # lazy: torch

    return HFModel(spec.name, device=spec.device, dtype=spec.dtype, template=template,
                   chat_template=chat_template,
                   gguf_file=spec.gguf_file)


def _vllm(spec: Any, template: str | None, chat_template: bool) -> Any:
    from pqtradeoff.models.vllm_backend import load_vllm

    return load_vllm(spec, template, chat_template)


BACKENDS: dict[str, Callable[..., Any]] = {"hf": _hf, "vllm": _vllm}


def load_causal(spec: Any, template: str | None = None, chat_template: bool = False) -> Any:
    """The causal language model a `ModelSpec` names, built by its backend."""
    if spec.backend not in BACKENDS:
        raise PQError(f"backend={spec.backend!r} is not one of {', '.join(BACKENDS)}")
    require_model_packages()
    return BACKENDS[spec.backend](spec, template, chat_template)
