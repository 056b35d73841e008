"""The training engine: ``fit(cfg)`` trains one network on one dataset and reports every epoch.

Every ablation arm of the paper's §6 (Tables 10-16) is one call of :func:`fit`; the sweep layer wraps
it and never the other way round, so this module imports neither Ray, the analysis code nor the CLI.

The loop is built for small images, where Python and data handling, not the network, would bound
the speed: the dataset lives on the training device as uint8 tensors, each step indexes a batch,
augments and normalises it there in a few batched ops (:mod:`senet.data`), and the running loss and
accuracy stay on the device until the epoch ends (no per-step ``.item()`` synchronisation).

Recipe (``optim.*``): SGD with momentum (Nesterov by default), weight decay (by default not on BN
parameters and biases), label smoothing, and one of the schedules of :mod:`senet.schedules`
(``plateau`` is the paper's ImageNet recipe). Precision and device: :mod:`senet.runtime`.

Evaluation runs under ``torch.inference_mode`` in the run's precision, in batches of
:data:`senet.runtime.EVAL_BATCH` for the device type. Validation runs every epoch (plateau schedule,
best-epoch selection); the test set only at the end (``run.eval_test end``, the default: the test
set meets the model once, after every choice is made on validation) or every epoch (``every``, for
test curves). With ``end`` the other epochs' metrics carry NaN test errors, the weights of the best validation
epoch are kept in memory (and in the checkpoint, for a resume) and evaluated on the test set once at
the end, beside the final weights, so ``final.json`` holds the same numbers either way and the best
epoch's metrics line gets its test errors filled in.

A loss that turns NaN or infinite (ReLU and identity gates, Table 12, can diverge) ends the run with
status ``diverged``: it is recorded in ``metrics.jsonl`` and ``final.json``, not raised. Resuming and
extending runs by schedule phases: :mod:`senet.resume`; the run's state, which callbacks read:
:mod:`senet.run`; the files a run writes: :mod:`senet.runfolder`.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import config
from .callbacks import Callback, Callbacks, ProgressBar, ReportMetrics, TrainProgress
from .checkpoint import build_from_config
from .complexity import complexity
from .config import Config
from .data import Datasets, augment, load_datasets, normalize
from .evaluation import NOT_EVALUATED, evaluate
from .metrics import METRIC_COLUMNS, FitResult  # noqa: F401 - METRIC_COLUMNS: the engine's columns
from .models import se_modules
from .provenance import provenance
from .resume import ResumePoint, check_resume, plan_phases, saved_phases, set_rng_state
from .run import Run
from .runfolder import RunFolder
from .runtime import autocast, determinism, resolve_device, resolve_precision, seed_everything
from .schedules import SCHEDULES

SYNC_EVERY = 25  # steps between the host syncs of the loop: divergence check and progress callbacks
#: The clock of ``images_per_s``, ``epoch_time_s`` and ``train_time_s``. Wall time by default; the
#: loop benchmark swaps in ``time.process_time`` so that, on a CPU shared with other jobs, both
#: loops it compares are charged only for their own work.
clock = time.perf_counter


def fit(cfg: Config, report: Callable[[dict], None] | None = None, *,
        resume: str | Path | ResumePoint | None = None, datasets: Datasets | None = None,
        callbacks: Iterable[Callback] = ()) -> FitResult:
    """Train ``cfg.model`` on ``cfg.data`` with ``cfg.optim``; return the run's final results.

    After each epoch (checkpoint first, then ``metrics.jsonl``, then the callbacks, ``report``
    last) the metrics (:data:`senet.metrics.EPOCH_COLUMNS`) hold the epoch's losses and errors in %
    (NaN without a validation split; with ``run.eval_test end`` the test errors are NaN but on the
    last epoch, and on the best validation epoch once the run has ended), ``images_per_s``,
    ``epoch_time_s``, ``train_time_s``, ``lr``, ``phase``, ``status`` and ``checkpoint``.

    The returned :class:`FitResult` (also ``final.json``) has ``status`` (``completed`` |
    ``diverged``), ``epochs_run``, the last epoch's test errors, the best validation error with its
    epoch and the test errors at that epoch, ``params``, ``flops`` (at the data's input size),
    ``se_hidden``, ``wall_time_s``, ``train_time_s``, ``phases`` and ``provenance`` (which holds the
    resolved ``precision``: ``auto`` becomes ``bf16`` or ``fp32``).

    ``resume`` (a checkpoint file, a run folder, or a :class:`ResumePoint` already read) continues
    the run: model, optimizer, schedule, every RNG, epoch and best-so-far come from the checkpoint;
    with the epochs the run was planned for it continues exactly, with more it adds a schedule phase
    (:func:`senet.resume.plan_phases`). The outputs go to ``cfg.run.out`` alone (:class:`RunFolder`).
    ``datasets`` skips loading (a sweep worker that reuses one in-memory copy across trials).
    """
    wall0 = time.perf_counter()
    device = resolve_device(cfg.run.device)
    point = ResumePoint.of(resume)
    if point is not None:
        check_resume(cfg, point)
    phases = plan_phases(cfg, point)
    hooks = Callbacks(ProgressBar.when_wanted(cfg.run.progress), *callbacks,
                      ReportMetrics(report) if report is not None else None)
    folder = RunFolder(cfg.run.out) if cfg.run.out else None

    with determinism(cfg.run.deterministic, cfg.run.threads):
        run = start(cfg, device, phases, point, datasets, wall0)
        trains = cfg.optim.epochs > run.epoch
        if folder is not None:
            folder.open(run, resumed=point is not None, trains=trains)
        hooks.on_fit_start(run)
        for epoch in range(run.epoch + 1, cfg.optim.epochs + 1):
            run.epoch = epoch
            enter_phase(run)
            hooks.on_epoch_start(run)
            trained = train_one_epoch(run, hooks)
            metrics = evaluate_epoch(run, trained, hooks)
            if folder is not None:
                folder.record_epoch(run, metrics)  # the checkpoint, then the metrics line
            hooks.on_epoch_end(run, metrics)
            if run.status == "diverged":
                break

    result = run.result(folder.checkpoint_written() if folder is not None else None)
    if folder is not None:
        folder.close(run, result, trained=trains)
    hooks.on_fit_end(run, result)
    return result


# ---------------------------------------------------------------------------------------------
# The run's set-up and its restoration from a checkpoint
# ---------------------------------------------------------------------------------------------
def start(cfg: Config, device: torch.device, phases: list[dict], point: ResumePoint | None,
          datasets: Datasets | None, wall0: float) -> Run:
    """The data on the device, the seeded network, its optimizer and generators; restored from
    ``point`` when resuming."""
    precision, channels_last = resolve_precision(cfg, device)
    ds = (datasets if datasets is not None else load_datasets(cfg.data)).to(device)
    seed_everything(cfg.seed)
    model = build_from_config(cfg, cfg.model.num_classes or ds.num_classes, cfg.model.in_chans or ds.in_chans)
    cx = complexity(model, ds.input_size, ds.in_chans)
    se_hidden = se_hidden_summary(model)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(param_groups(model, cfg.optim.weight_decay, cfg.optim.decay_norm_bias),
                          lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                          nesterov=cfg.optim.nesterov and cfg.optim.momentum > 0,
                          fused=device.type == "cuda" or None)
    n_train = len(ds.train_x)
    if n_train == 0:
        raise config.ConfigError(f"dataset {ds.name!r} has no training images left (data.subset, data.val_fraction)")
    bs = min(cfg.optim.batch_size, n_train)
    data_meta = {"name": ds.name, "classes": list(ds.classes), "mean": list(ds.mean),
                 "std": list(ds.std), "input_size": list(ds.input_size), "in_chans": ds.in_chans,
                 "num_train": n_train, "num_val": len(ds.val_x), "num_test": len(ds.test_x)}
    run = Run(cfg, device, precision, channels_last, ds, model, model, opt,
              nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing),
              order_gen=torch.Generator().manual_seed(cfg.seed + 1),
              aug_gen=torch.Generator(device=device).manual_seed(cfg.seed + 2), batch_size=bs,
              steps_per_epoch=n_train // bs, phases=phases, provenance=provenance(device, precision),
              data_meta=data_meta, complexity=cx, se_hidden=se_hidden, wall0=wall0)
    if point is not None:
        restore(run, point)
    if cfg.run.compile:
        run.net = torch.compile(model)
    return run


def restore(run: Run, point: ResumePoint) -> None:
    """Continue where the checkpoint stopped: weights, optimizer, every RNG, counters, history."""
    s = point.state
    run.model.load_state_dict(s["model"])
    run.optimizer.load_state_dict(s["optimizer"])
    set_rng_state(s["rng"], run.order_gen, run.aug_gen)
    run.epoch, run.step = s["epoch"], s["step"]
    run.train_time, run.prev_wall = s["train_time_s"], s["wall_time_s"]
    run.best, run.history = dict(s["best"]), [dict(h) for h in s["metrics"]]
    run.best_state = s.get("best_model")
    run.saved_phase, run.saved_schedule = len(saved_phases(point)), s["schedule"]
    if run.cfg.optim.epochs > run.epoch:
        for h in run.history:  # epochs from before this call: the run goes on past them
            h.setdefault("phase", 1)
            if h.get("status") == "completed":
                h["status"] = "running"
    elif run.history:
        run.status = run.history[-1]["status"]


def enter_phase(run: Run) -> None:
    """At the first epoch of a phase, the phase's schedule (restored if the checkpoint holds its state)."""
    if run.phase is not None and run.epoch <= run.phase["end_epoch"]:
        return
    run.phase = next(p for p in run.phases if p["start_epoch"] < run.epoch <= p["end_epoch"])
    optim = run.cfg.optim
    length = run.phase["end_epoch"] - run.phase["start_epoch"]
    run.schedule = SCHEDULES.get(optim.schedule)(dataclasses.replace(optim, epochs=length), run.steps_per_epoch)
    if run.phase["phase"] == run.saved_phase and run.phase["schedule"] == optim.schedule:
        run.schedule.load_state_dict(run.saved_schedule)  # (another schedule starts from its own)
    run.phase_step0 = run.phase["start_epoch"] * run.steps_per_epoch


def param_groups(model: nn.Module, weight_decay: float, decay_norm_bias: bool) -> list[dict]:
    """Weight decay on weights only, unless asked: BN scales/shifts and biases (1-D tensors) get none."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if decay_norm_bias or p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def se_hidden_summary(model: nn.Module) -> str:
    """``"SE_2_1:16/1,SE_2_2:16/1,..."``: each SE block's channels C and effective hidden width
    (C alone for an excitation without a bottleneck: eca, linear)."""
    def width(m: nn.Module) -> str:
        hidden = getattr(m, "hidden", "?")
        return f"{getattr(m, 'channels', '?')}" + ("" if hidden is None else f"/{hidden}")

    return ",".join(f"{n}:{width(m)}" for n, m in se_modules(model).items())


# ---------------------------------------------------------------------------------------------
# One epoch: train, then evaluate
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainedEpoch:
    loss: float
    top1_err: float
    images: int
    seconds: float
    lr: float  # the last step's


def train_one_epoch(run: Run, hooks: Callback) -> TrainedEpoch:
    """One pass over the shuffled training split; a loss that stops being finite sets ``run.status``
    to ``diverged`` and ends the pass at the next host sync."""
    ds, device, bs = run.data, run.device, run.batch_size
    run.model.train()
    t0 = clock()
    perm = torch.randperm(len(ds.train_x), generator=run.order_gen).to(device, non_blocking=True)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    progress = TrainProgress(run.steps_per_epoch, 0, 0, time.perf_counter(), loss_sum, correct)
    for i in range(run.steps_per_epoch):
        idx = perm[i * bs:(i + 1) * bs]
        xb = normalize(augment(ds.train_x[idx], run.cfg.data.augment, run.aug_gen), ds.mean, ds.std)
        if run.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        yb = ds.train_y[idx]
        lr = run.schedule.lr(run.step - run.phase_step0)
        for g in run.optimizer.param_groups:
            g["lr"] = lr
        with autocast(device, run.precision):
            logits = run.net(xb)
        loss = run.criterion(logits.float(), yb)  # softmax and log of bf16 logits lose digits
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        run.step += 1
        progress.done, progress.images = i + 1, progress.images + bs
        loss_sum += loss.detach()
        correct += (logits.detach().argmax(1) == yb).sum()
        if (i + 1) % SYNC_EVERY == 0 or i + 1 == run.steps_per_epoch:
            if not math.isfinite(loss_sum.item()):
                run.status = "diverged"
                break
            hooks.on_train_progress(run, progress)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = clock() - t0
    loss = loss_sum.item() / max(1, progress.done)
    if not math.isfinite(loss):
        run.status = "diverged"
    return TrainedEpoch(loss, 100.0 - 100.0 * correct.item() / max(1, progress.images), progress.images,
                        seconds, lr)


def evaluate_epoch(run: Run, trained: TrainedEpoch, hooks: Callback) -> dict:
    """Validation every epoch, the test set every epoch or at the end; the best epoch so far, the
    schedule's epoch end; the epoch's metrics line, appended to ``run.history``."""
    cfg, ds = run.cfg, run.data
    t1 = clock()
    diverged = run.status == "diverged"
    last = diverged or run.epoch == cfg.optim.epochs
    tested = not diverged and (cfg.run.eval_test == "every" or last)
    val = _evaluate(run, hooks, "val", run.net, ds.val_x, ds.val_y) if not diverged else NOT_EVALUATED
    test = _evaluate(run, hooks, "test", run.net, ds.test_x, ds.test_y) if tested else NOT_EVALUATED
    if math.isfinite(val["top1_err"]) and val["top1_err"] < run.best["val_top1_err"]:
        run.best = {"val_top1_err": val["top1_err"], "epoch": run.epoch,
                    "test_top1_err": test["top1_err"], "test_top5_err": test["top5_err"]}
        run.best_state = None if tested else {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    if last and run.best_state is not None:
        _test_best_weights(run, hooks)
    t_eval = clock() - t1
    run.train_time += trained.seconds + t_eval
    if not diverged:
        run.schedule.epoch_end(val["top1_err"] if len(ds.val_x) else trained.loss)
    metrics = {
        "epoch": run.epoch, "step": run.step, "train_loss": trained.loss, "train_top1_err": trained.top1_err,
        "val_loss": val["loss"], "val_top1_err": val["top1_err"], "val_top5_err": val["top5_err"],
        "test_loss": test["loss"], "test_top1_err": test["top1_err"], "test_top5_err": test["top5_err"],
        "images_per_s": trained.images / trained.seconds if trained.seconds else math.nan,
        "epoch_time_s": trained.seconds + t_eval, "train_time_s": run.train_time, "lr": trained.lr,
        "phase": run.phase["phase"], "status": run.status if last else "running", "checkpoint": None,
    }
    run.history.append(metrics)
    return metrics


def _test_best_weights(run: Run, hooks: Callback) -> None:
    """The best validation epoch's weights meet the test set now, once; its metrics line (already
    written) gets the errors."""
    twin = copy.deepcopy(run.model)  # the run's model keeps its final weights
    twin.load_state_dict(run.best_state)
    bt = _evaluate(run, hooks, "best", twin, run.data.test_x, run.data.test_y)
    run.best.update(test_top1_err=bt["top1_err"], test_top5_err=bt["top5_err"])
    run.amend(run.best["epoch"], test_loss=bt["loss"], test_top1_err=bt["top1_err"], test_top5_err=bt["top5_err"])
    run.best_state = None


def _evaluate(run: Run, hooks: Callback, split: str, model: nn.Module, x, y) -> dict[str, float]:
    hooks.on_eval_start(run, split, model)
    errors = evaluate(model, x, y, run.data.mean, run.data.std, precision=run.precision,
                      channels_last=run.channels_last)
    hooks.on_eval_end(run, split, model, errors)
    return errors
