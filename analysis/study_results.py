"""One study's collected results as the reports read them: the table, its meta, one recipe, groups.

A study's sweep writes ``<results>/<study>/runs.parquet`` (one row per trial) and ``study.json`` (its
arms, the reference arm and the paper's ImageNet numbers), both read through :mod:`senet.records`.
A report covers one recipe: trials that differ in anything but the arm, the seed and a study's
nuisance values (see :mod:`senet.records.recipe`) are never averaged together (:func:`select_recipe`).
A row's ``checkpoint`` is relative to the study folder (absolute in tables collected before), or the
URI of a sweep stored in an object store, which is fetched into the study's cache:
:func:`checkpoint_path`. pandas only; torch only to hash the recipes of a table collected before it
recorded them.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from senet.records.layout import CHECKPOINT, FINAL_JSON, read_json, study_paths
from senet.records.object_store import fetch_for_study, is_uri, sibling
from senet.records.recipe import recipe_hash, study_arm_keys
from senet.records.study_file import read_study

from .errors import ReportInputError


def load_study(results: str | Path, study: str) -> tuple[pd.DataFrame, dict]:
    """Read ``<results>/<study>/runs.parquet`` and ``study.json`` (missing meta -> derived)."""
    paths = study_paths(results, study)
    runs_path = paths.runs_parquet
    if not runs_path.is_file():
        have = sorted(p.parent.name for p in Path(results).glob("*/runs.parquet")) if Path(results).is_dir() else []
        hint = f"; studies with results: {', '.join(have)}" if have else "; run `senet collect STUDY` first"
        raise FileNotFoundError(f"no results for study {study!r}: {runs_path} not found{hint}")
    try:
        runs = pd.read_parquet(runs_path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ReportInputError(f"{runs_path} is unreadable ({why}); `senet collect {study} --results "
                               f"{results}` rebuilds it from the trials") from None
    missing = {"arm", "status", "test_top1_err"} - set(runs.columns)
    if missing:
        raise ReportInputError(f"{runs_path} lacks the columns {sorted(missing)}")
    try:  # a broken study.json is the user's to fix, not a file to read past
        meta = read_study(paths, strict=True)
    except ValueError as e:
        raise ReportInputError(f"{paths.study_json} is not valid JSON ({e}); remove it and `senet collect {study} "
                               f"--results {results}` derives it from the trials") from None
    meta.setdefault("name", study)
    meta.setdefault("title", study)
    if not meta.get("arms"):
        meta["arms"] = [{"arm": a} for a in dict.fromkeys(runs["arm"])]
    meta.setdefault("reference_arm", meta["arms"][0]["arm"])
    return runs, meta


def arm_order(runs: pd.DataFrame, meta: dict) -> list[str]:
    """The study's arm order, then any arms found only in the runs."""
    order = [a["arm"] for a in meta.get("arms", [])]
    return order + [a for a in dict.fromkeys(runs["arm"]) if a not in order]


def completed(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] == "completed"]


# ---------------------------------------------------------------------------------------------
# One recipe per report; nuisance values are not seeds
# ---------------------------------------------------------------------------------------------
def varied_keys(meta: dict, runs: pd.DataFrame | None = None) -> list[str]:
    """The config keys the arms vary: :func:`senet.records.recipe.study_arm_keys` of the study's
    meta; without a recorded axis, the config columns of ``runs`` that are constant within each arm
    and differ between arms."""
    keys = study_arm_keys(meta)
    if not keys and runs is not None and "arm" in runs and runs["arm"].nunique() > 1:
        cols = [c for c in runs.columns if "." in c and not c.startswith("run.")]
        keys = [c for c in cols if runs.groupby("arm")[c].nunique(dropna=False).max() <= 1
                and runs[c].nunique(dropna=False) > 1]
    return list(dict.fromkeys(keys))


def nuisance_keys(meta: dict) -> list[str]:
    """The keys a (custom) study sweeps identically for every arm, besides the seed."""
    return list(meta.get("nuisance_keys") or meta.get("nuisance") or [])


def with_recipe(runs: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """``runs`` with a ``recipe`` column: the recorded one, or for rows without it (tables collected
    before it existed) the same :func:`senet.records.recipe.recipe_hash` that collect records."""
    if "recipe" in runs and runs["recipe"].notna().all():
        return runs
    axis, nuis = varied_keys(meta, runs), nuisance_keys(meta)
    computed = pd.Series([recipe_hash(r, axis, nuis) for r in runs.to_dict("records")], index=runs.index)
    runs = runs.copy()
    runs["recipe"] = runs["recipe"].where(runs["recipe"].notna(), computed) if "recipe" in runs else computed
    return runs


def describe_recipes(runs: pd.DataFrame) -> str:
    parts = []
    for rec, g in runs.groupby("recipe", sort=False):
        tags = [f"{c} {'/'.join(map(str, dict.fromkeys(g[c].dropna())))}" for c in ("preset", "experiment")
                if c in g and g[c].notna().any()]
        parts.append(f"recipe {rec} ({', '.join([*tags, f'{len(g)} trials'])})")
    return "; ".join(parts)


def select_recipe(runs: pd.DataFrame, meta: dict, *, preset: str | None = None,
                  experiment: str | None = None, recipe: str | None = None,
                  where: str = "runs.parquet") -> pd.DataFrame:
    """The rows of one recipe: those chosen by ``preset`` / ``experiment`` / ``recipe`` (a hash or
    its prefix), which must leave exactly one recipe. Two recipes are never pooled: a table that
    holds several is refused with one line naming each (preset, experiment, trials)."""
    runs = with_recipe(runs, meta)
    for col, want in (("preset", preset), ("experiment", experiment), ("recipe", recipe)):
        if want is None:
            continue
        if col not in runs or runs[col].isna().all():
            raise ReportInputError(f"{where} records no {col}; choose with --recipe among: {describe_recipes(runs)}")
        have = runs[col].astype(str)
        sel = runs[have.str.startswith(want) if col == "recipe" else have == str(want)]
        if sel.empty:
            raise ReportInputError(f"no trials with {col} {want!r} in {where}; it holds: {describe_recipes(runs)}")
        runs = sel
    if runs["recipe"].nunique() > 1:
        raise ReportInputError(f"{where} mixes {runs['recipe'].nunique()} recipes, which a report never "
                               f"averages together; choose one with --preset, --experiment or --recipe: "
                               f"{describe_recipes(runs)}")
    return runs


def load_recipe(results: str | Path, study: str, **choice) -> tuple[pd.DataFrame, dict]:
    """:func:`load_study` and :func:`select_recipe` (``preset``, ``experiment``, ``recipe``) in one."""
    runs, meta = load_study(results, study)
    where = str(study_paths(results, study).runs_parquet)
    return select_recipe(runs, meta, where=where, **choice), meta


def nuisance_groups(runs: pd.DataFrame, meta: dict) -> list[tuple[str, pd.DataFrame, str]]:
    """(title, rows, note) per group of the report. A study's nuisance values are not seeds: each
    combination is its own group, unless ``study.json`` says ``"average_nuisance": true``; then each
    (arm, seed) is averaged over the nuisance values first (only where every value completed)."""
    keys = [k for k in nuisance_keys(meta) if k in runs]
    if not keys:
        return [("", runs, "")]
    if not meta.get("average_nuisance"):
        return [(", ".join(f"{k} = {v}" for k, v in zip(keys, vals, strict=True)), g, "")
                for vals, g in runs.groupby(keys, sort=True, dropna=False)]
    combos = len(runs[keys].drop_duplicates())
    ok = completed(runs)
    metrics = [c for c in ok.columns if c.endswith("_err") and pd.api.types.is_numeric_dtype(ok[c])]
    cells = ok.groupby(["arm", "seed"], sort=False)
    full = cells.size()
    full = full[full == combos].index
    avg = cells[metrics].mean().loc[full].reset_index()
    first = cells.first().loc[full].reset_index().drop(columns=metrics)
    merged = first.merge(avg, on=["arm", "seed"]).assign(status="completed")
    left_out = len(cells.size()) - len(full)
    note = (f"Each arm and seed is averaged over the {combos} combinations of {', '.join(keys)} "
            "(study.json: average_nuisance)"
            + (f"; {left_out} (arm, seed) cells without a completed run for every value are left out." if left_out else "."))
    return [(f"averaged over {', '.join(keys)}", pd.concat([merged, runs[runs["status"] != "completed"]],
                                                          ignore_index=True), note)]


# ---------------------------------------------------------------------------------------------
# Where a trial's files are
# ---------------------------------------------------------------------------------------------
def checkpoint_path(recorded: str | Path, study_dir: str | Path) -> Path:
    """A row's ``checkpoint`` on this machine: relative paths are relative to the study folder
    (``ray/<experiment>/<trial>/checkpoint_000004``), absolute ones (older tables) stand as they are,
    and a URI (``s3://...``, a sweep stored in an object store) is fetched into the study's cache
    (again only when the stored file changed)."""
    if is_uri(recorded):
        return fetch_for_study(str(recorded), study_dir)
    p = Path(recorded)
    return p if p.is_absolute() else Path(study_dir) / p


def checkpoint_file(path: str | Path) -> Path:
    """``path``, or the checkpoint inside it where it is a checkpoint folder."""
    p = Path(path)
    return p / CHECKPOINT if p.is_dir() else p


def count_test_images(runs: pd.DataFrame, study_dir: str | Path = ".") -> tuple[int | None, str]:
    """The number of test images N behind the errors (one image = 100/N points) and where it was
    found: a ``num_test`` column, the ``final.json`` beside each trial's checkpoint, or the data
    config (the synthetic set's size, ``data.test_subset``); (None, "") when nothing records it."""
    if "num_test" in runs and runs["num_test"].notna().any():
        return int(runs["num_test"].dropna().min()), "num_test"
    sizes = []
    for ckpt in runs["checkpoint"].dropna().unique() if "checkpoint" in runs else ():
        final = _final_json(str(ckpt), study_dir)
        n = (read_json(final, None) or {}).get("num_test") if final is not None else None
        if n:
            sizes.append(int(n))
    if sizes:
        return min(sizes), "final.json"
    col = lambda k: pd.to_numeric(runs[k], errors="coerce").dropna() if k in runs else pd.Series(dtype=float)
    subset = col("data.test_subset")
    subset = subset[subset > 0]
    if "data.name" in runs and (runs["data.name"] == "synthetic").all() and len(col("data.synthetic_test")):
        n = int(col("data.synthetic_test").min())
        return (min(n, int(subset.min())) if len(subset) else n), "data.synthetic_test"
    if len(subset):
        return int(subset.min()), "data.test_subset"
    return None, ""


def _final_json(recorded: str, study_dir: str | Path) -> Path | None:
    """The ``final.json`` beside a row's checkpoint (for a URI: fetched alone, not the checkpoint)."""
    if is_uri(recorded):
        return fetch_for_study(sibling(recorded, FINAL_JSON), study_dir, missing_ok=True)
    return checkpoint_file(checkpoint_path(recorded, study_dir)).parent / FINAL_JSON


#: A study's kept weights (:mod:`analysis.weights`): ``<study>/weights/<arm>_seed<seed>.pt``, listed in its index.
WEIGHTS, INDEX = "weights", "index.csv"


def weights_file(study_dir: str | Path, arm: str, seed: int) -> Path:
    return Path(study_dir) / WEIGHTS / f"{arm}_seed{int(seed)}.pt"


def keeps_weights(study_dir: str | Path) -> bool:
    """Whether the study keeps weights (its ``weights/index.csv`` exists)."""
    return (Path(study_dir) / WEIGHTS / INDEX).is_file()


def best_checkpoint(results: str | Path, study: str, *, preset: str | None = None,
                    experiment: str | None = None, recipe: str | None = None) -> tuple[str, dict]:
    """The checkpoint of the completed SE trial with the lowest *validation* top-1 error
    (``best_val_top1_err``), of one recipe (:func:`select_recipe`), resolved against the study folder;
    where the study keeps weights, the best of the runs it keeps, read from them.

    The test set is never used to choose: a minimum over test evaluations is optimistically biased,
    and ``analyze --best`` then measures the chosen run on that same test set. A table without
    validation errors is refused rather than ranked by test error."""
    runs, _ = load_recipe(results, study, preset=preset, experiment=experiment, recipe=recipe)
    ok = completed(runs)
    if "se.stages" in ok.columns:
        ok = ok[ok["se.stages"].astype(str) != "none"]
    if "checkpoint" in ok.columns:
        ok = ok[ok["checkpoint"].notna()]
    if ok.empty:
        raise ReportInputError(f"study {study!r} has no completed SE trial with a checkpoint")
    val = pd.to_numeric(ok["best_val_top1_err"], errors="coerce") if "best_val_top1_err" in ok else None
    if val is None or val.isna().all():
        raise ReportInputError(f"study {study!r} records no validation error (best_val_top1_err), and the "
                               "best run is chosen on validation, never on test: re-run it with "
                               "data.val_fraction > 0")
    study_dir = study_paths(results, study).dir
    ok = ok.assign(_val=val).dropna(subset=["_val"])
    if keeps_weights(study_dir):  # a clone has the kept weights only: choose among them
        ok = ok[[weights_file(study_dir, a, s).is_file() for a, s in zip(ok["arm"], ok["seed"], strict=True)]]
        if ok.empty:
            raise ReportInputError(f"study {study!r} keeps weights, but of no completed SE trial with a validation error")
    row = ok.sort_values("_val", kind="stable").iloc[0]
    path = (weights_file(study_dir, row["arm"], row["seed"]) if keeps_weights(study_dir)
            else checkpoint_path(str(row["checkpoint"]), study_dir))
    return str(path), row.drop(labels="_val").to_dict()
