"""SimAM (Yang et al.): a parameter-free energy per element on the unpooled map (``se.squeeze
none``), sigmoid; after the 3×3 conv, before its BN (the official ImageNet site), λ = 0.1 (its
ImageNet models; the module's default is 1e-4)."""
from __future__ import annotations

from torch import nn

from ..slots import EXCITATIONS, PRESETS


class SimAMEnergy(nn.Module):
    """SimAM's parameter-free energy per element: d / (4 (Σd / (N − 1) + λ)) + 1/2 with
    d = (x − μ)², N = H·W. Needs the unpooled map (``se.squeeze none``)."""

    needs_map = True

    def __init__(self, channels: int, lam: float | None = None):
        super().__init__()
        self.lam = 1e-4 if lam is None else float(lam)

    def forward(self, x):
        n = x.shape[2] * x.shape[3] - 1
        d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
        return d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + self.lam)) + 0.5

    def extra_flops(self, inputs, out):
        return 4 * out.numel()  # mean, (x − μ)², Σ, the energy (the scaling is the block's)

    def extra_repr(self):
        return f"lam={self.lam}"


EXCITATIONS.add("simam", SimAMEnergy, study=False)
PRESETS.add("simam", {"squeeze": "none", "excitation": "simam", "gate": "sigmoid", "placement": "pre_bn2",
                      "lam": 0.1})
