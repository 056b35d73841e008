"""`senet analyze` and `senet report` end to end, on the synthetic dataset and a fixture study."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import torch

from senet import build_model
from senet import config as C
from senet.checkpoint import save_checkpoint
from senet.cli import main
from senet.data import SYNTHETIC_CLASSES


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _checkpoint(path, model_name):
    """A suite checkpoint of an untrained network on the synthetic gratings (no training needed to
    exercise every analysis path)."""
    cfg = C.from_flat({"model.name": model_name, "data.name": "synthetic", "data.synthetic_train": 64,
                       "data.synthetic_test": 80, "data.val_fraction": 0.0})
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=10, in_chans=1)
    data = {"classes": SYNTHETIC_CLASSES, "mean": (0.5,), "std": (0.25,), "in_chans": 1,
            "input_size": 28, "name": "synthetic"}
    return save_checkpoint(path, model=model.state_dict(), config=C.to_dict(cfg), data=data, epoch=1)


def test_analyze_writes_tables_figures_and_summary(tmp_path, capsys):
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
    attr = pd.read_parquet(out / "attribution.parquet")
    assert set(attr["class"]) == {"grating_000deg", "grating_018deg", "grating_054deg"}
    for stem in ("fig6_excitation_means", "fig7_excitation_bands", "selectivity_depth", "se_removal",
                 "importance_vs_excitation", "gradcam"):
        assert (out / "figures" / f"{stem}.png").is_file() and (out / "figures" / f"{stem}.pdf").is_file()
    summary = (out / "summary.md").read_text()
    assert "| SE_4_3 |" in summary and "figures/gradcam.png" in summary
    assert "SE_4_3" in capsys.readouterr().out


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
                      (["--se.gate", "tanh"], "analyze takes --data.* options")):
        rc = main(["analyze", str(se), "--out", str(tmp_path / "o"), "--no-progress", *argv])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err and err.count("\n") == 1, err


def test_report_command(tmp_path, capsys):
    from tests.test_analysis_render import STUDY, _runs

    d = tmp_path / "gate"
    d.mkdir()
    _runs().to_parquet(d / "runs.parquet", index=False)
    (d / "study.json").write_text(json.dumps(STUDY))
    assert main(["report", "gate", "--results", str(tmp_path), "--n-boot", "200"]) == 0
    out = capsys.readouterr().out
    assert "| tanh | 10.33 ± 1.26 |" in out and (d / "report.md").is_file()
    assert main(["report", "conv", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no results for study 'conv'" in err and "studies with results: gate" in err
