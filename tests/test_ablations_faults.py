"""Fault tolerance of a sweep, through the real ``senet sweep`` command in a subprocess:

- a trial that raises once (at epoch 2, before its report) is retried from its epoch-1 checkpoint
  and finishes, without training epoch 1 again;
- a driver killed with SIGKILL mid-sweep is continued with ``--resume``: every trial finishes
  exactly once and trials finished before the kill are not run again;
- a trial that ends in error (no retries left) makes the sweep exit non-zero naming it, and the
  resume command the sweep prints retries it;
- a sweep stopped with Ctrl-C (SIGINT) exits non-zero, and its printed resume command finishes it.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import gate_arms, json_rows, kill_group, senet_argv, sweep_env, terminated_trial_ids

pytestmark = pytest.mark.slow


def _results(trial_dir: Path) -> list[dict]:
    return json_rows((trial_dir / "result.json").read_text())


def test_crashed_trial_is_retried_from_its_checkpoint(tmp_path):
    spec = tmp_path / "one.yaml"
    spec.write_text("name: retry\naxes: {se.gate: [sigmoid]}\n")
    flags = tmp_path / "flags"
    env = sweep_env(tmp_path, SENET_FAIL_ONCE_AT_EPOCH="2", SENET_FAIL_ONCE_DIR=str(flags))
    proc = subprocess.Popen(senet_argv("sweep", "custom", "--spec", str(spec), "--preset", "smoke", "--seeds", "1",
                                   "--results", str(tmp_path), "--optim.epochs", "3"),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        kill_group(proc)
    assert proc.returncode == 0, out
    assert len(list(flags.iterdir())) == 1  # the failure really happened
    df = pd.read_parquet(tmp_path / "retry" / "runs.parquet")
    row = df.iloc[0]
    assert row["status"] == "completed" and row["epochs_run"] == 3 and row["num_failures"] == 1
    trial = next((tmp_path / "retry" / "ray" / "retry-smoke").glob("*_seed0_*"))
    epochs = [r["epoch"] for r in _results(trial) if not r.get("final")]
    assert epochs == [1, 2, 3]  # resumed at epoch 2 from the epoch-1 checkpoint, not from scratch
    assert "retrying from its last checkpoint" in out


def _recorded_terminated(exp: Path) -> set[str]:
    """Trial folders whose trials the experiment state (what --resume reads) records as finished."""
    states = sorted(exp.glob("experiment_state-*.json"))
    ids = terminated_trial_ids(states[-1].read_text()) if states else set()
    return {d.name for d in exp.glob("*_seed*") if any(d.name.endswith("_" + i) for i in ids)}


def test_sigkilled_driver_resumes_without_rerunning_finished_trials(tmp_path):
    env = sweep_env(tmp_path)
    common = ("--preset", "smoke", "--seeds", "1", "--results", str(tmp_path), "--max-concurrent", "1",
              "--optim.epochs", "3")
    exp = tmp_path / "gate" / "ray" / "gate-smoke"

    def finished() -> dict[str, str]:
        done = {}
        for d in exp.glob("*_seed*"):
            if (d / "result.json").exists() and any(r.get("final") for r in _results(d)):
                done[d.name] = (d / "result.json").read_text()
        return done

    def mid_training() -> bool:
        """A trial has checkpointed an epoch but not finished (its final checkpoint holds final.json):
        the kill lands inside it. Checkpoints reach storage as they are reported, result.json only at
        Tune's next sync, which on a fast machine can come after the trial's end."""
        for d in exp.glob("*_seed*"):
            ckpts = sorted(d.glob("checkpoint_*"))
            if ckpts and not (ckpts[-1] / "final.json").exists():
                return True
        return False

    first = subprocess.Popen(senet_argv("sweep", "gate", *common), env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # Kill once the experiment state records two finished trials (Tune snapshots it every
        # second; what finished after the last snapshot is, by Tune's design, not known to
        # --resume) and the next trial is in the middle of its training.
        deadline = time.time() + 240
        while time.time() < deadline and first.poll() is None and not (
                len(_recorded_terminated(exp)) >= 2 and mid_training()):
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        kill_group(first)
    recorded = _recorded_terminated(exp)
    before = {k: v for k, v in finished().items() if k in recorded}
    assert 2 <= len(before) < gate_arms(), "the kill should land mid-sweep"

    second = subprocess.run(senet_argv("sweep", "gate", *common, "--resume"), env=env, capture_output=True,
                            text=True, timeout=400, start_new_session=True)
    assert second.returncode == 0, second.stdout + second.stderr
    after = finished()
    assert len(after) == gate_arms()  # one trial per gate, one seed
    for name, text in before.items():
        assert after[name] == text, f"{name} was run again after --resume"
    for d in exp.glob("*_seed*"):
        assert sum(1 for r in _results(d) if r.get("final")) == 1, d.name  # finished exactly once
    df = pd.read_parquet(tmp_path / "gate" / "runs.parquet")
    assert len(df) == gate_arms() and set(df["status"]) == {"completed"} and df["trial_id"].is_unique


def _resume_argv(output: str) -> list[str]:
    """The resume command the sweep printed, run with this interpreter instead of the `senet` script."""
    m = re.search(r"continue with: (.+)$", output, re.M)
    assert m, output
    argv = shlex.split(m.group(1))
    assert argv[0] == "senet" and argv[-1] == "--resume", argv
    return senet_argv(*argv[1:])


def test_errored_trial_fails_the_sweep_and_resume_retries_it(tmp_path):
    spec = tmp_path / "one.yaml"
    spec.write_text("name: flaky\naxes: {se.gate: [sigmoid, tanh]}\n")
    flags = tmp_path / "flags"  # both trials fail once, at epoch 1, and with no retries left end in error
    env = sweep_env(tmp_path, SENET_FAIL_ONCE_AT_EPOCH="1", SENET_FAIL_ONCE_DIR=str(flags))
    first = subprocess.run(senet_argv("sweep", "custom", "--spec", str(spec), "--preset", "smoke", "--seeds", "1",
                                  "--results", str(tmp_path / "res"), "--max-failures", "0"),
                           env=env, capture_output=True, text=True, timeout=300, start_new_session=True)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "0/2 trials finished" in first.stdout
    assert "gate=sigmoid seed 0 failed (" in first.stderr and "gate=tanh seed 0 failed (" in first.stderr
    assert "InjectedFailure" in first.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    second = subprocess.run(_resume_argv(first.stderr), env=env, capture_output=True, text=True, timeout=300,
                            start_new_session=True, cwd=elsewhere)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "2/2 trials finished" in second.stdout
    df = pd.read_parquet(tmp_path / "res" / "flaky" / "runs.parquet")
    assert len(df) == 2 and set(df["status"]) == {"completed"}


def test_interrupted_sweep_exits_nonzero_and_its_resume_command_finishes_it(tmp_path):
    env = sweep_env(tmp_path)
    exp = tmp_path / "gate" / "ray" / "gate-smoke"
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(senet_argv("sweep", "gate", "--preset", "smoke", "--seeds", "1", "--results", str(tmp_path),
                                    "--max-concurrent", "1", "--optim.epochs", "3"),
                             env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and first.poll() is None and not any(
                any(r.get("final") for r in _results(d)) for d in exp.glob("*_seed*") if (d / "result.json").exists()):
            time.sleep(0.2)
        first.send_signal(signal.SIGINT)  # Ctrl-C: Tune saves its state and fit() returns
        first.wait(timeout=180)
    finally:
        kill_group(first)
        log.close()
    out = (tmp_path / "first.log").read_text()
    assert first.returncode == 1, out
    assert "not finished:" in out and "continue with:" in out
    second = subprocess.run(_resume_argv(out), env=env, capture_output=True, text=True, timeout=400,
                            start_new_session=True)
    assert second.returncode == 0, second.stdout + second.stderr
    df = pd.read_parquet(tmp_path / "gate" / "runs.parquet")
    assert len(df) == gate_arms() and set(df["status"]) == {"completed"} and df["trial_id"].is_unique
