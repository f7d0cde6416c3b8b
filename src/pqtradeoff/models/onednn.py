"""float32 linear layers through oneDNN on the CPU, where it is the faster GEMM.

torch runs a float32 `F.linear` on the CPU through MKL's sgemm. On a processor MKL does not tune for (an AMD
EPYC here: MKL takes its generic x86 path) that runs at about half the machine's rate, while oneDNN, which
torch also ships, runs the same product at its full AVX-512 rate: `benchmarks/workloads.py` measures both on
a 2048^3 product and on the model's own shapes. The op is the one torch's inductor emits for a CPU linear
(`torch.ops.mkldnn._linear_pointwise`, plain float32 weights, no packing and no copy of them), so the
weights stay ordinary parameters: tied heads stay tied, state dicts and `.weight` readers see no change.

Used wherever it is float32 arithmetic: a CPU float32 weight, no autograd (a forward that records gradients
keeps torch's own path: the op has no backward), and a probe at first use that checks the op against
`F.linear` on this machine. The choice is fixed, never timed at run time, so the same settings give the same
bytes. A result differs from MKL's only in rounding (~1e-6 relative, the order of terms in a dot product), as
MKL's own results differ between batch sizes. Measured faster on this project's AMD machine only; on an Intel
CPU, where MKL is tuned, the two should be close (not measured). GPT-2's `Conv1D` layers are not switched.
"""

from __future__ import annotations

import functools

import torch

#: Relative tolerance of the probe against F.linear (float32 dot products of 256 terms).
PROBE_RTOL = 1e-5


@functools.cache
def available() -> bool:
    """Whether this torch has oneDNN's linear op and it computes F.linear here (checked once)."""
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 256, generator=generator)
    w, b = torch.randn(96, 256, generator=generator), torch.randn(96, generator=generator)
    try:
        with torch.inference_mode():
            got = op(x, w, b, "none", [], "")
    except RuntimeError:
        return False
    want = torch.nn.functional.linear(x.double(), w.double(), b.double())
    error = (got.double() - want).abs().max() if got.shape == want.shape else float("inf")
    return bool(error <= PROBE_RTOL * want.abs().max())


def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True where `linear` takes oneDNN: float32 on the CPU, nothing to differentiate."""
    return (weight.device.type == "cpu" and weight.dtype == torch.float32 and x.dtype == torch.float32
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            and available())


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)`, through oneDNN where `applies`."""
    if applies(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return torch.nn.functional.linear(x, weight, bias)


class OneDNNLinear(torch.nn.Linear):
    """An `nn.Linear` whose forward is `linear` (same parameters; the class is swapped in place)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def use_onednn(model: torch.nn.Module) -> int:
    """Route every CPU float32 `nn.Linear` of `model` through oneDNN (in place; a no-op where it is not
    available). Returns how many layers were switched."""
    if not available():
        return 0
    switched = 0
    for module in model.modules():
        if (type(module) is torch.nn.Linear and module.weight.device.type == "cpu"
                and module.weight.dtype == torch.float32):
            module.__class__ = OneDNNLinear
            switched += 1
    return switched


def use_torch(model: torch.nn.Module) -> int:
    """Undo `use_onednn`: every `OneDNNLinear` back to torch's own `nn.Linear`. Returns how many."""
    switched = 0
    for module in model.modules():
        if type(module) is OneDNNLinear:
            module.__class__ = torch.nn.Linear
            switched += 1
    return switched
