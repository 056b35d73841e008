"""Residual blocks with an SE slot, where the SE placements take effect (paper Fig. 5, Tables 14-15).

A block owns at most one SE module (``block.se``) and applies it at one *site* of its forward pass.
The placement registry (:data:`senet.slots.PLACEMENTS`) maps each placement name to a site and to
the tensor whose channels the SE sees; the SE module itself never knows where it sits. A network
hands each block the :class:`~senet.se.SEPlan` of its stage (:func:`se_by_stage`), or None.

Sites, in the order a block's forward reaches them:

``branch_in``   start of the residual branch (SE-PRE)
``convs``       before every convolution of the block, the shortcut's too (GCT's paper site; basic
                and bottleneck blocks only): one module per convolution, ``block.se`` a ModuleDict
                keyed by the convolution's name, each module named ``SE_<stage>_<block>_<conv>``
``pre_bn2``     after the 3×3 convolution, before its BN (SimAM; basic and bottleneck blocks only)
``inner``       after the 3×3 convolution (+BN, ReLU) inside the branch (Table 15)
``branch_out``  end of the residual branch, after its last BN, before the addition (standard SE)
``shortcut``    on the identity path, in parallel with the branch (SE-Identity)
``block_out``   after the addition and its ReLU (SE-POST)

At ``branch_out`` and ``shortcut`` the scaling feeds the residual addition, and the block computes
both in one pass (:meth:`SESlot._add`), unless hooks watch or replace the SE module's output. At
inference, a bottleneck's standard SE folds into its last 1×1 convolution and BN
(:meth:`SESlot._add_bn`, :meth:`senet.se.SqueezeExcitation.fold`).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UserValueError
from ..fused import add_into, owns_output
from ..se import SEPlan, has_hooks
from ..slots import PLACEMENTS, Placement

__all__ = ["PLACEMENTS", "Placement", "SEPlan", "SESlot", "se_by_stage"]


class SESlot(nn.Module):
    """Mixin for blocks: holds ``self.se`` and applies it at the placement's site.

    ``supported_placements`` names the placements a block type can host (None: all registered);
    ``residual`` says whether the block ends with an identity addition, which the complexity
    counter charges (and fuses with a standard SE's scaling).
    """

    se_site: str = ""
    supported_placements: tuple[str, ...] | None = None
    #: The sites this block's forward reaches (a placement at another site is refused).
    sites: tuple[str, ...] = ("branch_in", "inner", "branch_out", "shortcut", "block_out")
    residual: bool = True
    #: Whether the block's 3×3 conv may be replaced (``SEPlan.conv``: SKNet's selective kernel).
    conv_slot: bool = False

    @classmethod
    def check_placement(cls, placement: str) -> None:
        allowed = [p for p in (cls.supported_placements or PLACEMENTS.names())
                   if PLACEMENTS.get(p).site in cls.sites]
        if placement not in allowed:
            raise UserValueError(
                f"placement {placement!r} does not apply to {cls.__name__} blocks; "
                f"choose one of: {', '.join(allowed)}"
            )

    def _init_se(self, se: SEPlan | None, widths: dict[str, int], stage: int, index: int,
                 convs: dict[str, int] | None = None) -> None:
        """``widths``: the channels at each placement's tensor; ``convs``: the input channels of each
        convolution of the block by its attribute name (the ``convs`` site's modules)."""
        self.stage, self.index = stage, index
        self.placement = "standard" if se is None else se.placement
        if se is None:
            self.se = None
            self.se_site = ""
            return
        if se.conv is not None and not self.conv_slot:
            raise UserValueError(f"se.conv replaces the 3×3 conv of basic and bottleneck blocks; "
                                 f"{type(self).__name__} blocks have none to replace")
        self.check_placement(se.placement)
        if se.site == "convs" and se.conv is None:  # one module per convolution (GCT's site)
            self.se = nn.ModuleDict({k: se.build(c, stage) for k, c in (convs or {}).items()})
            self.se_site = "convs"
            for k, m in self.se.items():
                m.block_name = f"SE_{stage}_{index}_{k}"
            return
        self.se = se.build(widths.get(se.channels, 0), stage)
        self.se_site = se.site if self.se is not None else ""
        if self.se is None:
            return
        if hasattr(self.se, "block_name"):
            self.se.block_name = f"SE_{stage}_{index}"

    def _at(self, site: str, x: torch.Tensor) -> torch.Tensor:
        return self.se(x) if self.se_site == site else x

    def _before(self, conv: str, x: torch.Tensor) -> torch.Tensor:
        """``x`` through the module placed before convolution ``conv`` (the ``convs`` site), if any."""
        return self.se[conv](x) if self.se_site == "convs" and conv in self.se else x

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is None:
            return x
        return self.downsample(self._before("downsample", x))

    def _add(self, branch: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """The residual addition, with an SE at ``branch_out`` or ``shortcut`` applied on the way."""
        site = self.se_site
        if site not in ("branch_out", "shortcut"):
            return branch + shortcut
        u, x = (branch, shortcut) if site == "branch_out" else (shortcut, branch)
        se = self.se
        if has_hooks(se) or not hasattr(se, "scale_add") or not getattr(se, "fuses_add", True):
            # a hook may read or replace se(u) itself (the complexity counter, analysis/removal):
            # it must see the module called, so the addition stays a separate pass
            return se(u) + x
        return se.scale_add(u, x)

    def _add_bn(self, conv: nn.Module, bn: nn.Module, v: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """``self._add(bn(conv(v)), shortcut)``; at inference an SE at ``branch_out`` folds into
        ``conv`` and ``bn`` where it can (:meth:`~senet.se.SqueezeExcitation.fold`), and with no
        SE on the way the addition writes into BN's output where no one else holds it (as
        torchvision's and timm's blocks add in place), so a block without an SE allocates no more
        than a folded one."""
        se, site = self.se, self.se_site
        if site == "branch_out" and hasattr(se, "fold") and se.folds_into(conv, bn):
            return se.fold(conv, bn, v, shortcut)
        if site not in ("branch_out", "shortcut") and owns_output(bn):
            return add_into(bn(conv(v)), shortcut)
        return self._add(bn(conv(v)), shortcut)


def _shortcut_conv(downsample: nn.Module | None, inplanes: int) -> dict[str, int]:
    """``{"downsample": C_in}`` where the shortcut holds a convolution (not the parameter-free pad)."""
    has_conv = downsample is not None and any(isinstance(m, nn.Conv2d) for m in downsample.modules())
    return {"downsample": inplanes} if has_conv else {}


def se_by_stage(se: SEPlan | None, stages: tuple[int, ...], block: type[SESlot]) -> dict[int, SEPlan | None]:
    """Each stage's SE plan for a network of ``block``s (None: no SE there); a stage the network
    lacks, or a placement its blocks cannot host, raises naming the valid ones."""
    if se is None:
        return dict.fromkeys(stages)
    chosen = se.in_stages(stages)
    block.check_placement(se.placement)
    return {s: se if s in chosen else None for s in stages}


def init_weights(model: nn.Module) -> None:
    """He-normal (fan-out) convolutions, unit-scale BN: the initialisation every backbone shares.
    A network built on the ``meta`` device (shapes only) has no values to set."""
    for m in model.modules():
        if any(p.is_meta for p in m.parameters(recurse=False)):
            continue
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ClassifierNet(nn.Module):
    """Base of every backbone: ``forward_features`` (subclass) → global average pool → dropout → fc."""

    def _add_head(self, features: int, num_classes: int, dropout: float = 0.0) -> None:
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(features, num_classes)
        self.num_features = features

    def forward(self, x):
        x = self.avgpool(self.forward_features(x)).flatten(1)
        return self.fc(self.dropout(x))


def conv3x3(cin, cout, stride=1, groups=1):
    return nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False)


def conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


class BasicBlock(SESlot):
    """Two 3×3 convs (He et al. 2016), torchvision's parameter names."""

    expansion = 1
    sites = (*SESlot.sites, "pre_bn2", "convs")
    conv_slot = True

    def __init__(self, inplanes, planes, stride=1, downsample=None, *, se: SEPlan | None = None,
                 stage=0, index=0, **_):
        super().__init__()
        if se is not None and se.conv is not None:  # SKNet's basic block: the first 3×3 (timm's)
            self.conv1, self.bn1 = se.conv(inplanes, planes, stride), nn.Identity()
        else:
            self.conv1, self.bn1 = conv3x3(inplanes, planes, stride), nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self._init_se(se, {"in": inplanes, "inner": planes, "out": planes}, stage, index,
                      convs={"conv1": inplanes, "conv2": planes, **_shortcut_conv(downsample, inplanes)})

    def forward(self, x):
        identity = self._shortcut(x)
        out = self._at("branch_in", x)
        out = self.relu(self.bn1(self.conv1(self._before("conv1", out))))
        out = self._at("inner", out)
        if self.se_site == "pre_bn2":
            out = self._add(self.bn2(self.se(self.conv2(out))), identity)
        else:
            out = self._add_bn(self.conv2, self.bn2, self._before("conv2", out), identity)
        return self._at("block_out", self.relu(out))


class Bottleneck(SESlot):
    """1×1 → 3×3 → 1×1 bottleneck; ``stride_in_1x1`` puts the stride in the first 1×1 (the paper's
    Caffe models, "ResNet v1") rather than the 3×3 (torchvision's "v1.5")."""

    expansion = 4
    sites = (*SESlot.sites, "pre_bn2", "convs")
    conv_slot = True

    def __init__(self, inplanes, planes, stride=1, downsample=None, *, se: SEPlan | None = None,
                 stage=0, index=0, groups=1, base_width=64, stride_in_1x1=False, **_):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(inplanes, width, s1)
        self.bn1 = nn.BatchNorm2d(width)
        if se is not None and se.conv is not None:  # SKNet: the 3×3 conv, its BN and ReLU inside
            self.conv2, self.bn2 = se.conv(width, width, s3, groups), nn.Identity()
        else:
            self.conv2, self.bn2 = conv3x3(width, width, s3, groups), nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self._init_se(se, {"in": inplanes, "inner": width, "out": planes * self.expansion}, stage, index,
                      convs={"conv1": inplanes, "conv2": width, "conv3": width,
                             **_shortcut_conv(downsample, inplanes)})

    def forward(self, x):
        identity = self._shortcut(x)
        out = self._at("branch_in", x)
        out = self.relu(self.bn1(self.conv1(self._before("conv1", out))))
        out = self.relu(self.bn2(self._at("pre_bn2", self.conv2(self._before("conv2", out)))))
        out = self._at("inner", out)
        out = self._add_bn(self.conv3, self.bn3, self._before("conv3", out), identity)
        return self._at("block_out", self.relu(out))


class PreActBasicBlock(SESlot):
    """Pre-activation basic block (He et al., "Identity Mappings", 2016), used by wide ResNets."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, *, se: SEPlan | None = None,
                 stage=0, index=0, dropout=0.0, **_):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.downsample = downsample
        self._init_se(se, {"in": inplanes, "inner": planes, "out": planes},
                      stage, index)

    def forward(self, x):
        pre = self.relu(self.bn1(x))
        identity = x if self.downsample is None else self.downsample(pre)
        out = self._at("branch_in", pre)
        out = self.conv1(out)
        out = self.relu(self.bn2(out))
        out = self._at("inner", out)
        out = self.conv2(self.drop(out))
        return self._at("block_out", self._add(out, identity))


class PreActBottleneck(SESlot):
    """Pre-activation bottleneck (ResNet-164 of "Identity Mappings")."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, *, se: SEPlan | None = None,
                 stage=0, index=0, **_):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = conv1x1(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self._init_se(se, {"in": inplanes, "inner": planes, "out": planes * self.expansion}, stage, index)

    def forward(self, x):
        pre = self.relu(self.bn1(x))
        identity = x if self.downsample is None else self.downsample(pre)
        out = self._at("branch_in", pre)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.relu(self.bn3(out))
        out = self._at("inner", out)
        return self._at("block_out", self._add(self.conv3(out), identity))


class PadShortcut(nn.Module):
    """Parameter-free shortcut ("option A" of He et al.'s CIFAR ResNets): subsample, zero-pad channels."""

    def __init__(self, stride: int, extra: int):
        super().__init__()
        self.stride, self.extra = stride, extra

    def forward(self, x):
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            x = nn.functional.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return x
