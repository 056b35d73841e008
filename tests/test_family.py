"""The channel-attention family (senet/family/) checked against its sources.

Where timm 1.0.31 has the module (SE, ECA, CBAM, GC, GE-θ⁻), the suite's block with the same weights
gives timm's output: bit for bit where the operations are the same. The suite's pooled FCs run as
``F.linear`` on (N, C) rows, which rounds differently from timm's 1×1 convolution (≤ 5e-7 relative);
a no-op forward hook on ``excitation.fc1`` switches them to the convolution path, and then the
outputs are equal exactly, so both are checked: exact with the hook, within 1e-6 without.
Where timm lacks the module (SRM, GCT, SimAM), the official implementation's formulas are written
out here. Parameter totals of the papers' ResNet-50 variants are those of
/work/shared/attention-family.md §2, and every elementwise term has a counter (no
UncountedWorkWarning; the FLOPs of one block follow §2's formulas).
"""
from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from timm.layers.cbam import CbamModule
from timm.layers.coord_attn import CoordAttn
from timm.layers.eca import EcaModule
from timm.layers.gather_excite import GatherExcite
from timm.layers.global_context import GlobalContext
from timm.layers.helpers import make_divisible
from timm.layers.selective_kernel import SelectiveKernel
from timm.layers.squeeze_excite import SEModule
from torch import nn

from senet import config
from senet.complexity import UncountedWorkWarning, complexity
from senet.errors import UserValueError
from senet.family import SelectiveKernelConv
from senet.models import build_model, se_modules
from senet.models.blocks import BasicBlock, Bottleneck
from senet.models.resnet import ResNet
from senet.se import PRESETS, SEConfig, SqueezeExcitation, hidden_width
from senet.stages import StagesFrom, parse_stages, resolve_stages
from tests.test_se import _forward_backward

pytestmark = pytest.mark.usefixtures("one_thread")

C = 64  # channels of the module-level checks
#: The presets that place an SE-like module (sk replaces the 3×3 conv instead).
SE_PRESETS = [p for p in PRESETS if "conv" not in PRESETS.get(p)]
U = torch.randn(3, C, 7, 5, generator=torch.Generator().manual_seed(0))


def _se(preset: str, channels: int = C, **kw) -> SqueezeExcitation:
    cfg = SEConfig.from_preset(preset, **kw)
    return cfg.plan().build(channels, stage=2).eval()


def _randomize(module: nn.Module) -> nn.Module:
    """Every parameter and BN statistic away from its initial value (zero-initialised ones too)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return module.eval()


def _load(ours: nn.Module, theirs: nn.Module, names: dict[str, str]) -> None:
    """Our parameters and buffers copied into ``theirs`` under its names (``names``: ours → theirs)."""
    theirs.load_state_dict({names.get(k, k): v for k, v in ours.state_dict().items()}, strict=True)


def _conv_path(se: SqueezeExcitation):
    """A no-op hook on the first FC: the excitation runs as timm's 1×1 convolutions."""
    return se.excitation.fc1.register_forward_hook(lambda m, i, o: None)


def _exact_and_close(ours: SqueezeExcitation, theirs: nn.Module, u: torch.Tensor = U) -> None:
    with torch.no_grad():
        expected = theirs(u)
        torch.testing.assert_close(ours(u), expected, rtol=1e-6, atol=1e-6)  # F.linear vs 1×1 conv
        handle = _conv_path(ours)
        assert torch.equal(ours(u), expected)
        handle.remove()


# --------------------------------------------------------------------------------------------
# Against timm's modules (shared weights, eval mode)
# --------------------------------------------------------------------------------------------
def test_se_equals_timm_semodule():
    ours = _randomize(_se("se"))
    theirs = SEModule(C, rd_ratio=1 / 16, rd_divisor=1).eval()
    _load(ours, theirs, {f"excitation.{k}": k for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")})
    _exact_and_close(ours, theirs)


@pytest.mark.parametrize("channels", [64, 256, 1024])
def test_eca_equals_timm_ecamodule_bit_for_bit(channels):
    u = torch.randn(2, channels, 4, 4)
    ours = _randomize(_se("eca", channels))
    theirs = EcaModule(channels).eval()
    _load(ours, theirs, {"excitation.conv.weight": "conv.weight"})
    with torch.no_grad():
        assert torch.equal(ours(u), theirs(u))


def test_eca_with_the_papers_kernel_per_stage_equals_timm_with_that_kernel():
    plan = SEConfig.from_preset("eca", kernel="3,5,5,7").plan()
    for stage, k in zip((2, 3, 4, 5), (3, 5, 5, 7), strict=True):
        ours = _randomize(plan.build(C, stage=stage))
        theirs = EcaModule(channels=None, kernel_size=k).eval()  # a given channels would override k
        _load(ours, theirs, {"excitation.conv.weight": "conv.weight"})
        with torch.no_grad():
            assert torch.equal(ours(U), theirs(U)), stage


CBAM_NAMES = {"excitation.fc1.weight": "channel.fc1.weight", "excitation.fc2.weight": "channel.fc2.weight",
              "spatial.conv.weight": "spatial.conv.conv.weight",
              **{f"spatial.bn.{k}": f"spatial.conv.bn.{k}"
                 for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}}


@pytest.mark.parametrize("channels", [64, 24])  # 24: timm rounds 1.5 up to 2 (se.rounding timm)
def test_cbam_equals_timm_cbammodule(channels):
    u = torch.randn(3, channels, 7, 5)
    ours = _randomize(_se("cbam", channels))
    assert ours.hidden == make_divisible(channels / 16, 1, round_limit=0.0)
    theirs = CbamModule(channels).eval()
    _load(ours, theirs, CBAM_NAMES)
    _exact_and_close(ours, theirs, u)


GC_NAMES = {"squeeze.conv_attn.weight": "conv_attn.weight", "squeeze.conv_attn.bias": "conv_attn.bias",
            **{f"excitation.{k}.{p}": f"mlp_add.{k}.{p}" for k in ("fc1", "norm", "fc2") for p in ("weight", "bias")}}


def test_gc_equals_timm_global_context_gca():
    """GCNet's additive block (timm's ``gca``: attention pooling, fc-LayerNorm(ε 1e-6)-ReLU-fc, x + e)."""
    ours = _randomize(_se("gc"))
    theirs = GlobalContext(C, fuse_add=True, fuse_scale=False, rd_ratio=1 / 16).eval()
    _load(ours, theirs, GC_NAMES)
    _exact_and_close(ours, theirs)


def test_gc_with_a_sigmoid_scale_equals_timm_gc():
    """timm's ``gc`` (the GC-EfficientNet's): the same context and transform, sigmoid, ×U."""
    ours = _randomize(_se("gc", gate="sigmoid", combine="scale"))
    theirs = GlobalContext(C, rd_ratio=1 / 16).eval()
    _load(ours, theirs, {k: v.replace("mlp_add", "mlp_scale") for k, v in GC_NAMES.items()})
    _exact_and_close(ours, theirs)


def test_ca_equals_timm_coord_attn_bit_for_bit():
    """Coordinate attention: strip means, shared 1×1 + BN + h-swish, two heads, U · a_w · a_h;
    timm's width m = make_divisible(C / 24, 8, round_limit=0) and no biases (the preset's)."""
    ours = _randomize(_se("ca"))
    theirs = CoordAttn(C).eval()
    assert ours.hidden == theirs.conv1.out_channels == 8
    _load(ours, theirs, {k: k.removeprefix("excitation.") for k in ours.state_dict()})
    x = torch.randn(3, C, 14, 10)  # H ≠ W
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
    assert sum(p.numel() for p in ours.parameters()) == 3 * C * 8 + 2 * 8 == 1552  # anchor §2


@pytest.mark.parametrize("stride,split", [(1, False), (2, False), (2, True)])
def test_sk_equals_timm_selective_kernel_bit_for_bit(stride, split):
    """SKNet's conv: paths 3×3 and 3×3 dilated 2 (conv, BN, ReLU), GAP of their sum, 1×1 C → d, BN,
    ReLU, 1×1 d → 2C, softmax over the paths, Σ a_m U_m. d = make_divisible(C/16, 8) (0.9 rule)."""
    plan = SEConfig.from_preset("sk").plan()
    ours = SelectiveKernelConv(C, C, stride, hidden=hidden_width(C, 16, 8), split_input=split)
    assert plan.conv(C, C, stride).attn.fc_reduce.out_channels == 8
    _randomize(ours)
    theirs = SelectiveKernel(C, C, stride=stride, split_input=split).eval()
    _load(ours, theirs, {})
    x = torch.randn(2, C, 9, 7)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
    assert sum(p.numel() for p in ours.attn.parameters()) == C * 8 + 2 * 8 + 2 * C * 8 == 1552  # anchor §2


def test_sknet50_is_timms_skresnext50_32x4d():
    """The paper's SKNet-50 (ResNeXt-50 32×4d, d = max(C/16, 32): divisor 32, inputs not split)."""
    import timm

    ours = build_model("se_resnext50_32x4d", se=SEConfig.from_preset("sk", divisor=32))
    with torch.device("meta"):
        theirs = timm.create_model("skresnext50_32x4d", pretrained=False)
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters()) == 27_479_784  # the paper's 27.5M


def test_sk_counts_its_flops():
    conv = SelectiveKernelConv(C, C, 1, hidden=8).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncountedWorkWarning)
        flops = complexity(conv, (H, W), in_chans=C).flops
    # 2 paths of 3×3 convs [FCM] + fc_reduce + fc_select [FCM] + Σ paths, GAP, weighting, Σ weighted
    assert flops == 2 * 9 * C * C * N + (C * 8 + 8 * 2 * C) + (1 + 1 + 2 + 1) * C * N


def test_ge_theta_minus_equals_timm_gather_excite():
    """GE-θ⁻ with a global extent: the only GatherExcite that timm 1.0.31 builds (anchor §0.2)."""
    ours = _se("ge")
    theirs = GatherExcite(C, use_mlp=False, extra_params=False, extent=0).eval()
    assert sum(p.numel() for p in ours.parameters()) == 0 == sum(p.numel() for p in theirs.parameters())
    with torch.no_grad():
        assert torch.equal(ours(U), theirs(U))
        assert torch.equal(ours(U), U * torch.sigmoid(U.mean((2, 3), keepdim=True)))


@pytest.fixture
def fixed_gather_excite(monkeypatch):
    """timm's ``GatherExcite`` as it was before ad57dce0 passed ``*dd`` for ``**dd`` (anchor §0.2):
    in 1.0.31 any ``extra_params=True`` or ``use_mlp=True`` raises a TypeError. The three calls that
    receive the stray positional (device, dtype) get them dropped; nothing else changes."""
    import types

    from timm.layers import gather_excite
    from timm.layers.create_conv2d import create_conv2d
    from timm.layers.mlp import ConvMlp

    with pytest.raises(TypeError, match="multiple values"):  # the typo is still there: the patch is needed
        gather_excite.GatherExcite(C, extra_params=True, use_mlp=False, extent=2)
    monkeypatch.setattr(gather_excite, "create_conv2d", lambda cin, cout, *_, **kw: create_conv2d(cin, cout, **kw))
    monkeypatch.setattr(gather_excite, "ConvMlp", lambda cin, hidden, *_, **kw: ConvMlp(cin, hidden, **kw))
    patched_nn = types.SimpleNamespace(**vars(nn))
    patched_nn.BatchNorm2d = lambda c, *_, **kw: nn.BatchNorm2d(c, **kw)
    monkeypatch.setattr(gather_excite, "nn", patched_nn)
    return gather_excite.GatherExcite


def _ge_names(ours: nn.Module) -> dict[str, str]:
    return {k: k.replace("squeeze.gather.", "gather.").replace("excitation.", "mlp.") for k in ours.state_dict()}


@pytest.mark.parametrize("extent", [2, 4, 8])
@pytest.mark.parametrize("size", [(14, 10), (7, 5)])
def test_ge_theta_equals_timms_gather_excite_bit_for_bit(fixed_gather_excite, extent, size):
    """GE-θ with extent e: log2(e) × [depthwise 3×3 s2 + BN], ReLU between, sigmoid of the gathered
    map upsampled (nearest) to H × W, ×U; 11C·log2(e) parameters (anchor §2)."""
    ours = _randomize(_se("ge_theta", extent=extent))
    theirs = fixed_gather_excite(C, extra_params=True, use_mlp=False, extent=extent).eval()
    _load(ours, theirs, _ge_names(ours))
    x = torch.randn(2, C, *size)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
    assert sum(p.numel() for p in ours.parameters()) == 11 * C * int(math.log2(extent))


@pytest.mark.parametrize("extent", [2, 8])
def test_ge_theta_plus_is_timms_with_the_official_relu_after_the_gather(fixed_gather_excite, extent):
    """GE-θ⁺: the gather, a ReLU (the official RN50-GEPP; timm has none), SE's MLP C → C/16 → C
    with biases on the gathered map, sigmoid, ×U. Without the ReLU (squeeze gather) it is timm's θ⁺."""
    x = torch.randn(2, C, 14, 10)
    for squeeze, relu in (("gather", False), ("gather_relu", True)):
        ours = _randomize(_se("ge_theta_plus", extent=extent, squeeze=squeeze))
        theirs = fixed_gather_excite(C, extra_params=True, use_mlp=True, extent=extent).eval()
        if relu:
            theirs.gather.add_module("act", nn.ReLU())
        _load(ours, theirs, _ge_names(ours))
        with torch.no_grad():
            assert torch.equal(ours(x), theirs(x)), squeeze
    h = C // 16
    assert sum(p.numel() for p in ours.parameters()) == 11 * C * int(math.log2(extent)) + 2 * C * h + h + C


@pytest.mark.parametrize("preset", ["ge_theta", "ge_theta_plus"])
def test_global_ge_theta_is_gnets_unpadded_depthwise_conv_over_the_map(preset):
    """GENet's RN50-GEP(P): an H×W depthwise conv without padding or bias (one output per channel),
    BN, [ReLU and the MLP for θ⁺], sigmoid, ×U (timm's "global" conv is padded: anchor §0.3);
    C·N + 2C parameters, θ⁺ adds 2Ch + h + C. Other map sizes are refused in one line."""
    ours = _randomize(SEConfig.from_preset(preset, extent=0, kernel="7").plan().build(C, stage=2))
    gather, bn = ours.squeeze.gather.conv1, ours.squeeze.gather.norm1
    x = torch.randn(2, C, 7, 7)
    with torch.no_grad():
        y = F.batch_norm(F.conv2d(x, gather.weight, groups=C), bn.running_mean, bn.running_var, bn.weight,
                         bn.bias, eps=bn.eps).flatten(1)
        if preset == "ge_theta_plus":
            fc1, fc2 = ours.excitation.fc1, ours.excitation.fc2
            y = F.linear(torch.relu(F.linear(torch.relu(y), fc1.weight.flatten(1), fc1.bias)),
                         fc2.weight.flatten(1), fc2.bias)
        assert torch.equal(ours(x), x * torch.sigmoid(y).view(2, C, 1, 1))
        with pytest.raises(UserValueError, match="built for 7×7 maps \\(se.kernel\\); this one is 8×8"):
            ours(torch.randn(2, C, 8, 8))
    h = C // 16
    extra = 2 * C * h + h + C if preset == "ge_theta_plus" else 0
    assert sum(p.numel() for p in ours.parameters()) == C * 49 + 2 * C + extra


def test_ge_theta_options_are_checked_in_one_line():
    with pytest.raises(UserValueError, match="needs se.extent: a power of 2 >= 2 .* got 3"):
        SEConfig.from_preset("ge_theta", extent=3)
    with pytest.raises(UserValueError, match="give its side per stage in se.kernel"):
        SEConfig.from_preset("ge_theta", extent=0)
    with pytest.raises(UserValueError, match="se.extent does not apply to excitation 'fc' with squeeze 'avg'"):
        SEConfig(extent=2)
    with pytest.raises(UserValueError, match="must be odd for excitation 'eca'"):
        SEConfig.from_preset("eca", kernel="3,4")
    assert not PRESETS.info("ge_theta").study and not PRESETS.info("ge_theta_plus").study  # variants of ge


# --------------------------------------------------------------------------------------------
# Against the official implementations' formulas (modules timm lacks)
# --------------------------------------------------------------------------------------------
def test_srm_equals_the_official_srm_layer():
    """hyunjaelee410/style-based-recalibration-module: style pooling (mean, unbiased std, no ε),
    cfc (C × 2, initialised to 0), BatchNorm2d, sigmoid."""
    ours = _randomize(_se("srm"))
    cfc, bn = ours.excitation.cfc, ours.excitation.bn
    n, c = U.shape[:2]
    mean = U.view(n, c, -1).mean(dim=2, keepdim=True)
    std = U.view(n, c, -1).std(dim=2, keepdim=True)
    t = torch.cat((mean, std), dim=2)  # (N, C, 2)
    z = torch.sum(t * cfc[None, :, :], dim=2)[:, :, None, None]
    expected = U * torch.sigmoid(bn(z))
    with torch.no_grad():
        assert torch.equal(ours(U), expected)
    assert _se("srm").excitation.cfc.abs().sum() == 0  # the official initialisation


def test_gct_equals_the_official_gct_l2_mode():
    """z-x-yang/GCT: embedding = (Σx² + ε)^½ · α; norm = γ / (mean_c embedding² + ε)^½;
    gate = 1 + tanh(embedding · norm + β); ε = 1e-5; α = 1, γ = β = 0 at init (the identity)."""
    ours = _randomize(_se("gct"))
    alpha, gamma, beta = (p.view(1, C, 1, 1) for p in (ours.squeeze.alpha, ours.excitation.gamma,
                                                        ours.excitation.beta))
    eps = 1e-5
    embedding = (U.pow(2).sum((2, 3), keepdim=True) + eps).pow(0.5) * alpha
    norm = gamma / (embedding.pow(2).mean(dim=1, keepdim=True) + eps).pow(0.5)
    expected = U * (1.0 + torch.tanh(embedding * norm + beta))
    with torch.no_grad():
        assert torch.equal(ours(U), expected)
        assert torch.equal(_se("gct")(U), U)  # identity at init


@pytest.mark.parametrize("lam", [None, 0.5])
def test_simam_equals_the_official_simam_module(lam):
    """ZjjConan/SimAM: n = H·W − 1; d = (x − μ)²; y = d / (4 (Σd / n + λ)) + 0.5; x · sigmoid(y);
    λ = 1e-4 by default, 0.1 in the ImageNet models (the preset's)."""
    ours = _se("simam") if lam is None else _se("simam", lam=lam)
    e_lambda = 0.1 if lam is None else lam  # the preset sets 0.1 (ImageNet); an explicit key wins
    assert ours.excitation.lam == e_lambda
    n = U.shape[2] * U.shape[3] - 1
    d = (U - U.mean(dim=[2, 3], keepdim=True)).pow(2)
    y = d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + e_lambda)) + 0.5
    with torch.no_grad():
        assert torch.equal(ours(U), U * torch.sigmoid(y))
    assert SqueezeExcitation(C, squeeze="none", excitation="simam").excitation.lam == 1e-4


@pytest.mark.parametrize("side", [7, 14])
def test_fcanet_equals_the_official_multispectral_attention(side):
    """cfzd/FcaNet MultiSpectralAttentionLayer, 'top16', dct_h = dct_w = the map's side: the basis
    cos(π f (t + ½) / L) / √L (× √2 for f > 0), frequencies × (L // 7), C split into 16 groups;
    y = Σ_hw x · B; FC C → C/16 → C without bias, ReLU, sigmoid."""
    top_x = [0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2]
    top_y = [0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2]

    def build_filter(pos, freq, size):
        result = math.cos(math.pi * freq * (pos + 0.5) / size) / math.sqrt(size)
        return result if freq == 0 else result * math.sqrt(2)

    weight = torch.zeros(C, side, side)
    c_part = C // 16
    for i, (u_x, v_y) in enumerate(zip([x * (side // 7) for x in top_x], [y * (side // 7) for y in top_y],
                                       strict=True)):
        for t_x in range(side):
            for t_y in range(side):
                weight[i * c_part:(i + 1) * c_part, t_x, t_y] = (build_filter(t_x, u_x, side)
                                                                 * build_filter(t_y, v_y, side))
    x = torch.randn(2, C, side, side)
    ours = _randomize(_se("fca"))
    fc1, fc2 = (ours.excitation.fc1.weight.flatten(1), ours.excitation.fc2.weight.flatten(1))
    y = torch.sum(x * weight, dim=[2, 3])
    expected = x * torch.sigmoid(torch.relu(y @ fc1.T) @ fc2.T).view(2, C, 1, 1)
    with torch.no_grad():
        assert torch.equal(ours.squeeze.vectors(x), y)
        torch.testing.assert_close(ours(x), expected, rtol=1e-6, atol=1e-6)  # nn.Linear vs F.linear order
    assert sum(p.numel() for p in ours.parameters()) == 2 * C * (C // 16)  # the basis is no parameter


# --------------------------------------------------------------------------------------------
# Parameters of the papers' ResNet-50 variants (anchor §2) and FLOPs of one block (§2's formulas)
# --------------------------------------------------------------------------------------------
R50_PLAIN = 25_557_032
R50_PARAMS = [
    ("se", {}, 28_088_024),
    ("eca", {}, R50_PLAIN + 86),  # the adaptive k: 5, 5, 5, 7
    ("eca", {"kernel": "3,5,5,7"}, R50_PLAIN + 80),  # ECA-Net50's released k
    ("cbam", {}, 28_073_576),
    ("srm", {}, 25_617_448),
    ("gc", {}, 28_078_773),  # GCNet's ResNet-50: r = 16 in c3-c5, the preset's se.stages 3+
    ("gc", {"stages": "3,4,5"}, 28_078_773),  # the suite numbers stages as the paper: 2 = conv2_x
    ("gc", {"stages": "all"}, 28_105_032),  # all 16 blocks (anchor §2)
    ("ge", {}, R50_PLAIN),
    ("simam", {}, R50_PLAIN),
    ("fca", {}, 28_071_976),  # = SE without biases
    ("ge_theta", {"extent": 0, "kernel": "56,28,14,7"}, 31_106_600),  # global GE-θ: C·N + 2C per block
    ("ge_theta_plus", {"extent": 0, "kernel": "56,28,14,7"}, 33_637_592),  # + SE's MLP with biases
    ("ge_theta", {}, R50_PLAIN + 11 * 3 * (3 * 256 + 4 * 512 + 6 * 1024 + 3 * 2048)),  # extent 8: 33C
    # SK in place of each 3×3 conv + BN (no anchor figure): + 9w² + 2w + 3wd + 2d, d = 8, 8, 16, 32
    ("sk", {}, R50_PLAIN + sum(n * (9 * w * w + 2 * w + 3 * w * d + 2 * d) for n, w, d in
                               ((3, 64, 8), (4, 128, 8), (6, 256, 16), (3, 512, 32)))),
    # CA (no ResNet-50 figure in the anchor): 3Cm + 2m per block, m = make_divisible(C/24, 8, 0) = 8, 24, 40, 88
    ("ca", {}, R50_PLAIN + sum(n * (3 * c * m + 2 * m) for n, c, m in
                               ((3, 256, 8), (4, 512, 24), (6, 1024, 40), (3, 2048, 88)))),
    ("gct_block", {}, R50_PLAIN + 3 * (64 * 3 + 128 * 4 + 256 * 6 + 512 * 3)),  # 3C before each conv3
]


@pytest.mark.parametrize("preset,kw,params", R50_PARAMS, ids=lambda v: str(v))
def test_resnet50_parameter_totals_equal_the_anchors(preset, kw, params):
    model = build_model("se_resnet50", se=SEConfig.from_preset(preset, **kw))
    assert sum(p.numel() for p in model.parameters()) == params


H, W = 7, 5
N = H * W


def _block_flops(se: SqueezeExcitation) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncountedWorkWarning)
        return complexity(se, (H, W), in_chans=C).flops


BLOCK_FLOPS = {  # anchor §2, C = 64, h = 4, N = H·W
    "se": C * N + 2 * C * 4 + C * N,
    "eca": C * N + 3 * C + C * N,
    "cbam": (2 * C * N + 4 * C * 4 + C * N) + (2 * C * N + 2 * 49 * N + C * N),
    "srm": 3 * C * N + 2 * C + C * N,
    "ge": C * N + C * N,
    "gct": C * N + 3 * C + C * N,
    "gct_block": C * N + 3 * C + C * N,  # the same module, once per block
    "simam": 5 * C * N,
    "gc": C * N + C * N + 2 * C * 4 + C * N,
    "fca": C * N + 2 * C * 4 + C * N,
    # extent 8 on 7×5: depthwise 3×3 s2 convs to 4×3, 2×2, 1×1 (9C each output) [FCM] + C·N;
    # θ⁺ adds the MLP on the 1×1 gathered map (2Ch)
    "ge_theta": 9 * C * (12 + 4 + 1) + C * N,
    "ge_theta_plus": 9 * C * (12 + 4 + 1) + 2 * C * 4 + C * N,
    "ca": 2 * C * N + 2 * (H + W) * C * 8 + 2 * C * N,
}


@pytest.mark.parametrize("preset", SE_PRESETS)
def test_each_module_counts_its_flops_by_the_anchors_formula(preset):
    assert _block_flops(_se(preset)) == BLOCK_FLOPS[preset]


@pytest.mark.parametrize("preset", PRESETS.names())
def test_each_preset_counts_without_an_uncounted_module_on_resnet20(preset):
    model = build_model("se_resnet20", num_classes=3, se=SEConfig.from_preset(preset))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncountedWorkWarning)
        c = complexity(model, 16)
    assert c.flops > 0 and (c.se_flops > 0 or preset == "sk")


# --------------------------------------------------------------------------------------------
# Presets, keys and backbones
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS.names())
def test_each_preset_trains_and_fused_equals_unfused_on_a_tiny_resnet(preset):
    """Forward and backward train every part; a no-op hook on each SE module (which keeps the block
    from fusing the residual addition or folding the SE into BN) changes no number (float64)."""
    torch.manual_seed(0)
    model = ResNet(BasicBlock, (1, 1), (16, 32), stem="cifar", stem_width=16, shortcut="pad", num_classes=3,
                   se=SEConfig.from_preset(preset, reduction=2).plan())  # 16 and 32: FcaNet's 16 groups
    assert _forward_backward(model, 6).shape == (2, 3)
    model = model.double()
    hooked = copy.deepcopy(model)
    for m in se_modules(hooked).values():
        m.register_forward_hook(lambda m, i, o: None)
    x = torch.randn(3, 3, 6, 6, dtype=torch.float64)
    for train in (True, False):
        outs = [m.train(train)(x) for m in (model, hooked)]
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=1e-12)


def test_se_preset_key_expands_to_the_modules_keys_and_explicit_keys_win():
    cfg = config.from_flat({"model.name": "se_resnet20", "se.preset": "gc", "se.gate": "sigmoid"})
    assert (cfg.se.squeeze, cfg.se.excitation, cfg.se.combine, cfg.se.gate) == ("attn", "fc_ln", "add", "sigmoid")
    assert "se.preset" not in config.flatten(cfg)  # what it set is stored, not its name
    with pytest.raises(config.ConfigError, match="unknown preset 'nope'"):
        config.from_flat({"se.preset": "nope"})


def test_new_keys_left_unset_keep_se_and_its_config_id():
    from senet.records.trial_index import config_id
    flat = config.flatten(config.Config())
    new = ("rounding", "combine", "spatial", "kernel", "lam", "conv", "extent")
    assert all(flat[f"se.{k}"] is None for k in new)
    old = {k: v for k, v in flat.items() if k.removeprefix("se.") not in new}
    assert config_id(old) == config_id(flat)


@pytest.mark.parametrize("preset", PRESETS.names())
@pytest.mark.parametrize("name,size", [("se_resnet18", 32), ("se_resnext50_32x4d", 32), ("se_wrn16_8", 8),
                                       ("se_resnet164", 8), ("se_inception_small", 16),
                                       ("se_mobilenet_v1", 32), ("se_bn_inception", None)])
def test_each_preset_builds_on_every_family_or_says_why_not_in_one_line(preset, name, size):
    try:
        model = build_model(name, num_classes=3, se=SEConfig.from_preset(preset))
    except UserValueError as e:  # the paper's site is not in these blocks (SimAM's pre_bn2, GCT's inner),
        placement = SEConfig.from_preset(preset).placement  # C is no multiple of FcaNet's 16 groups,
        assert "\n" not in str(e), str(e)  # or the block has no 3×3 conv for SK to replace
        assert ((placement != "standard" and f"placement {placement!r}" in str(e))
                or (preset == "fca" and "not a multiple of 16" in str(e))
                or (preset == "sk" and "se.conv replaces the 3×3 conv" in str(e))), str(e)
        return
    if preset == "sk":
        assert any(isinstance(m, SelectiveKernelConv) for m in model.modules()) and not se_modules(model)
    else:
        assert se_modules(model)
    if size and name in ("se_resnet18", "se_wrn16_8", "se_inception_small"):
        with torch.no_grad():
            assert model.eval()(torch.randn(2, 3, size, size)).shape == (2, 3)


@pytest.mark.parametrize("name,stages", [("se_resnet50", {3, 4, 5}), ("se_resnet20", {3, 4}),
                                         ("se_inception_small", {3, 4, 5})])
def test_gc_preset_is_gcnets_c3_to_c5_and_every_stage_after_the_first_elsewhere(name, stages):
    assert SEConfig.from_preset("gc").stages == "3+"
    with torch.device("meta"):
        model = build_model(name, se=SEConfig.from_preset("gc"))
    assert {int(n.split("_")[1]) for n in se_modules(model)} == stages


def test_stages_from_n_on():
    assert parse_stages("3+") == parse_stages(" 3 + ") == StagesFrom(3)
    assert resolve_stages(parse_stages("3+"), (2, 3, 4, 5)) == {3, 4, 5}
    assert resolve_stages(parse_stages("2+"), (2, 3, 4)) == {2, 3, 4}
    with pytest.raises(UserValueError, match=r"se.stages 6\+ names no stage of this network; its stages are 2, 3, 4, 5"):
        build_model("se_resnet50", se=SEConfig(stages="6+"))
    with pytest.raises(UserValueError, match="'N\\+' \\(stage N and later\\)"):
        SEConfig(stages="3++")


#: GCT before every convolution of ResNet-50's bottlenecks (the official GCT-ResNet-50: conv1,
#: conv2, conv3 and the projection shortcut; its stem's GCT(3), 9 parameters, is outside the stages):
#: Σ over blocks of 3 × (C_in + w + w [+ C_in with a projection]) = 3 × 22,528.
R50_GCT_EVERY_CONV = R50_PLAIN + 3 * sum(
    (cin + 2 * w + cin) + (n - 1) * (4 * w + 2 * w)
    for cin, w, n in ((64, 64, 3), (256, 128, 4), (512, 256, 6), (1024, 512, 3)))


def test_gct_before_every_conv_counts_the_official_resnet50s_modules():
    assert R50_GCT_EVERY_CONV == R50_PLAIN + 67_584
    model = build_model("se_resnet50", se=SEConfig.from_preset("gct"))  # the preset is the paper's site
    assert sum(p.numel() for p in model.parameters()) == R50_GCT_EVERY_CONV
    names = list(se_modules(model))
    assert names[:4] == ["SE_2_1_conv1", "SE_2_1_conv2", "SE_2_1_conv3", "SE_2_1_downsample"]
    assert len(names) == 16 * 3 + 4  # three per bottleneck, one per projection shortcut


@pytest.mark.parametrize("block,convs", [(Bottleneck, ("conv1", "conv2", "conv3")), (BasicBlock, ("conv1", "conv2"))])
def test_gct_every_conv_sits_before_each_conv_and_the_shortcuts(block, convs):
    net = ResNet(block, (1,), (4,), stem_width=8, num_classes=3,
                 se=SEConfig.from_preset("gct", placement="every_conv").plan())
    b = _randomize(net).layer1[0]
    assert set(b.se) == {*convs, "downsample"}
    seen = {}
    for name in (*convs, "downsample"):
        conv = b.downsample[0] if name == "downsample" else getattr(b, name)
        conv.register_forward_pre_hook(lambda m, i, name=name: seen.update({f"{name}_in": i[0]}))
        b.se[name].register_forward_hook(lambda m, i, o, name=name: seen.update({f"{name}_gct": o}))
    with torch.no_grad():
        b(torch.randn(2, 8, 6, 6))
    for name in (*convs, "downsample"):
        assert seen[f"{name}_in"] is seen[f"{name}_gct"], name


def test_gct_every_conv_trains_fuses_and_counts_on_resnet20_and_refuses_preact_blocks_in_one_line():
    se = SEConfig.from_preset("gct", placement="every_conv")
    model = build_model("se_resnet20", num_classes=3, se=se)
    assert len(se_modules(model)) == 9 * 2  # option-A shortcuts hold no convolution
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncountedWorkWarning)
        c = complexity(model, 16)
    # 3C before conv1 (C_in) and conv2 (w): 3 × Σ (C_in + w) over the blocks of stages 16, 32, 64
    assert c.se_params == 3 * (3 * 32 + (48 + 2 * 64) + (96 + 2 * 128)) == sum(r.se_params for r in c.blocks)
    assert c.se_flops == sum(r.se_flops for r in c.blocks) > 0
    torch.manual_seed(0)
    net = ResNet(BasicBlock, (1, 1), (16, 32), stem="cifar", stem_width=16, num_classes=3, se=se.plan())
    assert _forward_backward(net, 6).shape == (2, 3)
    hooked = copy.deepcopy(net.double())
    for m in se_modules(hooked).values():
        m.register_forward_hook(lambda m, i, o: None)
    x = torch.randn(3, 3, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(net.eval()(x), hooked.eval()(x), rtol=1e-12, atol=1e-12)
    with pytest.raises(UserValueError, match="placement 'every_conv' does not apply to PreActBasicBlock") as e:
        build_model("se_wrn16_8", se=se)
    assert "\n" not in str(e.value)


def test_simam_sits_after_conv2_before_bn2():
    block = ResNet(Bottleneck, (1,), (4,), stem_width=8, num_classes=3,
                   se=SEConfig.from_preset("simam").plan()).layer1[0]
    seen = {}
    block.conv2.register_forward_hook(lambda m, i, o: seen.update(conv2=o))
    block.se.register_forward_hook(lambda m, i, o: seen.update(se_in=i[0], se_out=o))
    block.bn2.register_forward_hook(lambda m, i, o: seen.update(bn2_in=i[0]))
    block.eval()(torch.randn(2, 8, 6, 6))
    assert seen["se_in"] is seen["conv2"] and seen["bn2_in"] is seen["se_out"]


def test_parts_that_need_another_part_say_so():
    with pytest.raises(UserValueError, match="se.squeeze none"):
        SEConfig(excitation="simam").plan().build(8, stage=2)
    with pytest.raises(UserValueError, match="se.kernel does not apply"):
        SEConfig(kernel="3,5")
    with pytest.raises(UserValueError, match="stages 2-3"):
        build_model("se_resnet50", se=SEConfig.from_preset("eca", kernel="3,5"))


# --------------------------------------------------------------------------------------------
# Hidden-width rounding: the suite's and timm's
# --------------------------------------------------------------------------------------------
def test_timm_rounding_is_timms_make_divisible_with_round_limit_0():
    differ = {1: 0, 8: 0}
    for r in (2, 4, 8, 16, 32):
        for c in range(1, 2049):
            assert hidden_width(c, r, rounding="timm") == make_divisible(c / r, 1, round_limit=0.0)
            assert hidden_width(c, r, 1) == make_divisible(c / r, 1)  # the suite's divisor: the 0.9 rule
            differ[1] += hidden_width(c, r, 1) != make_divisible(c / r, 1, round_limit=0.0)
            if c % 8 == 0:
                assert hidden_width(c, r, 8, "timm") == make_divisible(c / r, 8, round_limit=0.0)
                assert hidden_width(c, r, 8) == make_divisible(c / r, 8)  # the suite's: the 0.9 rule
                differ[8] += hidden_width(c, r, 8) != make_divisible(c / r, 8, round_limit=0.0)
    assert differ == {1: 46, 8: 46}  # anchor §0.6 (the default exact C // r floors: it differs far more)
    assert (hidden_width(24, 16), hidden_width(24, 16, rounding="timm")) == (1, 2)
    assert (hidden_width(40, 4, 8), hidden_width(40, 4, 8, "timm")) == (16, 8)
