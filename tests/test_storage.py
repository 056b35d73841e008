"""Sweeps stored in an object store: ``--storage s3://BUCKET/PREFIX`` against a real S3 API (moto's
server on 127.0.0.1, started by the module), ``file://`` URIs, and the one-line errors of a bad URI.

The slow test runs the whole path through a bucket: a smoke sweep stored in it, its driver
SIGKILLed mid-sweep, resumed (every trial finishes once), collected from the URI, reported and
analysed from the checkpoint URI the table records; the secret key appears in no file of the results
folder, the bucket or Ray's session logs, and in no output.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from ablations import sweep
from ablations.checkpoint_retention import named_checkpoints, prune_superseded, repair_missing
from ablations.collect import collect
from ablations.tune_storage import StoredExperiment
from analysis.study_results import best_checkpoint, checkpoint_path, count_test_images
from senet.cli import main
from senet.errors import UserError
from senet.records.layout import study_paths
from senet.records.object_store import cache_root, is_uri, local_folder, location
from tests.helpers import (
    free_port,
    gate_arms,
    json_rows,
    kill_group,
    senet_argv,
    sweep_env,
    terminated_trial_ids,
)
from tests.test_ablations import _ckpts, _fake_trial, _state

BUCKET = "senet-bucket"
SECRET = "senet-test-SECRET-9f3c1d7e"  # the secret key of the tests: must never be written anywhere


# ------------------------------------------------------------------------------------------------
# URIs, without a store
# ------------------------------------------------------------------------------------------------
def test_uris_are_parsed_and_checked_without_a_store(tmp_path):
    loc = location("s3://senet-bucket/studies/gate/")
    assert (loc.scheme, loc.path, loc.uri) == ("s3", "senet-bucket/studies/gate", "s3://senet-bucket/studies/gate")
    assert loc.child("gate-smoke", "t/").uri == "s3://senet-bucket/studies/gate/gate-smoke/t"
    query = location("s3://b-1/p?endpoint_override=127.0.0.1:9000&scheme=http")
    assert query.child("x.pt").uri == "s3://b-1/p/x.pt?endpoint_override=127.0.0.1:9000&scheme=http"
    assert query.child("x.pt").parent == query and query.child("x.pt").name == "x.pt"
    assert is_uri("gs://b/p") and not is_uri("results/gate/ray") and not is_uri("/abs/path")
    assert local_folder(f"file://{tmp_path}/st") == tmp_path / "st" == local_folder(str(tmp_path / "st"))
    assert local_folder("s3://b/p") is None
    for bad, why in [("foo://b/p", "unknown storage scheme foo://"), ("s3:///p", "names no bucket"),
                     ("s3://AKIAX:pa55word@b/p", "must not carry credentials"),
                     ("s3://b/p?secret_key=pa55word", "must not carry credentials"),
                     ("file://otherhost/p", "a folder of this machine")]:
        with pytest.raises(UserError, match=why) as e:
            if local_folder(bad) is None:
                location(bad)
        assert "\n" not in str(e.value) and "pa55word" not in str(e.value)


@pytest.mark.parametrize("uri, expect", [
    ("foo://bucket/x", "unknown storage scheme foo://"),
    ("s3://KEY:SECRET@bucket/x", "must not carry credentials"),
])
def test_a_bad_storage_uri_is_one_line_before_ray_starts(uri, expect, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sweep, "connect", lambda *a, **k: pytest.fail("Ray was started"))
    assert main(["sweep", "gate", "--preset", "smoke", "--results", str(tmp_path), "--storage", uri]) == 2
    err = capsys.readouterr().err.strip()
    assert expect in err and len(err.splitlines()) == 1, err
    assert main(["collect", "gate", "--results", str(tmp_path), "--storage", uri]) == 2
    assert expect in capsys.readouterr().err


def test_a_file_uri_is_the_folder_it_names(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    trial = _fake_trial(elsewhere / "gate-smoke", "sigmoid", 0, "t_0")
    by_path = collect("gate", tmp_path / "a", storage=str(elsewhere))
    by_uri = collect("gate", tmp_path / "b", storage=f"file://{elsewhere}")
    pd.testing.assert_frame_equal(by_path, by_uri)
    assert Path(by_uri.loc[0, "checkpoint"]) == trial / "checkpoint_000001" / "checkpoint.pt"  # outside: absolute


# ------------------------------------------------------------------------------------------------
# A real S3 API: moto's server on loopback
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def moto_endpoint():
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if server is None:
        pytest.skip("moto's server is not installed (pip install 'moto[server]')")
    port = free_port()
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    pytest.fail("moto's server did not start")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def s3(moto_endpoint, monkeypatch):
    """The usual AWS variables pointing at moto, a bucket, and a prefix of this test's own."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "senet-test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}"


def _fs(uri: str):
    return location(uri).filesystem()


def _upload(local: Path, uri: str) -> None:
    import pyarrow.fs

    fs, path = _fs(uri)
    pyarrow.fs.copy_files(str(local), path, source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=fs)


def _files(uri: str, everything: bool = False) -> dict[str, bytes]:
    """Every object under ``uri`` with its content (the JSON files' alone unless ``everything``)."""
    import pyarrow.fs

    fs, root = _fs(uri)
    out = {}
    for info in fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True, recursive=True)):
        if info.type == pyarrow.fs.FileType.File:
            out[info.path[len(root) + 1:]] = b""
            if everything or info.path.endswith(".json"):
                try:
                    with fs.open_input_stream(info.path) as f:
                        out[info.path[len(root) + 1:]] = f.read()
                except FileNotFoundError:  # a checkpoint pruned since the listing
                    del out[info.path[len(root) + 1:]]
    return out


def test_a_missing_bucket_or_an_unreachable_store_is_one_line(s3, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sweep, "connect", lambda *a, **k: pytest.fail("Ray was started"))
    argv = ["sweep", "gate", "--preset", "smoke", "--results", str(tmp_path), "--storage"]
    assert main([*argv, "s3://senet-no-such-bucket/x"]) == 2
    err = capsys.readouterr().err.strip()
    assert "bucket 'senet-no-such-bucket'" in err and "does not exist" in err and len(err.splitlines()) == 1
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    t0 = time.time()
    assert main([*argv, s3]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot read" in err and "AWS_SECRET_ACCESS_KEY" in err and len(err.splitlines()) == 1, err
    assert time.time() - t0 < 60


def test_collect_reads_a_store_and_analysis_fetches_its_checkpoints(s3, tmp_path):
    staged = tmp_path / "staged"
    a = _fake_trial(staged / "gate-smoke", "sigmoid", 0, "t_0")
    _fake_trial(staged / "gate-smoke", "tanh", 0, "t_1", err=12.0)
    (a / "checkpoint_000001" / "final.json").write_text(json.dumps({"num_test": 32}))
    _upload(staged, s3)
    results = tmp_path / "results"
    df = collect("gate", results, storage=s3)
    assert sorted(df["status"]) == ["completed", "completed"]
    ckpt = f"{s3}/gate-smoke/{a.name}/checkpoint_000001/checkpoint.pt"
    assert df.set_index("trial_id").loc["t_0", "checkpoint"] == ckpt
    copy = cache_root(study_paths(results, "gate"))
    assert (copy / "s3" / BUCKET).is_dir() and not list(copy.rglob("checkpoint.pt"))  # small files only
    pd.testing.assert_frame_equal(df, collect("gate", results, storage=s3))  # idempotent
    # analysis: the URI fetched into the study's cache, the final.json beside it alone where that is enough
    runs = pd.read_parquet(results / "gate" / "runs.parquet").drop(columns="num_test")
    assert count_test_images(runs, results / "gate") == (32, "final.json")
    assert not list(copy.rglob("checkpoint.pt"))
    local = checkpoint_path(ckpt, results / "gate")
    assert local.read_bytes() == b"x" and copy in local.parents
    # a trial deleted from the store: its row stays, its copy goes
    fs, root = _fs(s3)
    fs.delete_dir(f"{root}/gate-smoke/{a.name}")
    again = collect("gate", results, storage=s3)
    assert sorted(again["trial_id"]) == ["t_0", "t_1"]
    assert not (copy / "s3" / location(s3).path / "gate-smoke" / a.name).exists()
    with pytest.raises(UserError, match="does not exist"):
        checkpoint_path(ckpt, results / "gate")


def test_checkpoints_in_a_store_are_pruned_and_mended_as_in_a_folder(s3, tmp_path):
    staged = tmp_path / "exp"
    a, b, c = staged / "a_seed0_t1", staged / "b_seed0_t2", staged / "c_seed0_t3"
    _ckpts(a, 0, 1, 2, 3)
    _ckpts(b, 0, 1, 2)
    _ckpts(c, 0, 1)
    _state(staged, {a.name: ((0, 1, 2), 2), b.name: ((0, 1), 2), c.name: ((), None)})
    _upload(staged, f"{s3}/exp")
    exp = StoredExperiment.at(location(f"{s3}/exp"))
    assert named_checkpoints(exp) == named_checkpoints(staged) == {a.name: "checkpoint_000002",
                                                                    b.name: "checkpoint_000001"}
    assert prune_superseded(exp) == prune_superseded(staged) == 3
    assert sorted(k for k in _files(f"{s3}/exp") if k.endswith(".pt")) == sorted(
        p.relative_to(staged).as_posix() for p in staged.rglob("*.pt"))
    # a named checkpoint gone, a newer one there: copied under the missing name
    fs, root = _fs(f"{s3}/exp")
    fs.delete_dir(f"{root}/{a.name}/checkpoint_000002")
    notes = repair_missing(StoredExperiment.at(location(f"{s3}/exp")))
    assert len(notes) == 1 and a.name in notes[0]
    assert _files(f"{s3}/exp", everything=True)[f"{a.name}/checkpoint_000002/checkpoint.pt"] == b"3"
    assert repair_missing(StoredExperiment.at(location(f"{s3}/exp"))) == []


# ------------------------------------------------------------------------------------------------
# The acceptance: a smoke sweep in the bucket, SIGKILLed, resumed, collected, reported, analysed
# ------------------------------------------------------------------------------------------------
def _trials(files: dict[str, bytes]) -> set[str]:
    return {k.split("/")[0] for k in files if "/" in k and "_seed" in k.split("/")[0]}


def _recorded_terminated(files: dict[str, bytes]) -> set[str]:
    """Trial folders whose trials the experiment state in the store records as finished."""
    states = sorted(k for k in files if k.startswith("experiment_state-"))
    ids = terminated_trial_ids(files[states[-1]].decode()) if states else set()
    return {d for d in _trials(files) if any(d.endswith("_" + i) for i in ids)}


def _finished(files: dict[str, bytes]) -> dict[str, bytes]:
    return {d: files[f"{d}/result.json"] for d in _trials(files)
            if f"{d}/result.json" in files and any(r.get("final") for r in json_rows(files[f"{d}/result.json"].decode()))}


def _mid_training(files: dict[str, bytes]) -> bool:
    """A trial has a checkpoint in the store and its newest one is not its final one."""
    for d in _trials(files):
        ckpts = sorted({k.split("/")[1] for k in files if k.startswith(f"{d}/checkpoint_")})
        if ckpts and f"{d}/{ckpts[-1]}/final.json" not in files:
            return True
    return False


@pytest.mark.slow
def test_sigkilled_sweep_in_s3_resumes_and_is_collected_from_the_uri(s3, tmp_path, capsys):
    ray_tmp = Path(tempfile.mkdtemp(prefix="rs"))  # not under tmp_path: Ray's socket paths have a length limit
    env = sweep_env(tmp_path, RAY_TMPDIR=str(ray_tmp))
    results = tmp_path / "results"
    common = ("--preset", "smoke", "--seeds", "1", "--results", str(results), "--max-concurrent", "1",
              "--optim.epochs", "3", "--storage", s3)
    exp = f"{s3}/gate-smoke"
    try:
        log = (tmp_path / "first.log").open("w")
        first = subprocess.Popen(senet_argv("sweep", "gate", *common), env=env, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        try:
            deadline = time.time() + 300
            while time.time() < deadline and first.poll() is None:
                files = _files(exp)
                if len(_recorded_terminated(files)) >= 2 and _mid_training(files):
                    break
                time.sleep(0.2)
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
        finally:
            kill_group(first)
            log.close()
        files = _files(exp)
        recorded = _recorded_terminated(files)
        before = {k: v for k, v in _finished(files).items() if k in recorded}
        planned = gate_arms()  # one trial per gate, one seed
        assert 2 <= len(before) < planned, "the kill should land mid-sweep"

        second = subprocess.run(senet_argv("sweep", "gate", *common, "--resume"), env=env, capture_output=True,
                                text=True, timeout=500, start_new_session=True)
        outputs = [(tmp_path / "first.log").read_text(), second.stdout, second.stderr]
        assert second.returncode == 0, second.stdout + second.stderr
        assert f"{planned}/{planned} trials finished" in second.stdout
        files = _files(exp)
        after = _finished(files)
        assert len(after) == planned
        for name, text in before.items():
            assert after[name] == text, f"{name} was run again after --resume"
        for d in _trials(files):  # every trial finished exactly once
            assert sum(1 for r in json_rows(files[f"{d}/result.json"].decode()) if r.get("final")) == 1, d

        # collected from the URI alone, into another results folder
        fresh = tmp_path / "fresh"
        assert main(["collect", "gate", "--results", str(fresh), "--storage", s3]) == 0
        df = pd.read_parquet(fresh / "gate" / "runs.parquet")
        assert len(df) == planned and set(df["status"]) == {"completed"} and df["trial_id"].is_unique
        assert df["checkpoint"].str.startswith(f"{exp}/").all()
        assert all(c[len(exp) + 1:] in files for c in df["checkpoint"])
        assert set(df["trial_id"]) == set(pd.read_parquet(results / "gate" / "runs.parquet")["trial_id"])
        with capsys.disabled():
            print(f"\nplanned {planned}, finished before the kill {len(before)}, finished {len(after)}, "
                  f"collected {len(df)}")

        assert main(["report", "gate", "--results", str(fresh), "--n-boot", "200"]) == 0
        path, row = best_checkpoint(fresh, "gate")
        assert Path(path).is_file() and row["checkpoint"].startswith("s3://")
        assert main(["analyze", "--best", "gate", "--results", str(fresh), "--out", str(tmp_path / "an"),
                     "--max-images", "16", "--attr-images", "2", "--no-singles", "--no-progress"]) == 0
        assert (tmp_path / "an" / "summary.md").is_file()
        captured = capsys.readouterr()
        outputs += [captured.out, captured.err]

        # the secret key: in no output, no file of the results folders, the bucket or Ray's logs
        assert not [i for i, text in enumerate(outputs) if SECRET in text]
        for root in (results, fresh, tmp_path / "an", ray_tmp):
            leaked = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()
                      and SECRET.encode() in p.read_bytes()]
            assert not leaked, leaked
        assert not [k for k, v in _files(f"s3://{BUCKET}", everything=True).items() if SECRET.encode() in v]
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# A trial restored after its final report: the experiment state can be older than its files
# ------------------------------------------------------------------------------------------------
def _restorable(root: Path, rows: list[dict] | None, final_checkpoint: bool = False) -> tuple[Path, Path]:
    """A trial folder as Tune stores it: ``checkpoint_000001`` (epoch 1 of 2, or its final one) and
    the ``result.json`` the driver uploaded (``rows`` and a line cut short)."""
    trial = root / "gate-smoke" / "sigmoid_seed0_t_0"
    ckpt = trial / "checkpoint_000001"
    ckpt.mkdir(parents=True)
    (ckpt / "checkpoint.pt").write_bytes(b"x")
    if final_checkpoint:
        (ckpt / "final.json").write_text(json.dumps({"status": "completed"}))
    if rows is not None:
        (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"trial_id": "cut')
    return trial, ckpt


_EPOCHS = [{"epoch": 1, "final": False}, {"epoch": 2, "final": False}]


@pytest.mark.parametrize("rows, final_checkpoint, finished", [
    (None, False, False), (_EPOCHS[:1], False, False), (_EPOCHS, False, False),
    ([*_EPOCHS, {"epoch": 2, "final": True}], False, True),  # the state names epoch 1, the final row is stored
    (_EPOCHS[:1], True, True),  # restored from its final checkpoint
])
def test_a_restored_trial_knows_it_finished_from_its_stored_files(tmp_path, rows, final_checkpoint, finished):
    import pyarrow.fs
    from ray import tune

    from ablations.trainable import finished_before

    trial, ckpt = _restorable(tmp_path, rows, final_checkpoint)
    storage = type("Storage", (), {"storage_filesystem": pyarrow.fs.LocalFileSystem(), "trial_fs_path": str(trial)})
    assert finished_before(tune.Checkpoint(str(ckpt)), storage) is finished


def test_a_trial_restored_after_its_final_report_in_s3_neither_trains_nor_reports(s3, tmp_path, monkeypatch):
    """The SIGKILL race of the acceptance test, at unit level: the state names epoch 1's checkpoint,
    the bucket's result.json already holds the final row. The trainable returns at once, which Tune
    2.60 turns into a ``__duplicate__`` result: the trial ends TERMINATED and nothing is logged."""
    import ray
    from ray import tune

    from ablations import trainable
    from senet import engine

    trial, _ = _restorable(tmp_path / "staged", [*_EPOCHS, {"epoch": 2, "final": True}])
    _upload(tmp_path / "staged", s3)
    fs, root = _fs(s3)
    trial_fs = f"{root}/gate-smoke/{trial.name}"
    storage = type("Storage", (), {"storage_filesystem": fs, "trial_fs_path": trial_fs})
    context = type("Context", (), {"get_storage": lambda self: storage,
                                   "get_trial_id": lambda self: pytest.fail("the trial started a run")})
    monkeypatch.setattr(tune, "get_context", lambda: context())
    monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint(f"{trial_fs}/checkpoint_000001", fs))
    monkeypatch.setattr(tune, "report", lambda *a, **k: pytest.fail("reported again"))
    monkeypatch.setattr(engine, "fit", lambda *a, **k: pytest.fail("trained again"))
    monkeypatch.setattr(ray, "get_runtime_context", lambda: pytest.fail("the trial started a run"))
    assert trainable.senet_trial({"arm": "sigmoid", "seed": 0}) is None
    # no final row stored yet: the trial continues from its checkpoint
    fs.delete_file(f"{trial_fs}/result.json")
    with pytest.raises(BaseException, match="the trial started a run"):
        trainable.senet_trial({"arm": "sigmoid", "seed": 0})
