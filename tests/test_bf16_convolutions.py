"""bf16 on a CPU without native bf16: convolutions as fp32 ones on bf16 values, rounded once to bf16
(senet.runtime.Bf16ConvolutionsInFp32), the rounding of native kernels that accumulate in fp32."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import senet
from senet import runtime
from senet.provenance import provenance

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bf16_convolutions  # noqa: E402

BF16 = torch.bfloat16


def test_a_convolution_and_its_gradients_are_rounded_once_from_the_exact_values():
    """Forward, input and weight gradients each within one bf16 step of the float64 convolution of
    the same bf16 values, everywhere: a single rounding of an fp32 accumulation."""
    res = bf16_convolutions.errors()["fp32"]
    assert set(res) == {"output", "grad input", "grad weight"}
    for name, (mean_err, beyond) in res.items():
        assert beyond == 0.0, name
        assert mean_err > 0  # rounded to bf16, not exact


def test_the_mode_computes_what_it_says():
    g = torch.Generator().manual_seed(1)
    x, w, b = torch.randn(4, 3, 9, 9, generator=g), torch.randn(5, 3, 3, 3, generator=g), torch.randn(5, generator=g)
    with torch.autocast("cpu", dtype=BF16), \
            runtime.Bf16ConvolutionsInFp32():
        y = F.conv2d(x, w, bias=b, padding=1)
        y1 = F.conv1d(x[:, :, 0], w[:, :, 0], b)
    r = lambda t: t.to(BF16).float()  # noqa: E731 - autocast's cast of an fp32 tensor, as fp32 values
    assert y.dtype == y1.dtype == BF16  # what native autocast returns
    assert torch.equal(y, F.conv2d(r(x), r(w), r(b), padding=1).to(BF16))
    assert torch.equal(y1, F.conv1d(r(x[:, :, 0]), r(w[:, :, 0]), r(b)).to(BF16))
    z = F.conv2d(x, w)  # outside autocast the mode leaves a convolution alone
    with runtime.Bf16ConvolutionsInFp32():
        assert torch.equal(F.conv2d(x, w), z) and z.dtype == torch.float32


@pytest.mark.parametrize("native", ["0", "1"])
def test_a_run_in_bf16_takes_the_mode_only_on_a_cpu_without_native_bf16(native, monkeypatch):
    monkeypatch.setenv(runtime.BF16_ENV, native)
    cpu = torch.device("cpu")
    assert runtime.bf16_kernels(cpu) == ("native" if native == "1" else "fp32")
    assert provenance(cpu, "bf16")["bf16_kernels"] == runtime.bf16_kernels(cpu)
    assert provenance(cpu, "fp32")["bf16_kernels"] is None
    model = senet.build_model("se_resnet20", num_classes=10, in_chans=1).eval()
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    seen = []
    model.conv1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.no_grad():
        ref = model(x)
        with runtime.autocast(cpu, "bf16"):
            out = model(x)
        with runtime.autocast(cpu, "fp32"):
            assert torch.equal(model(x), ref)
    assert seen == [torch.float32, BF16, torch.float32]
    assert (out.float() - ref).abs().max() < 0.05  # bf16 rounding of the features, either way
