"""Numbers from the excitation tables: all-class moments, class selectivity, saturation.

These turn the paper's §7.2 observations into one number per block: "early layers excite in a
class-agnostic manner, later ones become class-specific, and SE_5_2 is saturated (close to the
identity)". Inputs are the tidy tables of :mod:`analysis.extract`.

The second half holds the fixed-n helpers of the comparisons over seeds: the paired t interval and
the BCa bootstrap of the paired differences (shown in the reports as descriptive columns only: they
assume n was fixed in advance), the correlation of paired errors and the pooled spread. The verdicts
come from the anytime-valid confidence sequence of :mod:`senet.sequential`. pandas, numpy and scipy
only, so figures and reports can be made without torch.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy import stats as sps

from .errors import AnalysisInputError

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
    extra = [c for c in ("range_lo", "range_hi", "saturating") if c in s]
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
      the class (η² = between-class variance / total variance), averaged over the channels whose
      excitation varies at all; η² of a channel that never varies is undefined (0/0), not 0, so it
      is left out of the average and ``eta2_channels`` counts the channels averaged (NaN when none).
      0 = class-agnostic, 1 = the class alone sets each channel's excitation.
    - ``saturated``: share of channels whose all-class mean excitation is > 0.9 or < 0.1; NaN
      ("n/a") unless the gate saturates at the bounds of (0, 1) (sigmoid, hard sigmoid: the
      ``saturating`` column of the statistics; not softmax, whose weights sum to 1);
      ``saturated_high`` counts only > 0.9 (a block near the identity, as the paper finds for SE_5_2).
    - ``mass_high`` / ``mass_low``: with the histograms, the share of all excitation values above
      0.9 / below 0.1 (NaN where ``saturated`` is).
    - ``mean``, ``spread``: the all-class mean excitation and its standard deviation across channels.
    """
    p = pooled(stats)
    rows = []
    for i, block in enumerate(block_order(p)):
        b = p[p["block"] == block]
        ok = b["var"] > 1e-12
        eta = float((b.loc[ok, "between_var"] / b.loc[ok, "var"]).mean()) if ok.any() else np.nan
        sigmoid_range = "range_lo" not in b or (b["range_lo"].iloc[0] == 0.0 and b["range_hi"].iloc[0] == 1.0)
        sigmoid_range = sigmoid_range and bool(b["saturating"].iloc[0] if "saturating" in b else True)
        hi = float((b["mean"] > HIGH).mean()) if sigmoid_range else np.nan
        lo = float((b["mean"] < LOW).mean()) if sigmoid_range else np.nan
        row = dict(block=block, stage=int(b["stage"].iloc[0]), block_index=int(b["block_index"].iloc[0]),
                   depth=i + 1, channels=len(b), eta2=eta, eta2_channels=int(ok.sum()), saturated=hi + lo,
                   saturated_high=hi, saturated_low=lo, mean=float(b["mean"].mean()),
                   spread=float(b["mean"].std(ddof=0)))
        if hist is not None:
            h = hist[hist["block"] == block]
            total = h["count"].sum() if sigmoid_range else 0
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


# ---------------------------------------------------------------------------------------------
# Comparing arms over seeds
# ---------------------------------------------------------------------------------------------
ALPHA = 0.05  # two-sided, for the excitation findings' tests
POWER = 0.80
#: Below this many seed pairs a bootstrap over seeds is not computed (too few distinct resamples).
MIN_PAIRS = 3
#: Fewest bootstrap resamples: 200 leaves 5 resamples beyond each end of a 95% interval, so its
#: ends are not set by one or two draws (BCa moves the ends further out still).
MIN_BOOT = 200


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t distribution (for one-sided ``p`` in [0.5, 1))."""
    if not 0.5 <= p < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 <= p < 1 and df >= 1, got p={p}, df={df}")
    return float(sps.t.ppf(p, df))


def zero_spread(d: np.ndarray) -> bool:
    """Paired differences that are all equal (up to float noise): an interval of width zero, which
    says the seeds did not vary, not that the difference is certain."""
    d = np.asarray(d, float)
    return len(d) >= 2 and float(np.ptp(d)) <= 1e-9 * max(1.0, float(np.abs(d).max()))


def _mean_diff(a, r, axis=-1):
    return np.mean(a - r, axis=axis)


def paired_bootstrap_ci(a, r, *, level: float = 0.95, n_boot: int = 10000,
                        seed: int = 0) -> tuple[float, float, str]:
    """BCa bootstrap interval of mean(a − r) over the pairs (``scipy.stats.bootstrap``, paired).

    BCa needs a jackknife with some spread; where it is undefined (it warns or returns NaN: fewer
    than 3 pairs, equal differences, one outlying pair) the percentile interval is returned and
    the method says so. Below 2 pairs, or with all differences equal, there is no interval (NaN)."""
    a, r = np.asarray(a, float), np.asarray(r, float)
    if len(a) < 2 or zero_spread(a - r):
        return math.nan, math.nan, ""
    if n_boot < MIN_BOOT:
        raise AnalysisInputError(f"n_boot must be >= {MIN_BOOT}, got {n_boot}")
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                res = sps.bootstrap((a, r), _mean_diff, paired=True, vectorized=True, method=method,
                                    confidence_level=level, n_resamples=n_boot,
                                    rng=np.random.default_rng(seed))
            except (ValueError, FloatingPointError):
                continue
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(lo) and math.isfinite(hi) and not (method == "BCa" and caught):
            return lo, hi, method if method == "BCa" else "percentile (BCa undefined)"
    return math.nan, math.nan, ""


def paired_test(a, r, *, level: float = 0.95, n_boot: int = 10000, seed: int = 0) -> dict:
    """Arm ``a`` against reference ``r``, paired by seed (same order): the differences' mean and
    standard deviation, the paired t-test (``scipy.stats.ttest_rel``) with its ``level`` interval,
    and the BCa bootstrap interval. NaN where undefined: the test below 2 pairs or with zero spread."""
    a, r = np.asarray(a, float), np.asarray(r, float)
    d = a - r
    n = len(d)
    out = {"pairs": n, "mean_diff": float(d.mean()) if n else math.nan,
           "sd_diff": float(d.std(ddof=1)) if n >= 2 else math.nan, "t_low": math.nan,
           "t_high": math.nan, "p": math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "boot_method": "", "zero_spread": zero_spread(d)}
    if n < 2:
        return out
    if out["zero_spread"]:
        out["sd_diff"] = 0.0
        return out
    res = sps.ttest_rel(a, r)
    ci = res.confidence_interval(confidence_level=level)
    out.update(t_low=float(ci.low), t_high=float(ci.high), p=float(res.pvalue))
    if n >= MIN_PAIRS:
        out["ci_low"], out["ci_high"], out["boot_method"] = paired_bootstrap_ci(
            a, r, level=level, n_boot=n_boot, seed=seed)
    return out


def pooled_sd(diffs: Iterable[np.ndarray]) -> tuple[float, int]:
    """The standard deviation of paired differences pooled over arms (each arm's variance weighted
    by its degrees of freedom) and those degrees of freedom; (NaN, 0) without 2 pairs anywhere."""
    ss, df = 0.0, 0
    for d in diffs:
        d = np.asarray(d, float)
        if len(d) >= 2:
            ss += float(((d - d.mean()) ** 2).sum())
            df += len(d) - 1
    return (math.sqrt(ss / df), df) if df else (math.nan, 0)


def pair_correlation(a, r) -> float:
    """ρ̂ of the arm's and the reference's errors over the paired seeds, from the variances:
    (s_A² + s_R² − s_d²) / (2 s_A s_R). How much pairing by seed removes (s_d² = s_A² + s_R² − 2ρ s_A s_R);
    NaN below 3 pairs (two points always correlate ±1) or when either arm does not vary."""
    a, r = np.asarray(a, float), np.asarray(r, float)
    if len(a) < 3:
        return math.nan
    va, vr, vd = np.var(a, ddof=1), np.var(r, ddof=1), np.var(a - r, ddof=1)
    if zero_spread(a) or zero_spread(r):
        return math.nan
    return float((va + vr - vd) / (2 * math.sqrt(va * vr)))
