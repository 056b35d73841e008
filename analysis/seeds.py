"""The excitation findings over several trained networks: ``senet analyze-seeds STUDY``.

An architecture claim ("class selectivity rises with depth", "the last stage's SE can be removed at
little cost", paper §7.2) is about the network a recipe trains, so its unit is the training seed,
not the test image of one network. For every completed run of one arm (the reference, SE with its
sigmoid gate, by default) whose network is here (:mod:`analysis.weights`), in seed order:

- ``selectivity.csv``: class selectivity η² of every SE block, as ``senet analyze`` computes it,
  with the block's depth; the finding reads each seed's Spearman ρ(depth, η²).
- ``removal.csv``: the error change when each stage's SE blocks are removed (the ``mean`` mode: gates
  fixed at their mean excitation over the mean split; the ``identity`` mode beside it), paired over
  the test images of that network; the finding reads the last stage's ``delta_top1_mean`` per seed.
- ``networks.csv``: which runs were read (seed, errors, the weights file).
- ``figures/``: both per-seed quantities with their interval over seeds, each on its own scale.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from senet import se_modules
from senet.errors import UserError
from senet.layout import study_paths
from senet.sequential import Design

from .analyze import AnalyzeOptions, _split, mean_split
from .compare import study_design
from .extract import extract_excitations, run_precision, select_blocks
from .loading import load_data, load_trained
from .removal import mean_excitations, removal_table
from .seeds_render import figures, last_stage_removal, over_seeds, per_seed_rho
from .stats import selectivity
from .study import load_recipe
from .weights import with_weights

SELECTIVITY, REMOVAL, NETWORKS = "selectivity.csv", "removal.csv", "networks.csv"
OUT = "seeds"  # the default folder, inside the study's


def networks(study_dir: str | Path, arm: str | None = None, **choice) -> tuple[str, pd.DataFrame, Design]:
    """(the arm, its completed runs whose network is here, in seed order, the study's sequential
    design); the arm defaults to the study's reference."""
    paths = study_paths(Path(study_dir).parent, Path(study_dir).name)
    runs, meta = load_recipe(paths.results, paths.study, **choice)
    arm = arm or meta.get("reference_arm")
    if arm not in set(runs["arm"]):
        raise UserError(f"no arm {arm!r} in {paths.runs_parquet} (arms: {', '.join(dict.fromkeys(runs['arm']))})")
    here = with_weights(runs[runs["arm"] == arm], paths.dir).sort_values("seed")
    if here.empty:
        raise UserError(f"{paths.dir}: no completed {arm} run has its network here (keep weights with "
                        "`senet weights`)")
    return arm, here, study_design(meta, runs)[0]


def analyze_seeds(study_dir: str | Path, out: str | Path | None = None, *, arm: str | None = None,
                  max_images: int = 0, batch_size: int = 256, device: str = "auto", progress: bool = True,
                  **choice) -> dict:
    """Selectivity and stage removal of every network of ``arm``; writes the tables and figures."""
    from tqdm.auto import tqdm

    arm, runs, design = networks(study_dir, arm, **choice)
    out = Path(out) if out is not None else Path(study_dir) / OUT
    opt = AnalyzeOptions()
    cache: dict = {}
    done = _done(out, max_images)
    sels, rems, used = [], [], []
    for row in tqdm(runs.to_dict("records"), desc=f"{arm} networks", unit="network", disable=not progress):
        seed, name = int(row["seed"]), Path(row["weights"]).name
        if (seed, name) in done:  # analysed before from the same weights and images: read, not recomputed
            sel_s, rem_s, used_s = done[(seed, name)]
            sels.append(sel_s), rems.append(rem_s), used.append(used_s)
            continue
        model, cfg, _, meta = load_trained(str(row["weights"]), {}, "analyze-seeds")
        ds, mean, std, classes = load_data(cfg, meta, cache)
        x, y = _split(ds, opt.split)
        ref = mean_split(ds, opt)
        xr, _ = _split(ds, ref, "mean split")
        if max_images:
            x, y, xr = x[:max_images], y[:max_images], xr[:max_images]
        blocks = select_blocks(list(se_modules(model)), "all")
        with run_precision((meta.get("provenance") or {}).get("precision")):
            stats, hist = extract_excitations(model, x, y, mean, std, num_classes=len(classes), blocks=blocks,
                                              batch_size=batch_size, device=device, progress=False)
            means = mean_excitations(model, xr, mean, std, batch_size=batch_size, device=device, progress=False)
            removal = removal_table(model, x, y, mean, std, means=means, modes=("mean",), singles=False,
                                    batch_size=batch_size, device=device, progress=False)
        sels.append(selectivity(stats, hist).assign(seed=seed))
        rems.append(removal.assign(seed=seed, mean_split=ref))
        used.append({"seed": seed, "arm": arm, "test_top1_err": row.get("test_top1_err"),
                     "best_val_top1_err": row.get("best_val_top1_err"), "images": len(x), "max_images": max_images,
                     "weights": name})
    sel = _seed_first(pd.concat(sels, ignore_index=True))
    rem = _seed_first(pd.concat(rems, ignore_index=True))
    out.mkdir(parents=True, exist_ok=True)
    sel.to_csv(out / SELECTIVITY, index=False)
    rem.to_csv(out / REMOVAL, index=False)
    pd.DataFrame(used).to_csv(out / NETWORKS, index=False)
    figs = figures(sel, rem, out / "figures", arm=arm, design=design)
    return {"out": out, "arm": arm, "networks": len(used), "selectivity": sel, "removal": rem, "figures": figs,
            "rho": over_seeds(per_seed_rho(sel)["rho"], design),
            "removal_last": over_seeds(last_stage_removal(rem)["delta"], design)}


def _seed_first(df: pd.DataFrame) -> pd.DataFrame:
    return df[["seed", *[c for c in df.columns if c != "seed"]]]


def _done(out: Path, max_images: int) -> dict:
    """(seed, weights file) -> its rows of an earlier run into ``out`` on the same images."""
    if not (out / NETWORKS).is_file():
        return {}
    nets, sel, rem = (pd.read_csv(out / f) for f in (NETWORKS, SELECTIVITY, REMOVAL))
    got = {}
    for r in nets.to_dict("records"):
        if int(r.get("max_images", -1)) != max_images:
            continue
        seed = int(r["seed"])
        got[(seed, str(r["weights"]))] = (sel[sel["seed"] == seed], rem[rem["seed"] == seed], r)
    return got
