"""senet: the Squeeze-and-Excitation design space, the paper's backbones, data, training and
complexity accounting (Hu et al., "Squeeze-and-Excitation Networks", arXiv 1709.01507).

The library imports neither Ray nor the analysis code.
"""
from .complexity import Complexity, complexity
from .models import MODELS, build_model, se_modules
from .models.blocks import PLACEMENTS
from .se import ACTIVATIONS, EXCITATIONS, GATES, SQUEEZES, SEConfig, SqueezeExcitation

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS", "Complexity", "EXCITATIONS", "GATES", "MODELS", "PLACEMENTS", "SEConfig",
    "SQUEEZES", "SqueezeExcitation", "build_model", "complexity", "load_external", "se_modules",
]


def load_external(model, state_dict, source: str = "timm"):
    """Load a timm or torchvision state dict into a suite model (see :mod:`senet.interop`)."""
    from .interop import load_external as _load  # noqa: PLC0415

    return _load(model, state_dict, source=source)
