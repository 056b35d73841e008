"""Numbers from the excitation tables: all-class moments, class selectivity, saturation.

These turn the paper's §7.2 observations into one number per block: "early layers excite in a
class-agnostic manner, later ones become class-specific, and SE_5_2 is saturated (close to the
identity)". Inputs are the tidy tables of :mod:`analysis.extract`; only pandas and numpy are used,
so figures and reports can be made without torch.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

#: A channel whose all-class mean excitation is above HIGH or below LOW counts as saturated
#: (sigmoid-range gates only, whose s lies in (0, 1)).
HIGH, LOW = 0.9, 0.1
ALL_CLASSES = "all classes"


def block_order(frame: pd.DataFrame) -> list[str]:
    """Block names (``SE_<stage>_<block>``) in depth order: stage, then block index."""
    def key(name: str):
        parts = name.split("_")
        return tuple(int(p) for p in parts[1:]) if len(parts) == 3 and all(p.isdigit() for p in parts[1:]) \
            else (10**9,)

    return sorted(dict.fromkeys(frame["block"]), key=key)


def pooled(stats: pd.DataFrame) -> pd.DataFrame:
    """Merge the per-class moments into all-class ones, per (block, channel).

    With n_k, μ_k, σ_k per class: μ = Σ n_k μ_k / N and σ² = Σ n_k (σ_k² + (μ_k − μ)²) / N (the law of
    total variance), which also gives the between-class part Σ n_k (μ_k − μ)² / N.
    """
    s = stats[stats["count"] > 0]
    g = s.assign(w=s["count"] * s["mean"], q=s["count"] * (s["std"] ** 2 + s["mean"] ** 2))
    keys = ["block", "stage", "block_index", "channel"]
    extra = [c for c in ("range_lo", "range_hi") if c in s]
    agg = g.groupby(keys, sort=False).agg(count=("count", "sum"), w=("w", "sum"), q=("q", "sum"),
                                          **{c: (c, "first") for c in extra}).reset_index()
    agg["mean"] = agg["w"] / agg["count"]
    agg["var"] = np.maximum(agg["q"] / agg["count"] - agg["mean"] ** 2, 0.0)
    between = (s.merge(agg[keys + ["mean"]], on=keys, suffixes=("", "_all"))
               .assign(b=lambda d: d["count"] * (d["mean"] - d["mean_all"]) ** 2)
               .groupby(keys, sort=False)["b"].sum().reset_index())
    agg = agg.merge(between, on=keys)
    agg["between_var"] = agg["b"] / agg["count"]
    agg["std"] = np.sqrt(agg["var"])
    agg["class"] = ALL_CLASSES
    return agg.drop(columns=["w", "q", "b"])


def selectivity(stats: pd.DataFrame, hist: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per block, in depth order.

    - ``eta2``: class selectivity, the share of the excitation variance over images explained by
      the class (η² = between-class variance / total variance), averaged over channels with any
      variance. 0 = class-agnostic, 1 = the class alone sets each channel's excitation.
    - ``saturated``: share of channels whose all-class mean excitation is > 0.9 or < 0.1 (NaN for
      gates whose range is not (0, 1)); ``saturated_high`` counts only > 0.9 (a block near the
      identity, as the paper finds for SE_5_2).
    - ``mass_high`` / ``mass_low``: with the histograms, the share of all excitation values above
      0.9 / below 0.1.
    - ``mean``, ``spread``: the all-class mean excitation and its standard deviation across channels.
    """
    p = pooled(stats)
    rows = []
    for i, block in enumerate(block_order(p)):
        b = p[p["block"] == block]
        ok = b["var"] > 1e-12
        eta = float((b.loc[ok, "between_var"] / b.loc[ok, "var"]).mean()) if ok.any() else 0.0
        sigmoid_range = "range_lo" not in b or (b["range_lo"].iloc[0] == 0.0 and b["range_hi"].iloc[0] == 1.0)
        hi = float((b["mean"] > HIGH).mean()) if sigmoid_range else np.nan
        lo = float((b["mean"] < LOW).mean()) if sigmoid_range else np.nan
        row = dict(block=block, stage=int(b["stage"].iloc[0]), block_index=int(b["block_index"].iloc[0]),
                   depth=i + 1, channels=len(b), eta2=eta, saturated=hi + lo, saturated_high=hi,
                   saturated_low=lo, mean=float(b["mean"].mean()), spread=float(b["mean"].std(ddof=0)))
        if hist is not None:
            h = hist[hist["block"] == block]
            total = h["count"].sum()
            row["mass_high"] = float(h.loc[h["bin_lo"] >= HIGH - 1e-9, "count"].sum() / total) if total else np.nan
            row["mass_low"] = float(h.loc[h["bin_hi"] <= LOW + 1e-9, "count"].sum() / total) if total else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def hist_quantile(hist: pd.DataFrame, q: float) -> pd.DataFrame:
    """Quantile ``q`` of the excitation per (block, class, channel) from the histograms (linear
    interpolation inside the bin; resolution one bin width)."""
    keys = ["block", "class", "channel"]
    h = hist.sort_values(keys + ["bin"])
    out = []
    for key, g in h.groupby(keys, sort=False):
        c = g["count"].to_numpy(dtype=float)
        tot = c.sum()
        if tot == 0:
            out.append((*key, np.nan))
            continue
        cum = np.cumsum(c) / tot
        i = int(np.searchsorted(cum, q))
        prev = cum[i - 1] if i else 0.0
        frac = (q - prev) / max(cum[i] - prev, 1e-12)
        lo, hi = g["bin_lo"].iloc[i], g["bin_hi"].iloc[i]
        out.append((*key, lo + frac * (hi - lo)))
    return pd.DataFrame(out, columns=keys + [f"q{q:g}"])


def spearman(a, b) -> float:
    """Spearman rank correlation (Pearson's r of average ranks; ties share a rank)."""
    ra = pd.Series(np.asarray(a, float)).rank()
    rb = pd.Series(np.asarray(b, float)).rank()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t distribution (numpy only: the CDF integrated numerically, inverted
    by bisection; accurate to ~1e-4, enough for confidence intervals)."""
    if not 0.5 <= p < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 <= p < 1 and df >= 1, got p={p}, df={df}")
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf(t: float) -> float:
        x = np.linspace(0.0, t, 20001)
        return 0.5 + float(np.trapezoid(c * (1 + x * x / df) ** (-(df + 1) / 2), x))

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2
