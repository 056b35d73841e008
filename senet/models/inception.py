"""SE-Inception: BN-Inception with an SE block on each Inception module's output (paper Fig. 2).

The Inception module is not residual, so the SE block simply rescales the concatenation of the
module's branches: ``Ũ = s · concat(branches(x))``. Each module is a *block* of the suite: it has
``stage``, ``index`` and an ``se`` slot whose SE is named ``SE_<stage>_<index>``, with stages
numbered after the modules' names (inception 3a-3c = stage 3, 4a-4e = stage 4, 5a-5b = stage 5).
Only the ``standard`` placement (on the module's output) applies; there is no residual branch or
identity path for the others.

- ``bn_inception``: the BN-Inception of Ioffe & Szegedy (2015) in the Caffe "bn-inception" layout
  that the paper's SE-BN-Inception builds on (224² input; 2.03 GFLOPs, 2.04 with SE, paper Table 2).
- ``inception_small``: the small Inception of Zhang et al. ("Understanding deep learning requires
  rethinking generalization", 2017) for 28-32 px inputs, at half its channel widths so that it costs
  about as much as a CIFAR ResNet-20 and trains in sweeps.
"""
from __future__ import annotations

import torch
from torch import nn

from ..se import SEPlan
from .backbone_registry import register_model
from .blocks import ClassifierNet, SESlot, init_weights, se_by_stage


class ConvBN(nn.Sequential):
    """Convolution (no bias: BN follows), BatchNorm, ReLU."""

    def __init__(self, cin, cout, k=1, stride=1, padding=None):
        super().__init__(
            nn.Conv2d(cin, cout, k, stride, k // 2 if padding is None else padding, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class InceptionModule(SESlot):
    """Parallel branches concatenated along channels, then SE on the result (paper Fig. 2).

    ``branches`` are modules mapping the input to ``(N, C_i, H', W')``; the module's width is
    ``Σ C_i``, which is the C the SE block sees.
    """

    supported_placements = ("standard",)
    residual = False

    def __init__(self, branches: list[nn.Module], out_channels: int, *, se: SEPlan | None = None,
                 stage=0, index=0):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.out_channels = out_channels
        self._init_se(se, {"in": out_channels, "inner": out_channels, "out": out_channels}, stage, index)

    def forward(self, x):
        out = torch.cat([b(x) for b in self.branches], 1)
        return self._at("branch_out", out)


def bn_inception_module(cin, c1, c3r, c3, d3r, d3, pool, proj, stride=1, **kw) -> InceptionModule:
    """One module of BN-Inception (Ioffe & Szegedy 2015, Fig. 5 / the Caffe "bn-inception" net).

    Branches: 1×1 (``c1``, absent when 0); 1×1 ``c3r`` → 3×3 ``c3``; 1×1 ``d3r`` → 3×3 ``d3`` → 3×3
    ``d3`` (the "double 3×3" that replaces GoogLeNet's 5×5); 3×3 ``pool`` ("avg"/"max") → 1×1
    ``proj`` (absent when 0). With ``stride`` 2 the module reduces the grid: the 3×3 convs stride,
    the pool is a 3×3/2 max pool passed through unprojected, and there is no 1×1 branch.
    """
    branches: list[nn.Module] = []
    width = 0
    if c1:
        branches.append(ConvBN(cin, c1))
        width += c1
    branches.append(nn.Sequential(ConvBN(cin, c3r), ConvBN(c3r, c3, 3, stride)))
    branches.append(nn.Sequential(ConvBN(cin, d3r), ConvBN(d3r, d3, 3), ConvBN(d3, d3, 3, stride)))
    width += c3 + d3
    if stride == 1:
        p = nn.AvgPool2d(3, 1, 1, count_include_pad=True) if pool == "avg" else nn.MaxPool2d(3, 1, 1)
    else:
        p = nn.MaxPool2d(3, 2, ceil_mode=True)  # Caffe pools round up: 28 → 14 → 7, as the convs
    if proj:
        branches.append(nn.Sequential(p, ConvBN(cin, proj)))
        width += proj
    else:
        branches.append(p)
        width += cin
    return InceptionModule(branches, width, **kw)


# (name, c1, c3r, c3, d3r, d3, pool, proj, stride): Ioffe & Szegedy (2015), Fig. 5.
_BN_INCEPTION = {
    3: (("3a", 64, 64, 64, 64, 96, "avg", 32, 1),
        ("3b", 64, 64, 96, 64, 96, "avg", 64, 1),
        ("3c", 0, 128, 160, 64, 96, "max", 0, 2)),
    4: (("4a", 224, 64, 96, 96, 128, "avg", 128, 1),
        ("4b", 192, 96, 128, 96, 128, "avg", 128, 1),
        ("4c", 160, 128, 160, 128, 160, "avg", 128, 1),
        ("4d", 96, 128, 192, 160, 192, "avg", 128, 1),
        ("4e", 0, 128, 192, 192, 256, "max", 0, 2)),
    5: (("5a", 352, 192, 320, 160, 224, "avg", 128, 1),
        ("5b", 352, 192, 320, 192, 224, "max", 128, 1)),
}


class Inception(ClassifierNet):
    """A stem, Inception modules grouped in stages 3-5, global average pooling and an FC layer.

    Modules are stored as ``inception<stage><letter>`` (``inception3a`` ... ``inception5b``), the
    names of the BN-Inception paper and its Caffe model. Blocks of the stages ``se`` selects get an
    SE block on their output (paper Fig. 2).
    """

    stages = (3, 4, 5)

    def __init__(self, stem: nn.Module, stem_width: int, layout: dict, module_fn, *,
                 num_classes=1000, se: SEPlan | None = None, dropout: float = 0.0):
        super().__init__()
        se_at = se_by_stage(se, self.stages, InceptionModule)
        self.stem = stem
        cin = stem_width
        for stage in self.stages:
            for index, (name, *spec) in enumerate(layout[stage], 1):
                m = module_fn(cin, *spec, se=se_at[stage], stage=stage, index=index)
                self.add_module(f"inception{name}", m)
                cin = m.out_channels
        self._add_head(cin, num_classes, dropout)
        init_weights(self)

    def forward_features(self, x):
        x = self.stem(x)
        for m in self.children():
            if isinstance(m, InceptionModule):
                x = m(x)
        return x



def _bn_inception(*, num_classes=1000, in_chans=3, se=None, dropout=0.0):
    stem = nn.Sequential(
        ConvBN(in_chans, 64, 7, 2),  # conv1/7x7_s2
        nn.MaxPool2d(3, 2, ceil_mode=True),  # pool1/3x3_s2: 112 → 56
        ConvBN(64, 64, 1),  # conv2/3x3_reduce
        ConvBN(64, 192, 3),  # conv2/3x3
        nn.MaxPool2d(3, 2, ceil_mode=True),  # pool2/3x3_s2: 56 → 28
    )
    return Inception(stem, 192, _BN_INCEPTION, bn_inception_module, num_classes=num_classes, se=se,
                     dropout=dropout)


register_model("bn_inception", _bn_inception, family="inception", input_size=224, num_classes=1000,
               in_chans=3, doc="BN-Inception (Ioffe & Szegedy 2015), Caffe layout; SE on module outputs")


# ---------------------------------------------------------------------------------------------
# Small Inception for 28-32 px inputs (Zhang et al. 2017, Fig. 3 / Table 4 of their appendix).
# ---------------------------------------------------------------------------------------------
def small_inception_module(cin, c1, c3, stride=1, **kw) -> InceptionModule:
    """Zhang et al.'s two modules: "Inception" = 1×1 ``c1`` ‖ 3×3 ``c3``; "Downsample" (``stride``
    2) = 3×3/2 conv ``c3`` ‖ 3×3/2 max pool (``c1`` unused)."""
    if stride == 1:
        return InceptionModule([ConvBN(cin, c1), ConvBN(cin, c3, 3)], c1 + c3, **kw)
    pool = nn.MaxPool2d(3, 2, 1)
    return InceptionModule([ConvBN(cin, c3, 3, 2), pool], c3 + cin, **kw)


def _small_layout(w: float) -> dict:
    def c(n):
        return max(1, int(n * w))

    return {
        3: (("3a", c(32), c(32), 1), ("3b", c(32), c(48), 1), ("3c", 0, c(80), 2)),
        4: (("4a", c(112), c(48), 1), ("4b", c(96), c(64), 1), ("4c", c(80), c(80), 1),
            ("4d", c(48), c(96), 1), ("4e", 0, c(96), 2)),
        5: (("5a", c(176), c(160), 1), ("5b", c(176), c(160), 1)),
    }


def _inception_small(*, num_classes=10, in_chans=3, se=None, width=0.5, dropout=0.0):
    stem_width = max(1, int(96 * width))
    stem = ConvBN(in_chans, stem_width, 3)
    return Inception(stem, stem_width, _small_layout(width), small_inception_module,
                     num_classes=num_classes, se=se, dropout=dropout)


register_model("inception_small", _inception_small, family="inception", input_size=32,
               num_classes=10, in_chans=3,
               doc="small Inception (Zhang et al. 2017) at half width, for 28-32 px inputs")
