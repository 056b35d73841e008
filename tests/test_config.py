"""Configs: flat dotted keys, JSON/YAML round trips, up-front validation with named keys and values."""
from __future__ import annotations

import json

import pytest

from senet import config as C
from senet.se import SEConfig


def test_flat_keys_cover_every_group():
    keys = C.keys()
    for k in ("model.name", "se.gate", "se.reduction", "data.subset", "data.root", "optim.lr",
              "optim.schedule", "run.out", "run.deterministic", "seed"):
        assert k in keys
    flat = C.flatten(C.Config())
    assert flat["se.reduction"] == 16 and flat["se.gate"] == "sigmoid"  # the paper's defaults
    assert C.from_flat(flat) == C.Config()


def test_overrides_coerce_strings_and_aliases():
    cfg = C.from_flat({"model": "se_resnet56", "lr": "0.2", "epochs": "30", "out": "runs/x",
                       "se.reduction": "8", "se.bias": "false", "data.subset": "5000", "seed": "4"})
    assert cfg.model.name == "se_resnet56" and cfg.optim.lr == 0.2 and cfg.optim.epochs == 30
    assert cfg.run.out == "runs/x" and cfg.se.reduction == 8 and cfg.se.bias is False
    assert cfg.data.subset == 5000 and cfg.seed == 4
    assert C.from_flat({"model.stride_in_1x1": "none"}).model.stride_in_1x1 is None


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_round_trip(tmp_path, suffix):
    cfg = C.from_flat({"model.name": "se_resnet20", "se.gate": "tanh", "se.stages": "2,3",
                       "optim.schedule": "plateau", "optim.milestones": "8,12", "data.val_fraction": 0.2,
                       "run.channels_last": "false", "seed": 7})
    path = tmp_path / f"run{suffix}"
    C.save(cfg, path)
    assert C.load(path) == cfg


def test_flat_yaml_and_nested_json_both_load(tmp_path):
    (tmp_path / "a.yaml").write_text("se.gate: relu\noptim.lr: 0.05\nseed: 2\n")
    (tmp_path / "b.json").write_text(json.dumps({"se": {"gate": "relu"}, "optim": {"lr": 0.05}, "seed": 2}))
    assert C.load(tmp_path / "a.yaml") == C.load(tmp_path / "b.json")
    assert C.load(tmp_path / "a.yaml").se.gate == "relu"


@pytest.mark.parametrize("flat, needle", [
    ({"optim.lrr": 1}, "unknown config key 'optim.lrr'; valid optim.* keys"),
    ({"colour": 1}, "unknown config key 'colour'"),
    ({"optim.lr": "fast"}, "bad value for optim.lr: 'fast'"),
    ({"optim.epochs": 2.5}, "bad value for optim.epochs"),
    ({"optim.epochs": 0}, "bad value for optim.epochs: 0 (must be > 0)"),
    ({"run.deterministic": "maybe"}, "bad value for run.deterministic"),
    ({"data.val_fraction": 1.0}, "data.val_fraction"),
    ({"optim.schedule": "linear"}, "choose one of: cosine, step, plateau, constant"),
    ({"se.gate": "sigmod"}, "unknown gate 'sigmod'; choose one of: sigmoid"),
    ({"se.reduction": 0}, "se.reduction must be > 0"),
    ({"model.name": "resnet21"}, "bad value for model.name: 'resnet21'"),
    ({"optim.milestones": "8;12"}, "bad value for optim.milestones"),
])
def test_bad_keys_and_values_name_both(flat, needle):
    with pytest.raises(C.ConfigError) as e:
        C.from_flat(flat)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(C.ConfigError, match="config file not found"):
        C.load(tmp_path / "none.yaml")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(C.ConfigError, match="cannot parse"):
        C.load(tmp_path / "bad.json")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(C.ConfigError, match="mapping"):
        C.load(tmp_path / "list.yaml")


def test_se_for_plain_and_twin():
    assert C.se_for(C.from_flat({"model.name": "resnet20"})) is None
    assert C.se_for(C.from_flat({"model.name": "se_resnet20", "se.gate": "tanh"})) == SEConfig(gate="tanh")
    with pytest.raises(C.ConfigError, match="no SE blocks"):
        C.se_for(C.from_flat({"model.name": "resnet20", "se.gate": "tanh"}))


def test_configs_are_frozen():
    cfg = C.Config()
    with pytest.raises(AttributeError):
        cfg.seed = 3  # type: ignore[misc]
