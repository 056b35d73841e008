"""`senet analyze` and `senet report` end to end, on the synthetic dataset and a fixture study."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from senet import build_model, se_modules
from senet.checkpoint import build_from_config, save_checkpoint
from senet.cli import main
from senet.config import from_flat, to_dict
from senet.data import SYNTHETIC_CLASSES
from tests.test_analysis_render import study_dir  # noqa: F401  (a gate study's folder)

pytestmark = pytest.mark.usefixtures("one_thread")


def _checkpoint(path, model_name, **flat):
    """A suite checkpoint of an untrained network on the synthetic gratings (no training needed to
    exercise every analysis path)."""
    cfg = from_flat({"model.name": model_name, "data.name": "synthetic", "data.synthetic_train": 64,
                     "data.synthetic_test": 80, "data.val_fraction": 0.0, **flat})
    torch.manual_seed(0)
    classes = SYNTHETIC_CLASSES
    data = {"classes": classes, "mean": (0.5,), "std": (0.25,), "in_chans": 1, "input_size": 28,
            "name": "synthetic"}
    if cfg.data.name == "imagefolder":
        classes = sorted(p.name for p in (Path(cfg.data.root) / "train").iterdir())
        data = {"classes": classes, "mean": (0.5,) * 3, "std": (0.25,) * 3, "in_chans": 3,
                "input_size": 32, "name": "imagefolder"}
    model = build_from_config(cfg, len(classes), data["in_chans"])
    return save_checkpoint(path, model=model.state_dict(), config=to_dict(cfg), data=data, epoch=1)


def _image_folder(root, classes=("ant", "bee", "cat"), per_class=4, size=32):
    """``root/train|test/<class>/*.png``: random RGB images, for networks that need more than 28 px."""
    from torchvision.io import write_png

    g = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                write_png(torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g),
                          str(root / split / c / f"{i}.png"))
    return root


# One checkpoint of every backbone family: a family-specific failure (Grad-CAM's target layer) would
# come after the expensive steps. ImageNet-size families run at 28 px on the synthetic data, except BN-Inception,
# whose Caffe ceil-mode pools need 32 px: it reads a 32-px image folder. The first SE block keeps the
# per-channel captum ablation (one pass per channel) short.
FAMILIES = [
    pytest.param("se_resnet20", id="cifar_resnet"),
    pytest.param("se_resnet18", id="resnet"),
    pytest.param("se_wrn16_8", id="wrn", marks=pytest.mark.slow),
    pytest.param("se_resnext50_32x4d", id="resnext", marks=pytest.mark.slow),
    pytest.param("se_inception_small", id="inception_small"),
    pytest.param("se_bn_inception", id="bn_inception"),
    pytest.param("se_mobilenet_v1", id="mobilenet"),
]


@pytest.mark.parametrize("name", FAMILIES)
def test_analyze_runs_on_every_backbone_family(tmp_path, capsys, name, drawn):
    flat, over = {"data.val_fraction": 0.25}, ["--data.synthetic_test", "12"]
    root_classes = name == "se_bn_inception"  # an image folder of ant, bee, cat
    if root_classes:
        root = _image_folder(tmp_path / "images")
        flat, over = {"data.name": "imagefolder", "data.root": str(root), "data.val_fraction": 0.25}, []
    ckpt = _checkpoint(tmp_path / "run" / "checkpoint.pt", name, **flat)
    first = next(iter(se_modules(build_model(name))))
    out = tmp_path / "analysis"
    rc = main(["analyze", str(ckpt), "--out", str(out), "--classes", "0", "--blocks", first,
               "--attr-images", "1", "--no-singles", "--no-progress", "--max-images", "8", *over])
    assert rc == 0, capsys.readouterr().err
    assert (out / "figures" / "gradcam.png").is_file() and (out / "summary.md").is_file()
    # the figures show this network: its block, and per image of class 0 the input beside the SE
    # model's Grad-CAM map, scaled to [0, 1]
    assert [ax.get_title() for ax in drawn["fig6_excitation_means"].axes] == [first]
    cam = drawn["gradcam"].axes
    assert cam and {ax.get_title() for ax in cam[::2]} == {"ant" if root_classes else SYNTHETIC_CLASSES[0]}
    assert [ax.get_title() for ax in cam[1::2]] == [f"SE: {name}"] * (len(cam) // 2)
    for ax in cam[1::2]:
        heat = np.asarray(ax.images[1].get_array())
        assert len(ax.images) == 2 and np.isfinite(heat).all() and 0 <= heat.min() <= heat.max() <= 1
    removal = pd.read_parquet(out / "removal.parquet")
    assert removal["top1_err_mean"].notna().all() and removal["top1_err_identity"].notna().all()
    means = pd.read_parquet(out / "mean_excitations.parquet")
    assert set(means["split"]) == {"val"}  # the run holds a validation split out: its images
    assert set(means["block"]) == set(se_modules(build_model(name)))


def test_analyze_writes_tables_figures_and_summary(tmp_path, capsys, drawn):
    se = _checkpoint(tmp_path / "se" / "checkpoint.pt", "se_resnet20")
    plain = _checkpoint(tmp_path / "plain" / "checkpoint.pt", "resnet20")
    out = tmp_path / "analysis"
    rc = main(["analyze", str(se), "--out", str(out), "--classes", "grating_000deg,1,grating_054deg",
               "--compare", str(plain), "--attr-images", "3", "--no-singles", "--no-progress",
               "--blocks", "SE_2_3,4", "--bins", "10",
               "--data.synthetic_test", "60"])
    assert rc == 0, capsys.readouterr().err
    stats = pd.read_parquet(out / "excitations.parquet")
    assert sorted(stats["block"].unique()) == ["SE_2_3", "SE_4_1", "SE_4_2", "SE_4_3"]
    assert stats.groupby(["block", "channel"])["count"].sum().eq(60).all()  # --data.* override applied
    hist = pd.read_parquet(out / "excitation_hist.parquet")
    per_key = hist.groupby(["block", "class", "channel"])["count"].sum()
    assert per_key.to_dict() == stats.set_index(["block", "class", "channel"])["count"].to_dict()
    removal = pd.read_parquet(out / "removal.parquet")
    assert list(removal["removed"]) == ["none", "stage 2", "stage 3", "stage 4"]
    assert {"top1_err_mean", "delta_top1_mean", "top1_err_identity", "delta_top1_identity"} <= set(removal)
    means = pd.read_parquet(out / "mean_excitations.parquet")
    assert set(means["split"]) == {"train"} and set(means["images"]) == {64}  # no val split held out
    attr = pd.read_parquet(out / "attribution.parquet")
    assert set(attr["class"]) == {"grating_000deg", "grating_018deg", "grating_054deg"}
    for stem in ("fig6_excitation_means", "fig7_excitation_bands", "selectivity_depth", "se_removal",
                 "importance_vs_excitation", "gradcam"):
        assert (out / "figures" / f"{stem}.png").is_file() and (out / "figures" / f"{stem}.pdf").is_file()
    _check_figures(drawn, out, plain="resnet20")
    summary = (out / "summary.md").read_text()
    assert "| SE_4_3 |" in summary and "figures/gradcam.png" in summary
    assert "default reading" in summary and "mean excitation over the 64 `train` images" in summary
    assert f"plain network `resnet20` (`{plain}`" in summary  # the comparison is named
    printed = capsys.readouterr().out
    assert "SE_4_3" in printed and "60 test images: top-1 error" in printed


@pytest.mark.parametrize("kind", ["text", "pickle_code", "foreign_state_dict"])
def test_bad_checkpoint_is_refused_with_one_line(tmp_path, capsys, kind):
    p = tmp_path / "bad.pt"
    if kind == "text":
        p.write_text("not a checkpoint\n")
    elif kind == "pickle_code":
        torch.save({"x": os.system}, p)  # needs code (a global) to load: refused by weights_only
    else:
        torch.save({"state_dict": {"w": torch.zeros(2)}}, p)
    rc = main(["analyze", str(p), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("senet: error: ") and err.count("\n") == 1
    assert "not a senet checkpoint" in err
    assert not (tmp_path / "o" / "excitations.parquet").exists()


def test_analyze_user_errors_are_one_line(tmp_path, capsys):
    se = _checkpoint(tmp_path / "c.pt", "se_resnet20")
    for argv, msg in ((["--classes", "pug"], "unknown class 'pug'"),
                      (["--blocks", "SE_9_1"], "unknown SE block 'SE_9_1'"),
                      (["--se.gate", "tanh"], "analyze takes --data.* options"),
                      (["--split", "dev"], "unknown split 'dev'"),
                      (["--mean-split", "val"], "the val split of synthetic is empty"),
                      (["--mean-split", "dev"], "unknown mean split 'dev'"),
                      (["--preset", "quick"], "use them with --best")):
        rc = main(["analyze", str(se), "--out", str(tmp_path / "o"), "--no-progress", *argv])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err and err.count("\n") == 1, err


def test_compare_must_be_a_plain_network_on_the_same_dataset(tmp_path, capsys):
    """``--compare`` takes only a plain network on the same dataset (not an SE model, nor another
    dataset's with as many classes), and the summary names it."""
    se = _checkpoint(tmp_path / "se.pt", "se_resnet20")
    other_se = _checkpoint(tmp_path / "se2.pt", "se_resnet20", **{"se.reduction": 8})
    elsewhere = _checkpoint(tmp_path / "fm.pt", "resnet20", **{"data.name": "fashion-mnist"})
    for compare, msg in ((other_se, "has SE blocks (SE_2_1, SE_2_2, SE_2_3, ...); give a plain network"),
                         (elsewhere, "trained on fashion-mnist (10 classes), the SE model on synthetic")):
        out = tmp_path / "o"
        rc = main(["analyze", str(se), "--out", str(out), "--compare", str(compare), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err and str(compare) in err and err.count("\n") == 1, err
        assert not (out / "excitations.parquet").exists()  # refused before the expensive steps


def test_analyze_reports_the_test_error_of_a_seed1_run(tmp_path, capsys):
    """Analysing a run evaluates the images the run was evaluated on. A seed-1 run with a
    test subset and a validation split: the intact model's test error and validation error that
    ``analyze`` reports equal the run's own (final.json, metrics.jsonl)."""
    from senet.train import fit

    cfg = from_flat({"model.name": "se_resnet20", "se.reduction": 4, "data.name": "synthetic",
                     "data.synthetic_train": 120, "data.synthetic_test": 200, "data.test_subset": 50,
                     "data.val_fraction": 0.25, "optim.batch_size": 30, "optim.epochs": 1,
                     "run.threads": 1, "run.progress": False, "run.device": "cpu", "seed": 1,
                     "run.out": str(tmp_path / "run")})
    fit(cfg)
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    for split, want in (("test", final["test_top1_err"]), ("val", last["val_top1_err"])):
        rc = main(["analyze", str(tmp_path / "run"), "--out", str(tmp_path / f"a_{split}"), "--split", split,
                   "--no-singles", "--no-progress", "--attr-images", "1", "--blocks", "SE_4_3",
                   "--device", "cpu"])
        out = capsys.readouterr().out
        assert rc == 0
        n = 50 if split == "test" else 30
        intact = pd.read_parquet(tmp_path / f"a_{split}" / "removal.parquet").iloc[0]  # the "none" row
        assert intact["n"] == n
        for col in [c for c in intact.index if c.startswith("top1_err")]:
            assert intact[col] == pytest.approx(want, abs=1e-9), (split, col)
        assert f"{n} {split} images: top-1 error {want:.2f}%" in out, (out, want)


def test_analyze_best_finds_a_checkpoint_relative_to_the_study_folder(tmp_path, capsys, monkeypatch):
    """`analyze --best` resolves the recorded checkpoint (relative to <results>/<study>, as
    collect records it) against the study folder, not the working directory."""
    d = tmp_path / "results" / "gate"
    rel = "ray/gate-smoke/sigmoid_0/checkpoint_000001"
    _checkpoint(d / rel / "checkpoint.pt", "se_resnet20")
    row = {"study": "gate", "arm": "sigmoid", "trial_id": "sigmoid_0", "seed": 0, "status": "completed",
           "test_top1_err": 90.0, "best_val_top1_err": 89.0, "recipe": "r1", "checkpoint": rel}
    pd.DataFrame([row]).to_parquet(d / "runs.parquet", index=False)
    monkeypatch.chdir(tmp_path)
    first = next(iter(se_modules(build_model("se_resnet20"))))
    assert main(["analyze", "--best", "gate", "--results", "results", "--out", "a", "--classes", "0", "--blocks",
                 first, "--attr-images", "1", "--no-singles", "--no-progress", "--max-images", "8"]) == 0
    out = capsys.readouterr().out
    assert f"-> {Path('results') / 'gate' / rel}" in out and (tmp_path / "a" / "summary.md").is_file()


def _check_figures(drawn, out, plain):
    """What ``senet analyze`` drew: the tables it wrote, plotted (blocks SE_2_3 and stage 4; the
    classes 0°, 18° and 54°)."""
    blocks = ["SE_2_3", "SE_4_1", "SE_4_2", "SE_4_3"]
    classes = ["grating_000deg", "grating_018deg", "grating_054deg"]
    stats = pd.read_parquet(out / "excitations.parquet")
    fig6 = drawn["fig6_excitation_means"].axes
    assert [ax.get_title() for ax in fig6] == blocks
    assert [t.get_text() for t in fig6[0].get_legend().get_texts()] == [*classes, "all classes"]
    for ax, block in zip(fig6, blocks, strict=True):  # each class's line: its mean excitation per channel
        for line, cls in zip(ax.lines, classes, strict=False):
            want = stats[(stats["block"] == block) & (stats["class"] == cls)].sort_values("channel")
            np.testing.assert_allclose(line.get_ydata(), want["mean"])
    fig7 = drawn["fig7_excitation_bands"].axes  # the first two classes, each with its ± std band
    assert [ax.get_title() for ax in fig7] == blocks
    assert all(len(ax.lines) == 2 and len(ax.collections) == 2 for ax in fig7)
    eta, saturation = drawn["selectivity_depth"].axes
    sel = pd.read_csv(out / "selectivity.csv")
    assert [t.get_text() for t in eta.get_xticklabels()] == blocks
    np.testing.assert_allclose(eta.lines[0].get_ydata(), sel["eta2"])
    removal = pd.read_parquet(out / "removal.parquet").iloc[1:]  # the removals, without "none"
    delta, kept = drawn["se_removal"].axes
    assert [t.get_text() for t in delta.get_xticklabels()] == list(removal["removed"])
    np.testing.assert_allclose([p.get_height() for p in delta.patches],
                               [*removal["delta_top1_mean"], *removal["delta_top1_identity"]])
    np.testing.assert_allclose([p.get_height() for p in kept.patches], removal["added_params_pct"])
    attr = pd.read_parquet(out / "attribution.parquet")
    for ax, block in zip(drawn["importance_vs_excitation"].axes, blocks, strict=True):
        d = attr[attr["block"] == block]
        rho = d["mean_excitation"].rank().corr(d["importance"].rank())  # Spearman's ρ
        assert ax.get_title() == f"{block}  ρ = {rho:.2f}"
    cam = drawn["gradcam"]  # per image: the input, the SE model's map, the plain one's
    assert cam.get_suptitle() == "Grad-CAM at the last block"
    titles = [ax.get_title() for ax in cam.axes]
    assert titles[1::3] == ["SE: se_resnet20"] * (len(titles) // 3) and titles[2::3] == [f"plain: {plain}"] * (len(titles) // 3)
    assert set(titles[::3]) == set(classes)


def test_report_command(study_dir, capsys):  # noqa: F811  (the gate study fixture)
    assert main(["report", "gate", "--results", str(study_dir), "--n-boot", "200"]) == 0
    out = capsys.readouterr().out
    assert "| tanh | 10.33 ± 1.26 |" in out and (study_dir / "gate" / "report.md").is_file()
    assert main(["report", "conv", "--results", str(study_dir)]) == 2
    err = capsys.readouterr().err
    assert "no results for study 'conv'" in err and "studies with results: gate" in err
