"""The ``family`` study (ablations/studies.py): the channel-attention family's modules as arms of
one study on the sweeps' backbone, each arm the network its preset registers (senet/golden.json),
and (slow) its smoke sweep through real Ray Tune."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from ablations import studies
from senet import MODELS, SEConfig, build_model, complexity, config, se_modules
from senet.family import SelectiveKernelConv
from senet.se import PRESETS, study_choices
from senet.stages import StagesFrom
from tests import golden

GOLDEN = json.loads(golden.GOLDEN.read_text())
STUDY = studies.STUDIES.get("family")


def _arms(preset: str = "smoke", **overrides):
    return STUDY.resolve_arms(studies.base_config(STUDY, preset, overrides))


def _registered(label: str) -> dict:
    """What senet/golden.json records for the arm's network on se_resnet20: the plain ResNet-20 for
    the baseline, the se_ twin for SE, and the module's preset entry for the others."""
    if label == "baseline":
        return GOLDEN["models"]["resnet20"]
    if label == "se":
        return GOLDEN["models"]["se_resnet20"]
    return GOLDEN["variants"].get(golden.variant_key("se_resnet20", dict(PRESETS.get(label))))


def test_family_study_arms_are_the_plain_network_and_one_per_module():
    arms = _arms()
    assert [a.label for a in arms] == ["baseline", *study_choices(PRESETS)]
    assert STUDY.reference_arm == "se" and dict(arms[1].overrides) == {}
    assert {"ge_theta", "ge_theta_plus"}.isdisjoint(a.label for a in arms)  # GE's variants, not arms
    assert STUDY.fixed == {} and studies.base_config(STUDY, "standard").se.bias is True  # paper defaults
    assert [a.label for a in arms] == [a.label for a in _arms("quick")] == [a.label for a in _arms("standard")]
    assert STUDY.seeds_at("standard") == 3 and "family" not in studies.RUN_ORDER  # not a paper study


@pytest.mark.parametrize("preset", ["smoke", "standard", "full"])
def test_family_study_arms_build_and_are_the_networks_the_registry_records(preset):
    """Each arm's flat config, on the preset's base config (se_resnet20; se_resnet56 at full), is the
    preset's SEConfig; on se_resnet20 its parameters, FLOPs and SE widths are golden.json's."""
    base = studies.base_config(STUDY, preset)
    missing = []
    for arm in _arms(preset):
        cfg = config.from_flat(arm.overrides, base)
        if arm.label != "baseline":
            assert cfg.se == SEConfig.from_preset(arm.label), arm.label
        if preset == "full":
            continue
        gold = _registered(arm.label)
        if gold is None:
            missing.append(arm.label)
            continue
        assert golden.record("se_resnet20", _se_fields(cfg.se)) == {
            k: v for k, v in gold.items() if k not in ("model", "se")}, arm.label
    if missing:  # a module added since golden.json was written: reported, as tests/test_models does
        pytest.skip(f"no golden entry yet for {', '.join(missing)} (python -m tests.golden --write)")


def _se_fields(se: SEConfig) -> dict:
    return {k: v for k, v in vars(se).items() if v != getattr(SEConfig(), k)}


def test_family_study_arms_have_their_modules_on_the_backbone():
    base = studies.base_config(STUDY, "smoke")
    models = {a.label: build_model(base.model.name, num_classes=10, se=config.from_flat(a.overrides, base).se)
              for a in _arms()}
    assert not se_modules(models["baseline"]) and not se_modules(models["sk"])
    assert sum(isinstance(m, SelectiveKernelConv) for m in models["sk"].modules()) == 9
    assert {n.split("_")[1] for n in se_modules(models["gc"])} == {"3", "4"}  # 3+: all but the first stage
    assert SEConfig.from_preset("gc").plan().stages == StagesFrom(3)
    assert all(len(se_modules(models[a])) == 9 for a in ("se", "eca", "cbam", "ge", "srm", "simam", "fca", "ca"))
    assert len(se_modules(models["gct"])) == 9 * 2  # before each of a basic block's two convolutions


def test_family_study_leaves_out_a_module_the_backbone_cannot_build():
    """On a wide ResNet (pre-activation blocks) SimAM's site (before bn2) and GCT's (before every
    convolution) do not exist: those arms are left out; every other module builds."""
    labels = [a.label for a in _arms("smoke", **{"model.name": "se_wrn16_8"})]
    assert "simam" not in labels and "gct" not in labels and "eca" in labels and labels[:2] == ["baseline", "se"]
    assert MODELS.get("se_wrn16_8").family == "wrn"


# ------------------------------------------------------------------------------------------------
# The smoke sweep through real Ray Tune
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smoke_sweep_of_the_family_study(ray_session, tmp_path, capsys):
    from senet.cli import main

    assert main(["sweep", "family", "--preset", "smoke", "--results", str(tmp_path), "--cpus-per-trial", "1"]) == 0
    assert "sweep finished" in capsys.readouterr().out
    df = pd.read_parquet(tmp_path / "family" / "runs.parquet").set_index("arm")
    meta = json.loads((tmp_path / "family" / "study.json").read_text())
    arms = [a["arm"] for a in meta["arms"]]
    assert arms == [a.label for a in _arms()] and meta["reference_arm"] == "se" and meta["seeds"] == 1
    assert list(df.index) == arms and set(df["status"]) == {"completed"} and (df["epochs_run"] == 1).all()
    for arm in arms:  # each trial trained the network its preset builds (synthetic data: 28×28 grey)
        se = SEConfig(stages="none") if arm == "baseline" else SEConfig.from_preset(arm)
        c = complexity(build_model("se_resnet20", num_classes=10, in_chans=1, se=se), 28, 1)
        assert (df.loc[arm, "params"], df.loc[arm, "flops"], df.loc[arm, "se_params"]) == (
            c.params, c.flops, c.se_params), arm
    assert main(["report", "family", "--results", str(tmp_path), "--preset", "smoke"]) == 0
    assert (tmp_path / "family" / "report.md").is_file()
