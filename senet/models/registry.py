"""The backbone registry: ``senet models`` lists it, ``build_model`` reads it.

Every backbone is registered once; its ``se_`` twin (the paper's default SE: r = 16, avg squeeze,
sigmoid gate, standard placement, all stages) is derived, not written again.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

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


MODELS: Registry[ModelSpec] = Registry("model")


def register_model(name: str, build: Callable[..., nn.Module], *, family: str, input_size: int,
                   num_classes: int, in_chans: int, doc: str = "", twin: bool = True) -> None:
    """Register ``name`` (plain) and, with ``twin``, ``se_<name>`` (the paper's default SE)."""
    MODELS.add(name, ModelSpec(name, build, family, input_size, num_classes, in_chans, False, doc))
    if twin:
        MODELS.add(f"se_{name}", ModelSpec(f"se_{name}", build, family, input_size, num_classes,
                                           in_chans, True, f"SE-{doc}"))


def build_model(name: str, num_classes: int | None = None, in_chans: int | None = None,
                se: SEConfig | None = None, **kwargs) -> nn.Module:
    """Build a registered backbone.

    ``se=None`` gives the registered default: no SE for a plain name, the paper's SE for an ``se_``
    twin. An explicit ``SEConfig`` is applied to either. Extra keyword arguments go to the builder
    (``stride_in_1x1`` for the ImageNet ResNets, for example); unknown ones raise a ValueError.
    """
    spec = MODELS.get(name)
    if se is None and spec.se_default:
        se = SEConfig()
    try:
        model = spec.build(num_classes=num_classes or spec.num_classes,
                           in_chans=in_chans or spec.in_chans, se=se, **kwargs)
    except TypeError as e:
        if "unexpected keyword" in str(e):
            raise ValueError(f"model {name!r}: {e}") from None
        raise
    model.senet_name = name
    model.se_config = se
    return model


def se_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The SE blocks of a model by their paper names (``SE_<stage>_<block>``), in forward order."""
    out = {}
    for m in model.modules():
        name = getattr(m, "block_name", "")
        if name and hasattr(m, "gate"):
            out[name] = m
    return out
