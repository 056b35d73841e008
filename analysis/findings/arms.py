"""Findings about arms of one study: "lower", "higher" or "alike" against another arm.

An :class:`ArmClaims` source compares arms of one study's ``runs.parquet`` (Δ = error of ``arm`` −
error of ``vs``, in points). Directional claims use the reports' rules
(:func:`analysis.compare.compare_arms`): paired by seed, paired t-test, Holm's step-down over the
directional claims of the finding, no verdict below 3 pairs, a difference below one test image never
a difference, and from 6 pairs on the BCa bootstrap interval must agree. An "alike" claim is an
equivalence test: agreement needs the 95% interval of the difference inside ±δ; a conjunction of
such claims needs each to hold (an intersection-union test, which needs no multiplicity correction).
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass

import pandas as pd

from senet.layout import study_paths

from .. import stats
from ..compare import paired, paired_verdict
from ..errors import ReportInputError
from ..study import arm_order, completed, count_test_images
from .evidence import (
    AGREES,
    CONTRADICTS,
    DELTA,
    EXPECT_TEXT,
    INCONCLUSIVE,
    NO_VERDICT,
    NOT_RUN,
    Context,
    Outcome,
    SourceResult,
    widths,
)


@dataclass(frozen=True)
class Claim:
    """``arm`` against ``vs`` (Δ = error of arm − error of vs): ``lower``, ``higher`` or ``alike``.
    ``arm`` may be a glob (``stage*``), which makes one claim per matching arm of the study."""

    arm: str
    vs: str
    expect: str

    def __post_init__(self):
        if self.expect not in EXPECT_TEXT:
            raise ValueError(f"expect must be one of {sorted(EXPECT_TEXT)}, got {self.expect!r}")


def lower(arm: str, vs: str) -> Claim:
    return Claim(arm, vs, "lower")


def higher(arm: str, vs: str) -> Claim:
    return Claim(arm, vs, "higher")


def alike(arm: str, vs: str) -> Claim:
    return Claim(arm, vs, "alike")



def _seeds_text(sd: float, target: float) -> str:
    n = stats.seeds_needed(sd, target)
    return "more than a million seeds" if n is None else f"{n} seeds"


@dataclass(frozen=True)
class ArmClaims:
    """Comparisons between arms of one study's ``runs.parquet`` (see the module docstring)."""

    study: str
    claims: tuple[Claim, ...]
    delta: float = DELTA  # half-width of "alike", points

    def label(self) -> str:
        return self.study

    def _expand(self, arms: list[str]) -> list[tuple[str, str, str]]:
        """The claims with glob patterns replaced by each matching arm (a pattern that matches
        nothing stays, to be reported as not run)."""
        def match(pat):
            if not any(ch in pat for ch in "*?["):
                return [pat]
            return [a for a in arms if fnmatch.fnmatchcase(a, pat)] or [pat]

        return [(a, v, c.expect) for c in self.claims for a in match(c.arm) for v in match(c.vs) if a != v]

    def evaluate(self, ctx: Context) -> SourceResult:
        got = ctx.study(self.study)
        if isinstance(got, str):
            return SourceResult(self.study, missing=got)
        runs, meta, recipe = got
        if ctx.metric not in runs:
            raise ReportInputError(f"{study_paths(ctx.results, self.study).runs_parquet} has no column {ctx.metric!r}")
        ok = completed(runs).dropna(subset=[ctx.metric])
        num_test, _ = count_test_images(runs, ctx.results / self.study)
        resolution = 100.0 / num_test if num_test else math.nan
        claims = self._expand(arm_order(runs, meta))
        rows, tests = [], []
        for arm, vs, expect in claims:
            comparison = f"{arm} − {vs}"
            absent = [x for x in (arm, vs) if not (ok["arm"] == x).any()]
            if absent:
                rows.append(Outcome(comparison, EXPECT_TEXT[expect], NOT_RUN,
                                    f"no completed trial of {', '.join(absent)} in {self.study}"))
                tests.append(None)
                continue
            a, r = paired(ok, arm, vs, ctx.metric)
            t = stats.paired_test(a, r, n_boot=ctx.n_boot)
            rows.append(Outcome(comparison, EXPECT_TEXT[expect], "", effect=t["mean_diff"], ci_low=t["t_low"],
                                ci_high=t["t_high"], ci_method="paired t", n=t["pairs"], p=t["p"],
                                boot_low=t["ci_low"], boot_high=t["ci_high"], sd=t["sd_diff"],
                                notes=_hidden_note(ok, arm, vs)))
            tests.append((expect, t, a - r))
        if all(t is None for t in tests):
            return SourceResult(self.study, rows, missing="; ".join(o.reason for o in rows), recipe=recipe)
        directional = [i for i, t in enumerate(tests) if t is not None and t[0] != "alike"
                       and t[1]["pairs"] >= stats.MIN_PAIRS and math.isfinite(t[1]["p"])]
        adjusted = stats.holm([tests[i][1]["p"] for i in directional])
        for i, p in zip(directional, adjusted, strict=True):
            rows[i].p_holm = float(p)
        sd, df = stats.pooled_sd(t[2] for t in tests if t is not None)
        for o, t in zip(rows, tests, strict=True):
            if t is None:
                continue
            expect, res, _ = t
            o.verdict, o.reason = (self._alike if expect == "alike" else self._directional)(
                o, res, expect, resolution)
            o.mde = stats.min_detectable_effect(sd, o.n)
            o.power = self._power(o, sd, df, expect, resolution)
        return SourceResult(self.study, rows, recipe=recipe)

    def _directional(self, o: Outcome, t: dict, expect: str, resolution: float) -> tuple[str, str]:
        verdict, why = paired_verdict({**t, "p_holm": o.p_holm}, resolution, stats.ALPHA)
        if verdict in ("better", "worse"):
            right = (verdict == "better") == (expect == "lower")
            return (AGREES if right else CONTRADICTS), f"{verdict} than {o.comparison.split(' − ')[1]}; {why}"
        return verdict, why

    def _alike(self, o: Outcome, t: dict, expect: str, resolution: float) -> tuple[str, str]:
        d = self.delta
        if t["pairs"] < stats.MIN_PAIRS:
            return NO_VERDICT, f"{t['pairs']} seed pair(s); a verdict needs ≥ {stats.MIN_PAIRS}"
        if t["zero_spread"]:
            return NO_VERDICT, "every seed gave the same difference: no spread to test it against"
        inside = -d <= o.ci_low and o.ci_high <= d
        if inside and t["pairs"] >= stats.BOOT_DECIDES_FROM and not (-d <= o.boot_low and o.boot_high <= d):
            return INCONCLUSIVE, f"t interval inside ±{d:g} pp but the bootstrap interval is not"
        if inside:
            return AGREES, f"95% CI inside ±{d:g} pp"
        if o.ci_low > d or o.ci_high < -d:
            return CONTRADICTS, f"95% CI beyond ±{d:g} pp: the arms differ by more than δ"
        return INCONCLUSIVE, f"95% CI reaches beyond ±{d:g} pp"

    def _power(self, o: Outcome, sd: float, df: int, expect: str, resolution: float) -> str:
        if not math.isfinite(o.mde):
            return "no spread estimate (fewer than 2 seed pairs)"
        base = f"σ_d {sd:.2f} pp ({df} df), n {o.n}: detects ≥ {o.mde:.2f} pp"
        if o.verdict in (AGREES, CONTRADICTS):
            return base
        target = self.delta if expect == "alike" else max(abs(o.effect), resolution if math.isfinite(resolution) else 0)
        what = f"±{self.delta:g} pp" if expect == "alike" else f"|Δ| = {target:.2f} pp"
        return f"{base}; {what} needs ≈ {_seeds_text(sd, target)}"


def _hidden_note(ok: pd.DataFrame, arm: str, vs: str) -> str:
    """The SE's effective hidden widths per stage of the two arms, where they are recorded and differ
    (at r = 16 a 16-channel stage has one hidden unit, so r = 16 and r = 32 may build the same block)."""
    if "se_hidden" not in ok:
        return ""
    w = {x: ok.loc[ok["arm"] == x, "se_hidden"].dropna().astype(str) for x in (arm, vs)}
    if any(v.empty for v in w.values()):
        return ""
    a, b = widths(w[arm].iloc[0]), widths(w[vs].iloc[0])
    return f"SE channels → hidden units per stage: {arm} {a or '–'}; {vs} {b or '–'}" if a != b else ""
