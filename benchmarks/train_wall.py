"""Wall time of one `senet train` recipe run by this tree's defaults and by the code of another
commit, side by side: both runs start together, one CPU thread each, so one machine's load and
clock speed meet both.

    python benchmarks/train_wall.py --baseline REF [--images 20000] [--epochs 5] [--seed 0]
                                    [--set KEY=VALUE ...] [--keep DIR]

The recipe is SE-ResNet-20 on ``--images`` Fashion-MNIST training images (a tenth more held out for
validation) for ``--epochs`` epochs. ``--set`` adds overrides to this tree's run only (for example
``run.eval_test=end``, what the standard preset sets). Printed: each run's wall time (process start
to exit), its mean epoch time (training plus evaluation, from metrics.jsonl), its precision and test
error, and this tree's over the baseline's. The baseline's code is a temporary ``git worktree`` of REF.
Needs two idle cores.
"""
from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from sweep_rate import ROOT, checkout, senet_command  # benchmarks/sweep_rate.py, beside this file

from senet.records.layout import read_json, read_jsonl


def _start(code: Path, out: Path, args: list[str]) -> subprocess.Popen:
    cmd, env = senet_command(code, "train", *args, "--out", str(out))
    log = open(out.with_suffix(".log"), "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(cmd, cwd=code, env={**env, "OMP_NUM_THREADS": "1"}, stdout=log,
                            stderr=subprocess.STDOUT)


def _summary(out: Path, wall: float) -> dict:
    epochs = [r for r in read_jsonl(out / "metrics.jsonl") if "epoch" in r]
    final = read_json(out / "final.json", {})
    return {"wall": wall, "epochs": len(epochs),
            "epoch_s": sum(r.get("epoch_time_s") or 0.0 for r in epochs) / max(len(epochs), 1),
            "precision": final.get("provenance", {}).get("precision", "fp32 (not recorded)"),
            "test": final.get("test_top1_err")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", required=True, metavar="REF", help="the commit whose code runs the other side")
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for this tree's run only (repeatable)")
    p.add_argument("--keep", default="", help="keep both run folders under DIR")
    args = p.parse_args(argv)
    extra = []
    for kv in args.set:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            p.error(f"--set takes KEY=VALUE, not {kv!r}")
        extra += [f"--{key}", value]
    recipe = ["--model", "se_resnet20", "--data.name", "fashion-mnist", "--data.subset", str(args.images),
              "--epochs", str(args.epochs), "--seed", str(args.seed), "--run.threads", "1",
              "--run.progress", "false"]
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp, checkout(args.baseline) as (tree, sha):
        base = Path(args.keep or tmp)
        base.mkdir(parents=True, exist_ok=True)
        runs = {f"baseline {sha} (its defaults)": (tree, base / "baseline", recipe),
                "this tree" + (f" ({', '.join(args.set)})" if args.set else " (defaults)"):
                    (ROOT, base / "now", recipe + extra)}
        started = {}
        for label, (code, out, a) in runs.items():
            started[label] = (_start(code, out, a), time.perf_counter(), out)
        ended: dict[str, tuple[int, float]] = {}
        while len(ended) < len(started):  # each run's own end, whichever finishes first
            for label, (proc, t0, _) in started.items():
                if label not in ended and proc.poll() is not None:
                    ended[label] = (proc.returncode, time.perf_counter() - t0)
            time.sleep(0.2)
        got = {}
        for label, (_, _, out) in started.items():
            rc, wall = ended[label]
            if rc != 0:
                raise SystemExit(f"bench: {label} failed (exit {rc}); see {out.with_suffix('.log')}"
                                 + ("" if args.keep else " (pass --keep DIR to keep it)"))
            got[label] = _summary(out, wall)
    print(f"SE-ResNet-20, {args.images} Fashion-MNIST images x {args.epochs} epochs, seed {args.seed}, "
          "1 thread each, started together")
    print(f"{'':<44}{'precision':>10}{'wall s':>9}{'epoch s':>9}{'test err %':>11}")
    for label, g in got.items():
        test = "-" if g["test"] is None else f"{g['test']:.2f}"
        print(f"{label:<44}{g['precision']:>10}{g['wall']:>9.1f}{g['epoch_s']:>9.1f}{test:>11}")
    old, new = got.values()
    print(f"this tree / baseline: wall {new['wall'] / old['wall']:.2f}x, mean epoch {new['epoch_s'] / old['epoch_s']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
