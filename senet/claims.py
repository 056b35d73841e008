"""The paper's claims about arms of the published studies, as data both wings read.

A :class:`Claim` says how one arm's error compares with another's (Δ = error of ``arm`` − error of
``vs``): ``lower``, ``higher`` or ``alike`` (within ±δ). :data:`ARM_CLAIMS` lists, per finding of
Hu et al. (arXiv 1709.01507, Tables 10-16), the studies that can answer it (alternatives, in
order) and their claims. ``senet findings`` judges them (:mod:`analysis.findings`); ``senet sweep
--until-resolved`` adds seeds to the arms a claim still needs (:mod:`ablations.sequencer`). The k
claims of one finding share α (each at α/k).

:func:`settles`: whether an anytime-valid outcome (:mod:`senet.sequential`) decides a claim, so the
searcher stops exactly where the findings stop reading "unresolved".
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from .sequential import ALIKE, CLOSED, WITHIN

EXPECTS = ("lower", "higher", "alike")


@dataclass(frozen=True)
class Claim:
    """``arm`` against ``vs`` (Δ = error of arm − error of vs): ``lower``, ``higher`` or ``alike``.
    ``arm`` may be a glob (``stage*``), which makes one claim per matching arm of the study."""

    arm: str
    vs: str
    expect: str

    def __post_init__(self):
        if self.expect not in EXPECTS:
            raise ValueError(f"expect must be one of {sorted(EXPECTS)}, got {self.expect!r}")


def lower(arm: str, vs: str) -> Claim:
    return Claim(arm, vs, "lower")


def higher(arm: str, vs: str) -> Claim:
    return Claim(arm, vs, "higher")


def alike(arm: str, vs: str) -> Claim:
    return Claim(arm, vs, "alike")


#: finding key -> ((study, claims), ...): the studies that answer it, the first that has run is read.
ARM_CLAIMS: dict[str, tuple[tuple[str, tuple[Claim, ...]], ...]] = {
    "se_beats_baseline": (("reduction", (lower("r=16", "baseline"),)), ("stages", (lower("all", "none"),))),
    "reduction": (("reduction", (alike("r=2", "r=16"), alike("r=4", "r=16"), alike("r=8", "r=16"),
                                 higher("r=32", "r=16"))),),
    "avg_beats_max": (("squeeze", (lower("avg", "max"),)),),
    "nosqueeze_worse": (("squeeze", (higher("none", "avg"),)),),
    "gate_order": (("gate", (lower("sigmoid", "tanh"), lower("tanh", "relu"))),),
    "placement": (("placement", (higher("post", "standard"), higher("post", "pre"), higher("post", "identity"),
                                 higher("post", "inner"), alike("pre", "standard"), alike("identity", "standard"))),),
    "stages": (("stages", (lower("stage*", "none"), lower("all", "stage*"))),),
}


def expand(claims: tuple[Claim, ...], arms: list[str]) -> list[tuple[str, str, str]]:
    """(arm, vs, expect) per claim, glob patterns replaced by each matching arm (a pattern that
    matches nothing stays, to be reported as not run)."""
    def match(pat):
        if not any(ch in pat for ch in "*?["):
            return [pat]
        return [a for a in arms if fnmatch.fnmatchcase(a, pat)] or [pat]

    return [(a, v, c.expect) for c in claims for a in match(c.arm) for v in match(c.vs) if a != v]


def settles(expect: str, outcome: str, low: float, high: float, delta: float) -> bool:
    """Whether the comparison's outcome decides the claim: a directional claim by any closed
    outcome (a difference either way, or alike: no effect ≥ δ); an "alike" claim by a sequence
    inside ±δ (alike, different within ±δ) or wholly beyond it."""
    if expect != "alike":
        return outcome in CLOSED
    return outcome in (ALIKE, WITHIN) or (outcome in CLOSED and (low > delta or high < -delta))


def study_claims(study: str, arms: list[str]) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(finding key, its expanded claims) for every finding whose first source is ``study``, its
    claims limited to ``arms``' pairs (a finding with a pattern that matches nothing is left out)."""
    out = []
    for key, sources in ARM_CLAIMS.items():
        first, claims = sources[0]
        if first != study:
            continue
        got = expand(claims, arms)
        if got and all(a in arms and v in arms for a, v, _ in got):
            out.append((key, got))
    return out
