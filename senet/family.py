"""The channel-attention family as choices of the SE design space (slots of :mod:`senet.slots`).

Each module of the family is a combination of slot choices, most of them SE's own; this file
registers what is new and one named preset per module (``--se.preset eca``,
``SEConfig.from_preset("eca")``). Adding a module is one more section here plus its test (or, for a
part that acts on the block rather than the channel descriptor, a spatial stage or a replacement
of the 3×3 conv, in :mod:`senet.family_blocks`).

==========  ==========  ==============  =============  ===========================================
preset      squeeze     excitation      gate           also
==========  ==========  ==============  =============  ===========================================
se          avg         fc              sigmoid        the paper's block (r = 16, biases)
eca         avg         eca             sigmoid        ``se.kernel 3,5,5,7``: ECA-Net50's released k
cbam        avgmax      fc (no bias)    sigmoid        ``spatial=cbam`` after it; timm's rounding
ge          avg         none            sigmoid        GE-θ⁻ with a global extent
srm         meanstd     cfc (+BN)       sigmoid        per-descriptor channel-wise FC
gct         l2          channel_norm    one_plus_tanh  ``placement=inner``: before conv3 (README)
simam       none        simam           sigmoid        ``placement=pre_bn2``, λ = 0.1 (ImageNet)
fca         dct         fc (no bias)    sigmoid        FcaNet: top-16 DCT frequencies
ca          strips      coord           sigmoid        ``combine=strips`` (U · a_w · a_h); timm's width
                                                       m = make_divisible(C / 24, 8, round_limit=0), no
                                                       biases (official: biases, m = max(8, C // 32))
sk          —           —               —              ``conv=sk``: the 3×3 conv is SKNet's (d = C/16
                                                       rounded to 8s by the 0.9 rule, as timm does)
gc          attn        fc_ln           identity       ``combine=add``; timm's rounding; the paper's
                                                       ResNet-50 adds ``se.stages 3,4,5``
==========  ==========  ==============  =============  ===========================================

Every part declares the elementwise work the FLOP counter cannot see with an ``extra_flops(inputs,
output)`` method (:mod:`senet.complexity`). Parts are registered with ``study=False``: they are not
arms of the paper's slot studies (:mod:`ablations.studies`).

Not here yet: GE-θ and GE-θ⁺ (a learned depthwise gather built for the feature size) and GE with a
local extent; GCT before every convolution (the paper's site; ``inner`` is its README's one per
block, before conv3); SK with timm's split input from the config (the module takes
``split_input``; ``se.conv sk`` builds the paper's unsplit paths); SK on the SE side of a block
together with an SE module.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .errors import UserValueError
from .family_blocks import CONVS, SPATIALS, CBAMSpatial, SelectiveKernelAttn, SelectiveKernelConv
from .fused import has_hooks
from .registry import Registry
from .slots import ACTIVATIONS, EXCITATIONS, GATES, SQUEEZES, ChoiceInfo, Squeeze, _fc

#: Named presets (``se.preset``): SEConfig field values that make one module of the family.
PRESETS: Registry[dict] = Registry("preset", ChoiceInfo)


# --------------------------------------------------------------------------------------------
# Squeezes
# --------------------------------------------------------------------------------------------
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


@SQUEEZES.register("l2", study=False)
class L2Squeeze(Squeeze):
    """GCT's global context embedding: α · sqrt(Σ_hw x² + ε), α initialised to 1."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))
        self.eps = eps

    def vectors(self, u):
        return (u.pow(2).sum((2, 3)) + self.eps).pow(0.5) * self.alpha

    def extra_flops(self, inputs, out):
        u = inputs[0]
        return u.numel() + u.shape[0] * u.shape[1]  # Σx² (multiply-adds), then α


@SQUEEZES.register("attn", study=False)
class AttentionPool(Squeeze):
    """GCNet's context modelling: a 1×1 conv C → 1 (with bias), softmax over the H·W positions, the
    weighted sum of U (timm's ``GlobalContext`` ops, in its order). Both products are seen by the
    counter, so it charges nothing per element itself."""

    ops_per_element = 0.0

    def __init__(self, channels: int):
        super().__init__()
        self.conv_attn = nn.Conv2d(channels, 1, 1, bias=True)

    def vectors(self, u):
        b, c, h, w = u.shape
        attn = torch.softmax(self.conv_attn(u).reshape(b, 1, h * w), dim=-1).unsqueeze(3)
        return (u.reshape(b, c, h * w).unsqueeze(1) @ attn).view(b, c)


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


@SQUEEZES.register("strips", study=False)
class StripSqueeze(Squeeze):
    """Coordinate attention's strip pooling: the means along W (C × H) and along H (C × W),
    concatenated on one axis as (N, 1, C, H + W, 1). Goes with ``se.combine strips``."""

    ops_per_element = 2.0  # every element is in one mean of each kind
    pooled = False
    combine = "strips"

    def forward(self, u):
        return torch.cat([u.mean(3, keepdim=True), u.mean(2, keepdim=True).transpose(-1, -2)], dim=2).unsqueeze(1)


# --------------------------------------------------------------------------------------------
# Excitations
# --------------------------------------------------------------------------------------------
class NoExcitation(nn.Module):
    """No excitation: the descriptor goes to the gate as it is (GE-θ⁻)."""

    takes_vectors = True

    def __init__(self, channels: int):
        super().__init__()

    def forward(self, z):
        return z


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


class ChannelNorm(nn.Module):
    """GCT's channel normalization and gating adaptation: γ · s / sqrt(mean_c s² + ε) + β, γ and β
    initialised to 0 (so ``one_plus_tanh`` starts as the identity)."""

    takes_vectors = True

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, z):
        shape = (1, -1) + (1,) * (z.dim() - 2)
        norm = self.gamma.view(shape) / (z.pow(2).mean(dim=1, keepdim=True) + self.eps).pow(0.5)
        return z * norm + self.beta.view(shape)

    def extra_flops(self, inputs, out):
        return 2 * out.numel()  # γ-normalised scale, + β


class FCNormExcitation(nn.Module):
    """GCNet's transform: 1×1 C → h, LayerNorm over h, δ, 1×1 h → C (timm's ``ConvMlp`` with
    ``LayerNorm2d``, ε = 1e-6; the official ``nn.LayerNorm([h, 1, 1])`` has ε = 1e-5)."""

    takes_vectors = True

    def __init__(self, channels: int, hidden: int, act: nn.Module, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=bias)
        self.norm = nn.LayerNorm(hidden, eps=1e-6)
        self.act = act
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=bias)

    def _norm(self, y):
        return self.norm(y) if y.dim() == 2 else self.norm(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, z):
        if z.dim() == 2 and not (has_hooks(self.fc1) or has_hooks(self.fc2)):
            return _fc(self.act(self.norm(_fc(z, self.fc1))), self.fc2)
        flat = z.dim() == 2
        y = z[:, :, None, None] if flat else z
        y = self.fc2(self.act(self._norm(self.fc1(y))))
        return y.flatten(1) if flat else y


class CoordExcitation(nn.Module):
    """Coordinate attention's transform (timm ``CoordAttn``): a shared 1×1 C → m with BN and δ over
    both strips, split at H, then one 1×1 head m → C per direction. Takes (M, C, H + W, 1) and the
    map's size; returns both heads' outputs on the same axis (the H strip, then the W strip)."""

    takes_size = True

    def __init__(self, channels: int, hidden: int, act: nn.Module, bias: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 1, bias=bias)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.act = act
        self.conv_h = nn.Conv2d(hidden, channels, 1, bias=bias)
        self.conv_w = nn.Conv2d(hidden, channels, 1, bias=bias)

    def forward(self, z, size):
        h, w = size
        y = self.act(self.bn1(self.conv1(z)))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        return torch.cat([self.conv_h(y_h), self.conv_w(y_w.transpose(-1, -2)).transpose(-1, -2)], dim=2)


class SimAMEnergy(nn.Module):
    """SimAM's parameter-free energy per element: d / (4 (Σd / (N − 1) + λ)) + 1/2 with
    d = (x − μ)², N = H·W. Needs the unpooled map (``se.squeeze none``)."""

    needs_map = True

    def __init__(self, channels: int, lam: float | None = None):
        super().__init__()
        self.lam = 1e-4 if lam is None else float(lam)

    def forward(self, x):
        n = x.shape[2] * x.shape[3] - 1
        d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
        return d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + self.lam)) + 0.5

    def extra_flops(self, inputs, out):
        return 4 * out.numel()  # mean, (x − μ)², Σ, the energy (the scaling is the block's)

    def extra_repr(self):
        return f"lam={self.lam}"


EXCITATIONS.add("none", NoExcitation, study=False)
EXCITATIONS.add("cfc", ChannelFC, study=False)
EXCITATIONS.add("channel_norm", ChannelNorm, study=False)
EXCITATIONS.add("fc_ln", FCNormExcitation, study=False)
EXCITATIONS.add("simam", SimAMEnergy, study=False)
EXCITATIONS.add("coord", CoordExcitation, study=False)
ACTIVATIONS.add("hard_swish", nn.Hardswish, study=False)


# --------------------------------------------------------------------------------------------
# Gates
# --------------------------------------------------------------------------------------------
class OnePlusTanh(nn.Module):
    """GCT's gate 1 + tanh(x): in (0, 2), the identity at x = 0."""

    def forward(self, x):
        return 1.0 + torch.tanh(x)


GATES.add("one_plus_tanh", OnePlusTanh, range=(0.0, 2.0), study=False)


# --------------------------------------------------------------------------------------------
# Presets: the papers' combinations
# --------------------------------------------------------------------------------------------
PRESETS.add("se", {})
PRESETS.add("eca", {"squeeze": "avg", "excitation": "eca", "gate": "sigmoid"})
PRESETS.add("cbam", {"squeeze": "avgmax", "excitation": "fc", "bias": False, "gate": "sigmoid",
                     "spatial": "cbam", "rounding": "timm"})
PRESETS.add("ge", {"squeeze": "avg", "excitation": "none", "gate": "sigmoid"})
PRESETS.add("srm", {"squeeze": "meanstd", "excitation": "cfc", "gate": "sigmoid"})
PRESETS.add("gct", {"squeeze": "l2", "excitation": "channel_norm", "gate": "one_plus_tanh",
                    "placement": "inner"})
PRESETS.add("simam", {"squeeze": "none", "excitation": "simam", "gate": "sigmoid", "placement": "pre_bn2",
                      "lam": 0.1})
PRESETS.add("fca", {"squeeze": "dct", "excitation": "fc", "bias": False, "gate": "sigmoid"})
PRESETS.add("ca", {"squeeze": "strips", "excitation": "coord", "act": "hard_swish", "bias": False,
                   "gate": "sigmoid", "combine": "strips", "reduction": 24, "divisor": 8, "rounding": "timm"})
PRESETS.add("sk", {"conv": "sk", "reduction": 16, "divisor": 8})
PRESETS.add("gc", {"squeeze": "attn", "excitation": "fc_ln", "gate": "identity", "combine": "add",
                   "rounding": "timm"})

__all__ = ["CONVS", "PRESETS", "SPATIALS", "SelectiveKernelAttn", "SelectiveKernelConv", "TOP16", "AttentionPool", "CBAMSpatial", "ChannelFC", "ChannelNorm", "DCTSqueeze",
           "dct_filters",
           "CoordExcitation", "FCNormExcitation", "L2Squeeze", "StripSqueeze", "MeanStdSqueeze", "NoExcitation", "OnePlusTanh", "SimAMEnergy"]
