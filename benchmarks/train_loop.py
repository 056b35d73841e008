"""Images per second of ``senet.train.fit``'s loop against a bare PyTorch loop, and SE's step cost.

Both loops train the same network with the same batch size, SGD settings and batched on-device
augmentation over the same preloaded uint8 tensors; the bare loop has nothing else (no schedule,
no metrics, no divergence check). Runs alternate (bare, fit, bare, fit, ...) and the best of each
is kept, so background load on a shared machine hits both alike. Also printed: the training-step
time of SE-ResNet-20 over ResNet-20 (the paper's §4 reports 209 ms vs 190 ms per 256-image
ResNet-50 minibatch on a GPU, a ratio of 1.10). On a GPU the loops run in bf16 with channels_last,
and SE-ResNet-56 at batch 512 is added.

    python benchmarks/train_loop.py                     # Fashion-MNIST (or synthetic if absent)
    python benchmarks/train_loop.py --images 4096 --reps 3 --threads 2
    python benchmarks/train_loop.py --precision fp32     # the SE step ratio in fp32 on any CPU
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from senet import config, engine
from senet.checkpoint import build_from_config
from senet.data import DatasetNotFoundError, Datasets, augment, load_datasets, normalize
from senet.engine import fit, param_groups
from senet.runtime import autocast, resolve_device, resolve_precision


def bare_loop(cfg: config.Config, ds: Datasets, device: torch.device) -> float:
    """One epoch of the plainest loop over the same tensors; returns images/s."""
    torch.manual_seed(cfg.seed)
    precision, channels_last = resolve_precision(cfg, device)
    model = build_from_config(cfg, ds.num_classes, ds.in_chans).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.SGD(param_groups(model, cfg.optim.weight_decay, False), lr=cfg.optim.lr,
                          momentum=cfg.optim.momentum, nesterov=cfg.optim.nesterov,
                          fused=device.type == "cuda" or None)
    crit = nn.CrossEntropyLoss()
    gen = torch.Generator(device=device).manual_seed(0)
    bs, n = cfg.optim.batch_size, len(ds.train_x)
    perm = torch.randperm(n).to(device)
    t0 = engine.clock()
    for i in range(n // bs):
        idx = perm[i * bs:(i + 1) * bs]
        x = normalize(augment(ds.train_x[idx], cfg.data.augment, gen), ds.mean, ds.std)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            loss = crit(model(x), ds.train_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (n // bs) * bs / (engine.clock() - t0)


def fit_loop(cfg: config.Config, ds: Datasets) -> float:
    """One epoch of ``fit`` (its own timer covers the training phase only); returns images/s."""
    out = []
    fit(cfg, out.append, datasets=ds)
    return out[0]["images_per_s"]


def compare(model: str, batch: int, ds: Datasets, args, device) -> tuple[float, float]:
    cfg = config.from_flat({"model.name": model, "optim.batch_size": batch, "optim.epochs": 1,
                       "optim.schedule": "constant", "run.progress": False, "run.device": args.device,
                       "data.augment": "crop_flip", "run.threads": args.threads,
                       "run.precision": args.precision})
    bare, ours = [], []
    for _ in range(args.reps):
        bare.append(bare_loop(cfg, ds, device))
        ours.append(fit_loop(cfg, ds))
    b, f = max(bare), max(ours)
    print(f"{model:<14} batch {batch:>4}  bare {b:8.1f} img/s   fit {f:8.1f} img/s   "
          f"fit/bare {f / b:.3f}   (runs: bare {', '.join(f'{v:.0f}' for v in bare)}; "
          f"fit {', '.join(f'{v:.0f}' for v in ours)})", flush=True)
    return b, f


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="fashion-mnist", help="dataset (falls back to synthetic if missing)")
    p.add_argument("--images", type=int, default=2048, help="training images per timed epoch")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--reps", type=int, default=2, help="alternating runs of each loop; the best counts")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", help="run.precision of both loops: auto | fp32 | bf16")
    p.add_argument("--clock", choices=("auto", "cpu", "wall"), default="auto",
                   help="cpu: process CPU time (fair on a CPU shared with other jobs); auto: cpu on a "
                        "CPU device, wall on a GPU")
    args = p.parse_args()

    device = resolve_device(args.device)
    if args.clock == "cpu" or (args.clock == "auto" and device.type == "cpu"):
        engine.clock = time.process_time  # fit's loop and the bare loop read the same clock
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        full = load_datasets(config.DataConfig(name=args.data, val_fraction=0, subset=args.images))
    except DatasetNotFoundError as e:
        print(f"({e}; using synthetic)")
        full = load_datasets(config.DataConfig(name="synthetic", synthetic_train=args.images, val_fraction=0))
    # a small test split: fit evaluates each epoch, outside the timed training phase
    ds = Datasets(full.train_x, full.train_y, full.val_x, full.val_y, full.test_x[:256], full.test_y[:256],
                  full.classes, full.mean, full.std, full.name).to(device)
    precision, cl = resolve_precision(config.from_flat({"run.device": args.device, "run.precision": args.precision}),
                                      device)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"{precision}, channels_last={cl}, threads {torch.get_num_threads()}, {ds.name} "
          f"{len(ds.train_x)} images of {tuple(ds.train_x.shape[1:])}, {args.reps} alternating runs each, "
          f"clock {'CPU time' if engine.clock is time.process_time else 'wall'}")

    plain_b, plain_f = compare("resnet20", args.batch_size, ds, args, device)
    se_b, se_f = compare("se_resnet20", args.batch_size, ds, args, device)
    if device.type == "cuda":
        big = Datasets(ds.train_x.repeat(8, 1, 1, 1), ds.train_y.repeat(8), ds.val_x, ds.val_y, ds.test_x,
                       ds.test_y, ds.classes, ds.mean, ds.std, ds.name)
        compare("se_resnet20", 512, big, args, device)
        compare("se_resnet56", 512, big, args, device)
    print(f"fit/bare images/s: ResNet-20 {plain_f / plain_b:.3f}, SE-ResNet-20 {se_f / se_b:.3f} (target >= 0.95)")
    print(f"SE-ResNet-20 / ResNet-20 training-step time: {plain_b / se_b:.3f} (bare loop), "
          f"{plain_f / se_f:.3f} (fit)")


if __name__ == "__main__":
    main()
