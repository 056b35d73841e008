"""The paper's ablation studies (Hu et al., arXiv 1709.01507, §6, Tables 10-16) as a registry.

A :class:`Study` is a named base configuration plus the one *scientific axis* it varies (its arms),
the *nuisance* parameters that are swept identically for every arm, the baseline included (the seed
always; a learning-rate grid if the user asks), and the parameters held *fixed* for every arm (the
paper's ablations remove the FC biases of the excitation, so ``se.bias`` is off throughout).
Each arm carries the paper's ImageNet top-1 / top-5 error for SE-ResNet-50 where the paper reports
one, so a report can set the measured ordering beside the published one. The gate, squeeze and
placement studies read their arms, and those numbers, from the SE slots' registries
(:class:`SlotArms`): a newly registered gate is an arm of the gate study with no change here.

Presets (:mod:`ablations.presets`) size the shared recipe: ``smoke`` (synthetic data, seconds, run by the tests), ``quick``
(a Fashion-MNIST subset and a CIFAR-style SE-ResNet-20, minutes per study on two CPU cores),
``standard`` (the published results in ``results/``: SE-ResNet-20 trained properly on 20,000
Fashion-MNIST images, tested on all 10,000) and ``full`` (a paper-like GPU recipe: all of CIFAR-10 on
SE-ResNet-56, or the user's backbone).

The ``family`` study is not a table of the paper: SE against the channel-attention family
(:mod:`senet.family`), one arm per module at its paper's defaults, read from the family's presets, so
a newly added module is an arm with no change here.
"""
from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from senet import config
from senet.errors import UserValueError
from senet.models import MODELS, build_model, se_modules
from senet.registry import Registry
from senet.se import GATES, PLACEMENTS, SQUEEZES, SEConfig, study_choices
from senet.se import PRESETS as FAMILY

from .presets import PRESETS, Preset  # noqa: F401 - re-exported: the sweeps' recipes


@dataclass(frozen=True)
class Arm:
    """One cell of an ablation table: a label, its flat config overrides and the paper's numbers."""

    label: str
    overrides: Mapping[str, Any]
    paper_top1: float | None = None  # ImageNet top-1 error (%) of SE-ResNet-50 in the cited table
    paper_top5: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"arm": self.label, "overrides": dict(self.overrides),
                "paper_top1": self.paper_top1, "paper_top5": self.paper_top5}


class SlotArms(Sequence[Arm]):
    """The arms of a study of one SE slot: every choice its registry holds (but those registered
    with ``study=False``: the attention family's parts), in registration order,
    labelled by name, with the paper's numbers its registration carries (``paper=``). Read from the
    registry whenever used, so a newly registered gate is an arm of the gate study by itself."""

    def __init__(self, registry: Registry, key: str):
        self.registry, self.key = registry, key

    def _arms(self) -> tuple[Arm, ...]:
        return tuple(Arm(name, {self.key: name}, *(self.registry.info(name).paper or (None, None)))
                     for name in study_choices(self.registry))

    def __getitem__(self, i):
        return self._arms()[i]

    def __len__(self) -> int:
        return len(study_choices(self.registry))

    def __iter__(self) -> Iterator[Arm]:
        return iter(self._arms())

    def __repr__(self) -> str:
        return f"SlotArms({self.registry.kind}: {', '.join(study_choices(self.registry))})"


#: The paper's baseline ResNet-50 (no SE), §6: 23.30 / 6.55.
PAPER_BASELINE = (23.30, 6.55)
#: The paper's default SE-ResNet-50 (r = 16, avg squeeze, sigmoid, standard, all stages): 22.28 / 6.03.
PAPER_DEFAULT = (22.28, 6.03)
#: ``se.stages = none`` on the SE twin is the plain backbone, built by the same code path, so the
#: baseline differs from the SE arms in the SE blocks alone.
BASELINE = Arm("baseline", {"se.stages": "none"}, *PAPER_BASELINE)


@dataclass(frozen=True)
class Study:
    """A named ablation: base config + one scientific axis (the arms) + nuisance + fixed parameters.

    ``arms`` is a sequence (a tuple, or :class:`SlotArms`, read from a slot's registry), or a
    callable ``Config -> tuple[Arm, ...]`` when the arms depend on the backbone (Table 13's stages
    are numbered from the network's own stages).
    """

    name: str
    title: str
    paper_table: str
    axis: str  # the flat config key(s) the arms vary, e.g. "se.gate"
    arms: Sequence[Arm] | Callable[[config.Config], tuple[Arm, ...]]
    reference_arm: str  # the arm the others are compared with (the paper's default SE or the baseline)
    fixed: Mapping[str, Any] = field(default_factory=lambda: {"se.bias": False})
    nuisance: Mapping[str, tuple] = field(default_factory=dict)  # swept for every arm; seeds are added
    doc: str = ""
    #: True: a report may average the nuisance values of one arm and seed into one number (an lr
    #: grid swept only to be marginalised); False keeps each nuisance value its own comparison.
    average_nuisance: bool = False
    #: Seeds per arm at a preset where this study needs other than the preset's default (the gate
    #: study is what users compare most, so it gets more seeds at ``standard``).
    seeds: Mapping[str, int] = field(default_factory=dict)

    def seeds_at(self, preset: str) -> int:
        return int(self.seeds.get(preset, PRESETS.get(preset).seeds))

    def resolve_arms(self, base: config.Config) -> tuple[Arm, ...]:
        arms = self.arms(base) if callable(self.arms) else self.arms
        labels = [a.label for a in arms]
        if len(set(labels)) != len(labels):
            raise UserValueError(f"study {self.name!r} has duplicate arm labels: {labels}")
        if self.reference_arm not in labels:
            raise UserValueError(f"study {self.name!r}: reference arm {self.reference_arm!r} is not one of "
                             f"its arms ({', '.join(labels)})")
        return tuple(arms)


STUDIES: Registry[Study] = Registry("study")


def register_study(study: Study) -> Study:
    STUDIES.add(study.name, study)
    return study


# --------------------------------------------------------------------------------------------------
# The base config of a study's trials (the presets, the recipes, are in ablations.presets)
# --------------------------------------------------------------------------------------------------
def base_config(study: Study, preset: str, overrides: Mapping[str, Any] | None = None) -> config.Config:
    """Config() <- preset <- study's fixed parameters <- the user's overrides (last wins)."""
    p = PRESETS.get(preset)
    user = {config.ALIASES.get(k, k): v for k, v in (overrides or {}).items()}
    flat = {**p.overrides, **study.fixed, **user}
    flat["model.name"] = se_twin(str(flat["model.name"]))
    return config.from_flat(flat)


def se_twin(name: str) -> str:
    """Every arm, the baseline included, runs on the se_ twin (``se.stages=none`` is the plain net)."""
    spec = MODELS.get(name)
    if spec.se_default:
        return name
    twin = f"se_{name}"
    if twin not in MODELS:
        raise UserValueError(f"model {name!r} has no SE twin to ablate; choose one of: "
                         + ", ".join(n for n, s in MODELS.items() if s.se_default))
    return twin


def model_stages(cfg: config.Config) -> tuple[int, ...]:
    """The paper-numbered stages (2 = conv2_x) of the configured backbone, read from its SE blocks."""
    model = build_model(cfg.model.name, num_classes=10, in_chans=3, se=SEConfig())
    stages = sorted({int(n.split("_")[1]) for n in se_modules(model)})
    return tuple(stages)


# --------------------------------------------------------------------------------------------------
# The studies of §6
# --------------------------------------------------------------------------------------------------
register_study(Study(
    "reduction", "Reduction ratio r", "Table 10", "se.reduction",
    (BASELINE,
     Arm("r=2", {"se.reduction": 2}, 22.29, 6.00),
     Arm("r=4", {"se.reduction": 4}, 22.25, 6.09),
     Arm("r=8", {"se.reduction": 8}, 22.26, 5.99),
     Arm("r=16", {"se.reduction": 16}, 22.28, 6.03),
     Arm("r=32", {"se.reduction": 32}, 22.72, 6.20)),
    "r=16", doc="capacity of the excitation bottleneck C → C/r → C; the paper finds r = 16 a good trade-off",
))

register_study(Study(
    "squeeze", "Squeeze operator F_sq", "Tables 11, 16", "se.squeeze", SlotArms(SQUEEZES, "se.squeeze"), "avg",
    doc="global pooling vs. max, CBAM's avg+max, SRM's mean+std and NoSqueeze (1×1 convs)",
))

register_study(Study(
    "gate", "Excitation gate σ", "Table 12", "se.gate", SlotArms(GATES, "se.gate"), "sigmoid",
    doc="the non-linearity that turns the excitation into channel weights",
    seeds={"standard": 5},
))

register_study(Study(
    "placement", "Integration of the SE block", "Tables 14, 15", "se.placement",
    SlotArms(PLACEMENTS, "se.placement"), "standard",
    doc="where the block sits relative to the residual unit (Fig. 5)",
))

#: Table 13, keyed by paper stage number; conv5_x alone is not reported.
_TABLE13 = {2: (23.03, 6.48), 3: (23.04, 6.32), 4: (22.68, 6.22)}


def _stage_arms(base: config.Config) -> tuple[Arm, ...]:
    arms = [Arm(f"stage{s}", {"se.stages": str(s)}, *_TABLE13.get(s, (None, None)))
            for s in model_stages(base)]
    arms.append(Arm("all", {"se.stages": "all"}, *PAPER_DEFAULT))
    arms.append(Arm("none", {"se.stages": "none"}, *PAPER_BASELINE))
    return tuple(arms)


register_study(Study(
    "stages", "SE in one stage alone, all stages, none", "Table 13", "se.stages", _stage_arms, "all",
    doc="which depths benefit from recalibration; arms follow the backbone's own stages",
))


# --------------------------------------------------------------------------------------------------
# The channel-attention family (senet.family): its modules as arms, not a table of the paper
# --------------------------------------------------------------------------------------------------
def _module_arm(name: str) -> Arm:
    return Arm(name, {f"se.{k}": v for k, v in FAMILY.get(name).items()})


def _builds(base: config.Config, arm: Arm) -> bool:
    """Whether ``arm``'s network builds on the study's backbone (on the meta device: no weights)."""
    try:
        with torch.device("meta"):
            build_model(base.model.name, num_classes=10, in_chans=3, se=config.from_flat(arm.overrides, base).se)
    except UserValueError:
        return False
    return True


def _family_arms(base: config.Config) -> tuple[Arm, ...]:
    """The plain network, then one arm per module of the family (every preset registered for the
    study, SE first) that builds on the backbone."""
    modules = [_module_arm(n) for n in study_choices(FAMILY)]
    return (Arm("baseline", {"se.stages": "none"}), *(a for a in modules if _builds(base, a)))


register_study(Study(
    "family", "The channel-attention family at the papers' defaults", "",
    ",".join(sorted({"se.stages", *(f"se.{k}" for n in study_choices(FAMILY) for k in FAMILY.get(n))})),
    _family_arms, "se", fixed={},
    doc="SE against ECA, CBAM, GE-θ⁻, SRM, GCT, SimAM, FcaNet, coordinate attention, SK and GC, each at its "
        "paper's defaults (its se.preset: senet/family/); the reference is the paper's SE block with its FC "
        "biases (the released models'; the slot studies remove them, so no trial is shared with them), the "
        "baseline the plain network. GC sits in stage 3 and later (se.stages 3+: c3-c5 on ResNet-50), GCT before "
        "every conv of the block (its paper's site, se.placement every_conv; once per block before the last "
        "conv, its README's setting, is the variant gct_block). GE-θ and GE-θ⁺ are variants (presets ge_theta, ge_theta_plus), not arms. A module that "
        "cannot be built on the chosen backbone is left out of the arms (SimAM's and GCT's sites are not in "
        "pre-activation blocks; FcaNet needs C a multiple of 16); on se_resnet20 (smoke, quick, standard) "
        "and se_resnet56 (full) every module builds. No paper numbers: each module's paper has its own baseline.",
))


# --------------------------------------------------------------------------------------------------
# custom: the user's own axes from a YAML file
# --------------------------------------------------------------------------------------------------
def _label(point: Mapping[str, Any]) -> str:
    return ",".join(f"{k.split('.')[-1]}={v}" for k, v in point.items())


def _values(p: Path, where: str, key: str, raw: Any) -> list:
    """An axis or nuisance entry as a non-empty list of values, each a valid setting of ``key``."""
    values = list(raw) if isinstance(raw, (list, tuple)) else [raw]
    if not values:
        raise UserValueError(f"{p}: {where}.{key} has no values; give it a list of at least one value")
    if key == "seed":
        raise UserValueError(f"{p}: seeds are an axis of every study; use --seeds, not {where}.seed")
    for v in values:  # every value, not only the first: a typo in the third arm fails before Ray starts
        _check_setting(p, where, key, v)
    return values


def _check_setting(p: Path, where: str, key: str, value: Any) -> None:
    try:
        config.from_flat({key: value})
    except UserValueError as e:
        raise UserValueError(f"{p}: {where}: {e}") from None


def load_custom(path: str | Path) -> Study:
    """A study from YAML.

    ``axes`` maps flat config keys to lists of values; ``mode: grid`` (default) takes every
    combination, ``mode: random`` draws ``samples`` distinct combinations with ``sample_seed``.
    ``fixed`` holds keys applied to every arm, ``nuisance`` keys swept for every arm (like the seed),
    ``reference`` names the reference arm (default: the first), ``average_nuisance: true`` lets a
    report average the nuisance values of an arm and seed (default: each is its own comparison)::

        name: gate_x_reduction
        title: Gate against r
        mode: grid
        axes: {se.gate: [sigmoid, tanh], se.reduction: [4, 16]}
        fixed: {se.bias: false}
        nuisance: {optim.lr: [0.05, 0.1]}
    """
    p = Path(path)
    if not p.is_file():
        raise UserValueError(f"custom study spec not found: {p}")
    try:
        spec = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserValueError(f"cannot parse {p}: {str(e).splitlines()[0]}") from None
    if not isinstance(spec, Mapping) or not isinstance(spec.get("axes"), Mapping) or not spec["axes"]:
        raise UserValueError(f"{p}: a custom study needs 'axes', a mapping of config keys to lists of values")
    known = {"name", "title", "paper_table", "mode", "axes", "samples", "sample_seed", "fixed",
             "nuisance", "reference", "doc", "average_nuisance"}
    extra = sorted(set(spec) - known)
    if extra:
        raise UserValueError(f"{p}: unknown field(s) {', '.join(extra)}; valid: {', '.join(sorted(known))}")
    for part in ("nuisance", "fixed"):
        if spec.get(part) is not None and not isinstance(spec[part], Mapping):
            raise UserValueError(f"{p}: '{part}' must be a mapping of config keys to values")
    axes = {str(k): _values(p, "axes", str(k), v) for k, v in spec["axes"].items()}
    nuisance = {str(k): tuple(_values(p, "nuisance", str(k), v)) for k, v in (spec.get("nuisance") or {}).items()}
    fixed = dict(spec.get("fixed") or {})
    for key, value in fixed.items():
        if key == "seed":
            raise UserValueError(f"{p}: seeds are an axis of every study; use --seeds, not fixed.seed")
        _check_setting(p, "fixed", key, value)
    both = sorted(set(axes) & set(nuisance))
    if both:
        raise UserValueError(f"{p}: {both[0]} is both an axis and a nuisance key; it can be only one")
    points = [dict(zip(axes, vals, strict=True)) for vals in itertools.product(*axes.values())]
    mode = spec.get("mode", "grid")
    if mode == "random":
        n = spec.get("samples", 8)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise UserValueError(f"{p}: samples must be a whole number >= 1 for mode: random, got {n!r}")
        try:
            sample_seed = int(spec.get("sample_seed", 0))
        except (TypeError, ValueError):
            raise UserValueError(f"{p}: sample_seed must be a whole number, got {spec['sample_seed']!r}") from None
        points = random.Random(sample_seed).sample(points, min(n, len(points)))
    elif mode != "grid":
        raise UserValueError(f"{p}: unknown mode {mode!r}; choose one of: grid, random")
    average = spec.get("average_nuisance", False)
    if not isinstance(average, bool):
        raise UserValueError(f"{p}: average_nuisance must be true or false, got {average!r}")
    arms = tuple(Arm(_label(pt), pt) for pt in points)
    name = str(spec.get("name", "custom"))
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in (".", ".."):
        raise UserValueError(f"{p}: study name {name!r} may hold only letters, digits, '_', '-' and '.'")
    return Study(name, str(spec.get("title", name)), str(spec.get("paper_table", "")), ",".join(axes),
                 arms, str(spec.get("reference", arms[0].label)), fixed=fixed, nuisance=nuisance,
                 doc=str(spec.get("doc", "")), average_nuisance=average)


register_study(Study(
    "custom", "Your own axes from a YAML file (--spec FILE.yaml)", "", "(from --spec)", (), "",
    doc="grid or random samples over any flat config keys; see ablations.studies.load_custom",
))


#: The order in which ``senet sweep all`` and ``make results`` run the studies: gate first (what users
#: come for), and each later study reuses the trials the earlier ones share with it.
RUN_ORDER = ("gate", "reduction", "squeeze", "placement", "stages")


def study_names(arg: str) -> list[str]:
    """``all`` (every paper study, in :data:`RUN_ORDER`) or a comma-separated list of studies."""
    names = list(RUN_ORDER) if arg == "all" else [n.strip() for n in arg.split(",") if n.strip()]
    for n in names:
        STUDIES.get(n)  # an unknown name is one line naming the choices
    if len(set(names)) != len(names) or not names:
        raise UserValueError(f"name each study once: {arg!r}")
    return names


def get_study(name: str, spec: str | None = None) -> Study:
    """The registered study, or for ``custom`` the one the YAML file ``spec`` describes."""
    study = STUDIES.get(name)
    if name == "custom":
        if not spec:
            raise UserValueError("the custom study needs --spec FILE.yaml (axes, mode: grid|random, ...)")
        return load_custom(spec)
    if spec:
        raise UserValueError(f"--spec applies to the custom study only, not {name!r}")
    return study
