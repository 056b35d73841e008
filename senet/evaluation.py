"""Top-1 and top-5 errors of a network on a split of uint8 images, under ``torch.inference_mode``.

Evaluation runs in the run's precision, in batches of :data:`senet.runtime.EVAL_BATCH` for the
device type (on a CPU, large batches push the activations out of the caches: 1024 ran at half the
speed of 128).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .data import normalize
from .runtime import autocast, eval_batch

#: What an empty split (no validation images) or a split not evaluated this epoch reports.
NOT_EVALUATED = {"top1_err": math.nan, "top5_err": math.nan, "loss": math.nan}


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mean, std, *, precision: str = "fp32",
             channels_last: bool = False, batch_size: int | None = None) -> dict[str, float]:
    """Top-1 / top-5 error (%) and mean cross-entropy on uint8 images, under inference_mode.

    ``batch_size`` defaults to the device's :data:`senet.runtime.EVAL_BATCH`. Returns NaN for an
    empty split. The model is put in eval mode and restored afterwards.
    """
    if len(x) == 0:
        return dict(NOT_EVALUATED)
    was_training = model.training
    model.eval()
    device = x.device
    batch_size = batch_size or eval_batch(device)
    wrong1 = torch.zeros((), dtype=torch.int64, device=device)
    wrong5 = torch.zeros((), dtype=torch.int64, device=device)
    loss = torch.zeros((), dtype=torch.float64, device=device)
    try:
        for i in range(0, len(x), batch_size):
            xb = normalize(x[i:i + batch_size], mean, std)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yb = y[i:i + batch_size]
            with autocast(device, precision):
                out = model(xb)
            out = out.float()
            loss += F.cross_entropy(out, yb, reduction="sum").double()
            top = out.topk(min(5, out.shape[1]), dim=1).indices
            hit = top == yb.view(-1, 1)
            wrong1 += (~hit[:, 0]).sum()
            wrong5 += (~hit.any(1)).sum()
    finally:
        model.train(was_training)
    n = len(x)
    return {"top1_err": 100.0 * wrong1.item() / n, "top5_err": 100.0 * wrong5.item() / n,
            "loss": loss.item() / n}
