"""The backbone registry: ``senet models`` lists it, ``build_model`` reads it.

Every backbone is registered once; its ``se_`` twin (the paper's default SE: r = 16, avg squeeze,
sigmoid gate, standard placement, all stages) is derived, not written again. A config becomes a
network in one place, :func:`build_from_config` (training, checkpoints, ``senet flops``), through
:func:`build_model`, which resolves the SE config once into the :class:`~senet.se.SEPlan` the
backbone places its SE blocks by.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from ..errors import UserValueError
from ..registry import Registry
from ..se import SEConfig


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[..., nn.Module]
    family: str
    input_size: int  # the input side the network was designed for
    num_classes: int
    in_chans: int
    se_default: bool  # True for the se_ twins
    doc: str = ""
    defaults: dict = field(default_factory=dict)
    options: tuple[str, ...] = ()  # keyword arguments the builder takes beyond num_classes/in_chans/se

    def se_for(self, se: SEConfig) -> SEConfig | None:
        """The SE config this network gets from a run's ``se``: itself for an se_ twin, None for a
        plain backbone, which refuses se.* keys that it would silently ignore."""
        if self.se_default:
            return se
        if se != SEConfig():
            raise UserValueError(f"model {self.name!r} has no SE blocks, but se.* keys were set; "
                                 f"use se_{self.name} or drop the se.* keys")
        return None


#: What every builder takes; ``build_model`` passes them itself.
_BASE_ARGS = ("num_classes", "in_chans", "se")


def builder_options(build: Callable[..., nn.Module]) -> tuple[str, ...]:
    """The named keyword parameters of ``build`` beyond the base three.

    A builder's ``**kwargs`` only forwards the base three (and its named options) to the network,
    so its named parameters are all it accepts; underscored ones (``_n`` …) bind loop variables
    and are not options.
    """
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(n for n, p in inspect.signature(build).parameters.items()
                 if p.kind in kinds and not n.startswith("_") and n not in _BASE_ARGS)


MODELS: Registry[ModelSpec] = Registry("model")


def register_model(name: str, build: Callable[..., nn.Module], *, family: str, input_size: int,
                   num_classes: int, in_chans: int, doc: str = "", twin: bool = True,
                   options: tuple[str, ...] | None = None) -> None:
    """Register ``name`` (plain) and, with ``twin``, ``se_<name>`` (the paper's default SE).

    ``options`` are the keyword arguments ``build`` accepts beyond ``num_classes``, ``in_chans`` and
    ``se``; by default its named keyword parameters (:func:`builder_options`).
    """
    opts = builder_options(build) if options is None else tuple(options)
    MODELS.add(name, ModelSpec(name, build, family, input_size, num_classes, in_chans, False, doc,
                               options=opts))
    if twin:
        MODELS.add(f"se_{name}", ModelSpec(f"se_{name}", build, family, input_size, num_classes,
                                           in_chans, True, f"SE-{doc}", options=opts))


def build_model(name: str, num_classes: int | None = None, in_chans: int | None = None,
                se: SEConfig | None = None, **kwargs) -> nn.Module:
    """Build a registered backbone.

    ``se=None`` gives the registered default: no SE for a plain name, the paper's SE for an ``se_``
    twin. An explicit ``SEConfig`` is applied to either. Extra keyword arguments go to the builder
    (``stride_in_1x1`` for the ImageNet ResNets, for example); unknown ones raise a ValueError.

    The model records the input side it was designed for as ``model.default_input_size`` (the
    spec's), which :func:`senet.complexity` uses when no size is given.
    """
    spec = MODELS.get(name)
    unknown = [k for k in kwargs if k not in spec.options]
    if unknown:
        # Blocks swallow stray keywords (``**_``), so a typo would silently build the default network.
        takes = ", ".join((*_BASE_ARGS, *spec.options))
        raise UserValueError(f"model {name!r}: unexpected keyword argument(s) {', '.join(unknown)}; "
                             f"it takes {takes}")
    if se is None and spec.se_default:
        se = SEConfig()
    try:
        model = spec.build(num_classes=num_classes or spec.num_classes,
                           in_chans=in_chans or spec.in_chans, se=None if se is None else se.plan(), **kwargs)
    except TypeError as e:
        if "unexpected keyword" in str(e):
            raise UserValueError(f"model {name!r}: {e}") from None
        raise
    model.senet_name = name
    model.se_config = se
    model.default_input_size = spec.input_size
    return model


def build_from_config(cfg, num_classes: int | None = None, in_chans: int | None = None) -> nn.Module:
    """The network a :class:`~senet.config.Config` describes (``model.*``, and ``se.*`` for an se_
    twin). ``num_classes`` and ``in_chans`` (the data's) count where the config leaves them 0; the
    registered backbone's own where both do."""
    kw = {} if cfg.model.stride_in_1x1 is None else {"stride_in_1x1": cfg.model.stride_in_1x1}
    return build_model(cfg.model.name, num_classes=cfg.model.num_classes or num_classes or None,
                       in_chans=cfg.model.in_chans or in_chans or None,
                       se=MODELS.get(cfg.model.name).se_for(cfg.se), **kw)


def se_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The SE blocks of a model by their paper names (``SE_<stage>_<block>``), in forward order."""
    out = {}
    for m in model.modules():
        name = getattr(m, "block_name", "")
        if name and hasattr(m, "gate"):
            out[name] = m
    return out
