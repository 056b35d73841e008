"""The findings as text: the headline table, each finding's comparisons, the recipes and the
caveat that this is not ImageNet (what ``senet findings`` writes to ``results/README.md``)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from senet.sequential import Design

from ..compare import FIXED_T
from ..style import label
from ..tables import human, markdown, num
from .evidence import AGREES, CONTRADICTS, NO_EFFECT, NOT_RUN, UNRESOLVED


def _ci_in_unit(lo, hi, unit="pp") -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "–"
    return f"[{lo:+.2f}, {hi:+.2f}]" if unit == "pp" else f"[{lo:.2f}, {hi:.2f}]"


def _interval(r) -> str:
    """The interval judged on; an arm's sequence that is still the whole line says so."""
    if r.ci_method.startswith("anytime") and not (math.isfinite(r.ci_low) and math.isfinite(r.ci_high)):
        return "(−∞, ∞)"
    return _ci_in_unit(r.ci_low, r.ci_high, r.unit)


def _effect(v, unit="pp") -> str:
    if not math.isfinite(v):
        return "–"
    return f"{v:+.2f}" if unit == "pp" else f"{v:.2f}"


def _verdict_cell(v: str, n: int) -> str:
    if v == UNRESOLVED and n:
        return f"unresolved at n = {n}"
    return v


def table(df: pd.DataFrame) -> str:
    """The headline table: one row per finding; multi-claim findings list each comparison in the cell."""
    header = ["#", "finding (paper)", "paper (ImageNet, ResNet-50)", "source", "comparison (Δ = error of first − second)",
              "our Δ", "anytime 95% CS (seeds) or 95% CI", "n", "verdict", "projection or power"]
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
                    join([_interval(r) for r in g.itertuples()]) if run else "–",
                    join([f"{r.n:,} {r.n_label}" if r.verdict != NOT_RUN else "–" for r in g.itertuples()]) if run else "–",
                    verdict, join(dict.fromkeys(r.power for r in run if r.power)) if run else "–"])
    return markdown(header, out)


def details(df: pd.DataFrame) -> list[str]:
    """One table per finding that has been run, one row per comparison."""
    header = ["comparison", "expected", "n", "Δ", "interval", "interval method", "outcome", "σ̂_d", "ρ̂",
              FIXED_T, "bootstrap 95% CI (descriptive)", "verdict", "why", "projection or power"]
    parts = []
    for _, g in df.groupby("finding", sort=True):
        first = g.iloc[0]
        if (g["verdict"] == NOT_RUN).all():
            continue
        rows = [[r.comparison, r.expect, f"{r.n:,} {r.n_label}", _effect(r.effect, r.unit),
                 _interval(r), r.ci_method or "–", r.outcome or "–", num(r.sd), num(r.rho),
                 _ci_in_unit(r.t_low, r.t_high, r.unit), _ci_in_unit(r.boot_low, r.boot_high, r.unit), r.verdict, r.reason,
                 r.power or "–"]
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
              "trials (completed)", "trial-hours (own trials)", "img/s per own trial (median)",
              "bf16 convolutions: own trials (img/s)",
              "params (ref. arm)",
              "SE channels → hidden (ref.)", "code commit(s)"]
    num = lambda v, fmt: fmt.format(v) if v is not None and math.isfinite(v) else "–"  # noqa: E731
    rows = [[r["study"], r["preset"], r["data"], r["model"], r["epochs"], r["train"],
             f"{r['num_test']:,}" if r["num_test"] else "–", str(r["seeds"]), f"{r['trials']} ({r['completed']})",
             num(r.get("trial_hours"), "{:.1f}"), num(r.get("rate"), "{:,.0f}"), r.get("kernels") or "–",
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
            "that small are at or below what a few seeds resolve here (see each row's projection). `agrees` "
            "means the paper's direction (or equivalence) holds in this small setting, `contradicts` that "
            "it does not hold here; neither says what would happen on ImageNet.")


def render(df: pd.DataFrame, recipes: list[dict], results: Path, metric: str) -> str:
    studies = sorted(p.parent.name for p in results.glob("*/runs.parquet"))
    folders = sorted({p.parent for pat in ("*/report.md", "*/*/summary.md", "*/summary.md", "*/*/gates.md")
                      for p in results.glob(pat)})
    counts = df.drop_duplicates("finding")["finding_verdict"].value_counts()
    n = lambda v: int(counts.get(v, 0))  # noqa: E731
    headline = (f"of {df['finding'].nunique()} findings: {n(CONTRADICTS)} contradicts, {n(AGREES)} agree, "
                f"{n(NO_EFFECT)} {NO_EFFECT}, {n(UNRESOLVED)} unresolved"
                + (f", {n(NOT_RUN)} not run yet" if n(NOT_RUN) else ""))
    d = Design()
    method = (
        f"Effects are in points of {label(metric).replace(' (%)', '')} (Δ = error of the first arm − error of "
        "the second; negative = the first is better), paired by seed: only seeds both arms completed pair up, "
        "taken in seed order. Each comparison of arms is judged on the anytime-valid t confidence sequence (CS) "
        "of its paired differences (`senet.sequential`: Gaussian mixture, intersected over the seeds), which "
        "holds at every n at once: valid however seeds were added, stopped, resumed or extended, unlike a "
        "fixed-n t-test read after each seed. The k comparisons of one finding share α (each at α/k, "
        "Bonferroni), so the headline's CS is a simultaneous 95% one. Each study's design (α, δ, g, the seed "
        "cap) is its study.json's `sequential` entry, else the defaults: α = "
        f"{d.alpha:g}, δ = {d.delta:g} pp (the size of the paper's differences between SE variants), g = {d.g:g}, "
        f"no verdict before {d.min_seeds} seeds, cap {d.max_seeds} seeds. A comparison ends in one of four "
        "outcomes: better/worse (the CS excludes 0 and |Δ̂| is at least one test image), alike (the CS lies "
        "inside ±δ), different within ±δ (both), or unresolved (neither; open while below the cap), given "
        "with Δ ∈ [L, U] and ≈ how many more seeds would settle it. Directional claims agree when the outcome "
        "has the paper's sign (also when different but within ±δ, a difference smaller than δ), contradict "
        "when it has the other, and find no effect ≥ δ here when alike. \"Alike\" claims agree when the CS "
        "lies inside ±δ and contradict when it lies wholly beyond ±δ. A finding contradicts when any "
        "comparison does; else it is unresolved when any is; else it agrees when all do; else there is no "
        "effect ≥ δ here. The fixed-n t and bootstrap 95% intervals of the details are descriptive only "
        "(valid at an n fixed in advance). Projection: σ̂_d pooled over the finding's comparisons, and the "
        "seeds the CS would need to settle δ if σ_d stays so, next to a fixed-n paired t-test at the same "
        "level with 80% power at δ. Excitation findings read an `senet analyze` folder of one trained "
        "network: selectivity by Spearman's ρ over the analysed blocks with an exact permutation p-value, "
        "removal by the paired change in error over the test images; what their tests cannot decide is "
        "unresolved.")
    parts = [
        "# Findings: the paper's claims against our measurements", "",
        "Generated by `senet findings` from the committed `runs.parquet` of each study and the analysis "
        "folders; do not edit by hand (re-run the command). Paper: Hu et al., \"Squeeze-and-Excitation "
        "Networks\" (arXiv 1709.01507), §6 Tables 10-16 and §7.2.", "",
        caveat(recipes), "",
        f"**Headline:** {headline}.", "",
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
