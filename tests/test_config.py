"""Configs: flat dotted keys, JSON/YAML round trips, up-front validation with named keys and values."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from senet import config
from senet.config_view import describe, field_docs
from senet.models import MODELS
from senet.registry import Registry, choice_names
from senet.schedules import SCHEDULES
from senet.se import GATES, SEConfig


def test_flat_keys_cover_every_group():
    keys = config.keys()
    for k in ("model.name", "se.gate", "se.reduction", "data.subset", "data.root", "optim.lr",
              "optim.schedule", "run.out", "run.deterministic", "seed"):
        assert k in keys
    flat = config.flatten(config.Config())
    assert flat["se.reduction"] == 16 and flat["se.gate"] == "sigmoid"  # the paper's defaults
    assert config.from_flat(flat) == config.Config()


def test_overrides_coerce_strings_and_aliases():
    cfg = config.from_flat({"model": "se_resnet56", "lr": "0.2", "epochs": "30", "out": "runs/x",
                       "se.reduction": "8", "se.bias": "false", "data.subset": "5000", "seed": "4"})
    assert cfg.model.name == "se_resnet56" and cfg.optim.lr == 0.2 and cfg.optim.epochs == 30
    assert cfg.run.out == "runs/x" and cfg.se.reduction == 8 and cfg.se.bias is False
    assert cfg.data.subset == 5000 and cfg.seed == 4
    assert config.from_flat({"model.stride_in_1x1": "none"}).model.stride_in_1x1 is None


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_round_trip(tmp_path, suffix):
    cfg = config.from_flat({"model.name": "se_resnet20", "se.gate": "tanh", "se.stages": "2,3",
                       "optim.schedule": "plateau", "optim.milestones": "8,12", "data.val_fraction": 0.2,
                       "run.channels_last": "false", "seed": 7})
    path = tmp_path / f"run{suffix}"
    config.dump(cfg, path)
    assert config.load(path) == cfg


def test_flat_yaml_and_nested_json_both_load(tmp_path):
    (tmp_path / "a.yaml").write_text("se.gate: relu\noptim.lr: 0.05\nseed: 2\n")
    (tmp_path / "b.json").write_text(json.dumps({"se": {"gate": "relu"}, "optim": {"lr": 0.05}, "seed": 2}))
    assert config.load(tmp_path / "a.yaml") == config.load(tmp_path / "b.json")
    assert config.load(tmp_path / "a.yaml").se.gate == "relu"


@pytest.mark.parametrize("flat, needle", [
    ({"optim.lrr": 1}, "unknown config key 'optim.lrr'; valid optim.* keys"),
    ({"colour": 1}, "unknown config key 'colour'"),
    ({"optim.lr": "fast"}, "bad value for optim.lr: 'fast'"),
    ({"optim.epochs": 2.5}, "bad value for optim.epochs"),
    ({"optim.epochs": 0}, "bad value for optim.epochs: 0 (must be > 0)"),
    ({"run.deterministic": "maybe"}, "bad value for run.deterministic"),
    ({"data.val_fraction": 1.0}, "data.val_fraction"),
    ({"optim.schedule": "linear"}, "choose one of: " + ", ".join(SCHEDULES.names())),
    ({"se.gate": "sigmod"}, "unknown gate 'sigmod'; choose one of: sigmoid"),
    ({"se.reduction": 0}, "se.reduction must be > 0"),
    ({"model.name": "resnet21"}, "bad value for model.name: 'resnet21'"),
    ({"optim.milestones": "8;12"}, "bad value for optim.milestones"),
])
def test_bad_keys_and_values_name_both(flat, needle):
    with pytest.raises(config.ConfigError) as e:
        config.from_flat(flat)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(config.ConfigError, match="config file not found"):
        config.load(tmp_path / "none.yaml")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(config.ConfigError, match="cannot parse"):
        config.load(tmp_path / "bad.json")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(config.ConfigError, match="mapping"):
        config.load(tmp_path / "list.yaml")


def test_se_for_plain_and_twin():
    assert config.se_for(config.from_flat({"model.name": "resnet20"})) is None
    assert config.se_for(config.from_flat({"model.name": "se_resnet20", "se.gate": "tanh"})) == SEConfig(gate="tanh")
    with pytest.raises(config.ConfigError, match="no SE blocks"):
        config.se_for(config.from_flat({"model.name": "resnet20", "se.gate": "tanh"}))


@pytest.mark.parametrize("flat", [{"optim.epochs": 0}, {"data.val_fraction": 1.0}, {"run.precision": "fp16"},
                                  {"optim.milestones": "8;12"}, {"model.name": "resnet21"}])
def test_a_config_is_valid_from_construction(flat):
    """Every Config that exists passed validate: made, replaced or read, a bad value raises."""
    with pytest.raises(config.ConfigError):
        config.from_flat(flat)
    (key, value), = flat.items()
    group, _, name = key.partition(".")
    base = config.Config()
    with pytest.raises(config.ConfigError, match=f"bad value for {key}"):
        dataclasses.replace(base, **{group: dataclasses.replace(getattr(base, group), **{name: value})})


def test_fields_name_their_choices_and_registry_backed_ones_follow_the_registry():
    named = config.choices()
    assert named["model.name"] == MODELS.names() and named["se.gate"] == GATES.names()
    assert named["optim.schedule"] == SCHEDULES.names()
    assert named["run.precision"] == ["auto", "fp32", "bf16"]
    for key, f, _ in config._fields(config.Config()):
        rule = f.metadata.get("choices")
        if isinstance(rule, (Registry, str)):  # a registry, given or named
            assert named[key] == choice_names(rule), key
    with GATES.registered("throwaway", torch.nn.Sigmoid, range=(0.0, 1.0)):
        assert config.from_flat({"se.gate": "throwaway"}).se.gate == "throwaway"
        assert "throwaway" in config.choices()["se.gate"]
    with pytest.raises(config.ConfigError, match="unknown gate 'throwaway'"):
        config.from_flat({"se.gate": "throwaway"})


def test_configs_are_frozen():
    cfg = config.Config()
    with pytest.raises(AttributeError):
        cfg.seed = 3  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# senet config: every key's value, default, choices and meaning
# ---------------------------------------------------------------------------------------------
def _config_cli(capsys, *argv):
    from senet.cli import main

    rc = main(["config", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_every_key_has_its_meaning_from_the_field_comment():
    rows = {r["key"]: r for r in describe(config.Config())}
    assert list(rows) == config.keys()
    assert all(r["help"] for r in rows.values()), [k for k, r in rows.items() if not r["help"]]
    assert rows["se.gate"]["help"] == field_docs(SEConfig)["gate"] and rows["se.gate"]["help"].startswith("σ")
    assert rows["optim.lr"]["help"] == "peak learning rate" and rows["optim.lr"]["alias"] == "lr"
    assert rows["se.gate"]["choices"] == GATES.names() and rows["model.name"]["choices"] == MODELS.names()
    assert sorted(rows["optim.schedule"]["choices"]) == ["constant", "cosine", "plateau", "step"]
    assert rows["run.deterministic"]["choices"] == ["true", "false"]
    assert rows["model.stride_in_1x1"]["choices"] == ["true", "false", "none"]
    assert rows["optim.lr"]["choices"] is None


def test_config_command_resolves_overrides(capsys):
    rc, out, err = _config_cli(capsys, "--lr", "0.05", "--se.gate", "tanh", "--json")
    assert rc == 0, err
    rows = {r["key"]: r for r in json.loads(out)}
    assert rows["optim.lr"]["value"] == 0.05 and rows["optim.lr"]["default"] == 0.1
    assert rows["se.gate"]["value"] == "tanh" and rows["se.gate"]["default"] == "sigmoid"
    rc, out, err = _config_cli(capsys, "--se.gate", "tanh")
    line = next(ln for ln in out.splitlines() if ln.startswith("se.gate"))
    assert "*" in line and "tanh" in line and "σ" in line
    assert "default sigmoid" in out and "choices: sigmoid, tanh" in out
    rc, out, err = _config_cli(capsys, "--se.gat", "tanh")
    assert rc == 2 and err.count("\n") == 1 and "unknown config key 'se.gat'" in err


def test_config_command_shows_a_study_and_preset(capsys):
    pytest.importorskip("ablations.config_cmd")
    rc, out, err = _config_cli(capsys, "--study", "gate", "--preset", "smoke", "--json")
    assert rc == 0, err
    rows = {r["key"]: r for r in json.loads(out)}
    assert rows["data.name"]["value"] == "synthetic" and rows["se.bias"]["value"] is False
    assert rows["se.gate"]["note"].startswith("swept by the gate study: sigmoid, tanh")
    assert "--seeds" in rows["seed"]["note"]
    rc, out, err = _config_cli(capsys, "--study", "gaet")
    assert rc == 2 and err.count("\n") == 1 and "unknown study 'gaet'" in err


def test_train_and_sweep_help_point_to_senet_config():
    from senet.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and "train" in a.choices)
    assert "senet config" in sub.choices["train"].format_help()
    if "sweep" in sub.choices:
        assert "senet config --study" in sub.choices["sweep"].format_help()
