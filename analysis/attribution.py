"""Captum attribution for SE networks: is a channel that SE excites also a channel the class needs?

- :func:`channel_importance`: for each chosen SE block, ``LayerFeatureAblation`` on the block's gate
  with one mask group per channel. Closing a channel's gate (s_c = 0, baseline 0) removes that
  channel from the block's output Ũ = s · U; the drop of the target logit is the channel's
  importance at the SE output for that image's class. It is set against the channel's mean
  excitation on the class (paper Fig. 6) in :func:`analysis.figures.attribution_scatter`.
- :func:`gradcam`: ``LayerGradCam`` on the last block of the last stage, upsampled to the input with
  ``LayerAttribution.interpolate``, to compare where a plain and an SE model look.

BatchNorm stays in eval mode; every SE block has its own gate module, so each hook fires once.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from captum.attr import LayerAttribution, LayerFeatureAblation, LayerGradCam
from torch import nn
from tqdm.auto import tqdm

from senet import se_modules
from senet.models.blocks import SESlot


def channel_importance(model: nn.Module, blocks: list[str], x: torch.Tensor, y: torch.Tensor,
                       class_names: list[str], *, baseline: float = 0.0,
                       progress: bool = True) -> pd.DataFrame:
    """Mean per-channel importance (target logit with the gate open minus with channel c closed)
    over the images of each class present in ``y``; one row per (block, class, channel).

    ``x`` is a normalised float batch on the model's device; ``baseline=1.0`` measures instead
    what switching SE off for the channel (s_c = 1) does.
    """
    model.eval()
    mods = se_modules(model)
    work = blocks
    if progress:
        work = tqdm(blocks, desc="channel ablation", unit="block", leave=False)
    y_np = y.cpu().numpy()
    rows = []
    for block in work:
        gate = mods[block].gate
        # The mask needs the gate's output shape: probe with one image.
        shape = {}

        def probe(mod, inputs, out, _shape=shape):
            _shape["s"] = out.shape  # returns None: the output is left as it is

        h = gate.register_forward_hook(probe)
        with torch.no_grad():
            model(x[:1])
        h.remove()
        _, c, hh, ww = shape["s"]
        mask = torch.arange(c, device=x.device).view(1, c, 1, 1).expand(1, c, hh, ww)
        # One pass per channel over all images, each scored on its own class (per-sample targets
        # need perturbations_per_eval=1 in captum 0.9).
        attr = LayerFeatureAblation(model, gate).attribute(
            x, layer_baselines=baseline, target=y, layer_mask=mask, perturbations_per_eval=1)
        per_image = attr.detach().float().mean((2, 3)).cpu().numpy()  # (N, C)
        for cls in np.unique(y_np):
            sel = y_np == cls
            rows.append(pd.DataFrame({"block": block, "class": class_names[int(cls)],
                                      "class_index": int(cls), "channel": np.arange(c),
                                      "importance": per_image[sel].mean(0), "images": int(sel.sum())}))
    return pd.concat(rows, ignore_index=True)


def gradcam_layer(model: nn.Module) -> nn.Module:
    """The last block of the last stage, where Grad-CAM is usually read.

    Every backbone of the suite is built from blocks that know their paper position (``stage``,
    ``index``: residual blocks, Inception modules, depthwise-separable blocks), with or without SE,
    whatever the containers around them are called; the last of them produces the final feature
    map (before a pre-activation network's closing BN-ReLU).
    """
    blocks = [m for m in model.modules() if isinstance(m, SESlot)]
    if not blocks:
        raise ValueError(f"cannot find the blocks of {type(model).__name__} for Grad-CAM "
                         "(no module with a stage and index)")
    return max(blocks, key=lambda m: (m.stage, m.index))


def gradcam(model: nn.Module, x: torch.Tensor, target, layer: nn.Module | None = None) -> np.ndarray:
    """Grad-CAM maps (N, H, W) at the input's resolution for ``target`` (an int or one per image)."""
    model.eval()
    layer = layer or gradcam_layer(model)
    attr = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    up = LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return up.detach().float().sum(1).cpu().numpy()
