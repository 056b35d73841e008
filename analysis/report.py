"""Ablation reports: paper-style tables, verdicts over seeds and figures from ``runs.parquet``.

:func:`write_report` turns a study's ``runs.parquet`` and ``study.json`` (:mod:`analysis.study`)
into ``<results>/<study>/report.md`` with:

- the table the paper prints (arm, top-1 / top-5 error as mean ± std over seeds, n, diverged trials,
  params, FLOPs, Δ against the reference arm) with the paper's figure alongside, in Markdown and LaTeX;
- each arm against the reference arm, paired by seed: the paired t-test and its interval, a BCa
  bootstrap interval, Holm's correction over the arms compared, and a verdict (better / worse /
  inconclusive / no verdict) that needs at least 3 seed pairs and a difference of at least one
  test image; a power line says what difference the study could detect and how many seeds a
  smaller one would take (:mod:`analysis.compare`, method: :mod:`analysis.stats`);
- point plots (mean ± t-interval over seeds) and error EDFs per arm (as pycls draws them).

A report covers one recipe (:func:`analysis.study.select_recipe`). Only completed trials enter the
statistics; diverged ones are counted in the table, and trials that errored or have not finished
(still running, or interrupted) are named below it. Rendering only: pandas, numpy, scipy,
matplotlib and seaborn.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from senet.layout import study_paths, write_atomic

from . import figures, stats
from .compare import METRICS, check_n_boot, compare_arms, power_summary, summary_table
from .errors import ReportInputError
from .study import arm_order, completed, count_test_images, load_recipe, nuisance_groups
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


def comparison_rows(b: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The comparison table as strings (header, rows)."""
    header = ["arm", "vs", "pairs", "mean Δ (pp)", "t 95% CI", "p", "p (Holm)", "bootstrap 95% CI",
              "verdict", "why", "seeds to detect |Δ|"]

    def ci(lo, hi):
        return "–" if math.isnan(lo) else f"[{lo:+.2f}, {hi:+.2f}]"

    def boot(r):
        text = ci(r.ci_low, r.ci_high)
        return text if text == "–" or r.boot_method == "BCa" else f"{text} ({r.boot_method})"

    rows = [[r.arm, r.reference, str(r.pairs), signed(r.mean_diff), ci(r.t_low, r.t_high),
             num(r.p, "{:.3g}"), num(r.p_holm, "{:.3g}"), boot(r), r.verdict, r.reason,
             "–" if r.seeds_for_diff is None or pd.isna(r.seeds_for_diff) else str(int(r.seeds_for_diff))]
            for r in b.itertuples(index=False)]
    return header, rows


def comparison_caption(b: pd.DataFrame, num_test: int | None, source: str) -> str:
    """What the comparison table did, in one paragraph: Holm's family, the resolution, the rules."""
    k = b.attrs.get("holm_k", 0)
    res = (f"one test image is {100 / num_test:.2f} pp (N = {num_test} test images, from {source}), and a "
           "smaller |Δ| is never called better or worse" if num_test else
           "the test-set size is not recorded, so the resolution of one test image is unknown and not applied")
    family = (f"Holm's step-down adjustment over the {k} arm{'s' if k != 1 else ''} tested against the "
              "reference (family-wise error 5%)" if k else
              f"Holm's step-down adjustment, here over no test (no arm has {stats.MIN_PAIRS} pairs)")
    return (f"Paired by seed (arm − reference). p: paired t-test; p (Holm): {family}. "
            f"Bootstrap: BCa over the seed pairs; it is shown, and decides together with the t-test only from "
            f"{stats.BOOT_DECIDES_FROM} pairs on. No verdict below {stats.MIN_PAIRS} pairs; {res}.")


def power_line(p: dict) -> str:
    """The power summary (:func:`analysis.compare.power_summary`) as one sentence of the report."""
    name = label(p["metric"]).replace(" (%)", "")
    if not math.isfinite(p["sd"]):
        return (f"Power ({name}): no estimate of the seed-to-seed spread (no arm has 2 seed "
                "pairs with the reference); run more seeds (`--seeds 3` at least).")
    seeds = (f"{p['seeds']} seeds" if p["seeds"] is not None else "more than a million seeds")
    return (f"Power ({name}): σ_d = {p['sd']:.2f} pp (SD of the paired differences, pooled over "
            f"{p['arms']} arms, {p['df']} df); with n = {p['n']} seeds the smallest difference this study "
            f"detects with 80% power (two-sided 5%, before Holm) is {p['mde']:.2f} pp; "
            f"{p['effect']:.2f} pp would need {seeds}.")


def study_title(meta: dict) -> str:
    return str(meta.get("title") or meta.get("name") or "")


def write_report(results: str | Path, study: str, *, n_boot: int = 10000, preset: str | None = None,
                 experiment: str | None = None, recipe: str | None = None,
                 effect: float | None = None) -> Path:
    """Write ``<results>/<study>/report.md`` with its tables (``table.md``, ``table.tex``,
    ``comparison_*.md``) and figures (``figures/*.png`` and ``.pdf``); returns the report's path.

    The table must hold one recipe, or ``preset`` / ``experiment`` / ``recipe`` must pick one
    (:func:`analysis.study.select_recipe`); nuisance values make groups of their own
    (:func:`analysis.study.nuisance_groups`)."""
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
    """The tables, comparisons, power lines and figures of one group of trials (markdown lines)."""
    t = summary_table(runs, meta)
    rows = table_rows(t)
    write_atomic(d / f"table{suffix}.md", markdown(HEADER, rows))
    write_atomic(d / f"table{suffix}.tex", latex(HEADER, rows, caption))
    ok = completed(runs)
    arms = [a for a in arm_order(runs, meta) if (ok["arm"] == a).any()]
    bad = {k: int(v) for k, v in runs["status"].value_counts().items() if k != "completed"}
    note = table_note(t)
    parts = [f"{len(runs)} trials: {len(ok)} completed"
             + (f", {sum(bad.values())} not ({', '.join(f'{k}: {v}' for k, v in bad.items())})" if bad else "")
             + "; only completed trials enter the statistics.", "",
             "## Results", "", f"Test error in %, mean ± std over seeds. {caption}. The paper's numbers "
             "are ImageNet (ResNet-50), shown for the direction and size of each effect.", "",
             markdown(HEADER, rows), *([note, ""] if note else []),
             f"LaTeX: [table{suffix}.tex](table{suffix}.tex)", "",
             "## Differences from the reference arm (paired by seed; Holm-corrected)", ""]
    for m in METRICS:
        if m not in runs:
            continue
        b = compare_arms(runs, meta, m, n_boot=n_boot, num_test=num_test)
        hdr, brow = comparison_rows(b)
        write_atomic(d / f"comparison_{m}{suffix}.md", markdown(hdr, brow))
        parts += [f"**{label(m)}** (negative = lower error than `{meta['reference_arm']}`). "
                  + comparison_caption(b, num_test, source), "", markdown(hdr, brow),
                  power_line(power_summary(runs, meta, m, effect=effect, num_test=num_test)), ""]
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
