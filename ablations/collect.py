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

Collecting is idempotent and safe to interrupt: rows are merged by trial id with what an earlier
collect wrote (a trial whose folder has gone keeps its old row), and both files are written to a
temporary name and moved into place with ``os.replace``. An unreadable ``runs.parquet`` is rebuilt
from the trial folders, with a note saying so.
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

from .checkpoints import newest_state_file
from .trainable import trial_flat

#: The columns the report code reads, in this order; the flat config keys follow ``seed``.
LEAD = ["study", "arm", "trial_id", "seed"]
METRICS = ["status", "test_top1_err", "test_top5_err", "best_val_top1_err", "best_val_epoch",
           "test_top1_err_at_best_val", "test_top5_err_at_best_val", "params", "flops", "se_params",
           "se_flops", "se_hidden", "epochs_run", "wall_time_s", "train_time_s", "node", "node_id",
           "git_commit", "git_dirty", "torch_version", "device", "precision", "checkpoint",
           "preset", "experiment", "recipe", "num_test", "num_val", "num_failures"]
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
            "precision": prov.get("precision"),
            "checkpoint": _latest_checkpoint(tdir),
            "preset": params.get("preset"), "experiment": exp.name,
            "recipe": _recipe(flat, params),
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
    df = df.sort_values(["experiment", "_rank", "seed", "trial_id"], kind="stable").drop(columns="_rank")
    return df.reset_index(drop=True)


def _atomic_write(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if path.suffix == ".parquet":
        df.to_parquet(tmp, index=False)
    else:
        df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def _read_old(parquet: Path, out) -> pd.DataFrame | None:
    """What an earlier collect wrote, or None; an unreadable file is rebuilt from the trials, and said so."""
    if not parquet.exists():
        return None
    try:
        return pd.read_parquet(parquet)
    except Exception as e:  # noqa: BLE001 - any damage (truncated, not Parquet, bad schema) means: rebuild
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"senet: note: {parquet} could not be read ({why}); rebuilding it from the trial folders "
              "(rows of trials whose folders are gone cannot be recovered)", file=out, flush=True)
        return None


def collect(study: str, results: str | Path = "results", storage: str | Path | None = None,
            out=None) -> pd.DataFrame:
    """Gather every trial of ``study`` into ``runs.parquet`` / ``runs.csv``; return the table.

    Notes (a rebuilt table) go to ``out`` (default stderr).
    """
    out = out or sys.stderr
    results_dir = Path(results).expanduser().absolute() / study
    storage = Path(storage).expanduser().absolute() if storage else results_dir / "ray"
    if not results_dir.is_dir() and not storage.is_dir():
        raise UserValueError(f"no results for study {study!r} in {results_dir}; run `senet sweep {study}` first")
    rows = [r for exp in experiments(storage) for r in trial_rows(exp)]
    new = pd.DataFrame(rows)
    parquet = results_dir / "runs.parquet"
    old = _read_old(parquet, out)
    if old is not None:
        if not new.empty:
            old = old[~old["trial_id"].isin(set(new["trial_id"]))]
        new = pd.concat([old, new], ignore_index=True) if not old.empty else new
    if new.empty:
        raise UserValueError(f"no trials found for study {study!r} under {storage}")
    meta_path = results_dir / "study.json"
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    except (OSError, ValueError):
        meta = {}
    if not meta:
        meta = _meta_from_trials(storage)
        if meta:
            from .sweep import write_study_json  # noqa: PLC0415

            write_study_json(results_dir, meta)
    new = _order(new, [a["arm"] for a in meta.get("arms", [])])
    results_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(new, parquet)
    _atomic_write(new, results_dir / "runs.csv")
    return new


def _meta_from_trials(storage: Path) -> dict:
    for params_file in sorted(storage.glob("*/*/params.json")):
        try:
            meta = json.loads(params_file.read_text()).get("meta")
        except json.JSONDecodeError:
            continue
        if meta:
            return meta
    return {}
