"""Trial folders -> ``<results>/<study>/runs.parquet`` and ``runs.csv``, without starting Ray.

One row per trial: the study, arm, seed and the whole flat config (``se.gate``, ``optim.lr``, ...),
the status (completed | diverged | error | running), the final-epoch test errors (what the paper's
tables report) and, named as such, the test errors at the best validation epoch, params, FLOPs,
the SE blocks' effective hidden widths, epochs run, wall and training time, the node, and the
provenance (git commit, torch version, device, precision) plus the trial's final checkpoint.

Every row carries its experiment: ``preset``, ``experiment`` (the Tune experiment folder under
``<results>/<study>/ray``), ``recipe`` (:func:`senet.recipe.recipe_hash` of the trial's config
without its arm keys, seed and nuisance keys) and the sizes of its evaluation splits (``num_test``,
``num_val``). Experiments of different recipes are never merged into one: they stay rows that these
columns tell apart, and reports group by them.

Collecting merges, it never replaces: the rows the study's ``runs.parquet`` already records (the
committed table; a fresh clone has no Ray folders) plus the rows of the trial folders on disk, one
row per trial identity ``(config_id, seed)`` (:mod:`ablations.store`; a recorded finished row is kept
when both exist, and a row whose Ray folder is gone is never dropped). Rows a sweep copied from
another study (``reused_from``) live in the table alone. Collecting is idempotent and safe to
interrupt: both files are written to a temporary name and moved into place with ``os.replace``.
An unreadable ``runs.parquet`` is rebuilt from the committed copy in git (when there is one) and the
trial folders, and the note says whether rows it recorded were lost: ``study.json`` keeps the list
of the trials each table recorded (``recorded``) for that.
"""
from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from senet import config as C
from senet.errors import UserValueError
from senet.recipe import recipe_hash

from . import store
from .checkpoints import newest_state_file
from .trainable import trial_flat

#: The columns the report code reads, in this order; the flat config keys follow ``seed``.
LEAD = ["study", "arm", "trial_id", "seed"]
METRICS = ["status", "test_top1_err", "test_top5_err", "best_val_top1_err", "best_val_epoch",
           "test_top1_err_at_best_val", "test_top5_err_at_best_val", "params", "flops", "se_params",
           "se_flops", "se_hidden", "epochs_run", "wall_time_s", "train_time_s", "node", "node_id",
           "git_commit", "git_dirty", "torch_version", "device", "precision", "checkpoint",
           "preset", "experiment", "recipe", "config_id", "reused_from", "num_test", "num_val",
           "num_failures"]
_TUNE_STATUS = {"ERROR": "error", "TERMINATED": "error", "RUNNING": "running", "PENDING": "running",
                "PAUSED": "running"}


def _read_results(path: Path) -> list[dict]:
    rows = []
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a killed driver
            continue
    return rows


def _trial_states(exp: Path) -> dict[str, dict]:
    """Tune's view of each trial (status, failures) from the snapshot that --resume would read."""
    state = newest_state_file(exp)
    if state is None:
        return {}
    try:
        data = json.loads(state.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    out = {}
    for entry in data.get("trial_data", []):
        try:
            meta = json.loads(entry[0])
            run = json.loads(entry[1]) if len(entry) > 1 else {}
        except (TypeError, json.JSONDecodeError):
            continue
        out[meta.get("trial_id")] = {"status": meta.get("status"), "dir": meta.get("relative_logdir"),
                                     "num_failures": run.get("num_failures", 0)}
    return out


def _latest_checkpoint(trial_dir: Path) -> str | None:
    ckpts = sorted(trial_dir.glob("checkpoint_*/checkpoint.pt"))
    return str(ckpts[-1].absolute()) if ckpts else None


def _final_from_checkpoint(trial_dir: Path) -> list[dict]:
    """The final row from the final.json and config.json of the trial's newest checkpoint, for a
    finished trial whose last result.json lines were lost (a driver killed before Tune copied them)."""
    ckpts = sorted(trial_dir.glob("checkpoint_*/final.json"))
    if not ckpts:
        return []
    try:
        final = json.loads(ckpts[-1].read_text())
        resolved = C.flatten(C.from_dict(json.loads((ckpts[-1].parent / "config.json").read_text())))
    except (OSError, ValueError):
        return []
    return [{**final, "final": True, "epoch": final.get("epochs_run"), "resolved": resolved}]


def _none_if_nan(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def _recipe(flat: dict[str, Any], params: dict[str, Any]) -> str:
    """The hash that tells recipes apart, computed as ``senet report`` does from study.json: without
    the keys any arm sets (the axis, and e.g. the reduction study baseline's se.stages), the seed and
    the nuisance keys."""
    meta = params.get("meta") or {}
    axis = {k.strip() for k in str(meta.get("axis", "")).split(",") if k.strip()}
    axis |= {k for overrides in (params.get("arms") or {}).values() for k in overrides}
    return recipe_hash(flat, axis, params.get("nuisance_keys") or ())


def trial_rows(exp: Path) -> Iterator[dict[str, Any]]:
    """One row per trial folder of one Tune experiment."""
    states = _trial_states(exp)
    for params_file in sorted(exp.glob("*/params.json")):
        tdir = params_file.parent
        try:
            params = json.loads(params_file.read_text())
        except json.JSONDecodeError:
            continue
        if "arms" not in params or "base" not in params:
            continue  # not a senet sweep trial
        results = _read_results(tdir / "result.json")
        trial_id = next((r["trial_id"] for r in results if "trial_id" in r), None)
        if trial_id is None:
            trial_id = next((t for t, s in states.items() if s["dir"] == tdir.name), tdir.name)
        finals = [r for r in results if r.get("final")] or _final_from_checkpoint(tdir)
        last = finals[-1] if finals else (results[-1] if results else {})
        state = states.get(trial_id, {})
        if finals:
            status = last.get("status") or "completed"
            flat = dict(last.get("resolved") or {})
        else:
            status = _TUNE_STATUS.get(state.get("status"), "running")
            flat = {}
        if not flat:
            try:
                flat = C.flatten(C.from_flat(trial_flat(params)))
            except ValueError:
                flat = trial_flat(params)
        prov = last.get("provenance") or {}
        row: dict[str, Any] = {
            "study": params.get("study"), "arm": params.get("arm"), "trial_id": trial_id,
            "seed": int(params.get("seed", flat.get("seed", 0))),
        }
        row.update({k: v for k, v in flat.items() if k != "seed"})
        # the precision `auto` resolved to; a trial that failed before recording it would have run
        # in the one its identity was planned with
        ran = {**flat, "precision": prov.get("precision") or store.trial_precision(C.from_flat(flat))}
        row.update({
            "status": status,
            "test_top1_err": last.get("test_top1_err"),
            "test_top5_err": last.get("test_top5_err"),
            "best_val_top1_err": last.get("best_val_top1_err"),
            "best_val_epoch": last.get("best_val_epoch"),
            "test_top1_err_at_best_val": last.get("test_top1_err_at_best_val"),
            "test_top5_err_at_best_val": last.get("test_top5_err_at_best_val"),
            "params": last.get("params"), "flops": last.get("flops"),
            "se_params": last.get("se_params"), "se_flops": last.get("se_flops"),
            "se_hidden": last.get("se_hidden"),
            "epochs_run": last.get("epochs_run", last.get("epoch")),
            "wall_time_s": last.get("wall_time_s", last.get("time_total_s")),
            "train_time_s": last.get("train_time_s"),
            "node": last.get("node", last.get("hostname")), "node_id": last.get("node_id"),
            "git_commit": prov.get("git_commit"), "git_dirty": prov.get("git_dirty"),
            "torch_version": prov.get("torch_version"), "device": prov.get("device"),
            "precision": ran["precision"],
            "checkpoint": _latest_checkpoint(tdir),
            "preset": params.get("preset"), "experiment": exp.name,
            "recipe": _recipe(ran, params), "config_id": store.config_id(ran), "reused_from": None,
            "num_test": last.get("num_test"), "num_val": last.get("num_val"),
            "num_failures": state.get("num_failures", 0),
        })
        yield {k: _none_if_nan(v) for k, v in row.items()}


def experiments(storage: Path) -> list[Path]:
    return sorted({p.parent.parent for p in storage.glob("*/*/params.json")})


def _order(df: pd.DataFrame, arm_order: list[str]) -> pd.DataFrame:
    flat_keys = [k for k in C.keys() if k != "seed"]
    extra = [c for c in df.columns if c not in LEAD + flat_keys + METRICS]
    cols = [c for c in LEAD + flat_keys + METRICS + extra if c in df.columns]
    df = df[cols].copy()
    rank = {a: i for i, a in enumerate(arm_order)}
    df["_rank"] = df["arm"].map(lambda a: rank.get(a, len(rank)))
    by = [c for c in ("preset",) if c in df] + ["_rank", "seed"] + [c for c in ("experiment", "trial_id") if c in df]
    df = df.sort_values(by, kind="stable", na_position="last").drop(columns="_rank")
    return df.reset_index(drop=True)


def _atomic_write(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if path.suffix == ".parquet":
        df.to_parquet(tmp, index=False)
    else:
        df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def _read_meta(results_dir: Path) -> dict:
    try:
        meta = json.loads((results_dir / "study.json").read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def save_table(results_dir: Path, df: pd.DataFrame) -> pd.DataFrame:
    """Write ``runs.parquet`` and ``runs.csv`` in the study's arm order, and the list of the trials
    the table records into ``study.json`` (``recorded``); return the table as written."""
    meta = _read_meta(results_dir)
    df = _order(df, [a["arm"] for a in meta.get("arms", [])])
    results_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(df, results_dir / "runs.parquet")
    _atomic_write(df, results_dir / "runs.csv")
    path = results_dir / "study.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**meta, "recorded": store.manifest(df)}, indent=1) + "\n")
    os.replace(tmp, path)
    return df


def _recorded_rows(parquet: Path, out) -> tuple[pd.DataFrame | None, str | None]:
    """(the rows the table records, a note when it was unreadable). An unreadable table is moved
    aside to ``runs.parquet.unreadable`` (never destroyed) and replaced by its committed copy in git
    where there is one; the trial folders are merged into whatever is left."""
    old, why = store.read_table(parquet)
    if why is None:
        return old, None
    kept = parquet.with_name(parquet.name + ".unreadable")
    os.replace(parquet, kept)
    old = store.committed_copy(parquet)
    source = "the trial folders" + (" and the copy committed in git (HEAD)" if old is not None else "")
    return old, f"senet: note: {parquet} could not be read ({why}; kept as {kept.name}); rebuilding it from {source}"


def collect(study: str, results: str | Path = "results", storage: str | Path | None = None,
            out=None) -> pd.DataFrame:
    """Merge the rows ``runs.parquet`` records with the trials of ``study`` on disk into
    ``runs.parquet`` / ``runs.csv`` (see the module's docstring); return the table.

    Notes (a rebuilt table, and whether it lost rows) go to ``out`` (default stderr).
    """
    out = out or sys.stderr
    results_dir = Path(results).expanduser().absolute() / study
    storage = Path(storage).expanduser().absolute() if storage else results_dir / "ray"
    if not results_dir.is_dir() and not storage.is_dir():
        raise UserValueError(f"no results for study {study!r} in {results_dir}; run `senet sweep {study}` first")
    # a --storage shared by several studies holds their experiments side by side
    rows = [r for exp in experiments(storage) for r in trial_rows(exp) if r["study"] in (study, None)]
    old, note = _recorded_rows(results_dir / "runs.parquet", out)
    table = store.merge(old, pd.DataFrame(rows))
    if note:
        listed = store.read_manifest(results_dir)
        if listed is None:
            note += ("; no list of the trials it recorded survives (study.json), so whether rows of trials "
                     "whose folders are gone were lost cannot be told")
        else:
            lost = store.lost_rows(listed, table)
            if lost:
                names = ", ".join(f"{r.get('arm')} seed {r.get('seed')}" for r in lost[:10])
                note += (f"; {len(lost)} of the {len(listed)} trials it recorded are lost (no trial folder, "
                         f"no committed copy): {names}" + (" ..." if len(lost) > 10 else ""))
            else:
                note += f"; all {len(listed)} trials it recorded are recovered"
        print(note, file=out, flush=True)
    if table.empty:
        raise UserValueError(f"no trials found for study {study!r} under {storage}")
    if not _read_meta(results_dir).get("arms"):
        meta = _meta_from_trials(storage)
        if meta:
            from .sweep import write_study_json  # noqa: PLC0415

            write_study_json(results_dir, meta)
    return save_table(results_dir, table)


def _meta_from_trials(storage: Path) -> dict:
    for params_file in sorted(storage.glob("*/*/params.json")):
        try:
            meta = json.loads(params_file.read_text()).get("meta")
        except json.JSONDecodeError:
            continue
        if meta:
            return meta
    return {}
