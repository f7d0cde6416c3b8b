"""The yardsticks every speed benchmark divides by, measured in the same run, and the timing helpers.

- the machine's GEMM **peak**: a 2048 x 2048 x 2048 product (`gemm_peak`), the fastest a dense product runs
  here, through whichever of torch's own product (MKL's sgemm on a CPU) and oneDNN's (`models/onednn.py`, what
  the models run on a CPU in float32) is faster - the README's headline divides by it;
- the **model-shape rate**: a linear over the model's own weight matrices at 256-512 rows (`gemm_rate`, the
  faster of the two kernels), what
  its thin products (576 wide for SmolLM2-135M) can reach at best: a ratio against it shows the rest of a
  step's cost (attention, norms, Python), a ratio against the peak shows all of it;
- the **memory rate** (`memory_rate`): one read of a 1 GiB tensor, the floor of a step with few rows (it
  reads every weight once, whatever the rows).

A roofline in tokens/s is rate / (2 x P), P = the matmul parameters (`matmul_weights`: every linear layer of
the decoder blocks plus the LM head; the input embedding is a lookup and norms are not matmuls).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def linears(x: torch.Tensor, weight: torch.Tensor) -> dict[str, Callable[..., torch.Tensor]]:
    """The kernels a linear layer of `x` and `weight` can run on: torch's own `F.linear`, and
    `onednn.linear` where it applies (float32 on a CPU; elsewhere it is F.linear again, not timed twice)."""
    from pqtradeoff.models import onednn  # lazy: keeps --help light

    kernels = {"torch": torch.nn.functional.linear}
    with torch.inference_mode():
        if onednn.applies(x, weight):
            kernels["onednn"] = onednn.linear
    return kernels


def gemm_peaks(repeats: int = 3, size: int = 2048, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu") -> dict[str, float]:
    """FLOP/s of a size^3 product through each of `linears` (best of `repeats`, after one warm-up)."""
    device = torch.device(device)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    out = {}
    with torch.inference_mode():
        for name, fn in linears(a, b).items():
            best = float("inf")
            for _ in range(repeats + 1):
                sync(device)
                start = time.perf_counter()
                fn(a, b)
                sync(device)
                best = min(best, time.perf_counter() - start)
            out[name] = 2 * size ** 3 / best
    return out


def gemm_peak(repeats: int = 3, size: int = 2048, dtype: torch.dtype = torch.float32,
              device: str | torch.device = "cpu") -> float:
    """FLOP/s of a size^3 product through the faster kernel (`gemm_peaks`)."""
    return max(gemm_peaks(repeats, size, dtype, device).values())


def memory_rate(gib: float = 1.0, repeats: int = 3, device: str | torch.device = "cpu") -> float:
    """Bytes/s of reading a float32 tensor of `gib` GiB once (a sum; best of `repeats`, after a warm-up): the
    floor of a step that reads every weight for a handful of rows."""
    device = torch.device(device)
    x = torch.ones(int(gib * 2**30) // 4, device=device)
    best = float("inf")
    for _ in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        x.sum()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return x.numel() * 4 / best


def matmul_weights(lm) -> list[torch.Tensor]:
    """Every weight matrix a token is multiplied by: the blocks' linear layers and the LM head."""
    head = lm.model.get_output_embeddings()
    layers = [m.weight for m in lm.model.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    return layers + [head.weight]


def gemm_rate(weights: list[torch.Tensor], rows: int, repeats: int) -> float:
    """FLOP/s of a linear over the model's weight shapes at `rows` rows (best of `repeats` passes, the faster
    of `linears`)."""
    x = {w.shape[1]: torch.randn(rows, w.shape[1], dtype=w.dtype, device=w.device) for w in weights}
    flops = sum(2 * rows * w.numel() for w in weights)
    best = float("inf")
    with torch.inference_mode():
        for fn in linears(x[weights[0].shape[1]], weights[0]).values():
            for _ in range(repeats + 1):  # the first pass warms up
                sync(weights[0].device)
                start = time.perf_counter()
                for w in weights:
                    fn(x[w.shape[1]], w)
                sync(weights[0].device)
                best = min(best, time.perf_counter() - start)
    return flops / best


class Yardsticks:
    """The GEMM peak and the model-shape rate, each measured now and again at `.measure()` (the higher of
    the two is used, so ratios are lower bounds)."""

    def __init__(self, lm, dtype: torch.dtype = torch.float32) -> None:
        self.weights = matmul_weights(lm)
        self.params = sum(w.numel() for w in self.weights)
        self.dtype, self.device = dtype, lm.device
        self.peaks: list[float] = []
        self.torch_peaks: list[float] = []  # torch's own product alone (MKL's sgemm on a CPU)
        self.shape_rates: list[float] = []
        self.measure()

    def measure(self) -> None:
        peaks = gemm_peaks(dtype=self.dtype, device=self.device)
        self.torch_peaks.append(peaks["torch"])  # always measured
        self.peaks.append(max(peaks.values()))
        self.shape_rates.append(max(gemm_rate(self.weights, m, 3) for m in (256, 512)))

    @property
    def peak(self) -> float:
        return max(self.peaks)

    @property
    def shape_rate(self) -> float:
        return max(self.shape_rates)

    def roofline(self, rate: float) -> float:
        """Tokens/s at `rate` FLOP/s."""
        return rate / (2 * self.params)

    def describe(self) -> str:
        peaks = " / ".join(f"{p / 1e9:.1f}" for p in self.peaks)
        shapes = " / ".join(f"{r / 1e9:.1f}" for r in self.shape_rates)
        torch_peaks = " / ".join(f"{p / 1e9:.1f}" for p in self.torch_peaks)
        return (f"GEMM peak (2048^3, the faster of torch.mm and oneDNN): {peaks} GFLOP/s (torch.mm alone "
                f"{torch_peaks}) -> roofline {self.roofline(self.peak):.0f} tokens/s; "
                f"model-shape rate (256-512 rows): {shapes} GFLOP/s -> {self.roofline(self.shape_rate):.0f} "
                f"tokens/s (P = {self.params / 1e6:.1f}M matmul parameters; before / after, the higher used)")

    def ratios(self, tokens_per_s: float) -> str:
        return (f"{100 * tokens_per_s / self.roofline(self.peak):.1f}% of the peak roofline, "
                f"{100 * tokens_per_s / self.roofline(self.shape_rate):.1f}% of the model-shape one")


class Timed:
    """Wraps a callable and adds its wall time (device synchronized) to `totals[name]`; a timed call made
    inside another one (a prefill that joins its groups) counts for the outer one only."""

    depth: dict[int, int] = {}

    def __init__(self, fn, name: str, totals: dict[str, float], device: torch.device) -> None:
        self.fn, self.name, self.totals, self.device = fn, name, totals, device

    def __call__(self, *args, **kwargs):
        key = id(self.totals)
        if Timed.depth.get(key):
            return self.fn(*args, **kwargs)
        Timed.depth[key] = 1
        try:
            sync(self.device)
            start = time.perf_counter()
            result = self.fn(*args, **kwargs)
            sync(self.device)
            self.totals[self.name] += time.perf_counter() - start
        finally:
            Timed.depth[key] = 0
        return result


@contextmanager
def timed_decoding(lm, sample_name: str = "sampling") -> Iterator[dict[str, float]]:
    """Inside: `lm`'s start (as "prefill"), step, keep and join and the decoding loop's sampling step (as
    `sample_name`) add their wall times to the dict yielded; restored on the way out."""
    from pqtradeoff.models import decoding  # lazy: keeps --help of the other scripts light

    totals: dict[str, float] = defaultdict(float)
    calls = {name: getattr(lm, name) for name in ("start", "step", "keep", "join")}
    step_fn = decoding.sample_step
    try:
        for name, fn in calls.items():
            setattr(lm, name, Timed(fn, "prefill" if name == "start" else name, totals, lm.device))
        decoding.sample_step = Timed(step_fn, sample_name, totals, lm.device)
        yield totals
    finally:
        for name in calls:
            delattr(lm, name)
        decoding.sample_step = step_fn


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Print this machine's GEMM peak (the yardstick of the other "
                                     "speed benchmarks): " + (__doc__ or "").split("\n")[0])
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    peaks = gemm_peaks(dtype=dtype, device=args.device)
    print(f"GEMM peak (2048^3, {args.dtype}, {args.device}, {torch.get_num_threads()} threads): "
          + ", ".join(f"{name} {rate / 1e9:.1f}" for name, rate in peaks.items()) + " GFLOP/s")


if __name__ == "__main__":
    main()
