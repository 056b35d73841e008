"""CBAM (Woo et al.), timm's ``CbamModule``: channel attention (GAP and GMP through one shared MLP
without biases, summed, sigmoid; timm's rounding of the hidden width), then the spatial stage below."""
from __future__ import annotations

import torch
from torch import nn

from ..slots import PRESETS, SPATIALS


class CBAMSpatial(nn.Module):
    """CBAM's spatial attention: mean and max over the channels (timm's order), a 7×7 conv 2 → 1
    without bias, BN, sigmoid, ×U. Parameters: 2k² + 2."""

    def __init__(self, kernel: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        s = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * self.gate(self.bn(self.conv(s)))

    def extra_flops(self, inputs, out):
        return 3 * out.numel()  # pooling over C (mean and max: 2 per element), the scaling


SPATIALS.add("cbam", CBAMSpatial)
PRESETS.add("cbam", {"squeeze": "avgmax", "excitation": "fc", "bias": False, "gate": "sigmoid",
                     "spatial": "cbam", "rounding": "timm"})
