"""Comparing gating choices by what they learn (issue 12 item 4): ``senet gates``.

For the best-by-validation run of each arm of the gate study (or given checkpoints), the
excitations s of every SE block are streamed over one split (the test split by default) through
forward hooks on the gates (the hooks of :mod:`analysis.extract`), and grouped by stage. Outputs:

- ``gates.png`` / ``.pdf``: one figure, a row per gate and a column per stage, each panel the
  distribution of s over images and channels of that stage's blocks. The gates live on different
  scales (sigmoid (0, 1), tanh (−1, 1), ReLU [0, ∞), softmax ≈ 1/C, softmax_c with mean 1), so each
  row has its own x-axis: the gate's range where it is bounded, else the data's 0.5-99.5 percentiles;
  the zones counted as "near a bound" are shaded and the mean is marked.
- ``gates.csv`` and ``gates.md``: per gate and stage, the mean and standard deviation of s (over
  images and channels), the spread of the channel means, the share of values near the gate's
  bounds (:data:`BOUNDS`; n/a where the gate has none that mean anything) and the class selectivity
  η² averaged over channels (as ``senet analyze`` computes it, :func:`analysis.stats.pooled`).
- ``gates_blocks.csv``: ``senet analyze``'s selectivity table per block, for each gate.

Moments and counts are exact over every image, in memory that does not grow with the number of
images; the figure draws the values of a fixed random sample of images (``figure_images``).
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from senet import se_modules
from senet.errors import UserError

from . import report as R
from . import stats as S
from .extract import ExcitationAccumulator, attach, autocast, batches, block_position, pick_device
from .style import apply, colors, save


# ---------------------------------------------------------------------------------------------
# Where each gate's bounds are, and what counts as near them
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bounds:
    """``low`` / ``high``: which values count as at or near the gate's lower / upper bound (None: no
    such bound); ``text`` says so in the table; ``xlim`` fixes the figure's x-axis where the gate is
    bounded (None ends come from the data)."""

    low: Callable[[torch.Tensor], torch.Tensor] | None
    high: Callable[[torch.Tensor], torch.Tensor] | None
    text: str
    xlim: tuple[float | None, float | None]
    low_zone: tuple[float, float] | None = None  # shaded in the figure
    high_zone: tuple[float, float] | None = None


#: Sigmoid-like gates use the thresholds of :mod:`analysis.stats` (0.1 / 0.9); tanh the same share
#: (10%) of its width; ReLU's lower bound is hit exactly (the channel switched off). A softmax's
#: weights sum to 1 (softmax_c: to C), so no weight approaches its upper bound unless the others
#: vanish, and all sit near 0 by construction: near-bound shares say nothing there, and the
#: identity gate has no bounds.
BOUNDS: dict[str, Bounds] = {
    "sigmoid": Bounds(lambda s: s < 0.1, lambda s: s > 0.9, "s < 0.1 | s > 0.9", (0.0, 1.0), (0.0, 0.1), (0.9, 1.0)),
    "hard_sigmoid": Bounds(lambda s: s < 0.1, lambda s: s > 0.9, "s < 0.1 | s > 0.9", (0.0, 1.0),
                           (0.0, 0.1), (0.9, 1.0)),
    "tanh": Bounds(lambda s: s < -0.8, lambda s: s > 0.8, "s < −0.8 | s > 0.8", (-1.0, 1.0), (-1.0, -0.8),
                   (0.8, 1.0)),
    "relu": Bounds(lambda s: s <= 0, None, "s = 0 (no upper bound)", (0.0, None)),
    "softmax": Bounds(None, None, "n/a (weights sum to 1)", (0.0, None)),
    "softmax_c": Bounds(None, None, "n/a (weights sum to C)", (0.0, None)),
    "identity": Bounds(None, None, "n/a (unbounded)", (None, None)),
}
NO_BOUNDS = Bounds(None, None, "n/a (unknown gate)", (None, None))


# ---------------------------------------------------------------------------------------------
# Which runs
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GateRun:
    label: str  # the arm; "" for a given checkpoint: its gate names it
    checkpoint: str
    info: dict  # seed, validation and test error where known


def _resolve(path: str, study_dir: Path) -> Path | None:
    """A recorded checkpoint path as given, else relative to the study folder or its results folder."""
    p = Path(path)
    for cand in (p, study_dir / p, study_dir.parent / p, study_dir.parent.parent / p):
        if cand.is_file():
            return cand
        if cand.is_dir() and (cand / "checkpoint.pt").is_file():
            return cand / "checkpoint.pt"
    return None


def best_runs(study_dir: str | Path, *, preset: str | None = None, experiment: str | None = None,
              recipe: str | None = None) -> tuple[list[GateRun], list[str]]:
    """The completed run with the lowest validation error of each arm (never chosen on test), and a
    note for each arm whose checkpoint is not on this machine (Ray trial folders are not committed)."""
    study_dir = Path(study_dir)
    runs, meta = R.load_study(study_dir.parent, study_dir.name)
    runs = R.select_recipe(runs, meta, preset=preset, experiment=experiment, recipe=recipe,
                           where=str(study_dir / "runs.parquet"))
    ok = R.completed(runs)
    if "checkpoint" not in ok or "best_val_top1_err" not in ok or ok["best_val_top1_err"].isna().all():
        raise R.ReportInputError(f"{study_dir / 'runs.parquet'} records no checkpoints or validation errors: the "
                                 "best run of each arm is chosen on validation, never on test")
    ok = ok[ok["checkpoint"].notna() & ok["best_val_top1_err"].notna()]
    out, notes, missing = [], [], []
    for arm in R.arm_order(runs, meta):
        a = ok[ok["arm"] == arm].sort_values(["best_val_top1_err", "seed"], kind="stable")
        if a.empty:
            continue
        row = a.iloc[0]
        info = {"seed": row.get("seed"), "best_val_top1_err": row.get("best_val_top1_err"),
                "test_top1_err": row.get("test_top1_err")}
        path = _resolve(str(row["checkpoint"]), study_dir)
        if path is None:
            notes.append(f"{arm}: the best run's checkpoint is not here ({row['checkpoint']})")
            missing.append(str(row["checkpoint"]))
            continue
        out.append(GateRun(arm, str(path), info))
    if not out:
        why = (f"none of the {len(notes)} arms' best checkpoints is on this machine, e.g. {missing[0]}" if notes
               else "no completed run with a checkpoint")
        raise R.ReportInputError(f"{study_dir}: no checkpoint to analyse ({why}); re-run the sweep or give "
                                 "checkpoint paths")
    return out, notes


# ---------------------------------------------------------------------------------------------
# Streaming the excitations
# ---------------------------------------------------------------------------------------------
class NonFinite(ArithmeticError):
    """A network whose excitations overflow (a diverged run): it has no distribution to draw."""


@torch.no_grad()
def stream(model, x, y, mean, std, *, num_classes: int, bounds: Bounds, sample: np.ndarray,
           batch_size: int = 256, device: str = "auto") -> tuple[pd.DataFrame, dict, dict]:
    """One pass over ``x``: the per-(block, class, channel) moments of s (:class:`ExcitationAccumulator`),
    per stage the counts of values near each bound and in all, and the values of the images whose
    ``sample`` flag is set (for the figure)."""
    dev = pick_device(device)
    model = model.to(dev).eval()
    mods = se_modules(model)
    names = sorted(mods, key=block_position)
    acc = ExcitationAccumulator(num_classes, bins=1)
    handles, ctx = attach(model, acc, names, dev)
    stages = sorted({block_position(n)[0] for n in names})
    counts = {s: np.zeros(3, dtype=np.int64) for s in stages}  # near low, near high, all
    picked: dict[int, list[np.ndarray]] = {s: [] for s in stages}
    rows: dict = {"idx": None}

    def hook(mod, inputs, out, stage):
        v = ExcitationAccumulator._per_image(out).float()
        if not bool(torch.isfinite(v).all()):
            raise NonFinite(f"non-finite excitations in stage {stage}")
        c = counts[stage]
        if bounds.low is not None:
            c[0] += int(bounds.low(v).sum())
        if bounds.high is not None:
            c[1] += int(bounds.high(v).sum())
        c[2] += v.numel()
        if rows["idx"] is not None:
            picked[stage].append(v[rows["idx"]].flatten().cpu().numpy())

    for n in names:
        handles.append(mods[n].gate.register_forward_hook(
            lambda m, i, o, _s=block_position(n)[0]: hook(m, i, o, _s)))
    flags = torch.as_tensor(sample)
    try:
        with autocast(dev):
            start = 0
            for xb, yb in batches(x, y, mean, std, batch_size, dev):
                idx = torch.nonzero(flags[start:start + len(yb)]).flatten()
                rows["idx"] = idx.to(dev) if len(idx) else None
                ctx["labels"] = yb
                model(xb)
                start += len(yb)
    finally:
        for h in handles:
            h.remove()
    stats, _ = acc.tables()
    values = {s: np.concatenate(v) if v else np.zeros(0, np.float32) for s, v in picked.items()}
    return stats, counts, values


def stage_summary(stats: pd.DataFrame, counts: dict, bounds: Bounds) -> pd.DataFrame:
    """Per stage: mean and std of s over all values (the law of total variance over channels), the
    spread of the channel means, near-bound shares and η² averaged over the channels that vary."""
    p = S.pooled(stats)
    rows = []
    for stage, g in p.groupby("stage", sort=True):
        w = g["count"].to_numpy(float)
        m = float((w * g["mean"]).sum() / w.sum())
        var = float((w * (g["var"] + (g["mean"] - m) ** 2)).sum() / w.sum())
        ok = g["var"] > 1e-12
        lo, hi, total = counts[int(stage)]
        share = lambda k, f: float(k / total) if f is not None and total else math.nan  # noqa: E731
        rows.append({"stage": int(stage), "blocks": g["block"].nunique(), "channels": len(g),
                     "images": int(g["count"].max()), "mean": m, "std": math.sqrt(max(var, 0.0)),
                     "channel_spread": float(g["mean"].std(ddof=0)),
                     "near_low": share(lo, bounds.low), "near_high": share(hi, bounds.high),
                     "near_bounds": (share(lo, bounds.low) if bounds.high is None else
                                     share(hi, bounds.high) if bounds.low is None else share(lo + hi, bounds.low)),
                     "bounds": bounds.text,
                     "eta2": float((g.loc[ok, "between_var"] / g.loc[ok, "var"]).mean()) if ok.any() else math.nan,
                     "eta2_channels": int(ok.sum()), "constant_channels": float(1 - ok.mean())})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# The figure
# ---------------------------------------------------------------------------------------------
def _xlim(values: list[np.ndarray], bounds: Bounds) -> tuple[float, float, str]:
    """The row's x-range: the gate's bounds, else the data's 0.5 / 99.5 percentiles, and a note
    saying which ends the data set (values beyond them are not drawn)."""
    allv = np.concatenate([v for v in values if len(v)]) if any(len(v) for v in values) else np.zeros(1)
    lo, hi = bounds.xlim
    cut = []
    if lo is None:
        lo = float(np.quantile(allv, 0.005))
        cut.append("0.5")
    if hi is None:
        hi = float(np.quantile(allv, 0.995))
        cut.append("99.5")
    if not hi > lo:
        hi = lo + max(abs(lo) * 0.1, 1e-3)
    return lo, hi, ({1: "x to the {}th pct", 2: "x: {}th–{}th pct"}[len(cut)].format(*cut)) if cut else ""


def _heavy_tail(values: list[np.ndarray], bounds: Bounds, hi: float) -> float:
    """For a gate without an upper bound whose values reach far beyond their bulk (the 99.5th
    percentile over 20 times the median, as a ReLU or C·softmax gate that let a few channels grow
    can), the threshold of a symlog x-axis (linear below it, logarithmic beyond); 0: a linear axis."""
    if bounds.xlim[1] is not None or not any(len(v) for v in values):
        return 0.0
    a = np.abs(np.concatenate([v for v in values if len(v)]))
    qs = [float(np.quantile(a, q)) for q in (0.5, 0.75, 0.9)]
    t = next((q for q in qs if q > 0), 0.0)
    if not (t > 0 and hi > 20 * t):
        return 0.0
    return max(t, hi / 1000)  # at most three decades of log: a constant channel at ~0 is not a scale


def gates_figure(samples: dict[str, dict[int, np.ndarray]], table: pd.DataFrame, gates: dict[str, str]):
    """Rows: gates; columns: stages; each panel a density histogram of s with the mean (dashed), the
    near-bound zones (shaded) and, where one bar towers over the rest, its share written on it."""
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    apply()
    labels = list(samples)
    stages = sorted({s for v in samples.values() for s in v})
    pal = colors(max(len(labels), 1))
    fig, axes = plt.subplots(len(labels), len(stages), figsize=(2.3 * len(stages) + 0.6, 1.3 * len(labels) + 0.7),
                             squeeze=False, sharex="row")
    for i, label in enumerate(labels):
        b = BOUNDS.get(gates[label], NO_BOUNDS)
        lo, hi, cut = _xlim(list(samples[label].values()), b)
        linthresh = _heavy_tail(list(samples[label].values()), b, hi)
        edges = np.linspace(lo, hi, 61)
        if linthresh:  # bins evenly spaced on the symlog axis, so the tail's bars stay visible
            from matplotlib.scale import SymmetricalLogTransform  # noqa: PLC0415

            tr = SymmetricalLogTransform(10, linthresh, 1.0)
            edges = tr.inverted().transform(np.linspace(*tr.transform(np.array([lo, hi])), 61))
            cut = ", ".join(x for x in (f"log x beyond {linthresh:.2g}", cut) if x)
        for j, stage in enumerate(stages):
            ax = axes[i, j]
            v = samples[label].get(stage, np.zeros(0))
            row = table[(table["label"] == label) & (table["stage"] == stage)]
            for zone in (b.low_zone, b.high_zone):
                if zone:
                    ax.axvspan(*zone, color="0.85", lw=0, zorder=0)
            if len(v):
                h, _ = np.histogram(v[(v >= lo) & (v <= hi)], bins=edges)
                share = h / len(v)
                ax.stairs(share, edges, fill=True, color=pal[i], alpha=0.85, zorder=2)
                top = np.sort(share)[::-1]
                spike = len(top) > 1 and top[1] > 0 and top[0] > 4 * top[1]  # keep the rest readable
                visible = top[1] if spike else top[0]
                ax.set_ylim(0, max(visible, 1e-9) * 1.6)  # headroom for the numbers in the corner
                if spike:
                    k = int(np.argmax(share))
                    left = k < len(share) // 2
                    ax.annotate(f"{top[0]:.0%} in this bin", ((edges[k] + edges[k + 1]) / 2, visible * 1.05),
                                xytext=(4 if left else -4, 0), textcoords="offset points", fontsize=5.5,
                                ha="left" if left else "right", va="bottom", color="0.2",
                                bbox={"facecolor": "white", "alpha": 0.75, "lw": 0, "pad": 0.5})
            if len(row):
                r = row.iloc[0]
                ax.axvline(r["mean"], color="black", lw=0.8, ls="--", zorder=3)
                eta = f"η² {r['eta2']:.2f}" if math.isfinite(r["eta2"]) else "η² undefined"
                text = f"mean {r['mean']:.2f}, sd {r['std']:.2f}\n{eta}"
                if r["constant_channels"] > 0:
                    text += f", {r['constant_channels']:.0%} constant"
                if math.isfinite(r["near_bounds"]):
                    text += f", near bounds {r['near_bounds']:.0%}"
                ax.text(0.98, 0.95, text, transform=ax.transAxes, ha="right", va="top", fontsize=5.5,
                        bbox={"facecolor": "white", "alpha": 0.75, "lw": 0, "pad": 1})
            if linthresh:
                ax.set_xscale("symlog", linthresh=linthresh, linscale=1.0)
            else:
                ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.set_xlim(lo, hi)
            ax.set_yticks([])
            ax.tick_params(axis="x", labelsize=6, pad=1)
            if i == 0:
                ax.set_title(f"stage {stage} (conv{stage}_x)")
            if j == 0:
                ax.set_ylabel(label if label == gates[label] else f"{label}\n({gates[label]})", fontsize=7)
            if cut:
                ax.set_xlabel(f"$s$ ({cut})", fontsize=6, labelpad=1)
            elif i == len(labels) - 1:
                ax.set_xlabel("excitation $s$")
    fig.suptitle("Excitations per stage and gate (share of values per bin; dashed: mean; "
                 "shaded: near the gate's bounds)", fontsize=8)
    fig.tight_layout(h_pad=0.6, w_pad=0.4)
    return fig


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GatesOptions:
    split: str = "test"
    max_images: int = 0  # first N images of the split (0 = all)
    figure_images: int = 2000  # images whose excitations the figure draws (a fixed random sample)
    batch_size: int = 256
    device: str = "auto"


def _load(checkpoint: str, overrides: dict, cache: dict):
    """The model, its gate, and the split's images (datasets loaded once per data config)."""
    from senet import config as C  # noqa: PLC0415
    from senet.checkpoint import load_model  # noqa: PLC0415
    from senet.data import load_datasets  # noqa: PLC0415

    bad = [k for k in overrides if not k.startswith("data.")]
    if bad:
        raise UserError(f"gates takes --data.* options, not --{bad[0]}")
    model, trained, meta = load_model(checkpoint)
    cfg = C.from_flat(overrides, base=trained)
    key = tuple(sorted((k, str(v)) for k, v in C.flatten(cfg).items() if k.startswith("data.")))
    if key not in cache:
        cache[key] = load_datasets(cfg.data)
    ds = cache[key]
    data = meta.get("data", {}) or {}
    return model, cfg, ds, data.get("mean", ds.mean), data.get("std", ds.std), list(data.get("classes") or ds.classes)


def write_gates(runs: list[GateRun], out: str | Path, overrides: dict | None = None,
                opt: GatesOptions = GatesOptions(), notes: list[str] | None = None) -> dict:
    """Stream each run's excitations and write the figure and the tables into ``out``."""
    if not runs:
        raise UserError("no checkpoint to analyse")
    out = Path(out)
    cache: dict = {}
    ref_x = None
    tables, blocks, samples, gates, used = [], [], {}, {}, []
    notes = list(notes or [])
    for run in runs:
        model, cfg, ds, mean, std, classes = _load(run.checkpoint, overrides or {}, cache)
        if not se_modules(model):
            raise UserError(f"{run.checkpoint} ({cfg.model.name}, se.stages={cfg.se.stages}) has no SE blocks")
        info = run.info or _run_info(run.checkpoint, cfg)
        if info.get("status") == "diverged" or not all(
                bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point()):
            notes.append(f"{run.label or cfg.se.gate}: {run.checkpoint} is a diverged run")
            continue
        if opt.split not in ("train", "val", "test"):
            raise UserError(f"unknown split {opt.split!r}; choose one of: train, val, test")
        x, y = getattr(ds, f"{opt.split}_x"), getattr(ds, f"{opt.split}_y")
        if opt.max_images:
            x, y = x[:opt.max_images], y[:opt.max_images]
        if not len(x):
            raise UserError(f"the {opt.split} split of {cfg.data.name} is empty")
        if ref_x is None:
            ref_x, ref_y, ref_name = x, y, run.label
        elif len(x) != len(ref_x) or not (torch.equal(torch.as_tensor(x), torch.as_tensor(ref_x))
                                          and torch.equal(torch.as_tensor(y), torch.as_tensor(ref_y))):
            raise UserError(f"{run.label} ({run.checkpoint}) was trained on other {opt.split} images than "
                            f"{ref_name}: the gates are compared on the same images, so give runs of one data config")
        gate = str(cfg.se.gate)
        label = run.label or gate
        if label in samples:  # two checkpoints of one gate: tell them apart by their run folder
            label = f"{label} ({Path(run.checkpoint).parent.name})"
        b = BOUNDS.get(gate, NO_BOUNDS)
        sample = np.zeros(len(x), bool)
        k = min(opt.figure_images, len(x)) if opt.figure_images > 0 else len(x)
        sample[np.random.default_rng(0).permutation(len(x))[:k]] = True
        try:
            stats, counts, values = stream(model, x, y, mean, std, num_classes=len(classes), bounds=b,
                                           sample=sample, batch_size=opt.batch_size, device=opt.device)
        except NonFinite as e:
            notes.append(f"{label}: {e} ({run.checkpoint}; a diverged run?)")
            continue
        t = stage_summary(stats, counts, b)
        t.insert(0, "gate", gate)
        t.insert(0, "label", label)
        tables.append(t)
        blocks.append(S.selectivity(stats).assign(label=label, gate=gate))
        samples[label], gates[label] = values, gate
        used.append({"label": label, "gate": gate, "checkpoint": run.checkpoint, "images": len(x),
                     "figure_images": k, **info})
    if not tables:
        raise UserError("no checkpoint left to analyse: " + "; ".join(notes))
    table = pd.concat(tables, ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "gates.csv", index=False)
    pd.concat(blocks, ignore_index=True).to_csv(out / "gates_blocks.csv", index=False)
    figs = save(gates_figure(samples, table, gates), out / "gates")
    md = _markdown(table, used, opt, notes)
    (out / "gates.md").write_text(md)
    return {"table": table, "runs": used, "figures": figs, "markdown": out / "gates.md", "out": out,
            "notes": notes}


def _run_info(checkpoint: str, cfg) -> dict:
    """Seed and errors of a checkpoint given directly, from the ``final.json`` beside it (if any)."""
    try:
        final = json.loads((Path(checkpoint).parent / "final.json").read_text())
    except (OSError, ValueError):
        final = {}
    return {"seed": cfg.seed, "best_val_top1_err": final.get("best_val_top1_err"),
            "test_top1_err": final.get("test_top1_err"), "status": final.get("status")}


def _pct(v) -> str:
    return "n/a" if not math.isfinite(v) else f"{100 * v:.1f}%"


def _markdown(table: pd.DataFrame, used: list[dict], opt: GatesOptions, notes: list[str]) -> str:
    num = lambda v, nd=3: "–" if v is None or not math.isfinite(float(v)) else f"{float(v):.{nd}f}"  # noqa: E731
    run_rows = [[u["label"], u["gate"], str(u.get("seed", "–")), num(u.get("best_val_top1_err"), 2),
                 num(u.get("test_top1_err"), 2), f"`{Path(u['checkpoint']).parent.name}/{Path(u['checkpoint']).name}`"]
                for u in used]
    rows = [[r.label, str(r.stage), f"{r.blocks} / {r.channels}", num(r.mean), num(r.std), num(r.channel_spread),
             _pct(r.near_low), _pct(r.near_high), r.bounds, num(r.eta2), _pct(r.constant_channels)]
            for r in table.itertuples(index=False)]
    n = used[0]["images"]
    return "\n".join([
        "# Gates compared by what they learn", "",
        f"The best run of each gate by validation error, its excitations s over {n:,} `{opt.split}` images "
        f"(every SE block, grouped by stage; NoSqueeze gates averaged over positions). The figure draws the "
        f"values of {used[0]['figure_images']:,} of these images (a fixed random sample); the table is over all.", "",
        R.markdown(["arm", "gate", "seed", "best val top-1 err", "test top-1 err", "checkpoint"], run_rows),
        *([f"Not analysed: {'; '.join(notes)}.", ""] if notes else []),
        "![gates](gates.png)", "",
        "mean, std: of s over images and channels of the stage; channel spread: standard deviation of the "
        "channels' mean s; near low / near high: share of values in the zone the `bounds` column names "
        "(n/a where the gate has no such bound); η²: class selectivity (between-class / total variance of s), "
        "averaged over the channels that vary, as `senet analyze` computes it (undefined when none does); "
        "constant channels: share of channels whose s does not depend on the image at all (the SE does no "
        "dynamic recalibration there, e.g. behind a dead ReLU). Per block: `gates_blocks.csv`.", "",
        R.markdown(["arm", "stage", "blocks / channels", "mean", "std", "channel spread", "near low", "near high",
                    "bounds", "η²", "constant channels"], rows),
    ])
