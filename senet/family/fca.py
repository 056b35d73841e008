"""FcaNet (Qin et al.): multi-spectral pooling with the top-16 2-D DCT frequencies (C in 16 groups,
a fixed basis), FC C → C/16 → C without bias, sigmoid."""
from __future__ import annotations

import math

import torch

from ..errors import UserValueError
from ..slots import PRESETS, SQUEEZES, Squeeze

#: FcaNet's "top16" frequencies (u, v) on a 7×7 grid (cfzd/FcaNet ``get_freq_indices``).
TOP16 = ((0, 0), (0, 1), (6, 0), (0, 5), (0, 2), (1, 0), (1, 2), (4, 0),
         (5, 0), (1, 6), (3, 0), (0, 4), (0, 6), (0, 3), (3, 5), (2, 2))


def _dct_1d(pos: int, freq: int, size: int) -> float:
    out = math.cos(math.pi * freq * (pos + 0.5) / size) / math.sqrt(size)
    return out if freq == 0 else out * math.sqrt(2)


def dct_filters(channels: int, h: int, w: int, freqs=TOP16) -> torch.Tensor:
    """FcaNet's fixed (C, h, w) basis: channel group i (of ``len(freqs)``) gets the 2-D DCT basis of
    frequency ``freqs[i]`` scaled by (h // 7, w // 7); the DC group sums U/√N (not the mean)."""
    out = torch.zeros(channels, h, w)
    part = channels // len(freqs)
    for i, (u, v) in enumerate(freqs):
        u, v = u * (h // 7), v * (w // 7)
        for x in range(h):
            for y in range(w):
                out[i * part:(i + 1) * part, x, y] = _dct_1d(x, u, h) * _dct_1d(y, v, w)
    return out


@SQUEEZES.register("dct", study=False)
class DCTSqueeze(Squeeze):
    """FcaNet's multi-spectral pooling: Σ_hw U · B_c with B the top-16 DCT basis over the map's own
    H × W (a fixed basis, not a parameter; built once per map size). The official ImageNet models fix
    the tile per stage to the 224-px map sizes (56, 28, 14, 7), which is the same at that input, and
    adaptive-average-pool other inputs to it. C must be a multiple of 16."""

    def __init__(self, channels: int):
        super().__init__()
        if channels % len(TOP16):
            raise UserValueError(f"squeeze 'dct' splits C into {len(TOP16)} frequency groups; C = {channels} "
                                 f"is not a multiple of {len(TOP16)}")
        self.channels = channels
        self._basis: dict[tuple, torch.Tensor] = {}

    def basis(self, u: torch.Tensor) -> torch.Tensor:
        key = (u.shape[2], u.shape[3], u.device, u.dtype)
        if key not in self._basis:
            self._basis[key] = dct_filters(self.channels, u.shape[2], u.shape[3]).to(u.device, u.dtype)
        return self._basis[key]

    def vectors(self, u):
        return torch.sum(u * self.basis(u), dim=[2, 3])


PRESETS.add("fca", {"squeeze": "dct", "excitation": "fc", "bias": False, "gate": "sigmoid"})
