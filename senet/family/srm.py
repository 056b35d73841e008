"""SRM (Lee et al.), as its official code computes it: style pooling (mean and unbiased standard
deviation, no ε), a channel-wise FC over the two descriptors (C × 2 weights, initialised to 0) with
BN, sigmoid."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UserValueError
from ..slots import EXCITATIONS, PRESETS, SQUEEZES, Squeeze


@SQUEEZES.register("meanstd", study=False)
class MeanStdSqueeze(Squeeze):
    """SRM's style pooling as its official code computes it: the mean and the unbiased standard
    deviation (no ε), two descriptors that a per-descriptor excitation (``cfc``) takes apart."""

    descriptors = 2
    ops_per_element = 3.0

    def vectors(self, u):
        n, c = u.shape[:2]
        t = u.reshape(n, c, -1)
        return torch.stack((t.mean(2), t.std(2)), 1).view(-1, c)


class ChannelFC(nn.Module):
    """SRM's style integration: a channel-wise FC over the K descriptors (C × K weights, no sharing
    across channels, initialised to 0), then BN over the channels. Takes (N, K, C) descriptors."""

    takes_vectors = True
    per_descriptor = True  # the K descriptors are combined here, not summed after a shared excitation

    def __init__(self, channels: int):
        super().__init__()
        self.cfc = nn.Parameter(torch.zeros(channels, 2))
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, z):
        if z.dim() != 3:
            raise UserValueError("excitation 'cfc' takes a pooled squeeze's descriptors (se.squeeze meanstd)")
        n, k, c = z.shape
        y = (z.transpose(1, 2) * self.cfc[None, :, :k]).sum(2)
        return self.bn(y[:, :, None, None]).view(n, c)

    def extra_flops(self, inputs, out):
        return inputs[0].numel()  # one multiply-add per descriptor and channel


EXCITATIONS.add("cfc", ChannelFC, study=False)
PRESETS.add("srm", {"squeeze": "meanstd", "excitation": "cfc", "gate": "sigmoid"})
