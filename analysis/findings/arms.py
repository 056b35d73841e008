"""Findings about arms of one study: "lower", "higher" or "alike" against another arm.

An :class:`ArmClaims` source compares arms of one study's ``runs.parquet`` (Δ = error of ``arm`` −
error of ``vs``, in points), paired by seed in seed order, with the reports' anytime-valid
confidence sequence (:func:`analysis.compare.compare_pair`, :mod:`senet.sequential`). The study's
design comes from its study.json (else the defaults); the k comparisons of one finding share α
(each at α/k, Bonferroni), so all claims of a finding together err with probability ≤ α.

- "lower" / "higher": better or worse in the paper's direction agrees, in the other contradicts;
  "different within ±δ" agrees or contradicts by its sign (a difference smaller than δ); "alike"
  says there is no effect of δ or more here; open or unresolved stays unresolved.
- "alike": the sequence inside ±δ agrees, wholly beyond ±δ contradicts, else unresolved.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from senet.claims import Claim, expand
from senet.layout import study_paths
from senet.sequential import ALIKE, BETTER, CLOSED, WITHIN, WORSE, Design

from .. import stats
from ..compare import compare_pair, paired, settle_seeds, study_design
from ..errors import ReportInputError
from ..study import arm_order, completed, count_test_images
from .evidence import (
    AGREES,
    CONTRADICTS,
    EXPECT_TEXT,
    NO_EFFECT,
    NOT_RUN,
    UNRESOLVED,
    Context,
    Outcome,
    SourceResult,
    widths,
)


def projection_text(sd: float, df: int, design: Design, k: int) -> str:
    """How many seeds the sequence at α/``k`` would need to settle δ if σ_d stays ``sd``, next to a
    fixed-n paired t-test at the same level (80% power at δ)."""
    cs, fixed = settle_seeds(sd, design, k, design.delta)
    if fixed is None:
        return "no spread estimate (fewer than 2 seed pairs that differ)"
    cs = "more than 100,000" if cs is None else f"≈ {cs}"
    return (f"σ̂_d {sd:.2f} pp ({df} df): the CS at α/{k} settles δ = {design.delta:g} pp in {cs} seeds "
            f"(cap {design.max_seeds}); fixed-n t: {fixed}")


@dataclass(frozen=True)
class ArmClaims:
    """Comparisons between arms of one study's ``runs.parquet`` (see the module docstring)."""

    study: str
    claims: tuple[Claim, ...]

    def label(self) -> str:
        return self.study

    def _expand(self, arms: list[str]) -> list[tuple[str, str, str]]:
        """The claims with glob patterns replaced by each matching arm (a pattern that matches
        nothing stays, to be reported as not run)."""
        return expand(self.claims, arms)

    def evaluate(self, ctx: Context) -> SourceResult:
        got = ctx.study(self.study)
        if isinstance(got, str):
            return SourceResult(self.study, missing=got)
        runs, meta, recipe = got
        if ctx.metric not in runs:
            raise ReportInputError(f"{study_paths(ctx.results, self.study).runs_parquet} has no column {ctx.metric!r}")
        design, _ = study_design(meta, runs)
        ok = completed(runs).dropna(subset=[ctx.metric])
        num_test, _ = count_test_images(runs, ctx.results / self.study)
        resolution = 100.0 / num_test if num_test else 0.0
        claims = self._expand(arm_order(runs, meta))
        k = len(claims)  # the finding's family: every comparison shares its α
        rows, diffs = [], []
        for arm, vs, expect in claims:
            comparison = f"{arm} − {vs}"
            absent = [x for x in (arm, vs) if not (ok["arm"] == x).any()]
            if absent:
                rows.append(Outcome(comparison, EXPECT_TEXT[expect], NOT_RUN,
                                    f"no completed trial of {', '.join(absent)} in {self.study}"))
                continue
            a, r = paired(ok, arm, vs, ctx.metric)
            c = compare_pair(a, r, design, k, resolution, n_boot=ctx.n_boot)
            verdict, why = (_alike if expect == "alike" else _directional)(c, expect, vs, design.delta)
            rows.append(Outcome(comparison, EXPECT_TEXT[expect], verdict, why, effect=c["mean_diff"],
                                ci_low=c["cs_low"], ci_high=c["cs_high"],
                                ci_method=f"anytime t-CS at α/{k} ({100 * (1 - c['level']):.4g}%)", n=c["pairs"],
                                outcome=c["outcome"], t_low=c["t_low"], t_high=c["t_high"], boot_low=c["ci_low"],
                                boot_high=c["ci_high"], sd=c["sd_diff"], rho=c["rho"],
                                notes=_hidden_note(ok, arm, vs)))
            diffs.append(a - r)
        if not diffs:
            return SourceResult(self.study, rows, missing="; ".join(o.reason for o in rows), recipe=recipe)
        sd, df = stats.pooled_sd(diffs)
        for o in rows:
            if o.verdict != NOT_RUN:
                o.power = projection_text(sd, df, design, k)
        return SourceResult(self.study, rows, recipe=recipe)


def _directional(c: dict, expect: str, vs: str, delta: float) -> tuple[str, str]:
    """A "lower" / "higher" claim from the comparison's outcome."""
    state = c["outcome"]
    if state in (BETTER, WORSE, WITHIN):
        lower = c["cs_high"] < 0
        right = lower == (expect == "lower")
        if state == WITHIN:
            side = "lower" if lower else "higher"
            return (AGREES if right else CONTRADICTS), (f"{side} than {vs} but within ±{delta:g} pp (smaller "
                                                        f"than δ); {c['reason']}")
        return (AGREES if right else CONTRADICTS), f"{state} than {vs}; {c['reason']}"
    if state == ALIKE:
        return NO_EFFECT, f"alike within ±{delta:g} pp; {c['reason']}"
    return UNRESOLVED, c["reason"]


def _alike(c: dict, expect: str, vs: str, delta: float) -> tuple[str, str]:
    """An "alike" claim: the sequence inside ±δ agrees, wholly beyond it contradicts."""
    state = c["outcome"]
    if state in (ALIKE, WITHIN):
        return AGREES, (f"different but within ±{delta:g} pp; " if state == WITHIN else "") + c["reason"]
    if state in CLOSED and (c["cs_low"] > delta or c["cs_high"] < -delta):
        return CONTRADICTS, f"the CS lies beyond ±{delta:g} pp: the arms differ by more than δ"
    if state in CLOSED:
        return UNRESOLVED, (f"{state} than {vs}, but the CS [{c['cs_low']:+.2f}, {c['cs_high']:+.2f}] "
                            f"reaches inside ±{delta:g} pp")
    return UNRESOLVED, c["reason"]


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
