"""The channel-attention family as choices of the SE design space: one file per module.

Each module of the family is a combination of slot choices, most of them SE's own. Its file in this
package registers what is new (a squeeze, an excitation, a gate, a spatial stage or a replacement of
the 3×3 conv, each with ``study=False`` so that the paper's slot studies keep their arms) and the
module's named preset (``--se.preset eca``, ``SEConfig.from_preset("eca")``) in the registries of
:mod:`senet.slots`. Every file here is imported with the package, so **adding a module is one new
file here plus its test** (``tests/test_family.py``): its preset is then a value of ``se.preset``,
an arm of the ``family`` study (:mod:`ablations.studies`; a variant registered with ``study=False``
is not), and ``senet config`` lists its parts; golden entries (``python -m tests.golden --write``)
are reported missing, not failed, until written.

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
sk          —           —               —              ``conv=sk``: the 3×3 conv is SKNet's
gc          attn        fc_ln           identity       ``combine=add``; timm's rounding; ``stages=3+``
==========  ==========  ==============  =============  ===========================================

Every part declares the elementwise work the FLOP counter cannot see with an ``extra_flops(inputs,
output)`` method (:mod:`senet.complexity`).
"""
from __future__ import annotations

import importlib
import pkgutil

from ..slots import CONVS, PRESETS, SPATIALS

#: The papers' modules in the order their presets are listed (the family study's arm order); a file
#: not named here is imported after them, in alphabetical order.
ORDER = ("se", "eca", "cbam", "ge", "srm", "gct", "simam", "fca", "ca", "sk", "gc")


def _import_modules() -> None:
    found = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    for name in [*(n for n in ORDER if n in found), *(n for n in found if n not in ORDER)]:
        importlib.import_module(f"{__name__}.{name}")


_import_modules()

from .ca import CoordExcitation, StripSqueeze  # noqa: E402 - the parts, by name
from .cbam import CBAMSpatial  # noqa: E402
from .fca import TOP16, DCTSqueeze, dct_filters  # noqa: E402
from .gc import AttentionPool, FCNormExcitation  # noqa: E402
from .gct import ChannelNorm, L2Squeeze, OnePlusTanh  # noqa: E402
from .ge import NoExcitation  # noqa: E402
from .simam import SimAMEnergy  # noqa: E402
from .sk import SelectiveKernelAttn, SelectiveKernelConv  # noqa: E402
from .srm import ChannelFC, MeanStdSqueeze  # noqa: E402

__all__ = ["CONVS", "ORDER", "PRESETS", "SPATIALS", "TOP16", "AttentionPool", "CBAMSpatial", "ChannelFC",
           "ChannelNorm", "CoordExcitation", "DCTSqueeze", "FCNormExcitation", "L2Squeeze", "MeanStdSqueeze",
           "NoExcitation", "OnePlusTanh", "SelectiveKernelAttn", "SelectiveKernelConv", "SimAMEnergy",
           "StripSqueeze", "dct_filters"]
