"""The Squeeze-and-Excitation block and its design space.

Hu et al., "Squeeze-and-Excitation Networks" (arXiv 1709.01507), Eq. 2-4: for a feature map U
(C × H × W) the block computes

    z = F_sq(U)                      squeeze: one descriptor per channel (global average pooling)
    s = σ(W2 δ(W1 z))                excitation: bottleneck C → C/r → C, δ = ReLU, σ = sigmoid
    Ũ_c = s_c · U_c                  scale

Each slot is a registry of named choices (or a callable), stored as a named submodule, so that a
forward hook on ``<block>.se.gate`` sees the excitation s:

- ``se.squeeze``    F_sq: ``avg`` (paper), ``max`` (Table 11), ``avgmax`` (CBAM), ``avgstd`` (SRM's
                    mean and standard deviation), ``none`` (NoSqueeze, Table 16).
- ``se.excitation`` W2 δ W1: ``fc`` (Eq. 3), ``eca`` (ECA-Net's 1-D conv across channels),
                    ``linear`` (one C × C FC, no reduction).
- ``se.excitation.act``  δ: ``relu`` (paper), ``gelu``, ``silu``.
- ``se.gate``       σ: ``sigmoid`` (paper), ``tanh``, ``relu`` (Table 12), ``hard_sigmoid``,
                    ``softmax``, ``softmax_c``, ``identity``.

What each gate does to the scale of the features it multiplies:

==============  =========================  ==================================================
gate            range of s_c               effect on U
==============  =========================  ==================================================
sigmoid         (0, 1)                     attenuates; s = 1 is the identity (saturation)
hard_sigmoid    [0, 1]                     piecewise-linear sigmoid, exact 0 and 1 reachable
tanh            (-1, 1)                    can flip a channel's sign; attenuates in magnitude
relu            [0, ∞)                     unbounded: can amplify, and can close channels
softmax         (0, 1), Σ_c s_c = 1        channels compete; mean weight 1/C, so features
                                           shrink by ~C (later BN/convs must undo the scale)
softmax_c       (0, C), mean 1             C · softmax: the same competition with mean weight 1,
                                           so it differs from sigmoid in shape, not only scale
identity        (-∞, ∞)                    no gate: the raw excitation, a linear rescaling
==============  =========================  ==================================================

Several descriptors (``avgmax``, ``avgstd``) go through one shared excitation and are summed before
the gate, as CBAM's channel attention does.

The module never knows where it sits: placement belongs to the residual block
(:mod:`senet.models.blocks`). A block whose SE scaling feeds its residual addition calls
:meth:`SqueezeExcitation.scale_add` for ``x + U·s`` in one pass; the result equals ``x + se(U)``.

Cost: with a pooled squeeze the FCs run as matrix products on the (N, C) descriptors (the 1×1
convolutions' weights viewed as matrices; names and shapes stay timm's), because a convolution on a
1×1 map costs several times the product at batch 1. In training, the average pooling and the fused
scale-add have hand-written backward passes that skip the full-size temporaries autograd's generic
ones make (a materialised broadcast, a multiplication by 1), see :class:`_SpatialMean` and
:class:`_ScaleAdd`.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _torch_module

from .errors import UserValueError
from .registry import Registry

SQUEEZES: Registry[Callable[[], nn.Module]] = Registry("squeeze")
EXCITATIONS: Registry[Callable[..., nn.Module]] = Registry("excitation")
ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation")
GATES: Registry[Callable[[], nn.Module]] = Registry("gate")


def hidden_width(channels: int, reduction: float, divisor: int | None = None) -> int:
    """Width C/r of the bottleneck: exactly ``max(1, C // r)`` unless a rounding divisor is given.

    Rounding to multiples of 8 (timm's default) makes several r values one and the same network on
    narrow layers, so it is off by default; with ``divisor`` the width is rounded to the nearest
    multiple (never below ``divisor`` nor below 90% of C/r), as timm and torchvision do.
    """
    if not reduction or reduction <= 0:
        raise UserValueError(f"reduction ratio r must be > 0, got {reduction!r}")
    if divisor is None:
        return max(1, int(channels // reduction))
    if divisor <= 0:
        raise UserValueError(f"se.divisor must be a positive integer, got {divisor!r}")
    v = channels / reduction
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if out < 0.9 * v:
        out += divisor
    return out


# --------------------------------------------------------------------------------------------
# Autograd for the two full-size operations of the block
# --------------------------------------------------------------------------------------------
class _SpatialMean(torch.autograd.Function):
    """``u.mean((2, 3))`` whose gradient stays a broadcast view of the (N, C) one.

    Autograd's own mean backward materialises the (N, C, H, W) gradient (and in NCHW even for a
    channels_last u), which is then added to the scaling's gradient of U: one full-size write and
    one read more per block than adding the view in place, which is what the engine does with it.
    """

    @staticmethod
    def forward(u):
        return u.mean((2, 3))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.shape = inputs[0].shape

    @staticmethod
    def backward(ctx, g):
        return (g / (ctx.shape[2] * ctx.shape[3]))[:, :, None, None].expand(ctx.shape)

    @staticmethod
    def jvp(ctx, du):
        return du.mean((2, 3))


def spatial_mean(u: torch.Tensor) -> torch.Tensor:
    """Mean over H and W: (N, C, H, W) -> (N, C)."""
    if u.requires_grad and torch.is_grad_enabled():
        return _SpatialMean.apply(u)
    return u.mean((2, 3))


class _ScaleAdd(torch.autograd.Function):
    """``x + u·s`` (s broadcast over u) in one pass, with the backward of ``u * s + x``.

    ``torch.addcmul``'s own backward multiplies u by the scalar value 1 at full size before using
    it; this one computes exactly the gradients of the unfused product and sum.
    """

    @staticmethod
    def forward(x, u, s):
        return torch.addcmul(x, u, s)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, u, s = inputs
        ctx.save_for_backward(u, s)
        ctx.save_for_forward(u, s)

    @staticmethod
    def backward(ctx, g):
        u, s = ctx.saved_tensors
        _, need_u, need_s = ctx.needs_input_grad
        gu = gs = None
        if need_s:
            prod = g * u
            gs = prod.sum_to_size(s.shape)
            if (need_u and not torch.is_grad_enabled() and s.shape != prod.shape
                    and prod.dtype == torch.result_type(g, s)):
                # g·s into g·u's memory once reduced (not under create_graph): a fresh full-size
                # buffer costs page faults on top of its pass (large freed blocks go back to the OS)
                gu = torch.mul(g, s, out=prod)
        if need_u and gu is None:
            gu = g * s
        return g, gu, gs

    @staticmethod
    def jvp(ctx, dx, du, ds):
        u, s = ctx.saved_tensors
        out = torch.zeros_like(u) if dx is None else dx.clone()
        if du is not None:
            out.addcmul_(du, s)
        if ds is not None:
            out.addcmul_(u, ds)
        return out


def scale_add(x: torch.Tensor, u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``x + u * s`` in one pass over the feature maps."""
    if torch.is_grad_enabled() and (x.requires_grad or u.requires_grad or s.requires_grad):
        return _ScaleAdd.apply(x, u, s)
    return torch.addcmul(x, u, s)


def has_hooks(m: nn.Module) -> bool:
    """Whether calling ``m`` would run hooks, by the same test as ``nn.Module.__call__``.

    Where a module would be skipped for a cheaper equivalent (its ``forward``'s arithmetic without
    the call, or two modules' work in one pass), hooks on it must still see it called.
    """
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
                or _torch_module._global_forward_hooks or _torch_module._global_forward_pre_hooks
                or _torch_module._global_backward_hooks or _torch_module._global_backward_pre_hooks)


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

    def vectors(self, u: torch.Tensor) -> torch.Tensor:
        return self.forward(u).reshape(-1, u.shape[1])

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.vectors(u).reshape(u.shape[0], self.descriptors, u.shape[1], 1, 1)


@SQUEEZES.register("avg")
class AvgSqueeze(Squeeze):
    """Global average pooling (paper Eq. 2)."""

    def vectors(self, u):
        return spatial_mean(u)


@SQUEEZES.register("max")
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


@SQUEEZES.register("none")
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


GATES.add("sigmoid", nn.Sigmoid)
GATES.add("tanh", nn.Tanh)
GATES.add("relu", nn.ReLU)
GATES.add("hard_sigmoid", nn.Hardsigmoid)
GATES.add("softmax", lambda: ChannelSoftmax(scaled=False))
GATES.add("softmax_c", lambda: ChannelSoftmax(scaled=True))
GATES.add("identity", Identity)

#: The value range of each gate's output; the analysis uses it for histogram bins.
GATE_RANGES: dict[str, tuple[float, float]] = {
    "sigmoid": (0.0, 1.0),
    "hard_sigmoid": (0.0, 1.0),
    "tanh": (-1.0, 1.0),
    "relu": (0.0, 4.0),
    "softmax": (0.0, 1.0),
    "softmax_c": (0.0, 4.0),
    "identity": (-4.0, 4.0),
}


# --------------------------------------------------------------------------------------------
# W2 δ W1: builders take (channels, hidden, act, bias) and map (M, C, h, w) -> (M, C, h, w).
# 1×1 convolutions serve both pooled (h = w = 1, an FC layer) and NoSqueeze inputs. An excitation
# with ``takes_vectors = True`` also maps (M, C) -> (M, C), which the block uses for pooled squeezes.
# --------------------------------------------------------------------------------------------
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

    def __init__(self, channels: int, hidden: int, act: nn.Module, bias: bool = True):
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
    """A 1-D convolution across channels (ECA-Net): local cross-channel interaction, no reduction."""

    takes_vectors = True

    def __init__(self, channels: int, hidden: int, act: nn.Module, bias: bool = False):
        super().__init__()
        k = eca_kernel_size(channels)
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
# The block
# --------------------------------------------------------------------------------------------
class SqueezeExcitation(nn.Module):
    """One SE block: ``U * σ(excitation(F_sq(U)))``.

    Args:
        channels: C, the number of channels of U.
        reduction: r; the bottleneck width is ``hidden_width(C, r, divisor)``.
        squeeze, excitation, act, gate: a registered name or a callable returning a module
            (for ``excitation`` the callable takes ``(channels, hidden, act, bias)``).
        bias: FC biases (the paper's ablations remove them; its released models keep them).
        divisor: round the hidden width to a multiple of this (off by default).
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
    ):
        super().__init__()
        self.channels = channels
        self.hidden = hidden_width(channels, reduction, divisor)
        self.gate_name = gate if isinstance(gate, str) else getattr(gate, "__name__", "custom")
        self.squeeze = SQUEEZES.resolve(squeeze)()
        act_module = ACTIVATIONS.resolve(act)()
        self.excitation = EXCITATIONS.resolve(excitation)(channels, self.hidden, act_module, bias)
        self.gate = GATES.resolve(gate)()
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
            e = self.excitation(z)
            return self.gate((e.view(n, k, c).sum(1) if k > 1 else e).view(n, c, 1, 1))
        z = self.squeeze(u)  # (N, K, C, h, w)
        n, k = z.shape[:2]
        e = self.excitation(z.flatten(0, 1))
        if k > 1:
            e = e.unflatten(0, (n, k)).sum(1)
        return self.gate(e)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return u * self.excite(u)

    def scale_add(self, u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``x + self(u)`` in one pass: the residual addition fused with the scaling.

        Bypasses this module's own hooks (its gate's still run), so a caller must use
        ``self(u) + x`` when the module has any.
        """
        return scale_add(x, u, self.excite(u))

    def extra_repr(self):
        return f"channels={self.channels}, hidden={self.hidden}, name={self.block_name!r}"


@dataclass(frozen=True)
class SEConfig:
    """The SE design space as one frozen config (flat keys ``se.<field>``)."""

    reduction: float = 16  # r: bottleneck width C // r (paper default 16; Table 10 sweeps 2..32)
    squeeze: str = "avg"  # F_sq: avg | max | avgmax | avgstd | none (Tables 11, 16)
    excitation: str = "fc"  # fc (W2 δ W1) | eca | linear
    act: str = "relu"  # δ inside the fc excitation: relu | gelu | silu
    gate: str = "sigmoid"  # σ: sigmoid | tanh | relu | hard_sigmoid | softmax | softmax_c | identity
    placement: str = "standard"  # standard | pre | post | identity | inner (Fig. 5, Tables 14-15)
    stages: str = "all"  # which stages get SE: "all", "none", or e.g. "2,3" (paper numbering, Table 13)
    bias: bool = True  # FC biases (released models: on; the paper's ablations: off)
    divisor: int = 0  # round the hidden width to a multiple of this; 0 = exact C // r

    def __post_init__(self):
        for reg, value in ((SQUEEZES, self.squeeze), (EXCITATIONS, self.excitation),
                           (ACTIVATIONS, self.act), (GATES, self.gate)):
            reg.get(value)
        from .models.blocks import PLACEMENTS  # noqa: PLC0415 (models import this module)

        PLACEMENTS.get(self.placement)
        if not isinstance(self.reduction, (int, float)) or self.reduction <= 0:
            raise UserValueError(f"se.reduction must be > 0, got {self.reduction!r}")
        if self.divisor < 0:
            raise UserValueError(f"se.divisor must be >= 0, got {self.divisor!r}")
        parse_stages(self.stages, None)

    def factory(self) -> Callable[[int], SqueezeExcitation]:
        """A callable ``channels -> SqueezeExcitation`` for the blocks."""

        def make(channels: int) -> SqueezeExcitation:
            return SqueezeExcitation(
                channels, self.reduction, self.squeeze, self.excitation, self.act, self.gate,
                self.bias, self.divisor or None,
            )

        return make


def parse_stages(stages, valid: tuple[int, ...] | None) -> frozenset[int] | None:
    """Parse ``"all"``/``"none"``/``"2,3"``/an iterable into a set; ``None`` means all stages.

    With ``valid`` given, stage numbers outside it raise a ValueError naming the valid ones.
    """
    if stages is None or stages == "all":
        return None
    if isinstance(stages, str):
        text = stages.strip()
        if text in ("", "none"):
            return frozenset()
        try:
            out = frozenset(int(s) for s in text.replace(" ", "").split(","))
        except ValueError:
            raise UserValueError(
                f"se.stages must be 'all', 'none' or stage numbers like '2,3', got {stages!r}"
            ) from None
    else:
        out = frozenset(int(s) for s in stages)
    if valid is not None:
        bad = sorted(out - set(valid))
        if bad:
            raise UserValueError(
                f"se.stages {bad} out of range; this network's stages are "
                f"{', '.join(map(str, valid))} (paper numbering: 2 = conv2_x)"
            )
    return out
