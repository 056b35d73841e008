"""The Squeeze-and-Excitation block and its config.

Hu et al., "Squeeze-and-Excitation Networks" (arXiv 1709.01507), Eq. 2-4: for a feature map U
(C × H × W) the block computes

    z = F_sq(U)                      squeeze: one descriptor per channel (global average pooling)
    s = σ(W2 δ(W1 z))                excitation: bottleneck C → C/r → C, δ = ReLU, σ = sigmoid
    Ũ_c = s_c · U_c                  scale

Each slot (``squeeze``, ``excitation``, ``act``, ``gate``) is a registry of named choices
(:mod:`senet.slots`) or a callable, and the chosen module is a named submodule, so that a forward
hook on ``<block>.se.gate`` sees the excitation s.

The module never knows where it sits: placement belongs to the residual block
(:mod:`senet.models.blocks`). A block whose SE scaling feeds its residual addition calls
:meth:`SqueezeExcitation.scale_add` for ``x + U·s`` in one pass (:mod:`senet.fused`); the result
equals ``x + se(U)``. At inference, a bottleneck whose SE scales ``bn(conv(v))`` calls
:meth:`SqueezeExcitation.fold` instead, which adds no full-size pass to the block.

:class:`SEConfig` is the design space as one frozen config (flat keys ``se.<field>``); its
:meth:`~SEConfig.plan` resolves every choice once into the :class:`SEPlan` a backbone builds from.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import family  # noqa: F401 - registers the attention family's choices
from .errors import UserValueError
from .fused import add_into, folds, has_hooks, pooled_conv_bn, scale_add, scaled_bn, spatial_mean
from .registry import choice_field
from .slots import (
    ACTIVATIONS,
    CONVS,
    EXCITATIONS,
    GATES,
    PLACEMENTS,
    PRESETS,
    SPATIALS,
    SQUEEZES,
    AvgMaxSqueeze,
    AvgSqueeze,
    AvgStdSqueeze,
    ChannelSoftmax,
    ChoiceInfo,
    ECAExcitation,
    FCExcitation,
    GateInfo,
    Identity,
    LinearExcitation,
    MaxSqueeze,
    NoSqueeze,
    Placement,
    Squeeze,
    check_width,
    eca_kernel_size,
    excitation_args,
    hidden_width,
    study_choices,
)
from .stages import StagesFrom, parse_stages, resolve_stages

__all__ = [
    "ACTIVATIONS", "EXCITATIONS", "GATES", "PLACEMENTS", "SQUEEZES", "AvgMaxSqueeze", "AvgSqueeze",
    "AvgStdSqueeze", "ChannelSoftmax", "ChoiceInfo", "ECAExcitation", "FCExcitation", "GateInfo",
    "Identity", "LinearExcitation", "MaxSqueeze", "NoSqueeze", "Placement", "SEConfig", "SEPlan",
    "Squeeze", "SqueezeExcitation", "check_width", "eca_kernel_size", "excitation_args", "has_hooks",
    "hidden_width", "parse_stages", "scale_add", "spatial_mean", "PRESETS", "SPATIALS", "COMBINES",
    "study_choices",
]

#: How the excitation meets U (``se.combine``): ``scale`` U·s (SE), ``add`` U + e (GCNet's fusion),
#: ``strips`` U · a_w · a_h (coordinate attention: s holds the H strip, then the W strip, on one axis).
COMBINES = ("scale", "add", "strips")


#: What a squeeze builder may take, by name: C, and GE-θ's gather options (``se.extent``, ``se.kernel``).
SQUEEZE_ARGS = ("channels", "extent", "kernel")


def _squeeze_args(build) -> frozenset[str]:
    try:
        return frozenset(SQUEEZE_ARGS) & set(inspect.signature(build).parameters)
    except (TypeError, ValueError):
        return frozenset()


class SqueezeExcitation(nn.Module):
    """One SE block: ``U * σ(excitation(F_sq(U)))``.

    Args:
        channels: C, the number of channels of U.
        reduction: r; the bottleneck width is ``hidden_width(C, r, divisor)``.
        squeeze, excitation, act, gate: a registered name, a resolved
            :class:`~senet.registry.Choice`, or a callable returning a module (for ``excitation``
            it takes ``channels`` and, by name, those of ``hidden``, ``act``, ``bias`` it uses).
        bias: FC biases (the paper's ablations remove them; its released models keep them).
        divisor: round the hidden width to a multiple of this (off by default).
        rounding: ``None``/``"suite"`` or ``"timm"`` (:func:`~senet.slots.hidden_width`).
        combine: ``"scale"`` (U·s) or ``"add"`` (U + e, GCNet).
        spatial: a stage applied to the result (a :data:`SPATIALS` name, e.g. CBAM's), or None.
        kernel, lam: the excitation's own options (ECA's kernel size, SimAM's λ), where it takes them.

    A squeeze builder may take ``channels`` (a squeeze with parameters); an excitation that sets
    ``per_descriptor`` takes the (N, K, C) descriptors itself instead of the shared-then-summed rule,
    and one that sets ``needs_map`` needs the unpooled map (``none``).

    ``hidden`` is the bottleneck width, or None for an excitation without one (``eca``, ``linear``).
    """

    def __init__(
        self,
        channels: int,
        reduction: float = 16,
        squeeze="avg",
        excitation="fc",
        act="relu",
        gate="sigmoid",
        bias: bool = True,
        divisor: int | None = None,
        rounding: str | None = None,
        combine: str | None = None,
        spatial=None,
        kernel: int | None = None,
        lam: float | None = None,
        extent: int | None = None,
    ):
        super().__init__()
        squeeze, excitation = SQUEEZES.choice(squeeze), EXCITATIONS.choice(excitation)
        act, gate = ACTIVATIONS.choice(act), GATES.choice(gate)
        takes, sq_takes = excitation_args(excitation.entry), _squeeze_args(squeeze.entry)
        for key, value in (("kernel", kernel), ("lam", lam), ("extent", extent)):
            if value is not None and key not in takes | sq_takes:
                raise UserValueError(f"se.{key} does not apply to excitation {excitation.name!r} "
                                     f"with squeeze {squeeze.name!r}")
        if combine not in (None, *COMBINES):
            raise UserValueError(f"se.combine must be one of {', '.join(COMBINES)}, got {combine!r}")
        width = hidden_width(channels, reduction, divisor, rounding)
        self.channels = channels
        self.hidden = width if "hidden" in takes else None
        self.gate_name = gate.name
        self.additive = combine == "add"
        self.strips = combine == "strips"
        given = {"channels": channels, "extent": extent, "kernel": kernel}
        self.squeeze = squeeze.entry(**{k: v for k, v in given.items() if k in sq_takes})
        if (getattr(self.squeeze, "combine", None) == "strips") != self.strips:
            raise UserValueError("se.squeeze strips and se.combine strips go together (coordinate attention)")
        given = {"hidden": width, "bias": bias}
        given.update((k, v) for k, v in (("kernel", kernel), ("lam", lam)) if v is not None)
        if "act" in takes:
            given["act"] = act.entry()
        self.excitation = excitation.entry(channels, **{k: v for k, v in given.items() if k in takes})
        if getattr(self.excitation, "needs_map", False) and getattr(self.squeeze, "pooled", True):
            raise UserValueError(f"excitation {excitation.name!r} works on the whole map: use se.squeeze none")
        if getattr(self.excitation, "per_descriptor", False) and not getattr(self.squeeze, "pooled", False):
            raise UserValueError(f"excitation {excitation.name!r} needs a pooled squeeze")
        self.gate = gate.entry()
        self.spatial = None if spatial is None else SPATIALS.choice(spatial).entry()
        #: The paper's block name, SE_<stage>_<block>; set by the network that owns the block.
        self.block_name = ""

    def excite(self, u: torch.Tensor) -> torch.Tensor:
        """The excitation s of U through the gate module: (N, C, 1, 1), or (N, C, H, W) for NoSqueeze."""
        sq = self.squeeze
        if isinstance(sq, Squeeze) and sq.pooled and getattr(self.excitation, "takes_vectors", False):
            # Descriptors as (N·K, C) rows; the squeeze module is called only for its hooks: each
            # module call and view costs microseconds, which add up in a network at batch 1.
            n, c = u.shape[:2]
            k = sq.descriptors
            z = sq(u).reshape(n * k, c) if has_hooks(sq) else sq.vectors(u)
            if getattr(self.excitation, "per_descriptor", False):
                return self.gate(self.excitation(z.view(n, k, c)).view(n, c, 1, 1))
            e = self.excitation(z)
            return self.gate((e.view(n, k, c).sum(1) if k > 1 else e).view(n, c, 1, 1))
        z = self.squeeze(u)  # (N, K, C, h, w)
        n, k = z.shape[:2]
        if getattr(self.excitation, "takes_size", False):
            e = self.excitation(z.flatten(0, 1), size=tuple(u.shape[2:]))
        else:
            e = self.excitation(z.flatten(0, 1))
        if k > 1:
            e = e.unflatten(0, (n, k)).sum(1)
        if getattr(sq, "upsample", False) and e.shape[-2:] != u.shape[-2:]:  # GE's gather with an extent
            e = F.interpolate(e, size=u.shape[-2:])  # nearest, as timm's GatherExcite
        return self.gate(e)

    @property
    def fuses_add(self) -> bool:
        """Whether the block's residual addition fuses with this module's work (``U·s + x``)."""
        return not self.additive and not self.strips and self.spatial is None

    @property
    def scalings(self) -> int:
        """Full-size multiplications of U (the FLOP counter charges C·N each)."""
        return 2 if self.strips else 1

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if self.strips:
            s = self.excite(u)
            h = u.shape[2]
            y = u * s[:, :, h:].transpose(-1, -2) * s[:, :, :h]
        else:
            y = u + self.excite(u) if self.additive else u * self.excite(u)
        return y if self.spatial is None else self.spatial(y)

    def scale_add(self, u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``x + self(u)`` in one pass: the residual addition fused with the scaling.

        Bypasses this module's own hooks (its gate's still run), so a caller must use
        ``self(u) + x`` when the module has any.
        """
        if not self.fuses_add:
            return self.forward(u) + x
        return scale_add(x, u, self.excite(u))

    def folds_into(self, conv: nn.Module, bn: nn.Module) -> bool:
        """Whether :meth:`fold` applies to ``bn(conv(v))``: see :func:`senet.fused.folds`, with a
        linear squeeze (the average), an excitation on vectors, and no hooks on this module or its
        squeeze (which the fold does not call; the excitation and the gate are called)."""
        sq = self.squeeze
        return (getattr(sq, "linear", False) and getattr(self.excitation, "takes_vectors", False)
                and self.fuses_add and not getattr(self.excitation, "per_descriptor", False)
                and folds(conv, bn) and not has_hooks(self) and not has_hooks(sq))

    def fold(self, conv: nn.Module, bn: nn.Module, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``x + self(bn(conv(v)))`` at inference, with no full-size pass of the block's own
        (:mod:`senet.fused`): the squeeze taken before the convolution where that reads less, the
        scaling inside BN's pass. Equal to the unfolded block within rounding; callers check
        :meth:`folds_into` first."""
        y = conv(v)
        n, c = y.shape[:2]
        s = self.gate(self.excitation(pooled_conv_bn(conv, bn, v, y)).view(n, c, 1, 1))
        return add_into(scaled_bn(y, bn, s), x)

    def extra_repr(self):
        hidden = "" if self.hidden is None else f", hidden={self.hidden}"
        return f"channels={self.channels}{hidden}, name={self.block_name!r}"


@dataclass(frozen=True)
class SEPlan:
    """What a backbone needs to place SE blocks: built once from an :class:`SEConfig` (or made with
    :meth:`make` around any module factory).

    ``factory`` builds the SE module for C channels; a block applies it at ``site``, on the tensor
    whose width ``channels`` names ("in", "inner" or "out"), as the placement ``placement`` says;
    ``stages`` holds the paper-numbered stages with SE (None: all of them).
    """

    factory: Callable[[int], nn.Module]
    placement: str = "standard"
    site: str = "branch_out"
    channels: str = "out"
    stages: frozenset[int] | StagesFrom | None = None
    staged: bool = False  # the factory takes ``stage=`` (a per-stage choice such as se.kernel)
    #: ``conv(cin, cout, stride, groups)``: a module in place of the block's 3×3 conv + BN + ReLU
    #: (SKNet's); the block then holds no SE module (``factory`` returns None).
    conv: Callable[..., nn.Module] | None = None

    def build(self, channels: int, stage: int) -> nn.Module | None:
        """The SE module for ``channels`` in paper stage ``stage`` (None: the plan places none)."""
        return self.factory(channels, stage=stage) if self.staged else self.factory(channels)

    @classmethod
    def make(cls, factory: Callable[[int], nn.Module], placement: str = "standard",
             stages: str | Iterable[int] | None = "all", staged: bool = False) -> SEPlan:
        where = PLACEMENTS.get(placement)
        return cls(factory, placement, where.site, where.channels, parse_stages(stages), staged)

    def in_stages(self, valid: tuple[int, ...]) -> frozenset[int]:
        """The stages of a network (its ``valid`` ones) that get SE; a stage it lacks raises."""
        return resolve_stages(self.stages, valid)


@dataclass(frozen=True)
class SEConfig:
    """The SE design space as one frozen config (flat keys ``se.<field>``); checked on construction."""

    reduction: float = 16  # r: bottleneck width C // r (paper default 16; Table 10 sweeps 2..32)
    squeeze: str = choice_field("avg", SQUEEZES)  # F_sq, the squeeze: one descriptor per channel (Tables 11, 16)
    excitation: str = choice_field("fc", EXCITATIONS)  # W2 δ W1 (Eq. 3), or an excitation without the bottleneck
    act: str = choice_field("relu", ACTIVATIONS)  # δ inside the fc excitation
    gate: str = choice_field("sigmoid", GATES)  # σ, the gate that turns the excitation into channel weights (Table 12)
    placement: str = choice_field("standard", PLACEMENTS)  # where the residual block applies SE (Fig. 5, Tables 14-15)
    stages: str = "all"  # SE in: "all", "none", e.g. "2,3" (paper numbering, Table 13), "3+" (3 and later)
    bias: bool = True  # FC biases (released models: on; the paper's ablations: off)
    divisor: int = 0  # round the hidden width to a multiple of this; 0 = exact C // r
    # The attention family's keys (senet.family). None keeps SE's behaviour, and a None value is left
    # out of recipe hashes and config ids, so results recorded before these keys existed keep theirs.
    rounding: str | None = choice_field(None, ("suite", "timm"))  # hidden width: the suite's C // r (None) or timm's make_divisible(round_limit=0)
    combine: str | None = choice_field(None, COMBINES)  # U·s (None, scale) or U + e (add: GCNet)
    spatial: str | None = choice_field(None, SPATIALS)  # a stage after the channel one (cbam), or None
    kernel: str | None = None  # per stage (2, 3, ...): ECA's kernel size, e.g. "3,5,5,7" (None: ψ(C)); GE's global map side
    lam: float | None = None  # SimAM's λ (None: 1e-4, the module's default; its ImageNet models use 0.1)
    conv: str | None = choice_field(None, CONVS)  # sk: the blocks' 3×3 conv is SKNet's (d = hidden width), no SE block
    extent: int | None = None  # GE-θ's gather (squeeze gather): e = 2, 4, 8 ... or 0 (global; its map side in se.kernel)

    def __post_init__(self):
        self.plan()  # resolving every choice checks it, with r, the divisor and the stages

    @classmethod
    def from_preset(cls, name: str, **overrides) -> SEConfig:
        """The config of a named module of the family (:data:`PRESETS`), with ``overrides`` on top."""
        return cls(**{**PRESETS.get(name), **overrides})

    def kernels(self) -> tuple[int, ...] | None:
        if self.kernel is None:
            return None
        try:
            out = tuple(int(k) for k in str(self.kernel).replace(" ", "").split(","))
        except ValueError:
            raise UserValueError(f"se.kernel must be kernel sizes per stage like '3,5,5,7', got {self.kernel!r}") from None
        if any(k < 1 for k in out):
            raise UserValueError(f"se.kernel sizes must be >= 1, got {self.kernel!r}")
        return out

    def plan(self) -> SEPlan:
        """Every choice resolved once, r and the divisor checked, the stages parsed."""
        check_width(self.reduction, self.divisor)
        slots = {"squeeze": SQUEEZES.choice(self.squeeze), "excitation": EXCITATIONS.choice(self.excitation),
                 "act": ACTIVATIONS.choice(self.act), "gate": GATES.choice(self.gate)}
        reduction, bias, divisor = self.reduction, self.bias, self.divisor or None
        extra = {"rounding": self.rounding, "combine": self.combine, "spatial": self.spatial, "lam": self.lam,
                 "extent": self.extent}
        extra = {k: v for k, v in extra.items() if v is not None}
        kernels = self.kernels()
        takes, sq_takes = excitation_args(slots["excitation"].entry), _squeeze_args(slots["squeeze"].entry)
        for key, value in (("kernel", kernels), ("lam", self.lam), ("extent", self.extent)):
            if value is not None and key not in takes | sq_takes:
                raise UserValueError(f"se.{key} does not apply to excitation {self.excitation!r} "
                                     f"with squeeze {self.squeeze!r}")
        if kernels is not None and "kernel" in takes and any(k % 2 == 0 for k in kernels):
            raise UserValueError(f"se.kernel sizes must be odd for excitation {self.excitation!r}, got {self.kernel!r}")
        if "extent" in sq_takes:  # GE-θ's gather: its options checked here, not first in a network
            slots["squeeze"].entry(channels=1, extent=self.extent, kernel=kernels[0] if kernels else None)
        hidden_width(8, reduction, divisor, self.rounding)  # checks se.rounding
        if self.spatial is not None:
            SPATIALS.get(self.spatial)
        if self.combine not in (None, *COMBINES):
            raise UserValueError(f"se.combine must be one of {', '.join(COMBINES)}, got {self.combine!r}")

        if self.conv is not None:
            build_conv = CONVS.get(self.conv)
            rounding = self.rounding

            def conv(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Module:
                return build_conv(cin, cout, stride, groups, hidden=hidden_width(cout, reduction, divisor, rounding))

            plan = SEPlan.make(lambda channels: None, self.placement, self.stages)
            return SEPlan(plan.factory, plan.placement, plan.site, plan.channels, plan.stages, conv=conv)

        if kernels is None:
            def make(channels: int) -> SqueezeExcitation:
                return SqueezeExcitation(channels, reduction, bias=bias, divisor=divisor, **extra, **slots)

            return SEPlan.make(make, self.placement, self.stages)

        def make_staged(channels: int, stage: int) -> SqueezeExcitation:
            if not 2 <= stage < 2 + len(kernels):
                raise UserValueError(f"se.kernel {self.kernel!r} gives sizes for stages 2-{1 + len(kernels)}; "
                                     f"this network has SE in stage {stage}")
            return SqueezeExcitation(channels, reduction, bias=bias, divisor=divisor, kernel=kernels[stage - 2],
                                     **extra, **slots)

        return SEPlan.make(make_staged, self.placement, self.stages, staged=True)

    def factory(self) -> Callable[[int], SqueezeExcitation]:
        """A callable ``channels -> SqueezeExcitation`` for the blocks."""
        return self.plan().factory
