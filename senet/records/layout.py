"""Where results live on disk and how they are written and read: the one module for it.

A run folder (``senet train --out``, or one sweep trial) holds ``config.json``, ``metrics.jsonl``
(one strict-JSON line per epoch), ``final.json`` and ``checkpoint.pt``. A study folder holds::

    <results>/<study>/study.json              the study's arms, axis and every launch's meta
    <results>/<study>/ray/<experiment>/       Ray Tune's trial folders (not in git)
    <results>/<study>/ray/.remote/            the local copy of a study stored at an s3:// or gs:// URI
    <results>/<study>/runs.parquet, runs.csv  one row per trial: what git keeps
    <results>/<study>/report.md, table.tex    what ``senet report`` writes

Writers are atomic (a temporary file in the same folder, then :func:`os.replace`), so a reader never
sees half a file and a killed writer leaves the previous version. JSON is strict: non-finite floats
are written as ``null`` so any JSON reader takes the files. JSONL readers skip a last line cut short
by a killed writer. This module imports neither torch nor pandas.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The files of one run folder.
CONFIG_JSON = "config.json"
METRICS_JSONL = "metrics.jsonl"
FINAL_JSON = "final.json"
CHECKPOINT = "checkpoint.pt"
RUN_FILES = (CONFIG_JSON, METRICS_JSONL, FINAL_JSON)


@dataclass(frozen=True)
class StudyPaths:
    """The files of one study under a results folder."""

    results: Path
    study: str

    @property
    def dir(self) -> Path:
        return Path(self.results) / self.study

    @property
    def study_json(self) -> Path:
        return self.dir / "study.json"

    @property
    def runs_parquet(self) -> Path:
        return self.dir / "runs.parquet"

    @property
    def runs_csv(self) -> Path:
        return self.dir / "runs.csv"

    @property
    def ray(self) -> Path:
        """Ray Tune's storage for the study unless ``--storage`` names another."""
        return self.dir / "ray"

    @property
    def report_md(self) -> Path:
        return self.dir / "report.md"


def study_paths(results: str | Path, study: str) -> StudyPaths:
    return StudyPaths(Path(results), study)


def finite_or_none(v: Any) -> Any:
    """``v``, or None where it is a float that is NaN or infinite (JSON and parquet null)."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def nan_to_null(d: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``d`` whose non-finite float values are None."""
    return {k: finite_or_none(v) for k, v in d.items()}


def json_line(d: Mapping[str, Any]) -> str:
    """One strict-JSON line (no newline) of a flat mapping."""
    return json.dumps(nan_to_null(d))


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and :func:`os.replace`."""
    path = Path(path)
    tmp = _tmp_name(path)
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data)
    os.replace(tmp, path)
    return path


def write_json(path: str | Path, obj: Any, *, indent: int | None = 1) -> Path:
    """Write ``obj`` as strict JSON (non-finite floats as null, at the top level of mappings) atomically."""
    if isinstance(obj, Mapping):
        obj = nan_to_null(obj)
    return write_atomic(path, json.dumps(obj, indent=indent) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Replace ``path`` with one strict-JSON line per row, atomically."""
    return write_atomic(path, "".join(json_line(r) + "\n" for r in rows))


def append_jsonl(path: str | Path, row: Mapping[str, Any]) -> None:
    """Append one strict-JSON line to ``path``."""
    with open(path, "a") as f:
        f.write(json_line(row) + "\n")


def parse_jsonl(text: str) -> list[dict]:
    """The JSON objects of ``text``, one per line; blank lines and a line cut short are skipped."""
    rows: list[dict] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a killed writer
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def read_jsonl(path: str | Path) -> list[dict]:
    """:func:`parse_jsonl` of the file ``path``; a missing file is empty."""
    path = Path(path)
    return parse_jsonl(path.read_text()) if path.exists() else []


def read_json(path: str | Path, default: Any = None) -> Any:
    """The JSON in ``path``, or ``default`` when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default
