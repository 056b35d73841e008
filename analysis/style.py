"""The one style and the one table of labels shared by every figure of the suite.

Rendering imports only matplotlib, seaborn, pandas and numpy (never torch), so figures can be
remade from the tables on any machine.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed on cluster nodes

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

#: Axis labels and titles: one place, so every figure says the same thing the same way.
LABELS: dict[str, str] = {
    "channel": "channel index",
    "excitation": "excitation $s_c$",
    "mean_excitation": "mean excitation $\\bar{s}_c$",
    "block": "SE block",
    "depth": "block (input → output)",
    "eta2": "class selectivity η² (between-class / total variance)",
    "saturated": "share of channels with $\\bar{s}_c$ > 0.9 or < 0.1",
    "importance": "importance (Δ target logit\nwhen the channel is closed)",
    "test_top1_err": "top-1 error (%)",
    "test_top5_err": "top-5 error (%)",
    "best_val_top1_err": "best validation top-1 error (%)",
    "test_top1_err_at_best_val": "top-1 error at best validation (%)",
    "arm": "arm",
    "edf": "cumulative share of runs",
    "all_classes": "all classes",
    "gradcam_input": "input",
    "delta_top1": "Δ top-1 error (pp)",
    "train_loss": "training loss",
    "test_loss": "test loss",
    "val_loss": "validation loss",
    "train_top1_err": "training top-1 error (%)",
    "val_top1_err": "validation top-1 error (%)",
    "val_top5_err": "validation top-5 error (%)",
    "lr": "learning rate",
    "images_per_s": "training images/s",
}

#: Colours: classes / arms in a qualitative palette, the all-class mean in black.
PALETTE = "colorblind"
ALL_COLOR = "black"
FORMATS = ("png", "pdf")


def label(key: str) -> str:
    """The shared label for ``key`` (the key itself when none is defined)."""
    return LABELS.get(key, key)


def apply() -> None:
    """Set the suite's theme (idempotent)."""
    sns.set_theme(context="paper", style="whitegrid", palette=PALETTE, font_scale=1.0,
                  rc={"figure.dpi": 120, "savefig.dpi": 200, "savefig.bbox": "tight",
                      "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7,
                      "xtick.labelsize": 7, "ytick.labelsize": 7, "lines.linewidth": 0.9})


def colors(n: int) -> list:
    return sns.color_palette(PALETTE, n)


def save(fig, stem: str | Path, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf``; returns the paths and closes the figure."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt in formats:
        p = stem.with_suffix(f".{fmt}")
        # legends placed beside the axes stay in the file; no creation date, so a figure drawn
        # again from the same table is the same file
        fig.savefig(p, bbox_inches="tight", metadata={"CreationDate": None} if fmt == "pdf" else None)
        out.append(p)
    plt.close(fig)
    return out
