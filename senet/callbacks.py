"""What follows a run as it trains: the engine calls a list of :class:`Callback` objects.

Each hook gets the :class:`senet.run.Run` (config, model, data, optimizer, epoch, step, history,
best-so-far) and does nothing unless a subclass overrides it. In the order the engine calls them::

    on_fit_start(run)                      set up (and restored from a checkpoint), before the first epoch
    on_epoch_start(run)                    run.epoch is the epoch about to train
    on_train_progress(run, progress)       at each host sync of training (every senet.engine.SYNC_EVERY steps)
    on_eval_start(run, split, model)       before an evaluation pass of "val", "test" or "best" (the
    on_eval_end(run, split, model, errs)   test set with the best validation epoch's weights, a copy)
    on_epoch_end(run, metrics)             after the checkpoint and the metrics line (a copy of it)
    on_fit_end(run, result)                with the FitResult, after final.json

An evaluation pass runs under ``torch.inference_mode`` on ``model``: forward hooks registered on its
modules in ``on_eval_start`` (the SE blocks' gates, :func:`senet.models.se_modules`) see every
evaluated image and are removed in ``on_eval_end``. A callback that raises stops the run there (the
checkpoint and metrics line of the epoch are already written).
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .metrics import FitResult
    from .run import Run


@dataclass
class TrainProgress:
    """The training pass of an epoch so far; the running loss and accuracy are read from the
    device only when asked (a host sync)."""

    steps: int  # steps of the epoch
    done: int  # steps taken
    images: int  # images seen
    started: float  # time.perf_counter() at the start of the pass
    loss_sum: torch.Tensor
    correct: torch.Tensor

    @property
    def loss(self) -> float:
        return self.loss_sum.item() / max(1, self.done)

    @property
    def top1_acc(self) -> float:
        return 100.0 * self.correct.item() / max(1, self.images)

    @property
    def images_per_s(self) -> float:
        return self.images / max(1e-9, time.perf_counter() - self.started)


class Callback:
    """A no-op for every hook; subclasses override the ones they need (see the module's docstring)."""

    def on_fit_start(self, run: Run) -> None:
        pass

    def on_epoch_start(self, run: Run) -> None:
        pass

    def on_train_progress(self, run: Run, progress: TrainProgress) -> None:
        pass

    def on_eval_start(self, run: Run, split: str, model: torch.nn.Module) -> None:
        pass

    def on_eval_end(self, run: Run, split: str, model: torch.nn.Module, errors: dict[str, float]) -> None:
        pass

    def on_epoch_end(self, run: Run, metrics: dict[str, Any]) -> None:
        pass

    def on_fit_end(self, run: Run, result: FitResult) -> None:
        pass


class Callbacks(Callback):
    """Several callbacks called in order (None entries are left out); each gets its own copy of
    the metrics, so one that edits them (the sweep's pops the checkpoint) changes nobody else's."""

    def __init__(self, *callbacks: Callback | None):
        self.items = [c for c in callbacks if c is not None]

    def on_fit_start(self, run):
        for c in self.items:
            c.on_fit_start(run)

    def on_epoch_start(self, run):
        for c in self.items:
            c.on_epoch_start(run)

    def on_train_progress(self, run, progress):
        for c in self.items:
            c.on_train_progress(run, progress)

    def on_eval_start(self, run, split, model):
        for c in self.items:
            c.on_eval_start(run, split, model)

    def on_eval_end(self, run, split, model, errors):
        for c in self.items:
            c.on_eval_end(run, split, model, dict(errors))

    def on_epoch_end(self, run, metrics):
        for c in self.items:
            c.on_epoch_end(run, dict(metrics))

    def on_fit_end(self, run, result):
        for c in self.items:
            c.on_fit_end(run, result)


class ReportMetrics(Callback):
    """``report(metrics)`` after every epoch: fit's ``report`` argument."""

    def __init__(self, report: Callable[[dict], None]):
        self.report = report

    def on_epoch_end(self, run, metrics):
        self.report(metrics)


class ProgressBar(Callback):
    """A tqdm bar of the training pass of each epoch, on stderr, with the running loss, accuracy
    and images/s (redrawn at most twice a second)."""

    def __init__(self):
        self.bar = None
        self.shown = 0.0

    @classmethod
    def when_wanted(cls, show: bool) -> ProgressBar | None:
        """A bar when ``show`` (``run.progress``) and stderr is a terminal: none in logs and Ray workers."""
        return cls() if show and sys.stderr.isatty() else None

    def on_epoch_start(self, run):
        from tqdm import tqdm  # only a terminal run needs it

        self.bar = tqdm(total=run.steps_per_epoch, desc=f"epoch {run.epoch}/{run.cfg.optim.epochs}",
                        unit="batch", leave=False, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
        self.shown = time.perf_counter()

    def on_train_progress(self, run, progress):
        if self.bar is None:
            return
        if time.perf_counter() - self.shown > 0.5:
            self.shown = time.perf_counter()
            self.bar.set_postfix(loss=f"{progress.loss:.3f}", acc=f"{progress.top1_acc:.1f}%",
                                 img_s=f"{progress.images_per_s:.0f}", refresh=False)
        self.bar.update(progress.done - self.bar.n)
        if progress.done == progress.steps:
            self._close()

    def on_epoch_end(self, run, metrics):
        self._close()  # a diverged epoch stops before its last step

    def _close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
