"""Which stages of a network get SE (``se.stages``), in the paper's numbering (2 = conv2_x).

``all``, ``none``, stage numbers (``2,3``), or ``N+``: stage N and every later stage the network has.
``3+`` is GCNet's c3-c5 on ResNet-50 (stages 2-5) and keeps its meaning, "all but the first stage",
on a CIFAR ResNet of stages 2-4 (3 and 4), where ``3,4,5`` would name a stage it lacks.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import UserValueError


@dataclass(frozen=True)
class StagesFrom:
    """``N+``: stage ``start`` and every later stage of the network."""

    start: int

    def within(self, valid: Iterable[int]) -> frozenset[int]:
        valid = tuple(valid)
        out = frozenset(s for s in valid if s >= self.start)
        if not out:
            raise UserValueError(f"se.stages {self.start}+ names no stage of this network; its stages are "
                                 f"{', '.join(map(str, valid))} (paper numbering: 2 = conv2_x)")
        return out


def _within(stages: frozenset[int], valid: Iterable[int]) -> frozenset[int]:
    valid = tuple(valid)
    bad = sorted(stages - set(valid))
    if bad:
        raise UserValueError(
            f"se.stages {bad} out of range; this network's stages are "
            f"{', '.join(map(str, valid))} (paper numbering: 2 = conv2_x)"
        )
    return stages


def parse_stages(stages, valid: tuple[int, ...] | None = None) -> frozenset[int] | StagesFrom | None:
    """Parse ``"all"``/``"none"``/``"2,3"``/``"3+"``/an iterable; ``None`` means all stages, a
    :class:`StagesFrom` an open range that the network's own stages close.

    With ``valid`` given, the result is the set of the network's stages, and stage numbers outside
    it raise a ValueError naming the valid ones.
    """
    if stages is None or stages == "all":
        return None
    if isinstance(stages, str):
        text = stages.strip()
        if text in ("", "none"):
            return frozenset()
        if m := re.fullmatch(r"(\d+)\s*\+", text):
            out = StagesFrom(int(m.group(1)))
            return out if valid is None else out.within(valid)
        try:
            out = frozenset(int(s) for s in text.replace(" ", "").split(","))
        except ValueError:
            raise UserValueError(
                f"se.stages must be 'all', 'none', stage numbers like '2,3' or 'N+' (stage N and later), "
                f"got {stages!r}"
            ) from None
    else:
        out = frozenset(int(s) for s in stages)
    return out if valid is None else _within(out, valid)


def resolve_stages(stages: frozenset[int] | StagesFrom | None, valid: tuple[int, ...]) -> frozenset[int]:
    """The stages of a network (its ``valid`` ones) that a parsed ``se.stages`` names; one it lacks raises."""
    if stages is None:
        return frozenset(valid)
    if isinstance(stages, StagesFrom):
        return stages.within(valid)
    return _within(stages, valid)
