"""The suite's speed in one run: training img/s in fp32 and bf16 beside the machine's matmul peak,
SE/plain costs beside timm's, the evaluation batch, and sweep trials per hour per layout.

    python benchmarks/bench.py            # a few minutes of one core
    python benchmarks/bench.py --quick    # about a minute
    python benchmarks/bench.py --sweep    # adds `senet sweep gate --preset quick --seeds 2` at 1 and
                                          # 2 CPUs per trial (many minutes; it uses every core)

Everything but the sweep runs on one thread (``--threads``). The variants of each section run
interleaved, round by round (fp32, bf16, fp32, bf16, ...), and each figure is the median over the
rounds, so a machine shared with other jobs slows all of them alike; on a CPU the clock is the
process's CPU time (``--clock wall`` to change), which other jobs' load does not inflate.

Sections:

* matmul peak: 2048² × 2048² products, GFLOP/s counting a multiply-add as 2 FLOPs (the usual unit).
* training step: SE-ResNet-20 and ResNet-20, batch 128 of 28² one-channel images, SGD with Nesterov
  momentum, fp32 and bf16 autocast (what ``run.precision`` does). The fraction of peak is
  3 × (multiply-adds per image from :func:`senet.complexity`) × img/s over the peak in multiply-adds
  per second: the forward pass, and a backward pass of twice its work. timm has no CIFAR ResNet-20,
  so the training SE/plain ratio is the suite's only.
* inference, batch 1, 224²: SE-ResNet-50 / ResNet-50 of the suite (both stride conventions) and of
  timm, the paper's §4 setting, each ResNet-50 holding its SE network's weight tensors (as
  ``benchmarks/se_cost.py``; ``benchmarks/latency.py`` builds them apart, over several processes).
* evaluation batch: SE-ResNet-20 inference img/s per batch size, the measurement behind
  :data:`senet.runtime.EVAL_BATCH`.
* epoch (``--epoch``): one epoch of `senet train`'s loop (train + evaluation of the validation and
  test sets) of SE-ResNet-20 on 20,000 Fashion-MNIST images, 1 thread, timed by the bench's clock:
  in the default settings, and in fp32 with an evaluation batch of 1024 (the settings before bf16
  autocast and the measured CPU evaluation batch).
* sweep (``--sweep``): trials per hour of the gate study's quick preset with one trial per core
  against one trial on two cores, and with ``--sweep-baseline REF`` the code of commit REF at its
  default layout (``benchmarks/sweep_rate.py``); otherwise "not measured".

``--only matmul,train,infer,eval,epoch,sweep`` runs the sections named.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import senet
from senet.engine import param_groups
from senet.provenance import device_name
from senet.runtime import CPUINFO, autocast, cpu_has_native_bf16, eval_batch

PRECISIONS = ("fp32", "bf16")
PAPER_MS = {"ResNet-50": 164.0, "SE-ResNet-50": 167.0}  # §4: one 224² image on a CPU


class Timer:
    """Seconds by the chosen clock; on a GPU, synchronised around the timed work."""

    def __init__(self, kind: str, device: torch.device):
        self.now = time.process_time if kind == "cpu" else time.perf_counter
        self.device = device

    def __call__(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return self.now()


def median(xs):
    return statistics.median(xs)


def cpu_model() -> str:
    try:
        for line in CPUINFO.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return device_name("cpu")


# ---------------------------------------------------------------------------------------------
# matmul peak
# ---------------------------------------------------------------------------------------------
def matmul_peak(n: int, rounds: int, clock: Timer, device) -> dict[str, float]:
    """GFLOP/s (2 FLOPs per multiply-add) of an n×n by n×n product, per precision."""
    g = torch.Generator().manual_seed(0)
    mats = {p: [torch.randn(n, n, generator=g).to(device, torch.float32 if p == "fp32" else torch.bfloat16)
                for _ in range(2)] for p in PRECISIONS}
    rates: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for p in PRECISIONS:
        torch.mm(*mats[p])  # warm-up (oneDNN builds its kernels on first use)
    for _ in range(rounds):
        for p in PRECISIONS:
            a, b = mats[p]
            t = clock()
            torch.mm(a, b)
            rates[p].append(2 * n ** 3 / (clock() - t) / 1e9)
    return {p: median(v) for p, v in rates.items()}


# ---------------------------------------------------------------------------------------------
# training step
# ---------------------------------------------------------------------------------------------
def _trainer(name: str, batch: int, device):
    model = senet.build_model(name, num_classes=10, in_chans=1).to(device).train()
    # a small lr: the same batch again and again must not drive the weights to inf/NaN or denormals
    opt = torch.optim.SGD(param_groups(model, 5e-4, False), lr=1e-3, momentum=0.9, nesterov=True)
    crit = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 28, 28, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)

    def step(precision: str) -> None:
        with autocast(device, precision):
            logits = model(x)
        loss = crit(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    macs = senet.complexity(model, 28, 1).flops
    return step, macs


def training(batch: int, steps: int, rounds: int, clock: Timer, device) -> tuple[dict, dict]:
    """img/s per (model, precision), and multiply-adds per image per model."""
    runs, macs = {}, {}
    for name in ("se_resnet20", "resnet20"):
        step, macs[name] = _trainer(name, batch, device)
        for p in PRECISIONS:
            runs[(name, p)] = step
    rates: dict[tuple, list[float]] = {k: [] for k in runs}
    for step_p in runs:
        runs[step_p](step_p[1])  # warm-up
    keys = list(runs)
    for r in range(rounds):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:  # rotate: no variant always runs first
            t = clock()
            for _ in range(steps):
                runs[k](k[1])
            rates[k].append(steps * batch / (clock() - t))
    return {k: median(v) for k, v in rates.items()}, macs


# ---------------------------------------------------------------------------------------------
# evaluation batch
# ---------------------------------------------------------------------------------------------
def eval_batches(sizes: list[int], images: int, rounds: int, clock: Timer, device) -> dict:
    model = senet.build_model("se_resnet20", num_classes=10, in_chans=1).to(device).eval()
    x = torch.randn(images, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(device)
    rates: dict[tuple, list[float]] = {(p, b): [] for p in PRECISIONS for b in sizes}
    with torch.inference_mode():
        for _ in range(rounds):
            for p, b in rates:
                with autocast(device, p):
                    model(x[:b])  # warm-up of this shape
                    t = clock()
                    for i in range(0, images, b):
                        model(x[i:i + b])
                    rates[(p, b)].append(images / (clock() - t))
    return {k: median(v) for k, v in rates.items()}


# ---------------------------------------------------------------------------------------------
# one epoch of fit, now and before
# ---------------------------------------------------------------------------------------------
def epoch_times(images: int, clock: Timer, device) -> dict[str, dict]:
    """Train and evaluation seconds of one epoch of ``fit`` per setting (by the bench's clock)."""
    from senet import config, engine, runtime
    from senet.data import DatasetNotFoundError, load_datasets

    data = {"data.name": "fashion-mnist", "data.subset": images}
    try:
        ds = load_datasets(config.from_flat(data).data)
    except DatasetNotFoundError as e:
        print(f"({e}; using synthetic data)")
        data = {"data.name": "synthetic", "data.synthetic_train": images, "data.synthetic_test": images // 2}
        ds = load_datasets(config.from_flat(data).data)
    settings = {"before: fp32, eval batch 1024": ({"run.precision": "fp32"}, 1024),
                "now: defaults": ({}, None)}
    saved = engine.clock, dict(runtime.EVAL_BATCH)
    engine.clock = clock
    got = {}
    try:
        for label, (over, batch) in settings.items():
            runtime.EVAL_BATCH.update(saved[1])
            if batch:
                runtime.EVAL_BATCH[device.type] = batch
            cfg = config.from_flat({"model.name": "se_resnet20", **data, "optim.epochs": 1, "run.threads": 1,
                               "run.progress": False, "run.device": str(device), **over})
            lines: list[dict] = []
            r = engine.fit(cfg, lines.append, datasets=ds)
            m = lines[0]
            seen = len(ds.train_x) // cfg.optim.batch_size * cfg.optim.batch_size
            train_s = seen / m["images_per_s"]
            got[label] = {"epoch_s": m["epoch_time_s"], "train_s": train_s, "eval_s": m["epoch_time_s"] - train_s,
                          "precision": r["provenance"]["precision"], "images": len(ds.train_x),
                          "evaluated": len(ds.val_x) + len(ds.test_x)}
    finally:
        engine.clock = saved[0]
        runtime.EVAL_BATCH.clear()
        runtime.EVAL_BATCH.update(saved[1])
    return got


# ---------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds and steps (about a minute)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: one trial per core, as sweeps run)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--clock", choices=("auto", "cpu", "wall"), default="auto",
                   help="auto: process CPU time on a CPU with one thread, wall time otherwise")
    p.add_argument("--sweep", action="store_true",
                   help="also time `senet sweep gate --preset quick --seeds 2` at 1 and 2 CPUs per trial")
    p.add_argument("--sweep-preset", default="quick", help="the sweep's preset (smoke: a check of the mechanics)")
    p.add_argument("--sweep-baseline", default="", metavar="REF",
                   help="with --sweep: also time the sweep with the code of commit REF (its default layout)")
    p.add_argument("--epoch", action="store_true",
                   help="also time one epoch of `senet train` on 20,000 Fashion-MNIST images, now and before")
    p.add_argument("--epoch-images", type=int, default=20000, help="training images of the --epoch section")
    p.add_argument("--only", default="", help="comma-separated sections to run (default: all asked for)")
    args = p.parse_args(argv)
    sections = {"matmul", "train", "infer", "eval", "epoch", "sweep"}
    want = set(args.only.split(",")) if args.only else sections - {"epoch", "sweep"}
    if bad := want - sections:
        p.error(f"unknown section(s) {', '.join(sorted(bad))}; choose from {', '.join(sorted(sections))}")
    want |= {s for s in ("epoch", "sweep") if getattr(args, s)}
    if "train" in want:
        want.add("matmul")  # the fraction of peak needs it

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    kind = args.clock if args.clock != "auto" else ("cpu" if device.type == "cpu" and args.threads == 1 else "wall")
    clock = Timer(kind, device)
    q = args.quick
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    bf16 = ("native bf16 (AVX512-BF16/AMX)" if cpu_has_native_bf16() else "no native bf16 (emulated)")
    print(f"device {device} ({name}; {bf16}), {torch.get_num_threads()} thread(s), torch {torch.__version__}, "
          f"clock: {'process CPU time' if kind == 'cpu' else 'wall'}, medians of interleaved rounds"
          f"{', --quick' if q else ''}", flush=True)

    peak = None
    if "matmul" in want:
        peak = matmul_peak(2048, 3 if q else 7, clock, device)
        print(f"\nmatmul 2048², GFLOP/s (2 FLOPs per multiply-add): fp32 {peak['fp32']:.0f}, "
              f"bf16 {peak['bf16']:.0f} (bf16/fp32 {peak['bf16'] / peak['fp32']:.2f}x)", flush=True)
    if "train" in want:
        print_training(training(128, 3 if q else 8, 3 if q else 7, clock, device), peak, 128)
    if "infer" in want:
        print_inference(device, *((5, 2) if q else (20, 3)), clock)
    if "eval" in want:
        sizes = [64, 128, 256, 512, 1024]
        ev = eval_batches(sizes, 1024 if q else 2048, 1 if q else 3, clock, device)
        print(f"\nevaluation, SE-ResNet-20, inference_mode, img/s per batch size (EVAL_BATCH here: "
              f"{eval_batch(device)})")
        print(f"{'':<6}" + "".join(f"{b:>9}" for b in sizes))
        for pr in PRECISIONS:
            print(f"{pr:<6}" + "".join(f"{ev[(pr, b)]:>9.0f}" for b in sizes), flush=True)
    if "epoch" in want:
        got = epoch_times(args.epoch_images, clock, device)
        first = next(iter(got.values()))
        print(f"\none epoch of fit (one run each): SE-ResNet-20, {first['images']} training images, then "
              f"{first['evaluated']} validation + test images evaluated, 1 thread")
        print(f"{'':<32}{'precision':>10}{'train s':>9}{'eval s':>8}{'epoch s':>9}")
        for label, g in got.items():
            print(f"{label:<32}{g['precision']:>10}{g['train_s']:>9.1f}{g['eval_s']:>8.1f}{g['epoch_s']:>9.1f}")
        before, now = got["before: fp32, eval batch 1024"], got["now: defaults"]
        print(f"now / before: epoch {now['epoch_s'] / before['epoch_s']:.2f}x, train "
              f"{now['train_s'] / before['train_s']:.2f}x, evaluation {now['eval_s'] / before['eval_s']:.2f}x",
              flush=True)
    if "sweep" not in want:
        print("\nsweep, gate study, trials per hour: not measured (pass --sweep: `senet sweep gate --preset "
              "quick --seeds 2` at 1 and at 2 CPUs per trial, and --sweep-baseline REF for a commit's code)")
        return 0
    from sweep_rate import report  # benchmarks/sweep_rate.py, beside this file

    report(args.sweep_preset, 2, (1, 2), args.sweep_baseline or None)
    return 0


def _share(macs_per_s: float, peak: dict, precision: str) -> str:
    """Multiply-adds per second as a share of the matmul peak in ``precision``; "–" where that peak
    is under 5% of fp32's (bf16 emulated without AVX-512: convolutions take other paths than the
    emulated matmul, so the share says nothing)."""
    if peak[precision] < 0.05 * peak["fp32"]:
        return "–"
    return f"{100 * macs_per_s / (peak[precision] / 2 * 1e9):.1f}%"


def print_training(result, peak: dict | None, batch: int) -> None:
    rates, macs = result
    print(f"\ntraining step, batch {batch}, 28² x 1 channel, SGD + Nesterov momentum (the suite's models; "
          "timm has no CIFAR ResNet-20)")
    print(f"{'':<14}{'fp32 img/s':>12}{'bf16 img/s':>12}{'bf16/fp32':>11}{'fp32 % peak':>13}{'bf16 % peak':>13}")
    for m in ("se_resnet20", "resnet20"):
        f, b = rates[(m, "fp32")], rates[(m, "bf16")]
        frac = {pr: _share(3 * macs[m] * rates[(m, pr)], peak, pr) for pr in PRECISIONS}
        print(f"{m:<14}{f:>12.0f}{b:>12.0f}{b / f:>10.2f}x{frac['fp32']:>13}{frac['bf16']:>13}")
    print(f"SE/plain training-step time: fp32 {rates[('resnet20', 'fp32')] / rates[('se_resnet20', 'fp32')]:.3f}, "
          f"bf16 {rates[('resnet20', 'bf16')] / rates[('se_resnet20', 'bf16')]:.3f} "
          f"(multiply-adds per image: SE-ResNet-20 {macs['se_resnet20'] / 1e6:.1f} M, "
          f"ResNet-20 {macs['resnet20'] / 1e6:.1f} M)", flush=True)


def _pair(plain: nn.Module, se: nn.Module) -> dict[str, nn.Module]:
    """ResNet-50 holding SE-ResNet-50's own weight tensors (``benchmarks/se_cost.py``): the two
    read the same memory, so one process's ratio does not hang on where each model's weights landed
    (a few percent either way)."""
    from se_cost import share_weights  # noqa: PLC0415 (benchmarks/se_cost.py, beside this file)

    return {"ResNet-50": share_weights(plain, se), "SE-ResNet-50": se}


def inference_models(device) -> dict[str, dict[str, nn.Module]]:
    """SE-ResNet-50 and ResNet-50: the suite's in both stride conventions, and timm's; each plain
    network shares its SE network's weights."""
    pairs = {f"ours, stride in {where}": _pair(senet.build_model("resnet50", stride_in_1x1=s1),
                                               senet.build_model("se_resnet50", stride_in_1x1=s1))
             for where, s1 in (("1×1 (paper)", True), ("3×3 (v1.5)", False))}
    try:
        import timm  # a test dependency

        pairs["timm"] = _pair(timm.create_model("resnet50", pretrained=False),
                              timm.create_model("seresnet50", pretrained=False))
    except ImportError:
        print("(timm is not installed: its row is left out)")
    return {k: {n: m.to(device).eval() for n, m in v.items()} for k, v in pairs.items()}


def inference(device, rounds: int, warmup: int, clock: Timer) -> dict[tuple[str, str], float]:
    """Median ms of one 224² image per (row, model), one forward of each model per round in a
    rotating order (as benchmarks/latency.py, but by the bench's clock)."""
    models = inference_models(device)
    x = torch.randn(1, 3, 224, 224, device=device)
    flat = [(row, name, m) for row, pair in models.items() for name, m in pair.items()]
    times: dict[tuple[str, str], list[float]] = {(r, n): [] for r, n, _ in flat}
    with torch.inference_mode():
        for i in range(warmup + rounds):
            k = i % len(flat)
            for row, name, m in flat[k:] + flat[:k]:
                t = clock()
                m(x)
                if i >= warmup:
                    times[(row, name)].append((clock() - t) * 1e3)
    return {k: median(v) for k, v in times.items()}


def print_inference(device, rounds: int, warmup: int, clock: Timer) -> None:
    ms = inference(device, rounds, warmup, clock)
    print(f"\ninference, batch 1, 224², fp32, median of {rounds} interleaved rounds: SE-ResNet-50 / ResNet-50")
    print(f"{'':<30}{'ResNet-50 ms':>14}{'SE-ResNet-50 ms':>17}{'SE/plain':>10}")
    for row in dict.fromkeys(r for r, _ in ms):
        a, b = ms[(row, "ResNet-50")], ms[(row, "SE-ResNet-50")]
        print(f"{row:<30}{a:>14.1f}{b:>17.1f}{b / a:>10.3f}")
    pa, pb = PAPER_MS["ResNet-50"], PAPER_MS["SE-ResNet-50"]
    print(f"{'paper (§4, CPU)':<30}{pa:>14.1f}{pb:>17.1f}{pb / pa:>10.3f}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
