"""Ablation reports: paper-style tables, verdicts over seeds and figures from ``runs.parquet``.

:func:`write_report` turns a study's ``runs.parquet`` and ``study.json`` (:mod:`analysis.study_results`)
into ``<results>/<study>/report.md`` with:

- the table the paper prints (arm, top-1 / top-5 error as mean ± std over seeds, n, diverged trials,
  params, FLOPs, Δ against the reference arm) with the paper's figure alongside, in Markdown and LaTeX;
- each arm against the reference arm, paired by seed in seed order: the anytime-valid confidence
  sequence at level α/k (k arms compared with the reference) and its outcome (better, worse, alike,
  different within ±δ; open below the seed cap, unresolved at it), what decided it or how many
  more seeds would, σ̂_d, ρ̂, and the fixed-n t and bootstrap intervals as descriptive columns; a
  projection line says how many seeds the sequence needs to settle a difference of δ next to a
  fixed-n design (:mod:`analysis.compare`, method: :mod:`senet.sequential`);
- point plots (mean ± t-interval over seeds) and error EDFs per arm (as pycls draws them).

A report covers one recipe (:func:`analysis.study_results.select_recipe`). Only completed trials enter the
statistics; diverged ones are counted in the table, and trials that errored or have not finished
(still running, or interrupted) are named below it. Rendering only: pandas, numpy, scipy,
matplotlib and seaborn.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from senet.records.layout import study_paths, write_atomic
from senet.sequential import ALIKE, BETTER, OPEN, UNRESOLVED, WITHIN, WORSE

from . import figures
from .compare import FIXED_T, METRICS, check_n_boot, compare_arms, projection, summary_table
from .errors import ReportInputError
from .study_results import arm_order, completed, count_test_images, load_recipe, nuisance_groups
from .style import label, save
from .tables import human, latex, markdown, num, pm, signed

HEADER = ["arm", "top-1 err (%)", "top-5 err (%)", "n", "diverged", "params", "FLOPs",
          "Δ top-1", "paper top-1 / top-5", "paper Δ top-1"]
#: Trials the table counts in no column, as the note below it names them.
NOT_IN_TABLE = (("running", "not finished (running, or interrupted and not resumed)"), ("errored", "errored"))


def table_rows(t: pd.DataFrame) -> list[list[str]]:
    """The summary table as strings, one list per arm, in :data:`HEADER` order."""
    out = []
    for r in t.itertuples(index=False):
        name = f"{r.arm} (ref)" if r.reference else r.arm
        paper = "–" if math.isnan(r.paper_top1) else f"{r.paper_top1:.2f} / {num(r.paper_top5)}"
        out.append([name, pm(r.test_top1_err_mean, r.test_top1_err_std),
                    pm(r.test_top5_err_mean, r.test_top5_err_std), str(r.n), str(r.diverged),
                    human(r.params), human(r.flops),
                    "–" if r.reference else signed(r.delta_test_top1_err),
                    paper, "–" if r.reference else signed(r.paper_delta_top1)])
    return out


def table_note(t: pd.DataFrame) -> str:
    """The trials of the summary table that are in none of its columns, per arm ("" when none)."""
    parts = []
    for col, what in NOT_IN_TABLE:
        arms = [f"{arm} {k}" for arm, k in zip(t["arm"], t[col], strict=True) if k]
        if arms:
            parts.append(f"{what}: {', '.join(arms)}")
    return (f"Not in the table (`diverged` counts diverged trials only): {'; '.join(parts)}." if parts else "")


#: Outcomes in the order the counts name them.
OUTCOMES = (BETTER, WORSE, WITHIN, ALIKE, UNRESOLVED, OPEN)


def _ci(lo, hi) -> str:
    return "–" if math.isnan(lo) else f"[{lo:+.2f}, {hi:+.2f}]"


def level_text(level: float) -> str:
    """A confidence sequence's level as a percentage (1 − α/k), e.g. "99.17%"."""
    return f"{100 * (1 - level):.4g}%"


def comparison_rows(b: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The comparison table as strings (header, rows)."""
    header = ["arm", "vs", "n", "Δ̂ (pp)", f"anytime {level_text(b.attrs['level'])} CS", "outcome", "reason",
              "σ̂_d", "ρ̂", FIXED_T, "bootstrap 95% CI (descriptive)"]

    def boot(r):
        text = _ci(r.ci_low, r.ci_high)
        return text if text == "–" or r.boot_method == "BCa" else f"{text} ({r.boot_method})"

    def cs(r):
        return "(−∞, ∞)" if not (math.isfinite(r.cs_low) and math.isfinite(r.cs_high)) else _ci(r.cs_low, r.cs_high)

    rows = [[r.arm, r.reference, str(r.pairs), signed(r.mean_diff), cs(r), r.outcome, r.reason,
             num(r.sd_diff), num(r.rho), _ci(r.t_low, r.t_high), boot(r)]
            for r in b.itertuples(index=False)]
    return header, rows


def outcome_counts(b: pd.DataFrame) -> str:
    """The outcomes counted, e.g. "1 worse, 5 open (of 6)"."""
    counts = b["outcome"].value_counts()
    parts = [f"{int(counts[o])} {o}" for o in OUTCOMES if counts.get(o, 0)]
    return f"{', '.join(parts) or 'none'} (of {len(b)})"


def design_text(design, declared: bool, k: int) -> str:
    """The design a table was judged by, and where it came from."""
    where = ("declared in study.json (`sequential`)" if declared else
             "the defaults of `senet.sequential.Design`, because study.json declares none (`sequential`)")
    return (f"Design: α = {design.alpha:g} family-wise, δ = {design.delta:g} pp, g = {design.g:g}, "
            f"{design.min_seeds} seeds before any verdict, cap {design.max_seeds} seeds, k = {k}, level "
            f"α/k = {design.level(k):.4g}; {where}.")


def comparison_caption(b: pd.DataFrame, num_test: int | None, source: str) -> str:
    """What the comparison table did, in one paragraph: the design, the level, the rules, the resolution."""
    d, k = b.attrs["design"], b.attrs["k"]
    res = (f"one test image is {100 / num_test:.2f} pp (N = {num_test} test images, from {source}), and a "
           "smaller |Δ̂| is never a difference" if num_test else
           "the test-set size is not recorded, so the resolution of one test image is unknown and not applied")
    return (f"Paired by seed (arm − reference), seeds in order; n = seed pairs both arms completed. "
            f"CS: the anytime-valid t confidence sequence (Gaussian mixture, g = {d.g:g}), intersected over "
            f"the seeds: valid at every n at once, however seeds are added, stopped or resumed. Each arm's is "
            f"at level α/k = {d.alpha:g}/{k} (Bonferroni over the {k} arm{'s' if k != 1 else ''} compared "
            f"with the reference), so all outcomes of the table together err with probability ≤ {d.alpha:g}. "
            f"Outcomes: better / worse (the CS excludes 0), alike (the CS lies inside ±δ), different within ±δ "
            f"(both); open while neither holds below the cap, unresolved at it; none before "
            f"{d.min_seeds} seeds, and a verdict once reached stands. Reason: what decided it, or the CS and "
            f"≈ how many more seeds would settle it if σ_d stays σ̂_d. ρ̂: correlation of the arm's and the "
            f"reference's errors over the paired seeds. The fixed-n t and bootstrap intervals are "
            f"descriptive: they hold only at an n fixed in advance. {design_text(d, b.attrs['declared'], k)} "
            f"Resolution: {res}.")


def projection_line(p: dict) -> str:
    """The projection (:func:`analysis.compare.projection`) as one sentence of the report."""
    name = label(p["metric"]).replace(" (%)", "")
    if not (math.isfinite(p["sd"]) and p["sd"] > 0):
        return (f"Projection ({name}): no estimate of the seed-to-seed spread (no arm has 2 seed pairs "
                "with the reference that differ); run more seeds.")
    cap = p["design"].max_seeds
    cs = ("more than 100,000 seeds" if p["cs_seeds"] is None else
          f"{p['cs_seeds']} seeds" + (f", beyond the cap of {cap}" if p["cs_seeds"] > cap else f" (cap {cap})"))
    return (f"Projection ({name}): σ̂_d = {p['sd']:.2f} pp (SD of the paired differences, pooled over "
            f"{p['arms']} arms, {p['df']} df; n = {p['n']} seed pairs at most). If σ_d stays so, the CS at "
            f"α/k = {p['level']:.4g} settles |Δ| = {p['effect']:.2f} pp (excludes 0 at Δ = {p['effect']:.2f}, "
            f"or fits inside ±δ at Δ = 0) after ≈ {cs}; a fixed-n paired t-test at the same level needs "
            f"{p['fixed_seeds']} seeds for 80% power at {p['effect']:.2f} pp, valid only if that n is fixed "
            "in advance and never extended.")


def study_title(meta: dict) -> str:
    return str(meta.get("title") or meta.get("name") or "")


def write_report(results: str | Path, study: str, *, n_boot: int = 10000, preset: str | None = None,
                 experiment: str | None = None, recipe: str | None = None,
                 effect: float | None = None) -> Path:
    """Write ``<results>/<study>/report.md`` with its tables (``table.md``, ``table.tex``,
    ``comparison_*.md``) and figures (``figures/*.png`` and ``.pdf``); returns the report's path.

    The table must hold one recipe, or ``preset`` / ``experiment`` / ``recipe`` must pick one
    (:func:`analysis.study_results.select_recipe`); nuisance values make groups of their own
    (:func:`analysis.study_results.nuisance_groups`)."""
    check_n_boot(n_boot)
    if effect is not None and not effect > 0:
        raise ReportInputError(f"--effect must be > 0 (points of error), got {effect}")
    paths = study_paths(results, study)
    runs, meta = load_recipe(results, study, preset=preset, experiment=experiment, recipe=recipe)
    num_test, source = count_test_images(runs, paths.dir)
    caption = meta.get("title", study) + (f" (cf. paper {meta['paper_table']})" if meta.get("paper_table") else "")
    parts = [f"# {meta.get('title', study)}", ""]
    if meta.get("paper_table"):
        parts.append(f"Reproduces paper {meta['paper_table']}; scientific axis: "
                     f"`{meta.get('axis', '?')}`; reference arm: `{meta['reference_arm']}`.")
    tags = [f"{c} `{'/'.join(map(str, dict.fromkeys(runs[c].dropna())))}`" for c in ("preset", "experiment")
            if c in runs and runs[c].notna().any()]
    parts += [f"Recipe `{runs['recipe'].iloc[0]}`" + (f" ({', '.join(tags)})" if tags else "") + ".", ""]
    if "git_commit" in runs and runs["git_commit"].notna().any():  # each row's trial, as it recorded
        commits = ", ".join(f"`{c[:12]}`" for c in sorted(set(runs["git_commit"].dropna().astype(str))))
        dirty = (" (some in a working tree with uncommitted changes)"
                 if "git_dirty" in runs and runs["git_dirty"].eq(True).any() else "")
        shared = runs["reused_from"].dropna() if "reused_from" in runs else pd.Series(dtype=str)
        shared = (f" {len(shared)} of its {len(runs)} trials were trained for another study and are shared "
                  f"with it ({', '.join(sorted(set(shared.astype(str))))})." if len(shared) else "")
        parts += [f"Trained at commit {commits}{dirty}.{shared}", ""]
    groups = nuisance_groups(runs, meta)
    for gi, (title, g, note) in enumerate(groups):
        suffix = f"_{gi + 1}" if len(groups) > 1 else ""
        if title:
            parts += [f"# {title}", ""]
        if note:
            parts += [note, ""]
        parts += _group_report(paths.dir, g, meta, caption, suffix, n_boot=n_boot, effect=effect,
                               num_test=num_test, source=source)
    return write_atomic(paths.report_md, "\n".join(parts))


def _group_report(d: Path, runs: pd.DataFrame, meta: dict, caption: str, suffix: str, *, n_boot: int,
                  effect: float | None, num_test: int | None, source: str) -> list[str]:
    """The tables, comparisons, projection lines and figures of one group of trials (markdown lines)."""
    t = summary_table(runs, meta)
    rows = table_rows(t)
    write_atomic(d / f"table{suffix}.md", markdown(HEADER, rows))
    write_atomic(d / f"table{suffix}.tex", latex(HEADER, rows, caption))
    ok = completed(runs)
    arms = [a for a in arm_order(runs, meta) if (ok["arm"] == a).any()]
    bad = {k: int(v) for k, v in runs["status"].value_counts().items() if k != "completed"}
    note = table_note(t)
    ref = meta["reference_arm"]
    comparisons = {m: compare_arms(runs, meta, m, n_boot=n_boot, num_test=num_test) for m in METRICS if m in runs}
    parts = [f"{len(runs)} trials: {len(ok)} completed"
             + (f", {sum(bad.values())} not ({', '.join(f'{k}: {v}' for k, v in bad.items())})" if bad else "")
             + "; only completed trials enter the statistics.", ""]
    if comparisons:
        m, b = next(iter(comparisons.items()))
        parts += [f"Outcomes against `{ref}` ({label(m).replace(' (%)', '')}, anytime-valid confidence "
                  f"sequences at α/k = {b.attrs['level']:.4g}): {outcome_counts(b)}.", ""]
    parts += ["## Results", "", f"Test error in %, mean ± std over seeds. {caption}. The paper's numbers "
              "are ImageNet (ResNet-50), shown for the direction and size of each effect.", "",
              markdown(HEADER, rows), *([note, ""] if note else []),
              f"LaTeX: [table{suffix}.tex](table{suffix}.tex)", "",
              "## Differences from the reference arm (paired by seed; anytime-valid confidence sequences)", ""]
    for m, b in comparisons.items():
        hdr, brow = comparison_rows(b)
        write_atomic(d / f"comparison_{m}{suffix}.md", markdown(hdr, brow))
        parts += [f"**{label(m)}** (negative = lower error than `{ref}`). Outcomes against `{ref}`: {outcome_counts(b)}. "
                  + comparison_caption(b, num_test, source), "", markdown(hdr, brow),
                  projection_line(projection(runs, meta, m, effect=effect, num_test=num_test)), ""]
    if len(ok) and arms:
        metrics = [m for m in METRICS if m in ok and ok[m].notna().any()]
        figdir = d / "figures"
        save(figures.point_plot(ok, arms, metrics, title=study_title(meta)), figdir / f"pointplot{suffix}")
        parts += ["## Figures", "", "Mean ± 95% Student-t interval over seeds per arm (no interval with "
                  "one seed; n under each arm); dots are single runs.", "",
                  f"![point plot](figures/pointplot{suffix}.png)", ""]
        for m in metrics:
            save(figures.error_edf(ok, arms, m), figdir / f"edf_{m}{suffix}")
            parts += [f"![EDF of {label(m)}](figures/edf_{m}{suffix}.png)", ""]
    return parts
