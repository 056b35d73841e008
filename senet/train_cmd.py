"""``senet train``: train one network from a config file and/or ``--key value`` overrides, or continue one.

A fresh run goes to ``--out`` (default: a new ``runs/<model>-<time>`` folder); a folder that already
holds a run is kept unless ``--overwrite``. The run folder also gets TensorBoard event logs
(:mod:`senet.tensorboard`). ``--resume PATH`` continues the run in that folder (or
in ``--out NEW``); ``--epochs N`` beyond a finished run adds a schedule phase (:mod:`senet.resume`).
The engine, and with it torch, is imported when the command runs.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .callbacks import Callback
from .cli import ConfiguredCommand, UserError, command
from .layout import CHECKPOINT, CONFIG_JSON, METRICS_JSONL, read_jsonl

if TYPE_CHECKING:
    from .config import Config
    from .resume import ResumePoint


def _fmt(v, spec=".2f"):
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def held_run(folder: Path) -> str | None:
    """Why ``folder`` cannot take a fresh run: a message naming what it holds, or None."""
    if (folder / CHECKPOINT).is_file():
        return (f"{folder} already holds a run; continue it with --resume {folder}, "
                "or pass --overwrite to start over")
    if (folder / METRICS_JSONL).is_file():
        n = len(read_jsonl(folder / METRICS_JSONL))
        when = ("before its first epoch ended" if n == 0
                else f"after {n} epoch{'s' if n > 1 else ''}, before its first checkpoint")
        again = (f"senet train --config {folder / CONFIG_JSON} --out {folder} --overwrite"
                 if (folder / CONFIG_JSON).is_file() else f"senet train --out {folder} --overwrite ...")
        return (f"{folder} holds a run but no checkpoint (it was interrupted {when}), so it cannot "
                f"be continued; start it again with `{again}`")
    return None


def _check_target(out: str | Path, overwrite: bool) -> None:
    """A fresh run may write to ``out``: a folder (or nothing yet) that holds no run, unless ``overwrite``."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"run.out {str(out)!r} exists and is not a folder")
    if not overwrite and (held := held_run(folder)):
        raise UserError(held)


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


class EpochLines(Callback):
    """One line per epoch on stdout: losses, errors, speed and learning rate."""

    def on_epoch_end(self, run, m):
        val = _fmt(m["val_top1_err"])
        val = "" if val == "-" else f"val err {val}%  "
        print(f"epoch {m['epoch']:>3}/{run.cfg.optim.epochs}  loss {_fmt(m['train_loss'], '.4f')}  "
              f"train err {_fmt(m['train_top1_err'])}%  {val}"
              f"test err {_fmt(m['test_top1_err'])}% / {_fmt(m['test_top5_err'])}%  "
              f"{_fmt(m['images_per_s'], '.0f')} img/s  {_fmt(m['epoch_time_s'], '.1f')} s  "
              f"lr {m['lr']:.4g}", flush=True)


@command
class TrainCommand(ConfiguredCommand):
    name = "train"
    help = "train one network (config file and/or --key value overrides); writes config, metrics, checkpoint"

    def configure(self, p):
        super().configure(p)
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
        from . import config

        if args.resume:
            return self._resume(args, overrides)
        cfg = self.config_from(args, overrides)
        made: list[Path] = []
        if not cfg.run.out:
            folder, made = _fresh_run_folder(cfg.model.name)
            cfg = config.from_flat({"run.out": str(folder)}, cfg)
            print(f"run folder: {folder} (pass --out DIR to choose one)", flush=True)
        _check_target(cfg.run.out, args.overwrite)
        try:
            return self._train(cfg, None)
        finally:
            _remove_if_empty(made)

    def _resume(self, args, overrides):
        from .resume import ResumePoint, check_resume, plan_phases, saved_phases
        from .schedules import SCHEDULES

        src = Path(args.resume)
        if src.is_dir():
            folder, path = src, src / CHECKPOINT
        elif src.exists():
            folder, path = src.parent, src
        else:
            raise UserError(f"nothing to resume: {src} does not exist")
        if not path.is_file():
            raise UserError(held_run(folder) or f"nothing to resume: {folder} holds no {CHECKPOINT}")
        point = ResumePoint.load(path)
        # the run lives where the user pointed, never at the run.out its checkpoint or a config file
        # recorded (relative to wherever it started): only an explicit --out continues it elsewhere
        given = overrides.get("run.out", overrides.get("out"))
        target = Path(given) if given else folder
        cfg = self.config_from(args, {**overrides, "run.out": str(target)}, base=point.config)
        if target.resolve() != folder.resolve():
            _check_target(target, args.overwrite)
        elif args.overwrite:
            raise UserError("--resume continues a run and --overwrite starts one over; pass one of them")
        check_resume(cfg, point)
        phases = plan_phases(cfg, point)
        if cfg.optim.epochs == point.epoch:
            print(f"{folder}: the run has already completed its {point.epoch} epochs; nothing to do "
                  f"(--epochs N with N > {point.epoch} extends it)")
            return 0
        for ph in phases[len(saved_phases(point)):]:
            prev = phases[ph["phase"] - 2]
            warm = f", {ph['warmup_epochs']:g}-epoch warm-up" if SCHEDULES.get(ph["schedule"]).uses_warmup else ""
            print(f"phase {ph['phase']}: epochs {ph['start_epoch'] + 1}-{ph['end_epoch']} train on a fresh "
                  f"{ph['schedule']} schedule (peak lr {ph['lr']:g}{warm}); the {prev['schedule']} schedule of "
                  f"phase {prev['phase']} ended at epoch {prev['end_epoch']} (--lr and --optim.* set the new one)",
                  flush=True)
        where = "" if target.resolve() == folder.resolve() else f" in {target}"
        print(f"resuming {path} at epoch {point.epoch} of {cfg.optim.epochs}{where}", flush=True)
        return self._train(cfg, point)

    def _train(self, cfg: Config, resume: ResumePoint | None) -> int:
        from .engine import fit
        from .runtime import emulated_bf16_note
        from .tensorboard import TensorBoardCallback

        if note := emulated_bf16_note(cfg.run.precision, cfg.run.device):  # bf16 on a CPU without it
            print(note, file=sys.stderr, flush=True)
        try:
            r = fit(cfg, resume=resume, callbacks=[EpochLines(), TensorBoardCallback.when_wanted(cfg)])
        except KeyboardInterrupt:
            out = Path(cfg.run.out)
            held = held_run(out)
            if (out / CHECKPOINT).is_file():
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
