"""The index of recorded trials: every study's ``runs.parquet`` under one results folder, keyed by
what a trial *is*, so that each distinct (configuration, seed) is trained once and every study that
needs it reads it.

A trial's identity is ``(config_id, seed)``: ``config_id`` is :func:`senet.records.recipe.recipe_hash`
of its whole flat config with no axis or nuisance key left out (only the seed and the bookkeeping keys
that cannot change a result). The ``reduction`` study's r = 16 arm and the ``gate`` study's sigmoid
arm of one preset are the same configuration, so they share a ``config_id``: the sweep that comes
second copies the row (relabelled with its own study and arm, and ``reused_from`` naming the
``<study>/<experiment>`` that trained it) instead of training it again.

The committed ``runs.parquet`` files are the record: Ray's trial folders are not in git, so a fresh
clone has the tables alone, and a sweep or a collect there must keep every row they hold. Importing
this module loads pandas, not torch: the config's defaults are read on first use.
"""
from __future__ import annotations

import functools
import io
import os
import posixpath
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .layout import StudyPaths, study_paths
from .recipe import PRECISION_COLUMN, recipe_hash

if TYPE_CHECKING:
    from ..config import Config

#: Trial statuses that are results: a diverged arm (the loss became NaN) is an answer, not a failure.
FINISHED = ("completed", "diverged")
#: Columns the index adds to a runs.parquet row.
ID_COLUMNS = ("config_id", "reused_from")


@functools.cache
def _defaults() -> dict[str, Any]:
    """The default config, flat (read once: building it loads the models, and so torch)."""
    from .. import config

    return config.flatten(config.Config())


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def config_id(flat: Mapping[str, Any]) -> str:
    """The identity of a trial's configuration (10 hex digits), from a flat config or a table row.

    A key a row lacks (a table written before the key existed) counts as its default, so adding a
    config key with a default that keeps today's behaviour does not orphan the committed rows.
    """
    defaults = _defaults()
    full = dict(defaults)
    full.update({k: v for k, v in flat.items() if k in defaults and not _missing(v)})
    if not _missing(flat.get(PRECISION_COLUMN)):  # what `run.precision auto` resolved to
        full[PRECISION_COLUMN] = flat[PRECISION_COLUMN]
    return recipe_hash(full)


def trial_precision(cfg: Config) -> str:
    """The precision a trial of ``cfg`` trains in: ``run.precision``, with ``auto`` resolved for the
    trial's device type as this machine sees it (bf16 on a GPU or a CPU with native bf16, else fp32).
    It is part of the trial's identity, so a trial recorded in bf16 is not taken for an fp32 one.
    Nothing is opened here: the driver of a GPU cluster may have no GPU of its own."""
    return planned_precision(cfg.run.precision, cfg.run.device)


def flat_precision(flat: Mapping[str, Any]) -> str:
    """:func:`trial_precision` of a flat config (``run.precision`` and ``run.device`` as a trial
    resolved them), without building the config again."""
    defaults = _defaults()
    return planned_precision(str(flat.get("run.precision", defaults["run.precision"])),
                             str(flat.get("run.device", defaults["run.device"])))


def planned_precision(precision: str, device: str) -> str:
    """``precision``, or for ``auto`` what a trial on ``device`` (a config's ``run.device`` name)
    would train in on this machine: the name alone, unlike :func:`senet.runtime.resolve_precision`,
    which resolves a run's precision and memory format for a device it has opened."""
    if precision != "auto":
        return precision
    import torch

    from senet.runtime import default_precision

    gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return default_precision(torch.device("cuda" if gpu else "cpu"))


def key_of(row: Mapping[str, Any]) -> tuple[str, int]:
    return str(row["config_id"]), int(row["seed"])


def with_ids(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``config_id`` recomputed from its config columns (the columns are the record; a
    stored id could only disagree with them) and a ``reused_from`` column."""
    df = df.copy()
    df["config_id"] = [config_id(r) for r in df.to_dict("records")] if len(df) else pd.Series(dtype=object)
    if "reused_from" not in df:
        df["reused_from"] = None
    return df


def launch_index(experiment: Any) -> int:
    """1 for a study's first launch ``<study>-<preset>``, n for ``<study>-<preset>-<n>``."""
    m = re.search(r"-(\d+)$", str(experiment or ""))
    return int(m.group(1)) if m else 1


def merge(committed: pd.DataFrame | None, on_disk: pd.DataFrame | None) -> pd.DataFrame:
    """One row per ``(config_id, seed)``: the rows a table already records plus the rows of the Ray
    trial folders on disk.

    A finished row beats an unfinished one (a trial that completed since the last collect, or a
    retrained copy of an interrupted one); among finished rows the recorded one is kept (its Ray
    folder may be gone, and a recorded result never changes under a report); among unfinished rows
    the freshest state is kept (on disk, the latest launch).
    """
    parts = []
    for df, recorded in ((committed, True), (on_disk, False)):
        if df is not None and not df.empty:
            parts.append(with_ids(df).assign(_recorded=recorded))
    if not parts:
        return pd.DataFrame()
    both = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    done = both["status"].isin(FINISHED)
    launch = both["experiment"].map(launch_index) if "experiment" in both else pd.Series(1, index=both.index)
    both["_p0"] = (~done).astype(int)
    both["_p1"] = (~both["_recorded"]).astype(int).where(done, both["_recorded"].astype(int))
    both["_p2"] = launch.where(done, -launch)
    both["_seed"] = both["seed"].astype(int)
    both = both.sort_values(["_p0", "_p1", "_p2"], kind="stable")
    both = both.drop_duplicates(["config_id", "_seed"], keep="first").sort_index(kind="stable")
    return both.drop(columns=["_recorded", "_p0", "_p1", "_p2", "_seed"]).reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# Reading what is recorded
# --------------------------------------------------------------------------------------------------
def _why(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def rebase_checkpoint(checkpoint, origin_study: str):
    """A copied row's ``checkpoint`` relative to the study folder it is copied into: a path relative
    to the folder of ``origin_study`` (where it was trained) becomes ``../<origin_study>/...``; a URI,
    an absolute path or a missing value stays as it is."""
    if not isinstance(checkpoint, str) or not checkpoint or "://" in checkpoint or \
            posixpath.isabs(checkpoint) or os.path.isabs(checkpoint):
        return checkpoint
    return posixpath.normpath(posixpath.join("..", origin_study, checkpoint))


def read_table(path: Path) -> tuple[pd.DataFrame | None, str | None]:
    """(the table, None), (None, None) when absent, or (None, why) when it cannot be read."""
    if not path.exists():
        return None, None
    try:
        return pd.read_parquet(path), None
    except Exception as e:  # noqa: BLE001 - any damage (truncated, not Parquet, bad schema) is one answer
        return None, _why(e)


def committed_copy(path: Path) -> pd.DataFrame | None:
    """The version of ``path`` in the git commit checked out (HEAD), when it is tracked there."""
    try:
        r = subprocess.run(["git", "-C", str(path.parent), "show", f"HEAD:./{path.name}"],
                           capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if r.returncode != 0 or not r.stdout:
        return None
    try:
        return pd.read_parquet(io.BytesIO(r.stdout))
    except Exception:  # noqa: BLE001 - a damaged commit is no better than none
        return None


def study_folders(results: str | Path) -> list[StudyPaths]:
    """The studies of a results folder: one per folder in it."""
    root = Path(results)
    if not root.is_dir():
        return []
    return [study_paths(root, d.name) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]


def recorded(results: Path, out=None, known: Mapping[str, pd.DataFrame | None] | None = None
             ) -> dict[tuple[str, int], list[dict]]:
    """Every finished row of every ``<results>/*/runs.parquet`` by ``(config_id, seed)``: rows trained
    in their own study first (a copy's ``reused_from`` already names its origin), then by study.
    ``known``: a study's rows as a sweep read them (its table and the trial folders the table lacks),
    used in place of its table."""
    found: dict[tuple[str, int], list[dict]] = {}
    known = known or {}
    for study in study_folders(results):
        df, why = (known[study.study], None) if study.study in known else read_table(study.runs_parquet)
        if df is None:
            if why and out is not None:
                print(f"senet: note: {study.runs_parquet} could not be read ({why}); its trials are not reused "
                      f"(`senet collect {study.study}` rebuilds it)", file=out, flush=True)
            continue
        if df.empty or "status" not in df or "seed" not in df:
            continue
        df = with_ids(df[df["status"].isin(FINISHED)])
        for row in df.to_dict("records"):
            row["_table"] = study.study  # the folder, whatever a row's study column says
            if _missing(row.get("study")):
                row["study"] = study.study
            found.setdefault(key_of(row), []).append(row)
    for rows in found.values():
        rows.sort(key=lambda r: (not _missing(r.get("reused_from")), str(r.get("study"))))
    return found


def origin_study(reused_from: Any) -> str | None:
    """The study a copied row was trained in (its ``reused_from`` is ``<study>/<experiment>``), None
    for a row trained for its own study."""
    return None if _missing(reused_from) else str(reused_from).split("/")[0]


def origin(row: Mapping[str, Any]) -> str:
    """Where a row's trial was trained: ``<study>/<experiment>`` (a copy keeps its first origin)."""
    if not _missing(row.get("reused_from")):
        return str(row["reused_from"])
    return f"{row.get('study')}/{row.get('experiment')}"


# --------------------------------------------------------------------------------------------------
# The manifest: which trials a table recorded, kept in study.json, so a damaged table can say what it lost
# --------------------------------------------------------------------------------------------------
def manifest(df: pd.DataFrame) -> list[dict]:
    cols = [c for c in ("config_id", "seed", "arm", "status", "experiment") if c in df]
    rows = df[cols].to_dict("records")
    return sorted(({k: (int(v) if k == "seed" else v) for k, v in r.items()} for r in rows),
                  key=lambda r: (str(r.get("arm")), r["seed"], r["config_id"]))


def lost_rows(recorded_rows: Iterable[Mapping[str, Any]], now: pd.DataFrame) -> list[dict]:
    """The manifest's rows that ``now`` no longer holds (by ``(config_id, seed)``)."""
    have = {key_of(r) for r in now.to_dict("records")} if not now.empty else set()
    return [dict(r) for r in recorded_rows if (str(r["config_id"]), int(r["seed"])) not in have]

