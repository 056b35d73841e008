"""Gather-Excite (Hu et al.). GE-θ⁻ with a global extent: GAP, no excitation, sigmoid (timm's
``GatherExcite(use_mlp=False)``, the one form it builds in 1.0.31)."""
from __future__ import annotations

from torch import nn

from ..slots import EXCITATIONS, PRESETS


class NoExcitation(nn.Module):
    """No excitation: the descriptor goes to the gate as it is (GE-θ⁻)."""

    takes_vectors = True

    def __init__(self, channels: int):
        super().__init__()

    def forward(self, z):
        return z


EXCITATIONS.add("none", NoExcitation, study=False)
PRESETS.add("ge", {"squeeze": "avg", "excitation": "none", "gate": "sigmoid"})
