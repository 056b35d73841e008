"""Backbones. Importing this package registers every model."""
from .registry import MODELS, ModelSpec, build_model, register_model, se_modules
from . import resnet  # noqa: F401  (registers)

__all__ = ["MODELS", "ModelSpec", "build_model", "register_model", "se_modules"]
