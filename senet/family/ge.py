"""Gather-Excite (Hu et al.). GE-θ⁻ with a global extent (preset ``ge``): GAP, no excitation,
sigmoid (timm's ``GatherExcite(use_mlp=False)``, the one form it builds in 1.0.31). GE-θ (``ge_theta``):
a learned depthwise gather, no excitation, sigmoid; GE-θ⁺ (``ge_theta_plus``): that gather and a ReLU,
then SE's MLP C → C/16 → C with biases, sigmoid. Not here yet: GE-θ⁻ with a local extent."""
from __future__ import annotations

import math
from collections import OrderedDict

from torch import nn

from ..errors import UserValueError
from ..slots import EXCITATIONS, PRESETS, SQUEEZES, Squeeze


class NoExcitation(nn.Module):
    """No excitation: the descriptor goes to the gate as it is (GE-θ⁻)."""

    takes_vectors = True

    def __init__(self, channels: int):
        super().__init__()

    def forward(self, z):
        return z


EXCITATIONS.add("none", NoExcitation, study=False)
PRESETS.add("ge", {"squeeze": "avg", "excitation": "none", "gate": "sigmoid"})


# --------------------------------------------------------------------------------------------
# GE-θ and GE-θ⁺: a learned gather
# --------------------------------------------------------------------------------------------
@SQUEEZES.register("gather", study=False)
class GatherSqueeze(Squeeze):
    """GE-θ's gather, a learned depthwise one. ``se.extent`` e (a power of 2): log2(e) depthwise 3×3
    convs of stride 2 (padding 1, no bias), each with BN, ReLU between them but not after the last
    (timm's ``GatherExcite(extra_params=True)``), a (⌈H/e⌉, ⌈W/e⌉) map that the block upsamples
    (nearest) to H × W after the excitation; 11C·log2(e) parameters. ``se.extent 0`` (global): one
    unpadded depthwise conv over the whole map + BN (GENet's ``RN50-GEP``), C·H·W + 2C parameters;
    its side per stage is ``se.kernel`` (56,28,14,7 on ResNet-50 at 224 px), and another map size is
    refused. The convolutions are seen by the FLOP counter."""

    ops_per_element = 0.0
    upsample = True  # a gathered map smaller than U is upsampled before the gate
    relu = False  # θ⁺ (``gather_relu``): a ReLU after the last BN, as the official GEPP has it
    choice = "gather"  # the registered name, for messages

    def __init__(self, channels: int, extent: int | None = None, kernel: int | None = None):
        super().__init__()
        if extent is None or isinstance(extent, bool) or extent < 0 or extent == 1 or extent & (extent - 1):
            raise UserValueError(f"squeeze {self.choice!r} (GE-θ) needs se.extent: a power of 2 >= 2 (strided "
                                 f"depthwise convs) or 0 (global: its map side per stage in se.kernel), got {extent!r}")
        if extent == 0 and kernel is None:
            raise UserValueError(f"squeeze {self.choice!r} with se.extent 0 convolves the whole map: give its side "
                                 "per stage in se.kernel, e.g. 56,28,14,7 for ResNet-50 at 224 px")
        layers: dict[str, nn.Module] = {}
        if extent == 0:
            layers.update(conv1=nn.Conv2d(channels, channels, kernel, groups=channels, bias=False),
                          norm1=nn.BatchNorm2d(channels))
        else:
            n = int(math.log2(extent))
            for i in range(1, n + 1):
                layers[f"conv{i}"] = nn.Conv2d(channels, channels, 3, 2, 1, groups=channels, bias=False)
                layers[f"norm{i}"] = nn.BatchNorm2d(channels)
                if i < n:
                    layers[f"act{i}"] = nn.ReLU(inplace=True)
        if self.relu:
            layers["act"] = nn.ReLU(inplace=True)
        self.gather = nn.Sequential(OrderedDict(layers))
        self.extent, self.kernel = extent, kernel
        self.pooled = extent == 0  # a global gather gives one descriptor per channel

    def forward(self, u):
        if self.extent == 0 and tuple(u.shape[-2:]) != (self.kernel, self.kernel):
            raise UserValueError(f"GE-θ's global gather was built for {self.kernel}×{self.kernel} maps "
                                 f"(se.kernel); this one is {u.shape[-2]}×{u.shape[-1]}")
        return self.gather(u).unsqueeze(1)

    def vectors(self, u):
        return self.forward(u).flatten(1)

    def extra_repr(self):
        return f"extent={self.extent}" + (f", kernel={self.kernel}" if self.extent == 0 else "")


@SQUEEZES.register("gather_relu", study=False)
class GatherReluSqueeze(GatherSqueeze):
    """GE-θ⁺'s gather as the official ``RN50-GEPP`` has it: GE-θ's, then a ReLU before the excite
    MLP (timm's θ⁺ has none)."""

    relu = True
    choice = "gather_relu"

#: θ and θ⁺ at extent 8, the largest local extent the GE paper reports, which builds on any backbone
#: and input size; the global ones are ``se.extent 0`` with the map's side per stage in ``se.kernel``.
#: Variants of GE (``study=False``), not arms of the family study.
PRESETS.add("ge_theta", {"squeeze": "gather", "excitation": "none", "gate": "sigmoid", "extent": 8}, study=False)
PRESETS.add("ge_theta_plus", {"squeeze": "gather_relu", "excitation": "fc", "gate": "sigmoid", "extent": 8},
            study=False)
