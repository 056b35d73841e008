"""One training run's state: :class:`Run`, what the engine, the run folder and the callbacks share.

The engine (:mod:`senet.engine`) builds a ``Run`` and advances it epoch by epoch; the run folder
(:mod:`senet.runfolder`) writes it out; callbacks (:mod:`senet.callbacks`) read it. All three import
this module and none of them imports another for it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import config
from .metrics import FitResult
from .resume import rng_state

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .complexity import Complexity
    from .config import Config
    from .data import Datasets
    from .schedules import Schedule


def _no_best() -> dict:
    return {"val_top1_err": math.inf, "epoch": None, "test_top1_err": math.nan, "test_top5_err": math.nan}


@dataclass(eq=False)
class Run:
    """One run as the engine, the run folder and the callbacks see it.

    The engine changes the fields as the run trains. Two changes concern lines of ``history`` that the
    run folder may already have written, and go through methods, so that the folder learns of them:
    :meth:`amend` (the best epoch's test errors, known only at the end: ``metrics.jsonl`` must be
    written again, and :meth:`history_written` says it was) and :meth:`checkpoint_moved` (a resumed run's
    one checkpoint now lives in the folder it continues in).
    """

    cfg: Config
    device: torch.device
    precision: str  # bf16 | fp32, `auto` resolved
    channels_last: bool
    data: Datasets
    model: nn.Module
    net: nn.Module  # the model, or its torch.compile'd twin that trains it
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    order_gen: torch.Generator  # the order of the training images
    aug_gen: torch.Generator  # the augmentation's crops and flips, on the training device
    batch_size: int
    steps_per_epoch: int  # the ragged last batch is dropped (BN on a few images is noise)
    phases: list[dict]
    provenance: dict
    data_meta: dict  # what the checkpoint records of the data (classes, normalisation, sizes)
    complexity: Complexity
    se_hidden: str
    wall0: float  # time.perf_counter() when fit was called
    epoch: int = 0  # the last epoch trained, then the one training
    step: int = 0
    train_time: float = 0.0
    prev_wall: float = 0.0  # wall time of the calls of fit before this one (a resumed run)
    best: dict = field(default_factory=_no_best)
    # the weights of the best validation epoch while its test error is unknown (run.eval_test end)
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict] = field(default_factory=list)
    history_amended: bool = False  # a line of history changed after it was recorded (see amend)
    status: str = "completed"
    phase: dict | None = None
    schedule: Schedule | None = None
    phase_step0: int = 0
    saved_phase: int = 0  # the phase whose schedule state the checkpoint holds
    saved_schedule: dict | None = None

    def amend(self, epoch: int, **values) -> None:
        """Update the metrics line of ``epoch``, which may already be written; ``history_amended`` stays
        set until the run folder has written the whole history again (:meth:`history_written`)."""
        for h in self.history:
            if h["epoch"] == epoch:
                h.update(values)
        self.history_amended = True

    def history_written(self) -> None:
        """The run folder has rewritten ``metrics.jsonl`` from ``history``: no amended line is pending."""
        self.history_amended = False

    def checkpoint_moved(self, path: str) -> None:
        """The run's one checkpoint is now ``path``: the history's lines that name a checkpoint, and the
        line of the epoch the run resumed at (saved in the checkpoint before it knew the file's name),
        name ``path``."""
        for h in self.history:
            if h.get("checkpoint") or h.get("epoch") == self.epoch:
                h["checkpoint"] = path

    def wall_time(self) -> float:
        return self.prev_wall + time.perf_counter() - self.wall0

    def checkpoint_state(self) -> dict:
        """Everything :func:`senet.checkpoint.save_checkpoint` writes to continue or analyse the run."""
        pending = {"best_model": self.best_state} if self.best_state is not None else {}
        return dict(model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                    schedule=self.schedule.state_dict(), rng=rng_state(self.order_gen, self.aug_gen),
                    epoch=self.epoch, step=self.step, best=self.best, metrics=self.history,
                    phases=self.phases, train_time_s=self.train_time, wall_time_s=self.wall_time(),
                    config=config.to_dict(self.cfg), data=self.data_meta, provenance=self.provenance, **pending)

    def result(self, checkpoint: str | None) -> FitResult:
        last, best, cx = (self.history[-1] if self.history else {}), self.best, self.complexity
        return FitResult(
            status=self.status, epochs_run=self.epoch,
            test_top1_err=last.get("test_top1_err", math.nan), test_top5_err=last.get("test_top5_err", math.nan),
            best_val_top1_err=best["val_top1_err"] if best["epoch"] is not None else math.nan,
            best_val_epoch=best["epoch"], test_top1_err_at_best_val=best["test_top1_err"],
            test_top5_err_at_best_val=best["test_top5_err"], wall_time_s=self.wall_time(),
            train_time_s=self.train_time, params=cx.params, flops=cx.flops, se_params=cx.se_params,
            se_flops=cx.se_flops, se_hidden=self.se_hidden, dataset=self.data_meta["name"],
            num_train=self.data_meta["num_train"], num_test=self.data_meta["num_test"],
            checkpoint=checkpoint, phases=self.phases, provenance=self.provenance)
