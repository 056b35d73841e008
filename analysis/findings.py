"""The findings table: the paper's claims set against what the committed results measure.

``senet findings`` reads ``<results>/<study>/runs.parquet`` of every ablation study (and an
``senet analyze`` folder for the excitation findings) and writes ``results/README.md``: one row per
finding of the paper with our measured effect, its 95% interval, n, a verdict and the power of the
design. Nothing in it is typed by hand; re-running the command on the same files gives the same text.

A finding is a declarative entry of :data:`FINDINGS` (:func:`register_finding`): a statement, the
paper's numbers, and one or more *sources*, alternatives tried in order (the first that has been run
is used). A source is a small frozen dataclass with an ``evaluate(ctx)`` method:

- :class:`ArmClaims`: comparisons of arms of one study, each "lower", "higher" or "alike" (error of
  ``arm`` − error of ``vs``, in points). Directional claims use the reports' rules
  (:func:`analysis.report.compare_arms`): paired by seed, paired t-test, Holm's step-down over the
  directional claims of the finding, no verdict below 3 pairs, a difference below one test image
  never a difference, and from 6 pairs on the BCa bootstrap interval must agree. An "alike" claim
  is an equivalence test: agreement needs the 95% interval of the difference inside ±δ, with δ
  stated in the entry (default :data:`DELTA`); a conjunction of such claims needs each to hold (an
  intersection-union test, which needs no multiplicity correction).
- :class:`SelectivityDepth`: Spearman's ρ between block depth and class selectivity η² over the
  analysed blocks, with an exact permutation p-value.
- :class:`StageRemoval`: the error change when the last stage's SE blocks are removed (``mean``
  mode of the analysis' removal table), with an interval over the paired test images.

A finding agrees when all its claims agree, contradicts when any claim contradicts, and is
inconclusive otherwise (or has no verdict, or has not been run). Rendering only: pandas, numpy,
scipy; no torch.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from . import report as R
from . import stats as S
from .errors import AnalysisInputError

#: Half-width (points of top-1 error) of "performs alike": the size of the paper's differences
#: between SE variants (see :data:`analysis.report.DEFAULT_EFFECT`).
DELTA = R.DEFAULT_EFFECT
#: Where an ``senet analyze`` folder of the best SE model is looked for, relative to the results
#: directory, when ``--analysis`` does not name one.
ANALYSIS_DIRS = ("analysis", "gate/analysis", "reference/se_resnet20/analysis")

AGREES, CONTRADICTS, INCONCLUSIVE, NO_VERDICT, NOT_RUN = (
    "agrees", "contradicts", "inconclusive", "no verdict", "not run yet")
EXPECT_TEXT = {"lower": "Δ < 0", "higher": "Δ > 0", "alike": "|Δ| < δ"}


# ---------------------------------------------------------------------------------------------
# Results of one claim, and the context every source reads from
# ---------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """One evaluated claim of a finding (one row of the details, one line of the table)."""

    comparison: str  # what was compared, e.g. "r=32 − r=16"
    expect: str  # the paper's claim about it, e.g. "Δ > 0"
    verdict: str
    reason: str = ""
    unit: str = "pp"
    effect: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    ci_method: str = ""
    n: int = 0
    n_label: str = "seed pairs"
    p: float = math.nan
    p_holm: float = math.nan
    boot_low: float = math.nan
    boot_high: float = math.nan
    sd: float = math.nan
    mde: float = math.nan
    power: str = ""
    notes: str = ""


@dataclass
class SourceResult:
    """What one source gave: its outcomes, or why it has not been run (``missing``)."""

    source: str
    outcomes: list[Outcome] = field(default_factory=list)
    missing: str = ""
    recipe: dict | None = None  # the study's recipe, for the header


@dataclass
class Context:
    results: Path
    preset: str | None = None
    analysis: Path | None = None
    metric: str = "test_top1_err"
    n_boot: int = 10000
    _studies: dict = field(default_factory=dict)

    def study(self, name: str):
        """(completed-and-all rows of one recipe, meta, recipe summary), or the reason it is absent."""
        if name not in self._studies:
            path = self.results / name / "runs.parquet"
            if not path.is_file():
                self._studies[name] = f"no {self.rel(path)}"
            else:
                runs, meta = R.load_study(self.results, name)
                if self.preset is not None and "preset" in runs and not (runs["preset"].astype(str) == self.preset).any():
                    self._studies[name] = f"no trials of preset {self.preset!r} in {self.rel(path)}"
                else:
                    runs = R.select_recipe(runs, meta, preset=self.preset, where=self.rel(path))
                    self._studies[name] = (runs, meta, recipe_summary(name, runs, meta))
        return self._studies[name]

    def rel(self, path: Path) -> str:
        """``path`` as the output names it: relative to the results directory where it lies inside
        (so the text does not depend on where the checkout is)."""
        try:
            return (Path(self.results.name) / Path(path).relative_to(self.results)).as_posix()
        except ValueError:
            return str(path)

    def analysis_dir(self, filename: str) -> tuple[Path | None, str]:
        """The analysis folder holding ``filename``: ``--analysis`` or the first of
        :data:`ANALYSIS_DIRS` that has it; else (None, why)."""
        dirs = [self.analysis] if self.analysis is not None else [self.results / d for d in ANALYSIS_DIRS]
        for d in dirs:
            if (d / filename).is_file():
                return d, ""
        return None, (f"no {filename} in {' or '.join(self.rel(d) for d in dirs)} (`senet analyze --best gate "
                      "--out results/gate/analysis` writes one)")

    def analysis_table(self, filename: str, need: set[str]) -> tuple[pd.DataFrame | None, str]:
        """``filename`` (CSV or Parquet) of the analysis folder and where it came from; (None, why)
        when no analysis wrote it. A table without the ``need`` columns is refused."""
        d, why = self.analysis_dir(filename)
        if d is None:
            return None, why
        path = d / filename
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        if not need <= set(table.columns):
            raise AnalysisInputError(f"{path} lacks the columns {sorted(need - set(table.columns))}")
        return table, self.rel(d)


def recipe_summary(study: str, runs: pd.DataFrame, meta: dict) -> dict:
    """The recipe behind a study's numbers, for the header: preset, data, model, epochs, sizes, seeds,
    the code commits that trained them."""
    ok = R.completed(runs)

    def vals(col, fmt=str):
        if col not in runs or runs[col].isna().all():
            return "–"
        return "/".join(fmt(v) for v in sorted(dict.fromkeys(runs[col].dropna())))

    ref = ok[ok["arm"] == meta.get("reference_arm")]
    params = float(ref["params"].dropna().iloc[0]) if "params" in ref and ref["params"].notna().any() else math.nan
    commits = sorted(dict.fromkeys(str(c)[:12] for c in runs.get("git_commit", pd.Series(dtype=str)).dropna()))
    dirty = "git_dirty" in runs and bool(runs["git_dirty"].fillna(False).astype(bool).any())
    num_test, _ = R.test_set_size(runs)
    return {"study": study, "preset": vals("preset"), "data": vals("data.name"), "model": vals("model.name"),
            "epochs": vals("optim.epochs", lambda v: f"{v:g}" if isinstance(v, float) else str(v)),
            "train": vals("data.subset", lambda v: "all" if not v else f"{int(v):,}"),
            "num_test": num_test, "seeds": int(ok["seed"].nunique()) if len(ok) else 0,
            "trials": len(runs), "completed": len(ok), "params": params, "reference": meta.get("reference_arm"),
            "se_hidden": (widths(ref["se_hidden"].dropna().iloc[0]) if "se_hidden" in ref and ref["se_hidden"].notna().any()
                          else ""),
            "commits": ", ".join(commits) + (" (some with uncommitted changes)" if dirty else "") if commits else "–"}


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    """``arm`` against ``vs`` (Δ = error of arm − error of vs): ``lower``, ``higher`` or ``alike``.
    ``arm`` may be a glob (``stage*``), which makes one claim per matching arm of the study."""

    arm: str
    vs: str
    expect: str

    def __post_init__(self):
        if self.expect not in EXPECT_TEXT:
            raise ValueError(f"expect must be one of {sorted(EXPECT_TEXT)}, got {self.expect!r}")


def lower(arm: str, vs: str) -> Claim:
    return Claim(arm, vs, "lower")


def higher(arm: str, vs: str) -> Claim:
    return Claim(arm, vs, "higher")


def alike(arm: str, vs: str) -> Claim:
    return Claim(arm, vs, "alike")


def _pairs(ok: pd.DataFrame, arm: str, vs: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``arm`` and ``vs`` on the seeds both completed, in seed order (as the reports pair)."""
    a = ok[ok["arm"] == arm].groupby("seed")[metric].mean()
    b = ok[ok["arm"] == vs].groupby("seed")[metric].mean()
    seeds = sorted(set(a.index) & set(b.index))
    return a.loc[seeds].to_numpy(float), b.loc[seeds].to_numpy(float)


def _seeds_text(sd: float, target: float) -> str:
    n = S.seeds_needed(sd, target)
    return "more than a million seeds" if n is None else f"{n} seeds"


@dataclass(frozen=True)
class ArmClaims:
    """Comparisons between arms of one study's ``runs.parquet`` (see the module docstring)."""

    study: str
    claims: tuple[Claim, ...]
    delta: float = DELTA  # half-width of "alike", points

    def label(self) -> str:
        return self.study

    def _expand(self, arms: list[str]) -> list[tuple[str, str, str]]:
        """The claims with glob patterns replaced by each matching arm (a pattern that matches
        nothing stays, to be reported as not run)."""
        def match(pat):
            if not any(ch in pat for ch in "*?["):
                return [pat]
            return [a for a in arms if fnmatch.fnmatchcase(a, pat)] or [pat]

        return [(a, v, c.expect) for c in self.claims for a in match(c.arm) for v in match(c.vs) if a != v]

    def evaluate(self, ctx: Context) -> SourceResult:
        got = ctx.study(self.study)
        if isinstance(got, str):
            return SourceResult(self.study, missing=got)
        runs, meta, recipe = got
        if ctx.metric not in runs:
            raise R.ReportInputError(f"{ctx.results / self.study / 'runs.parquet'} has no column {ctx.metric!r}")
        ok = R.completed(runs).dropna(subset=[ctx.metric])
        num_test, _ = R.test_set_size(runs)
        resolution = 100.0 / num_test if num_test else math.nan
        claims = self._expand(R.arm_order(runs, meta))
        rows, tests = [], []
        for arm, vs, expect in claims:
            comparison = f"{arm} − {vs}"
            absent = [x for x in (arm, vs) if not (ok["arm"] == x).any()]
            if absent:
                rows.append(Outcome(comparison, EXPECT_TEXT[expect], NOT_RUN,
                                    f"no completed trial of {', '.join(absent)} in {self.study}"))
                tests.append(None)
                continue
            a, r = _pairs(ok, arm, vs, ctx.metric)
            t = S.paired_test(a, r, n_boot=ctx.n_boot)
            rows.append(Outcome(comparison, EXPECT_TEXT[expect], "", effect=t["mean_diff"], ci_low=t["t_low"],
                                ci_high=t["t_high"], ci_method="paired t", n=t["pairs"], p=t["p"],
                                boot_low=t["ci_low"], boot_high=t["ci_high"], sd=t["sd_diff"],
                                notes=_hidden_note(ok, arm, vs)))
            tests.append((expect, t, a - r))
        if all(t is None for t in tests):
            return SourceResult(self.study, rows, missing="; ".join(o.reason for o in rows), recipe=recipe)
        directional = [i for i, t in enumerate(tests) if t is not None and t[0] != "alike"
                       and t[1]["pairs"] >= S.MIN_PAIRS and math.isfinite(t[1]["p"])]
        adjusted = S.holm([tests[i][1]["p"] for i in directional])
        for i, p in zip(directional, adjusted, strict=True):
            rows[i].p_holm = float(p)
        sd, df = S.pooled_sd(t[2] for t in tests if t is not None)
        for o, t in zip(rows, tests, strict=True):
            if t is None:
                continue
            expect, res, _ = t
            o.verdict, o.reason = (self._alike if expect == "alike" else self._directional)(
                o, res, expect, resolution)
            o.mde = S.min_detectable_effect(sd, o.n)
            o.power = self._power(o, sd, df, expect, resolution)
        return SourceResult(self.study, rows, recipe=recipe)

    def _directional(self, o: Outcome, t: dict, expect: str, resolution: float) -> tuple[str, str]:
        verdict, why = R._verdict({**t, "p_holm": o.p_holm}, resolution, S.ALPHA)
        if verdict in ("better", "worse"):
            right = (verdict == "better") == (expect == "lower")
            return (AGREES if right else CONTRADICTS), f"{verdict} than {o.comparison.split(' − ')[1]}; {why}"
        return verdict, why

    def _alike(self, o: Outcome, t: dict, expect: str, resolution: float) -> tuple[str, str]:
        d = self.delta
        if t["pairs"] < S.MIN_PAIRS:
            return NO_VERDICT, f"{t['pairs']} seed pair(s); a verdict needs ≥ {S.MIN_PAIRS}"
        if t["zero_spread"]:
            return NO_VERDICT, "every seed gave the same difference: no spread to test it against"
        inside = -d <= o.ci_low and o.ci_high <= d
        if inside and t["pairs"] >= S.BOOT_DECIDES_FROM and not (-d <= o.boot_low and o.boot_high <= d):
            return INCONCLUSIVE, f"t interval inside ±{d:g} pp but the bootstrap interval is not"
        if inside:
            return AGREES, f"95% CI inside ±{d:g} pp"
        if o.ci_low > d or o.ci_high < -d:
            return CONTRADICTS, f"95% CI beyond ±{d:g} pp: the arms differ by more than δ"
        return INCONCLUSIVE, f"95% CI reaches beyond ±{d:g} pp"

    def _power(self, o: Outcome, sd: float, df: int, expect: str, resolution: float) -> str:
        if not math.isfinite(o.mde):
            return "no spread estimate (fewer than 2 seed pairs)"
        base = f"σ_d {sd:.2f} pp ({df} df), n {o.n}: detects ≥ {o.mde:.2f} pp"
        if o.verdict in (AGREES, CONTRADICTS):
            return base
        target = self.delta if expect == "alike" else max(abs(o.effect), resolution if math.isfinite(resolution) else 0)
        what = f"±{self.delta:g} pp" if expect == "alike" else f"|Δ| = {target:.2f} pp"
        return f"{base}; {what} needs ≈ {_seeds_text(sd, target)}"


def widths(se_hidden: str) -> str:
    """``"SE_2_1:16/1,SE_2_2:16/1,SE_3_1:32/2"`` (what training records) -> ``"16→1, 32→2"``: each
    stage's channels → SE hidden units (blocks of a stage that differ are joined by "/"); other
    strings are returned as they are."""
    per: dict[str, list[str]] = {}
    for tok in str(se_hidden).split(","):
        name, _, ch = tok.strip().partition(":")
        parts = name.split("_")
        if len(parts) != 3 or "/" not in ch:
            return str(se_hidden)
        c, h = ch.split("/", 1)
        per.setdefault(parts[1], [])
        if f"{c}→{h}" not in per[parts[1]]:
            per[parts[1]].append(f"{c}→{h}")
    return ", ".join("/".join(v) for _, v in sorted(per.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0))


def _hidden_note(ok: pd.DataFrame, arm: str, vs: str) -> str:
    """The SE's effective hidden widths per stage of the two arms, where they are recorded and differ
    (at r = 16 a 16-channel stage has one hidden unit, so r = 16 and r = 32 may build the same block)."""
    if "se_hidden" not in ok:
        return ""
    w = {x: ok.loc[ok["arm"] == x, "se_hidden"].dropna().astype(str) for x in (arm, vs)}
    if any(v.empty for v in w.values()):
        return ""
    a, b = widths(w[arm].iloc[0]), widths(w[vs].iloc[0])
    return f"SE channels → hidden units per stage: {arm} {a or '–'}; {vs} {b or '–'}" if a != b else ""


def _exact_spearman(depth: np.ndarray, value: np.ndarray, n_resamples: int = 50000):
    """Spearman's ρ, its two-sided permutation p-value (exact when n! ≤ ``n_resamples``, else Monte
    Carlo with a fixed seed) and the smallest |ρ| significant at 5% with these n blocks (NaN when no
    ordering reaches it)."""
    rx = pd.Series(depth).rank().to_numpy(float)
    ry = pd.Series(value).rank().to_numpy(float)
    rx_c = rx - rx.mean()

    def rho(y, axis=-1):
        yc = y - y.mean(axis=axis, keepdims=True)
        den = np.sqrt((rx_c ** 2).sum() * (yc ** 2).sum(axis=axis))
        return np.where(den > 0, (yc * rx_c).sum(axis=axis) / np.where(den > 0, den, 1), 0.0)

    res = sps.permutation_test((ry,), rho, permutation_type="pairings", n_resamples=n_resamples,
                               vectorized=True, alternative="two-sided", rng=np.random.default_rng(0))
    null = np.sort(np.abs(np.asarray(res.null_distribution, float)))
    crit = math.nan
    for v in np.unique(np.round(null, 12))[::-1]:
        if np.mean(null >= v - 1e-9) <= S.ALPHA:
            crit = float(v)
        else:
            break
    return float(res.statistic), float(res.pvalue), crit


@dataclass(frozen=True)
class SelectivityDepth:
    """Class selectivity (η² per block, ``selectivity.csv`` of ``senet analyze``) against depth."""

    filename: str = "selectivity.csv"

    def label(self) -> str:
        return "analysis"

    def evaluate(self, ctx: Context) -> SourceResult:
        sel, src = ctx.analysis_table(self.filename, {"block", "depth", "eta2"})
        if sel is None:
            return SourceResult("analysis", missing=src)
        sel = sel.dropna(subset=["eta2"]).sort_values("depth")
        n = len(sel)
        comp = "ρ(depth, η²) over " + (", ".join(sel["block"]) if n <= 12 else f"{n} blocks")
        o = Outcome(comp, "ρ > 0", "", unit="ρ", n=n, n_label="blocks",
                    notes=f"{src}: η² " + ", ".join(f"{b} {e:.3f}" for b, e in zip(sel["block"], sel["eta2"], strict=True)))
        if n < 3:
            o.verdict, o.reason = NO_VERDICT, f"{n} block(s) with a defined η²; a trend needs ≥ 3"
            return SourceResult(src, [o])
        o.effect, o.p, crit = _exact_spearman(sel["depth"].to_numpy(float), sel["eta2"].to_numpy(float))
        if n > 3 and abs(o.effect) < 1:  # Bonett & Wright's standard error of atanh(ρ) for Spearman
            se = math.sqrt((1 + o.effect ** 2 / 2) / (n - 3))
            z = math.atanh(o.effect)
            o.ci_low, o.ci_high = math.tanh(z - 1.96 * se), math.tanh(z + 1.96 * se)
            o.ci_method = "Fisher z (Bonett-Wright)"
        if o.p <= S.ALPHA:
            o.verdict = AGREES if o.effect > 0 else CONTRADICTS
            o.reason = f"permutation p = {o.p:.2g} ≤ {S.ALPHA:g}"
        else:
            o.verdict, o.reason = INCONCLUSIVE, f"permutation p = {o.p:.2g} > {S.ALPHA:g}"
        o.power = (f"with {n} blocks |ρ| ≥ {crit:.2f} is significant at 5%" if math.isfinite(crit)
                   else f"with {n} blocks no ordering is significant at 5%: analyse more blocks (--blocks all)")
        return SourceResult(src, [o])


@dataclass(frozen=True)
class StageRemoval:
    """Δ top-1 error when the last stage's SE blocks are removed (``removal.parquet`` of ``senet
    analyze``; ``mode`` ``mean``: gates fixed at their mean excitation). Agrees when the 95% interval's
    upper end is ≤ ``delta`` (the cost is small), contradicts when its lower end is above it.

    The interval is over the test images, paired (both errors are of one network on the same images):
    with the counts of images the removal makes wrong (b) and right (c), Var(Δ) = ((b + c)/N − Δ²)/N.
    A table without those counts gets the bound b + c ≤ (e₀ + e₁)·N, a wider interval, labelled so."""

    mode: str = "mean"
    delta: float = DELTA
    filename: str = "removal.parquet"

    def label(self) -> str:
        return "analysis"

    def evaluate(self, ctx: Context) -> SourceResult:
        t, src = ctx.analysis_table(self.filename, {"removed", "n", f"top1_err_{self.mode}",
                                                    f"delta_top1_{self.mode}"})
        if t is None:
            return SourceResult("analysis", missing=src)
        stages = t[t["removed"].astype(str).str.match(r"^stage \d+$")]
        if stages.empty or not (t["removed"] == "none").any():
            return SourceResult(src, missing=f"{src}/{self.filename} has no per-stage removal rows")
        last = max(stages["removed"], key=lambda s: int(s.split()[1]))
        row, none = t[t["removed"] == last].iloc[0], t[t["removed"] == "none"].iloc[0]
        n = int(row["n"])
        delta = float(row[f"delta_top1_{self.mode}"])
        e0, e1 = float(none[f"top1_err_{self.mode}"]) / 100, float(row[f"top1_err_{self.mode}"]) / 100
        wrong, right = f"newly_wrong_{self.mode}", f"newly_right_{self.mode}"
        if {wrong, right} <= set(t.columns) and pd.notna(row[wrong]):
            discordant, method = (float(row[wrong]) + float(row[right])) / n, "paired images (McNemar)"
        else:
            discordant, method = min(e0 + e1, 1.0), "conservative bound (no per-image counts recorded)"
        se = 100 * math.sqrt(max(discordant - (delta / 100) ** 2, 0.0) / n)
        z = sps.norm.ppf(1 - S.ALPHA / 2)
        o = Outcome(f"{last} SE removed ({self.mode}) − intact", f"Δ ≤ {self.delta:g} pp", "", effect=delta,
                    ci_low=delta - z * se, ci_high=delta + z * se, ci_method=method, n=n, n_label="test images")
        if "added_params_pct" in t:
            o.notes = (f"{src}: SE's added parameters {float(none['added_params_pct']):.1f}% → "
                       f"{float(row['added_params_pct']):.1f}% of the plain network")
        if o.ci_high <= self.delta:
            o.verdict, o.reason = AGREES, f"95% CI upper end ≤ {self.delta:g} pp"
        elif o.ci_low > self.delta:
            o.verdict, o.reason = CONTRADICTS, f"95% CI lower end > {self.delta:g} pp: removal costs more"
        else:
            o.verdict, o.reason = INCONCLUSIVE, f"95% CI reaches beyond {self.delta:g} pp"
        mde = (z + sps.norm.ppf(S.POWER)) * se
        o.mde = mde
        o.power = f"N = {n:,} images: ±{z * se:.2f} pp; detects ≥ {mde:.2f} pp"
        return SourceResult(src, [o])


# ---------------------------------------------------------------------------------------------
# The registry of findings
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    key: str
    statement: str  # the paper's claim, as the table states it
    paper: str  # the paper's own numbers (ImageNet, ResNet-50)
    sources: tuple  # alternatives, tried in order: the first that has been run is used

    def evaluate(self, ctx: Context) -> tuple[SourceResult, list[SourceResult]]:
        """The source used and the ones skipped because they have not been run."""
        skipped = []
        for src in self.sources:
            res = src.evaluate(ctx)
            if not res.missing:
                return res, skipped
            skipped.append(res)
        return SourceResult(" or ".join(s.label() for s in self.sources),
                            missing="; ".join(f"{r.source}: {r.missing}" for r in skipped)), skipped


FINDINGS: dict[str, Finding] = {}


def register_finding(f: Finding) -> Finding:
    if f.key in FINDINGS:
        raise ValueError(f"finding {f.key!r} is already registered")
    FINDINGS[f.key] = f
    return f


register_finding(Finding(
    "se_beats_baseline", "SE beats the plain baseline",
    "Table 10: 22.28 vs 23.30 (−1.02)",
    (ArmClaims("reduction", (lower("r=16", "baseline"),)), ArmClaims("stages", (lower("all", "none"),)))))
register_finding(Finding(
    "reduction", "r from 2 to 16 perform alike; r = 32 is worse",
    "Table 10: r = 2, 4, 8 within 0.03 of r = 16; r = 32 +0.44",
    (ArmClaims("reduction", (alike("r=2", "r=16"), alike("r=4", "r=16"), alike("r=8", "r=16"),
                             higher("r=32", "r=16"))),)))
register_finding(Finding(
    "avg_beats_max", "avg squeeze beats max", "Table 11: 22.28 vs 22.57 (−0.29)",
    (ArmClaims("squeeze", (lower("avg", "max"),)),)))
register_finding(Finding(
    "nosqueeze_worse", "NoSqueeze is worse than avg", "Table 16: 22.93 vs 22.28 (+0.65)",
    (ArmClaims("squeeze", (higher("none", "avg"),)),)))
register_finding(Finding(
    "gate_order", "sigmoid beats tanh, which beats ReLU", "Table 12: 22.28 < 23.00 < 23.47",
    (ArmClaims("gate", (lower("sigmoid", "tanh"), lower("tanh", "relu"))),)))
register_finding(Finding(
    "placement", "SE-POST is the worst placement; PRE, Identity and standard are alike",
    "Tables 14, 15: POST 22.78; standard 22.28, PRE 22.23, Identity 22.20, inner 22.48",
    (ArmClaims("placement", (higher("post", "standard"), higher("post", "pre"), higher("post", "identity"),
                             higher("post", "inner"), alike("pre", "standard"), alike("identity", "standard"))),)))
register_finding(Finding(
    "stages", "SE in each stage alone helps; all stages together help most",
    "Table 13: stage 2/3/4 alone 23.03/23.04/22.68 vs 23.30 none; all 22.28",
    (ArmClaims("stages", (lower("stage*", "none"), lower("all", "stage*"))),)))
register_finding(Finding(
    "selectivity_depth", "class selectivity rises with depth",
    "§7.2, Fig. 6: early blocks class-agnostic, later ones class-specific (qualitative)",
    (SelectivityDepth(),)))
register_finding(Finding(
    "last_stage_removal", "the last stage's SE can be removed at little cost",
    "§7.2: < 0.1 top-1, added parameters ~10% → ~4%",
    (StageRemoval(),)))


# ---------------------------------------------------------------------------------------------
# Evaluating and rendering
# ---------------------------------------------------------------------------------------------
def combine(outcomes: list[Outcome]) -> tuple[str, str]:
    """A finding's verdict from its claims'."""
    v = [o.verdict for o in outcomes]
    if not v or all(x == NOT_RUN for x in v):
        return NOT_RUN, ""
    if len(outcomes) == 1:
        return v[0], outcomes[0].reason
    if CONTRADICTS in v:
        return CONTRADICTS, "contradicted by " + ", ".join(o.comparison for o in outcomes if o.verdict == CONTRADICTS)
    if all(x == AGREES for x in v):
        return AGREES, ""
    for level in (INCONCLUSIVE, NO_VERDICT):
        if level in v:
            return level, f"{v.count(level)} of {len(v)} comparisons {level}"
    return INCONCLUSIVE, f"{v.count(NOT_RUN)} of {len(v)} comparisons not run yet"


def evaluate(results: str | Path, *, preset: str | None = None, analysis: str | Path | None = None,
             metric: str = "test_top1_err", n_boot: int = 10000,
             findings: dict[str, Finding] | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """Every registered finding: (one row per claim, the recipes of the studies read)."""
    if n_boot < S.MIN_BOOT:
        raise AnalysisInputError(f"--n-boot must be >= {S.MIN_BOOT}, got {n_boot}")
    results = Path(results)
    if not results.is_dir():
        raise AnalysisInputError(f"results directory not found: {results}")
    if analysis is not None and not Path(analysis).is_dir():
        raise AnalysisInputError(f"analysis directory not found: {analysis}")
    ctx = Context(results, preset=preset, analysis=Path(analysis) if analysis is not None else None,
                  metric=metric, n_boot=n_boot)
    rows, recipes = [], {}
    for i, f in enumerate((findings or FINDINGS).values(), 1):
        used, _ = f.evaluate(ctx)
        if used.recipe:
            recipes[used.source] = used.recipe
        outcomes = used.outcomes or [Outcome("–", "", NOT_RUN, used.missing)]
        verdict, why = combine(outcomes)
        if verdict == NOT_RUN:
            why = used.missing or "; ".join(o.reason for o in outcomes)
        for o in outcomes:
            rows.append({"finding": i, "key": f.key, "statement": f.statement, "paper": f.paper,
                         "source": used.source, "finding_verdict": verdict, "finding_reason": why,
                         **{k: getattr(o, k) for k in Outcome.__dataclass_fields__}})
    return pd.DataFrame(rows), list(recipes.values())


def _ci(lo, hi, unit="pp") -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "–"
    return f"[{lo:+.2f}, {hi:+.2f}]" if unit == "pp" else f"[{lo:.2f}, {hi:.2f}]"


def _effect(v, unit="pp") -> str:
    if not math.isfinite(v):
        return "–"
    return f"{v:+.2f}" if unit == "pp" else f"{v:.2f}"


def _verdict_cell(v: str, n: int) -> str:
    if v == INCONCLUSIVE and n:
        return f"inconclusive at n = {n}"
    return v


def table(df: pd.DataFrame) -> str:
    """The headline table: one row per finding; multi-claim findings list each comparison in the cell."""
    header = ["#", "finding (paper)", "paper (ImageNet, ResNet-50)", "source", "comparison (Δ = error of first − second)",
              "our Δ", "95% CI", "n", "verdict", "power"]
    out = []
    for _, g in df.groupby("finding", sort=True):
        first = g.iloc[0]
        run = [r for r in g.itertuples(index=False) if r.verdict != NOT_RUN]
        join = lambda xs: "<br>".join(xs)  # noqa: E731
        n = min((r.n for r in run), default=0)
        verdict = _verdict_cell(first.finding_verdict, n)
        if first.finding_reason and first.finding_verdict != AGREES:
            verdict += f" ({first.finding_reason})"
        out.append([str(first.finding), first.statement, first.paper, first.source,
                    join([f"{r.comparison} ({r.expect})" if r.expect else r.comparison for r in g.itertuples()])
                    if run else "–",
                    join([_effect(r.effect, r.unit) for r in g.itertuples()]) if run else "–",
                    join([_ci(r.ci_low, r.ci_high, r.unit) for r in g.itertuples()]) if run else "–",
                    join([f"{r.n:,} {r.n_label}" if r.verdict != NOT_RUN else "–" for r in g.itertuples()]) if run else "–",
                    verdict, join(dict.fromkeys(r.power for r in run if r.power)) if run else "–"])
    return R.markdown(header, out)


def details(df: pd.DataFrame) -> list[str]:
    """One table per finding that has been run, one row per comparison."""
    header = ["comparison", "expected", "n", "Δ", "95% CI", "CI method", "bootstrap 95% CI", "p", "p (Holm)",
              "verdict", "why", "power"]
    parts = []
    for _, g in df.groupby("finding", sort=True):
        first = g.iloc[0]
        if (g["verdict"] == NOT_RUN).all():
            continue
        rows = [[r.comparison, r.expect, f"{r.n:,} {r.n_label}", _effect(r.effect, r.unit),
                 _ci(r.ci_low, r.ci_high, r.unit), r.ci_method or "–", _ci(r.boot_low, r.boot_high, r.unit),
                 R._num(r.p, "{:.3g}"), R._num(r.p_holm, "{:.3g}"), r.verdict, r.reason, r.power or "–"]
                for r in g.itertuples(index=False)]
        notes = list(dict.fromkeys(n for n in g["notes"] if n))
        parts += [f"### {first.finding}. {first.statement}", "",
                  f"Source: `{first.source}`. Verdict: **{first.finding_verdict}**"
                  + (f" ({first.finding_reason})" if first.finding_reason else "") + ".", "",
                  R.markdown(header, rows)]
        parts += [f"- {n}" for n in notes] + ([""] if notes else [])
    return parts


def _recipe_table(recipes: list[dict]) -> str:
    header = ["study", "preset", "dataset", "model", "epochs", "training images", "test images", "seeds",
              "trials (completed)", "params (ref. arm)", "SE channels → hidden (ref.)", "code commit(s)"]
    rows = [[r["study"], r["preset"], r["data"], r["model"], r["epochs"], r["train"],
             f"{r['num_test']:,}" if r["num_test"] else "–", str(r["seeds"]), f"{r['trials']} ({r['completed']})",
             R._human(r["params"]), r["se_hidden"] or "–", r["commits"]] for r in recipes]
    return R.markdown(header, rows)


def caveat(recipes: list[dict]) -> str:
    """Where this setting is not the paper's, plainly."""
    data = "/".join(dict.fromkeys(r["data"] for r in recipes)) or "Fashion-MNIST"
    models = "/".join(dict.fromkeys(r["model"] for r in recipes)) or "SE-ResNet-20"
    params = [r["params"] for r in recipes if math.isfinite(r["params"])]
    size = f"{min(params) / 1e6:.2f}" + (f"–{max(params) / 1e6:.2f}" if max(params) > min(params) * 1.01 else "") \
        if params else "0.27"
    hidden = "; ".join(dict.fromkeys(r["se_hidden"] for r in recipes if r["se_hidden"]))
    return (f"**This is not ImageNet and not ResNet-50.** The paper measured these effects on ImageNet "
            f"(1.28 M colour images of 1,000 classes at 224×224) with ResNet-50 (25.6 M parameters, "
            f"stage widths 256–2048). The numbers below come from {data} with {models} "
            f"({size} M parameters), a far smaller and easier problem: a few epochs on small grey images of "
            f"a handful of classes, and stages so narrow that the SE bottleneck holds only a few hidden units"
            + (f" (channels → hidden units per stage at the reference arm: {hidden})" if hidden else "")
            + ". The paper's differences between SE variants are 0.05–1 point of top-1 error; differences "
            "that small are at or below what a few seeds resolve here (see each row's power). `agrees` "
            "means the paper's direction (or equivalence) holds in this small setting, `contradicts` that "
            "it does not hold here; neither says what would happen on ImageNet.")


def render(df: pd.DataFrame, recipes: list[dict], results: Path, metric: str) -> str:
    studies = sorted(p.parent.name for p in results.glob("*/runs.parquet"))
    folders = sorted({p.parent for pat in ("*/report.md", "*/*/summary.md", "*/summary.md", "*/*/gates.md")
                      for p in results.glob(pat)})
    counts = df.drop_duplicates("finding")["finding_verdict"].value_counts()
    headline = ", ".join(f"{int(counts.get(v, 0))} {v}" for v in (AGREES, CONTRADICTS, INCONCLUSIVE, NO_VERDICT, NOT_RUN)
                         if counts.get(v, 0))
    method = (
        f"Effects are in points of {R.label(metric).replace(' (%)', '')} (Δ = error of the first arm − error of "
        f"the second; negative = the first is better), paired by seed: only seeds both arms completed pair up. "
        f"Directional claims: paired t-test, p Holm-adjusted over the directional comparisons of one finding "
        f"(family-wise 5%), no verdict below {S.MIN_PAIRS} pairs, a |Δ| below one test image never a difference, "
        f"and from {S.BOOT_DECIDES_FROM} pairs on the BCa bootstrap interval must exclude 0 too (the rules of "
        f"`senet report`). \"Alike\": the paired-t 95% interval must lie inside ±δ (δ = {DELTA:g} pp, the size of "
        "the paper's differences between SE variants); it contradicts when the interval lies wholly beyond ±δ. "
        "Power: σ_d is the standard deviation of the paired differences pooled over the finding's comparisons; "
        "the detectable difference is (t(0.975, n−1) + t(0.80, n−1)) · σ_d / √n. Excitation findings read an "
        "`senet analyze` folder of one trained network: selectivity by Spearman's ρ over the analysed blocks "
        "with an exact permutation p-value, removal by the paired change in error over the test images.")
    parts = [
        "# Findings: the paper's claims against our measurements", "",
        "Generated by `senet findings` from the committed `runs.parquet` of each study and the analysis "
        "folders; do not edit by hand (re-run the command). Paper: Hu et al., \"Squeeze-and-Excitation "
        "Networks\" (arXiv 1709.01507), §6 Tables 10-16 and §7.2.", "",
        caveat(recipes), "",
        f"**Headline:** {headline} (of {df['finding'].nunique()} findings).", "",
        "## Findings", "", table(df),
        "## Recipes", "",
        (_recipe_table(recipes) if recipes else "No study has been run yet (no `results/<study>/runs.parquet`)."), "",
        "## How the verdicts are made", "", method, "",
        "## Each finding's comparisons", "", *details(df),
        "## What is in this folder", "",
        *(f"- [`{p.relative_to(results)}/`]({p.relative_to(results)}/)" for p in folders),
        *([f"- studies with results: {', '.join(studies)}"] if studies else []), "",
    ]
    return "\n".join(parts)


def write_findings(results: str | Path = "results", out: str | Path | None = None, *, preset: str | None = None,
                   analysis: str | Path | None = None, metric: str = "test_top1_err", n_boot: int = 10000,
                   findings: dict[str, Finding] | None = None) -> tuple[Path, pd.DataFrame]:
    """Write the findings (``out``, default ``<results>/README.md``) and ``findings.csv`` beside it."""
    results = Path(results)
    df, recipes = evaluate(results, preset=preset, analysis=analysis, metric=metric, n_boot=n_boot,
                           findings=findings)
    out = Path(out) if out is not None else results / "README.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(df, recipes, results, metric))
    df.to_csv(out.with_name("findings.csv"), index=False)
    return out, df

