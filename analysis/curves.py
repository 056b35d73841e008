"""Training curves of one or more runs side by side (``senet curves``).

Each run directory written by ``senet train`` (or by a sweep trial) holds ``metrics.jsonl``, one JSON
object per epoch, and, once the run has ended, ``final.json``. :func:`load_history` turns a set of run
directories into one tidy table (a row per run and epoch), :func:`run_summary` into one row per run
(final error; the best epoch, chosen on validation error, and the test error there; status, wall
time, throughput). :func:`training_curves` draws the metrics against the epoch, one panel per metric
and one line per run, as the paper compares ResNet-50 with SE-ResNet-50 over training.

Only files are read: no checkpoint is loaded and torch is never imported.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from senet.records.layout import CONFIG_JSON, FINAL_JSON, METRICS_JSONL, read_json

from .errors import ReportInputError
from .style import apply, colors, label
from .tables import num

#: Panels drawn when the caller names none (those with no finite value in any run are left out).
DEFAULT_METRICS = ("train_loss", "val_top1_err", "test_top1_err")


def _run_dir(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file() and p.name == METRICS_JSONL:
        p = p.parent
    if not p.is_dir():
        raise ReportInputError(f"run directory not found: {path}")
    if not (p / METRICS_JSONL).is_file() and not (p / CONFIG_JSON).is_file():
        raise ReportInputError(f"no {METRICS_JSONL} in {path} (is it a `senet train --out` directory?)")
    return p  # a run that has written its config but no epoch yet: load_history skips it


def _read_metrics(path: Path) -> list[dict]:
    """The epochs of a run's metrics.jsonl. Unlike :func:`senet.records.layout.read_jsonl`, a damaged line
    other than the last is an error: the curves would silently miss an epoch."""
    lines = path.read_text().splitlines()
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines):  # a line cut short by a run killed while writing it
                break
            raise ReportInputError(f"{path}:{i} is not a JSON object") from None
    return rows


def _default_labels(dirs: list[Path]) -> list[str]:
    names = [d.name for d in dirs]
    if len(set(names)) == len(names):
        return names
    return [f"{d.parent.name}/{d.name}" for d in dirs]


def load_history(runs: list[str | Path], labels: list[str] | None = None) -> pd.DataFrame:
    """One row per run and epoch: ``run`` (its label), ``epoch`` and every logged metric.

    ``labels`` name the runs in the same order (default: the directory names). An epoch logged twice
    (a resumed run) keeps its last line. A run with no epoch logged yet (just started) is left out
    and named in ``attrs["skipped"]`` (label, reason); if no run has an epoch, that is an error.
    """
    if not runs:
        raise ReportInputError("no run directories given")
    dirs = [_run_dir(r) for r in runs]
    if labels is not None and len(labels) != len(dirs):
        raise ReportInputError(f"{len(labels)} labels for {len(dirs)} runs")
    labels = list(labels) if labels is not None else _default_labels(dirs)
    if len(set(labels)) != len(labels):
        raise ReportInputError(f"run labels must differ: {', '.join(labels)}")
    frames, kept, skipped = [], {}, []
    for d, name in zip(dirs, labels, strict=True):
        metrics = d / METRICS_JSONL
        rows = _read_metrics(metrics) if metrics.is_file() else []
        if not rows:
            skipped.append((name, f"{d} has no epoch logged yet"))
            continue
        f = pd.DataFrame(rows).drop_duplicates("epoch", keep="last").sort_values("epoch")
        f.insert(0, "run", name)
        frames.append(f)
        kept[name] = str(d)
    if not frames:
        raise ReportInputError("no run has an epoch logged yet: " + "; ".join(why for _, why in skipped))
    out = pd.concat(frames, ignore_index=True)
    out["run"] = pd.Categorical(out["run"], categories=list(kept), ordered=True)
    out.attrs["run_dirs"] = kept
    out.attrs["skipped"] = skipped
    return out


def _read_json(path: Path) -> dict:
    """A run's JSON file, or {} while it is missing or being written."""
    d = read_json(path, {})
    return d if isinstance(d, dict) else {}


def best_val_epoch(h: pd.DataFrame):
    """The row index of the epoch with the lowest validation top-1 error (the first, on ties), or
    None without a validation split. The test error is never used to choose: its minimum over epochs
    is an optimistically biased estimate."""
    if "val_top1_err" not in h:
        return None
    val = pd.to_numeric(h["val_top1_err"], errors="coerce")
    return val.idxmin() if val.notna().any() else None


def run_summary(history: pd.DataFrame) -> pd.DataFrame:
    """One row per run of a :func:`load_history` table: model, epochs, status, last test error,
    the best epoch by validation error with that validation error and the test error at that epoch
    (NaN/None without a validation split), wall time (from ``final.json``; the summed epoch times while
    the run is still going) and median images/s."""
    rows = []
    for name, h in history.groupby("run", observed=True, sort=True):
        d = Path(history.attrs["run_dirs"][name])
        fin = _read_json(d / FINAL_JSON)
        model = _read_json(d / CONFIG_JSON).get("model") or {}
        last = h.iloc[-1]
        best_i = best_val_epoch(h)
        wall = fin.get("wall_time_s")
        rows.append({
            "run": name,
            "model": model.get("name", ""),
            "epochs": int(last["epoch"]),
            "status": fin.get("status", last.get("status", "running")),
            "test_top1_err": float(last["test_top1_err"]) if pd.notna(last["test_top1_err"]) else math.nan,
            "test_top5_err": float(last["test_top5_err"]) if pd.notna(last["test_top5_err"]) else math.nan,
            "best_val_top1_err": float(h.loc[best_i, "val_top1_err"]) if best_i is not None else math.nan,
            "test_top1_err_at_best_val": (float(h.loc[best_i, "test_top1_err"]) if best_i is not None
                                          and pd.notna(h.loc[best_i, "test_top1_err"]) else math.nan),
            "best_epoch": int(h.loc[best_i, "epoch"]) if best_i is not None else None,
            "wall_time_s": float(wall) if wall is not None else float(h["epoch_time_s"].sum()),
            "images_per_s": float(np.nanmedian(h["images_per_s"].astype(float))),
        })
    return pd.DataFrame(rows)


def available_metrics(history: pd.DataFrame, metrics: tuple[str, ...] | list[str] = DEFAULT_METRICS) -> list[str]:
    """The metrics among ``metrics`` that some run logged with a finite value."""
    return [m for m in metrics
            if m in history.columns and np.isfinite(pd.to_numeric(history[m], errors="coerce")).any()]


def training_curves(history: pd.DataFrame, metrics: list[str] | None = None,
                    title: str = "Training curves"):
    """One panel per metric against the epoch, one line per run; the error panels mark each run's
    best epoch by validation error and give, in their upper right corner and the run's colour, the
    panel's value there ("best val 7.10 @ ep 12" on the validation panel, "test 7.40 @ ep 12 (best
    val)" on the test one). Runs without a validation split get no mark: the lowest test error is
    not a selection the suite makes."""
    metrics = available_metrics(history) if metrics is None else list(metrics)
    unknown = [m for m in metrics if m not in history.columns]
    if unknown:
        have = [c for c in history.columns if c not in ("run", "epoch", "status", "checkpoint")]
        raise ReportInputError(f"metric {unknown[0]!r} was not logged; choose from: {', '.join(have)}")
    if not metrics:
        raise ReportInputError("none of the metrics has a finite value yet")
    apply()
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 2.7), squeeze=False)
    runs = list(history["run"].cat.categories) if hasattr(history["run"], "cat") else list(
        dict.fromkeys(history["run"]))
    for ax, metric in zip(axes.ravel(), metrics, strict=True):
        for run, col in zip(runs, colors(len(runs)), strict=True):
            h = history[history["run"] == run]
            y = pd.to_numeric(h[metric], errors="coerce").to_numpy(dtype=float)
            x = h["epoch"].to_numpy()
            ax.plot(x, y, marker="o", markersize=2.5, color=col, label=str(run))
            best = best_val_epoch(h)
            if metric.endswith("_err") and best is not None:  # stacked in the corner the late epochs leave free
                e, v = int(h.loc[best, "epoch"]), pd.to_numeric(h.loc[best, metric], errors="coerce")
                if pd.notna(v):
                    ax.plot([e], [v], marker="*", markersize=7, color=col, ls="none")
                    text = (f"best val {v:.2f} @ ep {e}" if metric == "val_top1_err"
                            else f"{_split_prefix(metric)}{v:.2f} @ ep {e} (best val)")
                    ax.text(0.97, 0.95 - 0.08 * len(ax.texts), text, transform=ax.transAxes, ha="right",
                            va="top", fontsize=6, color=col)
        ax.set_xlabel("epoch")
        name = label(metric)
        if metric.startswith("test_") and not name.startswith("test"):  # the shared label omits the split
            name = f"test {name}"
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if metric.endswith("_err"):  # the early epochs would flatten the differences that matter
            y = pd.to_numeric(history[metric], errors="coerce").to_numpy(dtype=float)
            y = y[np.isfinite(y)]
            if len(y) > 3:
                ax.set_ylim(max(0.0, y.min() - 0.5), np.percentile(y, 90) + 0.5)
    axes.ravel()[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


SUMMARY_HEADER = ["run", "model", "epochs", "status", "top-1 err (%)", "top-5 err (%)",
                  "best val top-1 (epoch)", "test top-1 at best val", "wall time", "images/s"]


def _split_prefix(metric: str) -> str:
    """'test ' for test metrics, '' otherwise: the corner text names the split it reports."""
    return metric.split("_", 1)[0] + " " if metric.startswith(("test_", "train_")) else ""


def _duration(s: float) -> str:
    if not math.isfinite(s):
        return "–"
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}"


def summary_rows(summary: pd.DataFrame) -> list[list[str]]:
    """The per-run summary as strings, in :data:`SUMMARY_HEADER` order."""
    return [[str(r.run), r.model, str(r.epochs), str(r.status), num(r.test_top1_err), num(r.test_top5_err),
             "–" if r.best_epoch is None or pd.isna(r.best_epoch)
             else f"{r.best_val_top1_err:.2f} ({int(r.best_epoch)})", num(r.test_top1_err_at_best_val),
             _duration(r.wall_time_s), num(r.images_per_s, "{:.0f}")]
            for r in summary.itertuples(index=False)]
