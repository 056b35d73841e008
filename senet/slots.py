"""The SE design space: one registry of named choices for each slot of the block (paper Eq. 2-4).

- :data:`SQUEEZES`     F_sq: ``avg`` (paper), ``max`` (Table 11), ``avgmax`` (CBAM), ``avgstd`` (SRM's
                       mean and standard deviation), ``none`` (NoSqueeze, Table 16).
- :data:`EXCITATIONS`  W2 δ W1: ``fc`` (Eq. 3), ``eca`` (ECA-Net's 1-D conv across channels),
                       ``linear`` (one C × C FC, no reduction).
- :data:`ACTIVATIONS`  δ inside the excitation: ``relu`` (paper), ``gelu``, ``silu``.
- :data:`GATES`        σ: ``sigmoid`` (paper), ``tanh``, ``relu`` (Table 12), ``softmax``,
                       ``softmax_c``, ``hard_sigmoid``, ``identity``.
- :data:`PLACEMENTS`   where a residual block applies SE (Fig. 5, Tables 14-15).
- :data:`SPATIALS`, :data:`CONVS`, :data:`PRESETS`: the attention family's spatial stages,
                       3×3-conv replacements and named modules (one file each in :mod:`senet.family`).

The channel-attention family (ECA, CBAM, GE, SRM, GCT, SimAM, FcaNet, CA, GC, SK) adds its parts
to these registries in :mod:`senet.family`, registered with ``study=False``: choices of the design
space, but not arms of the paper's slot studies (:func:`study_choices` lists those).

Each entry carries, from its registration, what the rest of the suite needs to know about it:
``paper``, SE-ResNet-50's ImageNet top-1 / top-5 error (%) with this choice in the paper's ablation
table (the ablation studies set it beside their arms), and for a gate its output ``range`` (the
analysis bins excitations over it). An excitation takes, by name, the arguments it uses among
``hidden`` (the bottleneck width C/r), ``act`` (δ) and ``bias``; one without ``hidden`` has no
bottleneck, and reports show no C/r for it. A new choice is one registration, e.g.
``GATES.add("swish", Swish, range=(-0.28, math.inf))``, and the tests, the gate study,
``senet config`` and the analysis take it up.

What each gate does to the scale of the features it multiplies:

==============  =========================  ==================================================
gate            range of s_c               effect on U
==============  =========================  ==================================================
sigmoid         (0, 1)                     attenuates; s = 1 is the identity (saturation)
tanh            (-1, 1)                    can flip a channel's sign; attenuates in magnitude
relu            [0, ∞)                     unbounded: can amplify, and can close channels
softmax         (0, 1), Σ_c s_c = 1        channels compete; mean weight 1/C, so features
                                           shrink by ~C (later BN/convs must undo the scale)
softmax_c       (0, C), mean 1             C · softmax: the same competition with mean weight 1,
                                           so it differs from sigmoid in shape, not only scale
hard_sigmoid    [0, 1]                     piecewise-linear sigmoid, exact 0 and 1 reachable
identity        (-∞, ∞)                    no gate: the raw excitation, a linear rescaling
==============  =========================  ==================================================

Several descriptors (``avgmax``, ``avgstd``) go through one shared excitation and are summed before
the gate, as CBAM's channel attention does. With a pooled squeeze the FCs run as matrix products on
the (N, C) descriptors (the 1×1 convolutions' weights viewed as matrices; names and shapes stay
timm's), because a convolution on a 1×1 map costs several times the product at batch 1.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserValueError
from .fused import has_hooks, spatial_mean
from .registry import Registry


@dataclass(frozen=True, kw_only=True)
class ChoiceInfo:
    """What a slot's choice declares when it is registered."""

    paper: tuple[float, float] | None = None  # SE-ResNet-50's ImageNet top-1 / top-5 error (%) in the paper
    study: bool = True  # an arm of its slot's ablation study (the attention family's parts are not)


@dataclass(frozen=True, kw_only=True)
class GateInfo(ChoiceInfo):
    range: tuple[float, float]  # the interval s_c lies in (±inf where the gate is unbounded)
    sums_to: str | None = None  # a normalised gate's weights sum to this ("1", "C"): none nears a bound

    @property
    def saturating(self) -> bool:
        """Whether s saturates at the bounds of (0, 1), where s = 1 is the identity (sigmoid-like):
        only there does "saturation" (the share of channels near a bound) mean anything."""
        return tuple(self.range) == (0.0, 1.0) and self.sums_to is None


SQUEEZES: Registry[Callable[[], nn.Module]] = Registry("squeeze", ChoiceInfo)
EXCITATIONS: Registry[Callable[..., nn.Module]] = Registry("excitation", ChoiceInfo)
ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation", ChoiceInfo)
GATES: Registry[Callable[[], nn.Module]] = Registry("gate", GateInfo)
#: Stages applied after the channel stage (``se.spatial``: CBAM's spatial attention).
SPATIALS: Registry[Callable[..., nn.Module]] = Registry("spatial stage", ChoiceInfo)
#: Convolutions in place of a block's 3×3 conv + BN + ReLU (``se.conv``: SKNet's selective kernel),
#: ``build(cin, cout, stride, groups, hidden)``; the block then holds no SE module.
CONVS: Registry[Callable[..., nn.Module]] = Registry("conv", ChoiceInfo)
#: Named presets (``se.preset``): the SEConfig field values that make one module of the attention
#: family (:mod:`senet.family`); ``study=False`` keeps a variant out of the family study's arms.
PRESETS: Registry[dict] = Registry("preset", ChoiceInfo)


def study_choices(registry: Registry) -> list[str]:
    """The choices of a slot that are arms of its ablation study, in registration order."""
    return [n for n in registry if registry.info(n).study]


def check_width(reduction: float, divisor: int | None = None) -> None:
    """The one check of r and the rounding divisor (0 or None: no rounding)."""
    if isinstance(reduction, bool) or not isinstance(reduction, (int, float)) or not reduction > 0:
        raise UserValueError(f"se.reduction must be > 0 (r, the reduction ratio), got {reduction!r}")
    if divisor is not None and (isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 0):
        raise UserValueError(f"se.divisor must be a whole number >= 0 (0: exact C // r), got {divisor!r}")


#: How a hidden width is rounded (``se.rounding``): the suite's default, or timm's attention modules'.
ROUNDINGS = ("suite", "timm")


def hidden_width(channels: int, reduction: float, divisor: int | None = None, rounding: str | None = None) -> int:
    """Width C/r of the bottleneck: exactly ``max(1, C // r)`` unless a rounding divisor is given.

    Rounding to multiples of 8 (timm's default) makes several r values one and the same network on
    narrow layers, so it is off by default; with ``divisor`` the width is rounded to the nearest
    multiple, never below ``divisor`` nor below 90% of C/r (timm's ``make_divisible`` with its
    default ``round_limit=0.9``, as timm's SelectiveKernel, its EfficientNet blocks and torchvision's
    ``_make_divisible`` do).

    ``rounding="timm"`` is what timm's SEModule, CbamModule, GatherExcite, GlobalContext and
    CoordAttn do: ``make_divisible(C / r, divisor or 1, round_limit=0.)``, the nearest multiple
    (half up), never bumped up by the 90% rule. The two differ at 46 (C, r) pairs for divisor 1
    (C <= 2048, r in 2..32), e.g. C=24, r=16: 1 (suite), 2 (timm); and at 46 more for divisor 8.
    """
    check_width(reduction, divisor)
    if rounding not in (None, *ROUNDINGS):
        raise UserValueError(f"se.rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
    v = channels / reduction
    if rounding == "timm":
        d = divisor or 1
        return max(d, int(v + d / 2) // d * d)
    if not divisor:
        return max(1, int(channels // reduction))
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if out < 0.9 * v:
        out += divisor
    return out


# --------------------------------------------------------------------------------------------
# F_sq: (N, C, H, W) -> (N, K, C, h, w), K descriptors per channel; h = w = 1 unless NoSqueeze.
# --------------------------------------------------------------------------------------------
class Squeeze(nn.Module):
    """Base class: ``descriptors`` is K; ``ops_per_element`` is the FLOPs the counter charges.

    A pooled squeeze defines ``vectors`` (its descriptors as (N·K, C) rows, image-major: what the
    excitation's matrix products take) or ``forward`` ((N, K, C, 1, 1)); each derives the other.
    """

    descriptors = 1
    ops_per_element = 1.0
    pooled = True
    #: The descriptor is linear in U (an average): it commutes with a 1×1 convolution and with a
    #: per-channel affine map, so it may be taken before them (:meth:`SqueezeExcitation.fold`).
    linear = False

    def vectors(self, u: torch.Tensor) -> torch.Tensor:
        return self.forward(u).reshape(-1, u.shape[1])

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.vectors(u).reshape(u.shape[0], self.descriptors, u.shape[1], 1, 1)


@SQUEEZES.register("avg", paper=(22.28, 6.03))
class AvgSqueeze(Squeeze):
    """Global average pooling (paper Eq. 2)."""

    linear = True

    def vectors(self, u):
        return spatial_mean(u)


@SQUEEZES.register("max", paper=(22.57, 6.09))
class MaxSqueeze(Squeeze):
    """Global max pooling (paper Table 11)."""

    def vectors(self, u):
        return u.amax((2, 3))


@SQUEEZES.register("avgmax")
class AvgMaxSqueeze(Squeeze):
    """Average and max pooling, each through the shared excitation, summed (CBAM)."""

    descriptors = 2
    ops_per_element = 2.0

    def vectors(self, u):
        return torch.stack((spatial_mean(u), u.amax((2, 3))), 1).view(-1, u.shape[1])


@SQUEEZES.register("avgstd")
class AvgStdSqueeze(Squeeze):
    """Per-channel mean and standard deviation (SRM's style statistics), shared excitation, summed."""

    descriptors = 2
    ops_per_element = 3.0  # sum, and squared deviations (subtract, multiply-add)

    def vectors(self, u):
        var, mean = torch.var_mean(u, (2, 3), correction=0)
        return torch.stack((mean, (var + 1e-5).sqrt()), 1).view(-1, u.shape[1])


@SQUEEZES.register("none", paper=(22.93, 6.39))
class NoSqueeze(Squeeze):
    """No pooling (paper Table 16): the excitation runs as 1×1 convs at every position."""

    ops_per_element = 0.0
    pooled = False

    def forward(self, u):
        return u.unsqueeze(1)


# --------------------------------------------------------------------------------------------
# δ and σ
# --------------------------------------------------------------------------------------------
ACTIVATIONS.add("relu", lambda: nn.ReLU(inplace=True))
ACTIVATIONS.add("gelu", nn.GELU)
ACTIVATIONS.add("silu", lambda: nn.SiLU(inplace=True))


class ChannelSoftmax(nn.Module):
    """Softmax over the channel axis; ``scaled=True`` multiplies by C so the mean weight is 1."""

    def __init__(self, scaled: bool = False):
        super().__init__()
        self.scaled = scaled

    def forward(self, x):
        s = torch.softmax(x, dim=1)
        return s * x.shape[1] if self.scaled else s

    def extra_repr(self):
        return f"scaled={self.scaled}"


class Identity(nn.Identity):
    """Identity gate (a distinct class so hooks and reprs name it)."""


# Registration order is the gate study's arm order: the paper's three, then the others.
GATES.add("sigmoid", nn.Sigmoid, range=(0.0, 1.0), paper=(22.28, 6.03))
GATES.add("tanh", nn.Tanh, range=(-1.0, 1.0), paper=(23.00, 6.38))
GATES.add("relu", nn.ReLU, range=(0.0, math.inf), paper=(23.47, 6.98))
GATES.add("softmax", lambda: ChannelSoftmax(scaled=False), range=(0.0, 1.0), sums_to="1")
GATES.add("softmax_c", lambda: ChannelSoftmax(scaled=True), range=(0.0, math.inf), sums_to="C")
GATES.add("hard_sigmoid", nn.Hardsigmoid, range=(0.0, 1.0))
GATES.add("identity", Identity, range=(-math.inf, math.inf))


# --------------------------------------------------------------------------------------------
# W2 δ W1: a builder takes ``channels`` and, by name, those of ``hidden``, ``act`` and ``bias`` it
# uses; it maps (M, C, h, w) -> (M, C, h, w). 1×1 convolutions serve both pooled (h = w = 1, an FC
# layer) and NoSqueeze inputs. An excitation with ``takes_vectors = True`` also maps (M, C) -> (M, C),
# which the block uses for pooled squeezes.
# --------------------------------------------------------------------------------------------
EXCITATION_ARGS = ("hidden", "act", "bias", "kernel", "lam")


def excitation_args(build: Callable[..., nn.Module]) -> frozenset[str]:
    """Those of :data:`EXCITATION_ARGS` (``hidden``, ``act``, ``bias``, and the options ``kernel``
    and ``lam`` of ``se.kernel`` and ``se.lam``) an excitation builder takes (all, with ``**kwargs``)."""
    params = inspect.signature(build).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return frozenset(EXCITATION_ARGS)
    return frozenset(p.name for p in params if p.name in EXCITATION_ARGS
                     and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def _fc(z: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1×1 convolution applied to (M, C) rows as a matrix product, with the same parameters
    (the module is not called: its callers call it instead where it has hooks)."""
    return F.linear(z, conv.weight.flatten(1), conv.bias)


class FCExcitation(nn.Module):
    """W2 δ(W1 z) (paper Eq. 3). Parameter names match timm's SEModule (fc1, fc2)."""

    takes_vectors = True

    def __init__(self, channels: int, hidden: int, act: nn.Module, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=bias)
        self.act = act
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=bias)

    def forward(self, z):
        if z.dim() == 2:
            if has_hooks(self.fc1) or has_hooks(self.fc2):
                return self.fc2(self.act(self.fc1(z[:, :, None, None]))).flatten(1)
            return _fc(self.act(_fc(z, self.fc1)), self.fc2)
        return self.fc2(self.act(self.fc1(z)))


class LinearExcitation(nn.Module):
    """One C × C FC layer, no reduction (ECA-Net's "SE-Var3")."""

    takes_vectors = True

    def __init__(self, channels: int, bias: bool = True):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1, bias=bias)

    def forward(self, z):
        if z.dim() == 2:
            return self.fc(z[:, :, None, None]).flatten(1) if has_hooks(self.fc) else _fc(z, self.fc)
        return self.fc(z)


def eca_kernel_size(channels: int, gamma: float = 2.0, b: float = 1.0) -> int:
    """ECA-Net's adaptive kernel size: the odd number nearest to log2(C)/γ + b/γ."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return max(3, t if t % 2 else t + 1)


class ECAExcitation(nn.Module):
    """A 1-D convolution across channels (ECA-Net): local cross-channel interaction, no reduction
    and no bias. ``kernel`` (``se.kernel``, per stage) overrides the adaptive size ψ(C): ECA-Net50's
    released model uses 3, 5, 5, 7 in stages 2-5 where ψ gives 5, 5, 5, 7."""

    takes_vectors = True

    def __init__(self, channels: int, kernel: int | None = None):
        super().__init__()
        k = eca_kernel_size(channels) if kernel is None else kernel
        if k < 1 or k % 2 == 0:
            raise UserValueError(f"se.kernel: ECA's kernel size must be odd and >= 1, got {k}")
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, z):
        if z.dim() == 2:
            return self.conv(z.unsqueeze(1)).squeeze(1)
        m, c, h, w = z.shape
        y = z.permute(0, 2, 3, 1).reshape(m * h * w, 1, c)
        y = self.conv(y)
        return y.reshape(m, h, w, c).permute(0, 3, 1, 2)


EXCITATIONS.add("fc", FCExcitation)
EXCITATIONS.add("linear", LinearExcitation)
EXCITATIONS.add("eca", ECAExcitation)


# --------------------------------------------------------------------------------------------
# Placements: applied by the residual blocks (senet.models.blocks), which the SE module never sees.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Placement:
    site: str  # where in the block's forward the SE is applied
    channels: str  # whose width the SE sees: "in", "inner" or "out"
    doc: str = ""


PLACEMENTS: Registry[Placement] = Registry("placement", ChoiceInfo)
PLACEMENTS.add("standard", Placement("branch_out", "out", "after the branch's last BN, before the add"),
               paper=(22.28, 6.03))
PLACEMENTS.add("pre", Placement("branch_in", "in", "at the start of the residual branch (SE-PRE)"),
               paper=(22.23, 6.00))
PLACEMENTS.add("post", Placement("block_out", "out", "after the addition and its ReLU (SE-POST)"),
               paper=(22.78, 6.35))
PLACEMENTS.add("identity", Placement("shortcut", "out", "on the identity path (SE-Identity)"),
               paper=(22.20, 6.15))
PLACEMENTS.add("inner", Placement("inner", "inner", "after the 3×3 conv inside the branch (Table 15)"),
               paper=(22.48, 6.02))
PLACEMENTS.add("pre_bn2", Placement("pre_bn2", "inner", "after the 3×3 conv, before its BN (SimAM's ImageNet site)"),
               study=False)
