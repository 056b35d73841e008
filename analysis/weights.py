"""Trained weights kept beside a study's table, so its figures re-draw from a clone.

Trial folders (Tune storage, with optimizer state and every epoch's checkpoint) are not committed;
``senet weights STUDY`` copies the final weights of chosen runs into ``<study>/weights/`` as
``<arm>_seed<seed>.pt``: a suite checkpoint without the optimizer, schedule and random-number
state (about 1 MB for SE-ResNet-20, loadable by :func:`senet.checkpoint.load_model` with
``weights_only=True``), and ``weights/index.csv``, which run each file is and where it came from.

Readers (``senet gates``, ``senet analyze-seeds``) take a run's kept weights where they exist, else
its recorded checkpoint where it is on this machine. Once a study keeps weights, the best run of an
arm is chosen among the runs it keeps, so a clone and the machine that trained them choose alike.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from senet.errors import UserError

from .study_results import (
    INDEX,
    WEIGHTS,
    checkpoint_file,
    checkpoint_path,
    completed,
    keeps_weights,
    weights_file,
)

#: Checkpoint entries that resume training and are not needed to evaluate the network.
TRAINING_STATE = ("optimizer", "schedule", "rng")


def run_weights(row, study_dir: str | Path) -> Path | None:
    """A completed run's network on this machine: its kept weights, else its recorded checkpoint
    where that file is here; None when neither is."""
    kept = weights_file(study_dir, str(row["arm"]), int(row["seed"]))
    if kept.is_file():
        return kept
    recorded = row.get("checkpoint")
    if recorded is None or (isinstance(recorded, float) and pd.isna(recorded)):
        return None
    path = checkpoint_file(checkpoint_path(str(recorded), study_dir))
    return path if path.is_file() else None


def with_weights(runs: pd.DataFrame, study_dir: str | Path) -> pd.DataFrame:
    """The completed runs whose networks can be read here, with a ``weights`` column (the file).
    When the study keeps weights, only the runs it keeps."""
    ok = completed(runs)
    files = [run_weights(r, study_dir) for r in ok.to_dict("records")]
    ok = ok.assign(weights=[str(f) if f is not None else None for f in files])
    ok = ok[ok["weights"].notna()]
    if keeps_weights(study_dir):
        kept = {str(weights_file(study_dir, a, s)) for a, s in zip(ok["arm"], ok["seed"], strict=True)}
        ok = ok[ok["weights"].isin(kept)]
    return ok


def best_by_validation(runs: pd.DataFrame, arm: str) -> pd.Series | None:
    """The arm's run with the lowest validation error (ties: the lower seed); never chosen on test."""
    a = runs[(runs["arm"] == arm) & runs["best_val_top1_err"].notna()]
    if a.empty:
        return None
    return a.sort_values(["best_val_top1_err", "seed"], kind="stable").iloc[0]


def keep(runs: pd.DataFrame, study_dir: str | Path, *, best: list[str], every: list[str],
         first: int = 0) -> pd.DataFrame:
    """Copy the weights of the best-by-validation run of each arm in ``best`` and of every run of
    each arm in ``every`` (among the completed runs whose checkpoint is here; with ``first``, only
    each such arm's ``first`` lowest seeds, and a kept file of a later seed that no ``best`` choice
    needs is removed) into the study's ``weights/`` folder; the index lists every kept file.
    Returns the index."""
    import torch  # only when weights are written

    from senet.checkpoint import load_checkpoint

    study_dir = Path(study_dir)
    here = completed(runs)
    here = here.assign(source=[run_weights(r, study_dir) for r in here.to_dict("records")])
    here = here[here["source"].notna()]
    unknown = sorted(set(best + every) - set(runs["arm"]))
    if unknown:
        raise UserError(f"no arm {unknown[0]!r} in this study (arms: {', '.join(dict.fromkeys(runs['arm']))})")
    chosen = [r for arm in best if (r := best_by_validation(here, arm)) is not None]
    for arm in every:
        runs_of = here[here["arm"] == arm].sort_values("seed")
        chosen += [r for _, r in (runs_of.head(first) if first else runs_of).iterrows()]
    if not chosen:
        raise UserError(f"{study_dir}: none of the runs asked for has a checkpoint on this machine")
    folder = study_dir / WEIGHTS
    folder.mkdir(parents=True, exist_ok=True)
    index_path = folder / INDEX
    old = pd.read_csv(index_path) if index_path.is_file() else pd.DataFrame()
    rows = []
    for r in chosen:
        dest = weights_file(study_dir, r["arm"], r["seed"])
        if Path(r["source"]) != dest:
            ckpt = load_checkpoint(r["source"])
            torch.save({k: v for k, v in ckpt.items() if k not in TRAINING_STATE}, dest)
        rows.append({"file": dest.name, "arm": r["arm"], "seed": int(r["seed"]),
                     "best_val_top1_err": r.get("best_val_top1_err"), "test_top1_err": r.get("test_top1_err"),
                     "trial": str(r.get("checkpoint")), "git_commit": r.get("git_commit")})
    index = pd.concat([old, pd.DataFrame(rows)], ignore_index=True).drop_duplicates("file", keep="last")
    if first:  # a size budget: later seeds of the `every` arms that nothing else chose go
        names = {row["file"] for row in rows}
        drop = index["arm"].isin(every) & ~index["file"].isin(names)
        for name in index.loc[drop, "file"]:
            (folder / name).unlink(missing_ok=True)
        index = index[~drop]
    index = index.sort_values(["arm", "seed"], kind="stable").reset_index(drop=True)
    index.to_csv(index_path, index=False)
    return index
