"""The SE block's design space (paper Eq. 2-4, Tables 10-16), looped over the registries so that a
newly registered gate, squeeze, excitation or placement is tested without anyone listing it here."""
from __future__ import annotations

import copy
import itertools
import types

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import senet
from senet import (
    EXCITATIONS,
    GATES,
    MODELS,
    PLACEMENTS,
    SQUEEZES,
    SEConfig,
    SqueezeExcitation,
    build_model,
    se_modules,
)
from senet.fused import add_into
from senet.models.blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck, SESlot
from senet.models.resnet import ResNet
from senet.se import Squeeze, excitation_args, hidden_width, scale_add, spatial_mean, study_choices

pytestmark = pytest.mark.usefixtures("one_thread", "torch_seed")


# --------------------------------------------------------------------------------------------
# r and the hidden width
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels,r,hidden", [
    (256, 16, 16), (2048, 16, 128), (64, 16, 4), (64, 8, 8), (64, 32, 2), (100, 16, 6),
    (16, 16, 1), (8, 16, 1), (1, 2, 1), (96, 3, 32), (64, 2.5, 25),
])
def test_hidden_width_is_exact_c_over_r(channels, r, hidden):
    assert hidden_width(channels, r) == hidden
    assert SqueezeExcitation(channels, r).hidden == hidden
    assert SqueezeExcitation(channels, r).excitation.fc1.out_channels == hidden


def test_divisor_rounding_is_opt_in_and_merges_r_values():
    # Without rounding r = 8 and r = 16 give different networks on a 64-channel layer; rounding to
    # multiples of 8 (timm's default) makes them identical, which is why it is off by default.
    assert (hidden_width(64, 8), hidden_width(64, 16)) == (8, 4)
    assert (hidden_width(64, 8, 8), hidden_width(64, 16, 8)) == (8, 8)
    assert hidden_width(200, 16, 8) == 16  # 12.5 rounds to the nearest multiple of 8
    assert hidden_width(1000, 16, 8) == 64  # 62.5 -> 64
    assert hidden_width(2048, 16, 8) == 128
    se = SEConfig(divisor=8).factory()(64)
    assert se.hidden == 8


@pytest.mark.parametrize("r", [0, -1, -16])
def test_nonpositive_reduction_raises(r):
    with pytest.raises(ValueError, match="must be > 0"):
        SEConfig(reduction=r)
    with pytest.raises(ValueError, match="must be > 0"):
        SqueezeExcitation(64, r)


@pytest.mark.parametrize("field,registry", [
    ("gate", GATES), ("squeeze", SQUEEZES), ("excitation", EXCITATIONS), ("placement", PLACEMENTS),
    ("act", senet.ACTIVATIONS),
])
def test_unknown_names_list_the_choices(field, registry):
    with pytest.raises(ValueError) as e:
        SEConfig(**{field: "sigmod"})
    msg = str(e.value)
    assert "'sigmod'" in msg
    for name in registry.names():
        assert name in msg


@pytest.mark.parametrize("model,stages,valid", [
    ("se_resnet20", "5", "2, 3, 4"),
    ("se_resnet50", "6", "2, 3, 4, 5"),
    ("se_resnet50", "1,2", "2, 3, 4, 5"),
    ("se_bn_inception", "2", "3, 4, 5"),
    ("se_inception_small", "6", "3, 4, 5"),
    ("se_mobilenet_v1", "7", "2, 3, 4, 5, 6"),
])
def test_stage_out_of_range_lists_the_valid_stages(model, stages, valid):
    with pytest.raises(ValueError, match=f"stages are {valid}"), torch.device("meta"):
        build_model(model, se=SEConfig(stages=stages))


@pytest.mark.parametrize("stages", ["two", "2;3", "2,x"])
def test_malformed_stages_raise(stages):
    with pytest.raises(ValueError, match="se.stages"):
        SEConfig(stages=stages)


@pytest.mark.parametrize("model,valid", [
    ("se_bn_inception", ["standard"]),
    ("se_inception_small", ["standard"]),
    ("se_mobilenet_v1", ["standard", "inner"]),
])
def test_placements_a_backbone_cannot_host_raise_with_its_choices(model, valid):
    for placement in PLACEMENTS.names():
        if placement in valid:
            continue
        with pytest.raises(ValueError, match="choose one of: " + ", ".join(valid)), \
                torch.device("meta"):
            build_model(model, se=SEConfig(placement=placement))


# --------------------------------------------------------------------------------------------
# Gates
# --------------------------------------------------------------------------------------------
def _gate_output(gate: str, channels=32, **kw) -> torch.Tensor:
    se = SqueezeExcitation(channels, 4, gate=gate, **kw)
    seen = {}
    se.gate.register_forward_hook(lambda m, i, o: seen.setdefault("s", o))
    se(torch.randn(3, channels, 5, 5))
    return seen["s"]


def test_softmax_gate_sums_to_one_over_channels():
    s = _gate_output("softmax")
    assert s.shape == (3, 32, 1, 1)
    torch.testing.assert_close(s.sum(1), torch.ones(3, 1, 1))
    assert (s > 0).all()


def test_softmax_c_gate_has_mean_one():
    s = _gate_output("softmax_c")
    torch.testing.assert_close(s.mean(1), torch.ones(3, 1, 1))
    assert (s > 0).all() and (s < 32).all()


@pytest.mark.parametrize("gate", GATES.names())
def test_gate_stays_in_its_registered_range(gate):
    lo, hi = GATES.info(gate).range
    assert lo < hi
    for scale in (1.0, 100.0):  # large inputs drive a bounded gate to its bounds
        se = SqueezeExcitation(32, 4, gate=gate)
        seen = {}
        se.gate.register_forward_hook(lambda m, i, o: seen.setdefault("s", o))
        se(torch.randn(3, 32, 5, 5) * scale)
        assert lo <= seen["s"].min() and seen["s"].max() <= hi, (scale, seen["s"].aminmax())


# --------------------------------------------------------------------------------------------
# Excitations: the arguments each takes, and the bottleneck width only where there is one
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("excitation", EXCITATIONS.names())
def test_an_excitation_gets_only_the_arguments_it_takes(excitation):
    takes = excitation_args(EXCITATIONS.get(excitation))
    squeeze = "none" if getattr(EXCITATIONS.get(excitation), "needs_map", False) else "avg"  # SimAM's energy
    se = SqueezeExcitation(64, 4, squeeze=squeeze, excitation=excitation, act="gelu", bias=False)
    assert se.hidden == (16 if "hidden" in takes else None)
    assert ("hidden=16" in repr(se)) == ("hidden" in takes)
    assert any(isinstance(m, nn.GELU) for m in se.excitation.modules()) == ("act" in takes)
    assert all(getattr(m, "bias", None) is None for m in se.excitation.modules() if isinstance(m, nn.Conv2d))


def test_excitations_without_a_bottleneck_declare_it_by_their_signature():
    assert excitation_args(EXCITATIONS.get("fc")) == {"hidden", "act", "bias"}
    assert excitation_args(EXCITATIONS.get("linear")) == {"bias"}
    assert excitation_args(EXCITATIONS.get("eca")) == {"kernel"}  # se.kernel, not a bottleneck
    assert {n: tuple(p.shape) for n, p in SqueezeExcitation(32, 4, excitation="linear").named_parameters()} == {
        "excitation.fc.weight": (32, 32, 1, 1), "excitation.fc.bias": (32,)}
    assert {n: tuple(p.shape) for n, p in SqueezeExcitation(32, 4, excitation="eca").named_parameters()} == {
        "excitation.conv.weight": (1, 1, 3)}


def test_a_callable_excitation_is_called_with_the_arguments_it_names():
    seen = {}

    def gated_linear(channels, hidden, **rest):
        seen.update(hidden=hidden, **rest)
        return nn.Conv2d(channels, channels, 1)

    se = SqueezeExcitation(32, 8, excitation=gated_linear, bias=False)
    assert seen.keys() == {"hidden", "act", "bias"} and seen["hidden"] == 4 and seen["bias"] is False
    assert se.hidden == 4
    assert SqueezeExcitation(32, 8, excitation=lambda channels: nn.Conv2d(channels, channels, 1)).hidden is None


def test_scale_multiplies_each_channel_by_its_gate():
    se = SqueezeExcitation(16, 4)
    u = torch.randn(2, 16, 4, 4)
    z = u.mean((2, 3), keepdim=True)
    s = torch.sigmoid(se.excitation.fc2(torch.relu(se.excitation.fc1(z))))
    torch.testing.assert_close(se(u), u * s)


@pytest.mark.parametrize("squeeze", study_choices(SQUEEZES))
def test_squeeze_descriptors(squeeze):
    u = torch.randn(2, 8, 3, 3)
    z = SQUEEZES.get(squeeze)()(u)
    k = SQUEEZES.get(squeeze).descriptors
    pooled = SQUEEZES.get(squeeze).pooled
    assert z.shape == ((2, k, 8, 1, 1) if pooled else (2, k, 8, 3, 3))
    if squeeze == "avg":
        torch.testing.assert_close(z[:, 0, :, 0, 0], u.mean((2, 3)))
    if squeeze == "max":
        torch.testing.assert_close(z[:, 0, :, 0, 0], u.amax((2, 3)))
    if squeeze == "avgstd":
        torch.testing.assert_close(z[:, 1, :, 0, 0], u.std((2, 3), correction=0), atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------------------------
# Every combination runs forward and backward on the smallest residual net; one per family
# --------------------------------------------------------------------------------------------
def _tiny_resnet(se: SEConfig) -> nn.Module:
    """Two stages of one basic block: the smallest network that exercises every placement site,
    with and without a (parameter-free) down-sampling shortcut."""
    return ResNet(BasicBlock, (1, 1), (4, 8), stem="cifar", stem_width=4, shortcut="pad",
                  num_classes=3, se=se.plan())


def _forward_backward(model: nn.Module, size: int, in_chans=3, batch=2) -> torch.Tensor:
    model.train()
    x = torch.randn(batch, in_chans, size, size)
    out = model(x)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    return out


@pytest.mark.parametrize("gate,squeeze,excitation", list(itertools.product(
    study_choices(GATES), study_choices(SQUEEZES), study_choices(EXCITATIONS))))
def test_every_combination_trains_on_the_smallest_resnet(gate, squeeze, excitation):
    for placement in study_choices(PLACEMENTS):  # a loop, not a parameter: one test per SE module design
        se = SEConfig(reduction=2, gate=gate, squeeze=squeeze, excitation=excitation,
                      placement=placement)
        model = _tiny_resnet(se)
        out = _forward_backward(model, 4)
        assert out.shape == (2, 3), placement
        ses = se_modules(model)
        assert list(ses) == ["SE_2_1", "SE_3_1"], placement
        for m in ses.values():  # the SE's own parameters learn too
            params = list(m.parameters())
            assert params and all(p.grad is not None for p in params), placement


#: For each model family: the smallest registered member, a tiny input side, and one
#: representative non-default SE combination its blocks can host.
FAMILY_PROBES = {
    "cifar_resnet": ("se_resnet20", 16, dict(gate="tanh", squeeze="max", placement="pre")),
    "wrn": ("se_wrn16_8", 8, dict(gate="softmax_c", squeeze="avgstd", placement="identity")),
    "resnet": ("se_resnet18", 32, dict(gate="hard_sigmoid", excitation="eca", placement="post")),
    "resnext": ("se_resnext50_32x4d", 32, dict(gate="relu", squeeze="avgmax", placement="inner")),
    "inception": ("se_inception_small", 16, dict(gate="softmax", excitation="linear")),
    "mobilenet": ("se_mobilenet_v1", 32, dict(squeeze="none", placement="inner")),
}


def test_family_probes_cover_every_registered_family():
    assert {s.family for s in MODELS._entries.values()} == set(FAMILY_PROBES)


@pytest.mark.parametrize("family", sorted(FAMILY_PROBES))
def test_each_family_trains_with_a_representative_se(family):
    name, size, kw = FAMILY_PROBES[family]
    model = build_model(name, num_classes=5, se=SEConfig(**kw))
    out = _forward_backward(model, size)
    assert out.shape == (2, 5)
    assert se_modules(model)


@pytest.mark.parametrize("name,size", [("resnet20", 28), ("inception_small", 28),
                                       ("wrn16_8", 28)])
def test_one_channel_input_any_classes(name, size):
    """Fashion-MNIST: 1 × 28 × 28 images, 10 classes (and any other class count)."""
    model = build_model(name, num_classes=7, in_chans=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, size, size)).shape == (2, 7)


# --------------------------------------------------------------------------------------------
# Every SE block is on the forward path
# --------------------------------------------------------------------------------------------
def _calibrate_bn(model: nn.Module, x: torch.Tensor) -> None:
    """Set BN running statistics to one batch's, so that eval-mode activations of a fresh deep
    network neither vanish nor explode (each untrained SE gate halves its input, σ(0) = 1/2)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()


def _perturbation_changes_output(model: nn.Module, size: int) -> dict[str, float]:
    x = torch.randn(4, 3, size, size)
    _calibrate_bn(model, x)
    with torch.no_grad():
        ref = model(x)
    changes = {}
    for name, se in se_modules(model).items():
        factor = {}

        def perturb(m, inputs, out):
            if "f" not in factor:  # a fixed random positive rescaling per channel
                factor["f"] = torch.rand_like(out) * 1.5 + 0.25
            return out * factor["f"]

        h = se.gate.register_forward_hook(perturb)
        try:
            with torch.no_grad():
                changes[name] = (model(x) - ref).abs().max().item()
        finally:
            h.remove()
    with torch.no_grad():  # hooks are gone: the output is back
        torch.testing.assert_close(model(x), ref)
    return changes


@pytest.mark.parametrize("placement", study_choices(PLACEMENTS))
def test_each_se_is_on_the_forward_path_tiny_resnet(placement):
    changes = _perturbation_changes_output(_tiny_resnet(SEConfig(placement=placement, reduction=2)), 8)
    assert len(changes) == 2
    assert all(v > 1e-6 for v in changes.values()), changes


@pytest.mark.parametrize("name,size,n_se", [
    ("se_resnet20", 16, 9), ("se_inception_small", 16, 10), ("se_mobilenet_v1", 32, 13),
    ("se_bn_inception", 64, 10),
])
def test_each_se_is_on_the_forward_path(name, size, n_se):
    changes = _perturbation_changes_output(build_model(name), size)
    assert len(changes) == n_se
    assert all(v > 1e-6 for v in changes.values()), changes


# --------------------------------------------------------------------------------------------
# The fused block: the same numbers as the straightforward ``u * gate(...)`` path
# --------------------------------------------------------------------------------------------
def _reference_avgstd(u):
    var, mean = torch.var_mean(u, (2, 3), keepdim=True, correction=0)
    return torch.stack((mean, (var + 1e-5).sqrt()), 1)


#: The squeezes as written before the fused block (plain autograd); a squeeze registered later is
#: its own reference, called through ``forward`` so that hooks on it see only the SE's own call.
_REFERENCE_SQUEEZES = {
    "avg": lambda u: u.mean((2, 3), keepdim=True).unsqueeze(1),
    "max": lambda u: u.amax((2, 3), keepdim=True).unsqueeze(1),
    "avgmax": lambda u: torch.stack((u.mean((2, 3), keepdim=True), u.amax((2, 3), keepdim=True)), 1),
    "avgstd": _reference_avgstd,
    "none": lambda u: u.unsqueeze(1),
}


def _reference_squeeze(se, u):
    name = next((n for n in SQUEEZES.names() if type(se.squeeze) is SQUEEZES.get(n)), None)
    return _REFERENCE_SQUEEZES[name](u) if name in _REFERENCE_SQUEEZES else se.squeeze.forward(u)


def _reference_excitation(exc, z):
    """The excitations' 1×1-convolution path on (M, C, h, w), as before the matrix-product path."""
    if isinstance(exc, senet.se.FCExcitation):
        return exc.fc2(exc.act(exc.fc1(z)))
    if isinstance(exc, senet.se.LinearExcitation):
        return exc.fc(z)
    if isinstance(exc, senet.se.ECAExcitation):
        m, c, h, w = z.shape
        y = exc.conv(z.permute(0, 2, 3, 1).reshape(m * h * w, 1, c))
        return y.reshape(m, h, w, c).permute(0, 3, 1, 2)
    return exc(z)


def _reference_se(se, u):
    z = _reference_squeeze(se, u)
    n, k = z.shape[:2]
    e = _reference_excitation(se.excitation, z.flatten(0, 1))
    if k > 1:
        e = e.unflatten(0, (n, k)).sum(1)
    return u * se.gate(e)


def _reference_block_forward(block, x):
    """The residual blocks' forward passes as written before the fused scale-add."""
    def at(site, t):
        return _reference_se(block.se, t) if block.se_site == site else t

    b = block
    if isinstance(b, (BasicBlock, Bottleneck)):
        identity = x if b.downsample is None else b.downsample(x)
        out = at("branch_in", x)
        out = b.relu(b.bn1(b.conv1(out)))
        if isinstance(b, Bottleneck):
            out = b.relu(b.bn2(b.conv2(out)))
            out = at("inner", out)
            out = b.bn3(b.conv3(out))
        else:
            out = at("inner", out)
            out = b.bn2(b.conv2(out))
        out = at("branch_out", out)
        out = out + at("shortcut", identity)
        return at("block_out", b.relu(out))
    assert isinstance(b, (PreActBasicBlock, PreActBottleneck)), type(b)
    pre = b.relu(b.bn1(x))
    identity = x if b.downsample is None else b.downsample(pre)
    out = at("branch_in", pre)
    if isinstance(b, PreActBottleneck):
        out = b.conv1(out)
        out = b.conv2(b.relu(b.bn2(out)))
        out = b.relu(b.bn3(out))
        out = at("inner", out)
        out = b.conv3(out)
    else:
        out = b.conv1(out)
        out = b.relu(b.bn2(out))
        out = at("inner", out)
        out = b.conv2(b.drop(out))
    out = at("branch_out", out)
    return at("block_out", out + at("shortcut", identity))


def _reference_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose blocks run the reference forward passes (same weights)."""
    twin = copy.deepcopy(model)
    for m in twin.modules():
        if isinstance(m, SESlot):
            m.forward = types.MethodType(_reference_block_forward, m)
    return twin


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _assert_same_numbers(model: nn.Module, size: int, channels_last=False):
    """Outputs, input and parameter gradients of ``model`` and of its reference twin, in training
    mode (batch statistics) and in eval mode.

    In float64 they agree to 1e-10 tensor by tensor: the same arithmetic, in another order. In
    float32 the output, the input's gradient and the parameters' gradient (all tensors as one
    vector) agree to 1e-5 relative; a single small tensor (an SE bias of 2 elements, a BN scale)
    only to 1e-3, as the reference itself does against float64 there (sums that cancel).
    """
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, 3, size, size)
    for dtype in (torch.float64, torch.float32):
        new = copy.deepcopy(model).to(dtype=dtype, memory_format=fmt)
        ref = _reference_twin(new)
        xd = x.to(dtype).contiguous(memory_format=fmt)
        for train in (True, False):
            results = []
            for m in (new, ref):
                m.train(train)
                xi = xd.clone().requires_grad_()
                out = m(xi)
                (out * torch.linspace(-1, 1, out.numel(), dtype=dtype).view_as(out)).sum().backward()
                results.append([out.detach(), xi.grad] + [p.grad for p in m.parameters()])
            where = (dtype, "train" if train else "eval")
            names = ["output", "input"] + [n for n, _ in new.named_parameters()]
            for name, g, r in zip(names, *results, strict=True):
                assert (g is None) == (r is None), name
                if r is not None:
                    tol = 1e-10 if dtype == torch.float64 else 1e-5 if name in ("output", "input") else 1e-3
                    assert _rel(g, r) <= tol, (name, *where, _rel(g, r))
            if dtype == torch.float32:
                flat = [torch.cat([t.flatten() for t in res[2:] if t is not None]) for res in results]
                assert _rel(*flat) <= 1e-5, ("parameter gradients", *where, _rel(*flat))


@pytest.mark.parametrize("gate,squeeze,excitation", list(itertools.product(
    study_choices(GATES), study_choices(SQUEEZES), study_choices(EXCITATIONS))))
def test_every_se_design_gives_the_unfused_numbers(gate, squeeze, excitation):
    for placement in study_choices(PLACEMENTS):
        torch.manual_seed(0)
        _assert_same_numbers(_tiny_resnet(SEConfig(reduction=2, gate=gate, squeeze=squeeze,
                                                   excitation=excitation, placement=placement)), 6)


def _perturb_bn(model: nn.Module) -> nn.Module:
    """BN statistics and affine parameters away from their initial values, so eval mode differs."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.5, 0.5)
    return model


@pytest.mark.parametrize("name,size,kw", [
    ("se_resnet20", 16, {}),
    ("bottleneck", 32, dict(stride_in_1x1=True)),  # se_resnet50's blocks, narrow and short
    ("bottleneck", 32, dict(stride_in_1x1=False)),
    ("preact_basic", 16, {}),  # the wide ResNets' blocks
    ("preact_bottleneck", 16, {}),  # ResNet-164's
])
@pytest.mark.parametrize("placement", study_choices(PLACEMENTS))
def test_every_residual_block_gives_the_unfused_numbers(name, size, kw, placement):
    se = SEConfig(reduction=4, placement=placement)
    torch.manual_seed(0)
    if name == "bottleneck":
        model = ResNet(Bottleneck, (2, 1), (8, 16), stem_width=8, num_classes=5, se=se.plan(), **kw)
    elif name == "preact_basic":
        model = ResNet(PreActBasicBlock, (2, 1), (8, 16), stem="cifar", stem_width=8,
                       shortcut="conv_nobn", num_classes=5, se=se.plan())
    elif name == "preact_bottleneck":
        model = ResNet(PreActBottleneck, (2, 1), (4, 8), stem="cifar", stem_width=8,
                       shortcut="conv_nobn", num_classes=5, se=se.plan())
    else:
        model = build_model(name, num_classes=5, se=se)
    _perturb_bn(model)
    _assert_same_numbers(model, size)
    _assert_same_numbers(model, size, channels_last=True)


def test_standard_and_identity_se_scale_inside_the_residual_addition():
    """The scaling feeds the addition in one pass (addcmul), with no full-size product of its own;
    in training its backward makes the two full-size products it needs (g·s, g·u) and nothing else
    of the SE's at full size (no multiplication by addcmul's value 1, no materialised mean gradient)."""
    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.full = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and out.shape == (2, 8, 6, 6):
                self.full.append(func.overloadpacket.__name__)
            return out

    for placement in ("standard", "identity"):
        block = BasicBlock(8, 8, se=SEConfig(placement=placement, reduction=2).plan()).train()
        x = torch.randn(2, 8, 6, 6)
        for grad in (False, True):
            with torch.set_grad_enabled(grad), Ops() as ops:
                out = block(x.clone().requires_grad_(grad))
            assert "addcmul" in ops.full and "mul" not in ops.full and "add" not in ops.full, \
                (placement, grad, ops.full)
            torch.testing.assert_close(out, _reference_block_forward(block, x))
            if grad:
                with Ops() as ops:
                    out.backward(torch.randn_like(out))
                assert ops.full.count("mul") == 2 and "div" not in ops.full, (placement, ops.full)


@pytest.mark.parametrize("placement", ["standard", "identity"])
def test_a_hook_on_the_se_module_sees_and_replaces_its_output(placement):
    """Hooks on ``se`` (the complexity counter, SE removal) see ``u * s`` and can replace it."""
    block = BasicBlock(8, 8, se=SEConfig(placement=placement, reduction=2).plan()).eval()
    x = torch.randn(2, 8, 5, 5)
    seen = {}
    h1 = block.se.gate.register_forward_hook(lambda m, i, o: seen.update(s=o))
    h2 = block.se.register_forward_hook(lambda m, i, o: seen.update(io=(i[0], o)))
    with torch.no_grad():
        fused = block(x)
    h2.remove()
    u, out = seen["io"]
    torch.testing.assert_close(out, u * seen["s"])
    with torch.no_grad():
        torch.testing.assert_close(block(x), fused)  # unhooked again: the fused pass, same numbers
    h1.remove()
    with block.se.register_forward_hook(lambda m, i, o: torch.zeros_like(o)), torch.no_grad():
        if placement == "standard":  # the branch is switched off: relu(x + 0)
            torch.testing.assert_close(block(x), torch.relu(x))
        else:  # the shortcut is: the block is its branch
            branch = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
            torch.testing.assert_close(block(x), torch.relu(branch))


def _bottleneck_net(**kw) -> nn.Module:
    """Two stages of bottlenecks with BN statistics away from their initial values: at 32² the
    first stage's maps are 8 × 8 (the fold pools before the last 1×1 convolution), the second's
    4 × 4 with twice the channels (it pools after it)."""
    model = ResNet(Bottleneck, (2, 1), (8, 16), stem_width=8, num_classes=5,
                   se=SEConfig(reduction=4).plan(), **kw)
    return _perturb_bn(model).eval()


@pytest.mark.parametrize("stride_in_1x1", [True, False])
def test_inference_folds_a_bottleneck_se_into_its_last_bn_with_the_same_numbers(stride_in_1x1):
    """At inference (no gradient, BN on running statistics) the SE of a bottleneck folds into its
    last 1×1 convolution and BN: the same outputs as the unfolded block, at batch 1 and 3, in both
    memory formats, in float64 to 1e-10 and float32 to 1e-6 relative, and under bf16 autocast as
    close as bf16 rounding allows."""
    model = _bottleneck_net(stride_in_1x1=stride_in_1x1)
    folds = []
    for block in model.modules():
        if isinstance(block, Bottleneck):
            block.se.fold = types.MethodType(
                lambda se, *a, _f=SqueezeExcitation.fold: folds.append(1) or _f(se, *a), block.se)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-6)):
        for fmt in (torch.contiguous_format, torch.channels_last):
            m = copy.deepcopy(model).to(dtype=dtype, memory_format=fmt)
            ref = _reference_twin(m)
            for batch in (1, 3):
                x = torch.randn(batch, 3, 32, 32, dtype=dtype).contiguous(memory_format=fmt)
                for mode in (torch.inference_mode, torch.no_grad):
                    folds.clear()
                    with mode():
                        got, expected = m(x), ref(x)
                    assert len(folds) == 3, (dtype, fmt, batch, mode)
                    assert _rel(got, expected) <= tol, (dtype, fmt, batch, mode, _rel(got, expected))
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        got, expected = model(x), _reference_twin(model)(x)
    assert _rel(got.float(), expected.float()) <= 2e-2


#: Operations that only alias memory (no pass over it).
_VIEWS = {"view", "_unsafe_view", "reshape", "as_strided", "expand", "alias", "detach", "t", "unsqueeze"}


def _full_size_ops(block: nn.Module, x: torch.Tensor) -> list[str]:
    """The operations that pass over as many elements as the block's output (views as any shape),
    by name without the in-place mark, in order."""
    numel = block(x).numel()

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            ts = [t for t in (*args, out) if isinstance(t, torch.Tensor)]
            if name not in _VIEWS and any(t.numel() == numel for t in ts):
                seen.append(name.rstrip("_"))
            return out

    seen: list[str] = []
    with Ops():
        block(x)
    return seen


@pytest.mark.parametrize("size,pooled_after", [(8, False), (3, True)])
def test_a_folded_se_adds_no_full_size_pass_to_the_bottleneck(size, pooled_after):
    """Folded, the SE block's full-size work is the plain bottleneck's (convolution, BN, addition,
    ReLU): no product, no scaled addition; on small maps the pooling reads the BN's input once."""
    torch.manual_seed(0)
    se = Bottleneck(32, 8, se=SEConfig(reduction=4).plan()).eval()
    plain = Bottleneck(32, 8).eval()
    x = torch.randn(3, 32, size, size)
    with torch.inference_mode():
        ops, plain_ops = _full_size_ops(se, x), _full_size_ops(plain, x)
        assert plain_ops == ["conv2d", "conv2d", "batch_norm", "add", "relu"], plain_ops
        assert [o for o in ops if o != "mean"] == plain_ops and ops.count("mean") == pooled_after, ops
        torch.testing.assert_close(se(x), _reference_block_forward(se, x))
    with torch.no_grad():
        assert "addcmul" in _full_size_ops(se.train(), x)  # training: the scaled addition


@pytest.mark.parametrize("hooked", ["se", "squeeze", "conv3", "bn3"])
def test_a_hook_on_what_the_fold_skips_keeps_the_bottleneck_unfolded(hooked):
    """A hook on the SE module, its squeeze, or the convolution and BN it would fold into sees them
    called, in inference mode too; a hook on the gate (how the analysis reads excitations) sees
    the same s folded or not."""
    model = _bottleneck_net()
    block = model.layer1[0]
    x = torch.randn(2, 3, 32, 32)
    seen = {}
    gate = block.se.gate.register_forward_hook(lambda m, i, o: seen.update(s=o.clone()))
    with torch.inference_mode():
        expected = _reference_twin(model)(x)
        reference_s = seen.pop("s")
        model(x)
        torch.testing.assert_close(seen.pop("s"), reference_s)
    gate.remove()
    target = {"se": block.se, "squeeze": block.se.squeeze, "conv3": block.conv3, "bn3": block.bn3}[hooked]
    with target.register_forward_hook(lambda m, i, o: seen.update(called=True)), torch.inference_mode():
        torch.testing.assert_close(model(x), expected)
    assert seen == {"called": True}


def _residual_adds(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The names of the additions of the model's output shape, in order, in-place ones with '_'."""
    numel = model(x).numel()

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            if name.rstrip("_") in ("add", "addcmul") and isinstance(out, torch.Tensor) and out.numel() == numel:
                seen.append(name)
            return out

    seen: list[str] = []
    with Ops():
        model(x)
    return seen


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_at_inference_a_block_without_se_adds_into_its_bns_output(block):
    """With no gradient recorded and no hook on the last BN, the residual addition writes into BN's
    output (as torchvision's and timm's blocks do) with the same numbers; a hook on that BN, which
    may keep its output, or a recorded gradient keeps the addition out of place."""
    torch.manual_seed(0)
    if block == "basic":
        plain, bn = _perturb_bn(BasicBlock(8, 8)).eval(), "bn2"
    else:
        plain, bn = _perturb_bn(Bottleneck(32, 8)).eval(), "bn3"
    x = torch.randn(2, plain.conv1.in_channels, 6, 6)
    with torch.no_grad():
        assert _residual_adds(plain, x) == ["add_"]
        got = plain(x)
    expected = plain(x)  # gradient recorded: out of place
    assert _residual_adds(plain, x) == ["add"]
    assert torch.equal(got, expected)
    kept = []
    with getattr(plain, bn).register_forward_hook(lambda m, i, o: kept.append((o, o.clone()))), torch.no_grad():
        assert _residual_adds(plain, x) == ["add"]
        out = plain(x)
    held, copied = kept[-1]
    assert torch.equal(held, copied)  # the tensor the hook kept is still BN's output, not the sum
    assert torch.equal(out, expected)
    # an SE elsewhere in the block leaves the addition to the block as well
    se_inner = BasicBlock(8, 8, se=SEConfig(placement="post", reduction=2).plan()).eval()
    with torch.no_grad():
        assert _residual_adds(se_inner, torch.randn(2, 8, 6, 6)) == ["add_"]


def test_add_into_writes_in_place_only_where_the_sum_keeps_shape_and_dtype():
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    expected = a + b
    out = add_into(a, b)
    assert out is a and torch.equal(out, expected)
    half = torch.randn(2, 3, 4, 4, dtype=torch.bfloat16)
    mixed = add_into(half, b)  # bf16 + float32 is float32, as the unfused addition gives
    assert mixed.dtype == torch.float32 and torch.equal(mixed, half + b)
    assert half.dtype == torch.bfloat16
    row = torch.randn(1, 3, 1, 1)
    assert add_into(row, b).shape == (2, 3, 4, 4)  # broadcast to a larger shape: a new tensor


def test_pooled_excitation_keeps_the_gate_shape_and_parameter_names():
    """The matrix-product FCs use the 1×1 convolutions' own parameters: timm's names and shapes."""
    se = SqueezeExcitation(32, 4)
    assert {n: tuple(p.shape) for n, p in se.named_parameters()} == {
        "excitation.fc1.weight": (8, 32, 1, 1), "excitation.fc1.bias": (8,),
        "excitation.fc2.weight": (32, 8, 1, 1), "excitation.fc2.bias": (32,)}
    for excitation in study_choices(EXCITATIONS):
        se = SqueezeExcitation(32, 4, excitation=excitation)
        seen = {}
        se.gate.register_forward_hook(lambda m, i, o: seen.update(s=o))
        u = torch.randn(3, 32, 5, 5).contiguous(memory_format=torch.channels_last)
        out = se(u)
        assert seen["s"].shape == (3, 32, 1, 1), excitation
        assert out.is_contiguous(memory_format=torch.channels_last), excitation
        torch.testing.assert_close(out, _reference_se(se, u))


def test_fused_ops_have_the_unfused_gradients_and_forward_derivatives():
    x, u = (torch.randn(2, 3, 4, 5, dtype=torch.double, requires_grad=True) for _ in range(2))
    for s in (torch.rand(2, 3, 1, 1, dtype=torch.double, requires_grad=True),
              torch.rand(2, 3, 4, 5, dtype=torch.double, requires_grad=True)):
        assert torch.autograd.gradcheck(scale_add, (x, u, s), check_forward_ad=True)
        assert torch.autograd.gradgradcheck(scale_add, (x, u, s))
    assert torch.autograd.gradcheck(spatial_mean, (u,), check_forward_ad=True)
    assert torch.autograd.gradgradcheck(spatial_mean, (u,))


@pytest.mark.parametrize("excitation", study_choices(EXCITATIONS))
@pytest.mark.parametrize("squeeze", [n for n in study_choices(SQUEEZES) if SQUEEZES.get(n).pooled])
def test_hooks_inside_the_se_see_their_modules_called_as_before(squeeze, excitation):
    """The pooled path skips module calls only where nothing watches them: a hook on the squeeze
    or on an FC sees it called with the shapes it always had, and the numbers do not change."""
    se = SqueezeExcitation(16, 4, squeeze=squeeze, excitation=excitation)
    u = torch.randn(3, 16, 5, 5)
    convs = [m for m in se.excitation.modules() if isinstance(m, (nn.Conv2d, nn.Conv1d))]
    seen = []
    handles = [m.register_forward_hook(lambda m, i, o: seen.append((type(m).__name__, i[0].shape, o.shape)))
               for m in [se.squeeze, *convs]]
    expected = _reference_se(se, u)  # calls the convs (not the squeeze module) as the old forward did
    reference_calls, seen[:] = list(seen), []
    torch.testing.assert_close(se(u), expected)
    k = SQUEEZES.get(squeeze).descriptors
    assert seen == [(type(se.squeeze).__name__, (3, 16, 5, 5), (3, k, 16, 1, 1)), *reference_calls]
    for h in handles:
        h.remove()
    torch.testing.assert_close(se(u), expected)


def test_a_squeeze_that_defines_only_forward_still_works():
    """A user's pooled squeeze written against the (N, K, C, 1, 1) contract needs no ``vectors``."""
    class SquareMean(Squeeze):
        def forward(self, u):
            return u.square().mean((2, 3), keepdim=True).unsqueeze(1)

    se = SqueezeExcitation(8, 2, squeeze=SquareMean)
    u = torch.randn(3, 8, 4, 4)
    torch.testing.assert_close(se(u), _reference_se(se, u))
    x = torch.randn(3, 8, 4, 4)
    torch.testing.assert_close(se.scale_add(u, x), _reference_se(se, u) + x)
