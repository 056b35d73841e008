"""The excitation findings (paper §7.2): over several trained networks (``senet analyze-seeds``),
else from an ``senet analyze`` folder of one.

- :class:`SeedSelectivityDepth`, :class:`SeedStageRemoval`: one number per network (ρ, Δ), judged on
  the anytime-valid confidence sequence over the seeds.
- :class:`SelectivityDepth`: Spearman's ρ between block depth and class selectivity η² over the
  analysed blocks, with an exact permutation p-value.
- :class:`StageRemoval`: the error change when the last stage's SE blocks are removed (``mean``
  mode of the analysis' removal table), with an interval over the paired test images.

The one-network pair keeps fixed-sample tests (no seeds to add). What any of them cannot decide is
``unresolved``, the arms' word, so the findings speak one vocabulary.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from senet.sequential import Design, seeds_to_settle

from ..compare import study_design
from ..errors import AnalysisInputError
from ..seeds_render import last_stage_removal, over_seeds, per_seed_rho
from ..stats import ALPHA, POWER
from .evidence import AGREES, CONTRADICTS, DELTA, UNRESOLVED, Context, Outcome, SourceResult


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
        if np.mean(null >= v - 1e-9) <= ALPHA:
            crit = float(v)
        else:
            break
    return float(res.statistic), float(res.pvalue), crit


class AnalysisSource:
    """A source that reads one table of the ``senet analyze`` folder (:meth:`Context.analysis_table`)
    and judges it; not run while no analysis has written the table."""

    filename: str

    def label(self) -> str:
        return "analysis"

    def columns(self) -> set[str]:
        """The columns the table must have."""
        raise NotImplementedError

    def judge(self, table: pd.DataFrame, src: str) -> SourceResult:
        raise NotImplementedError

    def evaluate(self, ctx: Context) -> SourceResult:
        table, src = ctx.analysis_table(self.filename, self.columns())
        if table is None:
            return SourceResult("analysis", missing=src)
        return self.judge(table, src)


@dataclass(frozen=True)
class SelectivityDepth(AnalysisSource):
    """Class selectivity (η² per block, ``selectivity.csv`` of ``senet analyze``) against depth."""

    filename: str = "selectivity.csv"

    def columns(self) -> set[str]:
        return {"block", "depth", "eta2"}

    def judge(self, sel: pd.DataFrame, src: str) -> SourceResult:
        sel = sel.dropna(subset=["eta2"]).sort_values("depth")
        n = len(sel)
        comp = "ρ(depth, η²) over " + (", ".join(sel["block"]) if n <= 12 else f"{n} blocks")
        o = Outcome(comp, "ρ > 0", "", unit="ρ", n=n, n_label="blocks",
                    notes=f"{src}: η² " + ", ".join(f"{b} {e:.3f}" for b, e in zip(sel["block"], sel["eta2"], strict=True)))
        if n < 3:
            o.verdict, o.reason = UNRESOLVED, f"{n} block(s) with a defined η²; a trend needs ≥ 3"
            return SourceResult(src, [o])
        o.effect, o.p, crit = _exact_spearman(sel["depth"].to_numpy(float), sel["eta2"].to_numpy(float))
        if n > 3 and abs(o.effect) < 1:  # Bonett & Wright's standard error of atanh(ρ) for Spearman
            se = math.sqrt((1 + o.effect ** 2 / 2) / (n - 3))
            z = math.atanh(o.effect)
            o.ci_low, o.ci_high = math.tanh(z - 1.96 * se), math.tanh(z + 1.96 * se)
            o.ci_method = "Fisher z (Bonett-Wright)"
        if o.p <= ALPHA:
            o.verdict = AGREES if o.effect > 0 else CONTRADICTS
            o.reason = f"permutation p = {o.p:.2g} ≤ {ALPHA:g}"
        else:
            o.verdict, o.reason = UNRESOLVED, f"permutation p = {o.p:.2g} > {ALPHA:g}"
        o.power = (f"with {n} blocks |ρ| ≥ {crit:.2f} is significant at 5%" if math.isfinite(crit)
                   else f"with {n} blocks no ordering is significant at 5%: analyse more blocks (--blocks all)")
        return SourceResult(src, [o])


@dataclass(frozen=True)
class StageRemoval(AnalysisSource):
    """Δ top-1 error when the last stage's SE blocks are removed (``removal.parquet`` of ``senet
    analyze``; ``mode`` ``mean``: gates fixed at their mean excitation). Agrees when the 95% interval's
    upper end is ≤ ``delta`` (the cost is small), contradicts when its lower end is above it.

    The interval is over the test images, paired (both errors are of one network on the same images):
    with the counts of images the removal makes wrong (b) and right (c), Var(Δ) = ((b + c)/N − Δ²)/N.
    A table without those counts gets the bound b + c ≤ (e₀ + e₁)·N, a wider interval, labelled so."""

    mode: str = "mean"
    delta: float = DELTA
    filename: str = "removal.parquet"

    def columns(self) -> set[str]:
        return {"removed", "n", f"top1_err_{self.mode}", f"delta_top1_{self.mode}"}

    def judge(self, t: pd.DataFrame, src: str) -> SourceResult:
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
        z = sps.norm.ppf(1 - ALPHA / 2)
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
            o.verdict, o.reason = UNRESOLVED, f"95% CI reaches beyond {self.delta:g} pp"
        mde = (z + sps.norm.ppf(POWER)) * se
        o.mde = mde
        o.power = f"N = {n:,} images: ±{z * se:.2f} pp; detects ≥ {mde:.2f} pp"
        return SourceResult(src, [o])


@dataclass(frozen=True)
class SeedsSource:
    """A source that reads one table of ``senet analyze-seeds`` (``<study>/seeds/``): one number per
    trained network, judged on their anytime-valid confidence sequence over the seeds
    (:func:`analysis.seeds_render.over_seeds`, the study's design, α for the finding's one claim), so
    the verdict stays valid as networks are added; none before the design's first seeds."""

    study: str = "gate"
    folder: str = "seeds"

    def label(self) -> str:
        return "seeds"

    def table(self, ctx: Context, filename: str, need: set[str]) -> tuple[pd.DataFrame | None, str, Design]:
        from senet.sequential import design_of

        d = ctx.results / self.study / self.folder
        path = d / filename
        got = ctx.study(self.study)
        design = study_design(got[1], got[0])[0] if not isinstance(got, str) else design_of({}, ctx.preset or "")[0]
        if not path.is_file():
            return None, (f"no {ctx.rel(path)} (`senet analyze-seeds {self.study}` writes it from the kept "
                          "weights)"), design
        t = pd.read_csv(path)
        if not need <= set(t.columns):
            raise AnalysisInputError(f"{path} lacks the columns {sorted(need - set(t.columns))}")
        return t, ctx.rel(d), design

    @staticmethod
    def settle(r: dict, design: Design, target: float) -> str:
        more = seeds_to_settle(r["n"], r["mean"] - target, r["sd"], r["level"], design.g, 0.0)
        return f"; ≈ {more} more seeds would settle it" if more is not None else ""

    @staticmethod
    def cs(r: dict, unit: str = "") -> str:
        if not math.isfinite(r["low"]):
            return "(−∞, ∞)"
        return f"[{r['low']:+.2f}, {r['high']:+.2f}]{unit}"


@dataclass(frozen=True)
class SeedSelectivityDepth(SeedsSource):
    """Class selectivity against depth over seeds: each network's Spearman ρ(depth, η²) over its SE
    blocks; agrees when the sequence of the mean ρ lies above 0, contradicts when below."""

    def evaluate(self, ctx: Context) -> SourceResult:
        sel, src, design = self.table(ctx, "selectivity.csv", {"seed", "block", "depth", "eta2"})
        if sel is None:
            return SourceResult("seeds", missing=src)
        rho = per_seed_rho(sel)
        r = over_seeds(rho["rho"], design)
        blocks = sel.drop_duplicates("block").sort_values("depth")["block"]
        o = Outcome(f"mean over seeds of ρ(depth, η²) over {len(blocks)} SE blocks", "ρ > 0", "", unit="ρ",
                    effect=r["mean"], ci_low=r["low"], ci_high=r["high"], n=r["n"], n_label="networks (seeds)",
                    ci_method=f"anytime t-CS over seeds ({100 * (1 - r['level']):.4g}%)", sd=r["sd"],
                    notes=f"{src}: ρ per seed " + ", ".join(f"{s} {v:+.2f}" for s, v in zip(rho["seed"], rho["rho"], strict=True)))
        if r["n"] < design.min_seeds:
            o.verdict, o.reason = UNRESOLVED, f"{r['n']} networks; no reading before {design.min_seeds}"
        elif r["low"] > 0:
            o.verdict, o.reason = AGREES, "the sequence lies above 0"
        elif r["high"] < 0:
            o.verdict, o.reason = CONTRADICTS, "the sequence lies below 0"
        else:
            o.verdict, o.reason = UNRESOLVED, f"ρ̄ ∈ {self.cs(r)}{self.settle(r, design, 0.0)}"
        o.power = f"σ̂ of ρ over seeds {r['sd']:.2f} ({r['n']} networks)" if math.isfinite(r["sd"]) else ""
        return SourceResult(src, [o])


@dataclass(frozen=True)
class SeedStageRemoval(SeedsSource):
    """The last stage's SE removed (gates fixed at their mean) over seeds: each network's Δ top-1
    error on its test images; agrees when the sequence of the mean Δ lies below δ, contradicts when
    above it."""

    mode: str = "mean"
    delta: float = DELTA

    def evaluate(self, ctx: Context) -> SourceResult:
        rem, src, design = self.table(ctx, "removal.csv", {"seed", "removed", "n", f"delta_top1_{self.mode}"})
        if rem is None:
            return SourceResult("seeds", missing=src)
        per = last_stage_removal(rem, self.mode)
        if per.empty:
            return SourceResult(src, missing=f"{src}/removal.csv has no per-stage removal rows")
        r = over_seeds(per["delta"], design)
        last = per["removed"].iloc[0]
        o = Outcome(f"{last} SE removed ({self.mode}) − intact, mean over seeds", f"Δ ≤ {self.delta:g} pp", "",
                    effect=r["mean"], ci_low=r["low"], ci_high=r["high"], n=r["n"], n_label="networks (seeds)",
                    ci_method=f"anytime t-CS over seeds ({100 * (1 - r['level']):.4g}%)", sd=r["sd"],
                    notes=f"{src}: Δ per seed " + ", ".join(f"{s} {v:+.2f}" for s, v in zip(per["seed"], per["delta"], strict=True)))
        if per["added_params_pct"].notna().any():
            o.notes += (f"; SE's added parameters {per['added_params_pct_intact'].mean():.1f}% → "
                        f"{per['added_params_pct'].mean():.1f}% of the plain network")
        if r["n"] < design.min_seeds:
            o.verdict, o.reason = UNRESOLVED, f"{r['n']} networks; no reading before {design.min_seeds}"
        elif r["high"] <= self.delta:
            o.verdict, o.reason = AGREES, f"the sequence lies below {self.delta:g} pp"
        elif r["low"] > self.delta:
            o.verdict, o.reason = CONTRADICTS, f"the sequence lies above {self.delta:g} pp: removal costs more"
        else:
            o.verdict, o.reason = UNRESOLVED, f"Δ̄ ∈ {self.cs(r)}{self.settle(r, design, self.delta)}"
        o.power = f"σ̂ of Δ over seeds {r['sd']:.2f} pp ({r['n']} networks)" if math.isfinite(r["sd"]) else ""
        return SourceResult(src, [o])
