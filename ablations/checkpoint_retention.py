"""Which trial checkpoints a resumed sweep may need, read from Tune's files without Ray.

``--resume`` restores each trial from the checkpoint that the newest experiment-state snapshot on
storage names. Tune's own retention (``CheckpointConfig(num_to_keep=k)``) deletes a checkpoint as
soon as a newer one is registered, while that snapshot is written later (every second at best) and
copied to storage in the background: a driver killed in between leaves a snapshot naming a folder
that is gone, and the trial cannot be restored. So the sweep keeps every checkpoint as far as Tune
is concerned and deletes them here instead, only once the snapshot on storage names a newer one:
whatever snapshot a later ``--resume`` reads (that one or a newer one), its checkpoint still exists.
Checkpoints newer than the one it names are never deleted here either: a restored trial continues
from the newest complete one (:func:`ablations.trainable.continuation`), so that the epochs the
driver logged after the snapshot are not trained and reported again.

:func:`repair_missing` mends experiments written before this rule (or by hand): where the named
checkpoint is gone but a newer one exists, it is put under the missing name, so the trial resumes
from its newest state (a checkpoint that holds ``final.json`` is reported again, not retrained).
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from senet.records.layout import read_json

_CKPT = re.compile(r"checkpoint_(\d{6})")


def newest_state_file(exp: Path) -> Path | None:
    """The snapshot ``Tuner.restore`` reads: the greatest ``experiment_state-<time>.json`` by name."""
    states = sorted(exp.glob("experiment_state-*.json"), key=lambda p: p.name)
    return states[-1] if states else None


class LocalExperiment:
    """A Tune experiment folder on this machine, as the functions below read and change it; an
    object store's experiment (:class:`ablations.tune_storage.StoredExperiment`) offers the same methods."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def state(self) -> object:
        """The newest experiment-state snapshot's JSON (None when there is none or it is unreadable)."""
        path = newest_state_file(self.path)
        return read_json(path) if path is not None else None

    def has_trial(self, logdir: str) -> bool:
        return (self.path / logdir).is_dir()

    def checkpoints(self, logdir: str) -> dict[int, str]:
        """The trial's checkpoint folders by index."""
        out = {}
        for d in (self.path / logdir).glob("checkpoint_*"):
            i = checkpoint_index(d.name)
            if i is not None and d.is_dir():
                out[i] = d.name
        return out

    def remove(self, logdir: str, name: str) -> None:
        shutil.rmtree(self.path / logdir / name, ignore_errors=True)

    def copy(self, logdir: str, src: str, dst: str) -> None:
        """Copy a checkpoint folder under a new name, which appears whole or not at all."""
        trial_dir = self.path / logdir
        tmp = trial_dir / f".{dst}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(trial_dir / src, tmp)
        tmp.rename(trial_dir / dst)


def _as_experiment(exp) -> LocalExperiment:
    return LocalExperiment(exp) if isinstance(exp, (str, Path)) else exp


def checkpoint_index(name: str | None) -> int | None:
    """The k of a ``checkpoint_<k>`` folder name; None for any other name."""
    m = _CKPT.fullmatch(name or "")
    return int(m.group(1)) if m else None


def _latest_registered(run: dict, logdir: str) -> int | None:
    """The newest checkpoint of trial folder ``logdir`` that the trial's checkpoint manager holds.

    That, not the ``checkpoint_dir_name`` of the last result, is what a restore uses: Tune records a
    result before it registers the result's checkpoint, so a snapshot can name checkpoint k+1 in its
    last result while the manager still holds k. The manager is stored as a pickle in hex; the
    checkpoints' paths are plain strings inside it.
    """
    manager = run.get("checkpoint_manager")
    if not isinstance(manager, dict) or not isinstance(manager.get("value"), str):
        return None
    try:
        blob = bytes.fromhex(manager["value"])
    except ValueError:
        return None
    found = re.findall(re.escape(f"/{logdir}/".encode()) + rb"checkpoint_(\d{6})(?!\d)", blob)
    return max((int(i) for i in found), default=None)


def named_checkpoints(exp) -> dict[str, str]:
    """Trial folder name -> the checkpoint folder that the newest snapshot on storage restores it from.

    ``exp``: an experiment folder, or an object store's experiment. Trials whose snapshot holds no
    checkpoint, or one this reader cannot make out, are left out (nothing of theirs is deleted); an
    unreadable snapshot (one being copied) gives ``{}``.
    """
    data = _as_experiment(exp).state()
    entries = data.get("trial_data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return {}
    out = {}
    for entry in entries:
        try:
            meta = json.loads(entry[0])
            run = json.loads(entry[1])
        except (TypeError, ValueError, IndexError):
            continue
        logdir = meta.get("relative_logdir")
        index = _latest_registered(run, str(logdir)) if logdir else None
        if index is not None:
            out[str(logdir)] = f"checkpoint_{index:06d}"
    return out


def prune_superseded(exp) -> int:
    """Delete each trial's checkpoints older than the one the snapshot on storage names; return how many."""
    exp = _as_experiment(exp)
    removed = 0
    for logdir, name in named_checkpoints(exp).items():
        keep = checkpoint_index(name)
        for i, folder in exp.checkpoints(logdir).items():
            if i < keep:
                exp.remove(logdir, folder)
                removed += 1
    return removed


def repair_missing(exp) -> list[str]:
    """Where the named checkpoint of a trial is gone and a newer one exists, copy the newest one to the
    missing name; return one line per mended trial."""
    exp = _as_experiment(exp)
    notes = []
    for logdir, name in named_checkpoints(exp).items():
        if not exp.has_trial(logdir):
            continue
        have = exp.checkpoints(logdir)
        if checkpoint_index(name) in have:
            continue
        newer = {i: d for i, d in have.items() if i > checkpoint_index(name)}
        if not newer:
            continue
        src = newer[max(newer)]
        exp.copy(logdir, src, name)
        notes.append(f"{logdir}: {name}, which the experiment state names, was gone; "
                     f"it resumes from {src} instead")
    return notes
