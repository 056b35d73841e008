"""``<results>/<study>/study.json``: what a study is and how each of its launches was started.

The top level is the experiment most recently started or resumed (its arms, axis, preset, seeds,
base config, recipe and code commit); ``experiments`` keeps every experiment of the study by name
(a smoke and a quick sweep of one study are two experiments with their own seeds and recipe);
``recorded`` lists the trials the study's ``runs.parquet`` holds, so a damaged table can say which
rows it lost. The sweep writes the first two, collect the third; each keeps what the other wrote.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from senet.errors import UserError
from senet.layout import StudyPaths, read_json, write_json

#: Keys of study.json that no launch's meta sets: kept as they are when a launch is written.
_KEPT = ("recorded", "sequential")


def read_study(paths: StudyPaths) -> dict:
    """study.json as a dict; {} when it is missing or unreadable."""
    meta = read_json(paths.study_json, {})
    return meta if isinstance(meta, dict) else {}


def write_study_json(paths: StudyPaths, meta: Mapping[str, Any], launch: bool = True) -> Path:
    """Put ``meta`` (an experiment just started or resumed) at the top level and, with ``launch``,
    under ``experiments`` by its name; ``launch=False``: a sweep that trained nothing (every trial
    was recorded) updates the top level alone."""
    paths.dir.mkdir(parents=True, exist_ok=True)
    old = read_study(paths)
    experiments = dict(old.get("experiments") or {})
    kept = {k: old[k] for k in _KEPT if k in old}
    meta = {k: v for k, v in meta.items() if k not in ("experiments", *_KEPT)}
    if launch:
        experiments[meta.get("experiment") or f"{meta.get('name')}-{meta.get('preset')}"] = meta
    return write_json(paths.study_json, {**meta, "experiments": experiments, **kept})


def declare_design(paths: StudyPaths, preset: str, design: Mapping[str, Any]) -> str:
    """Record a sequential sweep's design (α, δ, g, seeds before closing, cap) under ``sequential``
    for ``preset`` the first time one starts; later sweeps keep it. Only the cap may change (the
    confidence sequence stays valid when a study is extended): returns a note saying so, or ''."""
    paths.dir.mkdir(parents=True, exist_ok=True)
    meta = read_study(paths)
    declared = dict(meta.get("sequential") or {})
    old = declared.get(preset)
    new = dict(design)
    note = ""
    if isinstance(old, dict):
        changed = sorted(k for k in new if k != "max_seeds" and old.get(k) != new[k])
        if changed:
            raise UserError(f"the {preset} design of {paths.dir.name} was declared with "
                            f"{', '.join(f'{k}={old.get(k)}' for k in changed)} before its first seed and "
                            "cannot change with its results")
        if old.get("max_seeds") == new["max_seeds"]:
            return ""
        note = f"seed cap {old.get('max_seeds')} -> {new['max_seeds']} (the intervals stay valid)"
    declared[preset] = new
    write_json(paths.study_json, {**meta, "sequential": declared})
    return note


def write_recorded(paths: StudyPaths, recorded: list[dict]) -> Path:
    """Set ``recorded``, the trials the study's table holds (:func:`ablations.store.manifest`)."""
    paths.dir.mkdir(parents=True, exist_ok=True)
    return write_json(paths.study_json, {**read_study(paths), "recorded": recorded})


def read_recorded(paths: StudyPaths) -> list[dict] | None:
    """``recorded`` as the last collect wrote it, or None when study.json holds no such list."""
    rows = read_study(paths).get("recorded")
    return rows if isinstance(rows, list) else None


def experiment_meta(paths: StudyPaths, experiment: str) -> dict | None:
    """The meta ``experiment`` was started with, as study.json keeps it."""
    got = (read_study(paths).get("experiments") or {}).get(experiment)
    return got if isinstance(got, dict) and got else None


def axis_keys(axis: str, arm_overrides: Iterable[Mapping[str, Any]] = ()) -> set[str]:
    """The keys a study's arms set: its axis and every arm's overrides (the reduction study's baseline
    sets se.stages although its axis is se.reduction). The recipe hash leaves them out."""
    keys = {k.strip() for k in str(axis or "").split(",") if k.strip()}
    return keys | {k for overrides in arm_overrides for k in overrides}


def meta_axis_keys(meta: Mapping[str, Any]) -> set[str]:
    """:func:`axis_keys` of a study's meta (study.json, or a trial's ``meta`` parameter)."""
    return axis_keys(meta.get("axis", ""), (a.get("overrides", {}) for a in meta.get("arms", [])))
