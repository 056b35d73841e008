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

The table of the registered modules (preset, squeeze, excitation, gate, other keys) is appended to
this docstring when the package is imported, so it lists a new file's module too.

Every part declares the elementwise work the FLOP counter cannot see with an ``extra_flops(inputs,
output)`` method (:mod:`senet.complexity`).
"""
from __future__ import annotations

import importlib
import pkgutil

from ..slots import CONVS, PRESETS, SPATIALS

#: The papers' modules in the order their presets are listed (the family study's arm order); a file
#: not named here is imported after them, in alphabetical order.
ORDER = ("se_block", "eca", "cbam", "ge", "srm", "gct", "simam", "fca", "ca", "sk", "gc")


def _import_modules() -> None:
    found = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    for name in [*(n for n in ORDER if n in found), *(n for n in found if n not in ORDER)]:
        importlib.import_module(f"{__name__}.{name}")


_import_modules()


def preset_table() -> str:
    """The registered presets as an RST table: squeeze, excitation, gate and the other keys each sets."""
    rows = [("preset", "squeeze", "excitation", "gate", "also")]
    for name in PRESETS:
        keys = dict(PRESETS.get(name))
        slots = [str(keys.pop(k, "(SE's)" if not keys.get("conv") else "—")) for k in ("squeeze", "excitation", "gate")]
        rows.append((name, *slots, ", ".join(f"{k}={v}" for k, v in keys.items()) or "—"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    rule = "  ".join("=" * w for w in widths)
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join([rule, lines[0], rule, *lines[1:], rule])


if __doc__:  # (None under python -OO)
    __doc__ += "\n" + preset_table() + "\n"

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
