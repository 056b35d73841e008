"""Excitation statistics per (block, class, channel), streamed through forward hooks on the gates.

The paper's §7.2 (Figures 6 and 7) reads the excitations s = σ(W2 δ(W1 z)) of chosen SE blocks on
the images of chosen classes. Here a forward hook on each ``<block>.se.gate`` sees s for every image
of a dataset split, and an :class:`ExcitationAccumulator` folds each batch into per-(class, channel)
running moments and a fixed-bin histogram over the gate's range (the ``range`` its registration
in :data:`senet.slots.GATES` declares, within :data:`DEFAULT_RANGE`). Its state has a fixed size,
so memory does not grow with the number of images; ``forward`` is never touched.

Pooled gates give s of shape (N, C, 1, 1); a NoSqueeze gate (paper Table 16) gives (N, C, H, W) and is
averaged over positions first, so every block contributes one value per image and channel.
"""
from __future__ import annotations

import contextlib
import contextvars
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from senet import se_modules
from senet.errors import UserValueError
from senet.runtime import autocast
from senet.se import GATES

#: The histogram window: a gate's range where it is narrower (bounded gates), all of it for an
#: unbounded side and for a custom callable gate, whose range is not registered.
DEFAULT_RANGE = (-4.0, 4.0)
_NAME = re.compile(r"^SE_(\d+)_(\d+)(?:_[A-Za-z]\w*)?$")


def block_position(name: str) -> tuple[int, int]:
    """``"SE_4_2"`` -> ``(4, 2)``: the paper's stage and block index. A module at one of several
    sites of a block (GCT before every convolution: ``"SE_4_2_conv1"``) has its block's position."""
    m = _NAME.match(name)
    if not m:
        raise ValueError(f"not an SE block name: {name!r} (expected SE_<stage>_<block>[_<site>])")
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
                raise UserValueError(f"no SE blocks in stage {tok}; stages with SE: "
                                 + ", ".join(sorted({str(block_position(n)[0]) for n in order})))
            out += hit
        elif tok in names:
            out.append(tok)
        else:
            raise UserValueError(f"unknown SE block {tok!r}; choose one of: default, all, "
                             + ", ".join(order))
    return sorted(dict.fromkeys(out), key=block_position)


@dataclass(frozen=True)
class _Block:
    start: int  # first column of the block on the accumulator's channel axis
    channels: int
    lo: float  # histogram range (the gate's output range)
    hi: float
    saturating: bool  # the gate saturates at the bounds of (0, 1) (its registration's GateInfo.saturating)


class ExcitationAccumulator:
    """Running per-(class, channel) count, mean, M2 and histogram for several blocks.

    The channels of all blocks sit side by side on one axis, so a forward pass costs one fixed set
    of small device operations whatever the number of blocks: per-class sums and squared deviations
    about the batch's class means (two ``index_add_``), a merge into the running moments with Chan
    et al.'s parallel formula in float64 (accurate where naive sums of squares cancel), and one
    ``bincount`` for every histogram. No per-sample Python, no host synchronisation, and the state
    size is ``K · W · (bins + 3)`` numbers for K classes and W channels in all, independent of the
    number of images.
    """

    def __init__(self, num_classes: int, bins: int = 50):
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        self.num_classes = num_classes
        self.bins = bins
        self.blocks: dict[str, _Block] = {}
        self.width = 0
        self._state: dict[str, torch.Tensor] | None = None

    def add_block(self, name: str, channels: int, value_range: tuple[float, float],
                  device: torch.device | str = "cpu", saturating: bool | None = None) -> None:
        """Add a block's columns; ``saturating`` defaults to "the range is (0, 1)"."""
        lo, hi = map(float, value_range)
        if not hi > lo:
            raise ValueError(f"bad histogram range {value_range!r} for {name}")
        if self._state is not None and self._state["count"].any():
            raise ValueError("add every block before the first update")
        if saturating is None:
            saturating = (lo, hi) == (0.0, 1.0)
        self.blocks[name] = _Block(self.width, channels, lo, hi, bool(saturating))
        self.width += channels
        k, w, dev = self.num_classes, self.width, torch.device(device)
        lo_v = torch.cat([torch.full((b.channels,), b.lo, dtype=torch.float64) for b in self.blocks.values()])
        hi_v = torch.cat([torch.full((b.channels,), b.hi, dtype=torch.float64) for b in self.blocks.values()])
        self._state = {
            "count": torch.zeros(k, w, dtype=torch.float64, device=dev),  # images per class (and column)
            "mean": torch.zeros(k, w, dtype=torch.float64, device=dev),
            "m2": torch.zeros(k, w, dtype=torch.float64, device=dev),  # sum of squared deviations
            "hist": torch.zeros(k * w * self.bins, dtype=torch.int64, device=dev),
            "lo": lo_v.to(dev), "scale": (self.bins / (hi_v - lo_v)).to(dev)}

    @staticmethod
    def _per_image(s: torch.Tensor) -> torch.Tensor:
        if s.dim() == 4 and s.shape[2] * s.shape[3] > 1:  # NoSqueeze: one value per image and channel
            s = s.mean((2, 3))
        return s.reshape(s.shape[0], -1)

    def update(self, name: str, s: torch.Tensor, labels: torch.Tensor) -> None:
        """Fold one block's excitations ``s`` (N, C), (N, C, 1, 1) or (N, C, H, W) with labels (N,)."""
        b = self.blocks[name]
        self._fold(b.start, self._per_image(s), labels)

    def update_all(self, excitations: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        """Fold one forward pass's excitations of every block at once (the cheap path)."""
        if set(excitations) != set(self.blocks):
            raise ValueError(f"update_all needs every block: got {sorted(excitations)}, "
                             f"expected {list(self.blocks)}")
        x = torch.cat([self._per_image(excitations[n]) for n in self.blocks], 1)
        self._fold(0, x, labels)

    def _fold(self, start: int, s: torch.Tensor, labels: torch.Tensor) -> None:
        st = self._state
        x = s.detach().to(torch.float64)
        y = labels.to(x.device, torch.long)
        k, c = self.num_classes, x.shape[1]
        cols = slice(start, start + c)
        n_b = torch.bincount(y, minlength=k).to(torch.float64).unsqueeze(1)  # (K, 1)
        sums = torch.zeros(k, c, dtype=torch.float64, device=x.device).index_add_(0, y, x)
        mean_b = sums / n_b.clamp(min=1)
        dev = x - mean_b[y]
        m2_b = torch.zeros_like(sums).index_add_(0, y, dev * dev)
        n_a = st["count"][:, cols]
        n = n_a + n_b
        delta = mean_b - st["mean"][:, cols]
        w = n_b / n.clamp(min=1)
        st["mean"][:, cols] += delta * w
        st["m2"][:, cols] += m2_b + delta * delta * n_a * w
        st["count"][:, cols] = n
        # Histogram: values outside the gate's range land in the end bins.
        b = ((x - st["lo"][cols]) * st["scale"][cols]).floor_().clamp_(0, self.bins - 1).long()
        ch = torch.arange(start, start + c, device=x.device)
        idx = (y.unsqueeze(1) * self.width + ch) * self.bins + b
        st["hist"] += torch.bincount(idx.flatten(), minlength=st["hist"].numel())

    def state_nbytes(self) -> int:
        """Bytes held by the running state (constant in the number of images)."""
        return sum(t.numel() * t.element_size() for t in (self._state or {}).values())

    def tables(self, class_names: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Tidy tables: statistics (one row per block, class, channel) and histograms (one row per
        block, class, channel, bin). ``std`` is the population standard deviation over images."""
        names = class_names or [str(i) for i in range(self.num_classes)]
        st = {k: v.cpu().numpy() for k, v in self._state.items()}
        hist_all = st["hist"].reshape(self.num_classes, self.width, self.bins)
        stats, hists = [], []
        for block, bl in self.blocks.items():
            stage, index = block_position(block)
            k, c, cols = self.num_classes, bl.channels, slice(bl.start, bl.start + bl.channels)
            count, mean = st["count"][:, cols], st["mean"][:, cols]
            var = st["m2"][:, cols] / np.maximum(count, 1)
            cls = np.repeat(np.arange(k), c)
            chan = np.tile(np.arange(c), k)
            stats.append(pd.DataFrame({
                "block": block, "stage": stage, "block_index": index,
                "class": [names[i] for i in cls], "class_index": cls, "channel": chan,
                "count": count.ravel().astype(np.int64), "mean": mean.ravel(),
                "std": np.sqrt(np.maximum(var, 0)).ravel(), "range_lo": bl.lo, "range_hi": bl.hi,
                "saturating": bl.saturating}))
            h = hist_all[:, cols]
            edges = np.linspace(bl.lo, bl.hi, self.bins + 1)
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
    from senet.data import normalize  # only needed when reading a dataset

    rng = range(0, len(x), batch_size)
    if progress:
        from tqdm.auto import tqdm

        rng = tqdm(rng, desc=progress, unit="batch", leave=False)
    for i in rng:
        xb = torch.as_tensor(x[i:i + batch_size]).to(device, non_blocking=True)
        yb = torch.as_tensor(y[i:i + batch_size]).to(device, non_blocking=True)
        yield normalize(xb, mean, std), yb


#: The precision the analysed network was trained and evaluated in (``fp32`` | ``bf16``); None:
#: bf16 on CUDA, fp32 elsewhere. Set around a whole analysis by :func:`run_precision`.
_PRECISION: contextvars.ContextVar[str | None] = contextvars.ContextVar("analysis_precision", default=None)


@contextlib.contextmanager
def run_precision(precision: str | None):
    """Evaluate in the precision the run used (its checkpoint's provenance): a network trained and
    tested in bf16 is analysed in bf16, so the analysis reports the errors the run reported."""
    if precision not in (None, "fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}")
    token = _PRECISION.set(precision)
    try:
        yield
    finally:
        _PRECISION.reset(token)


def autocast_as_trained(device: torch.device):
    """bf16 autocast when the run trained in bf16 (by default on CUDA), else none."""
    precision = _PRECISION.get() or ("bf16" if device.type == "cuda" else "fp32")
    if precision == "bf16":  # as training computes it (native kernels, or fp32 convolutions of bf16 values)
        return autocast(device, "bf16")
    return torch.autocast(device.type, enabled=False)


def attach(model: nn.Module, acc: ExcitationAccumulator, blocks: list[str],
           device: torch.device) -> tuple[list, dict]:
    """Hook the chosen blocks' gates; returns the handles and a mutable ``{"labels": tensor}`` the
    caller fills before each forward pass.

    Each gate hook only keeps a reference to its output; a hook on the whole model then folds the
    pass's excitations of all blocks in one :meth:`ExcitationAccumulator.update_all`.
    """
    mods = se_modules(model)
    ctx: dict = {"labels": None, "pending": {}}
    handles = []
    for name in blocks:
        m = mods[name]
        gate = getattr(m, "gate_name", "")
        info = GATES.info(gate) if gate in GATES else None
        lo, hi = info.range if info else DEFAULT_RANGE
        acc.add_block(name, m.channels, (max(lo, DEFAULT_RANGE[0]), min(hi, DEFAULT_RANGE[1])), device,
                      saturating=bool(info and info.saturating))

        def keep(mod, inputs, out, _name=name):
            ctx["pending"][_name] = out

        handles.append(m.gate.register_forward_hook(keep))

    def fold(mod, inputs, out):
        if ctx["pending"]:
            acc.update_all(ctx["pending"], ctx["labels"])
            ctx["pending"] = {}

    handles.append(model.register_forward_hook(fold))
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
        with autocast_as_trained(dev):
            for xb, yb in batches(x, y, mean, std, batch_size, dev, "excitations" if progress else None):
                ctx["labels"] = yb
                model(xb)
    finally:
        for h in handles:
            h.remove()
    return acc.tables(class_names)


@torch.no_grad()
def measure_errors(model: nn.Module, x, y, mean, std, *, batch_size: int = 256, device: str = "auto",
             progress: str | None = None, per_image: bool = False) -> dict:
    """Top-1 and top-5 error (%) of ``model`` on uint8 images ``x``; with ``per_image`` also
    ``correct``, a bool tensor of top-1 hits per image (to pair two evaluations on the same images)."""
    dev = pick_device(device)
    model = model.to(dev).eval()
    n = top1 = top5 = 0
    hits = []
    with autocast_as_trained(dev):
        for xb, yb in batches(x, y, mean, std, batch_size, dev, progress):
            logits = model(xb).float()
            k = min(5, logits.shape[1])
            pred = logits.topk(k, 1).indices
            hit = pred == yb.unsqueeze(1)
            top1 += int(hit[:, 0].sum())
            top5 += int(hit.any(1).sum())
            n += len(yb)
            if per_image:
                hits.append(hit[:, 0].cpu())
    out = {"top1_err": 100.0 * (1 - top1 / max(n, 1)), "top5_err": 100.0 * (1 - top5 / max(n, 1)), "n": n}
    if per_image:
        out["correct"] = torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)
    return out
