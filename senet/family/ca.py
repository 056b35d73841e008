"""Coordinate attention (Hou et al.), as timm's ``CoordAttn``: strip means along W and along H, a
shared 1×1 C → m with BN and h-swish, one 1×1 head m → C per direction, sigmoid, U · a_w · a_h;
timm's width m = make_divisible(C / 24, 8, round_limit=0) and no biases (official: biases,
m = max(8, C // 32))."""
from __future__ import annotations

import torch
from torch import nn

from ..slots import ACTIVATIONS, EXCITATIONS, PRESETS, SQUEEZES, Squeeze


@SQUEEZES.register("strips", study=False)
class StripSqueeze(Squeeze):
    """Coordinate attention's strip pooling: the means along W (C × H) and along H (C × W),
    concatenated on one axis as (N, 1, C, H + W, 1). Goes with ``se.combine strips``."""

    ops_per_element = 2.0  # every element is in one mean of each kind
    pooled = False
    combine = "strips"

    def forward(self, u):
        return torch.cat([u.mean(3, keepdim=True), u.mean(2, keepdim=True).transpose(-1, -2)], dim=2).unsqueeze(1)


class CoordExcitation(nn.Module):
    """Coordinate attention's transform (timm ``CoordAttn``): a shared 1×1 C → m with BN and δ over
    both strips, split at H, then one 1×1 head m → C per direction. Takes (M, C, H + W, 1) and the
    map's size; returns both heads' outputs on the same axis (the H strip, then the W strip)."""

    takes_size = True

    def __init__(self, channels: int, hidden: int, act: nn.Module, bias: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 1, bias=bias)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.act = act
        self.conv_h = nn.Conv2d(hidden, channels, 1, bias=bias)
        self.conv_w = nn.Conv2d(hidden, channels, 1, bias=bias)

    def forward(self, z, size):
        h, w = size
        y = self.act(self.bn1(self.conv1(z)))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        return torch.cat([self.conv_h(y_h), self.conv_w(y_w.transpose(-1, -2)).transpose(-1, -2)], dim=2)


EXCITATIONS.add("coord", CoordExcitation, study=False)
ACTIVATIONS.add("hard_swish", nn.Hardswish, study=False)
PRESETS.add("ca", {"squeeze": "strips", "excitation": "coord", "act": "hard_swish", "bias": False,
                   "gate": "sigmoid", "combine": "strips", "reduction": 24, "divisor": 8, "rounding": "timm"})
