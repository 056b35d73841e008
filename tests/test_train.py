"""The training engine: overfitting, exact resume, divergence as a status, checkpoints, the CLI."""
from __future__ import annotations

import json
import math

import pytest
import torch

from senet import cli
from senet import config as C
from senet import data as D
from senet.checkpoint import load_checkpoint, load_model, save_checkpoint
from senet.models import MODELS
from senet.models.blocks import BasicBlock
from senet.models.registry import register_model
from senet.models.resnet import ResNet
from senet.train import SCHEDULES, evaluate, fit

TINY = "tiny_test_resnet"


@pytest.fixture(autouse=True, scope="module")
def _tiny_model():
    """A 3-block CIFAR-style ResNet: the engine's tests need speed, not depth. Registered only
    while this module's tests run, so registry-wide tests elsewhere never see it."""
    register_model(TINY, lambda **kw: ResNet(BasicBlock, (1, 1, 1), (8, 16, 32), stem="cifar",
                                             stem_width=8, shortcut="pad", **kw),
                   family="test", input_size=28, num_classes=10, in_chans=1, doc="test network")
    yield
    MODELS.remove(TINY)
    MODELS.remove(f"se_{TINY}")


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.delenv("SENET_DATA", raising=False)


def tiny_cfg(**flat):
    base = {"model.name": f"se_{TINY}", "se.reduction": 4, "data.name": "synthetic",
            "data.synthetic_train": 96, "data.synthetic_test": 40, "data.val_fraction": 1 / 6,
            "optim.batch_size": 16, "optim.epochs": 2, "optim.lr": 0.05, "run.threads": 1,
            "run.progress": False, "seed": 3}
    base.update(flat)
    return C.from_flat(base)


def test_overfits_a_tiny_batch():
    cfg = tiny_cfg(**{"data.synthetic_train": 20, "data.val_fraction": 0, "data.augment": "none",
                      "optim.batch_size": 20, "optim.epochs": 60, "optim.schedule": "constant",
                      "optim.weight_decay": 0, "optim.lr": 0.05})
    seen = []
    r = fit(cfg, seen.append)
    assert r["status"] == "completed" and r["epochs_run"] == 60 and len(seen) == 60
    assert seen[-1]["train_top1_err"] == 0.0
    assert seen[-1]["train_loss"] < 0.1 < seen[0]["train_loss"]
    assert math.isnan(seen[-1]["val_top1_err"]) and math.isnan(r["best_val_top1_err"])
    for key in ("epoch", "train_loss", "train_top1_err", "val_top1_err", "val_top5_err", "test_top1_err",
                "test_top5_err", "images_per_s", "epoch_time_s", "train_time_s", "lr", "status", "checkpoint"):
        assert key in seen[-1]


class _Preempted(Exception):
    pass


def test_resume_is_exact(tmp_path):
    cfg = tiny_cfg(**{"run.deterministic": True, "optim.schedule": "cosine", "optim.warmup_epochs": 0.5})
    straight = fit(C.from_flat({"run.out": str(tmp_path / "a")}, cfg))

    def stop_after_first(m):
        if m["epoch"] == 1:
            raise _Preempted  # the checkpoint of epoch 1 is on disk before report is called

    cfg_b = C.from_flat({"run.out": str(tmp_path / "b")}, cfg)
    with pytest.raises(_Preempted):
        fit(cfg_b, stop_after_first)
    assert load_checkpoint(tmp_path / "b")["epoch"] == 1
    resumed = fit(cfg_b, resume=tmp_path / "b")

    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert a["epoch"] == b["epoch"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert straight["test_top1_err"] == resumed["test_top1_err"]
    assert straight["best_val_epoch"] == resumed["best_val_epoch"]
    lines_a = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    lines_b = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines_b] == [1, 2]
    assert [x["train_loss"] for x in lines_a] == [x["train_loss"] for x in lines_b]


def test_resume_refuses_another_model(tmp_path):
    fit(tiny_cfg(**{"optim.epochs": 1, "run.out": str(tmp_path)}))
    with pytest.raises(ValueError, match="se.gate"):
        fit(tiny_cfg(**{"optim.epochs": 2, "se.gate": "tanh"}), resume=tmp_path)


def test_divergence_is_a_status(tmp_path):
    cfg = tiny_cfg(**{"se.gate": "identity", "optim.lr": 1e6, "optim.schedule": "constant",
                      "optim.epochs": 3, "run.out": str(tmp_path)})
    r = fit(cfg)
    assert r["status"] == "diverged" and r["epochs_run"] == 1
    final = json.loads((tmp_path / "final.json").read_text())
    assert final["status"] == "diverged" and final["test_top1_err"] is None
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["status"] == "diverged" and lines[-1]["train_loss"] is None


def test_outputs_and_load_model(tmp_path):
    cfg = tiny_cfg(**{"optim.epochs": 1, "run.out": str(tmp_path)})
    r = fit(cfg)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "metrics.jsonl", "checkpoint.pt", "final.json"}
    assert C.load(tmp_path / "config.json") == cfg
    for key in ("best_val_top1_err", "best_val_epoch", "test_top1_err_at_best_val", "test_top5_err_at_best_val",
                "wall_time_s", "train_time_s", "params", "flops", "se_hidden", "provenance"):
        assert key in r
    assert r["se_hidden"].startswith("SE_2_1:8/2,SE_3_1:16/4,SE_4_1:32/8")  # C // r with r = 4
    assert {"git_commit", "torch_version", "device", "precision", "hostname"} <= set(r["provenance"])
    model, cfg2, meta = load_model(tmp_path / "checkpoint.pt")
    assert cfg2 == cfg and meta["epoch"] == 1 and meta["data"]["classes"] == D.SYNTHETIC_CLASSES
    ds = D.load_datasets(cfg.data)
    err = evaluate(model, ds.test_x, ds.test_y, meta["data"]["mean"], meta["data"]["std"])
    assert err["top1_err"] == pytest.approx(r["test_top1_err"])


def test_load_checkpoint_refuses_foreign_files(tmp_path):
    (tmp_path / "text.pt").write_text("hello")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    torch.save({"format": "senet-checkpoint", "obj": _Preempted()}, tmp_path / "unsafe.pt")
    for name in ("text.pt", "other.pt", "unsafe.pt"):
        with pytest.raises(ValueError, match="not a senet checkpoint") as e:
            load_checkpoint(tmp_path / name)
        assert "\n" not in str(e.value)
    save_checkpoint(tmp_path / "ok.pt", epoch=3, model={"w": torch.ones(1)})
    assert load_checkpoint(tmp_path / "ok.pt")["epoch"] == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_schedules():
    o = C.OptimConfig(lr=0.1, epochs=10, warmup_epochs=1, milestones="5,8", plateau_patience=1)
    cos = SCHEDULES.get("cosine")(o, 10)
    assert cos.lr(0) == pytest.approx(0.01) and cos.lr(9) == pytest.approx(0.1)
    assert cos.lr(10) == pytest.approx(0.1) and cos.lr(55) == pytest.approx(0.05) and cos.lr(100) == pytest.approx(0)
    step = SCHEDULES.get("step")(o, 10)
    assert [step.lr(s) for s in (20, 49, 50, 80)] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    plateau = SCHEDULES.get("plateau")(o, 10)
    for err in (30, 20, 21, 22):  # two epochs without improvement > patience 1: ÷10 (the paper's rule)
        plateau.epoch_end(err)
    assert plateau.lr(0) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="cosine"):
        SCHEDULES.get("linear")


def run_cli(capsys, *argv):
    code = cli.main(["train", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, needle", [
    (["--optim.lrr", "0.1"], "unknown config key 'optim.lrr'"),
    (["--lr", "fast"], "bad value for optim.lr"),
    (["--se.gate", "sigmod"], "sigmoid"),
    (["--model", "resnet21"], "bad value for model.name"),
    (["--optim.schedule", "linear"], "optim.schedule"),
    (["--data.name", "mnist", "--epochs", "1"], "unknown dataset 'mnist'"),
    (["--config", "/nonexistent/run.yaml"], "config file not found"),
])
def test_cli_bad_input_is_one_line(capsys, argv, needle):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    lines = [ln for ln in err.splitlines() if not ln.startswith("senet: warning")]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err


def test_cli_missing_data(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(D, "SYSTEM_ROOTS", ())
    code, out, err = run_cli(capsys, "--data.name", "fashion-mnist", "--data.root", str(tmp_path))
    lines = [ln for ln in err.splitlines() if not ln.startswith("senet: warning")]
    assert code == 2 and len(lines) == 1 and "apt-get install dataset-fashion-mnist" in lines[0]


def test_cli_train_writes_run_folder(capsys, tmp_path):
    (tmp_path / "run.yaml").write_text(f"model:\n  name: {TINY}\ndata:\n  name: synthetic\n"
                                       "  synthetic_train: 64\n  synthetic_test: 32\n")
    code, out, err = run_cli(capsys, "--config", str(tmp_path / "run.yaml"), "--epochs", "1",
                             "--optim.batch_size", "16", "--seed", "1", "--run.threads", "1",
                             "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert "status completed" in out.splitlines()[-1] and "test top-1 err" in out
    m = json.loads((tmp_path / "out" / "metrics.jsonl").read_text().splitlines()[0])
    assert m["epoch"] == 1 and 0 <= m["test_top1_err"] <= 100 and m["images_per_s"] > 0
    assert json.loads((tmp_path / "out" / "final.json").read_text())["status"] == "completed"
    cfg = C.load(tmp_path / "out" / "config.json")
    assert cfg.model.name == TINY and cfg.seed == 1 and cfg.optim.batch_size == 16
    # resume from the folder for one more epoch
    code, out, err = run_cli(capsys, "--resume", str(tmp_path / "out"), "--epochs", "2")
    assert code == 0, err
    assert [json.loads(x)["epoch"] for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_cli_train_keeps_an_existing_run(capsys, tmp_path):
    args = ["--model", TINY, "--data.name", "synthetic", "--data.synthetic_train", "32",
            "--data.synthetic_test", "16", "--data.val_fraction", "0", "--epochs", "1", "--optim.batch_size", "16",
            "--run.threads", "1", "--out", str(tmp_path / "out")]
    assert run_cli(capsys, *args)[0] == 0
    before = (tmp_path / "out" / "metrics.jsonl").read_text()
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and err.count("\n") == 1 and "already holds a run" in err and "--resume" in err
    assert (tmp_path / "out" / "metrics.jsonl").read_text() == before  # nothing lost
    code, out, err = run_cli(capsys, *args, "--overwrite", "--seed", "3")
    assert code == 0, err
    assert C.load(tmp_path / "out" / "config.json").seed == 3
    epoch_line, final_line = out.splitlines()[-2:]  # no validation split: no validation error shown
    assert epoch_line.startswith("epoch") and "val err" not in epoch_line and "-%" not in epoch_line
    assert "status completed" in final_line and "best val" not in final_line
