"""Inference latency of SE-ResNet-50 vs ResNet-50 (paper §4: one 224² image on a CPU, 164 ms vs
167 ms, a ratio of 1.018), for the suite's models and for timm's, measured interleaved in one run.

    python benchmarks/latency.py [--repeats 30] [--warmup 5] [--threads N] [--device cpu|cuda]

Interleaving (one forward of each model in turn, every round) exposes all four models to the same
machine load, so the ratios are comparable even when the absolute times drift. The statistic is
the median over the rounds. The paper's Caffe models put the stride in the first 1×1; timm's in the
3×3, so both conventions are shown for ours.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import senet

PAPER_MS = {"ResNet-50": 164.0, "SE-ResNet-50": 167.0}


def _models(device) -> dict[str, dict[str, torch.nn.Module]]:
    pairs = {
        "ours, stride in 1×1 (paper)": {
            "ResNet-50": senet.build_model("resnet50", stride_in_1x1=True),
            "SE-ResNet-50": senet.build_model("se_resnet50", stride_in_1x1=True),
        },
        "ours, stride in 3×3 (v1.5)": {
            "ResNet-50": senet.build_model("resnet50", stride_in_1x1=False),
            "SE-ResNet-50": senet.build_model("se_resnet50", stride_in_1x1=False),
        },
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


def measure(device, repeats: int, warmup: int, size: int = 224) -> dict[tuple[str, str], list[float]]:
    models = _models(device)
    x = torch.randn(1, 3, size, size, device=device)
    flat = [(row, name, m) for row, pair in models.items() for name, m in pair.items()]
    times: dict[tuple[str, str], list[float]] = {(r, n): [] for r, n, _ in flat}
    with torch.inference_mode():
        for i in range(warmup + repeats):
            # rotate the order each round so no model always runs right after the same one
            k = i % len(flat)
            for row, name, m in flat[k:] + flat[:k]:
                _sync(device)
                t = time.perf_counter()
                m(x)
                _sync(device)
                if i >= warmup:
                    times[(row, name)].append((time.perf_counter() - t) * 1e3)
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30, help="measured rounds (median reported)")
    p.add_argument("--warmup", type=int, default=5, help="rounds discarded first")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", default="cpu", help="cpu (the paper's setting) or cuda")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    times = measure(device, args.repeats, args.warmup)
    print(f"batch 1, 224², {device.type}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"median of {args.repeats} interleaved rounds after {args.warmup} warm-up")
    print(f"{'':<30} {'ResNet-50 ms':>13} {'SE-ResNet-50 ms':>16} {'ratio SE/plain':>15}")
    rows = list(dict.fromkeys(r for r, _ in times))
    for row in rows:
        a = statistics.median(times[(row, "ResNet-50")])
        b = statistics.median(times[(row, "SE-ResNet-50")])
        print(f"{row:<30} {a:>13.1f} {b:>16.1f} {b / a:>15.3f}")
    a, b = PAPER_MS["ResNet-50"], PAPER_MS["SE-ResNet-50"]
    print(f"{'paper (§4, CPU)':<30} {a:>13.1f} {b:>16.1f} {b / a:>15.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
