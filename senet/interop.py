"""Load timm and torchvision state dicts into the suite's models, so pretrained networks can be
analysed with the same hooks, SE names (``SE_<stage>_<block>``) and complexity counter.

Our ResNets use torchvision's parameter names; the SE block keeps its FC layers one level down, in
the excitation slot (``layer1.0.se.excitation.fc1``, where timm's SEModule has ``layer1.0.se.fc1``).
A *source* is a registered key mapping plus a structural check; a new source is one
``SOURCES.add(name, Source(...))``.

torchvision and timm ResNets put the bottleneck's stride in the 3×3 conv ("ResNet v1.5"), so their
weights belong in models built with ``stride_in_1x1=False``. The paper's Caffe convention
(``stride_in_1x1=True``, our default for ``resnet50`` …) has the same parameter shapes but computes
something else, so loading refuses it rather than giving silently wrong outputs.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .models.blocks import Bottleneck
from .registry import Registry

StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Source:
    rename: Callable[[str], str]  # the source's parameter name -> ours
    check: Callable[[nn.Module], None] = lambda model: None  # raise ValueError if incompatible
    doc: str = ""


def _stride_in_3x3(source: str) -> Callable[[nn.Module], None]:
    def check(model: nn.Module) -> None:
        bad = [n for n, m in model.named_modules()
               if isinstance(m, Bottleneck) and m.conv1.stride != (1, 1)]
        if bad:
            raise ValueError(
                f"{source} ResNets put the stride in the 3×3 conv, but this model has it in the first "
                f"1×1 (block {bad[0]}); build it with stride_in_1x1=False"
            )

    return check


_TIMM_SE = re.compile(r"\.se\.(?!excitation\.)")


def _timm_rename(key: str) -> str:
    # timm's SEModule (fc1, fc2) and EcaModule (conv) hold the excitation's layers directly.
    return _TIMM_SE.sub(".se.excitation.", key)


SOURCES: Registry[Source] = Registry("source")
SOURCES.add("torchvision", Source(lambda k: k, _stride_in_3x3("torchvision"),
                                  "torchvision resnet*/resnext*/wide_resnet*: same names"))
SOURCES.add("timm", Source(_timm_rename, _stride_in_3x3("timm"),
                           "timm resnet*/seresnet*/seresnext*: se.fc1/fc2 -> se.excitation.fc1/fc2"))


def _listing(keys: list[str], limit: int = 8) -> str:
    more = f", … ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def map_state_dict(model: nn.Module, state_dict: StateDict, source: str = "timm") -> dict:
    """Rename ``state_dict`` for ``model`` and check every key and shape; return the new dict.

    Raises ValueError listing the missing keys, the unexpected keys and the shape mismatches; only
    when every key and shape fits, the source's structural check (the stride convention) follows,
    since a dict of another network would otherwise be blamed on the stride.
    """
    src = SOURCES.get(source)
    sd = dict(state_dict)
    if sd and all(k.startswith("module.") for k in sd):  # saved from DataParallel / DDP
        sd = {k[len("module."):]: v for k, v in sd.items()}
    mapped = {src.rename(k): v for k, v in sd.items()}
    ours = model.state_dict()
    missing = sorted(set(ours) - set(mapped))
    unexpected = sorted(set(mapped) - set(ours))
    shapes = sorted(f"{k} {tuple(mapped[k].shape)} vs ours {tuple(ours[k].shape)}"
                    for k in set(ours) & set(mapped) if mapped[k].shape != ours[k].shape)
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {_listing(shapes)}")
    if problems:
        name = getattr(model, "senet_name", type(model).__name__)
        raise ValueError(f"cannot load the {source} state dict into {name}: " + "; ".join(problems))
    src.check(model)
    return mapped


def load_external(model: nn.Module, state_dict: StateDict | str | os.PathLike,
                  source: str = "timm") -> nn.Module:
    """Load a timm or torchvision state dict (or a file holding one) into ``model``; return it.

    Files are read with ``torch.load(..., weights_only=True)``. Keys are renamed by the registered
    ``source`` (:data:`SOURCES`); any missing or unexpected key or any shape mismatch raises a
    ValueError that lists them, before the source's structural check (the stride convention).
    """
    if isinstance(state_dict, (str, os.PathLike)):
        state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
    mapped = map_state_dict(model, state_dict, source)
    model.load_state_dict(mapped, strict=True)
    return model
