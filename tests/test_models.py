"""The backbone registry, the paper's SE block names, a config's one path to a network (old
checkpoints included), and the checked-in golden numbers (``senet/golden.json``, rewritten only by
``python -m tests.golden --write``)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from senet import MODELS, SEConfig, build_model, config, se_modules
from senet.checkpoint import load_model
from senet.models import build_from_config
from tests import golden

GOLDEN = json.loads(golden.GOLDEN.read_text())
DATA = Path(__file__).with_name("data")

pytestmark = pytest.mark.usefixtures("one_thread")


CONTRACT = [f"resnet{d}" for d in (20, 32, 44, 56, 110, 164)] + [
    "wrn16_8", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
    "resnext101_32x4d", "bn_inception", "mobilenet_v1", "inception_small",
]


@pytest.mark.parametrize("name", CONTRACT)
def test_contract_names_and_their_se_twins_are_registered(name):
    assert name in MODELS and f"se_{name}" in MODELS
    assert not MODELS.get(name).se_default and MODELS.get(f"se_{name}").se_default


def test_unknown_model_and_unknown_option_raise_with_choices():
    with pytest.raises(ValueError, match="choose one of: .*se_resnet50"):
        build_model("se_resnet5O")
    with pytest.raises(ValueError, match="unexpected keyword"), torch.device("meta"):
        build_model("mobilenet_v1", stride_in_1x1=True)


@pytest.mark.parametrize("name", ["resnet20", "se_resnet20", "resnet164", "wrn16_8", "resnet18", "se_resnet50",
                                  "resnext50_32x4d", "bn_inception", "inception_small", "se_mobilenet_v1"])
def test_misspelled_keywords_raise_for_every_backbone_family(name):
    """A misspelled keyword is refused, naming the ones the model takes: swallowed by the blocks,
    ``in_chan=1, num_clases=7`` would build a 3-channel network of the default classes silently."""
    with pytest.raises(ValueError, match=r"^model '\w+': unexpected keyword argument\(s\) in_chan, "
                                         r"num_clases; it takes num_classes, in_chans, se") as e, \
            torch.device("meta"):
        build_model(name, in_chan=1, num_clases=7)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name,options", [
    ("resnet50", {"stride_in_1x1": False}), ("se_resnext50_32x4d", {"stride_in_1x1": True}),
    ("mobilenet_v1", {"width": 0.5, "dropout": 0.2}), ("inception_small", {"width": 0.25}),
    ("bn_inception", {"dropout": 0.2}),
])
def test_each_backbones_own_options_still_act(name, options):
    with torch.device("meta"):
        default, model = build_model(name), build_model(name, **options)
    if "stride_in_1x1" in options:
        assert model.layer2[0].conv1.stride == ((2, 2) if options["stride_in_1x1"] else (1, 1))
    elif "width" in options:
        assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in default.parameters())
    else:
        assert model.dropout.p == options["dropout"]


def test_build_model_records_the_models_input_size():
    with torch.device("meta"):
        assert build_model("resnet20", in_chans=1).default_input_size == MODELS.get("resnet20").input_size == 32
        assert build_model("se_bn_inception").default_input_size == 224


# --------------------------------------------------------------------------------------------
# SE names SE_<stage>_<block> (paper §7.2) and the default SE of the se_ twins
# --------------------------------------------------------------------------------------------
def _names(stage_blocks: dict[int, int]) -> list[str]:
    return [f"SE_{s}_{b}" for s, n in stage_blocks.items() for b in range(1, n + 1)]


@pytest.mark.parametrize("name,stage_blocks", [
    ("se_resnet50", {2: 3, 3: 4, 4: 6, 5: 3}),
    ("se_resnet20", {2: 3, 3: 3, 4: 3}),
    ("se_wrn16_8", {2: 2, 3: 2, 4: 2}),
    ("se_bn_inception", {3: 3, 4: 5, 5: 2}),  # inception 3a-3c, 4a-4e, 5a-5b
    ("se_inception_small", {3: 3, 4: 5, 5: 2}),
    ("se_mobilenet_v1", {2: 1, 3: 2, 4: 2, 5: 6, 6: 2}),
])
def test_se_blocks_carry_the_papers_names_in_forward_order(name, stage_blocks):
    with torch.device("meta"):
        model = build_model(name)
    ses = se_modules(model)
    assert list(ses) == _names(stage_blocks)
    for se in ses.values():  # the paper's default: r = 16, avg, sigmoid, FC biases
        assert se.hidden == max(1, se.channels // 16)
        assert isinstance(se.gate, torch.nn.Sigmoid)
        assert type(se.squeeze).__name__ == "AvgSqueeze"
        assert se.excitation.fc1.bias is not None


@pytest.mark.parametrize("name,stages,expected", [
    ("se_resnet50", "4", {4: 6}),
    ("se_resnet50", "2,5", {2: 3, 5: 3}),
    ("se_bn_inception", "4", {4: 5}),
    ("se_bn_inception", "3,5", {3: 3, 5: 2}),
    ("se_mobilenet_v1", "5", {5: 6}),
    ("se_inception_small", "none", {}),
])
def test_stage_selection(name, stages, expected):
    with torch.device("meta"):
        model = build_model(name, se=SEConfig(stages=stages))
    assert list(se_modules(model)) == _names(expected)


def test_the_papers_analysis_blocks_exist_in_se_resnet50():
    """Figures 6 and 7 read SE_2_3, SE_3_4, SE_4_6 (last block before down-sampling) and SE_5_1-3."""
    with torch.device("meta"):
        ses = se_modules(build_model("se_resnet50"))
    assert {"SE_2_3", "SE_3_4", "SE_4_6", "SE_5_1", "SE_5_2", "SE_5_3"} <= set(ses)
    assert "SE_2_4" not in ses and "SE_4_7" not in ses


# --------------------------------------------------------------------------------------------
# Architecture facts
# --------------------------------------------------------------------------------------------
def _shapes(model, size):
    """Output shape of each top-level child at ``size`` (meta device: no arithmetic)."""
    shapes = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape)))
             for n, m in model.named_children()]
    model(torch.zeros(1, 3, size, size, device="meta"))
    for h in hooks:
        h.remove()
    return shapes


def test_bn_inception_layout():
    """Ioffe & Szegedy (2015), Fig. 5: module widths and the 28 → 14 → 7 grid."""
    with torch.device("meta"):
        model = build_model("bn_inception")
    shapes = _shapes(model, 224)
    widths = {n[len("inception"):]: s[1] for n, s in shapes.items() if n.startswith("inception")}
    assert widths == {"3a": 256, "3b": 320, "3c": 576, "4a": 576, "4b": 576, "4c": 608,
                      "4d": 608, "4e": 1056, "5a": 1024, "5b": 1024}
    assert shapes["stem"][1:] == (192, 28, 28)
    assert shapes["inception3c"][2:] == (14, 14) and shapes["inception4e"][2:] == (7, 7)
    assert shapes["fc"] == (1, 1000)


def test_mobilenet_v1_layout():
    """Howard et al. (2017), Table 1: 13 depthwise-separable blocks, 112² → 7²."""
    with torch.device("meta"):
        model = build_model("mobilenet_v1")
    shapes = _shapes(model, 224)
    assert shapes["conv1"][1:] == (32, 112, 112)
    assert [shapes[f"layer{i}"][1:] for i in range(1, 6)] == [
        (64, 112, 112), (128, 56, 56), (256, 28, 28), (512, 14, 14), (1024, 7, 7)]
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 13 and all(m.groups == m.in_channels for m in depthwise)


def test_inception_small_runs_at_28_and_32_px():
    model = build_model("se_inception_small", num_classes=10, in_chans=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


# --------------------------------------------------------------------------------------------
# A config becomes a network in one place; checkpoints written before this code still load
# --------------------------------------------------------------------------------------------
def test_build_from_config_takes_the_configs_classes_and_channels_before_the_datas():
    cfg = config.from_flat({"model.name": "se_resnet20", "se.gate": "tanh", "model.in_chans": 1})
    with torch.device("meta"):
        model = build_from_config(cfg, num_classes=7, in_chans=3)
    assert model.fc.out_features == 7 and model.conv1.in_channels == 1
    assert model.se_config == cfg.se and isinstance(se_modules(model)["SE_2_1"].gate, torch.nn.Tanh)
    with torch.device("meta"):
        assert build_from_config(config.from_flat({"model.name": "resnet20"})).fc.out_features == 10
    with pytest.raises(ValueError, match="has no SE blocks, but se.\\* keys were set"):
        build_from_config(config.from_flat({"model.name": "resnet20", "se.gate": "tanh"}))


def test_a_checkpoint_written_before_the_design_space_refactor_loads_with_its_logits():
    """``tests/data/checkpoint_v1.pth``: an SE-ResNet-20 (eca excitation, avgmax squeeze, tanh gate,
    pre placement, stages 3-4, r = 4) saved by the code before SE configs became plans and slots
    declared their arguments; it loads by the same names and computes the same logits."""
    model, cfg, meta = load_model(DATA / "checkpoint_v1.pth")
    expected = json.loads((DATA / "checkpoint_v1.json").read_text())
    assert cfg.se == SEConfig(excitation="eca", squeeze="avgmax", gate="tanh", placement="pre",
                              stages="3,4", reduction=4, bias=False)
    assert meta["data"]["classes"] == ["a", "b", "c"] and not model.training
    assert list(se_modules(model)) == [f"SE_{s}_{b}" for s in (3, 4) for b in (1, 2, 3)]
    with torch.no_grad():
        logits = model(torch.linspace(-2, 2, 2 * 28 * 28).view(2, 1, 28, 28))
    torch.testing.assert_close(logits, torch.tensor(expected["logits"]), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Golden numbers
# --------------------------------------------------------------------------------------------
#: Golden entries checked by the default run: the cheap networks, and for the ImageNet-size ones
#: one per family plus one se_resnet50 variant per SE slot; ``-m slow`` checks every entry.
_FAST_MODELS = {"se_resnet18", "se_mobilenet_v1", "se_bn_inception", "se_resnet50"}
_FAST_VARIANTS = {"se_resnet50 se.gate=tanh", "se_resnet50 se.squeeze=none",
                  "se_resnet50 se.placement=inner", "se_resnet50 se.excitation=eca",
                  "se_resnet50 se.stages=4"}


@pytest.mark.parametrize("section", ["models", "variants"])
def test_golden_entries_are_all_still_registered(section):
    """An entry of a model or variant that is gone fails; one the registries call for but the file
    lacks (a newly registered gate) is only reported: ``python -m tests.golden --write`` adds it."""
    expected = golden.expected_keys()[section]
    assert not set(GOLDEN[section]) - expected
    missing = sorted(expected - set(GOLDEN[section]))
    if missing:
        pytest.skip(f"no golden entry yet for {', '.join(missing)} (python -m tests.golden --write)")


def _golden_cases():
    cases = []
    for name, gold in sorted(GOLDEN["models"].items()):
        fast = name in _FAST_MODELS or (gold["input_size"] <= 32 and name.removeprefix("se_") not in
                                         ("resnet110", "resnet164"))
        cases.append(pytest.param(name, None, id=name, marks=[] if fast else [pytest.mark.slow]))
    for key, gold in sorted(GOLDEN["variants"].items()):
        fast = gold["model"] == "se_resnet20" or key in _FAST_VARIANTS
        cases.append(pytest.param(gold["model"], key, id=key, marks=[] if fast else [pytest.mark.slow]))
    return cases


@pytest.mark.parametrize("name,key", _golden_cases())
def test_golden_params_flops_and_hidden_widths(name, key):
    """Exact parameter and FLOP counts and each SE block's (C, C // r) against senet/golden.json."""
    gold = GOLDEN["variants"][key] if key else GOLDEN["models"][name]
    got = golden.record(name, gold["se"] if key else None)
    assert got == {k: v for k, v in gold.items() if k not in ("model", "se")}
