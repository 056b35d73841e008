"""The files of one run folder (``run.out``): ``config.json``, ``metrics.jsonl``, ``checkpoint.pt``, ``final.json``.

A fresh run writes its config and an empty history before its first epoch (an interrupted first
epoch leaves a folder that says what it was), then after every epoch the checkpoint (every
``run.checkpoint_every`` epochs and at the end; never for a diverged epoch) and one metrics line,
and ``final.json`` at the end. A resumed run rewrites its files from the checkpoint's history with
its first new epoch (no orphan epochs of a run killed after its last checkpoint survive), so a
finished run stays as it was until there is something new; a call with no epoch left to train only
adds the run files the folder lacks (a sweep trial restored from only its last checkpoint).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from . import config
from .checkpoint import save_checkpoint
from .layout import CHECKPOINT, CONFIG_JSON, FINAL_JSON, METRICS_JSONL, append_jsonl, write_json, write_jsonl

if TYPE_CHECKING:
    from .metrics import FitResult
    from .run import Run


class RunFolder:
    """Writes one run's files; the engine calls :meth:`open`, :meth:`record_epoch` after each
    epoch and :meth:`close` with the result."""

    def __init__(self, path: str | Path):
        self.dir = Path(path)
        self.stale = True  # the files do not hold the run's history yet: rewrite them with the next epoch

    @property
    def checkpoint(self) -> Path:
        return self.dir / CHECKPOINT

    def open(self, run: Run, *, resumed: bool, trains: bool) -> None:
        """A fresh run's config and empty history; a resumed run's history names this folder's checkpoint."""
        if not resumed:
            self.dir.mkdir(parents=True, exist_ok=True)
            for stale in (CHECKPOINT, FINAL_JSON):  # left by the run --overwrite replaces
                (self.dir / stale).unlink(missing_ok=True)
            self._write_config(run.cfg)
            (self.dir / METRICS_JSONL).write_text("")
            self.stale = False
        elif trains:
            run.checkpoint_moved(str(self.checkpoint))  # the run's one checkpoint lives here now

    def record_epoch(self, run: Run, metrics: dict) -> None:
        """The checkpoint (when due), then the epoch's metrics line (or the whole history, when a
        line already written has changed or the files are stale)."""
        due = run.epoch == run.cfg.optim.epochs or run.epoch % run.cfg.run.checkpoint_every == 0
        if run.status != "diverged" and due:
            metrics["checkpoint"] = str(save_checkpoint(self.checkpoint, **run.checkpoint_state()))
        if self.stale or run.history_amended:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._write_config(run.cfg)
            write_jsonl(self.dir / METRICS_JSONL, run.history)
            (self.dir / FINAL_JSON).unlink(missing_ok=True)  # the run is running again
            self.stale = False
            run.history_written()
        else:
            append_jsonl(self.dir / METRICS_JSONL, metrics)

    def checkpoint_written(self) -> str | None:
        return str(self.checkpoint) if self.checkpoint.exists() else None

    def close(self, run: Run, result: FitResult, *, trained: bool) -> None:
        """``final.json``; with nothing trained, only the run files the folder lacks: a finished
        run's folder stays byte-identical, a bare one gets the files every run folder has."""
        if trained:
            write_json(self.dir / FINAL_JSON, result)
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / CONFIG_JSON).exists():
            self._write_config(run.cfg)
        if not (self.dir / FINAL_JSON).exists():
            write_json(self.dir / FINAL_JSON, result)
        if not (self.dir / METRICS_JSONL).exists():
            write_jsonl(self.dir / METRICS_JSONL, run.history)

    def _write_config(self, cfg: config.Config) -> None:
        write_json(self.dir / CONFIG_JSON, config.to_dict(cfg), indent=2)
