"""Backbones. Importing this package registers every model."""
from . import inception, mobilenet, resnet  # noqa: F401  (importing registers the models)
from .backbone_registry import MODELS, ModelSpec, build_from_config, build_model, register_model, se_modules

__all__ = ["MODELS", "ModelSpec", "build_from_config", "build_model", "register_model", "se_modules"]
