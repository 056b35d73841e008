"""``<results>/<study>/study.json``: what a study is, how each of its launches was started, and which
trials its table records. This module alone reads and writes the file; every change goes through
:func:`_write`, so each part below keeps what the others wrote.

- The top level is the experiment most recently started or resumed (its arms, axis, preset, seeds,
  base config, recipe and code commit), and ``experiments`` keeps every experiment of the study by
  name (a smoke and a quick sweep of one study are two experiments with their own seeds and recipe):
  :func:`record_launch`, by the sweep.
- ``sequential`` keeps a sequential sweep's declared design per preset: :func:`declare_design`.
- ``recorded`` lists the trials the study's ``runs.parquet`` holds, so a damaged table can say which
  rows it lost: :func:`record_table`, by collect.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import UserError
from .layout import StudyPaths, read_json, write_json

#: Keys of study.json that no launch's meta sets: kept as they are when a launch is written.
_KEPT = ("recorded", "sequential")


def read_study(paths: StudyPaths, strict: bool = False) -> Any:
    """study.json as a dict; {} when it is missing. An unreadable file is {} too, unless ``strict``
    (a report, which must not read past a broken file): then its ``ValueError`` is raised."""
    if strict:
        return json.loads(paths.study_json.read_text()) if paths.study_json.is_file() else {}
    meta = read_json(paths.study_json, {})
    return meta if isinstance(meta, dict) else {}


def _write(paths: StudyPaths, doc: Mapping[str, Any]) -> Path:
    """The one place study.json is written (atomically: :func:`senet.records.layout.write_json`)."""
    paths.dir.mkdir(parents=True, exist_ok=True)
    return write_json(paths.study_json, doc)


def record_launch(paths: StudyPaths, meta: Mapping[str, Any], launch: bool = True) -> Path:
    """Put ``meta`` (an experiment just started or resumed) at the top level and, with ``launch``,
    under ``experiments`` by its name; ``launch=False``: a sweep that trained nothing (every trial
    was recorded) updates the top level alone."""
    old = read_study(paths)
    experiments = dict(old.get("experiments") or {})
    kept = {k: old[k] for k in _KEPT if k in old}
    meta = {k: v for k, v in meta.items() if k not in ("experiments", *_KEPT)}
    if launch:
        experiments[meta.get("experiment") or f"{meta.get('name')}-{meta.get('preset')}"] = meta
    return _write(paths, {**meta, "experiments": experiments, **kept})


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
    _write(paths, {**meta, "sequential": declared})
    return note


def record_table(paths: StudyPaths, recorded: list[dict]) -> Path:
    """Set ``recorded``, the trials the study's table holds
    (:func:`senet.records.trial_index.manifest`)."""
    return _write(paths, {**read_study(paths), "recorded": recorded})


def read_recorded(paths: StudyPaths) -> list[dict] | None:
    """``recorded`` as the last collect wrote it, or None when study.json holds no such list."""
    rows = read_study(paths).get("recorded")
    return rows if isinstance(rows, list) else None


def experiment_meta(paths: StudyPaths, experiment: str) -> dict | None:
    """The meta ``experiment`` was started with, as study.json keeps it."""
    got = (read_study(paths).get("experiments") or {}).get(experiment)
    return got if isinstance(got, dict) and got else None
