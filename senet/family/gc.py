"""GCNet (Cao et al.), timm's ``gca``: attention pooling (1×1 conv C → 1, softmax over H·W, the
weighted sum), 1×1 C → h, LayerNorm, ReLU, 1×1 h → C (biases), added to U (no gate); timm's rounding.
The paper puts it in stages c3-c5 of ResNet-50 (28,078,773 parameters), so the preset sets
``se.stages 3+``: stage 3 and every later one (paper numbering, 2 = conv2_x, the suite's), which
on a network of three stages (2-4, the CIFAR ResNets) is 3 and 4."""
from __future__ import annotations

import torch
from torch import nn

from ..fused import has_hooks
from ..slots import EXCITATIONS, PRESETS, SQUEEZES, Squeeze, _fc


@SQUEEZES.register("attn", study=False)
class AttentionPool(Squeeze):
    """GCNet's context modelling: a 1×1 conv C → 1 (with bias), softmax over the H·W positions, the
    weighted sum of U (timm's ``GlobalContext`` ops, in its order). Both products are seen by the
    counter, so it charges nothing per element itself."""

    ops_per_element = 0.0

    def __init__(self, channels: int):
        super().__init__()
        self.conv_attn = nn.Conv2d(channels, 1, 1, bias=True)

    def vectors(self, u):
        b, c, h, w = u.shape
        attn = torch.softmax(self.conv_attn(u).reshape(b, 1, h * w), dim=-1).unsqueeze(3)
        return (u.reshape(b, c, h * w).unsqueeze(1) @ attn).view(b, c)


class FCNormExcitation(nn.Module):
    """GCNet's transform: 1×1 C → h, LayerNorm over h, δ, 1×1 h → C (timm's ``ConvMlp`` with
    ``LayerNorm2d``, ε = 1e-6; the official ``nn.LayerNorm([h, 1, 1])`` has ε = 1e-5)."""

    takes_vectors = True

    def __init__(self, channels: int, hidden: int, act: nn.Module, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=bias)
        self.norm = nn.LayerNorm(hidden, eps=1e-6)
        self.act = act
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=bias)

    def _norm(self, y):
        return self.norm(y) if y.dim() == 2 else self.norm(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, z):
        if z.dim() == 2 and not (has_hooks(self.fc1) or has_hooks(self.fc2)):
            return _fc(self.act(self.norm(_fc(z, self.fc1))), self.fc2)
        flat = z.dim() == 2
        y = z[:, :, None, None] if flat else z
        y = self.fc2(self.act(self._norm(self.fc1(y))))
        return y.flatten(1) if flat else y


EXCITATIONS.add("fc_ln", FCNormExcitation, study=False)
PRESETS.add("gc", {"squeeze": "attn", "excitation": "fc_ln", "gate": "identity", "combine": "add",
                   "rounding": "timm", "stages": "3+"})
