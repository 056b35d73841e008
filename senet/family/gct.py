"""GCT (Yang et al.): the ℓ2 embedding α·√(Σx² + ε), channel normalisation γ·s/√(mean_c s² + ε) + β,
the gate 1 + tanh (the identity at init: γ = β = 0). The ``gct`` preset places it where the paper
does, before every convolution of the block (``se.placement every_conv``); ``gct_block`` places it
once per block before the last conv (``inner``, the official README's cheaper setting)."""
from __future__ import annotations

import torch
from torch import nn

from ..slots import EXCITATIONS, GATES, PLACEMENTS, PRESETS, SQUEEZES, Placement, Squeeze


@SQUEEZES.register("l2", study=False)
class L2Squeeze(Squeeze):
    """GCT's global context embedding: α · sqrt(Σ_hw x² + ε), α initialised to 1."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))
        self.eps = eps

    def vectors(self, u):
        return (u.pow(2).sum((2, 3)) + self.eps).pow(0.5) * self.alpha

    def extra_flops(self, inputs, out):
        u = inputs[0]
        return u.numel() + u.shape[0] * u.shape[1]  # Σx² (multiply-adds), then α


class ChannelNorm(nn.Module):
    """GCT's channel normalization and gating adaptation: γ · s / sqrt(mean_c s² + ε) + β, γ and β
    initialised to 0 (so ``one_plus_tanh`` starts as the identity)."""

    takes_vectors = True

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, z):
        shape = (1, -1) + (1,) * (z.dim() - 2)
        norm = self.gamma.view(shape) / (z.pow(2).mean(dim=1, keepdim=True) + self.eps).pow(0.5)
        return z * norm + self.beta.view(shape)

    def extra_flops(self, inputs, out):
        return 2 * out.numel()  # γ-normalised scale, + β


class OnePlusTanh(nn.Module):
    """GCT's gate 1 + tanh(x): in (0, 2), the identity at x = 0."""

    def forward(self, x):
        return 1.0 + torch.tanh(x)


EXCITATIONS.add("channel_norm", ChannelNorm, study=False)
#: The paper's site: before every convolution (official GCT-ResNet-50: conv1, conv2, conv3 and the
#: projection shortcut's conv of each bottleneck; the stem's conv, outside the stages, is left out).
PLACEMENTS.add("every_conv", Placement("convs", "convs", "before every convolution of the block (GCT's paper site)"),
               study=False)
GATES.add("one_plus_tanh", OnePlusTanh, range=(0.0, 2.0), study=False)
#: The family study's arm is the paper's site; ``gct_block`` is one GCT per block before its last
#: convolution (the official README's cheaper variant, "0.1-0.2%" of cost).
PRESETS.add("gct", {"squeeze": "l2", "excitation": "channel_norm", "gate": "one_plus_tanh",
                    "placement": "every_conv"})
PRESETS.add("gct_block", {"squeeze": "l2", "excitation": "channel_norm", "gate": "one_plus_tanh",
                          "placement": "inner"}, study=False)
