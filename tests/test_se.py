"""The SE block's design space (paper Eq. 2-4, Tables 10-16), looped over the registries so that a
newly registered gate, squeeze, excitation or placement is tested without anyone listing it here."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

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
from senet.models.blocks import BasicBlock
from senet.models.resnet import ResNet
from senet.se import hidden_width


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


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
def test_gate_stays_in_its_documented_range(gate):
    lo, hi = senet.se.GATE_RANGES[gate]
    s = _gate_output(gate)
    if gate in ("sigmoid", "hard_sigmoid", "tanh", "softmax"):  # bounded gates: the exact range
        assert lo <= s.min() and s.max() <= hi
    if gate in ("relu",):
        assert s.min() >= 0


def test_scale_multiplies_each_channel_by_its_gate():
    se = SqueezeExcitation(16, 4)
    u = torch.randn(2, 16, 4, 4)
    z = u.mean((2, 3), keepdim=True)
    s = torch.sigmoid(se.excitation.fc2(torch.relu(se.excitation.fc1(z))))
    torch.testing.assert_close(se(u), u * s)


@pytest.mark.parametrize("squeeze", SQUEEZES.names())
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
                  num_classes=3, se=se)


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
    GATES.names(), SQUEEZES.names(), EXCITATIONS.names())))
def test_every_combination_trains_on_the_smallest_resnet(gate, squeeze, excitation):
    for placement in PLACEMENTS.names():  # a loop, not a parameter: one test per SE module design
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


@pytest.mark.parametrize("placement", PLACEMENTS.names())
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
