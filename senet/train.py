"""The training engine: ``fit(cfg)`` trains one network on one dataset and reports every epoch.

Every ablation arm of the paper's §6 (Tables 10-16) is one call of :func:`fit`; the sweep layer wraps
it and never the other way round, so this module imports neither Ray nor the analysis code.

The loop is built for small images, where Python and data handling, not the network, would bound
the speed: the dataset lives on the training device as uint8 tensors, each step indexes a batch,
augments and normalises it there in a few batched ops (:mod:`senet.data`), and the running loss and
accuracy stay on the device until the epoch ends (no per-step ``.item()`` synchronisation).

Recipe (``optim.*``): SGD with momentum (Nesterov by default), weight decay (by default not on BN
parameters and biases), label smoothing, and one of the schedules in :data:`SCHEDULES` (``plateau``
is the paper's ImageNet recipe: lr ÷ 10 when the validation error stops improving).

Precision (``run.precision``, ``auto`` by default): the forward pass runs under bf16 autocast on a GPU
and on a CPU with native bf16 arithmetic (AVX512-BF16 or AMX, read from the CPU's flags by
:func:`cpu_has_native_bf16`), in fp32 elsewhere (emulated bf16 gains no speed). Autocast
leaves the parameters, the optimizer state and the BN statistics in fp32 (BN accumulates its
statistics of bf16 inputs in fp32); the loss is computed from fp32 logits. The SE excitation runs
in bf16 like the rest: in fp32 it changed the excitations of a trained SE-ResNet-20 by less than
the bf16 rounding of the features it reads (mean |Δ| 1.2e-3 vs 0.7e-3 against fp32) and left the
logits' error against fp32 the same (mean |Δ| 0.017). channels_last is on only on a GPU (on a CPU
issue 11 measured it speeding fp32 up but slowing bf16 down).

Evaluation runs under ``torch.inference_mode`` in the run's precision, in batches of
:data:`EVAL_BATCH` for the device type (on a CPU, large batches push the activations out of the
caches: 1024 ran at half the speed of 128). Validation runs every epoch (plateau schedule, best-epoch
selection); the test set every epoch (``run.eval_test every``, for curves) or only at the end
(``end``): the other epochs' metrics carry NaN test errors, the weights of the best validation epoch
are kept in memory (and in the checkpoint, for a resume) and evaluated on the test set once at the
end, beside the final weights, so ``final.json`` holds the same numbers either way and the best
epoch's metrics line gets its test errors filled in.

A loss that turns NaN or infinite (ReLU and identity gates, Table 12, can diverge) ends the run with
status ``diverged``: it is recorded in ``metrics.jsonl`` and ``final.json``, not raised.

A run is one or more schedule *phases*. Resuming with the epochs it was planned for continues it
exactly. Resuming a finished run with more epochs (``--epochs N``) adds a phase over the extra
epochs: cosine and step schedules, whose learning rate depends on the run's length, start afresh
(warm-up, then their shape over the new epochs) instead of jumping to wherever the old formula would
put the longer run; constant and plateau schedules simply go on. Each metrics line names its
``phase`` and the checkpoint and ``final.json`` list the phases. A run is never shortened.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import config as C
from .checkpoint import build_from_config, load_checkpoint, save_checkpoint
from .cli import Command, UserError, command
from .config import Config, OptimConfig
from .data import Datasets, augment, load_datasets, normalize
from .errors import UserValueError
from .models import se_modules
from .provenance import provenance
from .registry import Registry

#: Images per forward pass when evaluating, per device type. On a CPU the activations of large
#: batches leave the caches (SE-ResNet-20, 28², 1 thread, inference_mode, img/s at batch
#: 64/128/256/512/1024: fp32 1279/1318/1072/833/572, bf16 1892/2015/2063/1701/1393; `python
#: benchmarks/bench.py --only eval` measures it). A GPU wants large batches to fill it (not measured here).
EVAL_BATCH = {"cpu": 128, "cuda": 1024}
SYNC_EVERY = 25  # steps between the two host syncs of the loop: divergence check and progress bar
#: The clock of ``images_per_s``, ``epoch_time_s`` and ``train_time_s``. Wall time by default; the
#: loop benchmark swaps in ``time.process_time`` so that, on a CPU shared with other jobs, both
#: loops it compares are charged only for their own work.
clock = time.perf_counter

# Keys that must agree between a checkpoint and the config that resumes it (the rest may change,
# e.g. more epochs, another output folder or device).
_RESUME_FIXED = ("model.", "se.", "data.name", "data.subset", "data.val_fraction", "data.augment",
                 "data.split_seed", "data.image_size", "data.synthetic_", "optim.batch_size", "seed")


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules (per step, except plateau's per-epoch decision)
# ---------------------------------------------------------------------------------------------
class Schedule:
    """``lr(step)`` for every SGD step; ``epoch_end(metric)`` after each epoch (plateau uses it).

    ``step`` and ``cfg.epochs`` count from the start of the schedule's phase (see :func:`plan_phases`).
    """

    #: The learning rate depends on the phase's length, so extending a finished run needs a new phase.
    follows_length = False

    def __init__(self, cfg: OptimConfig, steps_per_epoch: int):
        self.peak = cfg.lr
        self.spe = steps_per_epoch
        self.total = cfg.epochs * steps_per_epoch
        self.warmup = int(round(cfg.warmup_epochs * steps_per_epoch)) if self.uses_warmup else 0
        self.cfg = cfg

    uses_warmup = False

    def lr(self, step: int) -> float:
        if step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        return self.after_warmup(step)

    def after_warmup(self, step: int) -> float:
        return self.peak

    def epoch_end(self, metric: float) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


SCHEDULES: Registry[type[Schedule]] = Registry("schedule")


@SCHEDULES.register("constant")
class ConstantSchedule(Schedule):
    """The peak learning rate throughout."""


@SCHEDULES.register("cosine")
class CosineSchedule(Schedule):
    """Linear warm-up, then half a cosine from the peak to 0 at the last step (Loshchilov & Hutter)."""

    uses_warmup = True
    follows_length = True

    def after_warmup(self, step):
        span = max(1, self.total - self.warmup)
        t = min(1.0, (step - self.warmup) / span)
        return 0.5 * self.peak * (1 + math.cos(math.pi * t))


@SCHEDULES.register("step")
class StepSchedule(Schedule):
    """Linear warm-up, then ÷10 at each epoch of ``optim.milestones`` (default: 50% and 75%; both
    count from the first epoch of the schedule's phase)."""

    uses_warmup = True
    follows_length = True

    def __init__(self, cfg, steps_per_epoch):
        super().__init__(cfg, steps_per_epoch)
        ms = cfg.milestones
        self.milestones = ([int(m) for m in ms.split(",")] if ms
                           else [int(cfg.epochs * 0.5), int(cfg.epochs * 0.75)])

    def after_warmup(self, step):
        epoch = step // self.spe
        return self.peak * 0.1 ** sum(epoch >= m for m in self.milestones)


@SCHEDULES.register("plateau")
class PlateauSchedule(Schedule):
    """The paper's ImageNet recipe: ÷10 when the validation error has not improved for
    ``optim.plateau_patience`` epochs (the training loss when there is no validation split)."""

    def __init__(self, cfg, steps_per_epoch):
        super().__init__(cfg, steps_per_epoch)
        self.best, self.bad, self.scale = math.inf, 0, 1.0

    def after_warmup(self, step):
        return self.peak * self.scale

    def epoch_end(self, metric):
        if not math.isfinite(metric):
            return
        if metric < self.best - 1e-9:
            self.best, self.bad = metric, 0
        else:
            self.bad += 1
            if self.bad > self.cfg.plateau_patience:
                self.scale, self.bad = self.scale * 0.1, 0

    def state_dict(self):
        return {"best": self.best, "bad": self.bad, "scale": self.scale}

    def load_state_dict(self, state):
        self.best, self.bad, self.scale = state["best"], state["bad"], state["scale"]


# ---------------------------------------------------------------------------------------------
# Device, precision, optimizer, RNG
# ---------------------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise C.ConfigError(f"bad value for run.device: {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise C.ConfigError(f"bad value for run.device: {name!r} (no CUDA device is available)")
    return device


#: CPU flags (Linux ``/proc/cpuinfo``) of native bf16 arithmetic: AVX512-BF16 (dot products of bf16
#: pairs) and AMX (bf16 tile matrix multiply). Without them bf16 is converted to fp32 and back around
#: fp32 arithmetic: nothing to gain, rounding to lose.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them; empty where there is no /proc/cpuinfo."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":  # x86; the same on every core
            return frozenset(value.split())
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX), detected from its flags.

    Elsewhere (no such flag, or no /proc/cpuinfo to read) False: ``run.precision auto`` then trains
    in fp32, and ``bf16`` still works but runs emulated.
    """
    return bool(cpu_flags() & set(BF16_CPU_FLAGS))


def default_precision(device: torch.device) -> str:
    """What ``run.precision auto`` means on ``device``."""
    if device.type == "cuda":
        return "bf16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def eval_batch(device: torch.device) -> int:
    """Images per forward pass when evaluating on ``device`` (see :data:`EVAL_BATCH`)."""
    return EVAL_BATCH.get(device.type, EVAL_BATCH["cpu"])


def resolve_precision(cfg: Config, device: torch.device) -> tuple[str, bool]:
    """(``"bf16"`` | ``"fp32"``, channels_last) after resolving ``auto`` (:func:`default_precision`)."""
    precision = cfg.run.precision
    if precision == "auto":
        precision = default_precision(device)
    cl = cfg.run.channels_last
    channels_last = device.type == "cuda" if cl == "auto" else cl == "true"
    return precision, channels_last


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


def rng_state(order_gen: torch.Generator, aug_gen: torch.Generator) -> dict:
    """Every RNG of the run as tensors and plain values (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
        "order": order_gen.get_state(),
        "augment": aug_gen.get_state(),
    }


def set_rng_state(state: dict, order_gen: torch.Generator, aug_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    order_gen.set_state(state["order"])
    try:
        aug_gen.set_state(state["augment"])
    except RuntimeError:  # a CUDA generator's state does not fit a CPU one, and vice versa
        raise ResumeError("cannot resume exactly on another device type than the checkpoint's "
                         "(the augmentation generator lives on the training device); set run.device") from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def _determinism(on: bool, threads: int):
    """Deterministic algorithms and thread count for the run, restored afterwards (a Ray worker
    that reuses its process for the next trial must not inherit them)."""
    prev = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
            torch.backends.cudnn.deterministic, torch.get_num_threads())
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = not on
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = prev[1], prev[2]
        torch.set_num_threads(prev[3])


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mean, std, *, precision: str = "fp32",
             channels_last: bool = False, batch_size: int | None = None) -> dict[str, float]:
    """Top-1 / top-5 error (%) and mean cross-entropy on uint8 images, under inference_mode.

    ``batch_size`` defaults to the device's :data:`EVAL_BATCH`. Returns NaN for an empty split. The
    model is put in eval mode and restored afterwards.
    """
    if len(x) == 0:
        return {"top1_err": math.nan, "top5_err": math.nan, "loss": math.nan}
    was_training = model.training
    model.eval()
    device = x.device
    batch_size = batch_size or eval_batch(device)
    wrong1 = torch.zeros((), dtype=torch.int64, device=device)
    wrong5 = torch.zeros((), dtype=torch.int64, device=device)
    loss = torch.zeros((), dtype=torch.float64, device=device)
    try:
        for i in range(0, len(x), batch_size):
            xb = normalize(x[i:i + batch_size], mean, std)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yb = y[i:i + batch_size]
            with autocast(device, precision):
                out = model(xb)
            out = out.float()
            loss += F.cross_entropy(out, yb, reduction="sum").double()
            top = out.topk(min(5, out.shape[1]), dim=1).indices
            hit = top == yb.view(-1, 1)
            wrong1 += (~hit[:, 0]).sum()
            wrong5 += (~hit.any(1)).sum()
    finally:
        model.train(was_training)
    n = len(x)
    return {"top1_err": 100.0 * wrong1.item() / n, "top5_err": 100.0 * wrong5.item() / n,
            "loss": loss.item() / n}


# ---------------------------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------------------------
_NOT_EVALUATED = {"top1_err": math.nan, "top5_err": math.nan, "loss": math.nan}


def _evaluate_state(model: nn.Module, state: dict, ds: Datasets, **kw) -> dict[str, float]:
    """Test errors of ``model``'s architecture with the weights ``state`` (``model`` is untouched)."""
    twin = copy.deepcopy(model)
    twin.load_state_dict(state)
    return evaluate(twin, ds.test_x, ds.test_y, ds.mean, ds.std, **kw)


def _finite(v):
    return v if not isinstance(v, float) or math.isfinite(v) else None


def _json_line(d: dict) -> str:
    """Strict JSON (non-finite numbers become null, so any JSON reader takes the files)."""
    return json.dumps({k: _finite(v) for k, v in d.items()})


def se_hidden_summary(model: nn.Module) -> str:
    """``"SE_2_1:16/1,SE_2_2:16/1,..."``: each SE block's channels C and effective hidden width."""
    return ",".join(f"{n}:{getattr(m, 'channels', '?')}/{getattr(m, 'hidden', '?')}"
                    for n, m in se_modules(model).items())


class ResumeError(UserValueError):
    """A checkpoint that cannot be continued as asked (another model, fewer epochs, ...)."""


def _check_resume(cfg: Config, saved: dict) -> None:
    now, then = C.flatten(cfg), C.flatten(C.from_dict(saved))
    bad = [k for k in now if k.startswith(_RESUME_FIXED) and now[k] != then[k]]
    if bad:
        raise ResumeError("cannot resume: the config differs from the checkpoint's in "
                          + ", ".join(f"{k} ({then[k]!r} -> {now[k]!r})" for k in bad))


def _new_phase(number: int, start: int, end: int, cfg: Config) -> dict:
    return {"phase": number, "start_epoch": start, "end_epoch": end, "schedule": cfg.optim.schedule,
            "lr": cfg.optim.lr, "warmup_epochs": cfg.optim.warmup_epochs}


def saved_phases(ckpt: dict) -> list[dict]:
    """The phases a checkpoint's run was planned with (one, for checkpoints that predate phases)."""
    if ckpt.get("phases"):
        return [dict(p) for p in ckpt["phases"]]
    optim = C.from_dict(ckpt["config"]).optim
    return [{"phase": 1, "start_epoch": 0, "end_epoch": optim.epochs, "schedule": optim.schedule,
             "lr": optim.lr, "warmup_epochs": optim.warmup_epochs}]


def plan_phases(cfg: Config, ckpt: dict | None) -> list[dict]:
    """The run's schedule phases once ``fit(cfg, resume=ckpt)`` has trained ``cfg.optim.epochs``.

    A fresh run has one phase over all its epochs. A resumed run keeps its phases; asking for more
    epochs than it was planned for extends its last phase when the schedule does not depend on the
    length (constant, plateau) and stays the same, and otherwise adds a phase over the extra epochs.
    Raises ResumeError for fewer epochs than were trained, or fewer than an unfinished run was
    planned for (that would change its schedule midway).
    """
    want = cfg.optim.epochs
    if ckpt is None:
        return [_new_phase(1, 0, want, cfg)]
    done = int(ckpt["epoch"])
    phases = saved_phases(ckpt)
    planned = phases[-1]["end_epoch"]
    if want < done:
        raise ResumeError(f"the run has already trained {done} epochs; --epochs {want} would shorten it "
                          f"(give {done} or more)")
    if done < planned and want < planned:
        raise ResumeError(f"the run stopped at epoch {done} of the {planned} it was planned for; resume it "
                          f"with --epochs {planned} (or more, to add a phase after epoch {planned})")
    if want > planned:
        last = phases[-1]
        if SCHEDULES.get(last["schedule"]).follows_length or cfg.optim.schedule != last["schedule"]:
            phases.append(_new_phase(last["phase"] + 1, planned, want, cfg))
        else:
            last["end_epoch"] = want
    return phases


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def fit(cfg: Config, report: Callable[[dict], None] | None = None, *, resume: str | Path | None = None,
        datasets: Datasets | None = None) -> dict:
    """Train ``cfg.model`` on ``cfg.data`` with ``cfg.optim``; return the run's final results.

    After each epoch (checkpoint first, then ``metrics.jsonl``, then ``report(metrics)``) the
    metrics hold ``epoch``, ``train_loss``, ``train_top1_err``, ``val_top1_err``, ``val_top5_err``,
    ``test_top1_err``, ``test_top5_err`` (errors in %, NaN without a validation split; with
    ``run.eval_test end`` the test errors are NaN but on the last epoch, and on the best validation
    epoch once the run has ended), ``images_per_s``, ``epoch_time_s``, ``train_time_s``, ``lr``,
    ``phase``, ``status`` and ``checkpoint``.

    The returned dict (also ``final.json``) has ``status`` (``completed`` | ``diverged``),
    ``epochs_run``, the last epoch's test errors, the best validation error with its epoch and the
    test errors at that epoch, ``params``, ``flops`` (1 multiply-add = 1 FLOP, at the data's input
    size), ``se_hidden``, ``wall_time_s``, ``train_time_s``, ``phases`` and ``provenance`` (which
    holds the resolved ``precision``: ``auto`` becomes ``bf16`` or ``fp32``).

    ``resume`` (a checkpoint file or a run folder) continues the run: model, optimizer, schedule,
    every RNG, epoch and best-so-far come from the checkpoint; with the epochs the run was planned
    for it continues exactly, with more it adds a schedule phase (:func:`plan_phases`). The outputs go
    to ``cfg.run.out`` alone, whatever folder the checkpoint names. A resumed run's files there are
    rewritten only once its first new epoch is done (until then a finished run stays as it was), and
    a call with no epoch left to train only adds the run files ``cfg.run.out`` lacks. ``datasets``
    skips loading (a sweep worker that reuses one in-memory copy across trials).
    """
    wall0 = time.perf_counter()
    C.validate(cfg)
    device = resolve_device(cfg.run.device)
    precision, channels_last = resolve_precision(cfg, device)
    ckpt = load_checkpoint(resume) if resume is not None else None
    if ckpt is not None:
        _check_resume(cfg, ckpt["config"])
    phases = plan_phases(cfg, ckpt)
    out = Path(cfg.run.out) if cfg.run.out else None

    with _determinism(cfg.run.deterministic, cfg.run.threads):
        ds = datasets if datasets is not None else load_datasets(cfg.data)
        ds = ds.to(device)
        seed_everything(cfg.seed)
        model = build_from_config(cfg, cfg.model.num_classes or ds.num_classes,
                                  cfg.model.in_chans or ds.in_chans)
        from .complexity import complexity  # noqa: PLC0415

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
            raise C.ConfigError(f"dataset {ds.name!r} has no training images left (data.subset, data.val_fraction)")
        bs = min(cfg.optim.batch_size, n_train)
        steps_per_epoch = n_train // bs  # the ragged last batch is dropped (BN on a few images is noise)
        order_gen = torch.Generator().manual_seed(cfg.seed + 1)
        aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 2)
        prov = provenance(device, precision)
        data_meta = {"name": ds.name, "classes": list(ds.classes), "mean": list(ds.mean),
                     "std": list(ds.std), "input_size": list(ds.input_size), "in_chans": ds.in_chans,
                     "num_train": n_train, "num_val": len(ds.val_x), "num_test": len(ds.test_x)}

        start_epoch, step, train_time, prev_wall = 0, 0, 0.0, 0.0
        best = {"val_top1_err": math.inf, "epoch": None, "test_top1_err": math.nan,
                "test_top5_err": math.nan}
        history: list[dict] = []
        # the weights of the best validation epoch while its test error is unknown (run.eval_test end)
        best_state: dict[str, torch.Tensor] | None = None
        ckpt_phase = 0  # the phase whose schedule state the checkpoint holds
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            set_rng_state(ckpt["rng"], order_gen, aug_gen)
            start_epoch, step = ckpt["epoch"], ckpt["step"]
            train_time, prev_wall = ckpt["train_time_s"], ckpt["wall_time_s"]
            best, history = dict(ckpt["best"]), [dict(h) for h in ckpt["metrics"]]
            best_state = ckpt.get("best_model")
            ckpt_phase = len(saved_phases(ckpt))
        net = torch.compile(model) if cfg.run.compile else model
        criterion = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)
        to_train = cfg.optim.epochs - start_epoch
        if to_train > 0:
            for h in history:  # epochs from before this call: the run goes on past them
                h.setdefault("phase", 1)
                if h.get("status") == "completed":
                    h["status"] = "running"
                # the run's one checkpoint lives in out now; it was written at the resumed epoch
                # (whose line the checkpoint saved before it knew the file's name)
                if out is not None and (h.get("checkpoint") or h.get("epoch") == start_epoch):
                    h["checkpoint"] = str(out / "checkpoint.pt")

        # A fresh run writes its config and an empty history now (an interrupted first epoch leaves
        # a folder that says what it was). A resumed run rewrites its files from the checkpoint's
        # history with its first new epoch (no orphan epochs of a run killed after its last
        # checkpoint survive), so a finished run stays as it was until there is something new.
        rewrite = True
        if out is not None and ckpt is None:
            out.mkdir(parents=True, exist_ok=True)
            for stale in ("checkpoint.pt", "final.json"):  # left by the run --overwrite replaces
                (out / stale).unlink(missing_ok=True)
            C.save(cfg, out / "config.json")
            (out / "metrics.jsonl").write_text("")
            rewrite = False

        status = history[-1]["status"] if history and to_train <= 0 else "completed"
        epoch = start_epoch
        show = cfg.run.progress and sys.stderr.isatty()  # no bar in logs and Ray workers
        phase, schedule, phase_step0 = None, None, 0
        for epoch in range(start_epoch + 1, cfg.optim.epochs + 1):
            if phase is None or epoch > phase["end_epoch"]:
                phase = next(p for p in phases if p["start_epoch"] < epoch <= p["end_epoch"])
                length = phase["end_epoch"] - phase["start_epoch"]
                schedule = SCHEDULES.get(cfg.optim.schedule)(
                    dataclasses.replace(cfg.optim, epochs=length), steps_per_epoch)
                if phase["phase"] == ckpt_phase and phase["schedule"] == cfg.optim.schedule:
                    schedule.load_state_dict(ckpt["schedule"])  # (another schedule starts from its own)
                phase_step0 = phase["start_epoch"] * steps_per_epoch
            # ---- train one epoch ----
            model.train()
            t0 = clock()
            perm = torch.randperm(n_train, generator=order_gen).to(device, non_blocking=True)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            bar = _progress(show, steps_per_epoch, epoch, cfg.optim.epochs)
            last_show = w0 = time.perf_counter()
            seen = 0
            for i in range(steps_per_epoch):
                idx = perm[i * bs:(i + 1) * bs]
                xb = normalize(augment(ds.train_x[idx], cfg.data.augment, aug_gen), ds.mean, ds.std)
                if channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                yb = ds.train_y[idx]
                lr = schedule.lr(step - phase_step0)
                for g in opt.param_groups:
                    g["lr"] = lr
                with autocast(device, precision):
                    logits = net(xb)
                loss = criterion(logits.float(), yb)  # softmax and log of bf16 logits lose digits
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                seen += bs
                loss_sum += loss.detach()
                correct += (logits.detach().argmax(1) == yb).sum()
                if (i + 1) % SYNC_EVERY == 0 or i + 1 == steps_per_epoch:
                    if not math.isfinite(loss_sum.item()):
                        status = "diverged"
                        break
                    if bar is not None and time.perf_counter() - last_show > 0.5:
                        last_show = time.perf_counter()
                        bar.set_postfix(loss=f"{loss_sum.item() / (i + 1):.3f}",
                                        acc=f"{100 * correct.item() / seen:.1f}%",
                                        img_s=f"{seen / (last_show - w0):.0f}", refresh=False)
                if bar is not None:
                    bar.update(1)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t_train = clock() - t0
            if bar is not None:
                bar.close()
            train_loss = loss_sum.item() / max(1, i + 1)
            train_err = 100.0 - 100.0 * correct.item() / max(1, seen)
            if not math.isfinite(train_loss):
                status = "diverged"

            # ---- evaluate: validation every epoch, the test set every epoch or at the end ----
            t1 = clock()
            last = status == "diverged" or epoch == cfg.optim.epochs
            tested = status != "diverged" and (cfg.run.eval_test == "every" or last)
            kw = dict(precision=precision, channels_last=channels_last)
            val = test = _NOT_EVALUATED
            if status != "diverged":
                val = evaluate(net, ds.val_x, ds.val_y, ds.mean, ds.std, **kw)
            if tested:
                test = evaluate(net, ds.test_x, ds.test_y, ds.mean, ds.std, **kw)
            if math.isfinite(val["top1_err"]) and val["top1_err"] < best["val_top1_err"]:
                best = {"val_top1_err": val["top1_err"], "epoch": epoch,
                        "test_top1_err": test["top1_err"], "test_top5_err": test["top5_err"]}
                best_state = None if tested else {k: v.detach().clone() for k, v in model.state_dict().items()}
            if last and best_state is not None:
                # the best validation epoch's weights meet the test set now, once, and its metrics
                # line (already written) gets the errors: metrics.jsonl is rewritten below
                bt = _evaluate_state(model, best_state, ds, **kw)
                best.update(test_top1_err=bt["top1_err"], test_top5_err=bt["top5_err"])
                for h in history:
                    if h["epoch"] == best["epoch"]:
                        h.update(test_loss=bt["loss"], test_top1_err=bt["top1_err"], test_top5_err=bt["top5_err"])
                best_state, rewrite = None, True
            t_eval = clock() - t1
            train_time += t_train + t_eval
            if status != "diverged":
                schedule.epoch_end(val["top1_err"] if len(ds.val_x) else train_loss)

            metrics = {
                "epoch": epoch, "step": step, "train_loss": train_loss, "train_top1_err": train_err,
                "val_loss": val["loss"], "val_top1_err": val["top1_err"], "val_top5_err": val["top5_err"],
                "test_loss": test["loss"], "test_top1_err": test["top1_err"],
                "test_top5_err": test["top5_err"], "images_per_s": seen / t_train if t_train else math.nan,
                "epoch_time_s": t_train + t_eval, "train_time_s": train_time, "lr": lr,
                "phase": phase["phase"], "status": status if last else "running", "checkpoint": None,
            }
            history.append(metrics)
            # ---- checkpoint, then the metrics line, then the report ----
            if out is not None and status != "diverged" and (last or epoch % cfg.run.checkpoint_every == 0):
                metrics["checkpoint"] = str(save_checkpoint(
                    out / "checkpoint.pt", model=model.state_dict(), optimizer=opt.state_dict(),
                    schedule=schedule.state_dict(), rng=rng_state(order_gen, aug_gen), epoch=epoch,
                    step=step, best=best, metrics=history, phases=phases, train_time_s=train_time,
                    wall_time_s=prev_wall + time.perf_counter() - wall0, config=C.to_dict(cfg),
                    data=data_meta, provenance=prov,
                    **({"best_model": best_state} if best_state is not None else {})))
            if out is not None and rewrite:
                out.mkdir(parents=True, exist_ok=True)
                C.save(cfg, out / "config.json")
                _write_atomic(out / "metrics.jsonl", "".join(_json_line(h) + "\n" for h in history))
                (out / "final.json").unlink(missing_ok=True)  # the run is running again
                rewrite = False
            elif out is not None:
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(_json_line(metrics) + "\n")
            if report is not None:
                report(dict(metrics))
            if status == "diverged":
                break

    final_test = history[-1] if history else {}
    result = {
        "status": status,
        "epochs_run": epoch,
        "test_top1_err": final_test.get("test_top1_err", math.nan),
        "test_top5_err": final_test.get("test_top5_err", math.nan),
        "best_val_top1_err": best["val_top1_err"] if best["epoch"] is not None else math.nan,
        "best_val_epoch": best["epoch"],
        "test_top1_err_at_best_val": best["test_top1_err"],
        "test_top5_err_at_best_val": best["test_top5_err"],
        "wall_time_s": prev_wall + time.perf_counter() - wall0,
        "train_time_s": train_time,
        "params": cx.params,
        "flops": cx.flops,
        "se_params": cx.se_params,
        "se_flops": cx.se_flops,
        "se_hidden": se_hidden,
        "dataset": data_meta["name"],
        "num_train": n_train,
        "num_test": data_meta["num_test"],  # sets the resolution of a test error: 100/N points
        "checkpoint": str(out / "checkpoint.pt") if out is not None and (out / "checkpoint.pt").exists() else None,
        "phases": phases,
        "provenance": prov,
    }
    final = json.dumps({k: _finite(v) for k, v in result.items()}, indent=1) + "\n"
    if out is not None and to_train > 0:
        (out / "final.json").write_text(final)
    elif out is not None:
        # nothing trained: a finished run's folder stays byte-identical, but a bare one (a sweep
        # trial restored from only its last checkpoint) gets the files every run folder has
        out.mkdir(parents=True, exist_ok=True)
        files = {"config.json": lambda f: C.save(cfg, f), "final.json": lambda f: f.write_text(final),
                 "metrics.jsonl": lambda f: f.write_text("".join(_json_line(h) + "\n" for h in history))}
        for name, write in files.items():
            if not (out / name).exists():
                write(out / name)
    return result


def _progress(show: bool, total: int, epoch: int, epochs: int):
    if not show:
        return None
    from tqdm import tqdm  # noqa: PLC0415

    return tqdm(total=total, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False, file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5)


# ---------------------------------------------------------------------------------------------
# senet train
# ---------------------------------------------------------------------------------------------
def _fmt(v, spec=".2f"):
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _run_files(folder: Path) -> str | None:
    """Why ``folder`` cannot take a fresh run: a message naming what it holds, or None."""
    if (folder / "checkpoint.pt").is_file():
        return (f"{folder} already holds a run; continue it with --resume {folder}, "
                "or pass --overwrite to start over")
    metrics = folder / "metrics.jsonl"
    if metrics.is_file():
        n = sum(1 for ln in metrics.read_text().splitlines() if ln.strip())
        when = ("before its first epoch ended" if n == 0
                else f"after {n} epoch{'s' if n > 1 else ''}, before its first checkpoint")
        again = (f"senet train --config {folder / 'config.json'} --out {folder} --overwrite"
                 if (folder / "config.json").is_file() else f"senet train --out {folder} --overwrite ...")
        return (f"{folder} holds a run but no checkpoint (it was interrupted {when}), so it cannot "
                f"be continued; start it again with `{again}`")
    return None


def _fresh_run_folder(model: str) -> tuple[Path, list[Path]]:
    """Claim ``runs/<model>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``... if taken); also return the
    folders this created, so a run that fails before writing anything leaves none behind."""
    base = Path("runs") / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"
    made = [] if base.parent.exists() else [base.parent]
    base.parent.mkdir(parents=True, exist_ok=True)
    for k in range(1, 1000):
        folder = base if k == 1 else base.with_name(f"{base.name}-{k}")
        try:
            folder.mkdir()  # atomic: two runs started in the same second get different folders
        except FileExistsError:
            continue
        return folder, [folder, *made]
    raise UserError(f"no free run folder next to {base}; pass --out DIR")


def _remove_if_empty(folders: list[Path]) -> None:
    for f in folders:
        with contextlib.suppress(OSError):
            f.rmdir()  # only succeeds on an empty folder


@command
class TrainCommand(Command):
    name = "train"
    help = "train one network (config file and/or --key value overrides); writes config, metrics, checkpoint"
    overrides = True

    def configure(self, p):
        p.add_argument("--config", metavar="FILE", help="JSON or YAML config (nested or flat keys)")
        p.add_argument("--resume", metavar="PATH",
                       help="continue the run in this folder (or the folder of this checkpoint file), "
                            "writing there and nowhere else; --epochs N beyond a finished run adds a "
                            "new schedule phase; --out NEW continues it in NEW instead")
        p.add_argument("--overwrite", action="store_true",
                       help="start afresh in an --out folder that already holds a run")
        p.epilog = ("config keys as options: --model NAME --data.name fashion-mnist|cifar10|cifar100|"
                    "imagefolder|synthetic --data.root DIR --data.subset N --epochs E --lr LR --seed S "
                    "--se.gate G ... --out DIR (default: a new runs/<model>-<time>). "
                    "`senet config [--key value ...]` prints every key with its value, default, choices "
                    "and meaning.")

    def run(self, args, overrides):
        if args.resume:
            return self._resume(args, overrides)
        cfg = C.from_flat(overrides, C.load(args.config) if args.config else None)
        made: list[Path] = []
        if not cfg.run.out:
            folder, made = _fresh_run_folder(cfg.model.name)
            cfg = C.from_flat({"run.out": str(folder)}, cfg)
            print(f"run folder: {folder} (pass --out DIR to choose one)", flush=True)
        out = Path(cfg.run.out)
        if out.exists() and not out.is_dir():
            raise UserError(f"run.out {cfg.run.out!r} exists and is not a folder")
        if not args.overwrite and (held := _run_files(out)):
            raise UserError(held)
        try:
            return self._train(cfg, None)
        finally:
            _remove_if_empty(made)

    def _resume(self, args, overrides):
        src = Path(args.resume)
        if src.is_dir():
            folder, path = src, src / "checkpoint.pt"
        elif src.exists():
            folder, path = src.parent, src
        else:
            raise UserError(f"nothing to resume: {src} does not exist")
        if not path.is_file():
            raise UserError(_run_files(folder) or f"nothing to resume: {folder} holds no checkpoint.pt")
        ckpt = load_checkpoint(path)
        # the run lives where the user pointed, never at the run.out its checkpoint or a config file
        # recorded (relative to wherever it started): only an explicit --out continues it elsewhere
        given = overrides.get("run.out", overrides.get("out"))
        target = Path(given) if given else folder
        cfg = C.from_flat({**overrides, "run.out": str(target)},
                          C.load(args.config) if args.config else C.from_dict(ckpt["config"]))
        if target.resolve() != folder.resolve():
            if target.exists() and not target.is_dir():
                raise UserError(f"run.out {str(target)!r} exists and is not a folder")
            if not args.overwrite and (held := _run_files(target)):
                raise UserError(held)
        elif args.overwrite:
            raise UserError("--resume continues a run and --overwrite starts one over; pass one of them")
        _check_resume(cfg, ckpt["config"])
        phases = plan_phases(cfg, ckpt)
        done = int(ckpt["epoch"])
        if cfg.optim.epochs == done:
            print(f"{folder}: the run has already completed its {done} epochs; nothing to do "
                  f"(--epochs N with N > {done} extends it)")
            return 0
        before = saved_phases(ckpt)
        for ph in phases[len(before):]:
            prev = phases[ph["phase"] - 2]
            warm = f", {ph['warmup_epochs']:g}-epoch warm-up" if SCHEDULES.get(ph["schedule"]).uses_warmup else ""
            print(f"phase {ph['phase']}: epochs {ph['start_epoch'] + 1}-{ph['end_epoch']} train on a fresh "
                  f"{ph['schedule']} schedule (peak lr {ph['lr']:g}{warm}); the {prev['schedule']} schedule of "
                  f"phase {prev['phase']} ended at epoch {prev['end_epoch']} (--lr and --optim.* set the new one)",
                  flush=True)
        where = "" if target.resolve() == folder.resolve() else f" in {target}"
        print(f"resuming {path} at epoch {done} of {cfg.optim.epochs}{where}", flush=True)
        return self._train(cfg, path)

    def _train(self, cfg: Config, resume: Path | None) -> int:
        def show(m):
            val = _fmt(m["val_top1_err"])
            val = "" if val == "-" else f"val err {val}%  "
            print(f"epoch {m['epoch']:>3}/{cfg.optim.epochs}  loss {_fmt(m['train_loss'], '.4f')}  "
                  f"train err {_fmt(m['train_top1_err'])}%  {val}"
                  f"test err {_fmt(m['test_top1_err'])}% / {_fmt(m['test_top5_err'])}%  "
                  f"{_fmt(m['images_per_s'], '.0f')} img/s  {_fmt(m['epoch_time_s'], '.1f')} s  "
                  f"lr {m['lr']:.4g}", flush=True)

        try:
            r = fit(cfg, show, resume=resume)
        except KeyboardInterrupt:
            out = Path(cfg.run.out)
            held = _run_files(out)
            if (out / "checkpoint.pt").is_file():
                held = f"continue it with `senet train --resume {out} --epochs {cfg.optim.epochs}`"
            if held:
                print(f"senet train: {held}", file=sys.stderr)
            raise
        best = ("" if r["best_val_epoch"] is None else
                f", best val err {_fmt(r['best_val_top1_err'])}% at epoch {r['best_val_epoch']}")
        print(f"{cfg.model.name} on {r['dataset']}: status {r['status']}, {r['epochs_run']} epochs, "
              f"test top-1 err {_fmt(r['test_top1_err'])}% (acc {_fmt(100 - r['test_top1_err'])}%), "
              f"top-5 err {_fmt(r['test_top5_err'])}%{best}, "
              f"train {r['train_time_s']:.0f} s, wall {r['wall_time_s']:.0f} s, {r['provenance']['precision']}"
              + f", out {cfg.run.out}")
        return 0
