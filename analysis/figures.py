"""Figures of the analysis, each a function from tidy tables to a matplotlib Figure.

- :func:`excitation_means`: the paper's Figure 6, mean excitation per channel for chosen classes and
  the all-class mean, one panel per block.
- :func:`excitation_bands`: Figure 7, mean ± standard deviation over the images of each class.
- :func:`selectivity_depth`: class selectivity (η²) and saturation per block against depth.
- :func:`removal_bars`: the error change when SE blocks are removed (§7.2), per removal mode.
- :func:`attribution_scatter`: captum channel importance against mean excitation, with Spearman ρ.
- :func:`gradcam_grid`: Grad-CAM maps of one or more models on the same images.
- :func:`point_plot`, :func:`error_edf`: ablation results per arm (mean ± t-interval over seeds;
  pycls-style EDFs).

Only pandas, numpy, matplotlib and seaborn are imported. Save with :func:`analysis.style.save`.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from .errors import AnalysisInputError
from .stats import block_order, pooled, spearman, t_quantile
from .style import ALL_COLOR, apply, colors, label


def _grid(n: int, ncols: int = 3, w: float = 3.0, h: float = 2.3, sharey: bool = True):
    apply()
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False,
                             sharey=sharey)
    axes = axes.ravel()
    for ax in axes[n:]:  # unused cells of the grid would otherwise count as panels
        fig.delaxes(ax)
    return fig, list(axes[:n])


def _blocks(frame: pd.DataFrame, blocks: list[str] | None) -> list[str]:
    order = block_order(frame)
    if blocks is None:
        return order
    missing = [b for b in blocks if b not in order]
    if missing:
        raise AnalysisInputError(f"blocks {missing} not in the table; choose from: {', '.join(order)}")
    return [b for b in order if b in blocks]


def _check_classes(stats: pd.DataFrame, classes: list[str]) -> None:
    have = list(dict.fromkeys(stats["class"]))
    bad = [c for c in classes if c not in have]
    if bad:
        raise AnalysisInputError(f"unknown class {bad[0]!r}; choose from: {', '.join(have)}")


def _class_panels(stats: pd.DataFrame, classes: list[str], blocks: list[str] | None, ylabel: str, title: str,
                  *, bands: bool = False, all_classes: bool = False):
    """One panel per block against channel index: each class's mean excitation, its ± one standard
    deviation band (``bands``) and the mean over all classes (``all_classes``, black)."""
    _check_classes(stats, classes)
    blocks = _blocks(stats, blocks)
    allc = pooled(stats) if all_classes else None
    fig, axes = _grid(len(blocks))
    cols = colors(len(classes))
    for ax, block in zip(axes, blocks, strict=False):
        for cls, col in zip(classes, cols, strict=False):
            d = stats[(stats["block"] == block) & (stats["class"] == cls)].sort_values("channel")
            ax.plot(d["channel"], d["mean"], color=col, label=cls)
            if bands:
                ax.fill_between(d["channel"], d["mean"] - d["std"], d["mean"] + d["std"], color=col,
                                alpha=0.25, lw=0)
        if allc is not None:
            d = allc[allc["block"] == block].sort_values("channel")
            ax.plot(d["channel"], d["mean"], color=ALL_COLOR, ls="--", label=label("all_classes"))
        ax.set_title(block)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(label("channel"))
        ax.set_ylabel(label(ylabel))
    axes[0].legend(loc="best", frameon=True)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def excitation_means(stats: pd.DataFrame, classes: list[str], blocks: list[str] | None = None,
                     title: str = "Mean excitation per channel (cf. paper Fig. 6)"):
    """One panel per block: mean excitation against channel index for each class, and the mean
    over all classes (black)."""
    return _class_panels(stats, classes, blocks, "mean_excitation", title, all_classes=True)


def excitation_bands(stats: pd.DataFrame, classes: list[str], blocks: list[str] | None = None,
                     title: str = "Excitation mean ± std over the images of a class (cf. paper Fig. 7)"):
    """One panel per block: mean ± one standard deviation of each class's excitations."""
    return _class_panels(stats, classes, blocks, "excitation", title, bands=True)


def selectivity_depth(sel: pd.DataFrame, title: str = "Class selectivity and saturation by depth"):
    """Two panels against block depth: η² and the share of saturated channels (> 0.9, < 0.1)."""
    apply()
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 2.8))
    x = np.arange(len(sel))
    a.plot(x, sel["eta2"], marker="o", color=colors(1)[0])
    a.set_ylim(0, max(1e-3, float(np.nanmax(sel["eta2"])) * 1.15))
    a.set_title("class selectivity η²")
    a.set_ylabel(label("eta2"))
    c = colors(2)
    b.bar(x, sel["saturated_high"].fillna(0), color=c[0], label="> 0.9")
    b.bar(x, sel["saturated_low"].fillna(0), bottom=sel["saturated_high"].fillna(0), color=c[1],
          label="< 0.1")
    b.set_ylim(0, 1)
    b.set_title("saturation")
    b.set_ylabel(label("saturated"))
    b.legend(loc="best")
    for ax in (a, b):
        ax.set_xticks(x, sel["block"], rotation=45, ha="right")
        ax.set_xlabel(label("depth"))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def removal_bars(removal: pd.DataFrame, title: str = "SE removal"):
    """Δ top-1 error of each removal (vs the full model), one bar per removal mode (``delta_top1_<mode>``
    columns; a single ``delta_top1`` column also works), and the SE parameters it saves."""
    apply()
    d = removal[removal["removed"] != "none"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 2.8))
    x = np.arange(len(d))
    modes = [c[len("delta_top1_"):] for c in d.columns if c.startswith("delta_top1_")] or [""]
    width = 0.8 / len(modes)
    names = {"mean": "gate fixed at its mean", "identity": "replaced by the identity"}
    for i, (m, c) in enumerate(zip(modes, colors(len(modes)), strict=True)):
        a.bar(x + (i - (len(modes) - 1) / 2) * width, d[f"delta_top1_{m}" if m else "delta_top1"],
              width, color=c, label=names.get(m, m) or None)
    if modes != [""]:
        a.legend(loc="best")
    a.axhline(0, color="black", lw=0.6)
    a.set_title("error change")
    a.set_ylabel(label("delta_top1"))
    b.bar(x, d["added_params_pct"], color="0.6")  # grey: not one of the removal modes
    full = removal.loc[removal["removed"] == "none", "added_params_pct"]
    if len(full):
        b.axhline(float(full.iloc[0]), color="black", ls="--", lw=0.8, label="all SE kept")
        b.legend(loc="best")
    b.set_title("SE parameters kept")
    b.set_ylabel("added parameters (% of the plain network)")
    for ax in (a, b):
        ax.set_xticks(x, d["removed"], rotation=45, ha="right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def attribution_scatter(attr: pd.DataFrame, title: str = "Channel importance vs mean excitation"):
    """One panel per block: captum importance of each channel (at the SE output, for the image's
    class) against its mean excitation on that class; the title gives Spearman's ρ."""
    blocks = _blocks(attr, None)
    fig, axes = _grid(len(blocks), sharey=False)
    classes = list(dict.fromkeys(attr["class"]))
    cols = dict(zip(classes, colors(len(classes)), strict=False))
    for ax, block in zip(axes, blocks, strict=False):
        d = attr[attr["block"] == block]
        for cls in classes:
            e = d[d["class"] == cls]
            ax.scatter(e["mean_excitation"], e["importance"], s=7, alpha=0.7, color=cols[cls], label=cls)
        rho = spearman(d["mean_excitation"], d["importance"])
        ax.set_title(f"{block}  ρ = {rho:.2f}")
        ax.set_xlabel(label("mean_excitation"))
        if ax.get_subplotspec().is_first_col():  # the long label would run into the panel beside
            ax.set_ylabel(label("importance"))
    axes[0].legend(loc="best", frameon=True)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def gradcam_grid(images: np.ndarray, maps: dict[str, np.ndarray], captions: list[str] | None = None,
                 title: str = "Grad-CAM"):
    """Rows: images; columns: the input, then one Grad-CAM overlay per model in ``maps``.

    ``images`` is (N, H, W) or (N, H, W, 3) in [0, 1]; each map is (N, H, W).
    """
    apply()
    n, m = len(images), len(maps)
    fig, axes = plt.subplots(n, m + 1, figsize=(1.6 * (m + 1), 1.6 * n), squeeze=False)
    gray = images.ndim == 3
    for i in range(n):
        ax = axes[i, 0]
        ax.imshow(images[i], cmap="gray" if gray else None, vmin=0, vmax=1)
        ax.set_title(captions[i] if captions else label("gradcam_input"), fontsize=7)
        for j, (name, mp) in enumerate(maps.items(), start=1):
            ax = axes[i, j]
            ax.imshow(images[i], cmap="gray" if gray else None, vmin=0, vmax=1)
            g = mp[i]
            g = (g - g.min()) / (np.ptp(g) + 1e-12)
            ax.imshow(g, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.set_title(name, fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def seed_interval(values, level: float = 0.95) -> tuple[float, float, int]:
    """Mean and half-width of the Student-t interval of the mean over seeds, and n (half-width NaN
    below 2 seeds: one run has no spread to build an interval from)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n < 2:
        return (float(v.mean()) if n else math.nan), math.nan, n
    half = t_quantile(1 - (1 - level) / 2, n - 1) * float(v.std(ddof=1)) / math.sqrt(n)
    return float(v.mean()), half, n


def point_plot(runs: pd.DataFrame, arms: list[str], metrics=("test_top1_err", "test_top5_err"),
               title: str = "", level: float = 0.95):
    """One panel per metric: each arm's mean over seeds with its Student-t ``level`` interval
    (mean ± t(n − 1) · sd / √n; none for a single seed), n under each arm, and the single runs as dots.

    The interval is computed here rather than by seaborn, whose default bootstrap over a handful of
    seeds gives intervals far too narrow to be called 95%."""
    apply()
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 2.8), squeeze=False)
    axes = axes.ravel()
    pct = f"{level:.0%}"
    for ax, metric in zip(axes, metrics, strict=False):
        d = runs.dropna(subset=[metric])
        state = np.random.get_state()  # seaborn jitters with numpy's global generator: fix it, so
        np.random.seed(0)  # the same table draws the same figure, and leave the caller's state as it was
        sns.stripplot(data=d, x="arm", y=metric, order=arms, ax=ax, color="0.6", size=3, jitter=0.1,
                      label="single runs", legend=False)
        np.random.set_state(state)
        stats = [seed_interval(d.loc[d["arm"] == arm, metric], level) for arm in arms]
        x = np.arange(len(arms))
        mean = np.array([s[0] for s in stats])
        half = np.array([s[1] for s in stats])
        ax.errorbar(x, mean, yerr=np.where(np.isfinite(half), half, 0.0), fmt="none", capsize=3,
                    color=colors(1)[0], lw=1.0)
        ax.plot(x, mean, ls="none", marker="D", color=colors(1)[0],
                label=f"mean ± {pct} t-CI over seeds (none for n = 1)")
        ax.set_xticks(x, [f"{arm}\nn={s[2]}" for arm, s in zip(arms, stats, strict=True)])
        ax.set_title(label(metric))
        ax.set_ylabel(label(metric))
        ax.set_xlabel(label("arm"))
        ax.tick_params(axis="x", rotation=30)
    handles, names = axes[0].get_legend_handles_labels()
    entries = dict(zip(names, handles, strict=True))  # the strip plot labels one collection per arm
    fig.legend(list(entries.values()), list(entries), loc="lower center", bbox_to_anchor=(0.5, -0.02),
               ncol=len(entries), frameon=False, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def error_edf(runs: pd.DataFrame, arms: list[str], metric: str = "test_top1_err", title: str = ""):
    """Empirical distribution function of the error per arm (as pycls draws them): for each error e,
    the share of the arm's runs with error ≤ e. The legend gives each arm's number of runs and the
    lowest and mean error over them, named as such."""
    apply()
    fig, ax = plt.subplots(figsize=(6.0, 3.0))
    for arm, col in zip(arms, colors(len(arms)), strict=False):
        e = np.sort(runs.loc[runs["arm"] == arm, metric].dropna().to_numpy())
        if not len(e):
            continue
        y = np.arange(1, len(e) + 1) / len(e)
        ax.step(np.r_[e[0], e], np.r_[0, y], where="post", color=col,
                label=f"{arm} ({len(e)} run{'s' if len(e) != 1 else ''}: min {e.min():.2f}, mean {e.mean():.2f})")
    ax.set_xlabel(label(metric))
    ax.set_ylabel(label("edf"))
    ax.set_ylim(0, 1.02)
    ax.set_title(title or f"EDF of {label(metric)}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)  # beside the steps, never over them
    fig.tight_layout()
    return fig
