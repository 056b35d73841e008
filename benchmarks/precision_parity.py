"""Accuracy parity of bf16 and fp32 training: the same recipe and seeds in both precisions, paired by seed.

    python benchmarks/precision_parity.py                 # SE-ResNet-20, Fashion-MNIST 20k x 5 epochs, seeds 0-2
    python benchmarks/precision_parity.py --dry-run       # print the commands only
    python benchmarks/precision_parity.py --seeds 0,1,2,3,4 --jobs 2 --out runs/precision-parity

Each run is `senet train --model se_resnet20 --data.name fashion-mnist --data.subset 20000 --epochs 5
--seed S --run.precision fp32|bf16 --run.threads 1`, two at a time (``--jobs``) on one thread each (on
a 2-core machine, one run per core). A run whose folder already holds a ``final.json`` is not run
again, and one that holds only a checkpoint is resumed, so an interrupted comparison continues where
it stopped. Then it prints the test top-1 error per seed and precision, and the paired difference
bf16 - fp32: its mean and Student-t 95% interval over the seeds (``scipy.stats.ttest_rel``). Parity
(bf16 may stand for fp32) is an interval that covers 0, or a mean difference below 0.3 percentage
points. bf16 is forced with ``run.precision bf16``: on a CPU without native bf16 it runs emulated
(slowly), and the comparison still holds.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

PRECISIONS = ("fp32", "bf16")
_SENET = [sys.executable, "-c", "import sys; from senet.cli import main; sys.exit(main(sys.argv[1:]))"]


def train_args(args, precision: str, seed: int, out: Path) -> list[str]:
    argv = ["train", "--model", args.model, "--data.name", "fashion-mnist", "--data.subset", str(args.subset),
            "--epochs", str(args.epochs), "--seed", str(seed), "--run.precision", precision,
            "--run.threads", "1", "--run.progress", "false"]
    if (out / "checkpoint.pt").is_file():
        return ["train", "--resume", str(out), "--epochs", str(args.epochs)]
    return [*argv, "--out", str(out), "--overwrite"]  # --overwrite: a folder left before any checkpoint


def run_all(jobs: list[tuple[list[str], Path]], parallel: int) -> None:
    """Run the commands ``parallel`` at a time; stop at the first failure (its log names why)."""
    pending, running = list(jobs), []
    while pending or running:
        while pending and len(running) < parallel:
            argv, out = pending.pop(0)
            out.mkdir(parents=True, exist_ok=True)
            log = open(out.parent / f"{out.name}.log", "a")  # noqa: SIM115 - closed when the run ends
            print(f"start: senet {shlex.join(argv)}", flush=True)
            running.append((subprocess.Popen([*_SENET, *argv], stdout=log, stderr=subprocess.STDOUT), out, log))
        time.sleep(2)
        for item in list(running):
            proc, out, log = item
            if proc.poll() is None:
                continue
            log.close()
            running.remove(item)
            if proc.returncode != 0:
                for p, _, lg in running:
                    p.terminate()
                    p.wait()
                    lg.close()
                raise SystemExit(f"precision_parity: the run in {out} failed (exit {proc.returncode}); "
                                 f"see {out.parent / (out.name + '.log')}")
            print(f"done:  {out}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="se_resnet20")
    p.add_argument("--subset", type=int, default=20000, help="training images (data.subset)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (3 or more for an interval)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each")
    p.add_argument("--out", default="runs/precision-parity", help="folder of the run folders")
    p.add_argument("--dry-run", action="store_true", help="print the commands and stop")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    root = Path(args.out)
    folder = {(pr, s): root / f"{args.model}-{pr}-seed{s}" for s in seeds for pr in PRECISIONS}

    todo = [(train_args(args, pr, s, out), out) for (pr, s), out in folder.items()
            if not (out / "final.json").is_file()]
    if args.dry_run:
        for a, _ in todo:
            print(f"senet {shlex.join(a)}")
        return 0
    run_all(todo, args.jobs)

    err = {k: json.loads((out / "final.json").read_text())["test_top1_err"] for k, out in folder.items()}
    prov = {k: json.loads((out / "final.json").read_text())["provenance"]["precision"] for k, out in folder.items()}
    if any(prov[(pr, s)] != pr for pr, s in folder):
        raise SystemExit(f"precision_parity: a run trained in another precision than asked: {prov}")
    print(f"\n{args.model}, fashion-mnist {args.subset} images x {args.epochs} epochs; test top-1 error %")
    print(f"{'seed':>6}{'fp32':>9}{'bf16':>9}{'bf16-fp32':>11}")
    diffs = []
    for s in seeds:
        d = err[("bf16", s)] - err[("fp32", s)]
        diffs.append(d)
        print(f"{s:>6}{err[('fp32', s)]:>9.2f}{err[('bf16', s)]:>9.2f}{d:>+11.2f}")
    mean = sum(diffs) / len(diffs)
    if len(seeds) < 2:
        print(f"mean difference {mean:+.2f} pp (one seed: no interval)")
        return 0
    from scipy import stats

    t = stats.ttest_rel([err[("bf16", s)] for s in seeds], [err[("fp32", s)] for s in seeds])
    ci = t.confidence_interval(0.95)
    parity = ci.low <= 0 <= ci.high or abs(mean) < 0.3
    print(f"paired difference bf16 - fp32 over {len(seeds)} seeds: mean {mean:+.2f} pp, 95% t-CI "
          f"[{ci.low:+.2f}, {ci.high:+.2f}] pp, p = {t.pvalue:.3g}")
    print(f"parity (CI covers 0, or |mean| < 0.3 pp): {'yes' if parity else 'no'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
