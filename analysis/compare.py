"""The numbers of an ablation report: per-arm summaries over seeds and each arm against the reference.

:func:`summary_table` gives the paper's table as numbers (mean and std over completed seeds, counts
by status, the paper's ImageNet figures); :func:`compare_arms` pairs each arm with the reference by
seed (paired t-test, BCa bootstrap, Holm's step-down, a verdict); :func:`power_summary` says what the
design can detect. Method: :mod:`analysis.stats`. pandas, numpy and scipy only.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import stats
from .errors import ReportInputError
from .study import arm_order, completed

METRICS = ("test_top1_err", "test_top5_err")
#: Default target for "how many seeds would it take" (pp): the size of the paper's differences
#: between SE variants (r=32 vs r=16: 0.44, max vs avg squeeze: 0.29, tanh vs sigmoid: 0.72).
DEFAULT_EFFECT = 0.5
#: Statuses of a trial that has not finished (``senet collect``: still running, or interrupted and
#: not resumed yet): neither a result nor a failure.
UNFINISHED = ("running",)


def status_counts(a: pd.DataFrame) -> dict[str, int]:
    """Trials of one arm by outcome: ``diverged`` (status diverged only), ``running`` (not finished,
    :data:`UNFINISHED`) and ``errored`` (any other status that is not completed)."""
    status = a["status"]
    return {"diverged": int((status == "diverged").sum()), "running": int(status.isin(UNFINISHED).sum()),
            "errored": int((~status.isin(["completed", "diverged", *UNFINISHED])).sum())}


def summary_table(runs: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """One row per arm: counts by status (:func:`status_counts`), mean and std (ddof 1) of the errors
    over completed seeds, params and FLOPs, the difference of the means from the reference arm, and
    the paper's numbers (with the paper's own difference from its reference)."""
    ok = completed(runs)
    paper = {a["arm"]: a for a in meta.get("arms", [])}
    ref = meta.get("reference_arm")
    rows = []
    for arm in arm_order(runs, meta):
        a = runs[runs["arm"] == arm]
        c = ok[ok["arm"] == arm]
        row = {"arm": arm, "n": len(c), **status_counts(a)}
        for m in METRICS:
            v = c[m].dropna() if m in c else pd.Series(dtype=float)
            row[f"{m}_mean"] = float(v.mean()) if len(v) else np.nan
            row[f"{m}_std"] = float(v.std(ddof=1)) if len(v) > 1 else np.nan
        for k in ("params", "flops"):
            row[k] = float(a[k].dropna().iloc[0]) if k in a and a[k].notna().any() else np.nan
        # Effective bottleneck widths per stage (a string such as "1,2,4"): recorded, not averaged.
        row["se_hidden"] = str(a["se_hidden"].dropna().iloc[0]) if "se_hidden" in a and a["se_hidden"].notna().any() else ""
        p = paper.get(arm, {})
        row["paper_top1"] = p.get("paper_top1", np.nan) if p.get("paper_top1") is not None else np.nan
        row["paper_top5"] = p.get("paper_top5", np.nan) if p.get("paper_top5") is not None else np.nan
        rows.append(row)
    t = pd.DataFrame(rows)
    r = t[t["arm"] == ref]
    for m in METRICS:
        t[f"delta_{m}"] = t[f"{m}_mean"] - (float(r[f"{m}_mean"].iloc[0]) if len(r) else np.nan)
    t["paper_delta_top1"] = t["paper_top1"] - (float(r["paper_top1"].iloc[0]) if len(r) else np.nan)
    t["reference"] = t["arm"] == ref
    return t


# ---------------------------------------------------------------------------------------------
# Each arm against the reference, paired by seed
# ---------------------------------------------------------------------------------------------
def paired(ok: pd.DataFrame, arm: str, vs: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``arm`` and ``vs`` on the seeds both completed, in seed order."""
    a = ok[ok["arm"] == arm].groupby("seed")[metric].mean()
    b = ok[ok["arm"] == vs].groupby("seed")[metric].mean()
    seeds = sorted(set(a.index) & set(b.index))
    return a.loc[seeds].to_numpy(dtype=float), b.loc[seeds].to_numpy(dtype=float)


def paired_values(runs: pd.DataFrame, meta: dict, metric: str = "test_top1_err") -> dict[str, tuple]:
    """arm -> (its values, the reference's values) on the seeds both completed, in seed order."""
    ok = completed(runs).dropna(subset=[metric])
    ref = meta.get("reference_arm")
    return {arm: paired(ok, arm, ref, metric) for arm in arm_order(runs, meta) if arm != ref}


COMPARISON_COLUMNS = ["arm", "reference", "metric", "pairs", "mean_diff", "sd_diff", "t_low", "t_high",
                      "p", "p_holm", "ci_low", "ci_high", "boot_method", "verdict", "reason", "seeds_for_diff"]


def paired_verdict(r: dict, resolution: float, alpha: float) -> tuple[str, str]:
    """better / worse / inconclusive / no verdict of one paired test (rules: :func:`compare_arms`)."""
    if r["pairs"] < stats.MIN_PAIRS:
        return "no verdict", f"{r['pairs']} seed pair(s); a verdict needs ≥ {stats.MIN_PAIRS}"
    if r["zero_spread"]:
        return "no verdict", "every seed gave the same difference: no spread to test it against"
    if math.isfinite(resolution) and abs(r["mean_diff"]) < resolution - 1e-9:
        return "inconclusive", f"|Δ| below one test image ({resolution:.2f} pp)"
    if not r["p_holm"] <= alpha:
        return "inconclusive", f"Holm p = {r['p_holm']:.2g} > {alpha:g}"
    if r["pairs"] >= stats.BOOT_DECIDES_FROM and not (r["ci_high"] < 0 or r["ci_low"] > 0):
        return "inconclusive", "the bootstrap interval includes 0"
    return ("better" if r["mean_diff"] < 0 else "worse"), f"Holm p = {r['p_holm']:.2g} ≤ {alpha:g}"


def check_n_boot(n_boot: int) -> None:
    if n_boot < stats.MIN_BOOT:
        raise ReportInputError(f"--n-boot must be >= {stats.MIN_BOOT} (5 resamples beyond each end of a "
                               f"95% interval), got {n_boot}")


def compare_arms(runs: pd.DataFrame, meta: dict, metric: str = "test_top1_err", *, n_boot: int = 10000,
                 level: float = 0.95, seed: int = 0, num_test: int | None = None,
                 alpha: float = stats.ALPHA) -> pd.DataFrame:
    """Each arm's difference from the reference arm (arm − reference, in points), paired by seed.

    Only seeds completed by both arms pair up. Per arm: the paired t-test (``scipy.stats.ttest_rel``)
    and its interval, the BCa bootstrap interval (:func:`analysis.stats.paired_test`), the p-value
    Holm-adjusted over the arms tested against the reference, and a verdict for an error metric:

    - ``no verdict`` below 3 pairs, or when every seed gave the same difference (zero spread);
    - ``inconclusive`` when |mean Δ| is below one test image (100 / ``num_test`` pp; skipped when
      the test-set size is unknown), when the Holm-adjusted p exceeds ``alpha``, or, from 6 pairs on,
      when the bootstrap interval includes 0;
    - else ``better`` (lower error) or ``worse``.

    ``seeds_for_diff``: for arms without a better/worse verdict, the seeds a study would need to
    detect a difference the size of the observed |Δ| (at least one test image) with 80% power,
    from the seed-to-seed σ pooled over arms.
    """
    check_n_boot(n_boot)
    ref = meta.get("reference_arm")
    pairs = paired_values(runs, meta, metric)
    resolution = 100.0 / num_test if num_test else math.nan
    rows = []
    for arm, (a, r) in pairs.items():
        t = stats.paired_test(a, r, level=level, n_boot=n_boot, seed=seed)
        rows.append({"arm": arm, "reference": ref, "metric": metric, **t})
    tested = [r["pairs"] >= stats.MIN_PAIRS and math.isfinite(r["p"]) for r in rows]
    adjusted = stats.holm([r["p"] if ok else math.nan for r, ok in zip(rows, tested, strict=True)])
    sd, _ = stats.pooled_sd(a - r for a, r in pairs.values())
    for r, p_holm in zip(rows, adjusted, strict=True):
        r["p_holm"] = float(p_holm)
        r["verdict"], r["reason"] = paired_verdict(r, resolution, alpha)
        target = max(abs(r["mean_diff"]), resolution if math.isfinite(resolution) else 0.0)
        r["seeds_for_diff"] = (stats.seeds_needed(sd, target) if r["verdict"] not in ("better", "worse")
                               and math.isfinite(target) else None)
    out = pd.DataFrame(rows, columns=[*COMPARISON_COLUMNS, "zero_spread"])
    out.attrs["holm_k"] = int(sum(tested))
    return out.drop(columns="zero_spread")


def power_summary(runs: pd.DataFrame, meta: dict, metric: str = "test_top1_err", *,
                  effect: float | None = None, num_test: int | None = None) -> dict:
    """What the study can detect: σ_d, the standard deviation of the paired differences pooled over
    the arms; n, the most seed pairs any arm has; the minimum detectable effect at two-sided 5% and
    80% power (per comparison, before Holm); and the seeds a difference of ``effect`` pp would need
    (default: 0.5 pp, or one test image if that is larger)."""
    pairs = paired_values(runs, meta, metric)
    sd, df = stats.pooled_sd(a - r for a, r in pairs.values())
    n = max((len(a) for a, _ in pairs.values()), default=0)
    resolution = 100.0 / num_test if num_test else math.nan
    if effect is None:
        effect = max(DEFAULT_EFFECT, resolution) if math.isfinite(resolution) else DEFAULT_EFFECT
    return {"metric": metric, "sd": sd, "df": df, "arms": sum(len(a) >= 2 for a, _ in pairs.values()),
            "n": n, "mde": stats.min_detectable_effect(sd, n), "effect": effect,
            "seeds": stats.seeds_needed(sd, effect), "resolution": resolution}
