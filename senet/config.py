"""Run configuration: frozen dataclasses addressed by flat dotted keys.

The same keys (``se.gate``, ``optim.lr``, ``data.subset``, ``seed``) are the CLI overrides
(``--se.gate tanh``), Ray Tune's search-space keys and the columns of the results tables. A resolved
config is saved as ``config.json`` beside every run and inside every checkpoint.

Each field states its own rules in its metadata: ``choices`` (the registry, or the names, its value
comes from), bounds (``above``, ``at_least``, ``below``) and ``check`` (a format). :func:`validate`
loops over the fields, and a :class:`Config` runs it on construction (``dataclasses.replace``
included), so every Config that exists is a valid one.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import Field, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from .errors import UserValueError
from .models import MODELS
from .registry import choice_field, choice_names
from .se import SEConfig


class ConfigError(UserValueError):
    """A bad key or value; the message names both. (A ValueError too, for older callers.)"""


def _milestones(text: str) -> str | None:
    """What is wrong with a list of epochs, or None."""
    try:
        for epoch in text.split(",") if text else ():
            int(epoch)
    except ValueError:
        return "expected epochs like '8,12'"
    return None


def _rules(default: Any, **rules) -> Any:
    """A field with validation rules: ``above``, ``at_least``, ``below`` (bounds), ``check``."""
    return field(default=default, metadata=rules)


@dataclass(frozen=True)
class ModelConfig:
    name: str = choice_field("se_resnet20", MODELS)  # a registered backbone (`senet models`); se_ twins carry SE
    stride_in_1x1: bool | None = None  # ImageNet ResNets: stride in the first 1×1 (paper) or the 3×3
    num_classes: int = 0  # 0: taken from the dataset
    in_chans: int = 0  # 0: taken from the dataset


@dataclass(frozen=True)
class DataConfig:
    name: str = choice_field("fashion-mnist", "senet.data:DATASETS")  # the dataset (`senet config` lists them)
    root: str = ""  # the only folder searched when given (missing = error); "" searches $SENET_DATA and system locations
    subset: int = _rules(0, at_least=0)  # train on N images of the fixed shuffle, after the validation split (0 = all the rest)
    val_fraction: float = _rules(0.1, at_least=0, below=1)  # validation split: this share of the training images, or of data.subset when set (0 = none)
    test_subset: int = _rules(0, at_least=0)  # evaluate on N test images of a fixed shuffle (0 = all; quick sweeps)
    split_seed: int = _rules(0, at_least=0)  # seeds the val/subset/test_subset shuffles; part of the data, so never the run's seed
    augment: str = choice_field("crop_flip", "senet.data:AUGMENTS")  # crop_flip (pad 4, random crop, horizontal flip) | flip | none
    image_size: int = 0  # resize image folders to this side (0 = the dataset's own)
    synthetic_train: int = 2048  # synthetic dataset: training images
    synthetic_test: int = 512  # synthetic dataset: test images
    download: bool = False  # allow torchvision's download when files are missing


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = _rules(15, above=0)  # training epochs
    batch_size: int = _rules(128, above=0)  # images per SGD step
    lr: float = _rules(0.1, at_least=0)  # peak learning rate
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = True  # Nesterov momentum
    weight_decay: float = _rules(5e-4, at_least=0)  # L2 weight decay
    decay_norm_bias: bool = False  # also decay BN parameters and biases
    schedule: str = choice_field("cosine", "senet.schedules:SCHEDULES")  # the learning-rate schedule over the epochs
    warmup_epochs: float = _rules(1.0, at_least=0)  # linear warm-up before the schedule (cosine and step)
    milestones: str = _rules("", check=_milestones)  # step schedule: epochs where lr is divided by 10, e.g. "8,12"
    plateau_patience: int = 2  # plateau schedule (the paper's): epochs without improvement before ÷10
    label_smoothing: float = _rules(0.0, at_least=0, below=1)  # label smoothing ε


@dataclass(frozen=True)
class RunConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = choice_field("auto", ("auto", "fp32", "bf16"))  # auto (bf16 on a GPU or a CPU with native bf16, AVX512-BF16/AMX; else fp32) | fp32 | bf16
    channels_last: str = choice_field("auto", ("auto", "true", "false"))  # auto (on GPU) | true | false
    compile: bool = False  # torch.compile the model
    deterministic: bool = False  # deterministic algorithms (bitwise-reproducible resume on CPU)
    threads: int = _rules(0, at_least=0)  # torch CPU threads (0 = torch's default)
    out: str = ""  # output directory (config.json, metrics.jsonl, checkpoint.pt, final.json)
    checkpoint_every: int = _rules(1, above=0)  # write the checkpoint every N epochs (and always at the end)
    progress: bool = True  # show a progress bar
    tensorboard: bool = True  # write TensorBoard event logs (scalars, excitation histograms) into the run folder
    eval_test: str = choice_field("end", ("every", "end"))  # test set only at the end (the last epoch and the best-val weights; NaN between) | every epoch (curves)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    se: SEConfig = field(default_factory=SEConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    seed: int = 0  # seeds every random number generator of the run

    def __post_init__(self):
        validate(self)


#: Short CLI spellings of some keys.
ALIASES = {"model": "model.name", "out": "run.out", "lr": "optim.lr", "epochs": "optim.epochs"}


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``Config`` -> ``{"model.name": ..., "se.gate": ..., "seed": ...}``."""
    out: dict[str, Any] = {}
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if is_dataclass(v):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def keys() -> list[str]:
    return list(flatten(Config()))


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Convert ``value`` (a CLI string, a JSON value) to the field's type, or raise ConfigError."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _coerce(key, value, args[0])
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
                return False
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError
        if typ is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                return int(value)
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ is str:
            if isinstance(value, (list, tuple)):
                return ",".join(str(v) for v in value)
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"bad value for {key}: {value!r} (expected {typ.__name__})") from None
    return value


def from_flat(flat: Mapping[str, Any], base: Config | None = None) -> Config:
    """Apply flat ``{"se.gate": "tanh", ...}`` overrides to ``base`` (default ``Config()``).

    Unknown keys and values of the wrong type raise ConfigError naming the key; the values are then
    validated (unknown gate names, r <= 0, ...) with the same kind of one-line message.
    """
    base = base or Config()
    groups: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    hints = _field_types(Config)
    flat = expand_preset(flat)
    for raw_key, value in flat.items():
        key = ALIASES.get(raw_key, raw_key)
        head, _, tail = key.partition(".")
        if head not in hints:
            raise ConfigError(f"unknown config key {raw_key!r}; valid keys: {', '.join(keys())}")
        sub = hints[head]
        if is_dataclass(sub):
            sub_hints = _field_types(sub)
            if tail not in sub_hints:
                raise ConfigError(
                    f"unknown config key {raw_key!r}; valid {head}.* keys: "
                    + ", ".join(f"{head}.{k}" for k in sub_hints)
                )
            groups.setdefault(head, {})[tail] = _coerce(key, value, sub_hints[tail])
        else:
            if tail:
                raise ConfigError(f"unknown config key {raw_key!r}")
            top[head] = _coerce(key, value, sub)
    try:
        parts = {h: replace(getattr(base, h), **v) for h, v in groups.items()}
        cfg = replace(base, **parts, **top)
    except ValueError as e:  # raised by the dataclasses' own validation (Config, SEConfig)
        raise ConfigError(str(e)) from None
    return cfg


#: The input-only key that names a module of the attention family (:data:`senet.family.PRESETS`).
PRESET_KEY = "se.preset"


def expand_preset(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"se.preset": "eca", ...}`` with the preset replaced by its ``se.*`` values, in place of the
    key: keys given beside it win. The preset is not stored: a saved config holds what it set."""
    if PRESET_KEY not in flat:
        return dict(flat)
    from .family import PRESETS

    try:
        out = {f"se.{k}": v for k, v in PRESETS.get(str(flat[PRESET_KEY])).items()}
    except UserValueError as e:
        raise ConfigError(f"{PRESET_KEY}: {e}") from None
    out.update((k, v) for k, v in flat.items() if k != PRESET_KEY)
    return out


def _fields(cfg: Any, prefix: str = "") -> Iterator[tuple[str, Field, Any]]:
    """``(flat key, field, value)`` for every leaf field of ``cfg``."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            yield from _fields(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, value


def _bounds(rules: Mapping[str, Any]) -> str:
    if "at_least" in rules and "below" in rules:
        return f"must be in [{rules['at_least']}, {rules['below']})"
    if "above" in rules:
        return f"must be > {rules['above']}"
    return f"must be >= {rules['at_least']}" if "at_least" in rules else f"must be < {rules['below']}"


def _problem(key: str, rules: Mapping[str, Any], value: Any) -> str | None:
    if "choices" in rules:
        names = choice_names(rules["choices"])
        if value not in names:
            return f"bad value for {key}: {value!r}; choose one of: {', '.join(names)}"
    if (("above" in rules and not value > rules["above"]) or ("at_least" in rules and not value >= rules["at_least"])
            or ("below" in rules and not value < rules["below"])):
        return f"bad value for {key}: {value!r} ({_bounds(rules)})"
    check: Callable[[Any], str | None] | None = rules.get("check")
    hint = check(value) if check else None
    return f"bad value for {key}: {value!r} ({hint})" if hint else None


def validate(cfg: Config) -> None:
    """Check every value against its field's rules; raise ConfigError naming the key and value.

    Runs when a Config is made, so code handed a Config need not call it again.
    """
    for key, f, value in _fields(cfg):
        if value is None and f.default is None:  # an optional key left unset
            continue
        problem = _problem(key, f.metadata, value)
        if problem:
            raise ConfigError(problem)


def choices() -> dict[str, list[str]]:
    """``{flat key: names}`` for every key whose value is one of a list of names."""
    return {key: choice_names(f.metadata["choices"]) for key, f, _ in _fields(Config())
            if "choices" in f.metadata}


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(d: Mapping[str, Any], base: Config | None = None) -> Config:
    """Nested (``{"se": {"gate": ...}}``) or flat dicts both work."""
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            flat[k] = v
    return from_flat(flat, base)


def dump(cfg: Config, path: str | Path) -> None:
    """Write the nested config as JSON, or as YAML when ``path`` ends in .yaml/.yml."""
    p = Path(path)
    if p.suffix in (".yaml", ".yml"):
        p.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    else:
        p.write_text(json.dumps(to_dict(cfg), indent=2, sort_keys=False) + "\n")


def load(path: str | Path, base: Config | None = None) -> Config:
    """Read a JSON or YAML config file (nested or flat keys)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse error becomes one line
        raise ConfigError(f"cannot parse {p}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{p} must hold a mapping of config keys")
    return from_dict(data, base)


def se_for(cfg: Config) -> SEConfig | None:
    """The SE config the model gets: ``cfg.se`` for an se_ twin, None for a plain backbone.

    Raises ConfigError when se.* keys are set on a plain backbone (they would be silently ignored).
    """
    try:
        return MODELS.get(cfg.model.name).se_for(cfg.se)
    except UserValueError as e:
        raise ConfigError(str(e)) from None
