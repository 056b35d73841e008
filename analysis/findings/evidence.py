"""What a finding is judged on: the outcome of each claim, and the results every source reads.

A source (:mod:`analysis.findings.arms`, :mod:`analysis.findings.excitations`) evaluates against a
:class:`Context` (the results folder, the chosen preset, the ``senet analyze`` folder) and returns a
:class:`SourceResult`: one :class:`Outcome` per claim, or why it has not been run. pandas only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from senet.records.layout import study_paths
from senet.sequential import Design

from ..errors import AnalysisInputError
from ..study_results import completed, count_test_images, load_study, select_recipe

#: Half-width (points of top-1 error) of "performs alike" where no study declares its own (the
#: default design's δ: the size of the paper's differences between SE variants, r=32 vs r=16 0.44,
#: max vs avg squeeze 0.29, tanh vs sigmoid 0.72).
DELTA = Design().delta
#: Where an ``senet analyze`` folder of the best SE model is looked for, relative to the results
#: directory, when ``--analysis`` does not name one.
ANALYSIS_DIRS = ("analysis", "gate/analysis", "reference/se_resnet20/analysis")

AGREES, CONTRADICTS, NO_EFFECT, UNRESOLVED, NOT_RUN = (
    "agrees", "contradicts", "no effect ≥ δ here", "unresolved", "not run yet")
EXPECT_TEXT = {"lower": "Δ < 0", "higher": "Δ > 0", "alike": "|Δ| < δ"}


@dataclass
class Outcome:
    """One evaluated claim of a finding (one row of the details, one line of the table)."""

    comparison: str  # what was compared, e.g. "r=32 − r=16"
    expect: str  # the paper's claim about it, e.g. "Δ > 0"
    verdict: str
    reason: str = ""
    unit: str = "pp"
    effect: float = math.nan
    ci_low: float = math.nan  # the interval judged on: for arms, the anytime CS at level α/k
    ci_high: float = math.nan
    ci_method: str = ""
    n: int = 0
    n_label: str = "seed pairs"
    p: float = math.nan
    outcome: str = ""  # for arms: the sequence's outcome (senet.sequential)
    t_low: float = math.nan  # for arms: the fixed-n paired t 95% interval, descriptive only
    t_high: float = math.nan
    boot_low: float = math.nan  # for arms: the BCa bootstrap 95% interval, descriptive only
    boot_high: float = math.nan
    sd: float = math.nan
    rho: float = math.nan
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
            path = study_paths(self.results, name).runs_parquet
            if not path.is_file():
                self._studies[name] = f"no {self.rel(path)}"
            else:
                runs, meta = load_study(self.results, name)
                if self.preset is not None and "preset" in runs and not (runs["preset"].astype(str) == self.preset).any():
                    self._studies[name] = f"no trials of preset {self.preset!r} in {self.rel(path)}"
                else:
                    runs = select_recipe(runs, meta, preset=self.preset, where=self.rel(path))
                    self._studies[name] = (runs, meta, recipe_summary(name, runs, meta, self.results / name))
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


def recipe_summary(study: str, runs: pd.DataFrame, meta: dict, study_dir: Path | str = ".") -> dict:
    """The recipe behind a study's numbers, for the header: preset, data, model, epochs, sizes, seeds,
    the code commits that trained them."""
    ok = completed(runs)

    def vals(col, fmt=str):
        if col not in runs or runs[col].isna().all():
            return "–"
        return "/".join(fmt(v) for v in sorted(dict.fromkeys(runs[col].dropna())))

    ref = ok[ok["arm"] == meta.get("reference_arm")]
    params = float(ref["params"].dropna().iloc[0]) if "params" in ref and ref["params"].notna().any() else math.nan
    commits = sorted(dict.fromkeys(str(c)[:12] for c in runs.get("git_commit", pd.Series(dtype=str)).dropna()))
    dirty = "git_dirty" in runs and bool(runs["git_dirty"].fillna(False).astype(bool).any())
    num_test, _ = count_test_images(runs, study_dir)
    return {"study": study, "preset": vals("preset"), "data": vals("data.name"), "model": vals("model.name"),
            "epochs": vals("optim.epochs", lambda v: f"{v:g}" if isinstance(v, float) else str(v)),
            "train": vals("data.subset", lambda v: "all" if not v else f"{int(v):,}"),
            "num_test": num_test, "seeds": int(ok["seed"].nunique()) if len(ok) else 0,
            "trials": len(runs), "completed": len(ok), "params": params, "reference": meta.get("reference_arm"),
            "se_hidden": (widths(ref["se_hidden"].dropna().iloc[0]) if "se_hidden" in ref and ref["se_hidden"].notna().any()
                          else ""),
            "commits": ", ".join(commits) + (" (some with uncommitted changes)" if dirty else "") if commits else "–",
            **compute_spent(runs)}


def compute_spent(runs: pd.DataFrame) -> dict:
    """What the study's own trials cost (a row reused from another study, ``reused_from``, counts in
    that study): ``trial_hours``, their wall time summed (every trial that recorded one, completed
    or not); ``rate``, the median over the completed ones of training images × epochs / training
    time (img/s, evaluation included; NaN where unrecorded); ``kernels``, the same per way the bf16
    convolutions ran (:func:`kernels`)."""
    if "reused_from" in runs:
        runs = runs[runs["reused_from"].isna()]
    wall = pd.to_numeric(runs.get("wall_time_s", pd.Series(dtype=float)), errors="coerce")
    return {"trial_hours": float(wall.sum()) / 3600 if wall.notna().any() else math.nan,
            "rate": _rate(completed(runs)), "kernels": kernels(runs)}


def _rate(ok: pd.DataFrame) -> float:
    if not {"data.subset", "epochs_run", "train_time_s"} <= set(ok.columns):
        return math.nan
    imgs = pd.to_numeric(ok["data.subset"], errors="coerce") * pd.to_numeric(ok["epochs_run"], errors="coerce")
    r = (imgs / pd.to_numeric(ok["train_time_s"], errors="coerce")).dropna()
    r = r[r > 0]
    return float(r.median()) if len(r) else math.nan


def kernels(runs: pd.DataFrame) -> str:
    """How the trials' bf16 convolutions ran (``bf16_kernels``: ``native``, or ``fp32`` ones on bf16
    values on a CPU without native bf16), with the median img/s of each kind's completed trials:
    ``"fp32 13 (240 img/s), native 3 (410 img/s)"`` over every trial; trials that recorded none (a
    table from before the column) count as ``unrecorded``."""
    if not len(runs):
        return ""
    kind = runs.get("bf16_kernels", pd.Series(None, index=runs.index, dtype=object)).fillna("unrecorded")
    ok = completed(runs)
    parts = []
    for k in sorted(kind.unique()):
        rate = _rate(ok[kind.loc[ok.index] == k])
        parts.append(f"{k} {int((kind == k).sum())}" + (f" ({rate:,.0f} img/s)" if math.isfinite(rate) else ""))
    return ", ".join(parts)


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
