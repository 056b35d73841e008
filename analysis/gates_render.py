"""The torch-free half of ``senet gates``: what counts as near each gate's bounds, the per-stage
summary of the excitations, the figure (``gates.png``) and ``gates.md``.

The gates live on different scales (sigmoid (0, 1), tanh (−1, 1), ReLU [0, ∞), softmax ≈ 1/C,
softmax_c with mean 1), so each row of the figure has its own x-axis: the gate's range where it is
bounded, else the data's 0.5-99.5 percentiles. The zones counted as "near a bound" are shaded and the
mean is marked. pandas, numpy and matplotlib only: the bounds are tests that work on tensors and arrays.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.scale import SymmetricalLogTransform
from matplotlib.ticker import MaxNLocator

from .stats import pooled
from .style import apply, colors
from .tables import markdown

if TYPE_CHECKING:
    import torch


# ---------------------------------------------------------------------------------------------
# Where each gate's bounds are, and what counts as near them
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bounds:
    """``low`` / ``high``: which values count as at or near the gate's lower / upper bound (None: no
    such bound); ``text`` says so in the table; ``xlim`` fixes the figure's x-axis where the gate is
    bounded (None ends come from the data)."""

    low: Callable[[torch.Tensor], torch.Tensor] | None
    high: Callable[[torch.Tensor], torch.Tensor] | None
    text: str
    xlim: tuple[float | None, float | None]
    low_zone: tuple[float, float] | None = None  # shaded in the figure
    high_zone: tuple[float, float] | None = None


def _number(v: float) -> str:
    return f"{v:g}".replace("-", "−")


def bounds_for(value_range: tuple[float, float], sums_to: str | None = None) -> Bounds:
    """The bounds of a gate from its registered output range: a gate bounded on both sides counts
    the outer 10% of its width at each end as near a bound (sigmoid-like gates: s < 0.1 | s > 0.9,
    the thresholds of :mod:`analysis.stats`; tanh: s < −0.8 | s > 0.8); a gate bounded on one side
    only reaches that bound exactly (ReLU's 0: the channel switched off). A normalised gate's weights
    sum to 1 (softmax) or C, so none approaches its upper bound unless the others vanish and all sit
    near 0 by construction: near-bound shares say nothing there. An unbounded gate has none."""
    lo, hi = (float(v) for v in value_range)
    lo_end = lo if math.isfinite(lo) else None
    if sums_to is not None:
        return Bounds(None, None, f"n/a (weights sum to {sums_to})", (lo_end, None))
    if math.isfinite(lo) and math.isfinite(hi):
        near_lo, near_hi = round(lo + 0.1 * (hi - lo), 12), round(hi - 0.1 * (hi - lo), 12)
        return Bounds(lambda s: s < near_lo, lambda s: s > near_hi, f"s < {_number(near_lo)} | s > {_number(near_hi)}",
                      (lo, hi), (lo, near_lo), (near_hi, hi))
    if math.isfinite(lo):
        return Bounds(lambda s: s <= lo, None, f"s = {_number(lo)} (no upper bound)", (lo, None))
    if math.isfinite(hi):
        return Bounds(None, lambda s: s >= hi, f"s = {_number(hi)} (no lower bound)", (None, hi))
    return Bounds(None, None, "n/a (unbounded)", (None, None))


NO_BOUNDS = Bounds(None, None, "n/a (unknown gate)", (None, None))


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------
def stage_summary(stats: pd.DataFrame, counts: dict, bounds: Bounds) -> pd.DataFrame:
    """Per stage: mean and std of s over all values (the law of total variance over channels), the
    spread of the channel means, near-bound shares and η² averaged over the channels that vary."""
    p = pooled(stats)
    rows = []
    for stage, g in p.groupby("stage", sort=True):
        w = g["count"].to_numpy(float)
        m = float((w * g["mean"]).sum() / w.sum())
        var = float((w * (g["var"] + (g["mean"] - m) ** 2)).sum() / w.sum())
        ok = g["var"] > 1e-12
        lo, hi, total = counts[int(stage)]
        share = lambda k, f: float(k / total) if f is not None and total else math.nan  # noqa: E731
        rows.append({"stage": int(stage), "blocks": g["block"].nunique(), "channels": len(g),
                     "images": int(g["count"].max()), "mean": m, "std": math.sqrt(max(var, 0.0)),
                     "channel_spread": float(g["mean"].std(ddof=0)),
                     "near_low": share(lo, bounds.low), "near_high": share(hi, bounds.high),
                     "near_bounds": (share(lo, bounds.low) if bounds.high is None else
                                     share(hi, bounds.high) if bounds.low is None else share(lo + hi, bounds.low)),
                     "bounds": bounds.text,
                     "eta2": float((g.loc[ok, "between_var"] / g.loc[ok, "var"]).mean()) if ok.any() else math.nan,
                     "eta2_channels": int(ok.sum()), "constant_channels": float(1 - ok.mean())})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# The figure
# ---------------------------------------------------------------------------------------------
def _xlim(values: list[np.ndarray], bounds: Bounds) -> tuple[float, float, str]:
    """The row's x-range: the gate's bounds, else the data's 0.5 / 99.5 percentiles, and a note
    saying which ends the data set (values beyond them are not drawn)."""
    allv = np.concatenate([v for v in values if len(v)]) if any(len(v) for v in values) else np.zeros(1)
    lo, hi = bounds.xlim
    cut = []
    if lo is None:
        lo = float(np.quantile(allv, 0.005))
        cut.append("0.5")
    if hi is None:
        hi = float(np.quantile(allv, 0.995))
        cut.append("99.5")
    if not hi > lo:
        hi = lo + max(abs(lo) * 0.1, 1e-3)
    return lo, hi, ({1: "x to the {}th pct", 2: "x: {}th–{}th pct"}[len(cut)].format(*cut)) if cut else ""


def _heavy_tail(values: list[np.ndarray], bounds: Bounds, hi: float) -> float:
    """For a gate without an upper bound whose values reach far beyond their bulk (the 99.5th
    percentile over 20 times the median, as a ReLU or C·softmax gate that let a few channels grow
    can), the threshold of a symlog x-axis (linear below it, logarithmic beyond); 0: a linear axis."""
    if bounds.xlim[1] is not None or not any(len(v) for v in values):
        return 0.0
    a = np.abs(np.concatenate([v for v in values if len(v)]))
    qs = [float(np.quantile(a, q)) for q in (0.5, 0.75, 0.9)]
    t = next((q for q in qs if q > 0), 0.0)
    if not (t > 0 and hi > 20 * t):
        return 0.0
    return max(t, hi / 1000)  # at most three decades of log: a constant channel at ~0 is not a scale


def gates_figure(samples: dict[str, dict[int, np.ndarray]], table: pd.DataFrame, gates: dict[str, str],
                 bounds: dict[str, Bounds]):
    """Rows: gates; columns: stages; each panel a density histogram of s with the mean (dashed), the
    near-bound zones (shaded) and, where one bar towers over the rest, its share written on it."""
    apply()
    labels = list(samples)
    stages = sorted({s for v in samples.values() for s in v})
    pal = colors(max(len(labels), 1))
    fig, axes = plt.subplots(len(labels), len(stages), figsize=(2.3 * len(stages) + 0.6, 1.3 * len(labels) + 0.7),
                             squeeze=False, sharex="row")
    for i, label in enumerate(labels):
        b = bounds.get(label, NO_BOUNDS)
        lo, hi, cut = _xlim(list(samples[label].values()), b)
        linthresh = _heavy_tail(list(samples[label].values()), b, hi)
        edges = np.linspace(lo, hi, 61)
        if linthresh:  # bins evenly spaced on the symlog axis, so the tail's bars stay visible
            tr = SymmetricalLogTransform(10, linthresh, 1.0)
            edges = tr.inverted().transform(np.linspace(*tr.transform(np.array([lo, hi])), 61))
            cut = ", ".join(x for x in (f"log x beyond {linthresh:.2g}", cut) if x)
        for j, stage in enumerate(stages):
            ax = axes[i, j]
            v = samples[label].get(stage, np.zeros(0))
            row = table[(table["label"] == label) & (table["stage"] == stage)]
            for zone in (b.low_zone, b.high_zone):
                if zone:
                    ax.axvspan(*zone, color="0.85", lw=0, zorder=0)
            if len(v):
                h, _ = np.histogram(v[(v >= lo) & (v <= hi)], bins=edges)
                share = h / len(v)
                ax.stairs(share, edges, fill=True, color=pal[i], alpha=0.85, zorder=2)
                top = np.sort(share)[::-1]
                spike = len(top) > 1 and top[1] > 0 and top[0] > 4 * top[1]  # keep the rest readable
                visible = top[1] if spike else top[0]
                ax.set_ylim(0, max(visible, 1e-9) * 1.6)  # headroom for the numbers in the corner
                if spike:
                    k = int(np.argmax(share))
                    left = k < len(share) // 2
                    ax.annotate(f"{top[0]:.0%} in this bin", ((edges[k] + edges[k + 1]) / 2, visible * 1.05),
                                xytext=(4 if left else -4, 0), textcoords="offset points", fontsize=5.5,
                                ha="left" if left else "right", va="bottom", color="0.2",
                                bbox={"facecolor": "white", "alpha": 0.75, "lw": 0, "pad": 0.5})
            if stage not in samples[label]:  # a module in some stages only (GC's stages 3+)
                ax.text(0.5, 0.5, "no module in this stage", transform=ax.transAxes, ha="center", va="center",
                        fontsize=6, color="0.4")
            if len(row):
                r = row.iloc[0]
                ax.axvline(r["mean"], color="black", lw=0.8, ls="--", zorder=3)
                eta = f"η² {r['eta2']:.2f}" if math.isfinite(r["eta2"]) else "η² undefined"
                text = f"mean {r['mean']:.2f}, sd {r['std']:.2f}\n{eta}"
                if r["constant_channels"] > 0:
                    text += f", {r['constant_channels']:.0%} constant"
                if math.isfinite(r["near_bounds"]):
                    text += f", near bounds {r['near_bounds']:.0%}"
                ax.text(0.98, 0.95, text, transform=ax.transAxes, ha="right", va="top", fontsize=5.5,
                        bbox={"facecolor": "white", "alpha": 0.75, "lw": 0, "pad": 1})
            if linthresh:
                ax.set_xscale("symlog", linthresh=linthresh, linscale=1.0)
            else:
                ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.set_xlim(lo, hi)
            ax.set_yticks([])
            ax.tick_params(axis="x", labelsize=6, pad=1)
            if i == 0:
                ax.set_title(f"stage {stage} (conv{stage}_x)")
            if j == 0:
                ax.set_ylabel(label if label == gates[label] else f"{label}\n({gates[label]})", fontsize=7)
            if cut:
                ax.set_xlabel(f"$s$ ({cut})", fontsize=6, labelpad=1)
            elif i == len(labels) - 1:
                ax.set_xlabel("excitation $s$")
    fig.suptitle("Excitations per stage and gate (share of values per bin; dashed: mean; "
                 "shaded: near the gate's bounds)", fontsize=8)
    fig.tight_layout(h_pad=0.6, w_pad=0.4)
    return fig


# ---------------------------------------------------------------------------------------------
# gates.md
# ---------------------------------------------------------------------------------------------
def pct(v) -> str:
    return "n/a" if not math.isfinite(v) else f"{100 * v:.1f}%"


def gates_markdown(table: pd.DataFrame, used: list[dict], split: str, notes: list[str]) -> str:
    """``gates.md``: the runs compared (``used``), the figure, and the per-stage table."""
    num = lambda v, nd=3: "–" if v is None or not math.isfinite(float(v)) else f"{float(v):.{nd}f}"  # noqa: E731
    run_rows = [[u["label"], u["gate"], str(u.get("seed", "–")), num(u.get("best_val_top1_err"), 2),
                 num(u.get("test_top1_err"), 2), f"`{Path(u['checkpoint']).parent.name}/{Path(u['checkpoint']).name}`"]
                for u in used]
    rows = [[r.label, str(r.stage), f"{r.blocks} / {r.channels}", num(r.mean), num(r.std), num(r.channel_spread),
             pct(r.near_low), pct(r.near_high), r.bounds, num(r.eta2), pct(r.constant_channels)]
            for r in table.itertuples(index=False)]
    n = used[0]["images"]
    return "\n".join([
        "# Gates compared by what they learn", "",
        f"The best run of each gate by validation error, its excitations s over {n:,} `{split}` images "
        f"(every SE block, grouped by stage; NoSqueeze gates averaged over positions). The figure draws the "
        f"values of {used[0]['figure_images']:,} of these images (a fixed random sample); the table is over all.", "",
        markdown(["arm", "gate", "seed", "best val top-1 err", "test top-1 err", "checkpoint"], run_rows),
        *([f"Not analysed: {'; '.join(notes)}.", ""] if notes else []),
        "![gates](gates.png)", "",
        "mean, std: of s over images and channels of the stage; channel spread: standard deviation of the "
        "channels' mean s; near low / near high: share of values in the zone the `bounds` column names "
        "(n/a where the gate has no such bound); η²: class selectivity (between-class / total variance of s), "
        "averaged over the channels that vary, as `senet analyze` computes it (undefined when none does); "
        "constant channels: share of channels whose s does not depend on the image at all (the SE does no "
        "dynamic recalibration there, e.g. behind a dead ReLU). Per block: `gates_blocks.csv`.", "",
        markdown(["arm", "stage", "blocks / channels", "mean", "std", "channel spread", "near low", "near high",
                  "bounds", "η²", "constant channels"], rows),
    ])
