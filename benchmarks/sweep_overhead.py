"""Orchestration overhead of a sweep: wall time of ``senet sweep`` at concurrency 1 divided by the sum
of its trials' own training time (``train_time_s``, fit's train + eval loops). Target: <= 1.15.

Everything that is not training counts as overhead here: starting Ray, Tune's bookkeeping, worker
start-up and imports, data loading, model construction, checkpoint copies and the final collect.

    python benchmarks/sweep_overhead.py [--study gate] [--preset quick] [--seeds 1] [--cpus 2]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from senet.cli import main


def run(study: str, preset: str, seeds: int, cpus: float, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="sweep-overhead-") as tmp:
        t0 = time.perf_counter()
        rc = main(["sweep", study, "--preset", preset, "--seeds", str(seeds), "--results", tmp,
                   "--max-concurrent", "1", "--cpus-per-trial", str(cpus), *extra])
        wall = time.perf_counter() - t0
        if rc != 0:
            raise SystemExit(rc)
        df = pd.read_parquet(Path(tmp) / study / "runs.parquet")
    train = float(df["train_time_s"].sum())
    return {"trials": len(df), "wall_s": wall, "train_s": train, "ratio": wall / train,
            "trial_wall_s": float(df["wall_time_s"].sum())}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="gate")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--cpus", type=float, default=2, help="CPUs (torch threads) of the single running trial")
    args, extra = ap.parse_known_args()
    r = run(args.study, args.preset, args.seeds, args.cpus, extra)
    print(f"{args.study}/{args.preset}: {r['trials']} trials at concurrency 1; sweep wall {r['wall_s']:.1f} s, "
          f"sum of trials' train_time_s {r['train_s']:.1f} s (their fit wall {r['trial_wall_s']:.1f} s)")
    print(f"overhead ratio wall / train = {r['ratio']:.3f} (target <= 1.15)")
