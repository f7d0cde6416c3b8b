"""oneDNN's float32 linear against float64 products and against torch's own `F.linear`; the models' switch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pqtradeoff.models import onednn
from pqtradeoff.models.hf import HFModel, HFRewardModel

needs_onednn = pytest.mark.skipif(not onednn.available(), reason="this torch has no oneDNN linear")


@needs_onednn
@pytest.mark.parametrize("shape", [(1, 576), (4, 1, 576), (3, 7, 576), (257, 576)])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_is_float32_exact_against_float64(shape, bias):
    generator = torch.Generator().manual_seed(len(shape) + shape[0])
    x = torch.randn(*shape, generator=generator)
    w = torch.randn(1536, 576, generator=generator)
    b = torch.randn(1536, generator=generator) if bias else None
    with torch.inference_mode():
        got = onednn.linear(x, w, b)
        mkl = torch.nn.functional.linear(x, w, b)
    want = torch.nn.functional.linear(x.double(), w.double(), None if b is None else b.double())
    assert got.shape == want.shape and got.dtype == torch.float32
    # float32 rounding of 576-term dot products, in any order: within 4 sqrt(K) eps of sum |x_k w_k| (a
    # bfloat16 product, eps 2^-8, would be ~15x past it)
    magnitude = torch.nn.functional.linear(x.double().abs(), w.double().abs(),
                                           None if b is None else b.double().abs())
    bound = 4 * 576 ** 0.5 * torch.finfo(torch.float32).eps * magnitude
    assert bool(((got.double() - want).abs() <= bound).all())
    assert bool(((mkl.double() - want).abs() <= bound).all())


@needs_onednn
def test_linear_takes_a_non_contiguous_input_and_a_weight_slice():
    x = torch.randn(6, 8, 64)[:, ::2, :]  # strided rows
    w = torch.randn(300, 64)
    with torch.inference_mode():
        got = onednn.linear(x, w[100:200])
    want = torch.nn.functional.linear(x.double(), w[100:200].double())
    assert float((got.double() - want).abs().max()) <= 1e-5


def test_autograd_and_other_dtypes_keep_torchs_path():
    w = torch.randn(8, 4, requires_grad=True)
    x = torch.randn(2, 4)
    assert not onednn.applies(x, w)  # gradients recorded: the op has no backward
    y = onednn.linear(x, w)
    y.sum().backward()
    assert w.grad is not None and torch.equal(w.grad, x.sum(0).expand(8, 4))
    assert not onednn.applies(x.bfloat16(), w.detach().bfloat16())
    assert not onednn.applies(x.double(), w.detach().double())
    with torch.no_grad():
        assert onednn.applies(x, w) == onednn.available()


@needs_onednn
def test_use_onednn_switches_cpu_float32_linears_and_use_torch_undoes_it():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2).double())
    assert onednn.use_onednn(model) == 1  # the float64 layer stays
    assert type(model[0]) is onednn.OneDNNLinear and type(model[2]) is torch.nn.Linear
    assert isinstance(model[0], torch.nn.Linear)  # readers of .weight and isinstance checks see no change
    x = torch.randn(5, 4)
    with torch.inference_mode():
        got = model[0](x)
    assert torch.allclose(got, torch.nn.functional.linear(x, model[0].weight, model[0].bias), atol=1e-6)
    assert onednn.use_torch(model) == 1 and type(model[0]) is torch.nn.Linear


@needs_onednn
def test_hf_models_run_on_onednn_and_match_torchs_kernel(tiny_hf):
    lm = HFModel(str(tiny_hf.llama))
    linears = [m for m in lm.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(type(m) is onednn.OneDNNLinear for m in linears)
    # tied or not, the head is still the model's parameter
    head = lm.model.get_output_embeddings()
    assert any(head.weight is p for p in lm.model.parameters())
    prompts, continuations = [[1, 5, 6], [1, 7]], [[8, 9, 2], [10, 2]]
    fast = lm.logprobs(prompts, continuations)
    onednn.use_torch(lm.model)
    slow = lm.logprobs(prompts, continuations)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    reward = HFRewardModel(str(tiny_hf.reward))
    assert any(type(m) is onednn.OneDNNLinear for m in reward.model.modules())
