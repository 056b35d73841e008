"""Trial folders -> ``<results>/<study>/runs.parquet`` and ``runs.csv``, without starting Ray.

One row per trial: the study, arm, seed and the whole flat config (``se.gate``, ``optim.lr``, ...),
the status (:data:`STATUSES`), the final-epoch test errors (what the paper's tables report) and,
named as such, the test errors at the best validation epoch, params, FLOPs, the SE blocks'
effective hidden widths, epochs run, wall and training time, the node, the provenance (git commit,
torch version, device, precision) and the trial's final checkpoint (``checkpoint``: relative to the
study folder, ``ray/<experiment>/<trial>/checkpoint_<k>/checkpoint.pt``; absolute only where
``--storage`` is a folder outside it, and in rows older tables kept; the full URI where
``--storage`` is an object store, :mod:`ablations.tune_storage`). Each row also carries its
``preset``, ``experiment``, ``recipe`` (:mod:`senet.records.recipe`) and the sizes of its
evaluation splits (``num_test``, ``num_val``), so experiments of different recipes stay apart.

A row's numbers come from the trial's final report in Tune's ``result.json`` (which, unlike the
run's ``final.json``, names the node that ran it), or from the ``final.json`` of its newest
checkpoint where a killed driver lost those lines. Collecting merges, it never replaces: the rows
the table records (a fresh clone has no Ray folders) plus the rows of the trial folders, one per
trial identity ``(config_id, seed)`` (:func:`senet.records.trial_index.merge`). Both files are
written atomically; an unreadable ``runs.parquet`` is rebuilt from its committed copy in git and
the trial folders, and ``study.json``'s ``recorded`` list says whether rows were lost.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from senet import config
from senet.errors import UserValueError
from senet.metrics import METRIC_COLUMNS
from senet.records import trial_index
from senet.records.layout import (
    CHECKPOINT,
    CONFIG_JSON,
    FINAL_JSON,
    StudyPaths,
    finite_or_none,
    read_json,
    read_jsonl,
    study_paths,
    write_atomic,
)
from senet.records.recipe import PRECISION_COLUMN, arm_keys, recipe_hash
from senet.records.study_file import read_recorded, read_study, record_launch, record_table

from .checkpoint_retention import newest_state_file
from .trial import params_flat
from .tune_storage import Storage, StoreCopy, open_storage, refresh

#: A row's status: ``completed`` and ``diverged`` (the loss became NaN: a result, not a failure) are
#: finished (:data:`senet.records.trial_index.FINISHED`); ``error``: it crashed with no retries left;
#: ``running``: unfinished in an experiment whose sweep is still going; ``interrupted``: unfinished
#: in an experiment whose sweep has stopped (killed, Ctrl-C): a new sweep trains it again, or
#: ``--resume`` continues it from its checkpoint.
STATUSES = ("completed", "diverged", "error", "running", "interrupted")
#: Tune's states that end a trial without a final result.
_FAILED = ("ERROR", "TERMINATED")
#: Tune rewrites an experiment's state file every few seconds while its driver lives: an experiment
#: whose newest file is older than this has no sweep running it.
LIVE_S = 300.0

#: The columns the report code reads, in this order; the flat config keys follow ``seed``.
LEAD = ["study", "arm", "trial_id", "seed"]
#: Columns of fit's result that a row takes from elsewhere or with a fallback (a row's own
#: ``status`` and ``checkpoint``; ``epochs_run`` and the times from Tune's result where a trial
#: recorded none), and those a table leaves out (the config columns say the dataset and its size).
_OWN_SOURCE = ("status", "checkpoint", "epochs_run", "wall_time_s", "train_time_s", "num_test")
_LEFT_OUT = ("dataset", "num_train")
#: Copied as they are from the trial's final result (:class:`senet.metrics.FitResult`).
RESULT_COLUMNS = tuple(k for k in METRIC_COLUMNS if k not in (*_OWN_SOURCE, *_LEFT_OUT))
#: Copied from the final result's provenance; a later one goes after the columns of tables already
#: published, which keep their order.
PROVENANCE_COLUMNS = ("git_commit", "git_dirty", "torch_version", "device")
LATER_PROVENANCE_COLUMNS = ("bf16_kernels",)  # how bf16 convolutions ran: native, or fp32 ones on bf16 values
METRICS = ["status", *RESULT_COLUMNS, "epochs_run", "wall_time_s", "train_time_s", "node", "node_id",
           *PROVENANCE_COLUMNS, PRECISION_COLUMN, "checkpoint", "preset", "experiment", "recipe",
           "config_id", "reused_from", "num_test", "num_val", "num_failures", *LATER_PROVENANCE_COLUMNS]


def _trial_states(exp: Path) -> dict[str, dict]:
    """Tune's view of each trial (status, failures) from the snapshot that --resume would read."""
    state = newest_state_file(exp)
    data = read_json(state, {}) if state is not None else {}
    out = {}
    for entry in data.get("trial_data", []) if isinstance(data, dict) else []:
        try:
            meta = json.loads(entry[0])
            run = json.loads(entry[1]) if len(entry) > 1 else {}
        except (TypeError, json.JSONDecodeError):
            continue
        out[meta.get("trial_id")] = {"status": meta.get("status"), "dir": meta.get("relative_logdir"),
                                     "num_failures": run.get("num_failures", 0)}
    return out


def _is_live(exp: Path) -> bool:
    """Whether a sweep is still writing ``exp``: its state file (else its trials' files) is recent."""
    files = list(exp.glob("experiment_state-*.json")) or [*exp.glob("*/result.json"), *exp.glob("*/params.json")]
    newest = max((f.stat().st_mtime for f in files if f.exists()), default=0.0)
    return time.time() - newest < LIVE_S


def _checkpoint(trial_dir: Path, study: StudyPaths) -> str | None:
    """The trial's newest checkpoint file, relative to the study folder where it lies inside it."""
    ckpts = sorted(trial_dir.glob(f"checkpoint_*/{CHECKPOINT}"))
    return _in_study(str(ckpts[-1].absolute()), study) if ckpts else None


def _in_study(path, study: StudyPaths):
    """``path`` relative to the study folder where it is a local path inside it (so a table holds no
    machine's paths); any other value as it is (a URI, a folder outside the study, missing)."""
    if not isinstance(path, str) or "://" in path or not Path(path).is_absolute():
        return path
    try:
        return Path(path).relative_to(study.dir.absolute()).as_posix()
    except ValueError:  # --storage outside the study folder
        return path


def _recorded_checkpoint(path, origin: str | None, study: StudyPaths):
    """A row's checkpoint as a table records it now: relative to this study's folder; a copy's
    (``origin``: the study it was trained in) as ``../<origin>/...``, which also mends copies made
    when they kept it relative to their origin's folder, or absolute."""
    if origin is None:
        return _in_study(path, study)
    return trial_index.rebase_checkpoint(_in_study(path, study_paths(study.dir.parent, origin)), origin)


def _final_from_checkpoint(trial_dir: Path) -> list[dict]:
    """The final row from the final.json and config.json of the trial's newest checkpoint, for a
    finished trial whose last result.json lines were lost (a driver killed before Tune copied them)."""
    ckpts = sorted(trial_dir.glob(f"checkpoint_*/{FINAL_JSON}"))
    if not ckpts:
        return []
    final = read_json(ckpts[-1])
    cfg = read_json(ckpts[-1].parent / CONFIG_JSON)
    if not isinstance(final, dict) or not isinstance(cfg, dict):
        return []
    try:
        resolved = config.flatten(config.from_dict(cfg))
    except ValueError:
        return []
    return [{**final, "final": True, "epoch": final.get("epochs_run"), "resolved": resolved}]


def _recipe(flat: dict[str, Any], params: dict[str, Any]) -> str:
    """The hash that tells recipes apart, computed as ``senet report`` does from study.json: without
    the keys any arm sets (the axis, and e.g. the reduction study baseline's se.stages), the seed and
    the nuisance keys."""
    axis = arm_keys((params.get("meta") or {}).get("axis"), (params.get("arms") or {}).values())
    return recipe_hash(flat, axis, params.get("nuisance_keys") or ())


def _unfinished_status(tune_status: str | None, live: bool) -> str:
    if tune_status in _FAILED:
        return "error"
    return "running" if live else "interrupted"


def trial_rows(exp: Path, study: StudyPaths, live: bool | None = None,
               copy: StoreCopy | None = None) -> Iterator[dict[str, Any]]:
    """One row per trial folder of one Tune experiment. ``live``: whether a sweep is still running
    the experiment (default: judged from how recently its files were written). ``copy``: ``exp`` is
    in the local copy of an object store, whose checkpoints are named by their URIs."""
    states = _trial_states(exp)
    live = _is_live(exp) if live is None else live
    for params_file in sorted(exp.glob("*/params.json")):
        tdir = params_file.parent
        params = read_json(params_file)
        if not isinstance(params, dict) or "arms" not in params or "base" not in params:
            continue  # not a senet sweep trial
        results = read_jsonl(tdir / "result.json")
        trial_id = next((r["trial_id"] for r in results if "trial_id" in r), None)
        if trial_id is None:
            trial_id = next((t for t, s in states.items() if s["dir"] == tdir.name), tdir.name)
        finals = [r for r in results if r.get("final")] or _final_from_checkpoint(tdir)
        last = finals[-1] if finals else (results[-1] if results else {})
        state = states.get(trial_id, {})
        if finals:  # the config the trial recorded as resolved: read as it is, never built again
            status = last.get("status") or "completed"
            flat = dict(last.get("resolved") or {})
        else:
            status = _unfinished_status(state.get("status"), live)
            flat = {}
        if not flat:  # no resolved config recorded: build it once from the trial's parameters
            try:
                flat = config.flatten(config.from_flat(params_flat(params)))
            except ValueError:
                flat = params_flat(params)
        prov = last.get("provenance") or {}
        # the precision `auto` resolved to; a trial that failed before recording it would have run
        # in the one its identity was planned with
        ran = {**flat, PRECISION_COLUMN: prov.get("precision") or trial_index.flat_precision(flat)}
        row: dict[str, Any] = {
            "study": params.get("study"), "arm": params.get("arm"), "trial_id": trial_id,
            "seed": int(params.get("seed", flat.get("seed", 0))),
        }
        row.update({k: v for k, v in flat.items() if k != "seed"})
        row["status"] = status
        row.update({k: last.get(k) for k in RESULT_COLUMNS})
        row.update({
            "epochs_run": last.get("epochs_run", last.get("epoch")),
            "wall_time_s": last.get("wall_time_s", last.get("time_total_s")),
            "train_time_s": last.get("train_time_s"),
            "node": last.get("node", last.get("hostname")), "node_id": last.get("node_id"),
        })
        row.update({k: prov.get(k) for k in (*PROVENANCE_COLUMNS, *LATER_PROVENANCE_COLUMNS)})
        row.update({
            PRECISION_COLUMN: ran[PRECISION_COLUMN],
            "checkpoint": copy.checkpoint(tdir) if copy is not None else _checkpoint(tdir, study),
            "preset": params.get("preset"), "experiment": exp.name,
            "recipe": _recipe(ran, params), "config_id": trial_index.config_id(ran), "reused_from": None,
            "num_test": last.get("num_test"), "num_val": last.get("num_val"),
            "num_failures": state.get("num_failures", 0),
        })
        yield {k: finite_or_none(v) for k, v in row.items()}


def experiments(storage: Path) -> list[Path]:
    return sorted({p.parent.parent for p in storage.glob("*/*/params.json")})


def _order(df: pd.DataFrame, arm_order: list[str]) -> pd.DataFrame:
    flat_keys = [k for k in config.keys() if k != "seed"]
    extra = [c for c in df.columns if c not in LEAD + flat_keys + METRICS]
    cols = [c for c in LEAD + flat_keys + METRICS + extra if c in df.columns]
    df = df[cols].copy()
    rank = {a: i for i, a in enumerate(arm_order)}
    df["_rank"] = df["arm"].map(lambda a: rank.get(a, len(rank)))
    by = [c for c in ("preset",) if c in df] + ["_rank", "seed"] + [c for c in ("experiment", "trial_id") if c in df]
    df = df.sort_values(by, kind="stable", na_position="last").drop(columns="_rank")
    return df.reset_index(drop=True)


def save_table(paths: StudyPaths, df: pd.DataFrame) -> pd.DataFrame:
    """Write ``runs.parquet`` and ``runs.csv`` in the study's arm order, and the list of the trials
    the table records into ``study.json`` (``recorded``); return the table as written."""
    df = _order(df, [a["arm"] for a in read_study(paths).get("arms", [])])
    paths.dir.mkdir(parents=True, exist_ok=True)
    write_atomic(paths.runs_parquet, df.to_parquet(index=False))
    write_atomic(paths.runs_csv, df.to_csv(index=False))
    record_table(paths, trial_index.manifest(df))
    return df


def _recorded_rows(parquet: Path) -> tuple[pd.DataFrame | None, str | None]:
    """(the rows the table records, a note when it was unreadable). An unreadable table is moved
    aside to ``runs.parquet.unreadable`` (never destroyed) and replaced by its committed copy in git
    where there is one; the trial folders are merged into whatever is left."""
    old, why = trial_index.read_table(parquet)
    if why is None:
        return old, None
    kept = parquet.with_name(parquet.name + ".unreadable")
    os.replace(parquet, kept)
    old = trial_index.committed_copy(parquet)
    source = "the trial folders" + (" and the copy committed in git (HEAD)" if old is not None else "")
    return old, f"senet: note: {parquet} could not be read ({why}; kept as {kept.name}); rebuilding it from {source}"


def _lost_note(paths: StudyPaths, table: pd.DataFrame) -> str:
    listed = read_recorded(paths)
    if listed is None:
        return ("; no list of the trials it recorded survives (study.json), so whether rows of trials "
                "whose folders are gone were lost cannot be told")
    lost = trial_index.lost_rows(listed, table)
    if not lost:
        return f"; all {len(listed)} trials it recorded are recovered"
    names = ", ".join(f"{r.get('arm')} seed {r.get('seed')}" for r in lost[:10])
    return (f"; {len(lost)} of the {len(listed)} trials it recorded are lost (no trial folder, "
            f"no committed copy): {names}" + (" ..." if len(lost) > 10 else ""))


def _trial_rows_of(study: str, paths: StudyPaths, where: Storage, ended: Iterable[str]) -> tuple[list[dict], Path]:
    """The rows of every trial folder of ``study`` in its storage, and the storage's local root."""
    copy = refresh(where, study)
    root = where.local
    if not paths.dir.is_dir() and not root.is_dir():
        place = paths.dir if where.remote is None else f"{paths.dir} or {where}"
        raise UserValueError(f"no results for study {study!r} in {place}; run `senet sweep {study}` first")
    ended = set(ended)
    # a --storage shared by several studies holds their experiments side by side
    rows = [r for exp in experiments(root)
            for r in trial_rows(exp, paths, live=False if exp.name in ended else None, copy=copy)
            if r["study"] in (study, None)]
    return rows, root


def _merged(old: pd.DataFrame | None, rows: list[dict], extra: Iterable[dict], paths: StudyPaths) -> pd.DataFrame:
    extra = list(extra)  # copied rows count as recorded ones, as if written before the launch
    if extra:
        old = trial_index.merge(old, pd.DataFrame(extra))
    table = trial_index.merge(old, pd.DataFrame(rows))
    if "checkpoint" in table:  # rows recorded before checkpoints were stored relative
        table["checkpoint"] = [_recorded_checkpoint(c, trial_index.origin_study(o), paths)
                               for c, o in zip(table["checkpoint"], table["reused_from"], strict=True)]
    return table


def known_table(study: str, results: str | Path = "results", storage: str | Path | Storage | None = None
                ) -> pd.DataFrame | None:
    """What the study's record holds now, read only: the rows its table records merged with those
    of its trial folders that the table lacks (a launch whose driver was killed before it collected
    them); None when there is neither. A sweep plans from this and writes the table once, when its
    launch ends (:func:`collect`); nothing is written here."""
    paths = study_paths(Path(results).expanduser().absolute(), study)
    where = storage if isinstance(storage, Storage) else open_storage(storage, paths)
    try:
        rows, _ = _trial_rows_of(study, paths, where, ())
    except UserValueError:
        return None
    old, why = trial_index.read_table(paths.runs_parquet)
    if why is not None:  # unreadable: what git holds (collect moves the damaged file aside and says so)
        old = trial_index.committed_copy(paths.runs_parquet)
    table = _merged(old, rows, (), paths)
    return None if table.empty else table


@dataclass(frozen=True)
class StudyRows:
    """A study's rows as :func:`known_table` reads them each time it is called: what a sequential
    sweep's seed searcher knows (picklable, so a searcher restored after a SIGKILL reads them again)."""

    study: str
    results: Path
    storage: Storage

    @classmethod
    def of(cls, p) -> StudyRows:
        """The rows of a sweep's plan (:class:`ablations.plan.Plan`)."""
        return cls(p.study.name, p.paths.results, p.tune_storage)

    def __call__(self) -> pd.DataFrame | None:
        return known_table(self.study, self.results, self.storage)


def collect(study: str, results: str | Path = "results", storage: str | Path | Storage | None = None,
            out=None, ended: Iterable[str] = (), extra: Iterable[dict] = ()) -> pd.DataFrame:
    """Merge the rows ``runs.parquet`` records with the trials of ``study`` in its storage (a
    folder, or an object store's URI) into ``runs.parquet`` / ``runs.csv`` (see the module's
    docstring); return the table.

    ``ended``: experiments whose sweep is known to have stopped (the sweep collecting after its
    launch), so their unfinished trials are ``interrupted``. ``extra``: rows to record beside them
    (a sweep's rows copied from other studies' tables). Notes (a rebuilt table, and whether it
    lost rows) go to ``out`` (default stderr).
    """
    out = out or sys.stderr
    paths = study_paths(Path(results).expanduser().absolute(), study)
    where = storage if isinstance(storage, Storage) else open_storage(storage, paths)
    rows, root = _trial_rows_of(study, paths, where, ended)
    old, note = _recorded_rows(paths.runs_parquet)
    table = _merged(old, rows, extra, paths)
    if note:
        print(note + _lost_note(paths, table), file=out, flush=True)
    if table.empty:
        raise UserValueError(f"no trials found for study {study!r} under {where}")
    if not read_study(paths).get("arms"):
        meta = _meta_from_trials(root)
        if meta:
            record_launch(paths, meta)
    return save_table(paths, table)


def _meta_from_trials(storage: Path) -> dict:
    for params_file in sorted(storage.glob("*/*/params.json")):
        params = read_json(params_file)
        if isinstance(params, dict) and params.get("meta"):
            return params["meta"]
    return {}
