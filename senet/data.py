"""Datasets held in memory as uint8 tensors, with batched augmentation on the training device.

Small datasets (Fashion-MNIST, CIFAR) are decoded once into ``N×C×H×W`` uint8 tensors and moved to the
training device whole; the training loop indexes batches out of them and applies the paper's CIFAR
augmentation (§5.1: 4-pixel zero pad, random crop, horizontal flip, mean/std normalisation) to the
whole batch at once. No per-image PIL transforms and no DataLoader workers: for CIFAR-size networks
those, not the network, would bound the images per second.

:func:`load_datasets` reads a dataset through its loader (:mod:`senet.datasets`, registered in
:data:`DATASETS`), holds a validation split out of the training images, limits the training set to
``data.subset`` images and computes the per-channel mean and standard deviation. The split is a
shuffle seeded with ``data.split_seed``, a property of the data config and never of a run's seed, so
training, every arm and seed of a study and a later analysis all see the same images.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .config import DataConfig
from .datasets import DATASETS, SYNTHETIC_CLASSES, DatasetNotFoundError  # noqa: F401 - where callers find them
from .registry import Registry


@dataclass
class Datasets:
    """Train, validation and test splits in memory (uint8 images ``N×C×H×W``, int64 labels).

    ``val_x`` is an empty tensor when ``data.val_fraction`` is 0. ``mean`` and ``std`` are per-channel
    statistics of the training split in [0, 1] units, used by :func:`normalize`.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    def nbytes(self) -> int:
        """Memory held by the six tensors."""
        return sum(t.numel() * t.element_size() for t in
                   (self.train_x, self.train_y, self.val_x, self.val_y, self.test_x, self.test_y))

    def to(self, device) -> Datasets:
        """The same splits on ``device`` (the training loop indexes batches there)."""
        mv = {k: getattr(self, k).to(device) for k in
              ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
        return Datasets(**mv, classes=self.classes, mean=self.mean, std=self.std, name=self.name)


# ---------------------------------------------------------------------------------------------
# Splits and statistics
# ---------------------------------------------------------------------------------------------
def channel_stats(x: torch.Tensor, chunk: int = 8192) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images in [0, 1] units (chunked: no big copy)."""
    c = x.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for i in range(0, len(x), chunk):
        b = x[i:i + chunk].to(torch.float64)
        s += b.sum((0, 2, 3))
        s2 += (b * b).sum((0, 2, 3))
    n = max(1, x.numel() // c)
    mean = s / n
    std = (s2 / n - mean ** 2).clamp_min(1e-12).sqrt()
    return tuple((mean / 255).tolist()), tuple((std / 255).clamp_min(1e-3).tolist())


def load_datasets(data_cfg: DataConfig) -> Datasets:
    """Load ``data_cfg.name`` and split it.

    The splits depend on the data config alone: one shuffle of the training images seeded with
    ``data_cfg.split_seed`` (never a run's seed, so training, sweeps and analysis agree). Its first
    ``n_val`` images are the validation split and the training images follow:

    - without ``subset``: ``n_val = round(val_fraction * N)`` of the N training images, training
      gets the rest;
    - with ``subset`` S: ``n_val = round(val_fraction * min(S, N))`` (sized from the subset, not from
      the whole file), training gets the next S images.

    A dataset with its own validation split (image folders with ``val/`` and ``test/``) keeps it and
    holds nothing out. The test set is never touched by either; ``test_subset`` evaluates on a
    fixed sample of it drawn with the same ``split_seed`` (quick sweeps, where evaluating every test
    image each epoch would cost as much as training).
    """
    raw = DATASETS.get(data_cfg.name)(data_cfg)
    x, y = raw.train_x, raw.train_y
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(data_cfg.split_seed))
    if raw.val_x is not None:
        val_x, val_y, rest = raw.val_x, raw.val_y, perm
    else:
        used = min(data_cfg.subset, len(x)) if data_cfg.subset else len(x)
        n_val = int(round(data_cfg.val_fraction * used))
        val_idx, rest = perm[:n_val].sort().values, perm[n_val:]
        val_x, val_y = x[val_idx], y[val_idx]
    if data_cfg.subset:
        rest = rest[:data_cfg.subset]
    rest = rest.sort().values  # keep file order: indexing with sorted indices reads memory in order
    train_x, train_y = x[rest], y[rest]
    test_x, test_y = raw.test_x, raw.test_y
    if data_cfg.test_subset and data_cfg.test_subset < len(test_x):
        # a fixed sample, the same for every seed and arm, so arms stay comparable
        keep = torch.randperm(len(test_x), generator=torch.Generator().manual_seed(data_cfg.split_seed))
        keep = keep[:data_cfg.test_subset].sort().values
        test_x, test_y = test_x[keep], test_y[keep]
    mean, std = channel_stats(train_x)
    return Datasets(train_x, train_y, val_x, val_y, test_x, test_y, list(raw.classes),
                    mean, std, data_cfg.name)


# ---------------------------------------------------------------------------------------------
# Batched transforms, on the tensors' device
# ---------------------------------------------------------------------------------------------
def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (or [0, 255] float) images -> float32 ``(x/255 - mean) / std``, per channel, batched."""
    c = x.shape[1]
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, c, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, c, 1, 1)
    # one multiply-add: x · 1/(255 s) − m/s
    return torch.addcmul(-m / s, x.to(torch.float32), 1.0 / (255.0 * s))


Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
AUGMENTS: Registry[Augment] = Registry("augmentation")


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Horizontal flip of a random half of the batch."""
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def random_crop(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Zero-pad by ``pad`` pixels and take a random crop of the original size, per image (one gather)."""
    n, c, h, w = x.shape
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    off = torch.randint(0, 2 * pad + 1, (2, n), device=x.device, generator=generator)
    rows = (off[0].view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (off[1].view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    idx = rows * (w + 2 * pad) + cols  # flat index into each padded plane
    flat = xp.flatten(2)
    return flat.gather(2, idx.expand(n, c, h, w).reshape(n, c, h * w)).view(n, c, h, w)


AUGMENTS.add("none", lambda x, g: x)
AUGMENTS.add("flip", random_flip)
AUGMENTS.add("crop_flip", lambda x, g: random_flip(random_crop(x, g), g))


def augment(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Apply a registered augmentation (``crop_flip``: the paper's CIFAR recipe) to a batch on its device.

    ``generator`` must live on ``x.device``; it alone decides the crops and flips, so a run that
    saves and restores it sees the same augmentation after a resume.
    """
    return AUGMENTS.get(kind)(x, generator)
