"""What TensorBoard logging costs a run: the sweep's ``quick`` preset trained with and without
:class:`senet.tensorboard.TensorBoardCallback` (scalars every epoch, excitation histograms of the
validation pass), in alternating order, several times.

A warm-up epoch goes first. Both arms write the same run folder (config, metrics, checkpoint) from the same data, loaded once.
Printed per arm: the median wall time and the median CPU time of this process (all its threads, the
event writer's included), and their ratios with/without; on a machine shared with other jobs the
CPU time is the fairer measure, as the wall time also counts the time others ran. The CPU time of
the callback's own work (gate hooks, histograms, event writes) is also measured inside the runs: a
figure that background load does not blur. The one-time import of the event writer (once per
process) is printed apart and added in the last line.

    python benchmarks/tensorboard_overhead.py                  # quick preset, 5 repetitions
    python benchmarks/tensorboard_overhead.py --reps 5 --subset 1000 --epochs 1   # a slice of it
"""
from __future__ import annotations

import argparse
import importlib
import statistics
import tempfile
import time
from pathlib import Path

from ablations import studies
from senet import config
from senet.data import load_datasets
from senet.engine import fit
from senet.tensorboard import TensorBoardCallback


class TimedCallback(TensorBoardCallback):
    """The callback, charging the CPU time of its own work (hooks, histograms, writes) to ``spent``."""

    def __init__(self):
        super().__init__()
        self.spent = 0.0

    def _charged(self, fn, *args):
        t = time.process_time()
        try:
            return fn(*args)
        finally:
            self.spent += time.process_time() - t

    def on_fit_start(self, run):
        self._charged(super().on_fit_start, run)

    def on_eval_start(self, run, split, model):
        self._charged(super().on_eval_start, run, split, model)

    def _record(self, name, s):  # what the gate hooks call on every batch of the recorded pass
        self._charged(super()._record, name, s)

    def on_eval_end(self, run, split, model, errors):
        self._charged(super().on_eval_end, run, split, model, errors)

    def on_epoch_end(self, run, metrics):
        self._charged(super().on_epoch_end, run, metrics)

    def on_fit_end(self, run, result):
        self._charged(super().on_fit_end, run, result)


def timed(cfg: config.Config, datasets, logging: bool) -> tuple[float, float, float]:
    """(wall s, CPU s, CPU s of the callback's own work) of one run of ``cfg``."""
    with tempfile.TemporaryDirectory(prefix="tb-overhead-") as out:
        cfg = config.from_flat({"run.out": str(Path(out) / "run")}, cfg)
        callback = TimedCallback() if logging else None
        wall, cpu = time.perf_counter(), time.process_time()
        fit(cfg, datasets=datasets, callbacks=[callback])
        return time.perf_counter() - wall, time.process_time() - cpu, callback.spent if callback else 0.0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5, help="runs per arm (default 5)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as a sweep trial)")
    ap.add_argument("--subset", type=int, default=0, help="training images (default: the preset's 3,000)")
    ap.add_argument("--epochs", type=int, default=0, help="epochs (default: the preset's 2)")
    args = ap.parse_args(argv)

    flat = {"run.threads": args.threads, "run.progress": False}
    if args.subset:
        flat["data.subset"] = args.subset
    if args.epochs:
        flat["optim.epochs"] = args.epochs
    cfg = studies.base_config(studies.STUDIES.get("gate"), "quick", flat)
    datasets = load_datasets(cfg.data)
    print(f"quick preset: {cfg.model.name} on {datasets.name}, {len(datasets.train_x)} training, "
          f"{len(datasets.val_x)} validation and {len(datasets.test_x)} test images, {cfg.optim.epochs} "
          f"epochs, {args.threads} thread(s), {args.reps} runs per arm, alternating", flush=True)

    wall, cpu = time.perf_counter(), time.process_time()
    importlib.import_module("torch.utils.tensorboard")
    import_wall, import_cpu = time.perf_counter() - wall, time.process_time() - cpu

    timed(config.from_flat({"optim.epochs": 1}, cfg), datasets, logging=False)  # warm-up, untimed
    runs: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
    for rep in range(args.reps):
        for logging in ((False, True) if rep % 2 == 0 else (True, False)):
            runs[logging].append(timed(cfg, datasets, logging))
            w, c, own = runs[logging][-1]
            mine = f"  of which the callback {own:.3f} s" if logging else ""
            print(f"  rep {rep + 1} {'with   ' if logging else 'without'}  wall {w:7.2f} s  cpu {c:7.2f} s{mine}",
                  flush=True)

    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in runs.items()}
    own = statistics.median(r[2] for r in runs[True])
    (w0, c0), (w1, c1) = med[False], med[True]
    print(f"median without: wall {w0:.2f} s, cpu {c0:.2f} s")
    print(f"median with:    wall {w1:.2f} s, cpu {c1:.2f} s")
    print(f"ratio with/without: wall {w1 / w0:.3f}, cpu {c1 / c0:.3f}")
    print(f"the callback's own work (hooks, histograms, writes): {own:.3f} s CPU per run, "
          f"{100 * own / c0:.2f}% of a run without it")
    print(f"one-time import of the event writer: wall {import_wall:.2f} s, cpu {import_cpu:.2f} s; "
          f"ratio with it: wall {(w1 + import_wall) / w0:.3f}, cpu {(c1 + import_cpu) / c0:.3f}")


if __name__ == "__main__":
    main()
