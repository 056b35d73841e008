"""ECA-Net (Wang et al.): GAP, a 1-D convolution across the channels (k = ψ(C), no bias, no
reduction), sigmoid. The excitation ``eca`` is one of SE's own slot choices (:mod:`senet.slots`);
``se.kernel 3,5,5,7`` gives ECA-Net50's released per-stage kernel sizes (ψ gives 5, 5, 5, 7)."""
from __future__ import annotations

from ..slots import PRESETS

PRESETS.add("eca", {"squeeze": "avg", "excitation": "eca", "gate": "sigmoid"})
