"""Each epoch of a trial is trained and reported once across SIGKILLs of the sweep's driver.

Fast tests: :func:`ablations.trainable.continuation` on a trial folder built by hand (the states a
kill can leave: a checkpoint newer than the one Tune restores, with or without its row in
``result.json``, an upload cut short), and the trainable itself run without Ray against such a folder.
The slow test runs the kill loop (``tests/kill_loop.py``): >= 20 SIGKILLs of smoke sweeps at random
points, each resumed, then no trial lost, none trained twice, no epoch repeated in a ``result.json``.
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from senet import config
from senet.checkpoint import save_checkpoint
from senet.records.layout import CHECKPOINT, FINAL_JSON

EPOCHS = 3


def _cfg(tmp: Path) -> config.Config:
    return config.from_flat({"optim.epochs": EPOCHS, "run.device": "cpu", "run.tensorboard": False,
                             "run.out": str(tmp / "unused")})


def _line(epoch: int) -> dict:
    return {"epoch": epoch, "train_loss": 1.0 / epoch, "val_top1_err": 50.0, "status": "running",
            "checkpoint": f"/somewhere/e{epoch}/checkpoint.pt"}


def _save(path: Path, cfg: config.Config, epoch: int) -> Path:
    return save_checkpoint(path, epoch=epoch, metrics=[_line(e) for e in range(1, epoch + 1)],
                           config=config.to_dict(cfg))


def _trial(tmp: Path, cfg, checkpoints: dict[int, int | str], rows: list[int], final_row: bool = False) -> Path:
    """A trial folder: ``checkpoints`` index -> epoch (or "cut": an upload cut short), and
    result.json rows for ``rows`` (per-epoch), plus a final row."""
    trial = tmp / "exp" / "r=4_seed0_t_00001"
    trial.mkdir(parents=True)
    for i, epoch in checkpoints.items():
        folder = trial / f"checkpoint_{i:06d}"
        folder.mkdir()
        if epoch == "cut":
            full = _save(tmp / "cut.pt", cfg, 1).read_bytes()
            (folder / CHECKPOINT).write_bytes(full[: len(full) // 2])
            (folder / FINAL_JSON).write_text("{}")  # left over: must not make the folder look final
        else:
            _save(folder / CHECKPOINT, cfg, epoch)
    lines = [{"epoch": e, "training_iteration": e, "final": False, "checkpoint_dir_name": f"checkpoint_{e - 1:06d}"}
             for e in rows]
    if final_row:
        lines.append({"epoch": EPOCHS, "training_iteration": EPOCHS + 1, "final": True})
    (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"cut')
    return trial


def _storage(trial: Path, index: int = -1):
    import pyarrow.fs

    return SimpleNamespace(storage_filesystem=pyarrow.fs.LocalFileSystem(), trial_fs_path=str(trial),
                           current_checkpoint_index=index, trial_working_directory=str(trial.parent / "work"))


class _Restored:
    """What ``tune.get_checkpoint()`` returns, on the local filesystem."""

    def __init__(self, path: Path):
        import pyarrow.fs

        self.path = str(path)
        self.filesystem = pyarrow.fs.LocalFileSystem()

    @contextlib.contextmanager
    def as_directory(self):
        yield self.path


def _epochs(lines) -> list[int]:
    return [int(x["epoch"]) for x in lines]


@pytest.mark.parametrize("case, checkpoints, rows, restored, expect", [
    # the state names epoch 1's checkpoint, result.json and storage already hold epoch 2: go on from 2
    ("row ahead of the state", {0: 1, 1: 2}, [1, 2], 0, (1, 2, [])),
    # the reverse: epoch 2's checkpoint is on storage, its row never reached result.json: replay it
    ("checkpoint ahead of its row", {0: 1, 1: 2}, [1], 0, (1, 2, [2])),
    # an upload cut short above the newest whole checkpoint is skipped and deleted
    ("upload cut short", {0: 1, 1: 2, 2: "cut"}, [1, 2], 0, (1, 2, [])),
    # restored from its newest checkpoint: nothing to do
    ("restored from the newest", {0: 1, 1: 2}, [1, 2], 1, (1, 2, [])),
    # a trial retried by a live driver: storage's result.json lags the driver's, which holds the
    # rows up to the restored checkpoint; none is reported again
    ("retried, result.json behind", {0: 1, 1: 2}, [1], 1, (1, 2, [])),
    ("retried, no result.json yet", {0: 1}, [], 0, (0, 1, [])),
    # Tune starts the trial from scratch (no checkpoint registered): the driver starts its
    # result.json afresh, so every epoch of the newest checkpoint is reported again, none trained
    ("from scratch", {0: 1, 1: 2}, [1, 2], None, (1, 2, [1, 2])),
    ("nothing on storage", {}, [], None, (-1, None, [])),
    ("only a cut upload", {0: "cut"}, [], None, (-1, None, [])),
])
def test_continuation_picks_the_newest_whole_checkpoint(tmp_path, case, checkpoints, rows, restored, expect):
    from ablations.trainable import continuation
    from senet.resume import ResumePoint

    cfg = _cfg(tmp_path)
    trial = _trial(tmp_path, cfg, checkpoints, rows)
    restored_ckpt = _Restored(trial / f"checkpoint_{restored:06d}") if restored is not None else None
    cont = continuation(restored_ckpt, _storage(trial), tmp_path / "run")
    index, epoch, replay = expect
    assert cont.index == index, case
    if epoch is None:
        assert cont.checkpoint is None
    else:
        assert ResumePoint.load(cont.checkpoint).epoch == epoch
        assert cont.checkpoint.parent == tmp_path / "run"
    assert _epochs(cont.replay) == replay
    assert cont.recorded == (frozenset(rows) if restored is not None else frozenset())
    left = sorted(p.name for p in trial.glob("checkpoint_*"))
    assert left == [f"checkpoint_{i:06d}" for i, e in checkpoints.items() if e != "cut"]  # cut ones deleted


def test_continuation_falls_back_to_the_restored_checkpoint(tmp_path):
    """Nothing at or after the restored checkpoint reads whole in the folder listing (here: the
    restored folder is not in it): Tune's checkpoint is used, as before."""
    from ablations.trainable import continuation
    from senet.resume import ResumePoint

    cfg = _cfg(tmp_path)
    trial = _trial(tmp_path, cfg, {3: "cut"}, [1, 2])
    elsewhere = tmp_path / "elsewhere" / "checkpoint_000002"
    _save(elsewhere / CHECKPOINT, cfg, 2)
    cont = continuation(_Restored(elsewhere), _storage(trial), tmp_path / "run")
    assert cont.index == 2 and ResumePoint.load(cont.checkpoint).epoch == 2 and cont.replay == []
    assert not (trial / "checkpoint_000003").exists()


# -- the trainable without Ray ------------------------------------------------------------------

def _fake_fit(calls: list):
    """fit as far as the trainable sees it: from the resume point's epoch to EPOCHS, a checkpoint and
    a report per epoch, final.json at the end."""
    from senet.resume import ResumePoint

    def fit(cfg, report, resume=None, datasets=None, callbacks=()):
        point = ResumePoint.of(resume)
        start = point.epoch if point is not None else 0
        calls.append(start)
        out = Path(cfg.run.out)
        out.mkdir(parents=True, exist_ok=True)
        for e in range(start + 1, EPOCHS + 1):
            path = _save(out / CHECKPOINT, cfg, e)
            report({**_line(e), "checkpoint": str(path)})
        result = {"status": "completed", "epochs_run": EPOCHS, "test_top1_err": 42.0}
        (out / FINAL_JSON).write_text(json.dumps(result))
        return result

    return fit


def _run_trial(monkeypatch, tmp_path, trial: Path, restored: int | None):
    """Run senet_trial against ``trial`` as Tune would after a restore; return (reports, fit starts)
    where a report is (metrics, the checkpoint folder it was persisted to or None)."""
    import ray
    from ray import tune

    from ablations import trainable
    from senet import engine

    storage = _storage(trial, index=restored if restored is not None else -1)
    context = SimpleNamespace(get_storage=lambda: storage, get_trial_id=lambda: "t_00001",
                              get_experiment_name=lambda: "exp")
    reports, starts = [], []

    def report(metrics, checkpoint=None):
        where = None
        if checkpoint is not None:  # what Ray's session does: the next index, copied to storage
            storage.current_checkpoint_index += 1
            where = trial / f"checkpoint_{storage.current_checkpoint_index:06d}"
            shutil.copytree(checkpoint.path, where, dirs_exist_ok=True)
        reports.append((metrics, where))

    monkeypatch.setenv("SENET_SCRATCH", str(tmp_path / "scratch"))
    monkeypatch.setattr(tune, "get_context", lambda: context)
    monkeypatch.setattr(tune, "get_checkpoint",
                        lambda: _Restored(trial / f"checkpoint_{restored:06d}") if restored is not None else None)
    monkeypatch.setattr(tune, "report", report)
    monkeypatch.setattr(engine, "fit", _fake_fit(starts))
    monkeypatch.setattr(ray, "get_runtime_context", lambda: SimpleNamespace(get_node_id=lambda: "node"))
    monkeypatch.setattr(trainable, "datasets_for", lambda cfg: SimpleNamespace(val_x=[0] * 4, test_x=[0] * 8))
    base = {k: v for k, v in config.flatten(_cfg(tmp_path)).items() if k != "seed"}
    trainable.senet_trial({"arm": "r=4", "seed": 0, "base": base, "arms": {"r=4": {"se.reduction": 4}}})
    return reports, starts


@pytest.mark.parametrize("checkpoints, rows, restored, fit_from, reported", [
    # the driver logged epoch 2, the state still names epoch 1: train 3 only, into a new folder
    ({0: 1, 1: 2}, [1, 2], 0, 2, [(3, 3, "checkpoint_000002"), (3, 4, "checkpoint_000003")]),
    # epoch 2's checkpoint reached storage, its row did not: report 2 from the checkpoint, train 3
    ({0: 1, 1: 2}, [1], 0, 2, [(2, 2, None), (3, 3, "checkpoint_000002"), (3, 4, "checkpoint_000003")]),
    # the checkpoint after epoch 3 and 2's row are gone with the kill (cut upload): train 3
    ({0: 1, 1: 2, 2: "cut"}, [1, 2], 0, 2, [(3, 3, "checkpoint_000002"), (3, 4, "checkpoint_000003")]),
    # Tune restarts it from scratch while storage holds epoch 1: report 1 again (the driver's result.json
    # starts afresh), train 2 and 3
    ({0: 1}, [1], None, 1, [(1, 1, None), (2, 2, "checkpoint_000001"), (3, 3, "checkpoint_000002"),
                            (3, 4, "checkpoint_000003")]),
])
def test_a_restored_trial_trains_and_reports_each_epoch_once(monkeypatch, tmp_path, checkpoints, rows, restored,
                                                              fit_from, reported):
    cfg = _cfg(tmp_path)
    trial = _trial(tmp_path, cfg, checkpoints, rows)
    reports, starts = _run_trial(monkeypatch, tmp_path, trial, restored)
    assert starts == [fit_from]
    got = [(m["epoch"], m["training_iteration"], w.name if w else None) for m, w in reports]
    assert got == reported
    assert [m["final"] for m, _ in reports] == [False] * (len(reported) - 1) + [True]


def test_a_trial_whose_final_checkpoint_reached_storage_is_not_trained_again(monkeypatch, tmp_path):
    """The kill fell after the final checkpoint's upload, before the final row reached result.json:
    the trial reports the final row (and the missing epoch 3) from that checkpoint, training nothing."""
    cfg = _cfg(tmp_path)
    trial = _trial(tmp_path, cfg, {0: 1, 1: 2, 2: 3, 3: 3}, [1, 2])
    (trial / "checkpoint_000003" / FINAL_JSON).write_text(json.dumps({"status": "completed", "epochs_run": 3}))
    reports, starts = _run_trial(monkeypatch, tmp_path, trial, restored=1)
    assert starts == [3]  # fit has nothing left to train
    got = [(m["epoch"], m["training_iteration"], m["final"]) for m, _ in reports]
    assert got == [(3, 3, False), (3, 4, True)]


@pytest.mark.slow
def test_twenty_sigkills_lose_nothing_and_repeat_nothing(tmp_path):
    from tests.kill_loop import run_loop

    out = io.StringIO()
    r = run_loop(20, tmp_path, seed=7, out=out)
    summary = {k: r[k] for k in ("kills", "lost", "duplicate_trials", "repeated_epochs", "missing_epochs",
                                 "retrained_epochs", "wall_s")}
    detail = out.getvalue() + "\n".join(r["notes"]) + f"\n{summary}"
    assert r["kills"] >= 20, detail
    assert r["lost"] == 0 and r["duplicate_trials"] == 0 and r["repeated_epochs"] == 0, detail
    assert r["missing_epochs"] == 0, detail
