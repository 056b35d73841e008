"""Run configuration: frozen dataclasses addressed by flat dotted keys.

The same keys (``se.gate``, ``optim.lr``, ``data.subset``, ``seed``) are the CLI overrides
(``--se.gate tanh``), Ray Tune's search-space keys and the columns of the results tables. A resolved
config is saved as ``config.json`` beside every run and inside every checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from .errors import UserValueError
from .se import SEConfig


class ConfigError(UserValueError):
    """A bad key or value; the message names both. (A ValueError too, for older callers.)"""


@dataclass(frozen=True)
class ModelConfig:
    name: str = "se_resnet20"  # a registered backbone (`senet models`); se_ twins carry SE
    stride_in_1x1: bool | None = None  # ImageNet ResNets: stride in the first 1×1 (paper) or the 3×3
    num_classes: int = 0  # 0: taken from the dataset
    in_chans: int = 0  # 0: taken from the dataset


@dataclass(frozen=True)
class DataConfig:
    name: str = "fashion-mnist"  # fashion-mnist | cifar10 | cifar100 | imagefolder | synthetic
    root: str = ""  # the only folder searched when given (missing = error); "" searches $SENET_DATA and system locations
    subset: int = 0  # train on N images of the fixed shuffle, after the validation split (0 = all the rest)
    val_fraction: float = 0.1  # validation split: this share of the training images, or of data.subset when set (0 = none)
    test_subset: int = 0  # evaluate on N test images of a fixed shuffle (0 = all; quick sweeps)
    split_seed: int = 0  # seeds the val/subset/test_subset shuffles; part of the data, so never the run's seed
    augment: str = "crop_flip"  # crop_flip (pad 4, random crop, horizontal flip) | flip | none
    image_size: int = 0  # resize image folders to this side (0 = the dataset's own)
    synthetic_train: int = 2048  # synthetic dataset: training images
    synthetic_test: int = 512  # synthetic dataset: test images
    download: bool = False  # allow torchvision's download when files are missing


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = 15  # training epochs
    batch_size: int = 128  # images per SGD step
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = True  # Nesterov momentum
    weight_decay: float = 5e-4  # L2 weight decay
    decay_norm_bias: bool = False  # also decay BN parameters and biases
    schedule: str = "cosine"  # cosine | step | plateau | constant
    warmup_epochs: float = 1.0  # linear warm-up before the schedule (cosine and step)
    milestones: str = ""  # step schedule: epochs where lr is divided by 10, e.g. "8,12"
    plateau_patience: int = 2  # plateau schedule (the paper's): epochs without improvement before ÷10
    label_smoothing: float = 0.0  # label smoothing ε


@dataclass(frozen=True)
class RunConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on a GPU or a CPU with native bf16, AVX512-BF16/AMX; else fp32) | fp32 | bf16
    channels_last: str = "auto"  # auto (on GPU) | true | false
    compile: bool = False  # torch.compile the model
    deterministic: bool = False  # deterministic algorithms (bitwise-reproducible resume on CPU)
    threads: int = 0  # torch CPU threads (0 = torch's default)
    out: str = ""  # output directory (config.json, metrics.jsonl, checkpoint.pt, final.json)
    checkpoint_every: int = 1  # write the checkpoint every N epochs (and always at the end)
    progress: bool = True  # show a progress bar
    eval_test: str = "every"  # test set every epoch (curves) | end (last epoch and the best-val weights; NaN between)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    se: SEConfig = field(default_factory=SEConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    seed: int = 0  # seeds every random number generator of the run


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
    except ValueError as e:  # raised by a dataclass's own validation (SEConfig)
        raise ConfigError(str(e)) from None
    validate(cfg)
    return cfg


_CHOICES = {
    "data.augment": ("crop_flip", "flip", "none"),
    "optim.schedule": ("cosine", "step", "plateau", "constant"),
    "run.precision": ("auto", "fp32", "bf16"),
    "run.channels_last": ("auto", "true", "false"),
    "run.eval_test": ("every", "end"),
}


def validate(cfg: Config) -> None:
    """Check values that the dataclasses cannot check alone; raise ConfigError naming the key."""
    from .models import MODELS  # noqa: PLC0415

    flat = flatten(cfg)
    for key, choices in _CHOICES.items():
        if flat[key] not in choices:
            raise ConfigError(f"bad value for {key}: {flat[key]!r}; choose one of: {', '.join(choices)}")
    if cfg.model.name not in MODELS:
        raise ConfigError(f"bad value for model.name: {cfg.model.name!r}; choose one of: "
                          + ", ".join(MODELS.names()))
    positive = ("optim.epochs", "optim.batch_size", "run.checkpoint_every")
    for key in positive:
        if flat[key] <= 0:
            raise ConfigError(f"bad value for {key}: {flat[key]!r} (must be > 0)")
    non_negative = ("optim.lr", "optim.weight_decay", "optim.warmup_epochs", "data.subset", "data.test_subset",
                    "data.split_seed", "run.threads", "optim.label_smoothing")
    for key in non_negative:
        if flat[key] < 0:
            raise ConfigError(f"bad value for {key}: {flat[key]!r} (must be >= 0)")
    if not 0 <= cfg.data.val_fraction < 1:
        raise ConfigError(f"bad value for data.val_fraction: {cfg.data.val_fraction!r} (must be in [0, 1))")
    if cfg.optim.label_smoothing >= 1:
        raise ConfigError(f"bad value for optim.label_smoothing: {cfg.optim.label_smoothing!r} (must be < 1)")
    if cfg.optim.milestones:
        try:
            [int(m) for m in cfg.optim.milestones.split(",")]
        except ValueError:
            raise ConfigError(f"bad value for optim.milestones: {cfg.optim.milestones!r} "
                              "(expected epochs like '8,12')") from None


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


def save(cfg: Config, path: str | Path) -> None:
    """Write the nested config as JSON, or as YAML when ``path`` ends in .yaml/.yml."""
    p = Path(path)
    if p.suffix in (".yaml", ".yml"):
        import yaml  # noqa: PLC0415

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
            import yaml  # noqa: PLC0415

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
    from .models import MODELS  # noqa: PLC0415

    if MODELS.get(cfg.model.name).se_default:
        return cfg.se
    if cfg.se != SEConfig():
        raise ConfigError(f"model {cfg.model.name!r} has no SE blocks, but se.* keys were set; "
                          f"use se_{cfg.model.name} or drop the se.* keys")
    return None
