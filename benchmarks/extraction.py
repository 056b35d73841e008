"""Cost of excitation extraction against a plain inference pass, and its memory at 1k vs 10k images.

The statistics of ``senet analyze`` are streamed by forward hooks on every SE gate: per batch one
``index_add_`` for the class sums, one for the squared deviations and one ``bincount`` for the
histograms, all on the model's device. This prints, side by side, the time of a plain inference pass
over the test images and of the same pass with extraction (target ratio <= 1.15). Then the peak
memory of extraction over 1k and 10k images, each in a fresh process after a plain pass over the same
images: ru_maxrss growth beyond the plain pass's peak, tracemalloc peak, CUDA peak over the resident
model, and the accumulator's state size.

    python benchmarks/extraction.py [--model se_resnet20] [--data.name fashion-mnist] [--images 10000]
                                    [--checkpoint CKPT] [--blocks all] [--device auto]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc

import torch


def _data(args):
    from senet import config
    from senet.data import DatasetNotFoundError, load_datasets

    flat = {"data.name": args.data_name, "data.val_fraction": 0.0, "data.synthetic_train": 256,
            "data.synthetic_test": args.images}
    if args.data_root:
        flat["data.root"] = args.data_root
    try:
        ds = load_datasets(config.from_flat(flat).data)
    except DatasetNotFoundError as e:
        print(f"{args.data_name} not found ({str(e).splitlines()[0][:80]}...); using the synthetic set",
              file=sys.stderr)
        flat["data.name"] = "synthetic"
        ds = load_datasets(config.from_flat(flat).data)
    x, y = ds.test_x, ds.test_y
    if len(x) < args.images:  # repeat the split to reach the requested count
        reps = -(-args.images // len(x))
        x, y = x.repeat(reps, 1, 1, 1), y.repeat(reps)
    return x[:args.images], y[:args.images], ds


def _model(args, ds, dev):
    from senet import build_model

    if args.checkpoint:
        from senet.checkpoint import load_model

        return load_model(args.checkpoint)[0].to(dev).eval()
    return build_model(args.model, num_classes=ds.num_classes, in_chans=ds.in_chans).to(dev).eval()


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def plain_pass(model, x, y, ds, dev, bs):
    from analysis.extract import autocast_as_trained, batches

    with autocast_as_trained(dev):
        for xb, _ in batches(x, y, ds.mean, ds.std, bs, dev):
            model(xb)
    _sync(dev)


@torch.no_grad()
def extract_pass(model, x, y, ds, dev, bs, blocks):
    from analysis.extract import ExcitationAccumulator, attach, autocast_as_trained, batches

    acc = ExcitationAccumulator(ds.num_classes, 50)
    handles, ctx = attach(model, acc, blocks, dev)
    try:
        with autocast_as_trained(dev):
            for xb, yb in batches(x, y, ds.mean, ds.std, bs, dev):
                ctx["labels"] = yb
                model(xb)
        _sync(dev)
    finally:
        for h in handles:
            h.remove()
    return acc


def _blocks(model, spec):
    from analysis.extract import select_blocks
    from senet import se_modules

    return select_blocks(list(se_modules(model)), spec)


def child(args):
    """One extraction over ``args.images`` images in this process; prints its memory as JSON."""
    from analysis.extract import pick_device

    dev = pick_device(args.device)
    x, y, ds = _data(args)
    model = _model(args, ds, dev)
    blocks = _blocks(model, args.blocks)
    # A plain pass over the same images first: its peak is the baseline that extraction must not raise.
    rss_a = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    plain_pass(model, x, y, ds, dev, args.batch_size)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    tracemalloc.start()
    acc = extract_pass(model, x, y, ds, dev, args.batch_size, blocks)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"images": len(x), "plain_rss_growth_kib": rss0 - rss_a, "extract_rss_over_plain_kib": rss1 - rss0, "tracemalloc_peak_kib": peak // 1024,
           "state_kib": acc.state_nbytes() // 1024, "blocks": len(blocks)}
    if dev.type == "cuda":
        out["cuda_peak_over_base_mib"] = (torch.cuda.max_memory_allocated() - base_cuda) / 2**20
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="se_resnet20")
    p.add_argument("--checkpoint", default="", help="a trained checkpoint (its model replaces --model)")
    p.add_argument("--data.name", dest="data_name", default="fashion-mnist")
    p.add_argument("--data.root", dest="data_root", default="")
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--blocks", default="all", help="default | all | names (all: the worst case)")
    p.add_argument("--device", default="auto")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return child(args)

    from analysis.extract import pick_device

    dev = pick_device(args.device)
    x, y, ds = _data(args)
    model = _model(args, ds, dev)
    blocks = _blocks(model, args.blocks)
    print(f"{args.model if not args.checkpoint else args.checkpoint} on {ds.name} test, {len(x)} images, "
          f"{len(blocks)} SE blocks hooked, device {dev}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")
    plain_pass(model, x[:args.batch_size], y[:args.batch_size], ds, dev, args.batch_size)  # warm-up
    times = {"plain": [], "extract": []}
    for _ in range(args.reps):  # interleaved, so drifting machine load hits both alike
        t = time.perf_counter()
        plain_pass(model, x, y, ds, dev, args.batch_size)
        times["plain"].append(time.perf_counter() - t)
        t = time.perf_counter()
        extract_pass(model, x, y, ds, dev, args.batch_size, blocks)
        times["extract"].append(time.perf_counter() - t)
    tp, te = min(times["plain"]), min(times["extract"])
    print(f"{'pass':<22}{'best s':>8}{'all runs (s)':>30}")
    for k, v in times.items():
        print(f"{k:<22}{min(v):>8.3f}{'  ' + ' '.join(f'{t:.3f}' for t in v):>30}")
    print(f"ratio extraction / plain: {te / tp:.3f}  (target <= 1.15)")

    print("memory of extraction (fresh process each):")
    for n in (1000, 10000):
        cmd = [sys.executable, __file__, "--child", "--images", str(n), "--model", args.model,
               "--data.name", args.data_name, "--batch-size", str(args.batch_size), "--blocks", args.blocks,
               "--device", args.device, "--threads", str(torch.get_num_threads())]
        if args.checkpoint:
            cmd += ["--checkpoint", args.checkpoint]
        if args.data_root:
            cmd += ["--data.root", args.data_root]
        r = subprocess.run(cmd, capture_output=True, text=True, check=True)
        print("  " + r.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
