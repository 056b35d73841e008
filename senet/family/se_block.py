"""SE (Hu et al.): the paper's block, r = 16, FC biases: the slots' defaults, so its preset is empty."""
from __future__ import annotations

from ..slots import PRESETS

PRESETS.add("se", {})
