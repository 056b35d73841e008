"""The findings as text: the headline table, each finding's comparisons, the recipes and the
caveat that this is not ImageNet (what ``senet findings`` writes to ``results/README.md``)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .. import stats
from ..style import label
from ..tables import human, markdown, num
from .evidence import AGREES, CONTRADICTS, DELTA, INCONCLUSIVE, NO_VERDICT, NOT_RUN


def _ci(lo, hi, unit="pp") -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "–"
    return f"[{lo:+.2f}, {hi:+.2f}]" if unit == "pp" else f"[{lo:.2f}, {hi:.2f}]"


def _effect(v, unit="pp") -> str:
    if not math.isfinite(v):
        return "–"
    return f"{v:+.2f}" if unit == "pp" else f"{v:.2f}"


def _verdict_cell(v: str, n: int) -> str:
    if v == INCONCLUSIVE and n:
        return f"inconclusive at n = {n}"
    return v


def table(df: pd.DataFrame) -> str:
    """The headline table: one row per finding; multi-claim findings list each comparison in the cell."""
    header = ["#", "finding (paper)", "paper (ImageNet, ResNet-50)", "source", "comparison (Δ = error of first − second)",
              "our Δ", "95% CI", "n", "verdict", "power"]
    out = []
    for _, g in df.groupby("finding", sort=True):
        first = g.iloc[0]
        run = [r for r in g.itertuples(index=False) if r.verdict != NOT_RUN]
        join = lambda xs: "<br>".join(xs)  # noqa: E731
        n = min((r.n for r in run), default=0)
        verdict = _verdict_cell(first.finding_verdict, n)
        if first.finding_reason and first.finding_verdict != AGREES:
            verdict += f" ({first.finding_reason})"
        out.append([str(first.finding), first.statement, first.paper, first.source,
                    join([f"{r.comparison} ({r.expect})" if r.expect else r.comparison for r in g.itertuples()])
                    if run else "–",
                    join([_effect(r.effect, r.unit) for r in g.itertuples()]) if run else "–",
                    join([_ci(r.ci_low, r.ci_high, r.unit) for r in g.itertuples()]) if run else "–",
                    join([f"{r.n:,} {r.n_label}" if r.verdict != NOT_RUN else "–" for r in g.itertuples()]) if run else "–",
                    verdict, join(dict.fromkeys(r.power for r in run if r.power)) if run else "–"])
    return markdown(header, out)


def details(df: pd.DataFrame) -> list[str]:
    """One table per finding that has been run, one row per comparison."""
    header = ["comparison", "expected", "n", "Δ", "95% CI", "CI method", "bootstrap 95% CI", "p", "p (Holm)",
              "verdict", "why", "power"]
    parts = []
    for _, g in df.groupby("finding", sort=True):
        first = g.iloc[0]
        if (g["verdict"] == NOT_RUN).all():
            continue
        rows = [[r.comparison, r.expect, f"{r.n:,} {r.n_label}", _effect(r.effect, r.unit),
                 _ci(r.ci_low, r.ci_high, r.unit), r.ci_method or "–", _ci(r.boot_low, r.boot_high, r.unit),
                 num(r.p, "{:.3g}"), num(r.p_holm, "{:.3g}"), r.verdict, r.reason, r.power or "–"]
                for r in g.itertuples(index=False)]
        notes = list(dict.fromkeys(n for n in g["notes"] if n))
        parts += [f"### {first.finding}. {first.statement}", "",
                  f"Source: `{first.source}`. Verdict: **{first.finding_verdict}**"
                  + (f" ({first.finding_reason})" if first.finding_reason else "") + ".", "",
                  markdown(header, rows)]
        parts += [f"- {n}" for n in notes] + ([""] if notes else [])
    return parts


def _recipe_table(recipes: list[dict]) -> str:
    header = ["study", "preset", "dataset", "model", "epochs", "training images", "test images", "seeds",
              "trials (completed)", "params (ref. arm)", "SE channels → hidden (ref.)", "code commit(s)"]
    rows = [[r["study"], r["preset"], r["data"], r["model"], r["epochs"], r["train"],
             f"{r['num_test']:,}" if r["num_test"] else "–", str(r["seeds"]), f"{r['trials']} ({r['completed']})",
             human(r["params"]), r["se_hidden"] or "–", r["commits"]] for r in recipes]
    return markdown(header, rows)


def caveat(recipes: list[dict]) -> str:
    """Where this setting is not the paper's, plainly."""
    data = "/".join(dict.fromkeys(r["data"] for r in recipes)) or "Fashion-MNIST"
    models = "/".join(dict.fromkeys(r["model"] for r in recipes)) or "SE-ResNet-20"
    params = [r["params"] for r in recipes if math.isfinite(r["params"])]
    size = f"{min(params) / 1e6:.2f}" + (f"–{max(params) / 1e6:.2f}" if max(params) > min(params) * 1.01 else "") \
        if params else "0.27"
    hidden = "; ".join(dict.fromkeys(r["se_hidden"] for r in recipes if r["se_hidden"]))
    return (f"**This is not ImageNet and not ResNet-50.** The paper measured these effects on ImageNet "
            f"(1.28 M colour images of 1,000 classes at 224×224) with ResNet-50 (25.6 M parameters, "
            f"stage widths 256–2048). The numbers below come from {data} with {models} "
            f"({size} M parameters), a far smaller and easier problem: a few epochs on small grey images of "
            f"a handful of classes, and stages so narrow that the SE bottleneck holds only a few hidden units"
            + (f" (channels → hidden units per stage at the reference arm: {hidden})" if hidden else "")
            + ". The paper's differences between SE variants are 0.05–1 point of top-1 error; differences "
            "that small are at or below what a few seeds resolve here (see each row's power). `agrees` "
            "means the paper's direction (or equivalence) holds in this small setting, `contradicts` that "
            "it does not hold here; neither says what would happen on ImageNet.")


def render(df: pd.DataFrame, recipes: list[dict], results: Path, metric: str) -> str:
    studies = sorted(p.parent.name for p in results.glob("*/runs.parquet"))
    folders = sorted({p.parent for pat in ("*/report.md", "*/*/summary.md", "*/summary.md", "*/*/gates.md")
                      for p in results.glob(pat)})
    counts = df.drop_duplicates("finding")["finding_verdict"].value_counts()
    headline = ", ".join(f"{int(counts.get(v, 0))} {v}" for v in (AGREES, CONTRADICTS, INCONCLUSIVE, NO_VERDICT, NOT_RUN)
                         if counts.get(v, 0))
    method = (
        f"Effects are in points of {label(metric).replace(' (%)', '')} (Δ = error of the first arm − error of "
        f"the second; negative = the first is better), paired by seed: only seeds both arms completed pair up. "
        f"Directional claims: paired t-test, p Holm-adjusted over the directional comparisons of one finding "
        f"(family-wise 5%), no verdict below {stats.MIN_PAIRS} pairs, a |Δ| below one test image never a difference, "
        f"and from {stats.BOOT_DECIDES_FROM} pairs on the BCa bootstrap interval must exclude 0 too (the rules of "
        f"`senet report`). \"Alike\": the paired-t 95% interval must lie inside ±δ (δ = {DELTA:g} pp, the size of "
        "the paper's differences between SE variants); it contradicts when the interval lies wholly beyond ±δ. "
        "Power: σ_d is the standard deviation of the paired differences pooled over the finding's comparisons; "
        "the detectable difference is (t(0.975, n−1) + t(0.80, n−1)) · σ_d / √n. Excitation findings read an "
        "`senet analyze` folder of one trained network: selectivity by Spearman's ρ over the analysed blocks "
        "with an exact permutation p-value, removal by the paired change in error over the test images.")
    parts = [
        "# Findings: the paper's claims against our measurements", "",
        "Generated by `senet findings` from the committed `runs.parquet` of each study and the analysis "
        "folders; do not edit by hand (re-run the command). Paper: Hu et al., \"Squeeze-and-Excitation "
        "Networks\" (arXiv 1709.01507), §6 Tables 10-16 and §7.2.", "",
        caveat(recipes), "",
        f"**Headline:** {headline} (of {df['finding'].nunique()} findings).", "",
        "## Findings", "", table(df),
        "## Recipes", "",
        (_recipe_table(recipes) if recipes else "No study has been run yet (no `results/<study>/runs.parquet`)."), "",
        "## How the verdicts are made", "", method, "",
        "## Each finding's comparisons", "", *details(df),
        "## What is in this folder", "",
        *(f"- [`{p.relative_to(results)}/`]({p.relative_to(results)}/)" for p in folders),
        *([f"- studies with results: {', '.join(studies)}"] if studies else []), "",
    ]
    return "\n".join(parts)
