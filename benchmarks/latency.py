"""Inference latency of SE-ResNet-50 vs ResNet-50 (paper §4: one 224² image on a CPU, 164 ms vs
167 ms, a ratio of 1.018), for the suite's models and for timm's, measured interleaved in one run.

    python benchmarks/latency.py [--repeats 30] [--warmup 5] [--threads N] [--device cpu|cuda]
                                 [--clock wall|cpu] [--processes K]

Interleaving (one forward of each model in turn, every round) exposes all four models to the same
machine load, so the ratios are comparable even when the absolute times drift. The times are
medians over the rounds. The ratio is the median of the per-round ratios (each round's SE time over
the same round's plain time), with a distribution-free 95% confidence interval from the order
statistics. ``--clock cpu`` times the thread's CPU time instead of the wall clock. The paper's
Caffe models put the stride in the first 1×1, timm's in the 3×3: both conventions are shown for ours.
The row "unfolded" runs the first row's two models with each SE block kept off its inference fold
(:mod:`senet.fused`) by a forward hook that changes nothing on the bottleneck's last BN; it also keeps
the plain blocks' addition out of BN's output, as the code before both. So the fold's own gain is
measured in the same run, on the same weights in the same memory.

Where a model's weights land in memory moves its time by a few percent for the whole life of a
process (the same code gave SE/plain ratios from 1.008 to 1.045 in successive runs on one machine),
so one process measures one draw of that layout. ``--processes K`` builds the models afresh in K
processes, one after another, and pools their rounds: the ratio and its interval are then over
K layouts, and the spread of the K processes' own medians is printed beside it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

import senet
from senet.models.blocks import Bottleneck

PAPER_MS = {"ResNet-50": 164.0, "SE-ResNet-50": 167.0}


class Unfolded(torch.nn.Module):
    """``model`` (the same object, the same memory) run with each bottleneck's last BN watched by a
    forward hook that changes nothing: an SE folds only into a BN no hook watches, so its block
    takes the path it took before the fold (BN, then the scaling fused with the residual addition),
    and a plain block adds into a new tensor rather than into BN's output, as it did then too.
    The hooks live only for the call, and are given to both models of a row, so their own cost is
    the same on either side."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        handles = [m.bn3.register_forward_hook(lambda module, args, output: None)
                   for m in self.model.modules() if isinstance(m, Bottleneck)]
        try:
            return self.model(x)
        finally:
            for h in handles:
                h.remove()


def _models(device) -> dict[str, dict[str, torch.nn.Module]]:
    paper = {"ResNet-50": senet.build_model("resnet50", stride_in_1x1=True),
             "SE-ResNet-50": senet.build_model("se_resnet50", stride_in_1x1=True)}
    pairs = {
        "ours, stride in 1×1 (paper)": paper,
        "ours, stride in 3×3 (v1.5)": {
            "ResNet-50": senet.build_model("resnet50", stride_in_1x1=False),
            "SE-ResNet-50": senet.build_model("se_resnet50", stride_in_1x1=False),
        },
        # the first row's models themselves: where weights land moves a model's time by a few
        # percent, so the fold's gain is measured on the same memory
        "ours, stride in 1×1, unfolded": {name: Unfolded(m) for name, m in paper.items()},
    }
    try:
        import timm  # optional: a test dependency

        pairs["timm"] = {"ResNet-50": timm.create_model("resnet50", pretrained=False),
                         "SE-ResNet-50": timm.create_model("seresnet50", pretrained=False)}
    except ImportError:
        print("timm is not installed: its row is left out")
    return {k: {n: m.to(device).eval() for n, m in v.items()} for k, v in pairs.items()}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_ci(xs: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Median of ``xs`` and a distribution-free confidence interval for it (binomial order statistics)."""
    from scipy.stats import binom  # noqa: PLC0415 (only for the interval)

    s, n = sorted(xs), len(xs)
    lo = max(int(binom.ppf((1 - level) / 2, n, 0.5)) - 1, 0)
    hi = min(n - lo - 1, n - 1)
    return statistics.median(s), s[lo], s[hi]


def interleaved(models: dict, x: torch.Tensor, repeats: int, warmup: int, clock=time.perf_counter,
                before=lambda key: None, sync=lambda: None) -> dict:
    """Per-round times (ms) of each keyed model on ``x``, one forward of each per round, after
    ``warmup`` rounds; ``before(key)`` runs untimed before each forward, ``sync()`` around it."""
    keys = list(models)
    times: dict = {key: [] for key in keys}
    with torch.inference_mode():
        for i in range(warmup + repeats):
            # rotate the order each round so no model always runs right after the same one
            k = i % len(keys)
            for key in keys[k:] + keys[:k]:
                before(key)
                sync()
                t = clock()
                models[key](x)
                sync()
                if i >= warmup:
                    times[key].append((clock() - t) * 1e3)
    return times


def measure(device, repeats: int, warmup: int, size: int = 224,
            clock=time.perf_counter) -> dict[tuple[str, str], list[float]]:
    flat = {(row, name): m for row, pair in _models(device).items() for name, m in pair.items()}
    x = torch.randn(1, 3, size, size, device=device)
    return interleaved(flat, x, repeats, warmup, clock, sync=lambda: _sync(device))


def _ratios(times: dict[tuple[str, str], list[float]], row: str) -> list[float]:
    """A row's per-round ratios, SE time over the same round's plain time."""
    return [b / a for a, b in zip(times[(row, "ResNet-50")], times[(row, "SE-ResNet-50")], strict=True)]


def _in_processes(k: int, argv: list[str]) -> tuple[dict[tuple[str, str], list[float]], dict[str, list[float]]]:
    """Run the measurement in ``k`` fresh processes in turn; their rounds pooled, and each
    process's median ratio per row."""
    pooled: dict[tuple[str, str], list[float]] = {}
    medians: dict[str, list[float]] = {}
    for i in range(k):
        out = subprocess.run([sys.executable, __file__, *argv, "--processes", "1", "--json"],
                             check=True, capture_output=True, text=True).stdout
        times = {tuple(key.split("\t")): v for key, v in json.loads(out).items()}
        for key, v in times.items():
            pooled.setdefault(key, []).extend(v)
        for row in dict.fromkeys(r for r, _ in times):
            medians.setdefault(row, []).append(statistics.median(_ratios(times, row)))
        print(f"process {i + 1}/{k} done", file=sys.stderr, flush=True)
    return pooled, medians


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30, help="measured rounds (median reported)")
    p.add_argument("--warmup", type=int, default=5, help="rounds discarded first")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0: torch's default)")
    p.add_argument("--device", default="cpu", help="cpu (the paper's setting) or cuda")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall clock (default) or the thread's CPU time (a CPU shared with other jobs)")
    p.add_argument("--processes", type=int, default=1,
                   help="measure in K fresh processes in turn and pool their rounds (default 1: this one)")
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # a child's raw times
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.processes < 1:
        p.error("--repeats and --processes must be at least 1, --warmup at least 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.clock == "cpu" and device.type != "cpu":
        p.error("--clock cpu times the CPU; use the wall clock with --device cuda")
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    medians: dict[str, list[float]] = {}
    if args.processes > 1:
        child = ["--repeats", str(args.repeats), "--warmup", str(args.warmup), "--threads", str(args.threads),
                 "--device", args.device, "--clock", args.clock]
        times, medians = _in_processes(args.processes, child)
    else:
        times = measure(device, args.repeats, args.warmup, clock=clock)
    if args.json:
        print(json.dumps({"\t".join(k): v for k, v in times.items()}))
        return 0
    rounds = f"{args.processes} processes x {args.repeats}" if args.processes > 1 else f"{args.repeats}"
    print(f"batch 1, 224², {device.type}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{'thread CPU time' if args.clock == 'cpu' else 'wall clock'}, {rounds} interleaved rounds "
          f"after {args.warmup} warm-up: median ms, median per-round ratio [95% CI]")
    spread = " per-process medians" if medians else ""
    print(f"{'':<30} {'ResNet-50 ms':>13} {'SE-ResNet-50 ms':>16} {'ratio SE/plain':>15} {'95% CI':>16}{spread}")
    rows = list(dict.fromkeys(r for r, _ in times))
    for row in rows:
        plain, se = times[(row, "ResNet-50")], times[(row, "SE-ResNet-50")]
        r, lo, hi = median_ci(_ratios(times, row))
        each = f"  {min(medians[row]):.3f}-{max(medians[row]):.3f}" if medians else ""
        print(f"{row:<30} {statistics.median(plain):>13.1f} {statistics.median(se):>16.1f} {r:>15.3f} "
              f"{f'[{lo:.3f}, {hi:.3f}]':>16}{each}")
    a, b = PAPER_MS["ResNet-50"], PAPER_MS["SE-ResNet-50"]
    print(f"{'paper (§4, CPU)':<30} {a:>13.1f} {b:>16.1f} {b / a:>15.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
