"""The channel-attention family's table, from a results folder's ``family`` study (one recipe).

One row per arm in the study's order: the module (its ``--se.preset`` name; ``baseline`` is the plain
network, ``se`` the reference), the params and FLOPs it adds over the plain network, top-1 error (mean
± std, n), Δ top-1 against SE with the anytime-valid confidence sequence and the verdict, all as
:mod:`analysis.report` computes them (:func:`analysis.compare.summary_table`, :func:`compare_arms`).
:func:`write_family_table` writes ``<results>/family/family_table.md`` and, given a README, replaces
what lies between its :data:`MARKERS`. Rendering only: pandas.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from senet.records.layout import study_paths, write_atomic

from .compare import compare_arms, summary_table
from .errors import ReportInputError
from .report import comparison_rows, design_text
from .study_results import arm_order, count_test_images, load_recipe, nuisance_groups
from .tables import human, markdown, missing, pm

#: The comment lines of a README between which :func:`splice_readme` puts the table.
MARKERS = ("<!-- family-table:start -->", "<!-- family-table:end -->")
#: The label of the plain network's arm (``ablations.studies``' baseline: ``se.stages none``).
PLAIN = "baseline"
METRIC = "test_top1_err"
REFERENCE_VERDICT = "reference"


def added(v: float, base: float) -> str:
    """An amount added over the plain network, exactly and relative to it ("+2,373 (+0.88%)")."""
    if missing(v) or missing(base):
        return "–"
    d = v - base
    if d == 0:
        return "0"
    return f"{d:+,.0f}" + (f" ({100 * d / base:+.2f}%)" if base else "")


def cs_column(hdr: list[str]) -> str:
    """The confidence sequence's column of the report's comparison table (its name gives the level)."""
    return next(h for h in hdr if h.startswith("anytime "))


def family_header(b: pd.DataFrame, ref: str) -> list[str]:
    """The table's columns; the confidence sequence's names its level, as the report's does."""
    cs = cs_column(comparison_rows(b)[0])
    return ["module", "params added", "FLOPs added", "top-1 err (%)", "n", f"Δ top-1 vs {ref} (pp)", cs,
            f"verdict vs {ref}"]


def family_rows(runs: pd.DataFrame, meta: dict, t: pd.DataFrame, b: pd.DataFrame) -> list[list[str]]:
    """One row per arm in the study's order, from the summary table ``t`` (indexed by arm) and the
    comparisons ``b`` (:func:`analysis.compare.compare_arms` of top-1 error): the cells the report prints."""
    hdr, crows = comparison_rows(b)
    cmp = {r[0]: dict(zip(hdr, r, strict=True)) for r in crows}
    base = t.loc[PLAIN]
    rows = []
    for arm in arm_order(runs, meta):
        r = t.loc[arm]
        c = cmp.get(arm)
        rows.append([arm, added(r["params"], base["params"]), added(r["flops"], base["flops"]),
                     pm(r[f"{METRIC}_mean"], r[f"{METRIC}_std"]), str(int(r["n"])),
                     c["Δ̂ (pp)"] if c else "–", c[cs_column(hdr)] if c else "–",
                     c["outcome"] if c else REFERENCE_VERDICT])
    return rows


def _first(runs: pd.DataFrame, col: str) -> str:
    vals = runs[col].dropna().astype(str).unique() if col in runs else ()
    return "/".join(vals) if len(vals) else "?"


def family_caption(runs: pd.DataFrame, meta: dict, t: pd.DataFrame, b: pd.DataFrame,
                   num_test: int | None) -> str:
    """What the table shows and how it was judged, in one paragraph."""
    d, k, ref = b.attrs["design"], b.attrs["k"], meta["reference_arm"]
    plain = t.loc[PLAIN]
    size = _first(runs, "data.image_size")
    data = f"`{_first(runs, 'data.name')}` images" + (
        f" resized to {size} px" if size not in ("?", "0") else " at the dataset's own size")
    totals = f" ({human(plain['params'])} params, {human(plain['flops'])} FLOPs)"
    tests = f"N = {num_test} test images, one image = {100 / num_test:.2f} pp" if num_test else "test-set size unknown"
    return (f"The channel-attention family on `{_first(runs, 'model.name')}`, trained on {data} "
            f"(preset `{_first(runs, 'preset')}`, recipe `{_first(runs, 'recipe')}`; {tests}), each module "
            f"at its paper's defaults (`--se.preset NAME`); `{PLAIN}` is the plain network, `{ref}` the "
            f"reference. Params and FLOPs added: the arm's network minus the plain one{totals}, as "
            f"training counted them for one image at that input (runs.parquet's `params`, `flops`; "
            f"relative change in brackets). Top-1 err: test error in %, mean ± std over the n completed "
            f"seeds. Δ top-1: arm − `{ref}`, paired by seed, and its anytime-valid confidence sequence "
            f"(CS) at level α/k (Bonferroni over the {k} arms compared with `{ref}`), as the report's. "
            f"Verdict, the report's outcome: better / worse (the CS excludes 0), alike (the CS lies inside "
            f"±δ), different within ±δ (both), open while neither holds below the seed cap, unresolved at "
            f"it. n and the CS say what could have been detected: a difference inside the CS cannot be told "
            f"from none at this n, and open or unresolved is no evidence that a module matches `{ref}`. "
            f"{design_text(d, b.attrs['declared'], k)}")


def family_table(results: str | Path, study: str = "family", *, preset: str | None = None,
                 experiment: str | None = None, recipe: str | None = None, n_boot: int = 10000) -> str:
    """The study's table (caption, then the Markdown table) for one recipe, from its
    ``runs.parquet`` and ``study.json``."""
    runs, meta = load_recipe(results, study, preset=preset, experiment=experiment, recipe=recipe)
    groups = nuisance_groups(runs, meta)
    if len(groups) != 1:
        raise ReportInputError(f"the {study} study sweeps nuisance values ({len(groups)} groups); its "
                               "table covers one group only")
    runs = groups[0][1]
    num_test, _ = count_test_images(runs, study_paths(results, study).dir)
    t = summary_table(runs, meta).set_index("arm")
    if PLAIN not in t.index:
        raise ReportInputError(f"the {study} study has no {PLAIN!r} arm (the plain network) to count the "
                               "params and FLOPs added over")
    b = compare_arms(runs, meta, METRIC, n_boot=n_boot, num_test=num_test)
    return (family_caption(runs, meta, t, b, num_test) + "\n\n"
            + markdown(family_header(b, meta["reference_arm"]), family_rows(runs, meta, t, b)))


def splice_readme(text: str, block: str, where: str = "the README") -> str:
    """``text`` with what lies between the :data:`MARKERS` replaced by ``block``; each marker must
    occur once, start before end."""
    start, end = MARKERS
    i, j = text.find(start), text.find(end)
    if text.count(start) != 1 or text.count(end) != 1 or j < i:
        raise ReportInputError(f"{where} lacks the markers {start} and {end} (each once, in that order) "
                               "where the family table goes")
    return text[:i + len(start)] + "\n" + block.strip("\n") + "\n" + text[j:]


def _relative(path: str | Path, start: Path) -> str:
    return Path(os.path.relpath(Path(path).absolute(), start)).as_posix()


def write_family_table(results: str | Path, study: str = "family", *, preset: str | None = None,
                       experiment: str | None = None, recipe: str | None = None, n_boot: int = 10000,
                       readme: str | Path | None = None) -> list[Path]:
    """Write ``<results>/<study>/family_table.md`` and, with ``readme``, the same table between that
    file's markers (:func:`splice_readme`); returns the paths written."""
    table = family_table(results, study, preset=preset, experiment=experiment, recipe=recipe, n_boot=n_boot)
    source = study_paths(results, study).dir
    choice = "".join(f" --{k} {v}" for k, v in (("preset", preset), ("experiment", experiment),
                                                   ("recipe", recipe)) if v)

    def command(start: Path) -> str:  # as run from ``start``: no machine's paths in a committed file
        return f"senet report {study} --results {_relative(results, start)}{choice}"

    spliced = None
    if readme is not None:  # the markers are checked before anything is written
        home = Path(readme).absolute().parent
        spliced = splice_readme(Path(readme).read_text(), f"Written by `{command(home)} --readme "
                                f"{Path(readme).name}` from `{_relative(source, home)}`; not edited by hand.\n\n{table}",
                                str(readme))
    out = [write_atomic(source / "family_table.md", f"# The channel-attention family against SE\n\n"
                        f"Written by `{command(Path(results).absolute().parent)}` from this folder's runs.parquet."
                        f"\n\n{table}")]
    return out + ([write_atomic(readme, spliced)] if spliced is not None else [])
