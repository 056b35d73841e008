"""``senet analyze``: everything the paper's §7.2 reads from a trained SE network, from one checkpoint.

Writes into the output directory:

- ``excitations.parquet`` (block, stage, block_index, class, channel, count, mean, std) and
  ``excitation_hist.parquet`` (the same keys plus bin, bin_lo, bin_hi, count);
- ``selectivity.csv``: class selectivity η² and saturation per block;
- ``mean_excitations.parquet``: each SE channel's mean excitation over the reference split (the
  constant gate of the ``mean`` removal);
- ``removal.parquet``: error with each stage's (and each block's) SE removed, in two modes: gates
  fixed at their mean excitation (``mean``, the default reading) and replaced by the identity;
- ``attribution.parquet``: captum channel importance against mean excitation;
- figures (PNG and PDF) in ``figures/``: Fig. 6 and Fig. 7 style panels, selectivity by depth,
  SE removal, importance scatter, Grad-CAM grid;
- ``summary.md`` embedding the tables and figures.

The mean excitations of the ``mean`` removal come from other images than the ones the removal is
evaluated on (the validation split when the run holds one out, else the training split), so the
constant gate is not fitted to the evaluated images.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from senet import se_modules
from senet.checkpoint import load_model
from senet.data import normalize
from senet.errors import UserError, UserValueError
from senet.records.layout import write_atomic
from senet.records.object_store import fetch, is_uri

from . import figures
from .attribution import channel_importance, gradcam, gradcam_layer
from .extract import extract_excitations, pick_device, run_precision, select_blocks
from .loading import load_data, load_trained
from .removal import mean_excitations, removal_table
from .stats import selectivity, spearman
from .style import save
from .tables import markdown

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class AnalyzeOptions:
    split: str = "test"  # train | val | test
    classes: str = ""  # comma list of class names or indices ("" = the first four, as in Fig. 6)
    blocks: str = "default"  # default (last of each stage + all of the last stage) | all | names
    compare: str = ""  # a plain model's checkpoint (same dataset) for the Grad-CAM comparison
    max_images: int = 0  # first N images of the split, and of the mean-excitation split (0 = all)
    bins: int = 50  # histogram bins over the gate's range
    batch_size: int = 256
    device: str = "auto"
    attr_images: int = 32  # images per chosen class for channel ablation
    gradcam_images: int = 6  # images in the Grad-CAM grid
    singles: bool = True  # also remove single blocks' SE (not only whole stages)
    mean_split: str = "auto"  # split of the mean excitations: auto (val if held out and not
    #                           evaluated, else train) | train | val | test
    progress: bool = True


def parse_classes(spec: str, names: list[str], default: int = 4) -> list[str]:
    """Class names from ``"Coat,Bag"`` or ``"4,8"`` (case-insensitive names or indices)."""
    if not spec:
        return names[:default]
    lower = {n.lower(): n for n in names}
    out = []
    for tok in (t.strip() for t in spec.split(",") if t.strip()):
        if tok.lower() in lower:
            out.append(lower[tok.lower()])
        elif tok.isdigit() and int(tok) < len(names):
            out.append(names[int(tok)])
        else:
            raise UserValueError(f"unknown class {tok!r}; choose names or indices of: {', '.join(names)}")
    return list(dict.fromkeys(out))


def _load(checkpoint: str, overrides: dict):
    """The model, its config (with the ``--data.*`` overrides), the config it was trained with,
    its metadata, the datasets, the normalisation and the class names."""
    model, cfg, trained, meta = load_trained(checkpoint, overrides, "analyze")
    ds, mean, std, classes = load_data(cfg, meta)
    out_features = getattr(getattr(model, "fc", None), "out_features", len(classes))
    if out_features != len(ds.classes):
        raise UserError(f"{checkpoint} predicts {out_features} classes but {cfg.data.name} has "
                        f"{len(ds.classes)}; pass the dataset it was trained on (--data.name)")
    return model, cfg, trained, meta, ds, mean, std, classes


def _split_arrays(ds, split: str, what: str = "split"):
    if split not in SPLITS:
        raise UserError(f"unknown {what} {split!r}; choose one of: {', '.join(SPLITS)}")
    x, y = getattr(ds, f"{split}_x"), getattr(ds, f"{split}_y")
    if not len(x):
        raise UserError(f"the {split} split of {ds.name} is empty (--{what.replace(' ', '-')})")
    return x, y


def mean_split(ds, opt: AnalyzeOptions) -> str:
    """The split whose images give the mean excitations: ``auto`` takes the validation split when
    the run holds one out and it is not the evaluated split, else the training split."""
    if opt.mean_split != "auto":
        return opt.mean_split
    return "val" if len(ds.val_x) and opt.split != "val" else "train"


def _load_compare(path: str, trained, names: list[str]):
    """The ``--compare`` checkpoint, refused unless it is a plain network (no SE block) trained on
    the SE model's dataset (same ``data.name`` and classes)."""
    plain, pcfg, pmeta = load_model(path)
    pdata = pmeta.get("data", {}) or {}
    se = list(se_modules(plain))
    if se:
        raise UserError(f"--compare {path}: {pcfg.model.name} has SE blocks ({', '.join(se[:3])}"
                        f"{', ...' if len(se) > 3 else ''}); give a plain network's checkpoint")
    pclasses = list(pdata.get("classes") or [])
    if pcfg.data.name != trained.data.name or (pclasses and pclasses != list(names)):
        raise UserError(f"--compare {path}: trained on {pcfg.data.name} ({len(pclasses)} classes), "
                        f"the SE model on {trained.data.name} ({len(names)} classes); give a plain "
                        "network trained on the same dataset")
    pout = getattr(getattr(plain, "fc", None), "out_features", len(names))
    if pout != len(names):
        raise UserError(f"--compare {path} predicts {pout} classes, the SE model {len(names)}")
    return plain, pcfg, pdata


def _display(x: torch.Tensor) -> np.ndarray:
    a = x.float().div(255).cpu().numpy()
    return a[:, 0] if a.shape[1] == 1 else a.transpose(0, 2, 3, 1)


def run_analysis(checkpoint: str, out: str | Path, overrides: dict | None = None,
                 opt: AnalyzeOptions = AnalyzeOptions()) -> dict:
    """Run the whole analysis, in the precision the run was trained in; returns the paths written
    and the headline numbers. A checkpoint given by its URI (``s3://...``) is fetched into
    ``<out>/.remote`` first."""
    checkpoint = _local(checkpoint, Path(out))
    if opt.compare:
        opt = replace(opt, compare=_local(opt.compare, Path(out)))
    loaded = _load(checkpoint, overrides or {})
    with run_precision(trained_precision(loaded[3])):
        return _run(checkpoint, Path(out), loaded, opt)


def _local(checkpoint: str, out: Path) -> str:
    return str(fetch(checkpoint, out / ".remote")) if is_uri(checkpoint) else checkpoint


def trained_precision(meta: dict) -> str | None:
    """The precision the checkpoint's run evaluated in (None for a checkpoint that did not record it)."""
    return (meta.get("provenance") or {}).get("precision")


def _run(checkpoint: str, out: Path, loaded: tuple, opt: AnalyzeOptions) -> dict:
    figdir = out / "figures"
    model, cfg, trained, meta, ds, mean, std, names = loaded
    x, y = _split_arrays(ds, opt.split)
    ref = mean_split(ds, opt)
    xr, _ = _split_arrays(ds, ref, "mean split")
    se_names = list(se_modules(model))
    if not se_names:
        raise UserError(f"{checkpoint} ({cfg.model.name}, se.stages={cfg.se.stages}) has no SE blocks")
    blocks = select_blocks(se_names, opt.blocks)
    chosen = parse_classes(opt.classes, names)
    if opt.max_images:
        x, y, xr = x[:opt.max_images], y[:opt.max_images], xr[:opt.max_images]
    present = [c for c in chosen if (y == names.index(c)).any()]
    if not present:
        raise UserError(f"none of the classes {chosen} occurs in the first {len(x)} {opt.split} images")
    # Everything that can refuse does so before the expensive steps.
    gradcam_layer(model)
    compare = _load_compare(opt.compare, trained, names) if opt.compare else None
    dev = pick_device(opt.device)
    out.mkdir(parents=True, exist_ok=True)

    stats, hist = extract_excitations(model, x, y, mean, std, num_classes=len(names), class_names=names,
                                      blocks=blocks, bins=opt.bins, batch_size=opt.batch_size,
                                      device=opt.device, progress=opt.progress)
    stats.to_parquet(out / "excitations.parquet", index=False)
    hist.to_parquet(out / "excitation_hist.parquet", index=False)
    sel = selectivity(stats, hist)
    sel.to_csv(out / "selectivity.csv", index=False)
    save(figures.excitation_means(stats, present, blocks), figdir / "fig6_excitation_means")
    save(figures.excitation_bands(stats, present[:2], blocks), figdir / "fig7_excitation_bands")
    save(figures.selectivity_depth(sel), figdir / "selectivity_depth")

    means = mean_excitations(model, xr, mean, std, batch_size=opt.batch_size, device=opt.device,
                             progress=opt.progress)
    pd.concat([pd.DataFrame({"block": b, "channel": np.arange(len(v)), "mean_excitation": v.numpy()})
               for b, v in means.items()], ignore_index=True).assign(split=ref, images=len(xr)) \
        .to_parquet(out / "mean_excitations.parquet", index=False)
    removal = removal_table(model, x, y, mean, std, means=means, singles=opt.singles,
                            batch_size=opt.batch_size, device=opt.device, progress=opt.progress)
    removal.to_parquet(out / "removal.parquet", index=False)
    save(figures.removal_bars(removal), figdir / "se_removal")
    intact = removal.iloc[0]

    # Captum: channel ablation at the SE output on the chosen classes' images (float32, no autocast).
    model = model.to(dev).float().eval()
    idx = torch.cat([torch.nonzero(y == names.index(c)).flatten()[:opt.attr_images] for c in present])
    xa = normalize(x[idx].to(dev), mean, std)
    ya = y[idx].to(dev)
    imp = channel_importance(model, blocks, xa, ya, names, progress=opt.progress)
    attr = imp.merge(stats[["block", "class", "channel", "mean"]].rename(columns={"mean": "mean_excitation"}),
                     on=["block", "class", "channel"])
    attr.to_parquet(out / "attribution.parquet", index=False)
    rho = pd.DataFrame([{"block": b, "spearman": spearman(g["mean_excitation"], g["importance"]),
                         "channels": g["channel"].nunique()} for b, g in attr.groupby("block", sort=False)])
    save(figures.attribution_scatter(attr), figdir / "importance_vs_excitation")

    # Grad-CAM on the same images for the SE model and, if given, the plain one.
    per = max(1, opt.gradcam_images // len(present))
    gidx = torch.cat([torch.nonzero(y == names.index(c)).flatten()[:per] for c in present])[:opt.gradcam_images]
    xg, yg = x[gidx], y[gidx]
    maps = {f"SE: {cfg.model.name}": gradcam(model, normalize(xg.to(dev), mean, std), yg.to(dev))}
    if compare is not None:
        plain, pcfg, pdata = compare
        plain = plain.to(dev).float().eval()
        xp = normalize(xg.to(dev), pdata.get("mean", mean), pdata.get("std", std))
        maps[f"plain: {pcfg.model.name}"] = gradcam(plain, xp, yg.to(dev))
    captions = [names[int(t)] for t in yg]
    save(figures.gradcam_grid(_display(xg), maps, captions, title="Grad-CAM at the last block"),
         figdir / "gradcam")

    summary = _summary(checkpoint, cfg, opt, len(x), sel, removal, rho, present, out,
                       ref=ref, ref_images=len(xr),
                       compare=(compare[1].model.name, opt.compare) if compare is not None else None)
    return {"out": str(out), "summary": str(summary), "selectivity": sel, "removal": removal,
            "spearman": rho, "images": len(x), "split": opt.split,
            "top1_err": float(intact["top1_err_mean"]), "top5_err": float(intact["top5_err_mean"]),
            "mean_split": ref, "mean_images": len(xr)}


def _decimal(v, nd=3, missing="–"):
    return missing if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{nd}f}"


def _summary(checkpoint, cfg, opt, n, sel, removal, rho, classes, out: Path, *, ref: str, ref_images: int,
             compare: tuple[str, str] | None = None) -> Path:
    sel_rows = [[r.block, str(r.channels), _decimal(r.eta2), f"{r.eta2_channels}/{r.channels}",
                 _decimal(r.saturated, missing="n/a"), _decimal(r.saturated_high, missing="n/a"),
                 _decimal(getattr(r, "mass_high", np.nan), missing="n/a"), _decimal(r.mean), _decimal(r.spread)]
                for r in sel.itertuples(index=False)]
    rem_rows = [[r.removed, str(r.blocks), f"{r.top1_err_mean:.2f}", f"{r.delta_top1_mean:+.2f}",
                 f"{r.top1_err_identity:.2f}", f"{r.delta_top1_identity:+.2f}",
                 f"{r.top5_err_mean:.2f}", f"{r.top5_err_identity:.2f}", f"{r.se_params_kept:,}",
                 f"{r.added_params_pct:.2f}%", f"{r.params_saved:,}"] for r in removal.itertuples(index=False)]
    rho_rows = [[r.block, str(r.channels), _decimal(r.spearman, 2)] for r in rho.itertuples(index=False)]
    intact = removal.iloc[0]
    undefined = int((sel["channels"] - sel["eta2_channels"]).sum())
    saturating = sel["saturated"].notna().any()
    if compare is None:
        gradcam_text = f"SE model `{cfg.model.name}` alone (no `--compare` checkpoint given)."
    else:
        gradcam_text = (f"SE model `{cfg.model.name}` beside the plain network `{compare[0]}` "
                        f"(`{compare[1]}`, trained on `{cfg.data.name}`).")
    text = [
        f"# Excitation analysis of `{Path(checkpoint).name}`", "",
        f"Model `{cfg.model.name}` (gate `{cfg.se.gate}`, squeeze `{cfg.se.squeeze}`, r = {cfg.se.reduction:g}, "
        f"placement `{cfg.se.placement}`), dataset `{cfg.data.name}`, split `{opt.split}`, {n} images; "
        f"classes shown: {', '.join(classes)}.", "",
        f"Error of the intact model on these {n} `{opt.split}` images: top-1 {intact['top1_err_mean']:.2f}%, "
        f"top-5 {intact['top5_err_mean']:.2f}%.", "",
        "## Class selectivity and saturation (cf. paper §7.2)", "",
        "η²: share of the excitation variance over images explained by the class, averaged over the "
        "channels whose excitation varies at all (a constant channel's η² is 0/0, undefined, and left "
        f"out: 'η² over' gives the channels averaged / all channels; {undefined} left out in all "
        "blocks); saturated: share of channels whose all-class mean excitation is > 0.9 or < 0.1; "
        "mass > 0.9: share of all excitation values above 0.9. Saturation is defined only for gates "
        "that saturate at the bounds of (0, 1) (sigmoid, hard sigmoid)"
        + ("." if saturating else f"; the `{cfg.se.gate}` gate does not, so it is n/a."), "",
        markdown(["block", "C", "η²", "η² over", "saturated", "mean > 0.9", "mass > 0.9", "mean s",
                  "std over channels"], sel_rows),
        "![selectivity](figures/selectivity_depth.png)", "",
        "## Excitations per class (cf. paper Fig. 6 and Fig. 7)", "",
        "![fig6](figures/fig6_excitation_means.png)", "", "![fig7](figures/fig7_excitation_bands.png)", "",
        "## SE removal", "",
        f"Two ways to take an SE block's recalibration away, evaluated on the {n} `{opt.split}` images "
        "(Δ: percentage points against the intact model, the `none` row):", "",
        f"- **mean** (the default reading of \"is the SE needed here\"): each channel's gate fixed at "
        f"its mean excitation over the {ref_images} `{ref}` images. The block keeps its output scale "
        "and loses only the input-dependence, the dynamic recalibration.",
        "- **identity**: the block returns its input (s = 1). With gates averaging ~0.5 this doubles "
        "what the next layers see, so it measures the shock of a rescale as much as recalibration.", "",
        "Added parameters: SE parameters kept, as % of the network without SE.", "",
        markdown(["removed", "blocks", "top-1 err mean", "Δ mean", "top-1 err identity", "Δ identity",
                  "top-5 err mean", "top-5 err identity", "SE params kept", "added params",
                  "params saved"], rem_rows),
        "![removal](figures/se_removal.png)", "",
        "## Channel importance (captum LayerFeatureAblation, gate closed) vs mean excitation", "",
        markdown(["block", "channels", "Spearman ρ"], rho_rows),
        "![importance](figures/importance_vs_excitation.png)", "",
        "## Grad-CAM (last block of the last stage)", "", gradcam_text, "", "![gradcam](figures/gradcam.png)", "",
    ]
    return write_atomic(out / "summary.md", "\n".join(text))
