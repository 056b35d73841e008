"""``senet analyze``: everything the paper's §7.2 reads from a trained SE network, from one checkpoint.

Writes into the output directory:

- ``excitations.parquet`` (block, stage, block_index, class, channel, count, mean, std) and
  ``excitation_hist.parquet`` (the same keys plus bin, bin_lo, bin_hi, count);
- ``selectivity.csv``: class selectivity η² and saturation per block;
- ``removal.parquet``: error with each stage's (and each block's) SE replaced by the identity;
- ``attribution.parquet``: captum channel importance against mean excitation;
- figures (PNG and PDF) in ``figures/``: Fig. 6 and Fig. 7 style panels, selectivity by depth,
  SE removal, importance scatter, Grad-CAM grid;
- ``summary.md`` embedding the tables and figures.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from senet import se_modules

from . import figures as F
from . import stats as S
from .extract import extract_excitations, pick_device, select_blocks
from .report import markdown
from .style import save


@dataclass(frozen=True)
class AnalyzeOptions:
    split: str = "test"  # train | val | test
    classes: str = ""  # comma list of class names or indices ("" = the first four, as in Fig. 6)
    blocks: str = "default"  # default (last of each stage + all of the last stage) | all | names
    compare: str = ""  # a plain model's checkpoint for the Grad-CAM comparison
    max_images: int = 0  # first N images of the split (0 = all)
    bins: int = 50  # histogram bins over the gate's range
    batch_size: int = 256
    device: str = "auto"
    attr_images: int = 32  # images per chosen class for channel ablation
    gradcam_images: int = 6  # images in the Grad-CAM grid
    singles: bool = True  # also remove single blocks' SE (not only whole stages)
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
            raise ValueError(f"unknown class {tok!r}; choose names or indices of: {', '.join(names)}")
    return list(dict.fromkeys(out))


def _load(checkpoint: str, overrides: dict, split: str):
    from senet import config as C  # noqa: PLC0415
    from senet.checkpoint import load_model  # noqa: PLC0415
    from senet.data import load_datasets  # noqa: PLC0415

    bad = [k for k in overrides if not k.startswith("data.")]
    if bad:
        raise ValueError(f"analyze takes --data.* options, not --{bad[0]}")
    model, cfg, meta = load_model(checkpoint)
    cfg = C.from_flat(overrides, base=cfg)
    ds = load_datasets(cfg.data, cfg.seed)
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r}; choose one of: train, val, test")
    x, y = getattr(ds, f"{split}_x"), getattr(ds, f"{split}_y")
    if not len(x):
        raise ValueError(f"the {split} split of {cfg.data.name} is empty")
    data = meta.get("data", {}) or {}
    mean, std = data.get("mean", ds.mean), data.get("std", ds.std)
    classes = list(data.get("classes") or ds.classes)
    out_features = getattr(getattr(model, "fc", None), "out_features", len(classes))
    if out_features != len(ds.classes):
        raise ValueError(f"{checkpoint} predicts {out_features} classes but {cfg.data.name} has "
                         f"{len(ds.classes)}; pass the dataset it was trained on (--data.name)")
    return model, cfg, meta, x, y, mean, std, classes


def _display(x: torch.Tensor) -> np.ndarray:
    a = x.float().div(255).cpu().numpy()
    return a[:, 0] if a.shape[1] == 1 else a.transpose(0, 2, 3, 1)


def run_analysis(checkpoint: str, out: str | Path, overrides: dict | None = None,
                 opt: AnalyzeOptions = AnalyzeOptions()) -> dict:
    """Run the whole analysis; returns the paths written and the headline numbers."""
    from .attribution import channel_importance, gradcam  # noqa: PLC0415 - captum only here
    from .removal import removal_table  # noqa: PLC0415

    out = Path(out)
    figdir = out / "figures"
    out.mkdir(parents=True, exist_ok=True)
    model, cfg, meta, x, y, mean, std, names = _load(checkpoint, overrides or {}, opt.split)
    se_names = list(se_modules(model))
    if not se_names:
        raise ValueError(f"{checkpoint} ({cfg.model.name}, se.stages={cfg.se.stages}) has no SE blocks")
    blocks = select_blocks(se_names, opt.blocks)
    chosen = parse_classes(opt.classes, names)
    if opt.max_images:
        x, y = x[:opt.max_images], y[:opt.max_images]
    dev = pick_device(opt.device)

    stats, hist = extract_excitations(model, x, y, mean, std, num_classes=len(names), class_names=names,
                                      blocks=blocks, bins=opt.bins, batch_size=opt.batch_size,
                                      device=opt.device, progress=opt.progress)
    stats.to_parquet(out / "excitations.parquet", index=False)
    hist.to_parquet(out / "excitation_hist.parquet", index=False)
    sel = S.selectivity(stats, hist)
    sel.to_csv(out / "selectivity.csv", index=False)
    present = [c for c in chosen if (stats.loc[stats["class"] == c, "count"] > 0).any()]
    if not present:
        raise ValueError(f"none of the classes {chosen} occurs in the first {len(x)} {opt.split} images")
    save(F.excitation_means(stats, present, blocks), figdir / "fig6_excitation_means")
    save(F.excitation_bands(stats, present[:2], blocks), figdir / "fig7_excitation_bands")
    save(F.selectivity_depth(sel), figdir / "selectivity_depth")

    removal = removal_table(model, x, y, mean, std, singles=opt.singles, batch_size=opt.batch_size,
                            device=opt.device, progress=opt.progress)
    removal.to_parquet(out / "removal.parquet", index=False)
    save(F.removal_bars(removal), figdir / "se_removal")

    # Captum: channel ablation at the SE output on the chosen classes' images (float32, no autocast).
    from senet.data import normalize  # noqa: PLC0415

    model = model.to(dev).float().eval()
    idx = torch.cat([torch.nonzero(y == names.index(c)).flatten()[:opt.attr_images] for c in present])
    xa = normalize(x[idx].to(dev), mean, std)
    ya = y[idx].to(dev)
    imp = channel_importance(model, blocks, xa, ya, names, progress=opt.progress)
    attr = imp.merge(stats[["block", "class", "channel", "mean"]].rename(columns={"mean": "mean_excitation"}),
                     on=["block", "class", "channel"])
    attr.to_parquet(out / "attribution.parquet", index=False)
    rho = pd.DataFrame([{"block": b, "spearman": S.spearman(g["mean_excitation"], g["importance"]),
                         "channels": g["channel"].nunique()} for b, g in attr.groupby("block", sort=False)])
    save(F.attribution_scatter(attr), figdir / "importance_vs_excitation")

    # Grad-CAM on the same images for the SE model and, if given, the plain one.
    per = max(1, opt.gradcam_images // len(present))
    gidx = torch.cat([torch.nonzero(y == names.index(c)).flatten()[:per] for c in present])[:opt.gradcam_images]
    xg, yg = x[gidx], y[gidx]
    maps = {f"SE: {cfg.model.name}": gradcam(model, normalize(xg.to(dev), mean, std), yg.to(dev))}
    if opt.compare:
        from senet.checkpoint import load_model  # noqa: PLC0415

        plain, pcfg, pmeta = load_model(opt.compare)
        pdata = pmeta.get("data", {}) or {}
        pout = getattr(getattr(plain, "fc", None), "out_features", len(names))
        if pout != len(names):
            raise ValueError(f"--compare model predicts {pout} classes, the SE model {len(names)}")
        plain = plain.to(dev).float().eval()
        xp = normalize(xg.to(dev), pdata.get("mean", mean), pdata.get("std", std))
        maps[f"plain: {pcfg.model.name}"] = gradcam(plain, xp, yg.to(dev))
    captions = [names[int(t)] for t in yg]
    save(F.gradcam_grid(_display(xg), maps, captions, title="Grad-CAM at the last stage"),
         figdir / "gradcam")

    summary = _summary(checkpoint, cfg, opt, len(x), sel, removal, rho, present, out)
    return {"out": str(out), "summary": str(summary), "selectivity": sel, "removal": removal,
            "spearman": rho, "images": len(x)}


def _fmt(v, nd=3):
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{nd}f}"


def _summary(checkpoint, cfg, opt, n, sel, removal, rho, classes, out: Path) -> Path:
    sel_rows = [[r.block, str(r.channels), _fmt(r.eta2), _fmt(r.saturated), _fmt(r.saturated_high),
                 _fmt(getattr(r, "mass_high", np.nan)), _fmt(r.mean), _fmt(r.spread)]
                for r in sel.itertuples(index=False)]
    rem_rows = [[r.removed, str(r.blocks), f"{r.top1_err:.2f}", f"{r.delta_top1:+.2f}",
                 f"{r.top5_err:.2f}", f"{r.se_params_kept:,}", f"{r.added_params_pct:.2f}%",
                 f"{r.params_saved:,}"] for r in removal.itertuples(index=False)]
    rho_rows = [[r.block, str(r.channels), _fmt(r.spearman, 2)] for r in rho.itertuples(index=False)]
    text = [
        f"# Excitation analysis of `{Path(checkpoint).name}`", "",
        f"Model `{cfg.model.name}` (gate `{cfg.se.gate}`, squeeze `{cfg.se.squeeze}`, r = {cfg.se.reduction:g}, "
        f"placement `{cfg.se.placement}`), dataset `{cfg.data.name}`, split `{opt.split}`, {n} images; "
        f"classes shown: {', '.join(classes)}.", "",
        "## Class selectivity and saturation (cf. paper §7.2)", "",
        "η²: share of the excitation variance over images explained by the class (mean over channels); "
        "saturated: share of channels whose all-class mean excitation is > 0.9 or < 0.1; "
        "mass > 0.9: share of all excitation values above 0.9.", "",
        markdown(["block", "C", "η²", "saturated", "mean > 0.9", "mass > 0.9", "mean s", "std over channels"],
                 sel_rows),
        "![selectivity](figures/selectivity_depth.png)", "",
        "## Excitations per class (cf. paper Fig. 6 and Fig. 7)", "",
        "![fig6](figures/fig6_excitation_means.png)", "", "![fig7](figures/fig7_excitation_bands.png)", "",
        "## SE removal (SE blocks replaced by the identity)", "",
        "Added parameters: SE parameters kept, as % of the network without SE.", "",
        markdown(["removed", "blocks", "top-1 err", "Δ top-1", "top-5 err", "SE params kept",
                  "added params", "params saved"], rem_rows),
        "![removal](figures/se_removal.png)", "",
        "## Channel importance (captum LayerFeatureAblation, gate closed) vs mean excitation", "",
        markdown(["block", "channels", "Spearman ρ"], rho_rows),
        "![importance](figures/importance_vs_excitation.png)", "",
        "## Grad-CAM", "", "![gradcam](figures/gradcam.png)", "",
    ]
    p = out / "summary.md"
    p.write_text("\n".join(text))
    return p
