"""Ablation reports: paper-style tables, verdicts over seeds and figures from ``runs.parquet``.

A study's sweep writes ``<results>/<study>/runs.parquet`` (one row per trial) and ``study.json``
(its arms, the reference arm and the paper's ImageNet numbers, e.g. Table 12 for the gate study).
:func:`write_report` turns them into ``report.md`` with:

- the table the paper prints (arm, top-1 / top-5 error as mean ± std over seeds, n, params, FLOPs,
  Δ against the reference arm) with the paper's figure alongside, in Markdown and LaTeX;
- each arm against the reference arm, paired by seed: the paired t-test and its interval, a BCa
  bootstrap interval, Holm's correction over the arms compared, and a verdict (better / worse /
  inconclusive / no verdict) that needs at least 3 seed pairs and a difference of at least one
  test image; a power line says what difference the study could detect and how many seeds a
  smaller one would take (method: ``analysis.stats``);
- point plots (mean ± t-interval over seeds) and error EDFs per arm (as pycls draws them).

A report covers one recipe: trials that differ in anything but the arm, the seed and a study's
nuisance values (see ``senet.recipe``) are never averaged together; a table that mixes recipes is
refused until one is chosen. Only completed trials enter the statistics; diverged and errored ones
are counted and shown. Rendering only: pandas, numpy, scipy, matplotlib and seaborn (``senet`` is
imported only to name the recipes of a table collected before it recorded them).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import figures as F
from . import stats as S
from .errors import AnalysisInputError
from .style import label, save

METRICS = ("test_top1_err", "test_top5_err")
#: Default target for "how many seeds would it take" (pp): the size of the paper's differences
#: between SE variants (r=32 vs r=16: 0.44, max vs avg squeeze: 0.29, tanh vs sigmoid: 0.72).
DEFAULT_EFFECT = 0.5


class ReportInputError(AnalysisInputError):
    """A table or a choice the report cannot use (unreadable, ambiguous, lacking a column): the CLI
    prints it as one line."""


def load_study(results: str | Path, study: str) -> tuple[pd.DataFrame, dict]:
    """Read ``<results>/<study>/runs.parquet`` and ``study.json`` (missing meta -> derived)."""
    d = Path(results) / study
    runs_path = d / "runs.parquet"
    if not runs_path.is_file():
        have = sorted(p.parent.name for p in Path(results).glob("*/runs.parquet")) if Path(results).is_dir() else []
        hint = f"; studies with results: {', '.join(have)}" if have else "; run `senet collect STUDY` first"
        raise FileNotFoundError(f"no results for study {study!r}: {runs_path} not found{hint}")
    try:
        runs = pd.read_parquet(runs_path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ReportInputError(f"{runs_path} is unreadable ({why}); `senet collect {study} --results "
                               f"{results}` rebuilds it from the trials") from None
    missing = {"arm", "status", "test_top1_err"} - set(runs.columns)
    if missing:
        raise ReportInputError(f"{runs_path} lacks the columns {sorted(missing)}")
    meta_path = d / "study.json"
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    except ValueError as e:
        raise ReportInputError(f"{meta_path} is not valid JSON ({e}); remove it and `senet collect {study} "
                               f"--results {results}` derives it from the trials") from None
    meta.setdefault("name", study)
    meta.setdefault("title", study)
    if not meta.get("arms"):
        meta["arms"] = [{"arm": a} for a in dict.fromkeys(runs["arm"])]
    meta.setdefault("reference_arm", meta["arms"][0]["arm"])
    return runs, meta


def arm_order(runs: pd.DataFrame, meta: dict) -> list[str]:
    """The study's arm order, then any arms found only in the runs."""
    order = [a["arm"] for a in meta.get("arms", [])]
    return order + [a for a in dict.fromkeys(runs["arm"]) if a not in order]


def completed(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] == "completed"]


# ---------------------------------------------------------------------------------------------
# One recipe per report; nuisance values are not seeds
# ---------------------------------------------------------------------------------------------
def axis_keys(meta: dict, runs: pd.DataFrame | None = None) -> list[str]:
    """The config keys the arms vary: the study's axis and every key an arm overrides (the
    reduction study's baseline sets ``se.stages`` although its axis is ``se.reduction``). Without
    a recorded axis, the config columns that are constant within each arm and differ between arms."""
    keys = [k.strip() for k in str(meta.get("axis") or "").split(",") if k.strip() and not k.startswith("(")]
    keys += [k for a in meta.get("arms", []) for k in (a.get("overrides") or {})]
    if not keys and runs is not None and "arm" in runs and runs["arm"].nunique() > 1:
        cols = [c for c in runs.columns if "." in c and not c.startswith("run.")]
        keys = [c for c in cols if runs.groupby("arm")[c].nunique(dropna=False).max() <= 1
                and runs[c].nunique(dropna=False) > 1]
    return list(dict.fromkeys(keys))


def nuisance_keys(meta: dict) -> list[str]:
    """The keys a (custom) study sweeps identically for every arm, besides the seed."""
    return list(meta.get("nuisance_keys") or meta.get("nuisance") or [])


def with_recipe(runs: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """``runs`` with a ``recipe`` column: the recorded one, or for rows without it (tables collected
    before it existed) the same :func:`senet.recipe.recipe_hash` that collect records."""
    if "recipe" in runs and runs["recipe"].notna().all():
        return runs
    from senet.recipe import recipe_hash  # noqa: PLC0415  (senet imports torch: only old tables pay)

    axis, nuis = axis_keys(meta, runs), nuisance_keys(meta)
    computed = pd.Series([recipe_hash(r, axis, nuis) for r in runs.to_dict("records")], index=runs.index)
    runs = runs.copy()
    runs["recipe"] = runs["recipe"].where(runs["recipe"].notna(), computed) if "recipe" in runs else computed
    return runs


def _describe_recipes(runs: pd.DataFrame) -> str:
    parts = []
    for rec, g in runs.groupby("recipe", sort=False):
        tags = [f"{c} {'/'.join(map(str, dict.fromkeys(g[c].dropna())))}" for c in ("preset", "experiment")
                if c in g and g[c].notna().any()]
        parts.append(f"recipe {rec} ({', '.join([*tags, f'{len(g)} trials'])})")
    return "; ".join(parts)


def select_recipe(runs: pd.DataFrame, meta: dict, *, preset: str | None = None,
                  experiment: str | None = None, recipe: str | None = None,
                  where: str = "runs.parquet") -> pd.DataFrame:
    """The rows of one recipe: those chosen by ``preset`` / ``experiment`` / ``recipe`` (a hash or
    its prefix), which must leave exactly one recipe. Two recipes are never pooled: a table that
    holds several is refused with one line naming each (preset, experiment, trials)."""
    runs = with_recipe(runs, meta)
    for col, want in (("preset", preset), ("experiment", experiment), ("recipe", recipe)):
        if want is None:
            continue
        if col not in runs or runs[col].isna().all():
            raise ReportInputError(f"{where} records no {col}; choose with --recipe among: {_describe_recipes(runs)}")
        have = runs[col].astype(str)
        sel = runs[have.str.startswith(want) if col == "recipe" else have == str(want)]
        if sel.empty:
            raise ReportInputError(f"no trials with {col} {want!r} in {where}; it holds: {_describe_recipes(runs)}")
        runs = sel
    if runs["recipe"].nunique() > 1:
        raise ReportInputError(f"{where} mixes {runs['recipe'].nunique()} recipes, which a report never "
                               f"averages together; choose one with --preset, --experiment or --recipe: "
                               f"{_describe_recipes(runs)}")
    return runs


def nuisance_groups(runs: pd.DataFrame, meta: dict) -> list[tuple[str, pd.DataFrame, str]]:
    """(title, rows, note) per group of the report. A study's nuisance values are not seeds: each
    combination is its own group, unless ``study.json`` says ``"average_nuisance": true``; then each
    (arm, seed) is averaged over the nuisance values first (only where every value completed)."""
    keys = [k for k in nuisance_keys(meta) if k in runs]
    if not keys:
        return [("", runs, "")]
    if not meta.get("average_nuisance"):
        return [(", ".join(f"{k} = {v}" for k, v in zip(keys, vals, strict=True)), g, "")
                for vals, g in runs.groupby(keys, sort=True, dropna=False)]
    combos = len(runs[keys].drop_duplicates())
    ok = completed(runs)
    metrics = [c for c in ok.columns if c.endswith("_err") and pd.api.types.is_numeric_dtype(ok[c])]
    cells = ok.groupby(["arm", "seed"], sort=False)
    full = cells.size()
    full = full[full == combos].index
    avg = cells[metrics].mean().loc[full].reset_index()
    first = cells.first().loc[full].reset_index().drop(columns=metrics)
    merged = first.merge(avg, on=["arm", "seed"]).assign(status="completed")
    left_out = len(cells.size()) - len(full)
    note = (f"Each arm and seed is averaged over the {combos} combinations of {', '.join(keys)} "
            "(study.json: average_nuisance)"
            + (f"; {left_out} (arm, seed) cells without a completed run for every value are left out." if left_out else "."))
    return [(f"averaged over {', '.join(keys)}", pd.concat([merged, runs[runs["status"] != "completed"]],
                                                          ignore_index=True), note)]


def test_set_size(runs: pd.DataFrame) -> tuple[int | None, str]:
    """The number of test images N behind the errors (one image = 100/N points) and where it was
    found: a ``num_test`` column, the ``final.json`` beside each trial's checkpoint, or the data
    config (the synthetic set's size, ``data.test_subset``); (None, "") when nothing records it."""
    if "num_test" in runs and runs["num_test"].notna().any():
        return int(runs["num_test"].dropna().min()), "num_test"
    sizes = []
    for ckpt in runs["checkpoint"].dropna().unique() if "checkpoint" in runs else ():
        try:
            n = json.loads((Path(str(ckpt)).parent / "final.json").read_text()).get("num_test")
        except (OSError, ValueError):
            continue
        if n:
            sizes.append(int(n))
    if sizes:
        return min(sizes), "final.json"
    col = lambda k: pd.to_numeric(runs[k], errors="coerce").dropna() if k in runs else pd.Series(dtype=float)
    subset = col("data.test_subset")
    subset = subset[subset > 0]
    if "data.name" in runs and (runs["data.name"] == "synthetic").all() and len(col("data.synthetic_test")):
        n = int(col("data.synthetic_test").min())
        return (min(n, int(subset.min())) if len(subset) else n), "data.synthetic_test"
    if len(subset):
        return int(subset.min()), "data.test_subset"
    return None, ""


def summary_table(runs: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """One row per arm: counts by status, mean and std (ddof 1) of the errors over completed
    seeds, params and FLOPs, the difference of the means from the reference arm, and the paper's
    numbers (with the paper's own difference from its reference)."""
    ok = completed(runs)
    paper = {a["arm"]: a for a in meta.get("arms", [])}
    ref = meta.get("reference_arm")
    rows = []
    for arm in arm_order(runs, meta):
        a = runs[runs["arm"] == arm]
        c = ok[ok["arm"] == arm]
        row = {"arm": arm, "n": len(c), "diverged": int((a["status"] == "diverged").sum()),
               "errored": int((~a["status"].isin(["completed", "diverged"])).sum())}
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
def paired_values(runs: pd.DataFrame, meta: dict, metric: str = "test_top1_err") -> dict[str, tuple]:
    """arm -> (its values, the reference's values) on the seeds both completed, in seed order."""
    ok = completed(runs).dropna(subset=[metric])
    ref = meta.get("reference_arm")
    base = ok[ok["arm"] == ref].groupby("seed")[metric].mean()
    out = {}
    for arm in arm_order(runs, meta):
        if arm == ref:
            continue
        a = ok[ok["arm"] == arm].groupby("seed")[metric].mean()
        seeds = sorted(set(a.index) & set(base.index))
        out[arm] = (a.loc[seeds].to_numpy(dtype=float), base.loc[seeds].to_numpy(dtype=float))
    return out


COMPARISON_COLUMNS = ["arm", "reference", "metric", "pairs", "mean_diff", "sd_diff", "t_low", "t_high",
                      "p", "p_holm", "ci_low", "ci_high", "boot_method", "verdict", "reason", "seeds_for_diff"]


def _verdict(r: dict, resolution: float, alpha: float) -> tuple[str, str]:
    if r["pairs"] < S.MIN_PAIRS:
        return "no verdict", f"{r['pairs']} seed pair(s); a verdict needs ≥ {S.MIN_PAIRS}"
    if r["zero_spread"]:
        return "no verdict", "every seed gave the same difference: no spread to test it against"
    if math.isfinite(resolution) and abs(r["mean_diff"]) < resolution - 1e-9:
        return "inconclusive", f"|Δ| below one test image ({resolution:.2f} pp)"
    if not r["p_holm"] <= alpha:
        return "inconclusive", f"Holm p = {r['p_holm']:.2g} > {alpha:g}"
    if r["pairs"] >= S.BOOT_DECIDES_FROM and not (r["ci_high"] < 0 or r["ci_low"] > 0):
        return "inconclusive", "the bootstrap interval includes 0"
    return ("better" if r["mean_diff"] < 0 else "worse"), f"Holm p = {r['p_holm']:.2g} ≤ {alpha:g}"


def compare_arms(runs: pd.DataFrame, meta: dict, metric: str = "test_top1_err", *, n_boot: int = 10000,
                 level: float = 0.95, seed: int = 0, num_test: int | None = None,
                 alpha: float = S.ALPHA) -> pd.DataFrame:
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
    if n_boot < S.MIN_BOOT:
        raise ReportInputError(f"--n-boot must be >= {S.MIN_BOOT} (5 resamples beyond each end of a "
                               f"95% interval), got {n_boot}")
    ref = meta.get("reference_arm")
    pairs = paired_values(runs, meta, metric)
    resolution = 100.0 / num_test if num_test else math.nan
    rows = []
    for arm, (a, r) in pairs.items():
        t = S.paired_test(a, r, level=level, n_boot=n_boot, seed=seed)
        rows.append({"arm": arm, "reference": ref, "metric": metric, **t})
    tested = [r["pairs"] >= S.MIN_PAIRS and math.isfinite(r["p"]) for r in rows]
    adjusted = S.holm([r["p"] if ok else math.nan for r, ok in zip(rows, tested, strict=True)])
    sd, _ = S.pooled_sd(a - r for a, r in pairs.values())
    for r, p_holm in zip(rows, adjusted, strict=True):
        r["p_holm"] = float(p_holm)
        r["verdict"], r["reason"] = _verdict(r, resolution, alpha)
        target = max(abs(r["mean_diff"]), resolution if math.isfinite(resolution) else 0.0)
        r["seeds_for_diff"] = (S.seeds_needed(sd, target) if r["verdict"] not in ("better", "worse")
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
    sd, df = S.pooled_sd(a - r for a, r in pairs.values())
    n = max((len(a) for a, _ in pairs.values()), default=0)
    resolution = 100.0 / num_test if num_test else math.nan
    if effect is None:
        effect = max(DEFAULT_EFFECT, resolution) if math.isfinite(resolution) else DEFAULT_EFFECT
    return {"metric": metric, "sd": sd, "df": df, "arms": sum(len(a) >= 2 for a, _ in pairs.values()),
            "n": n, "mde": S.min_detectable_effect(sd, n), "effect": effect,
            "seeds": S.seeds_needed(sd, effect), "resolution": resolution}


def power_line(p: dict) -> str:
    """The power summary as one sentence of the report."""
    name = label(p["metric"]).replace(" (%)", "")
    if not math.isfinite(p["sd"]):
        return (f"Power ({name}): no estimate of the seed-to-seed spread (no arm has 2 seed "
                "pairs with the reference); run more seeds (`--seeds 3` at least).")
    seeds = (f"{p['seeds']} seeds" if p["seeds"] is not None else "more than a million seeds")
    return (f"Power ({name}): σ_d = {p['sd']:.2f} pp (SD of the paired differences, pooled over "
            f"{p['arms']} arms, {p['df']} df); with n = {p['n']} seeds the smallest difference this study "
            f"detects with 80% power (two-sided 5%, before Holm) is {p['mde']:.2f} pp; "
            f"{p['effect']:.2f} pp would need {seeds}.")


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
def _num(v, fmt="{:.2f}") -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else fmt.format(v)


def _pm(mean, std) -> str:
    if np.isnan(mean):
        return "–"
    return f"{mean:.2f}" if np.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def _human(v, unit="") -> str:
    if v is None or np.isnan(v):
        return "–"
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suf}{unit}"
    return f"{v:.0f}{unit}"


def _signed(v) -> str:
    return "–" if np.isnan(v) else f"{v:+.2f}"


HEADER = ["arm", "top-1 err (%)", "top-5 err (%)", "n", "diverged", "params", "FLOPs",
          "Δ top-1", "paper top-1 / top-5", "paper Δ top-1"]


def table_rows(t: pd.DataFrame) -> list[list[str]]:
    """The summary table as strings, one list per arm, in :data:`HEADER` order."""
    out = []
    for r in t.itertuples(index=False):
        name = f"{r.arm} (ref)" if r.reference else r.arm
        paper = "–" if np.isnan(r.paper_top1) else f"{r.paper_top1:.2f} / {_num(r.paper_top5)}"
        out.append([name, _pm(r.test_top1_err_mean, r.test_top1_err_std),
                    _pm(r.test_top5_err_mean, r.test_top5_err_std), str(r.n),
                    str(r.diverged + r.errored) if r.errored else str(r.diverged),
                    _human(r.params), _human(r.flops),
                    "–" if r.reference else _signed(r.delta_test_top1_err),
                    paper, "–" if r.reference else _signed(r.paper_delta_top1)])
    return out


def markdown(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")
    lines = ["| " + " | ".join(map(esc, header)) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def latex(header: list[str], rows: list[list[str]], caption: str = "") -> str:
    def esc(s: str) -> str:
        s = str(s)
        for a, b in (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("_", "\\_"),
                     ("#", "\\#"), ("±", "$\\pm$"), ("Δ", "$\\Delta$"), ("–", "--")):
            s = s.replace(a, b)
        return s

    lines = ["\\begin{table}[t]", "\\centering"]
    if caption:
        lines.append(f"\\caption{{{esc(caption)}}}")
    lines += ["\\begin{tabular}{l" + "r" * (len(header) - 1) + "}", "\\toprule",
              " & ".join(map(esc, header)) + " \\\\", "\\midrule"]
    lines += [" & ".join(map(esc, r)) + " \\\\" for r in rows]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def comparison_rows(b: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The comparison table as strings (header, rows)."""
    header = ["arm", "vs", "pairs", "mean Δ (pp)", "t 95% CI", "p", "p (Holm)", "bootstrap 95% CI",
              "verdict", "why", "seeds to detect |Δ|"]

    def ci(lo, hi):
        return "–" if np.isnan(lo) else f"[{lo:+.2f}, {hi:+.2f}]"

    def boot(r):
        text = ci(r.ci_low, r.ci_high)
        return text if text == "–" or r.boot_method == "BCa" else f"{text} ({r.boot_method})"

    rows = [[r.arm, r.reference, str(r.pairs), _signed(r.mean_diff), ci(r.t_low, r.t_high),
             _num(r.p, "{:.3g}"), _num(r.p_holm, "{:.3g}"), boot(r), r.verdict, r.reason,
             "–" if r.seeds_for_diff is None or pd.isna(r.seeds_for_diff) else str(int(r.seeds_for_diff))]
            for r in b.itertuples(index=False)]
    return header, rows


def comparison_caption(b: pd.DataFrame, num_test: int | None, source: str) -> str:
    """What the comparison table did, in one paragraph: Holm's family, the resolution, the rules."""
    k = b.attrs.get("holm_k", 0)
    res = (f"one test image is {100 / num_test:.2f} pp (N = {num_test} test images, from {source}), and a "
           "smaller |Δ| is never called better or worse" if num_test else
           "the test-set size is not recorded, so the resolution of one test image is unknown and not applied")
    family = (f"Holm's step-down adjustment over the {k} arm{'s' if k != 1 else ''} tested against the "
              "reference (family-wise error 5%)" if k else
              f"Holm's step-down adjustment, here over no test (no arm has {S.MIN_PAIRS} pairs)")
    return (f"Paired by seed (arm − reference). p: paired t-test; p (Holm): {family}. "
            f"Bootstrap: BCa over the seed pairs; it is shown, and decides together with the t-test only from "
            f"{S.BOOT_DECIDES_FROM} pairs on. No verdict below {S.MIN_PAIRS} pairs; {res}.")


def write_report(results: str | Path, study: str, *, n_boot: int = 10000, preset: str | None = None,
                 experiment: str | None = None, recipe: str | None = None,
                 effect: float | None = None) -> Path:
    """Write ``<results>/<study>/report.md`` with its tables (``table.md``, ``table.tex``,
    ``comparison_*.md``) and figures (``figures/*.png`` and ``.pdf``); returns the report's path.

    The table must hold one recipe, or ``preset`` / ``experiment`` / ``recipe`` must pick one
    (:func:`select_recipe`); nuisance values make groups of their own (:func:`nuisance_groups`)."""
    if n_boot < S.MIN_BOOT:
        raise ReportInputError(f"--n-boot must be >= {S.MIN_BOOT} (5 resamples beyond each end of a "
                               f"95% interval), got {n_boot}")
    if effect is not None and not effect > 0:
        raise ReportInputError(f"--effect must be > 0 (points of error), got {effect}")
    runs, meta = load_study(results, study)
    d = Path(results) / study
    runs = select_recipe(runs, meta, preset=preset, experiment=experiment, recipe=recipe,
                         where=str(d / "runs.parquet"))
    num_test, source = test_set_size(runs)
    caption = meta.get("title", study) + (f" (cf. paper {meta['paper_table']})" if meta.get("paper_table") else "")
    parts = [f"# {meta.get('title', study)}", ""]
    if meta.get("paper_table"):
        parts.append(f"Reproduces paper {meta['paper_table']}; scientific axis: "
                     f"`{meta.get('axis', '?')}`; reference arm: `{meta['reference_arm']}`.")
    tags = [f"{c} `{'/'.join(map(str, dict.fromkeys(runs[c].dropna())))}`" for c in ("preset", "experiment")
            if c in runs and runs[c].notna().any()]
    parts += [f"Recipe `{runs['recipe'].iloc[0]}`" + (f" ({', '.join(tags)})" if tags else "") + ".", ""]
    if "git_commit" in runs and runs["git_commit"].notna().any():  # each row's trial, as it recorded
        commits = ", ".join(f"`{c[:12]}`" for c in sorted(set(runs["git_commit"].dropna().astype(str))))
        dirty = (" (some in a working tree with uncommitted changes)"
                 if "git_dirty" in runs and runs["git_dirty"].eq(True).any() else "")
        shared = runs["reused_from"].dropna() if "reused_from" in runs else pd.Series(dtype=str)
        shared = (f" {len(shared)} of its {len(runs)} trials were trained for another study and are shared "
                  f"with it ({', '.join(sorted(set(shared.astype(str))))})." if len(shared) else "")
        parts += [f"Trained at commit {commits}{dirty}.{shared}", ""]
    groups = nuisance_groups(runs, meta)
    for gi, (title, g, note) in enumerate(groups):
        suffix = f"_{gi + 1}" if len(groups) > 1 else ""
        if title:
            parts += [f"# {title}", ""]
        if note:
            parts += [note, ""]
        parts += _group_report(d, g, meta, caption, suffix, n_boot=n_boot, effect=effect,
                               num_test=num_test, source=source)
    out = d / "report.md"
    out.write_text("\n".join(parts))
    return out


def _group_report(d: Path, runs: pd.DataFrame, meta: dict, caption: str, suffix: str, *, n_boot: int,
                  effect: float | None, num_test: int | None, source: str) -> list[str]:
    """The tables, comparisons, power lines and figures of one group of trials (markdown lines)."""
    t = summary_table(runs, meta)
    rows = table_rows(t)
    (d / f"table{suffix}.md").write_text(markdown(HEADER, rows))
    (d / f"table{suffix}.tex").write_text(latex(HEADER, rows, caption))
    ok = completed(runs)
    arms = [a for a in arm_order(runs, meta) if (ok["arm"] == a).any()]
    bad = {k: int(v) for k, v in runs["status"].value_counts().items() if k != "completed"}
    parts = [f"{len(runs)} trials: {len(ok)} completed"
             + (f", {sum(bad.values())} not ({', '.join(f'{k}: {v}' for k, v in bad.items())})" if bad else "")
             + "; only completed trials enter the statistics.", "",
             "## Results", "", f"Test error in %, mean ± std over seeds. {caption}. The paper's numbers "
             "are ImageNet (ResNet-50), shown for the direction and size of each effect.", "",
             markdown(HEADER, rows), f"LaTeX: [table{suffix}.tex](table{suffix}.tex)", "",
             "## Differences from the reference arm (paired by seed; Holm-corrected)", ""]
    for m in METRICS:
        if m not in runs:
            continue
        b = compare_arms(runs, meta, m, n_boot=n_boot, num_test=num_test)
        hdr, brow = comparison_rows(b)
        (d / f"comparison_{m}{suffix}.md").write_text(markdown(hdr, brow))
        parts += [f"**{label(m)}** (negative = lower error than `{meta['reference_arm']}`). "
                  + comparison_caption(b, num_test, source), "", markdown(hdr, brow),
                  power_line(power_summary(runs, meta, m, effect=effect, num_test=num_test)), ""]
    if len(ok) and arms:
        metrics = [m for m in METRICS if m in ok and ok[m].notna().any()]
        figdir = d / "figures"
        save(F.point_plot(ok, arms, metrics, title=study_title(meta)),
             figdir / f"pointplot{suffix}")
        parts += ["## Figures", "", "Mean ± 95% Student-t interval over seeds per arm (no interval with "
                  "one seed; n under each arm); dots are single runs.", "",
                  f"![point plot](figures/pointplot{suffix}.png)", ""]
        for m in metrics:
            save(F.error_edf(ok, arms, m), figdir / f"edf_{m}{suffix}")
            parts += [f"![EDF of {label(m)}](figures/edf_{m}{suffix}.png)", ""]
    return parts


def study_title(meta: dict) -> str:
    return str(meta.get("title") or meta.get("name") or "")


def best_checkpoint(results: str | Path, study: str, *, preset: str | None = None,
                    experiment: str | None = None, recipe: str | None = None) -> tuple[str, dict]:
    """The checkpoint of the completed SE trial with the lowest *validation* top-1 error
    (``best_val_top1_err``), of one recipe (:func:`select_recipe`).

    The test set is never used to choose: a minimum over test evaluations is optimistically biased,
    and ``analyze --best`` then measures the chosen run on that same test set. A table without
    validation errors is refused rather than ranked by test error."""
    runs, meta = load_study(results, study)
    runs = select_recipe(runs, meta, preset=preset, experiment=experiment, recipe=recipe,
                         where=str(Path(results) / study / "runs.parquet"))
    ok = runs[runs["status"] == "completed"]
    if "se.stages" in ok.columns:
        ok = ok[ok["se.stages"].astype(str) != "none"]
    if "checkpoint" in ok.columns:
        ok = ok[ok["checkpoint"].notna()]
    if ok.empty:
        raise ReportInputError(f"study {study!r} has no completed SE trial with a checkpoint")
    val = pd.to_numeric(ok["best_val_top1_err"], errors="coerce") if "best_val_top1_err" in ok else None
    if val is None or val.isna().all():
        raise ReportInputError(f"study {study!r} records no validation error (best_val_top1_err), and the "
                               "best run is chosen on validation, never on test: re-run it with "
                               "data.val_fraction > 0")
    row = ok.assign(_val=val).dropna(subset=["_val"]).sort_values("_val", kind="stable").iloc[0]
    return str(row["checkpoint"]), row.drop(labels="_val").to_dict()
