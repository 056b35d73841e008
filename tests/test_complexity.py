"""The complexity counter against the paper's numbers (Tables 2, 3, 10, 13, 15, 16; §4) and the
depthwise / pointwise formulas (F²·N·K²·M vs F²·N·(K² + M), ratio 1/M + 1/K²)."""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from torch import nn

from senet import SEConfig, build_model, complexity
from senet.complexity import register_flops
from senet.models.blocks import Bottleneck
from senet.models.mobilenet import DepthwiseSeparable

M = 1e6
G = 1e9


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _count(name, size=224, **kw):
    """Complexity on the meta device (shapes only: no weights, no arithmetic)."""
    with torch.device("meta"):
        model = build_model(name, **kw)
    return complexity(model, size)


def _params(name, **kw):
    with torch.device("meta"):
        return sum(p.numel() for p in build_model(name, **kw).parameters())


# --------------------------------------------------------------------------------------------
# Parameters (paper Tables 10, 13, 15; the released models)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("r,paper", [(2, 45.7), (4, 35.7), (8, 30.7), (16, 28.1), (32, 26.9)])
def test_se_resnet50_params_per_reduction_ratio(r, paper):
    """Table 10: the ablations remove the FC biases."""
    params = _params("se_resnet50", se=SEConfig(reduction=r, bias=False))
    assert abs(params / M - paper) <= 0.15


def test_se_resnet50_params_match_the_formula():
    """Added parameters (2/r) · Σ_s N_s · C_s² (paper §4), without biases."""
    added = sum(n * c * c for n, c in ((3, 256), (4, 512), (6, 1024), (3, 2048))) * 2 // 16
    assert _params("se_resnet50", se=SEConfig(bias=False)) - _params("resnet50") == added


def test_released_se_resnet50_has_exactly_28088024_params():
    assert _params("se_resnet50") == 28_088_024
    assert _params("resnet50") == 25_557_032


def test_se_in_stage_4_only():
    """Table 13: 26.4M."""
    assert abs(_params("se_resnet50", se=SEConfig(stages="4", bias=False)) / M - 26.4) <= 0.1


def test_se_after_the_3x3():
    """Table 15: SE on the 3×3 conv's output (the bottleneck's narrow width), 25.8M."""
    assert abs(_params("se_resnet50", se=SEConfig(placement="inner", bias=False)) / M - 25.8) <= 0.1


# --------------------------------------------------------------------------------------------
# FLOPs at 224² (paper Table 2), stride in the first 1×1 as the paper's Caffe models
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet_flops():
    # The paper's ResNets put the stride in the first 1×1 (Caffe); ResNeXt, as in Xie et al.'s
    # release, in the 3×3. Both are the registered defaults.
    names = ("resnet50", "resnet101", "resnet152", "resnext50_32x4d")
    return {p + n: _count(p + n).flops / G for n in names for p in ("", "se_")}


@pytest.mark.parametrize("name,plain,se", [
    ("resnet50", 3.86, 3.87), ("resnet101", 7.58, 7.60), ("resnet152", 11.30, 11.32),
    ("resnext50_32x4d", 4.24, 4.25),
])
def test_gflops_plain_and_se(resnet_flops, name, plain, se):
    """Table 2."""
    assert abs(resnet_flops[name] - plain) <= 0.01
    assert abs(resnet_flops["se_" + name] - se) <= 0.01
    assert resnet_flops["se_" + name] > resnet_flops[name]


@pytest.mark.slow
def test_resnext101_gflops():
    """Table 2: ResNeXt-101 (32×4d) 7.99 → 8.00. The counter gives 7.979 → 7.993: the plain
    network is 0.011 G under the paper's figure (not one of the acceptance numbers)."""
    assert abs(_count("resnext101_32x4d").flops / G - 7.99) <= 0.015
    assert abs(_count("se_resnext101_32x4d").flops / G - 8.00) <= 0.01


def test_se_overhead_on_resnet50_is_pooling_and_tiny_fcs():
    """§4: SE adds ~0.01 GFLOPs to ResNet-50, of which the FC layers are only ~0.0025 G."""
    c = _count("se_resnet50", se=SEConfig(bias=False))
    pooling = sum(b.se_channels * hw for b, hw in zip(
        c.blocks, [56 * 56] * 3 + [28 * 28] * 4 + [14 * 14] * 6 + [7 * 7] * 3, strict=True))
    fcs = sum(2 * b.se_channels * b.se_hidden for b in c.blocks)
    assert abs(fcs / G - 0.0025) < 0.0001
    # scaling is fused with the residual addition (u·s + x is one multiply-add)
    assert c.se_flops == pooling + fcs + sum(b.se_channels * hw for b, hw in zip(
        c.blocks, [56 * 56] * 3 + [28 * 28] * 4 + [14 * 14] * 6 + [7 * 7] * 3, strict=True))
    assert abs((c.flops - _count("resnet50").flops) / G - 0.008) < 0.001


def test_torchvision_v15_resnet50_is_4_09_gflops():
    c = _count("resnet50", stride_in_1x1=False)
    assert abs(c.flops / G - 4.09) <= 0.01 and c.params == 25_557_032


def test_nosqueeze_gflops():
    """Table 16: the FCs as 1×1 convs at every position cost 4.27 GFLOPs, same parameters."""
    c = _count("se_resnet50", se=SEConfig(squeeze="none", bias=False))
    assert abs(c.flops / G - 4.27) <= 0.01
    assert abs(c.params / M - 28.1) <= 0.1


def test_mobilenet_v1():
    """Table 3: 569 → 572 MFLOPs, 4.2M → 4.7M parameters."""
    plain, se = _count("mobilenet_v1"), _count("se_mobilenet_v1")
    assert abs(plain.flops / M - 569) <= 3 and abs(se.flops / M - 572) <= 3
    assert abs(plain.params / M - 4.2) <= 0.05 and abs(se.params / M - 4.7) <= 0.05


def test_bn_inception():
    """Table 2: 2.03 → 2.04 GFLOPs."""
    plain, se = _count("bn_inception"), _count("se_bn_inception")
    assert abs(plain.flops / G - 2.03) <= 0.03 * 2.03
    assert abs(se.flops / G - 2.04) <= 0.03 * 2.04
    assert se.flops > plain.flops
    # a non-residual block pays for pooling, FCs and scaling: 2·C·H·W + 2·C·C/r
    expect = sum(2 * b.se_channels * hw + 2 * b.se_channels * b.se_hidden
                 for b, hw in zip(se.blocks, [28 * 28] * 2 + [14 * 14] * 5 + [7 * 7] * 3, strict=True))
    assert se.se_flops == expect == se.flops - plain.flops


def test_per_block_rows():
    c = _count("se_resnet50")
    assert [b.name for b in c.blocks][:4] == ["SE_2_1", "SE_2_2", "SE_2_3", "SE_3_1"]
    assert len(c.blocks) == 16
    assert sum(b.flops for b in c.blocks) < c.flops
    assert sum(b.se_params for b in c.blocks) == c.se_params
    assert c.blocks[-1].se_channels == 2048 and c.blocks[-1].se_hidden == 128
    d = c.to_dict()
    assert isinstance(d["params"], int) and isinstance(d["flops"], int)


# --------------------------------------------------------------------------------------------
# The counter against the depthwise / pointwise formulas
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("F,N,M_,K", [(14, 32, 64, 3), (7, 16, 48, 5), (28, 8, 24, 3), (9, 5, 7, 1)])
def test_counter_matches_depthwise_separable_formulas(F, N, M_, K):
    standard = nn.Conv2d(N, M_, K, padding=K // 2, bias=False)
    depthwise = nn.Conv2d(N, N, K, padding=K // 2, groups=N, bias=False)
    pointwise = nn.Conv2d(N, M_, 1, bias=False)
    s, d, p = (complexity(m, F, in_chans=N) for m in (standard, depthwise, pointwise))
    assert s.flops == F * F * N * K * K * M_ and s.params == N * K * K * M_
    assert d.flops == F * F * N * K * K and d.params == N * K * K
    assert p.flops == F * F * N * M_ and p.params == N * M_
    assert d.flops + p.flops == F * F * N * (K * K + M_)
    assert Fraction(d.flops + p.flops, s.flops) == Fraction(1, M_) + Fraction(1, K * K)


def test_mobilenet_block_costs_f2_n_k2_plus_m():
    block = DepthwiseSeparable(32, 64, stage=2, index=1)  # no SE, no residual addition
    c = complexity(block, 14, in_chans=32)
    assert c.flops == 14 * 14 * 32 * (9 + 64)


def test_residual_addition_and_fused_scale():
    """A plain bottleneck pays C·H·W for its addition; with standard SE the scaling is fused into
    it (u·s + x), so SE adds pooling (C·H·W), the two FCs and nothing else."""
    plain = complexity(Bottleneck(256, 64), 8, in_chans=256)
    convs = 8 * 8 * (256 * 64 + 64 * 9 * 64 + 64 * 256)
    assert plain.flops == convs + 256 * 64
    se = complexity(Bottleneck(256, 64, se_factory=SEConfig(bias=False).factory()), 8, in_chans=256)
    assert se.flops - plain.flops == 256 * 64 + 2 * 256 * 16
    post = complexity(Bottleneck(256, 64, se_factory=SEConfig(bias=False).factory(),
                                 placement="post"), 8, in_chans=256)
    assert post.flops - plain.flops == 2 * 256 * 64 + 2 * 256 * 16  # unfused: its own scaling


def test_register_flops_extends_the_counter():
    class Scale(nn.Module):
        def forward(self, x):
            return 2 * x

    register_flops(Scale)(lambda m, inputs, out: out.numel())
    c = complexity(nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), Scale()), 5)
    assert c.flops == 25 * 3 * 4 + 25 * 4
