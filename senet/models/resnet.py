"""ResNet, ResNeXt, CIFAR ResNets and wide ResNets, with SE in any stages at any placement.

Parameter names follow torchvision (``conv1``, ``layer1.0.conv1``, ``downsample.0``, ``fc``), so
state dicts of torchvision and timm models load with little or no renaming (:mod:`senet.interop`).
Stages are numbered as in the paper: ``layer1`` is stage 2 (conv2_x), ``layer4`` stage 5 (conv5_x).
"""
from __future__ import annotations

from functools import partial

from torch import nn

from ..se import SEPlan
from .backbone_registry import register_model
from .blocks import (
    BasicBlock,
    Bottleneck,
    ClassifierNet,
    PadShortcut,
    PreActBasicBlock,
    PreActBottleneck,
    conv1x1,
    init_weights,
    se_by_stage,
)


class ResNet(ClassifierNet):
    """One builder for every residual network of the suite.

    Args:
        block: the residual block class.
        layers: number of blocks per stage.
        planes: base width per stage (the block multiplies by its expansion).
        stem: ``"imagenet"`` (7×7/2 conv, max pool) or ``"cifar"`` (one 3×3 conv).
        shortcut: ``"conv"`` (1×1 conv + BN), ``"conv_nobn"`` (pre-activation nets) or ``"pad"``
            (parameter-free "option A").
        se: where and how to build SE blocks, or None for the plain network.
        stem_width: channels after the stem.
        block_kwargs: passed to every block (``stride_in_1x1``, ``groups``, ``base_width``...).
    """

    def __init__(self, block, layers, planes, *, num_classes=1000, in_chans=3, stem="imagenet",
                 stem_width=64, shortcut="conv", se: SEPlan | None = None, first_stage=2,
                 **block_kwargs):
        super().__init__()
        self.stages = tuple(range(first_stage, first_stage + len(layers)))
        se_at = se_by_stage(se, self.stages, block)
        self.preact = block in (PreActBasicBlock, PreActBottleneck)

        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, stem_width, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(stem_width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        elif stem == "cifar":
            self.conv1 = nn.Conv2d(in_chans, stem_width, 3, 1, 1, bias=False)
            self.bn1 = nn.Identity() if self.preact else nn.BatchNorm2d(stem_width)
            self.relu = nn.Identity() if self.preact else nn.ReLU(inplace=True)
            self.maxpool = nn.Identity()
        else:
            raise ValueError(f"unknown stem {stem!r}; choose one of: imagenet, cifar")

        inplanes = stem_width
        for i, (n, p) in enumerate(zip(layers, planes, strict=True)):
            stage = self.stages[i]
            stride = 1 if i == 0 else 2
            out = p * block.expansion
            blocks = []
            for j in range(n):
                s = stride if j == 0 else 1
                down = None
                if s != 1 or inplanes != out:
                    if shortcut == "pad":
                        down = PadShortcut(s, out - inplanes)
                    elif shortcut == "conv_nobn":
                        down = nn.Sequential(conv1x1(inplanes, out, s))
                    else:
                        down = nn.Sequential(conv1x1(inplanes, out, s), nn.BatchNorm2d(out))
                blocks.append(block(inplanes, p, s, down, se=se_at[stage], stage=stage, index=j + 1,
                                    **block_kwargs))
                inplanes = out
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))

        self.final_bn = nn.BatchNorm2d(inplanes) if self.preact else nn.Identity()
        self._add_head(inplanes, num_classes)
        init_weights(self)

    def forward_features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(len(self.stages)):
            x = getattr(self, f"layer{i + 1}")(x)
        if self.preact:
            x = nn.functional.relu(self.final_bn(x))
        return x



# ---------------------------------------------------------------------------------------------
# ImageNet-size networks (224² input). ``stride_in_1x1=True`` is the paper's (Caffe) convention.
# ---------------------------------------------------------------------------------------------
_IMAGENET = dict(family="resnet", input_size=224, num_classes=1000, in_chans=3)

for _name, _block, _layers in (
    ("resnet18", BasicBlock, (2, 2, 2, 2)),
    ("resnet34", BasicBlock, (3, 4, 6, 3)),
    ("resnet50", Bottleneck, (3, 4, 6, 3)),
    ("resnet101", Bottleneck, (3, 4, 23, 3)),
    ("resnet152", Bottleneck, (3, 8, 36, 3)),
):
    def _build(_b=_block, _l=_layers, *, stride_in_1x1=True, **kw):
        return ResNet(_b, _l, (64, 128, 256, 512), stride_in_1x1=stride_in_1x1, **kw)

    register_model(_name, _build, **_IMAGENET,
                   doc=f"{_name[6:]}-layer ResNet (He et al. 2016); stride_in_1x1 switch")

for _name, _layers in (("resnext50_32x4d", (3, 4, 6, 3)), ("resnext101_32x4d", (3, 4, 23, 3))):
    def _build(_l=_layers, *, stride_in_1x1=False, **kw):
        return ResNet(Bottleneck, _l, (64, 128, 256, 512), groups=32, base_width=4,
                      stride_in_1x1=stride_in_1x1, **kw)

    register_model(_name, _build, family="resnext", input_size=224, num_classes=1000, in_chans=3,
                   doc="ResNeXt (Xie et al. 2017), cardinality 32, bottleneck width 4d")


# ---------------------------------------------------------------------------------------------
# CIFAR-size networks (28-32 px input), stages 2-4.
# ---------------------------------------------------------------------------------------------
_CIFAR = dict(input_size=32, num_classes=10, in_chans=3)

for _depth in (20, 32, 44, 56, 110):
    def _build(_n=(_depth - 2) // 6, **kw):
        return ResNet(BasicBlock, (_n,) * 3, (16, 32, 64), stem="cifar", stem_width=16,
                      shortcut="pad", **kw)

    register_model(f"resnet{_depth}", _build, family="cifar_resnet", **_CIFAR,
                   doc=f"CIFAR ResNet-{_depth} (He et al. 2016), basic blocks, option-A shortcuts")


def _resnet164(**kw):
    return ResNet(PreActBottleneck, (18, 18, 18), (16, 32, 64), stem="cifar", stem_width=16,
                  shortcut="conv_nobn", **kw)


register_model("resnet164", _resnet164, family="cifar_resnet", **_CIFAR,
               doc="CIFAR ResNet-164, pre-activation bottlenecks (He et al., Identity Mappings)")


def _wrn(depth, k, **kw):
    n = (depth - 4) // 6
    return ResNet(PreActBasicBlock, (n,) * 3, (16 * k, 32 * k, 64 * k), stem="cifar",
                  stem_width=16, shortcut="conv_nobn", **kw)


register_model("wrn16_8", partial(_wrn, 16, 8), family="wrn", **_CIFAR,
               doc="Wide ResNet 16-8 (Zagoruyko & Komodakis 2016), pre-activation")
