"""The findings table: the paper's claims set against what the committed results measure.

``senet findings`` reads ``<results>/<study>/runs.parquet`` of every ablation study (and an
``senet analyze`` folder for the excitation findings) and writes ``results/README.md``: one row per
finding of the paper with our measured effect, its interval (for arms the anytime-valid confidence
sequence), n, a verdict and how many seeds would settle it. Nothing in it is typed by hand; re-running the command on the same files gives the same text.

A finding is a declarative entry of :data:`FINDINGS` (:func:`register_finding`): a statement, the
paper's numbers, and one or more *sources*, alternatives tried in order (the first that has been run
is used). A source is a small frozen dataclass with an ``evaluate(ctx)`` method
(:mod:`analysis.findings.evidence` holds what it returns and reads):

- :class:`ArmClaims`: comparisons of arms of one study, each "lower", "higher" or "alike" (error of
  ``arm`` − error of ``vs``, in points), judged on the reports' anytime-valid confidence sequence
  (:mod:`senet.sequential`) at level α/k for the k comparisons of the finding, with the study's
  design (its study.json, else the defaults): see :mod:`analysis.findings.arms`.
- :class:`SeedSelectivityDepth`, :class:`SeedStageRemoval`: the excitation findings over several
  trained networks (``senet analyze-seeds``: the seed is the unit of an architecture claim), on
  the anytime-valid sequence over seeds; where no such tables exist, :class:`SelectivityDepth` and
  :class:`StageRemoval` read one network's ``senet analyze`` folder (test images as the unit).

A finding contradicts when any claim contradicts; else it is unresolved when any claim is (or has
not been run while others have); else it agrees when all its claims agree; else (claims that agree
mixed with "no effect ≥ δ here", or only those) there is no effect ≥ δ here. :mod:`analysis.findings.render`
writes the table. Rendering only: pandas, numpy, scipy; no torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from senet.claims import ARM_CLAIMS
from senet.layout import write_atomic

from ..errors import AnalysisInputError
from ..stats import MIN_BOOT
from .arms import ArmClaims
from .evidence import AGREES, CONTRADICTS, NO_EFFECT, NOT_RUN, UNRESOLVED, Context, Outcome, SourceResult
from .excitations import SeedSelectivityDepth, SeedStageRemoval, SelectivityDepth, StageRemoval
from .render import render


@dataclass(frozen=True)
class Finding:
    key: str
    statement: str  # the paper's claim, as the table states it
    paper: str  # the paper's own numbers (ImageNet, ResNet-50)
    sources: tuple  # alternatives, tried in order: the first that has been run is used

    def evaluate(self, ctx: Context) -> tuple[SourceResult, list[SourceResult]]:
        """The source used and the ones skipped because they have not been run."""
        skipped = []
        for src in self.sources:
            res = src.evaluate(ctx)
            if not res.missing:
                return res, skipped
            skipped.append(res)
        return SourceResult(" or ".join(s.label() for s in self.sources),
                            missing="; ".join(f"{r.source}: {r.missing}" for r in skipped)), skipped


FINDINGS: dict[str, Finding] = {}


def register_finding(f: Finding) -> Finding:
    if f.key in FINDINGS:
        raise ValueError(f"finding {f.key!r} is already registered")
    FINDINGS[f.key] = f
    return f


#: (key, the paper's claim as the table states it, the paper's own numbers) of the arm findings,
#: whose comparisons are :data:`senet.claims.ARM_CLAIMS`.
ARM_FINDINGS = (
    ("se_beats_baseline", "SE beats the plain baseline", "Table 10: 22.28 vs 23.30 (−1.02)"),
    ("reduction", "r from 2 to 16 perform alike; r = 32 is worse",
     "Table 10: r = 2, 4, 8 within 0.03 of r = 16; r = 32 +0.44"),
    ("avg_beats_max", "avg squeeze beats max", "Table 11: 22.28 vs 22.57 (−0.29)"),
    ("nosqueeze_worse", "NoSqueeze is worse than avg", "Table 16: 22.93 vs 22.28 (+0.65)"),
    ("gate_order", "sigmoid beats tanh, which beats ReLU", "Table 12: 22.28 < 23.00 < 23.47"),
    ("placement", "SE-POST is the worst placement; PRE, Identity and standard are alike",
     "Tables 14, 15: POST 22.78; standard 22.28, PRE 22.23, Identity 22.20, inner 22.48"),
    ("stages", "SE in each stage alone helps; all stages together help most",
     "Table 13: stage 2/3/4 alone 23.03/23.04/22.68 vs 23.30 none; all 22.28"),
)
for _key, _statement, _paper in ARM_FINDINGS:
    register_finding(Finding(_key, _statement, _paper,
                             tuple(ArmClaims(study, claims) for study, claims in ARM_CLAIMS[_key])))
register_finding(Finding(
    "selectivity_depth", "class selectivity rises with depth",
    "§7.2, Fig. 6: early blocks class-agnostic, later ones class-specific (qualitative)",
    (SeedSelectivityDepth(), SelectivityDepth())))
register_finding(Finding(
    "last_stage_removal", "the last stage's SE can be removed at little cost",
    "§7.2: < 0.1 top-1, added parameters ~10% → ~4%",
    (SeedStageRemoval(), StageRemoval())))


# ---------------------------------------------------------------------------------------------
# Evaluating
# ---------------------------------------------------------------------------------------------
def combine(outcomes: list[Outcome]) -> tuple[str, str]:
    """A finding's verdict from its claims' (rules: the module docstring)."""
    v = [o.verdict for o in outcomes]
    if not v or all(x == NOT_RUN for x in v):
        return NOT_RUN, ""
    if len(outcomes) == 1:
        return v[0], outcomes[0].reason
    if CONTRADICTS in v:
        return CONTRADICTS, "contradicted by " + ", ".join(o.comparison for o in outcomes if o.verdict == CONTRADICTS)
    if UNRESOLVED in v or NOT_RUN in v:
        why = [f"{v.count(x)} of {len(v)} comparisons {x}" for x in (UNRESOLVED, NOT_RUN) if x in v]
        return UNRESOLVED, "; ".join(why)
    if all(x == AGREES for x in v):
        return AGREES, ""
    return NO_EFFECT, "no effect ≥ δ in " + ", ".join(o.comparison for o in outcomes if o.verdict == NO_EFFECT)


def evaluate(results: str | Path, *, preset: str | None = None, analysis: str | Path | None = None,
             metric: str = "test_top1_err", n_boot: int = 10000,
             findings: dict[str, Finding] | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """Every registered finding: (one row per claim, the recipes of the studies read)."""
    if n_boot < MIN_BOOT:
        raise AnalysisInputError(f"--n-boot must be >= {MIN_BOOT}, got {n_boot}")
    results = Path(results)
    if not results.is_dir():
        raise AnalysisInputError(f"results directory not found: {results}")
    if analysis is not None and not Path(analysis).is_dir():
        raise AnalysisInputError(f"analysis directory not found: {analysis}")
    ctx = Context(results, preset=preset, analysis=Path(analysis) if analysis is not None else None,
                  metric=metric, n_boot=n_boot)
    rows, recipes = [], {}
    for i, f in enumerate((findings or FINDINGS).values(), 1):
        used, _ = f.evaluate(ctx)
        if used.recipe:
            recipes[used.source] = used.recipe
        outcomes = used.outcomes or [Outcome("–", "", NOT_RUN, used.missing)]
        verdict, why = combine(outcomes)
        if verdict == NOT_RUN:
            why = used.missing or "; ".join(o.reason for o in outcomes)
        for o in outcomes:
            rows.append({"finding": i, "key": f.key, "statement": f.statement, "paper": f.paper,
                         "source": used.source, "finding_verdict": verdict, "finding_reason": why,
                         **{k: getattr(o, k) for k in Outcome.__dataclass_fields__}})
    return pd.DataFrame(rows), list(recipes.values())


def write_findings(results: str | Path = "results", out: str | Path | None = None, *, preset: str | None = None,
                   analysis: str | Path | None = None, metric: str = "test_top1_err", n_boot: int = 10000,
                   findings: dict[str, Finding] | None = None) -> tuple[Path, pd.DataFrame]:
    """Write the findings (``out``, default ``<results>/README.md``) and ``findings.csv`` beside it."""
    results = Path(results)
    df, recipes = evaluate(results, preset=preset, analysis=analysis, metric=metric, n_boot=n_boot,
                           findings=findings)
    out = Path(out) if out is not None else results / "README.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, render(df, recipes, results, metric))
    df.to_csv(out.with_name("findings.csv"), index=False)
    return out, df
