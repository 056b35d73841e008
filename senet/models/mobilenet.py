"""SE-MobileNet: MobileNet v1 1.0-224 (Howard et al. 2017) with SE after each depthwise-separable
block (paper Table 3: 569 → 572 MFLOPs, 4.2M → 4.7M parameters).

A depthwise-separable block is a 3×3 depthwise conv (one filter per channel) and a 1×1 pointwise
conv, each followed by BN and ReLU. It costs F²·N·(K² + M) multiply-adds instead of a standard
conv's F²·N·K²·M (ratio 1/M + 1/K²). Each block is a *block* of the suite (``stage``, ``index``,
``se``); its SE is named ``SE_<stage>_<index>``.

Stages are numbered by output resolution at 224² input, continuing the paper's ResNet numbering
from the stem (stage 1, the 3×3/2 conv at 112²):

=====  ===========  ======  ===================================
stage  resolution   blocks  widths
=====  ===========  ======  ===================================
2      112²         1       32 → 64
3      56²          2       64 → 128 (stride 2), 128 → 128
4      28²          2       128 → 256 (stride 2), 256 → 256
5      14²          6       256 → 512 (stride 2), 5 × 512 → 512
6      7²           2       512 → 1024 (stride 2), 1024 → 1024
=====  ===========  ======  ===================================

Counting (:mod:`senet.complexity`): 568.7 MFLOPs and 4.23M parameters plain; with SE 574.6 MFLOPs
and 4.72M. The SE's 5.9 MFLOPs are pooling (2.7M), FCs (0.5M) and scaling (2.7M); these blocks have
no residual addition to fuse the scaling into, so it is charged. The paper's +3 MFLOPs (572) matches
pooling and FCs alone, i.e. a scaling folded into the next depthwise conv's per-channel weights.

Placements: ``standard`` puts SE on the block's output (after the pointwise conv, its BN and ReLU);
``inner`` puts it after the depthwise conv (+BN, ReLU), where MobileNet v3 and EfficientNet place it.
"""
from __future__ import annotations

from torch import nn

from ..se import SEPlan
from .backbone_registry import register_model
from .blocks import ClassifierNet, SESlot, init_weights, se_by_stage


class DepthwiseSeparable(SESlot):
    """3×3 depthwise conv + BN + ReLU, then 1×1 pointwise conv + BN + ReLU, then SE."""

    supported_placements = ("standard", "inner")
    residual = False

    def __init__(self, cin, cout, stride=1, *, se: SEPlan | None = None, stage=0, index=0):
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self._init_se(se, {"in": cin, "inner": cin, "out": cout}, stage, index)

    def forward(self, x):
        out = self.relu(self.bn1(self.dw(x)))
        out = self._at("inner", out)
        out = self.relu(self.bn2(self.pw(out)))
        return self._at("branch_out", out)


# (output width, stride) of each depthwise-separable block, grouped by stage (Howard et al. Table 1).
_V1 = {
    2: ((64, 1),),
    3: ((128, 2), (128, 1)),
    4: ((256, 2), (256, 1)),
    5: ((512, 2),) + ((512, 1),) * 5,
    6: ((1024, 2), (1024, 1)),
}


class MobileNetV1(ClassifierNet):
    """MobileNet v1 with width multiplier α (``width``); SE on the blocks of the stages ``se`` selects."""

    stages = (2, 3, 4, 5, 6)

    def __init__(self, *, num_classes=1000, in_chans=3, se: SEPlan | None = None,
                 width: float = 1.0, dropout: float = 0.0):
        super().__init__()
        se_at = se_by_stage(se, self.stages, DepthwiseSeparable)

        def c(n):
            return max(1, int(n * width))

        cin = c(32)
        self.conv1 = nn.Conv2d(in_chans, cin, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        for i, stage in enumerate(self.stages):
            blocks = []
            for j, (cout, stride) in enumerate(_V1[stage], 1):
                blocks.append(DepthwiseSeparable(cin, c(cout), stride, se=se_at[stage], stage=stage, index=j))
                cin = c(cout)
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self._add_head(cin, num_classes, dropout)
        init_weights(self)

    def forward_features(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(len(self.stages)):
            x = getattr(self, f"layer{i + 1}")(x)
        return x



register_model("mobilenet_v1", MobileNetV1, family="mobilenet", input_size=224, num_classes=1000,
               in_chans=3, doc="MobileNet v1 1.0-224 (Howard et al. 2017); SE after each block")
