"""Readings and figures of ``senet analyze-seeds``' tables (pandas, numpy, matplotlib; no torch).

- :func:`per_seed_rho`, :func:`last_stage_removal`: one number per trained network.
- :func:`over_seeds`: their mean and anytime-valid confidence sequence over the seeds, in seed order
  (:func:`senet.sequential.running_cs`), so the interval stays valid as networks are added.
- :func:`figures`: selectivity by depth and the stage removals, each seed a line or a dot, the
  mean with its interval, each quantity on its own scale.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from senet.sequential import Design, running_cs

from .style import apply, colors, save


def per_seed_rho(sel: pd.DataFrame) -> pd.DataFrame:
    """Each seed's Spearman ρ between block depth and η² over its blocks with a defined η²."""
    rows = []
    for seed, g in sel.dropna(subset=["eta2"]).groupby("seed", sort=True):
        depth, eta2 = pd.Series(g["depth"].to_numpy(float)), pd.Series(g["eta2"].to_numpy(float))
        rho = float(depth.corr(eta2, method="spearman")) if len(g) >= 3 else math.nan
        rows.append({"seed": int(seed), "rho": rho, "blocks": len(g)})
    return pd.DataFrame(rows, columns=["seed", "rho", "blocks"])


def last_stage_removal(rem: pd.DataFrame, mode: str = "mean") -> pd.DataFrame:
    """Each seed's error change (points) when its last stage's SE blocks are removed in ``mode``."""
    rows = []
    for seed, g in rem.groupby("seed", sort=True):
        stages = g[g["removed"].astype(str).str.match(r"^stage \d+$")]
        if stages.empty:
            continue
        last = max(stages["removed"], key=lambda s: int(s.split()[1]))
        r = stages[stages["removed"] == last].iloc[0]
        rows.append({"seed": int(seed), "removed": last, "delta": float(r[f"delta_top1_{mode}"]), "n": int(r["n"]),
                     "added_params_pct": float(r.get("added_params_pct", math.nan)),
                     "added_params_pct_intact": float(g.loc[g["removed"] == "none", "added_params_pct"].iloc[0])
                     if "added_params_pct" in g and (g["removed"] == "none").any() else math.nan})
    return pd.DataFrame(rows, columns=["seed", "removed", "delta", "n", "added_params_pct", "added_params_pct_intact"])


def over_seeds(values, design: Design, k: int = 1) -> dict:
    """n, the mean and the anytime-valid CS at α/k over ``values`` (in seed order); ``low``/``high``
    are infinite until the design's first ``min_seeds`` are in (no reading before them)."""
    v = np.asarray([x for x in values if math.isfinite(x)], float)
    n = len(v)
    if n == 0:
        return {"n": 0, "mean": math.nan, "sd": math.nan, "low": -math.inf, "high": math.inf, "level": design.level(k)}
    lo, hi = running_cs(v, design.level(k), design.g)
    low, high = (float(lo[-1]), float(hi[-1])) if n >= design.min_seeds else (-math.inf, math.inf)
    return {"n": n, "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if n >= 2 else math.nan,
            "low": low, "high": high, "level": design.level(k)}


def _interval(ax, x: float, r: dict, color) -> None:
    """The mean as a bar end and its CS as a whisker (an arrow where it is still unbounded)."""
    if not math.isfinite(r["mean"]):
        return
    ax.plot([x - 0.25, x + 0.25], [r["mean"]] * 2, color=color, lw=2)
    if math.isfinite(r["low"]) and math.isfinite(r["high"]):
        ax.plot([x, x], [r["low"], r["high"]], color=color, lw=1.2)


def figures(sel: pd.DataFrame, rem: pd.DataFrame, folder: str | Path, *, arm: str, design: Design) -> list[Path]:
    """``selectivity_by_seed`` and ``removal_by_seed`` (PNG and PDF) in ``folder``."""
    folder = Path(folder)
    paths = save(selectivity_figure(sel, arm=arm, design=design), folder / "selectivity_by_seed")
    return paths + save(removal_figure(rem, arm=arm, design=design), folder / "removal_by_seed")


def selectivity_figure(sel: pd.DataFrame, *, arm: str, design: Design):
    """Left: η² against block depth, a line per seed; right: each seed's ρ(depth, η²) with the mean
    and its anytime interval over the seeds."""
    apply()
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 2.8), gridspec_kw={"width_ratios": [2, 1]})
    blocks = sel.drop_duplicates("block").sort_values("depth")
    for _, g in sel.groupby("seed", sort=True):
        g = g.sort_values("depth")
        a.plot(g["depth"], g["eta2"], color="0.6", lw=0.8, alpha=0.7)
    mean = sel.groupby("depth", sort=True)["eta2"].mean()
    a.plot(mean.index, mean.to_numpy(), color=colors(1)[0], marker="o", lw=2, label="mean over seeds")
    a.set_xticks(blocks["depth"], blocks["block"], rotation=45, ha="right")
    a.set_ylabel("class selectivity η²")
    a.set_title(f"η² by depth ({sel['seed'].nunique()} {arm} networks)")
    a.legend(loc="best")
    rho = per_seed_rho(sel)
    r = over_seeds(rho["rho"], design)
    b.scatter(np.zeros(len(rho)) + np.linspace(-0.15, 0.15, len(rho)), rho["rho"], color="0.5", s=12, zorder=3)
    _interval(b, 0.0, r, colors(1)[0])
    b.axhline(0, color="black", lw=0.6)
    b.set_xlim(-0.6, 0.6)
    b.set_ylim(-1.05, 1.05)
    b.set_xticks([0], [f"n = {r['n']}"])
    b.set_ylabel("Spearman ρ(depth, η²)")
    b.set_title(f"ρ per seed, {100 * (1 - r['level']):.4g}% CS")
    fig.tight_layout()
    return fig


def removal_figure(rem: pd.DataFrame, *, arm: str, design: Design):
    """The error change when each stage's SE blocks are removed, per seed: the gates fixed at their
    mean (left, with δ marked) and replaced by the identity (right), each on its own scale, with the
    mean and its anytime interval over the seeds."""
    apply()
    modes = [m for m in ("mean", "identity") if f"delta_top1_{m}" in rem]
    fig, axes = plt.subplots(1, len(modes), figsize=(4 * len(modes), 2.8), squeeze=False)
    stages = sorted({s for s in rem["removed"].astype(str) if s.startswith("stage ")}, key=lambda s: int(s.split()[1]))
    names = {"mean": "gate fixed at its mean", "identity": "SE replaced by the identity"}
    for ax, mode in zip(axes[0], modes, strict=True):
        c = colors(1)[0]
        for i, stage in enumerate(stages):
            d = rem[rem["removed"] == stage].sort_values("seed")[f"delta_top1_{mode}"].to_numpy(float)
            ax.scatter(np.full(len(d), i) + np.linspace(-0.15, 0.15, len(d)), d, color="0.5", s=12, zorder=3)
            _interval(ax, i, over_seeds(d, design), c)
        ax.axhline(0, color="black", lw=0.6)
        if mode == "mean":
            ax.axhline(design.delta, color="black", ls="--", lw=0.8, label=f"δ = {design.delta:g} pp")
            ax.legend(loc="best")
        ax.set_xticks(range(len(stages)), [f"{s} removed" for s in stages])
        ax.set_ylabel("Δ top-1 error (pp)")
        ax.set_title(names[mode])
    fig.suptitle(f"SE removal per seed ({rem['seed'].nunique()} {arm} networks; mean and "
                 f"{100 * (1 - design.level(1)):.4g}% anytime CS)", fontsize=10)
    fig.tight_layout()
    return fig
