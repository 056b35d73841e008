"""timm and torchvision state dicts load into the suite's models and give the same logits
(randomly initialised sources: no download)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import senet
from senet import SEConfig, build_model
from senet.interop import SOURCES, load_external, map_state_dict

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")


pytestmark = pytest.mark.usefixtures("one_thread", "torch_seed")


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Fresh models have identity BN statistics (and timm zeroes the last BN of each block), which
    would hide a mis-mapped BN or residual branch; give every BN distinct statistics."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) * 0.5 + 0.25)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return model.eval()


def _assert_same_logits(source_model, ours, source, size):
    _randomise_bn(source_model)
    result = load_external(ours, source_model.state_dict(), source=source)
    assert result is ours
    ours.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected, got = source_model(x), ours(x)
    assert got.shape == expected.shape
    assert expected.abs().max() > 1e-3  # not a degenerate all-zero comparison
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


CASES = [
    ("timm", lambda: timm.create_model("seresnet50", pretrained=False), "se_resnet50", 64, False),
    ("timm", lambda: timm.create_model("resnet50", pretrained=False), "resnet50", 64, False),
    ("timm", lambda: timm.create_model("seresnext50_32x4d", pretrained=False), "se_resnext50_32x4d",
     64, True),
    ("torchvision", lambda: torchvision.models.resnet50(), "resnet50", 64, False),
    ("torchvision", lambda: torchvision.models.resnext50_32x4d(), "resnext50_32x4d", 64, True),
    ("torchvision", lambda: torchvision.models.resnet18(), "resnet18", 64, False),
]


@pytest.mark.parametrize("source,make,name,size,slow", [
    pytest.param(*c, id=f"{c[0]}-{c[2]}", marks=[pytest.mark.slow] if c[4] else []) for c in CASES])
def test_same_logits_as_the_source(source, make, name, size, slow):
    ours = build_model(name, stride_in_1x1=False)
    _assert_same_logits(make(), ours, source, size)


def test_senet_load_external_wrapper_and_file_loading(tmp_path):
    src = _randomise_bn(torchvision.models.resnet18())
    path = tmp_path / "resnet18.pt"
    torch.save(src.state_dict(), path)
    ours = senet.load_external(build_model("resnet18"), str(path), source="torchvision").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), src(x), atol=1e-4, rtol=0)


def test_data_parallel_prefix_is_stripped():
    """A state dict saved from ``nn.DataParallel`` (every key under ``module.``) loads as the bare one
    does: every weight and BN statistic lands, so the logits are the source's."""
    src = _randomise_bn(torchvision.models.resnet18()).eval()
    sd = {f"module.{k}": v for k, v in src.state_dict().items()}
    ours = load_external(build_model("resnet18"), sd, source="torchvision").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), src(x), atol=1e-4, rtol=0)


def test_timm_se_keys_map_into_the_excitation_slot():
    rename = SOURCES.get("timm").rename
    assert rename("layer1.0.se.fc1.weight") == "layer1.0.se.excitation.fc1.weight"
    assert rename("layer4.2.se.fc2.bias") == "layer4.2.se.excitation.fc2.bias"
    assert rename("layer1.0.se.excitation.fc1.weight") == "layer1.0.se.excitation.fc1.weight"
    assert rename("layer1.0.conv1.weight") == "layer1.0.conv1.weight"


# Error paths need shapes only: the meta device keeps them instant.
def _meta(name, **kw):
    with torch.device("meta"):
        return build_model(name, **kw)


def test_missing_and_unexpected_keys_are_listed():
    plain_sd = _meta("resnet50", stride_in_1x1=False).state_dict()
    with pytest.raises(ValueError, match=r"missing keys: layer1\.0\.se\.excitation\.fc1\.bias"):
        map_state_dict(_meta("se_resnet50", stride_in_1x1=False), plain_sd, "timm")
    se_sd = _meta("se_resnet50", stride_in_1x1=False).state_dict()
    with pytest.raises(ValueError, match=r"unexpected keys: layer1\.0\.se\.excitation"):
        map_state_dict(_meta("resnet50", stride_in_1x1=False), se_sd, "timm")


def test_shape_mismatch_is_listed():
    se_sd = _meta("se_resnet50", stride_in_1x1=False).state_dict()  # r = 16
    r8 = _meta("se_resnet50", stride_in_1x1=False, se=SEConfig(reduction=8))
    with pytest.raises(ValueError, match=r"shape mismatches: .*\(16, 256, 1, 1\) vs ours \(32, 256, 1, 1\)"):
        map_state_dict(r8, se_sd, "timm")


def test_stride_in_1x1_models_are_refused():
    """Same shapes, different network: the paper's Caffe layout would load silently wrong."""
    sd = _meta("resnet50", stride_in_1x1=False).state_dict()
    with pytest.raises(ValueError, match="stride_in_1x1=False"):
        map_state_dict(_meta("resnet50"), sd, "torchvision")


@pytest.mark.parametrize("ours,theirs", [("se_resnet50", "resnet50"), ("resnet50", "resnet18")])
def test_key_and_shape_mismatches_come_before_the_stride_hint(ours, theirs):
    """A dict of another network loaded into a stride_in_1x1 model (the default for resnet50) is
    reported by the keys and shapes that do not fit, not blamed on the stride."""
    sd = _meta(theirs, stride_in_1x1=False).state_dict()
    with pytest.raises(ValueError, match="cannot load the timm state dict into") as e:
        map_state_dict(_meta(ours), sd, "timm")
    assert "stride" not in str(e.value)
    assert any(k in str(e.value) for k in ("missing keys", "unexpected keys", "shape mismatches"))


def test_unknown_source_lists_the_choices():
    with pytest.raises(ValueError, match="choose one of: torchvision, timm"):
        load_external(_meta("resnet18"), {}, source="caffe")
