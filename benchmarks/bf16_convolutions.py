"""How far bf16 convolutions on this CPU are from the exact ones: PyTorch's bf16 kernels against
:class:`senet.runtime.Bf16ConvolutionsInFp32` (fp32 convolutions of bf16 values, rounded once).

    python benchmarks/bf16_convolutions.py

One 3×3 convolution, batch 32, 16 -> 32 channels, 28², forward and both gradients, each against the
float64 convolution of the same bf16 values: the mean absolute error, and the share of elements
further away than one bf16 step (2⁻⁷ of the exact value) plus an fp32 sum's slack (2⁻¹² of the sum
of the products' magnitudes, which bounds where terms cancel). A kernel that accumulates in fp32 and
rounds once (what oneDNN's bf16 kernels do in their default accumulation mode) is within it
everywhere; on a CPU without native bf16, PyTorch's own kernels may not be.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from senet.runtime import Bf16ConvolutionsInFp32, bf16_kernels

BF16 = torch.bfloat16


def errors(seed: int = 0) -> dict[str, dict[str, tuple[float, float]]]:
    """{kernel: {output: (mean |error|, share beyond one bf16 step)}} for ``torch`` (PyTorch's bf16
    kernels, on this CPU) and ``fp32`` (the mode)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 16, 28, 28, generator=g).to(BF16)
    w = (0.1 * torch.randn(32, 16, 3, 3, generator=g)).to(BF16)
    grad = torch.randn(32, 32, 28, 28, generator=g).to(BF16)

    def run(dtype, mode: bool, magnitude: bool = False):
        xi, wi = (x.abs(), w.abs()) if magnitude else (x, w)
        xi, wi = xi.to(dtype, copy=True).requires_grad_(), wi.to(dtype, copy=True).requires_grad_()
        with torch.autocast("cpu", dtype=BF16, enabled=mode), (Bf16ConvolutionsInFp32() if mode else contextlib.nullcontext()):
            y = F.conv2d(xi, wi, padding=1)
        y.backward((grad.abs() if magnitude else grad).to(y.dtype))
        return {"output": y, "grad input": xi.grad, "grad weight": wi.grad}

    exact = run(torch.float64, False)
    sums = run(torch.float64, False, magnitude=True)  # the sums of the products' magnitudes
    out = {}
    for kernel, mode in (("torch", False), ("fp32", True)):
        got = run(BF16, mode)
        out[kernel] = {}
        for k, ref in exact.items():
            err = (got[k].double() - ref).abs().detach()
            step = ref.abs() * 2.0 ** -7 + sums[k].detach() * 2.0 ** -12
            out[kernel][k] = (err.mean().item(), (err > step).double().mean().item())
    return out


def main() -> None:
    print(f"bf16 convolutions on this CPU: {bf16_kernels(torch.device('cpu'))} in the suite's runs")
    res = errors()
    print(f"{'':14}{'mean |err|, torch':>20}{'mean |err|, fp32':>18}{'beyond, torch':>15}{'beyond, fp32':>14}")
    for k in res["torch"]:
        (mt, st), (mf, sf) = res["torch"][k], res["fp32"][k]
        print(f"{k:14}{mt:20.3e}{mf:18.3e}{st:15.2%}{sf:14.2%}")


if __name__ == "__main__":
    main()
