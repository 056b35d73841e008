"""SKNet (Li et al.): a selective-kernel convolution in place of the 3×3 conv + BN + ReLU of basic
and bottleneck blocks (``se.conv sk``), no SE block. d = C/16 rounded to 8s by the 0.9 rule, as timm
does; SKNet-50 (ResNeXt-50 32×4d, d = max(C/16, 32)) is ``--se.divisor 32`` on se_resnext50_32x4d.
Not here yet: timm's split input from the config (the module takes ``split_input``; ``se.conv sk``
builds the paper's unsplit paths), and SK together with an SE module on the block."""
from __future__ import annotations

import torch
from torch import nn

from ..slots import CONVS, PRESETS


class _ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dilation: int, groups: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class SelectiveKernelAttn(nn.Module):
    """SK's fuse and select: GAP of the summed paths, 1×1 C → d (no bias), BN, ReLU, 1×1 d → M·C
    (no bias), softmax over the M paths (timm's ``SelectiveKernelAttn``)."""

    def __init__(self, channels: int, num_paths: int, hidden: int):
        super().__init__()
        self.num_paths = num_paths
        self.fc_reduce = nn.Conv2d(channels, hidden, 1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc_select = nn.Conv2d(hidden, channels * num_paths, 1, bias=False)

    def forward(self, x):
        x = self.act(self.bn(self.fc_reduce(x.sum(1).mean((2, 3), keepdim=True))))
        x = self.fc_select(x)
        b, c, h, w = x.shape
        return torch.softmax(x.view(b, self.num_paths, c // self.num_paths, h, w), dim=1)


class SelectiveKernelConv(nn.Module):
    """SKNet's selective-kernel convolution in place of a block's 3×3 conv + BN + ReLU: M = 2
    paths (3×3, and 3×3 with dilation 2 for the paper's 5×5: timm's ``keep_3x3``), each conv + BN +
    ReLU, weighted by a softmax over the paths. The paper's input (``split_input=False``); timm's
    default splits the input channels across the paths."""

    def __init__(self, cin: int, cout: int, stride: int = 1, groups: int = 1, hidden: int = 32,
                 split_input: bool = False):
        super().__init__()
        self.num_paths, self.split_input, self.in_channels = 2, split_input, cin
        path_in = cin // 2 if split_input else cin
        self.paths = nn.ModuleList([_ConvBNReLU(path_in, cout, stride, d, min(cout, groups)) for d in (1, 2)])
        self.attn = SelectiveKernelAttn(cout, self.num_paths, hidden)

    def forward(self, x):
        if self.split_input:
            parts = torch.split(x, self.in_channels // self.num_paths, 1)
            x = torch.stack([op(parts[i]) for i, op in enumerate(self.paths)], dim=1)
        else:
            x = torch.stack([op(x) for op in self.paths], dim=1)
        return torch.sum(x * self.attn(x), dim=1)

    def extra_flops(self, inputs, out):
        m, n = self.num_paths, out.numel()
        return (m - 1) * n + n + m * n + (m - 1) * n  # Σ paths, GAP, weighting, Σ weighted


CONVS.add("sk", SelectiveKernelConv)
PRESETS.add("sk", {"conv": "sk", "reduction": 16, "divisor": 8})
