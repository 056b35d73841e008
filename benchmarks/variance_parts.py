"""How much of a comparison's spread over seeds is the test set's sampling, measured on a study's
kept networks, and what a larger evaluation set would save.

Two networks evaluated on the same N test images differ in error by the mean of a per-image
difference in correctness, so the test images alone make that difference vary with sd
``sqrt((q − Δ²) / N)``, where q is the share of images exactly one of them gets right (their
discordance) and Δ their difference in error. Over seeds, a paired comparison's variance is
σ_d² = (run-to-run part) + (that test part). This script evaluates the kept networks of one arm
(``senet weights``) on the test split, measures q for every pair of them, and sets the test part
beside the σ̂_d of each comparison the study's table records (arm − reference, paired by seed).
Then, for an evaluation set k times larger from the same distribution, the test part shrinks k-fold:
the seeds a comparison needs scale with σ_d², and each trial costs its extra forward passes
(training counted as 3 forward passes an image; validation and test as 1).

    python benchmarks/variance_parts.py [--results results] [--study gate] [--arm sigmoid] [--preset standard]
                                        [--also reduction,squeeze,placement,stages]

Networks are evaluated in fp32 by default (``--precision as-trained`` uses the run's own, which on
a CPU without native bf16 is slow); the script prints how far those errors are from the recorded ones.
"""
from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.extract import measure_errors, run_precision  # noqa: E402
from analysis.loading import load_data, load_trained  # noqa: E402
from analysis.study_results import completed, load_recipe  # noqa: E402
from senet.records.layout import study_paths  # noqa: E402


def evaluate(files: list[Path], precision: str | None) -> tuple[dict[str, np.ndarray], dict[str, float], int]:
    """Per network (by file name): its per-image top-1 hits on the test split and its error (%)."""
    hits, errors, cache, n = {}, {}, {}, 0
    for f in files:
        model, cfg, _, meta = load_trained(str(f), {}, "variance_parts")
        ds, mean, std, _ = load_data(cfg, meta, cache)
        ran = precision or (meta.get("provenance") or {}).get("precision")
        with run_precision(ran):
            got = measure_errors(model, ds.test_x, ds.test_y, mean, std, device="cpu", per_image=True)
        hits[f.name], errors[f.name], n = got["correct"].numpy(), got["top1_err"], got["n"]
    return hits, errors, n


def pair_test_sd(a: np.ndarray, b: np.ndarray) -> float:
    """The sd (pp) that sampling N test images alone gives the difference of two networks' errors."""
    q = float(np.mean(a != b))
    delta = float(np.mean(b) - np.mean(a))
    return 100.0 * math.sqrt(max(q - delta ** 2, 0.0) / len(a))


def comparisons(runs: pd.DataFrame, reference: str, metric: str = "test_top1_err") -> list[tuple[str, int, float]]:
    """(arm, seed pairs, σ̂_d) of each arm against the reference, paired by seed."""
    ok = completed(runs)
    ref = ok[ok["arm"] == reference].groupby("seed")[metric].mean()
    out = []
    for arm in dict.fromkeys(ok["arm"]):
        if arm == reference:
            continue
        d = (ok[ok["arm"] == arm].groupby("seed")[metric].mean() - ref).dropna()
        if len(d) >= 2:
            out.append((arm, len(d), float(d.std(ddof=1))))
    return out


def trial_cost(runs: pd.DataFrame, k: float) -> float:
    """Forward passes a trial makes, with the test set k times larger (training at 3 an image)."""
    r = runs.iloc[0]
    epochs = float(r["optim.epochs"])
    val = float(r.get("num_val") or 0.0) if pd.notna(r.get("num_val")) else 0.0
    train = float(r["data.subset"]) - val
    test = float(r["num_test"]) if pd.notna(r.get("num_test")) else 10_000.0
    return 3 * epochs * train + epochs * val + k * test


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default=str(ROOT / "results"))
    p.add_argument("--study", default="gate")
    p.add_argument("--arm", default=None, help="the arm whose kept networks are paired (default: the reference)")
    p.add_argument("--preset", default="standard")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "as-trained"])
    p.add_argument("--also", default="", help="other studies of the same recipe family (a,b,...) whose "
                   "comparisons are read against the test part measured here")
    args = p.parse_args(argv)

    runs, meta = load_recipe(args.results, args.study, preset=args.preset)
    reference = meta.get("reference_arm")
    arm = args.arm or reference
    wdir = study_paths(args.results, args.study).dir / "weights"
    index = pd.read_csv(wdir / "index.csv")
    files = [wdir / f for f in index.loc[index["arm"] == arm, "file"]]
    if len(files) < 2:
        print(f"need at least 2 kept networks of {arm} in {wdir} (senet weights {args.study} --every {arm})")
        return 2
    hits, errors, n = evaluate(files, None if args.precision == "as-trained" else args.precision)
    recorded = dict(zip(index["file"], index["test_top1_err"], strict=True))
    gap = max(abs(errors[f] - recorded[f]) for f in errors)
    single = [100.0 * math.sqrt(e / 100 * (1 - e / 100) / n) for e in errors.values()]
    pairs = [pair_test_sd(hits[a], hits[b]) for a, b in itertools.combinations(hits, 2)]
    qs = [float(np.mean(hits[a] != hits[b])) for a, b in itertools.combinations(hits, 2)]
    t = statistics.median(pairs)
    sd_err = statistics.stdev(errors.values())
    print(f"{args.study}, {arm}: {len(files)} kept networks on N = {n} test images, evaluated in {args.precision} "
          f"(largest gap to the recorded error {gap:.2f} pp)")
    print(f"one network's error: sd over seeds {sd_err:.2f} pp; the test sampling alone "
          f"{statistics.median(single):.2f} pp (binomial)")
    print(f"two networks' difference: discordance q median {statistics.median(qs):.2%} "
          f"[{min(qs):.2%}, {max(qs):.2%}] over {len(qs)} pairs; test-sampling sd {t:.2f} pp "
          f"[{min(pairs):.2f}, {max(pairs):.2f}]")
    print("\ncomparison (vs reference)     n   σ̂_d   test part of σ̂_d²   seeds needed with a test set k× larger "
          "(k = 2, 4), and CPU to settle")
    base = trial_cost(runs, 1)
    rows = [(f"{args.study}: {name}", m, sd) for name, m, sd in comparisons(runs, reference)]
    for other in filter(None, args.also.split(",")):
        o_runs, o_meta = load_recipe(args.results, other, preset=args.preset)
        rows += [(f"{other}: {name}", m, sd) for name, m, sd in comparisons(o_runs, o_meta.get("reference_arm"))]
    for name, m, sd in rows:
        share = min(t * t / (sd * sd), 1.0)
        cells = []
        for k in (2, 4):
            seeds = (sd * sd - t * t + t * t / k) / (sd * sd) if share < 1 else 1 / k
            cells.append(f"k={k}: seeds ×{seeds:.2f}, CPU ×{seeds * trial_cost(runs, k) / base:.2f}")
        print(f"  {name:<26} {m:>3} {sd:>6.2f}   {share:>8.0%}           {'; '.join(cells)}")
    print(f"\na trial's forward passes: {base:,.0f} (test set {trial_cost(runs, 1) - trial_cost(runs, 0):,.0f}); "
          "a test part above 100% means σ̂_d is below what the test images alone give (few seeds, or "
          "networks of one arm agreeing more than networks of two)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
