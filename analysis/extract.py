"""Excitation statistics per (block, class, channel), streamed through forward hooks on the gates.

The paper's §7.2 (Figures 6 and 7) reads the excitations s = σ(W2 δ(W1 z)) of chosen SE blocks on
the images of chosen classes. Here a forward hook on each ``<block>.se.gate`` sees s for every image
of a dataset split, and an :class:`ExcitationAccumulator` folds each batch into per-(class, channel)
running moments and a fixed-bin histogram over the gate's range
(:data:`senet.se.GATE_RANGES`). Its state has a fixed size, so memory does not grow with the number
of images; ``forward`` is never touched.

Pooled gates give s of shape (N, C, 1, 1); a NoSqueeze gate (paper Table 16) gives (N, C, H, W) and is
averaged over positions first, so every block contributes one value per image and channel.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from senet import se_modules
from senet.se import GATE_RANGES

#: Histogram range for a gate missing from GATE_RANGES (a custom callable gate).
DEFAULT_RANGE = (-4.0, 4.0)
_NAME = re.compile(r"^SE_(\d+)_(\d+)$")


def block_position(name: str) -> tuple[int, int]:
    """``"SE_4_2"`` -> ``(4, 2)``: the paper's stage and block index."""
    m = _NAME.match(name)
    if not m:
        raise ValueError(f"not an SE block name: {name!r} (expected SE_<stage>_<block>)")
    return int(m.group(1)), int(m.group(2))


def select_blocks(names: list[str], spec: str | None = None) -> list[str]:
    """Choose the SE blocks to read.

    ``None``/``"default"``: the paper's choice for Figures 6-7, the last block of each stage (just
    before down-sampling) and every block of the last stage. ``"all"``: every SE block. Otherwise a
    comma list of names (``SE_2_3,SE_4_1``) or of stage numbers (``4`` = all blocks of stage 4).
    """
    if not names:
        raise ValueError("the model has no SE blocks to analyse")
    order = sorted(names, key=block_position)
    if spec in (None, "", "default"):
        stages = sorted({block_position(n)[0] for n in order})
        last = stages[-1]
        out = []
        for n in order:
            s, b = block_position(n)
            final = b == max(block_position(m)[1] for m in order if block_position(m)[0] == s)
            if s == last or final:
                out.append(n)
        return out
    if spec == "all":
        return order
    out = []
    for tok in (t.strip() for t in spec.split(",") if t.strip()):
        if tok.isdigit():
            hit = [n for n in order if block_position(n)[0] == int(tok)]
            if not hit:
                raise ValueError(f"no SE blocks in stage {tok}; stages with SE: "
                                 + ", ".join(sorted({str(block_position(n)[0]) for n in order})))
            out += hit
        elif tok in names:
            out.append(tok)
        else:
            raise ValueError(f"unknown SE block {tok!r}; choose one of: default, all, "
                             + ", ".join(order))
    return sorted(dict.fromkeys(out), key=block_position)


@dataclass
class _BlockState:
    lo: float
    hi: float
    count: torch.Tensor  # (K,) float64, images per class
    mean: torch.Tensor  # (K, C) float64, running mean
    m2: torch.Tensor  # (K, C) float64, sum of squared deviations (Chan et al.)
    hist: torch.Tensor  # (K * C * bins,) int64


class ExcitationAccumulator:
    """Running per-(class, channel) count, mean, M2 and histogram for several blocks.

    Each batch is reduced on its device with ``index_add_`` (per-class sums and squared deviations
    about the batch's class means) and merged into the running moments with Chan et al.'s parallel
    formula in float64, which stays accurate where naive sums of squares cancel; the histogram is
    one ``bincount`` per batch. No per-sample Python loop, and the state size is
    ``K · C · (bins + 2)`` per block, independent of the number of images.
    """

    def __init__(self, num_classes: int, bins: int = 50):
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        self.num_classes = num_classes
        self.bins = bins
        self.blocks: dict[str, _BlockState] = {}

    def add_block(self, name: str, channels: int, value_range: tuple[float, float],
                  device: torch.device | str = "cpu") -> None:
        k, dev = self.num_classes, torch.device(device)
        lo, hi = map(float, value_range)
        if not hi > lo:
            raise ValueError(f"bad histogram range {value_range!r} for {name}")
        self.blocks[name] = _BlockState(
            lo, hi, torch.zeros(k, dtype=torch.float64, device=dev),
            torch.zeros(k, channels, dtype=torch.float64, device=dev),
            torch.zeros(k, channels, dtype=torch.float64, device=dev),
            torch.zeros(k * channels * self.bins, dtype=torch.int64, device=dev))

    def update(self, name: str, s: torch.Tensor, labels: torch.Tensor) -> None:
        """Fold a batch of excitations ``s`` (N, C) or (N, C, H, W) with integer ``labels`` (N,)."""
        st = self.blocks[name]
        if s.dim() == 4:  # NoSqueeze: one value per image and channel
            s = s.mean((2, 3))
        x = s.detach().to(torch.float64)
        y = labels.to(x.device, torch.long)
        k, c = st.mean.shape
        n_b = torch.bincount(y, minlength=k).to(torch.float64)
        sums = torch.zeros(k, c, dtype=torch.float64, device=x.device).index_add_(0, y, x)
        mean_b = sums / n_b.clamp(min=1).unsqueeze(1)
        dev = x - mean_b[y]
        m2_b = torch.zeros_like(sums).index_add_(0, y, dev * dev)
        n_a = st.count
        n = n_a + n_b
        delta = mean_b - st.mean
        w = (n_b / n.clamp(min=1)).unsqueeze(1)
        st.mean += delta * w
        st.m2 += m2_b + delta * delta * (n_a.unsqueeze(1) * w)
        st.count = n
        # Histogram: values outside the gate's range land in the end bins.
        b = ((x - st.lo) * (self.bins / (st.hi - st.lo))).floor().clamp_(0, self.bins - 1).long()
        ch = torch.arange(c, device=x.device)
        idx = (y.unsqueeze(1) * c + ch) * self.bins + b
        st.hist += torch.bincount(idx.flatten(), minlength=st.hist.numel())

    def state_nbytes(self) -> int:
        """Bytes held by the running state (constant in the number of images)."""
        return sum(t.numel() * t.element_size() for st in self.blocks.values()
                   for t in (st.count, st.mean, st.m2, st.hist))

    def tables(self, class_names: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Tidy tables: statistics (one row per block, class, channel) and histograms (one row per
        block, class, channel, bin). ``std`` is the population standard deviation over images."""
        names = class_names or [str(i) for i in range(self.num_classes)]
        stats, hists = [], []
        for block, st in self.blocks.items():
            stage, index = block_position(block)
            k, c = st.mean.shape
            count = st.count.cpu().numpy()
            mean = st.mean.cpu().numpy()
            var = st.m2.cpu().numpy() / np.maximum(count, 1)[:, None]
            cls = np.repeat(np.arange(k), c)
            chan = np.tile(np.arange(c), k)
            stats.append(pd.DataFrame({
                "block": block, "stage": stage, "block_index": index,
                "class": [names[i] for i in cls], "class_index": cls, "channel": chan,
                "count": np.repeat(count, c).astype(np.int64), "mean": mean.ravel(),
                "std": np.sqrt(np.maximum(var, 0)).ravel(), "range_lo": st.lo, "range_hi": st.hi}))
            h = st.hist.cpu().numpy().reshape(k, c, self.bins)
            edges = np.linspace(st.lo, st.hi, self.bins + 1)
            hists.append(pd.DataFrame({
                "block": block, "stage": stage, "block_index": index,
                "class": [names[i] for i in np.repeat(cls, self.bins)],
                "class_index": np.repeat(cls, self.bins), "channel": np.repeat(chan, self.bins),
                "bin": np.tile(np.arange(self.bins), k * c),
                "bin_lo": np.tile(edges[:-1], k * c), "bin_hi": np.tile(edges[1:], k * c),
                "count": h.ravel().astype(np.int64)}))
        s = pd.concat(stats, ignore_index=True)
        h = pd.concat(hists, ignore_index=True)
        for t in (s, h):
            t["class"] = t["class"].astype(str)
        return s, h


def pick_device(device: str = "auto") -> torch.device:
    """CUDA when present (``auto``), else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def batches(x: torch.Tensor, y: torch.Tensor, mean, std, batch_size: int, device: torch.device,
            progress: str | None = None):
    """Yield normalised float batches on ``device`` from uint8 images (normalised per batch, so a
    whole split is never held as floats)."""
    from senet.data import normalize  # noqa: PLC0415 - only needed when reading a dataset

    rng = range(0, len(x), batch_size)
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        rng = tqdm(rng, desc=progress, unit="batch", leave=False)
    for i in rng:
        xb = torch.as_tensor(x[i:i + batch_size]).to(device, non_blocking=True)
        yb = torch.as_tensor(y[i:i + batch_size]).to(device, non_blocking=True)
        yield normalize(xb, mean, std), yb


def autocast(device: torch.device):
    """bf16 autocast on CUDA (the suite's training precision there); a no-op on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def attach(model: nn.Module, acc: ExcitationAccumulator, blocks: list[str],
           device: torch.device) -> tuple[list, dict]:
    """Register a forward hook on each chosen block's gate; returns the handles and a mutable
    ``{"labels": tensor}`` the caller fills before each forward pass."""
    mods = se_modules(model)
    ctx: dict = {"labels": None}
    handles = []
    for name in blocks:
        m = mods[name]
        rng = GATE_RANGES.get(getattr(m, "gate_name", ""), DEFAULT_RANGE)
        acc.add_block(name, m.channels, rng, device)

        def hook(mod, inputs, out, _name=name):
            acc.update(_name, out, ctx["labels"])

        handles.append(m.gate.register_forward_hook(hook))
    return handles, ctx


@torch.no_grad()
def extract_excitations(model: nn.Module, x, y, mean, std, *, num_classes: int,
                        class_names: list[str] | None = None, blocks: str | list[str] | None = None,
                        bins: int = 50, batch_size: int = 256, device: str = "auto",
                        progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the model over uint8 images ``x`` with labels ``y`` and return the statistics and
    histogram tables (see :meth:`ExcitationAccumulator.tables`)."""
    dev = pick_device(device)
    model = model.to(dev).eval()
    names = list(se_modules(model))
    chosen = blocks if isinstance(blocks, list) else select_blocks(names, blocks)
    acc = ExcitationAccumulator(num_classes, bins)
    handles, ctx = attach(model, acc, chosen, dev)
    try:
        with autocast(dev):
            for xb, yb in batches(x, y, mean, std, batch_size, dev, "excitations" if progress else None):
                ctx["labels"] = yb
                model(xb)
    finally:
        for h in handles:
            h.remove()
    return acc.tables(class_names)


@torch.no_grad()
def evaluate(model: nn.Module, x, y, mean, std, *, batch_size: int = 256, device: str = "auto",
             progress: str | None = None) -> dict[str, float]:
    """Top-1 and top-5 error (%) of ``model`` on uint8 images ``x``."""
    dev = pick_device(device)
    model = model.to(dev).eval()
    n = top1 = top5 = 0
    with autocast(dev):
        for xb, yb in batches(x, y, mean, std, batch_size, dev, progress):
            logits = model(xb).float()
            k = min(5, logits.shape[1])
            pred = logits.topk(k, 1).indices
            hit = pred == yb.unsqueeze(1)
            top1 += int(hit[:, 0].sum())
            top5 += int(hit.any(1).sum())
            n += len(yb)
    return {"top1_err": 100.0 * (1 - top1 / max(n, 1)), "top5_err": 100.0 * (1 - top5 / max(n, 1)),
            "n": n}
