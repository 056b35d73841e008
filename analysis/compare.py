"""The numbers of an ablation report: per-arm summaries over seeds and each arm against the reference.

:func:`summary_table` gives the paper's table as numbers (mean and std over completed seeds, counts
by status, the paper's ImageNet figures). :func:`compare_arms` pairs each arm with the reference by
seed and reads its outcome off the anytime-valid confidence sequence of :mod:`senet.sequential`
(the study's design from study.json, else the defaults). :func:`projection` says how many seeds
that sequence would need to settle a difference of δ, next to a fixed-n design. pandas, numpy and
scipy only.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from senet.sequential import Design, assess, design_of, fixed_n_seeds, seeds_to_settle

from . import stats
from .errors import ReportInputError
from .study_results import arm_order, completed

METRICS = ("test_top1_err", "test_top5_err")
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


def study_design(meta: dict, runs: pd.DataFrame | None = None) -> tuple[Design, bool]:
    """The sequential design the study declared in its study.json for the preset of ``runs`` (one
    recipe, so one preset) and whether it declared one; else the preset's default design
    (:func:`senet.sequential.design_of`)."""
    presets = runs["preset"].dropna().astype(str).unique() if runs is not None and "preset" in runs else ()
    preset = presets[0] if len(presets) == 1 else str(meta.get("preset") or "")
    return design_of(meta, preset)


#: The fixed-n paired t interval's header: it is valid only at an n fixed in advance.
FIXED_T = "fixed-n t 95% CI (descriptive; not valid under optional stopping)"
COMPARISON_COLUMNS = ["arm", "reference", "metric", "pairs", "mean_diff", "sd_diff", "rho", "cs_low", "cs_high",
                      "level", "outcome", "reason", "closed_at", "more_seeds", "t_low", "t_high", "ci_low",
                      "ci_high", "boot_method"]


def compare_pair(a, r, design: Design, k: int, resolution: float, *, n_boot: int = 10000,
                 seed: int = 0) -> dict:
    """Arm values ``a`` against reference values ``r`` (paired, in seed order): the outcome and the
    confidence sequence at level α/``k`` (:func:`senet.sequential.assess`; ``resolution`` is one test
    image in points, 0 when unknown), σ̂_d, ρ̂, and the descriptive fixed-n paired t 95% interval and
    BCa bootstrap interval (:func:`analysis.stats.paired_test`)."""
    a, r = np.asarray(a, float), np.asarray(r, float)
    s = assess(a - r, design, k, resolution)
    t = stats.paired_test(a, r, n_boot=n_boot, seed=seed)
    reason = s.reason()
    if not s.closed and s.n >= design.min_seeds and (s.low > 0 or s.high < 0) and abs(s.mean) < resolution:
        # what keeps a sequence that excludes 0 open
        reason += f"; |Δ̂| is below one test image ({resolution:.2f} pp), never a difference"
    return {"pairs": s.n, "mean_diff": s.mean, "sd_diff": s.sd, "rho": stats.pair_correlation(a, r),
            "cs_low": s.low, "cs_high": s.high, "level": s.level, "outcome": s.outcome, "reason": reason,
            "closed_at": s.closed_at, "more_seeds": s.more_seeds, "t_low": t["t_low"], "t_high": t["t_high"],
            "ci_low": t["ci_low"], "ci_high": t["ci_high"], "boot_method": t["boot_method"]}


def check_n_boot(n_boot: int) -> None:
    if n_boot < stats.MIN_BOOT:
        raise ReportInputError(f"--n-boot must be >= {stats.MIN_BOOT} (5 resamples beyond each end of a "
                               f"95% interval), got {n_boot}")


def compare_arms(runs: pd.DataFrame, meta: dict, metric: str = "test_top1_err", *, n_boot: int = 10000,
                 seed: int = 0, num_test: int | None = None) -> pd.DataFrame:
    """Each arm's difference from the reference arm (arm − reference, in points), paired by seed.

    Only seeds completed by both arms pair up, taken in seed order. Every arm of the study other
    than the reference is one of the k comparisons, so each gets its confidence sequence at level
    α/k (Bonferroni: all outcomes of the table together err with probability ≤ α) and one of the
    outcomes of :mod:`senet.sequential` (better, worse, alike, different within ±δ; open below the
    seed cap, unresolved at it). A |Δ̂| below one test image (100 / ``num_test`` pp) is never a
    difference; unknown test-set size: not applied. ``attrs``: the design, whether study.json
    declared it, k, the level and the resolution."""
    check_n_boot(n_boot)
    design, declared = study_design(meta, runs)
    ref = meta.get("reference_arm")
    pairs = paired_values(runs, meta, metric)
    k = len(pairs)
    resolution = 100.0 / num_test if num_test else 0.0
    rows = [{"arm": arm, "reference": ref, "metric": metric,
             **compare_pair(a, r, design, k, resolution, n_boot=n_boot, seed=seed)}
            for arm, (a, r) in pairs.items()]
    out = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    out.attrs.update(design=design, declared=declared, k=k, level=design.level(k), resolution=resolution)
    return out


def settle_seeds(sd: float, design: Design, k: int, effect: float) -> tuple[int | None, int | None]:
    """(the seeds the confidence sequence at α/``k`` needs to settle a difference of ``effect``,
    the seeds of a fixed-n paired t-test at the same level with 80% power at ``effect``) if σ_d is
    ``sd``; None where unknown (no spread) or, for the sequence, beyond 100,000. The sequence's are
    the fewest after which its half-width is below max(effect, δ − effect): it then excludes 0 at
    Δ̂ = effect, or fits inside ±δ (:func:`senet.sequential.seeds_to_settle`)."""
    if not (math.isfinite(sd) and sd > 0):
        return None, None
    level = design.level(k)
    more = seeds_to_settle(2, effect, sd, level, design.g, design.delta)  # none is finite at 2 seeds
    return (None if more is None else 2 + more), fixed_n_seeds(effect, sd, level)


def projection(runs: pd.DataFrame, meta: dict, metric: str = "test_top1_err", *,
               effect: float | None = None, num_test: int | None = None) -> dict:
    """What the design can settle if σ_d stays what the seeds show: σ̂_d, the standard deviation of
    the paired differences pooled over the arms, and :func:`settle_seeds` for ``effect`` (default
    the design's δ, at least one test image)."""
    design, declared = study_design(meta, runs)
    pairs = paired_values(runs, meta, metric)
    k = len(pairs)
    sd, df = stats.pooled_sd(a - r for a, r in pairs.values())
    resolution = 100.0 / num_test if num_test else 0.0
    effect = max(design.delta if effect is None else effect, resolution)
    cs_seeds, fixed_seeds = settle_seeds(sd, design, k, effect)
    return {"metric": metric, "sd": sd, "df": df, "arms": sum(len(a) >= 2 for a, _ in pairs.values()),
            "n": max((len(a) for a, _ in pairs.values()), default=0), "effect": effect, "k": k,
            "level": design.level(k), "design": design, "declared": declared, "cs_seeds": cs_seeds,
            "fixed_seeds": fixed_seeds}
