"""The training engine: overfitting, exact resume, divergence as a status, checkpoints, the CLI."""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import time

import pytest
import torch

from senet import cli, config, data, datasets, engine, runtime
from senet.callbacks import Callback, ProgressBar
from senet.checkpoint import load_checkpoint, load_model, save_checkpoint
from senet.engine import evaluate, fit
from senet.metrics import EPOCH_COLUMNS, METRIC_COLUMNS, RESULT_KEYS, FitResult
from senet.models import build_model, se_modules
from senet.schedules import SCHEDULES

TINY = "tiny_test_resnet"  # registered while this module's tests run (the tiny_resnet fixture)

pytestmark = pytest.mark.usefixtures("tiny_resnet", "one_thread", "no_senet_data")


def tiny_cfg(**flat):
    base = {"model.name": f"se_{TINY}", "se.reduction": 4, "data.name": "synthetic",
            "data.synthetic_train": 96, "data.synthetic_test": 40, "data.val_fraction": 1 / 6,
            "optim.batch_size": 16, "optim.epochs": 2, "optim.lr": 0.05, "run.threads": 1,
            "run.progress": False, "seed": 3}
    base.update(flat)
    return config.from_flat(base)


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
    straight = fit(config.from_flat({"run.out": str(tmp_path / "a")}, cfg))

    def stop_after_first(m):
        if m["epoch"] == 1:
            raise _Preempted  # the checkpoint of epoch 1 is on disk before report is called

    cfg_b = config.from_flat({"run.out": str(tmp_path / "b")}, cfg)
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
    assert config.load(tmp_path / "config.json") == cfg
    for key in ("best_val_top1_err", "best_val_epoch", "test_top1_err_at_best_val", "test_top5_err_at_best_val",
                "wall_time_s", "train_time_s", "params", "flops", "se_hidden", "provenance"):
        assert key in r
    assert r["se_hidden"].startswith("SE_2_1:8/2,SE_3_1:16/4,SE_4_1:32/8")  # C // r with r = 4
    assert {"git_commit", "torch_version", "device", "precision", "hostname"} <= set(r["provenance"])
    model, cfg2, meta = load_model(tmp_path / "checkpoint.pt")
    assert cfg2 == cfg and meta["epoch"] == 1 and meta["data"]["classes"] == data.SYNTHETIC_CLASSES
    ds = data.load_datasets(cfg.data)
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
    o = config.OptimConfig(lr=0.1, epochs=10, warmup_epochs=1, milestones="5,8", plateau_patience=1)
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
    (["--data.name", "mnist", "--epochs", "1"], "bad value for data.name: 'mnist'"),
    (["--config", "/nonexistent/run.yaml"], "config file not found"),
])
def test_cli_bad_input_is_one_line(capsys, argv, needle):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    lines = [ln for ln in err.splitlines() if not ln.startswith("senet: warning")]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err


def test_cli_missing_data(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "SYSTEM_ROOTS", ())
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
    cfg = config.load(tmp_path / "out" / "config.json")
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
    assert config.load(tmp_path / "out" / "config.json").seed == 3
    epoch_line, final_line = out.splitlines()[-2:]  # no validation split: no validation error shown
    assert epoch_line.startswith("epoch") and "val err" not in epoch_line and "-%" not in epoch_line
    assert "status completed" in final_line and "best val" not in final_line


# ---------------------------------------------------------------------------------------------
# Resume writes to the folder it is given, and nowhere else
# ---------------------------------------------------------------------------------------------
def _hashes(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _cli_args(out, epochs=1, *extra):
    return ["--model", TINY, "--data.name", "synthetic", "--data.synthetic_train", "64", "--data.synthetic_test",
            "16", "--optim.batch_size", "16", "--epochs", str(epochs), "--run.threads", "1", "--seed", "1",
            "--run.deterministic", "true", "--out", str(out), *extra]


def _epochs(folder):
    return [json.loads(x)["epoch"] for x in (folder / "metrics.jsonl").read_text().splitlines()]


def test_resume_of_a_copied_run_leaves_the_original_byte_identical(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_cli(capsys, *_cli_args("runs/int"))[0] == 0  # run.out recorded relative: "runs/int"
    shutil.copytree("runs/int", "runs/int_copy")
    before = _hashes(tmp_path / "runs/int")
    code, out, err = run_cli(capsys, "--resume", "runs/int_copy", "--epochs", "2")
    assert code == 0, err
    assert _hashes(tmp_path / "runs/int") == before
    assert _epochs(tmp_path / "runs/int_copy") == [1, 2]
    assert load_checkpoint(tmp_path / "runs/int_copy")["epoch"] == 2
    assert config.load(tmp_path / "runs/int_copy/config.json").run.out == "runs/int_copy"


def test_resume_from_another_directory_leaves_a_same_named_run_there_alone(capsys, tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    assert run_cli(capsys, *_cli_args("runs/x"))[0] == 0
    monkeypatch.chdir(tmp_path / "b")
    assert run_cli(capsys, *_cli_args("runs/x", 1, "--seed", "5"))[0] == 0  # an unrelated run, same name
    before = _hashes(tmp_path / "b/runs/x")
    code, out, err = run_cli(capsys, "--resume", str(tmp_path / "a/runs/x"), "--epochs", "2")
    assert code == 0, err
    assert _hashes(tmp_path / "b/runs/x") == before
    assert _epochs(tmp_path / "a/runs/x") == [1, 2]


def test_resume_of_a_checkpoint_file_writes_beside_it(capsys, tmp_path, monkeypatch):
    """A sweep trial's layout: the run trained in a scratch folder, its checkpoint was copied into
    the trial's checkpoint folder. Resuming that file continues the run in that folder."""
    monkeypatch.chdir(tmp_path)
    assert run_cli(capsys, *_cli_args(tmp_path / "scratch/trial/run"))[0] == 0
    trial = tmp_path / "results/gate/ray/exp/trial_0/checkpoint_000000"
    trial.mkdir(parents=True)
    shutil.copy2(tmp_path / "scratch/trial/run/checkpoint.pt", trial / "checkpoint.pt")
    before = _hashes(tmp_path / "scratch")
    code, out, err = run_cli(capsys, "--resume", str(trial / "checkpoint.pt"), "--epochs", "2")
    assert code == 0, err
    assert _hashes(tmp_path / "scratch") == before
    assert _epochs(trial) == [1, 2] and load_checkpoint(trial)["epoch"] == 2
    assert {p.name for p in trial.iterdir()} >= {"config.json", "metrics.jsonl", "final.json"}


def test_resume_with_out_continues_in_a_new_folder_only(capsys, tmp_path):
    assert run_cli(capsys, *_cli_args(tmp_path / "src"))[0] == 0
    before = _hashes(tmp_path / "src")
    code, out, err = run_cli(capsys, "--resume", str(tmp_path / "src"), "--epochs", "2", "--out", str(tmp_path / "new"))
    assert code == 0, err
    assert _hashes(tmp_path / "src") == before and _epochs(tmp_path / "new") == [1, 2]
    code, out, err = run_cli(capsys, "--resume", str(tmp_path / "src"), "--epochs", "2", "--out", str(tmp_path / "new"))
    assert code == 2 and "already holds a run" in err and err.count("\n") == 1


# ---------------------------------------------------------------------------------------------
# Extending a finished run: a new schedule phase, never a shorter run
# ---------------------------------------------------------------------------------------------
def _lines(folder):
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


def test_extending_a_finished_cosine_run_adds_a_phase(capsys, tmp_path):
    run = tmp_path / "flat"
    assert run_cli(capsys, *_cli_args(run, 2, "--lr", "0.08", "--optim.warmup_epochs", "0"))[0] == 0
    end_lr = _lines(run)[-1]["lr"]
    code, out, err = run_cli(capsys, "--resume", str(run), "--epochs", "4")
    assert code == 0, err
    assert "phase 2: epochs 3-4" in out and "fresh cosine schedule" in out
    lines = _lines(run)
    assert [m["epoch"] for m in lines] == [1, 2, 3, 4] and [m["phase"] for m in lines] == [1, 1, 2, 2]
    assert [m["status"] for m in lines] == ["running"] * 3 + ["completed"]  # no "completed" mid-history
    # phase 2 is a fresh 2-epoch cosine over the new epochs (steps counted from its start), not the
    # old 2-epoch formula stretched to 4 epochs
    spe = 3  # 64 images, 1/10 held out -> 58 training images, batches of 16
    fresh = SCHEDULES.get("cosine")(config.OptimConfig(lr=0.08, epochs=2, warmup_epochs=0), spe)
    assert lines[2]["lr"] == pytest.approx(fresh.lr(spe - 1)) and lines[3]["lr"] == pytest.approx(fresh.lr(2 * spe - 1))
    stretched = SCHEDULES.get("cosine")(config.OptimConfig(lr=0.08, epochs=4, warmup_epochs=0), spe)
    assert lines[2]["lr"] != pytest.approx(stretched.lr(3 * spe - 1)) and end_lr < lines[2]["lr"]
    assert config.load(run / "config.json").optim.epochs == 4
    final = json.loads((run / "final.json").read_text())
    assert final["status"] == "completed" and final["epochs_run"] == 4
    assert [(p["phase"], p["start_epoch"], p["end_epoch"]) for p in final["phases"]] == [(1, 0, 2), (2, 2, 4)]
    assert [p["phase"] for p in load_checkpoint(run)["phases"]] == [1, 2]


def test_resume_never_shortens_and_a_complete_run_is_left_alone(capsys, tmp_path):
    run = tmp_path / "r"
    assert run_cli(capsys, *_cli_args(run, 2))[0] == 0
    before = _hashes(run)
    code, out, err = run_cli(capsys, "--resume", str(run), "--epochs", "1")
    assert code == 2 and err.count("\n") == 1 and "already trained 2 epochs" in err
    code, out, err = run_cli(capsys, "--resume", str(run), "--epochs", "2")
    assert code == 0 and "already completed its 2 epochs; nothing to do" in out
    code, out, err = run_cli(capsys, "--resume", str(run))
    assert code == 0 and "nothing to do" in out
    assert _hashes(run) == before


def test_an_unfinished_run_keeps_its_plan(tmp_path):
    cfg = tiny_cfg(**{"optim.epochs": 3, "run.out": str(tmp_path)})

    def stop(m):
        raise _Preempted

    with pytest.raises(_Preempted):
        fit(cfg, stop)
    with pytest.raises(ValueError, match="stopped at epoch 1 of the 3") as e:
        fit(config.from_flat({"optim.epochs": 2}, cfg), resume=tmp_path)
    assert isinstance(e.value, cli.UserError)


def test_extension_is_the_same_whether_or_not_the_run_was_interrupted(tmp_path):
    """A run extended past its plan in one call (phase 1 finishes, phase 2 starts) trains exactly as
    the finished run extended afterwards."""
    cfg = tiny_cfg(**{"run.deterministic": True, "optim.warmup_epochs": 0.5, "optim.epochs": 2})
    a, b = config.from_flat({"run.out": str(tmp_path / "a")}, cfg), config.from_flat({"run.out": str(tmp_path / "b")}, cfg)
    fit(a)
    fit(config.from_flat({"optim.epochs": 3}, a), resume=tmp_path / "a")

    def stop_after_first(m):
        if m["epoch"] == 1:
            raise _Preempted

    with pytest.raises(_Preempted):
        fit(b, stop_after_first)
    fit(config.from_flat({"optim.epochs": 3}, b), resume=tmp_path / "b")
    ca, cb = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
    la, lb = _lines(tmp_path / "a"), _lines(tmp_path / "b")
    assert [(m["phase"], m["lr"], m["train_loss"]) for m in la] == [(m["phase"], m["lr"], m["train_loss"]) for m in lb]
    assert [m["phase"] for m in la] == [1, 1, 2]


def test_extending_a_plateau_run_continues_its_schedule(tmp_path):
    cfg = tiny_cfg(**{"optim.schedule": "plateau", "optim.plateau_patience": 0, "run.out": str(tmp_path)})
    fit(cfg)
    scale = load_checkpoint(tmp_path)["schedule"]["scale"]
    r = fit(config.from_flat({"optim.epochs": 3}, cfg), resume=tmp_path)
    assert [(p["phase"], p["end_epoch"]) for p in r["phases"]] == [(1, 3)]  # no restart of the lr
    assert [m["phase"] for m in _lines(tmp_path)] == [1, 1, 1]
    assert load_checkpoint(tmp_path)["schedule"]["scale"] <= scale


def test_a_finished_checkpoint_alone_gets_its_run_files_and_nothing_is_retrained(tmp_path):
    """A sweep trial restored from its last checkpoint into a bare folder: fit trains nothing, fills
    in the folder's files, and a second call leaves them byte-identical."""
    cfg = tiny_cfg(**{"optim.epochs": 1, "run.out": str(tmp_path / "a")})
    first = fit(cfg)
    (tmp_path / "bare").mkdir()
    shutil.copy2(tmp_path / "a/checkpoint.pt", tmp_path / "bare/checkpoint.pt")
    bare = config.from_flat({"run.out": str(tmp_path / "bare")}, cfg)
    r = fit(bare, resume=tmp_path / "bare/checkpoint.pt")
    assert r["status"] == "completed" and r["epochs_run"] == 1 and r["test_top1_err"] == first["test_top1_err"]
    assert {p.name for p in (tmp_path / "bare").iterdir()} == {"checkpoint.pt", "config.json", "metrics.jsonl",
                                                             "final.json"}
    assert _epochs(tmp_path / "bare") == [1]
    before = _hashes(tmp_path / "bare")
    fit(bare, resume=tmp_path / "bare")
    assert _hashes(tmp_path / "bare") == before


# ---------------------------------------------------------------------------------------------
# Interrupted runs say what they left; a run without --out gets a named folder of its own
# ---------------------------------------------------------------------------------------------
def test_a_run_interrupted_in_its_first_epoch_says_what_is_there(capsys, tmp_path, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    run = tmp_path / "cut"
    monkeypatch.setattr(engine, "evaluate", interrupted)  # the first epoch never ends
    code, out, err = run_cli(capsys, *_cli_args(run))
    assert code == 130 and "no checkpoint" in err
    monkeypatch.undo()
    assert {p.name for p in run.iterdir()} == {"config.json", "metrics.jsonl"}
    for argv in (_cli_args(run), ["--resume", str(run)]):
        code, out, err = run_cli(capsys, *argv)
        assert code == 2 and err.count("\n") == 1, err
        assert "no checkpoint" in err and "interrupted before its first epoch ended" in err and "--overwrite" in err
    assert run_cli(capsys, *_cli_args(run), "--overwrite")[0] == 0


def test_train_without_out_makes_a_named_run_folder(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20250102-030405")
    args = [a for a in _cli_args("x") if a not in ("--out", "x")]
    for name in (f"{TINY}-20250102-030405", f"{TINY}-20250102-030405-2"):
        code, out, err = run_cli(capsys, *args)
        assert code == 0, err
        assert out.splitlines()[0].startswith(f"run folder: runs/{name}")
        assert {"config.json", "metrics.jsonl", "checkpoint.pt", "final.json"} <= {
            p.name for p in (tmp_path / "runs" / name).iterdir()}
        assert config.load(tmp_path / "runs" / name / "config.json").run.out == f"runs/{name}"
    code, out, err = run_cli(capsys, *args, "--data.name", "mnist")
    assert code == 2 and sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        f"{TINY}-20250102-030405", f"{TINY}-20250102-030405-2"]  # a failed start leaves no folder


# ---------------------------------------------------------------------------------------------
# Precision (bf16 where the CPU has it natively) and evaluation (device batches, when the test set is read)
# ---------------------------------------------------------------------------------------------
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, monkeypatch):
    cases = {"fpu avx2 avx512f avx512_bf16 avx512_vnni": True, "fpu avx2 amx_tile amx_bf16": True,
             "fpu avx2 avx512f avx512bw avx512_vnni": False}  # AVX-512 alone only emulates bf16
    for flags, native in cases.items():
        (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n\n"
                                          f"processor\t: 1\nflags\t\t: {flags}\n")
        monkeypatch.setattr(runtime, "CPUINFO", tmp_path / "cpuinfo")
        runtime.cpu_flags.cache_clear()
        assert runtime.cpu_has_native_bf16() is native, flags
    monkeypatch.setattr(runtime, "CPUINFO", tmp_path / "missing")  # not Linux: nothing detected, fp32
    runtime.cpu_flags.cache_clear()
    assert runtime.cpu_has_native_bf16() is False
    runtime.cpu_flags.cache_clear()


@pytest.mark.parametrize("native", [True, False])
def test_precision_auto_follows_detection_and_forced_values_win(monkeypatch, native):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert runtime.resolve_precision(tiny_cfg(), cpu) == ("bf16" if native else "fp32", False)
    assert runtime.resolve_precision(tiny_cfg(**{"run.precision": "fp32"}), cpu) == ("fp32", False)
    assert runtime.resolve_precision(tiny_cfg(**{"run.precision": "bf16"}), cpu) == ("bf16", False)
    assert runtime.resolve_precision(tiny_cfg(), torch.device("cuda")) == ("bf16", True)  # no GPU needed to resolve


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_trains_in_it_and_keeps_fp32_state(tmp_path, monkeypatch, native):
    """``auto`` trains in bf16 only where detected, records what it resolved to, and leaves the
    weights, the optimizer state and the BN statistics in fp32 (the loss comes from fp32 logits)."""
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    seen = {"conv": set(), "loss": set()}  # dtypes in the training steps (FLOP counting runs in fp32)
    real_ce = torch.nn.CrossEntropyLoss.forward

    def ce(self, logits, target):
        seen["loss"].add(logits.dtype)
        return real_ce(self, logits, target)

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", ce)
    real_build = engine.build_from_config

    def record(mod, inputs, out):
        if torch.is_grad_enabled():
            seen["conv"].add(out.dtype)

    def build(*a, **kw):
        m = real_build(*a, **kw)
        next(x for x in m.modules() if isinstance(x, torch.nn.Conv2d)).register_forward_hook(record)
        return m

    monkeypatch.setattr(engine, "build_from_config", build)
    r = fit(tiny_cfg(**{"optim.epochs": 1, "run.out": str(tmp_path)}))
    want = torch.bfloat16 if native else torch.float32
    assert seen["conv"] == {want} and seen["loss"] == {torch.float32}
    assert r["provenance"]["precision"] == ("bf16" if native else "fp32")
    assert json.loads((tmp_path / "final.json").read_text())["provenance"]["precision"] == r["provenance"]["precision"]
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["provenance"]["precision"] == r["provenance"]["precision"]
    floats = [t for t in ckpt["model"].values() if t.is_floating_point()]
    floats += [t for st in ckpt["optimizer"]["state"].values() for t in st.values()
               if torch.is_tensor(t) and t.is_floating_point()]
    assert floats and {t.dtype for t in floats} == {torch.float32}
    assert any(k.endswith("running_var") for k in ckpt["model"])


def test_evaluate_runs_under_inference_mode_in_device_batches():
    model = build_model(f"se_{TINY}", num_classes=10, in_chans=1, se=config.SEConfig(reduction=4))
    conv = next(x for x in model.modules() if isinstance(x, torch.nn.Conv2d))
    calls = []
    conv.register_forward_hook(lambda m, i, o: calls.append((torch.is_inference_mode_enabled(), len(i[0]), o.dtype)))
    n = 2 * runtime.EVAL_BATCH["cpu"] + 7
    x, y = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (n,))
    model.train()
    fp32 = evaluate(model, x, y, [0.5], [0.25])
    assert model.training  # restored
    assert calls == [(True, runtime.EVAL_BATCH["cpu"], torch.float32)] * 2 + [(True, 7, torch.float32)]
    calls.clear()
    bf16 = evaluate(model, x, y, [0.5], [0.25], precision="bf16", batch_size=100)
    assert [c[1] for c in calls] == [100, 100, n - 200] and {c[2] for c in calls} == {torch.bfloat16}
    assert all(c[0] for c in calls)
    assert fp32.keys() == bf16.keys() and all(0 <= bf16[k] <= 100 for k in ("top1_err", "top5_err"))


def _scripted_validation(monkeypatch, val_errors):
    """Make fit see the validation errors ``val_errors`` (epoch by epoch), so that the best
    validation epoch is known in advance; the test set is evaluated for real."""
    real = engine.evaluate

    def fake(model, x, *a, **kw):
        r = real(model, x, *a, **kw)
        if len(x) == 16:  # the validation split of tiny_cfg (1/6 of 96)
            r = dict(r, top1_err=val_errors[fake.calls % len(val_errors)])
            fake.calls += 1
        return r

    fake.calls = 0
    monkeypatch.setattr(engine, "evaluate", fake)
    return fake


def test_eval_test_end_gives_the_same_final_and_best_val_test_errors(tmp_path, monkeypatch):
    base = {"optim.epochs": 4, "run.deterministic": True, "data.synthetic_test": 40}
    fake = _scripted_validation(monkeypatch, [40.0, 10.0, 20.0, 30.0])  # best validation: epoch 2
    every_lines = []
    every = fit(tiny_cfg(**base, **{"run.eval_test": "every", "run.out": str(tmp_path / "every")}),
                every_lines.append)
    fake.calls = 0
    end_lines = []
    end = fit(tiny_cfg(**base, **{"run.eval_test": "end", "run.out": str(tmp_path / "end")}), end_lines.append)

    assert every["best_val_epoch"] == end["best_val_epoch"] == 2
    for key in ("test_top1_err", "test_top5_err", "test_top1_err_at_best_val", "test_top5_err_at_best_val"):
        assert end[key] == every[key] and math.isfinite(end[key]), key
    # mid-run: NaN test errors on the epochs where the test set was not evaluated
    assert [math.isnan(m["test_top1_err"]) for m in end_lines] == [True, True, True, False]
    assert all(math.isfinite(m["test_top1_err"]) for m in every_lines)
    assert [m["val_top1_err"] for m in end_lines] == [40.0, 10.0, 20.0, 30.0]  # validation every epoch
    # the files: the best epoch's line gets its test errors once the run has ended, the rest stay null
    lines = [json.loads(x) for x in (tmp_path / "end" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3, 4]
    assert [m["test_top1_err"] is None for m in lines] == [True, False, True, False]
    assert lines[1]["test_top1_err"] == every_lines[1]["test_top1_err"]
    assert lines[1]["test_loss"] == pytest.approx(every_lines[1]["test_loss"])
    final = json.loads((tmp_path / "end" / "final.json").read_text())
    assert final["test_top1_err_at_best_val"] == every["test_top1_err_at_best_val"]
    assert "best_model" not in load_checkpoint(tmp_path / "end")  # nothing pending in the last checkpoint


def test_eval_test_end_keeps_the_best_weights_across_a_resume(tmp_path, monkeypatch):
    base = {"optim.epochs": 4, "run.deterministic": True, "run.eval_test": "end"}
    fake = _scripted_validation(monkeypatch, [40.0, 10.0, 20.0, 30.0])
    straight = fit(tiny_cfg(**base, **{"run.out": str(tmp_path / "a")}))

    def stop_after_third(m):
        if m["epoch"] == 3:
            raise _Preempted

    fake.calls = 0
    with pytest.raises(_Preempted):
        fit(tiny_cfg(**base, **{"run.out": str(tmp_path / "b")}), stop_after_third)
    assert "best_model" in load_checkpoint(tmp_path / "b")  # epoch 2's weights, still untested
    resumed = fit(tiny_cfg(**base, **{"run.out": str(tmp_path / "b")}), resume=tmp_path / "b")
    assert resumed["best_val_epoch"] == 2
    for key in ("test_top1_err", "test_top1_err_at_best_val", "test_top5_err_at_best_val"):
        assert resumed[key] == straight[key] and math.isfinite(resumed[key]), key


def test_cli_refuses_a_bad_eval_test(capsys):
    code, out, err = run_cli(capsys, "--run.eval_test", "sometimes")
    lines = [ln for ln in err.splitlines() if not ln.startswith("senet: warning")]
    assert code == 2 and len(lines) == 1 and "run.eval_test" in lines[0] and "every, end" in lines[0]


# ---------------------------------------------------------------------------------------------
# The engine's result, callbacks and a resume that reads its checkpoint once
# ---------------------------------------------------------------------------------------------
def test_the_result_is_final_json_and_names_the_metric_columns(tmp_path):
    r = fit(tiny_cfg(**{"optim.epochs": 1, "run.out": str(tmp_path)}))
    final = json.loads((tmp_path / "final.json").read_text())
    assert isinstance(r, FitResult) and list(final) == list(r) == list(RESULT_KEYS)
    assert {**r} == r.to_dict() and dict(r) == r.to_dict()
    assert list(METRIC_COLUMNS) == [k for k in RESULT_KEYS if k not in ("phases", "provenance")]
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [list(m) for m in lines] == [list(EPOCH_COLUMNS)]
    with pytest.raises(KeyError):
        r["no_such_column"]


class _Recorder(Callback):
    """Every hook in order, and the SE excitations of the validation pass (what a TensorBoard
    callback would turn into histograms), read through forward hooks on the evaluated model."""

    def __init__(self):
        self.calls, self.excitations, self.handles = [], {}, []

    def on_fit_start(self, run):
        self.calls.append(("fit_start", run.epoch))

    def on_epoch_start(self, run):
        self.calls.append(("epoch_start", run.epoch))

    def on_train_progress(self, run, progress):
        self.calls.append(("progress", progress.done, progress.steps))
        assert progress.images == progress.done * run.batch_size and math.isfinite(progress.loss)

    def on_eval_start(self, run, split, model):
        self.calls.append(("eval_start", split))
        if split == "val":
            for name, se in se_modules(model).items():
                record = lambda m, i, out, name=name: self.excitations.setdefault(name, []).append(out.shape)
                self.handles.append(se.register_forward_hook(record))

    def on_eval_end(self, run, split, model, errors):
        self.calls.append(("eval_end", split, sorted(errors)))
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def on_epoch_end(self, run, metrics):
        self.calls.append(("epoch_end", metrics["epoch"], metrics["checkpoint"] is not None))
        metrics["epoch"] = -1  # a callback's copy: nobody else sees the change

    def on_fit_end(self, run, result):
        self.calls.append(("fit_end", result["epochs_run"]))


def test_callbacks_follow_the_loop_and_see_the_evaluated_model(tmp_path):
    rec, seen = _Recorder(), []
    cfg = tiny_cfg(**{"optim.epochs": 2, "run.out": str(tmp_path), "data.synthetic_train": 96,
                      "optim.batch_size": 16, "run.eval_test": "every"})
    fit(cfg, seen.append, callbacks=[rec, ProgressBar()])  # the bar draws on the captured stderr
    steps = 80 // 16  # 96 images, 1/6 held out
    errs = ["loss", "top1_err", "top5_err"]
    epoch = [("progress", steps, steps), ("eval_start", "val"), ("eval_end", "val", errs),
             ("eval_start", "test"), ("eval_end", "test", errs)]
    assert rec.calls == [("fit_start", 0), ("epoch_start", 1), *epoch, ("epoch_end", 1, True),
                         ("epoch_start", 2), *epoch, ("epoch_end", 2, True), ("fit_end", 2)]
    assert [m["epoch"] for m in seen] == [1, 2]
    n_val = 16
    assert rec.excitations and all(sum(s[0] for s in shapes) == 2 * n_val for shapes in rec.excitations.values())


def test_cli_resume_reads_the_checkpoint_and_its_config_once(capsys, tmp_path, monkeypatch):
    from senet import resume

    assert run_cli(capsys, *_cli_args(tmp_path / "r", 1))[0] == 0
    loads, parses = [], []
    real_load, real_parse = resume.load_checkpoint, config.from_dict
    monkeypatch.setattr(resume, "load_checkpoint", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    monkeypatch.setattr(config, "from_dict", lambda *a, **k: parses.append(a) or real_parse(*a, **k))
    code, out, err = run_cli(capsys, "--resume", str(tmp_path / "r"), "--epochs", "2")
    assert code == 0, err
    assert len(loads) == 1 and len(parses) == 1
    assert _epochs(tmp_path / "r") == [1, 2]


def test_results_written_in_a_checkout_do_not_make_its_code_dirty(tmp_path):
    """A sweep run from a checkout updates results/<study>/runs.parquet as it trains: the rows it
    records say the code was clean; a change to the code says dirty."""
    import shutil
    import subprocess

    from senet.provenance import code_dirty

    if shutil.which("git") is None:
        pytest.skip("no git")
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / "results" / "gate").mkdir(parents=True)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "results" / "gate" / "runs.csv").write_text("a\n")
    (tmp_path / "pkg" / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert not code_dirty(tmp_path / "pkg")
    (tmp_path / "results" / "gate" / "runs.csv").write_text("a\nb\n")
    assert not code_dirty(tmp_path / "pkg")
    (tmp_path / "pkg" / "code.py").write_text("x = 2\n")
    assert code_dirty(tmp_path / "pkg")
