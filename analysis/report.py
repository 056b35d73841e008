"""Ablation reports: paper-style tables, confidence intervals and figures from ``runs.parquet``.

A study's sweep writes ``<results>/<study>/runs.parquet`` (one row per trial) and ``study.json``
(its arms, the reference arm and the paper's ImageNet numbers, e.g. Table 12 for the gate study).
:func:`write_report` turns them into ``report.md`` with:

- the table the paper prints (arm, top-1 / top-5 error as mean ± std over seeds, n, params, FLOPs,
  Δ against the reference arm) with the paper's figure alongside, in Markdown and LaTeX;
- paired-by-seed bootstrap confidence intervals of each arm's difference from the reference arm and
  a verdict (better / worse / inconclusive), so one lucky seed does not decide a comparison;
- point plots with 95% confidence intervals and error EDFs per arm (as pycls draws them).

Only completed trials enter the statistics; diverged and errored ones are counted and shown.
Rendering only: pandas, numpy, matplotlib and seaborn.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import figures as F
from .stats import t_quantile
from .style import label, save

METRICS = ("test_top1_err", "test_top5_err")


def load_study(results: str | Path, study: str) -> tuple[pd.DataFrame, dict]:
    """Read ``<results>/<study>/runs.parquet`` and ``study.json`` (missing meta -> derived)."""
    d = Path(results) / study
    runs_path = d / "runs.parquet"
    if not runs_path.is_file():
        have = sorted(p.parent.name for p in Path(results).glob("*/runs.parquet")) if Path(results).is_dir() else []
        hint = f"; studies with results: {', '.join(have)}" if have else "; run `senet collect STUDY` first"
        raise FileNotFoundError(f"no results for study {study!r}: {runs_path} not found{hint}")
    runs = pd.read_parquet(runs_path)
    missing = {"arm", "status", "test_top1_err"} - set(runs.columns)
    if missing:
        raise ValueError(f"{runs_path} lacks the columns {sorted(missing)}")
    meta_path = d / "study.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
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


def paired_bootstrap(runs: pd.DataFrame, meta: dict, metric: str = "test_top1_err", *,
                     n_boot: int = 10000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Each arm's difference from the reference arm, paired by seed (arm − reference, in points).

    Only seeds completed by both arms pair up. The CI is the percentile interval of the mean
    difference over ``n_boot`` resamples of the pairs. With a handful of seeds that interval is far
    too narrow (two pairs give only three possible resampled means), so a Student-t interval of the
    mean paired difference is computed beside it. Verdict (for an error metric): ``better`` if both
    intervals lie below 0, ``worse`` if both lie above, else ``inconclusive`` (always with < 2 pairs).
    """
    ok = completed(runs).dropna(subset=[metric])
    ref = meta.get("reference_arm")
    base = ok[ok["arm"] == ref].groupby("seed")[metric].mean()
    rng = np.random.default_rng(seed)
    rows = []
    for arm in arm_order(runs, meta):
        if arm == ref:
            continue
        a = ok[ok["arm"] == arm].groupby("seed")[metric].mean()
        seeds = sorted(set(a.index) & set(base.index))
        d = (a.loc[seeds] - base.loc[seeds]).to_numpy(dtype=float)
        row = {"arm": arm, "reference": ref, "metric": metric, "pairs": len(d),
               "mean_diff": float(d.mean()) if len(d) else np.nan, "ci_low": np.nan, "ci_high": np.nan,
               "t_low": np.nan, "t_high": np.nan}
        if len(d) >= 2:
            idx = rng.integers(0, len(d), size=(n_boot, len(d)))
            boots = d[idx].mean(1)
            lo, hi = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
            half = t_quantile(1 - (1 - level) / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
            t_lo, t_hi = d.mean() - half, d.mean() + half
            row.update(ci_low=float(lo), ci_high=float(hi), t_low=float(t_lo), t_high=float(t_hi))
            row["verdict"] = ("better" if max(hi, t_hi) < 0 else "worse" if min(lo, t_lo) > 0
                              else "inconclusive")
        else:
            row["verdict"] = "inconclusive"
        rows.append(row)
    return pd.DataFrame(rows, columns=["arm", "reference", "metric", "pairs", "mean_diff", "ci_low",
                                       "ci_high", "t_low", "t_high", "verdict"])


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


def bootstrap_rows(b: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    header = ["arm", "vs", "pairs", "mean Δ (pp)", "bootstrap 95% CI", "t 95% CI", "verdict"]

    def ci(lo, hi):
        return "–" if np.isnan(lo) else f"[{lo:+.2f}, {hi:+.2f}]"

    rows = [[r.arm, r.reference, str(r.pairs), _signed(r.mean_diff), ci(r.ci_low, r.ci_high),
             ci(r.t_low, r.t_high), r.verdict] for r in b.itertuples(index=False)]
    return header, rows


def write_report(results: str | Path, study: str, *, n_boot: int = 10000) -> Path:
    """Write ``<results>/<study>/report.md`` with its tables (``table.md``, ``table.tex``,
    ``bootstrap_*.md``) and figures (``figures/*.png`` and ``.pdf``); returns the report's path."""
    runs, meta = load_study(results, study)
    d = Path(results) / study
    figdir = d / "figures"
    t = summary_table(runs, meta)
    rows = table_rows(t)
    caption = meta.get("title", study) + (f" (cf. paper {meta['paper_table']})" if meta.get("paper_table") else "")
    (d / "table.md").write_text(markdown(HEADER, rows))
    (d / "table.tex").write_text(latex(HEADER, rows, caption))
    arms = [a for a in arm_order(runs, meta) if (completed(runs)["arm"] == a).any()]
    ok = completed(runs)
    parts = [f"# {meta.get('title', study)}", ""]
    if meta.get("paper_table"):
        parts.append(f"Reproduces paper {meta['paper_table']}; scientific axis: "
                     f"`{meta.get('axis', '?')}`; reference arm: `{meta['reference_arm']}`.")
    bad = {k: int(v) for k, v in runs["status"].value_counts().items() if k != "completed"}
    parts += [f"{len(runs)} trials: {len(ok)} completed"
              + (f", {sum(bad.values())} not ({', '.join(f'{k}: {v}' for k, v in bad.items())})" if bad else "")
              + "; only completed trials enter the statistics."
              + (f" Preset `{meta['preset']}`." if meta.get("preset") else ""), "",
              "## Results", "", f"Test error in %, mean ± std over seeds. {caption}. The paper's numbers "
              "are ImageNet (ResNet-50), shown for the direction and size of each effect.", "",
              markdown(HEADER, rows), "LaTeX: [table.tex](table.tex)", ""]
    parts += ["## Differences from the reference arm (paired by seed: bootstrap and Student-t 95% CIs)", ""]
    for m in METRICS:
        if m not in runs:
            continue
        b = paired_bootstrap(runs, meta, m, n_boot=n_boot)
        hdr, brow = bootstrap_rows(b)
        (d / f"bootstrap_{m}.md").write_text(markdown(hdr, brow))
        parts += [f"**{label(m)}** (negative = lower error than `{meta['reference_arm']}`)", "",
                  markdown(hdr, brow)]
    if len(ok) and arms:
        metrics = [m for m in METRICS if m in ok and ok[m].notna().any()]
        save(F.point_plot(ok, arms, metrics, title=meta.get("title", study)), figdir / "pointplot")
        parts += ["## Figures", "", "Mean and 95% CI per arm; dots are single runs.", "",
                  "![point plot](figures/pointplot.png)", ""]
        for m in metrics:
            save(F.error_edf(ok, arms, m), figdir / f"edf_{m}")
            parts += [f"![EDF of {label(m)}](figures/edf_{m}.png)", ""]
    out = d / "report.md"
    out.write_text("\n".join(parts))
    return out


def best_checkpoint(results: str | Path, study: str) -> tuple[str, dict]:
    """The checkpoint of the completed trial with SE and the lowest final test top-1 error."""
    runs, _ = load_study(results, study)
    ok = runs[runs["status"] == "completed"]
    if "se.stages" in ok.columns:
        ok = ok[ok["se.stages"].astype(str) != "none"]
    if "checkpoint" in ok.columns:
        ok = ok[ok["checkpoint"].notna()]
    if ok.empty:
        raise ValueError(f"study {study!r} has no completed SE trial with a checkpoint")
    row = ok.sort_values("test_top1_err").iloc[0].to_dict()
    return str(row["checkpoint"]), row
