"""TensorBoard event logs of a run: its per-epoch scalars and the SE blocks' excitation histograms.

:class:`TensorBoardCallback` writes, after every epoch, the scalars of the epoch's metrics line
(:data:`SCALAR_TAGS`: losses, top-1 and top-5 errors per split, learning rate, images/s, epoch time)
at step = epoch, and for a network with SE blocks one histogram per block (``excitation/SE_<stage>_
<block>``) of the excitations s = σ(W2 δ(W1 z)) of every image of the epoch's validation pass (the
test pass when the run holds out no validation split), read by a forward hook on each block's gate.
A split not evaluated leaves a gap: with ``run.eval_test end`` the test curves hold the last epoch
and the best validation epoch.

``tensorboard --logdir <run folder>`` (or a folder of runs, or a sweep's ``<study>/ray``: one run per
trial, named ``<experiment>/<arm>_seed<k>_<trial id>``) shows them. A resumed run appends a new event file to the
same folder whose first event purges the steps at or after the resumed epoch, so epochs trained
twice (those after the last checkpoint of an interrupted run) show once; a run started afresh with
``--overwrite`` hides the older run's epochs the same way.

The writer (and with it TensorBoard's libraries) is loaded only when a run logs.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .callbacks import Callback
from .models import se_modules

if TYPE_CHECKING:
    from .config import Config
    from .run import Run

#: The keys of a metrics line (:data:`senet.metrics.EPOCH_COLUMNS`) written as scalars, with their
#: tags: TensorBoard groups the charts by quantity (``loss``, ``top1_err``...), one chart per split.
#: NaN values (a split not evaluated) are skipped.
SCALAR_TAGS = {
    "train_loss": "loss/train", "val_loss": "loss/val", "test_loss": "loss/test",
    "train_top1_err": "top1_err/train", "val_top1_err": "top1_err/val", "test_top1_err": "top1_err/test",
    "val_top5_err": "top5_err/val", "test_top5_err": "top5_err/test",
    "lr": "lr", "images_per_s": "throughput/images_per_s", "epoch_time_s": "time/epoch_s",
}
EXCITATION_TAG = "excitation/{block}"
#: Bins of an excitation histogram (even: the range doubles by merging pairs of bins).
BINS = 64


def wanted(cfg: Config) -> bool:
    """Whether the run logs to TensorBoard (``run.tensorboard``, on unless set off)."""
    return cfg.run.tensorboard


class StreamingHistogram:
    """A histogram of a stream of values in :data:`BINS` equal bins, in constant memory.

    The range starts at the first values' extent rounded out to whole numbers ([0, 1] for a
    sigmoid gate, so that every epoch of such a run has the same bins) and doubles, merging pairs
    of bins, when later values fall outside it. Non-finite values are left out.
    """

    def __init__(self, bins: int = BINS):
        if bins % 2:
            raise ValueError(f"bins must be even, got {bins}")
        self.bins = bins
        self.lo = self.hi = math.nan
        self.counts: torch.Tensor | None = None
        self.num, self.sum, self.sum_squares = 0, 0.0, 0.0
        self.min, self.max = math.inf, -math.inf

    def add(self, values: torch.Tensor) -> None:
        x = values.detach().flatten().float()
        if x.numel() == 0:
            return
        lo, hi = (float(v) for v in torch.aminmax(x))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            x = x[torch.isfinite(x)]
            if x.numel() == 0:
                return
            lo, hi = (float(v) for v in torch.aminmax(x))
        self._cover(lo, hi)
        self.counts += torch.histc(x, self.bins, min=self.lo, max=self.hi).to(self.counts)
        self.num += x.numel()
        self.sum += float(x.sum(dtype=torch.float64))
        self.sum_squares += float(x.double().square().sum())
        self.min, self.max = min(self.min, lo), max(self.max, hi)

    def _cover(self, lo: float, hi: float) -> None:
        if self.counts is None:
            self.lo, self.hi = float(math.floor(lo)), float(math.ceil(hi))
            if self.hi <= self.lo:
                self.hi = self.lo + 1.0
            self.counts = torch.zeros(self.bins, dtype=torch.float64)
            return
        half = self.bins // 2
        while lo < self.lo or hi > self.hi:
            merged = self.counts.view(half, 2).sum(1)
            zeros = torch.zeros(half, dtype=torch.float64)
            width = self.hi - self.lo
            if hi > self.hi:  # grow upwards: the old bins fill the lower half
                self.hi += width
                self.counts = torch.cat([merged, zeros])
            else:
                self.lo -= width
                self.counts = torch.cat([zeros, merged])

    def write(self, writer, tag: str, step: int) -> None:
        """One histogram event: the bins from the first to the last non-empty one (TensorBoard draws
        the first bin from ``min`` and the last to ``max``)."""
        if self.num == 0:
            return
        nonzero = torch.nonzero(self.counts).flatten()
        first, last = int(nonzero[0]), int(nonzero[-1])
        width = (self.hi - self.lo) / self.bins
        limits = [self.lo + width * (i + 1) for i in range(first, last + 1)]
        limits[-1] = max(limits[-1], self.max)
        writer.add_histogram_raw(tag, min=self.min, max=self.max, num=self.num, sum=self.sum,
                                 sum_squares=self.sum_squares, bucket_limits=limits,
                                 bucket_counts=self.counts[first:last + 1].tolist(), global_step=step)


class TensorBoardCallback(Callback):
    """Writes a run's TensorBoard events to ``log_dir`` (default: the run folder, ``run.out``).

    The event file is opened at the first epoch's end (a run with nothing left to train writes none)
    and flushed after every epoch, so a TensorBoard watching the folder is at most one epoch behind.
    """

    def __init__(self, log_dir: str | Path | None = None):
        self.log_dir = str(log_dir) if log_dir else None
        self.writer = None
        self.purge_step = 1
        self.hooked_split: str | None = None
        self.histograms: dict[str, StreamingHistogram] = {}
        self.handles: list[Any] = []
        self.recording = False
        self.last_step: dict[str, int] = {}  # per tag

    @classmethod
    def when_wanted(cls, cfg: Config, log_dir: str | Path | None = None) -> TensorBoardCallback | None:
        """A callback when the run logs to TensorBoard (:func:`wanted`), else None."""
        return cls(log_dir) if wanted(cfg) else None

    def on_fit_start(self, run: Run) -> None:
        self.log_dir = self.log_dir or run.cfg.run.out or None
        self.purge_step = run.epoch + 1  # the first epoch this call trains
        # the excitations are read on the validation pass, or the test pass without a validation split
        self.hooked_split = "val" if len(run.data.val_x) else "test"
        if self.log_dir is None:
            return
        # Hooked once for the whole run and switched on for the one pass: a torch.compile'd network
        # would recompile for hooks added and removed every epoch, and its training graph leaves
        # out a hook whose switch is off. Compiled, the recording runs eagerly (it syncs with the host).
        record = torch.compiler.disable(self._record) if run.cfg.run.compile else self._record
        for name, block in se_modules(run.model).items():
            self.handles.append(block.gate.register_forward_hook(
                lambda _module, _inputs, s, name=name: record(name, s) if self.recording else None))

    def on_eval_start(self, run, split, model):
        if split == self.hooked_split and self.handles:
            self.histograms = {}
            self.recording = True

    def on_eval_end(self, run, split, model, errors):
        self.recording = False

    def _record(self, name: str, s: torch.Tensor) -> None:
        if name not in self.histograms:
            self.histograms[name] = StreamingHistogram()
        self.histograms[name].add(s)

    def on_epoch_end(self, run, metrics):
        if self.log_dir is None:
            return
        writer = self._writer()
        step = int(metrics["epoch"])
        # run.history, not just this epoch's line: with run.eval_test end, the last epoch also fills
        # in the test errors of the best validation epoch, an earlier one
        for line in run.history:
            self._scalars(writer, line)
        for name, hist in self.histograms.items():
            hist.write(writer, EXCITATION_TAG.format(block=name), step)
        self.histograms = {}
        writer.flush()

    def on_fit_end(self, run, result):
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _writer(self):
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter  # only a run that logs loads it

            Path(self.log_dir).mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(self.log_dir, purge_step=self.purge_step)
        return self.writer

    def _scalars(self, writer, metrics: dict) -> None:
        """The line's finite values at steps past the last one written for their tag.

        Never an earlier step: TensorBoard's reader takes a step at or below the last one of a
        series for a restart and drops the points after it. So epochs before this call (held by
        an older event file) are left alone, and so is a value that becomes known for an epoch
        before the last one written (the best validation epoch of a resumed run).
        """
        step = int(metrics["epoch"])
        for key, tag in SCALAR_TAGS.items():
            value = metrics.get(key)
            if (step > self.last_step.get(tag, self.purge_step - 1) and isinstance(value, (int, float))
                    and math.isfinite(value)):
                writer.add_scalar(tag, value, global_step=step)
                self.last_step[tag] = step
