"""senet: the Squeeze-and-Excitation design space, the paper's backbones, data, training and
complexity accounting (Hu et al., "Squeeze-and-Excitation Networks", arXiv 1709.01507).

The library imports neither Ray nor the analysis code. Its top-level names are loaded on first use,
so the torch-free modules (:mod:`senet.records.layout`, :mod:`senet.errors`) can be imported by code that
must not load torch (the analysis's rendering).
"""
from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "Complexity": ".complexity", "complexity": ".complexity",
    "MODELS": ".models", "build_model": ".models", "se_modules": ".models",
    "PLACEMENTS": ".models.blocks",
    "ACTIVATIONS": ".se", "EXCITATIONS": ".se", "GATES": ".se", "SQUEEZES": ".se", "SEConfig": ".se",
    "SqueezeExcitation": ".se",
}

__all__ = sorted([*_EXPORTS, "load_external"])


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'senet' has no attribute {name!r}")


class _Package(types.ModuleType):
    """``senet.complexity`` is the function; importing the module of the same name (which Python
    then binds on the package) must not replace it."""

    def __setattr__(self, name: str, value) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            value = getattr(value, name, value)  # the module binds the function it is named after
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def load_external(model, state_dict, source: str = "timm"):
    """Load a timm or torchvision state dict into a suite model (see :mod:`senet.interop`)."""
    from .interop import load_external as _load

    return _load(model, state_dict, source=source)
