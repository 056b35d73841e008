"""Comparing gating choices by what they learn: ``senet gates``.

For the best-by-validation run of each arm of the gate study (or given checkpoints), the
excitations s of every SE block are streamed over one split (the test split by default) through
forward hooks on the gates (the hooks of :mod:`analysis.extract`), and grouped by stage. Outputs:

- ``gates.png`` / ``.pdf``: one figure, a row per gate and a column per stage, each panel the
  distribution of s over images and channels of that stage's blocks, on the gate's own scale
  (:func:`analysis.gates_render.gates_figure`).
- ``gates.csv`` and ``gates.md``: per gate and stage, the mean and standard deviation of s (over
  images and channels), the spread of the channel means, the share of values near the gate's
  bounds (:func:`gate_bounds`, from the gate's registration; n/a where none mean anything) and the
  class selectivity η² averaged over channels (as ``senet analyze`` computes it,
  :func:`analysis.stats.pooled`).
- ``gates_blocks.csv``: ``senet analyze``'s selectivity table per block, for each gate.

Moments and counts are exact over every image, in memory that does not grow with the number of
images; the figure draws the values of a fixed random sample of images (``figure_images``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from senet import se_modules
from senet.errors import UserError
from senet.records.layout import FINAL_JSON, read_json, study_paths, write_atomic
from senet.se import GATES

from .errors import ReportInputError
from .extract import ExcitationAccumulator, attach, autocast_as_trained, batches, block_position, pick_device
from .gates_render import NO_BOUNDS, Bounds, bounds_for, gates_figure, gates_markdown, stage_summary
from .loading import load_data, load_trained
from .stats import selectivity
from .study_results import arm_order, completed, load_recipe
from .style import save
from .weights import best_by_validation, keeps_weights, with_weights


# ---------------------------------------------------------------------------------------------
# Which runs
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GateRun:
    label: str  # the arm; "" for a given checkpoint: its gate names it
    checkpoint: str
    info: dict  # seed, validation and test error where known


def best_runs(study_dir: str | Path, *, preset: str | None = None, experiment: str | None = None,
              recipe: str | None = None) -> tuple[list[GateRun], list[str]]:
    """The completed run with the lowest validation error of each arm (never chosen on test) among
    the runs whose network is here: the study's kept weights (:mod:`analysis.weights`; once it keeps
    any, only those), else the recorded checkpoints on this machine (Ray trial folders are not
    committed); a note for each arm that has none."""
    paths = study_paths(Path(study_dir).parent, Path(study_dir).name)
    study_dir = paths.dir
    runs, meta = load_recipe(paths.results, paths.study, preset=preset, experiment=experiment, recipe=recipe)
    ok = completed(runs)
    if "checkpoint" not in ok or "best_val_top1_err" not in ok or ok["best_val_top1_err"].isna().all():
        raise ReportInputError(f"{paths.runs_parquet} records no checkpoints or validation errors: the "
                               "best run of each arm is chosen on validation, never on test")
    here = with_weights(ok[ok["best_val_top1_err"].notna()], study_dir)
    out, notes = [], []
    for arm in arm_order(runs, meta):
        if not (ok["arm"] == arm).any():
            continue
        row, overall = best_by_validation(here, arm), best_by_validation(ok, arm)
        if row is None:
            notes.append(f"{arm}: the best run's checkpoint is not here ({overall['checkpoint']})")
            continue
        if int(row["seed"]) != int(overall["seed"]) and not keeps_weights(study_dir):
            notes.append(f"{arm}: the best run (seed {int(overall['seed'])}) is not here; seed {int(row['seed'])}, "
                         "the best of those here, stands for it")
        info = {"seed": row.get("seed"), "best_val_top1_err": row.get("best_val_top1_err"),
                "test_top1_err": row.get("test_top1_err")}
        out.append(GateRun(arm, str(row["weights"]), info))
    if not out:
        missing = [str(best_by_validation(ok, a)["checkpoint"]) for a in arm_order(runs, meta) if (ok["arm"] == a).any()]
        why = (f"none of the {len(missing)} arms' best checkpoints is on this machine, e.g. {missing[0]}" if missing
               else "no completed run with a checkpoint")
        raise ReportInputError(f"{study_dir}: no checkpoint to analyse ({why}); re-run the sweep, keep weights with "
                               "`senet weights`, or give checkpoint paths")
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
        with autocast_as_trained(dev):
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


def write_gates(runs: list[GateRun], out: str | Path, overrides: dict | None = None,
                opt: GatesOptions = GatesOptions(), notes: list[str] | None = None) -> dict:
    """Stream each run's excitations and write the figure and the tables into ``out``."""
    if not runs:
        raise UserError("no checkpoint to analyse")
    out = Path(out)
    cache: dict = {}
    ref_x = None
    tables, blocks, samples, gates, bounds, used = [], [], {}, {}, {}, []
    notes = list(notes or [])
    for run in runs:
        model, cfg, _, meta = load_trained(run.checkpoint, overrides or {}, "gates")
        ds, mean, std, classes = load_data(cfg, meta, cache)
        if not se_modules(model):  # a study's plain baseline, or SK (a conv in place of SE): nothing gates
            why = f"{run.checkpoint} ({cfg.model.name}, se.stages={cfg.se.stages}) has no SE blocks"
            if len(runs) == 1:
                raise UserError(why)
            notes.append(f"{run.label or Path(run.checkpoint).parent.name}: no SE blocks, so no gate to show")
            continue
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
        b = gate_bounds(gate)
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
        blocks.append(selectivity(stats).assign(label=label, gate=gate))
        samples[label], gates[label], bounds[label] = values, gate, b
        used.append({"label": label, "gate": gate, "checkpoint": run.checkpoint, "images": len(x),
                     "figure_images": k, **info})
    if not tables:
        raise UserError("no checkpoint left to analyse: " + "; ".join(notes))
    table = pd.concat(tables, ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "gates.csv", index=False)
    pd.concat(blocks, ignore_index=True).to_csv(out / "gates_blocks.csv", index=False)
    figs = save(gates_figure(samples, table, gates, bounds), out / "gates")
    write_atomic(out / "gates.md", gates_markdown(table, used, opt.split, notes))
    return {"table": table, "runs": used, "figures": figs, "markdown": out / "gates.md", "out": out,
            "notes": notes}


def gate_bounds(gate: str) -> Bounds:
    """The near-bound rules of a registered gate (from its range and normalisation); none for a
    gate the registry does not know."""
    if gate not in GATES:
        return NO_BOUNDS
    info = GATES.info(gate)
    return bounds_for(info.range, info.sums_to)


def _run_info(checkpoint: str, cfg) -> dict:
    """Seed and errors of a checkpoint given directly, from the ``final.json`` beside it (if any)."""
    final = read_json(Path(checkpoint).parent / FINAL_JSON, None) or {}
    return {"seed": cfg.seed, "best_val_top1_err": final.get("best_val_top1_err"),
            "test_top1_err": final.get("test_top1_err"), "status": final.get("status")}
