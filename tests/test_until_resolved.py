"""``senet sweep --until-resolved`` through the real command: a run killed with SIGKILL and resumed
ends with the decisions of an uninterrupted run and trains no (arm, seed) twice, locally and on a
two-node Ray cluster on loopback."""
from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import json_rows, kill_group, senet_argv, sweep_env
from tests.test_cluster import cluster  # noqa: F401  (the two-node fixture)

pytestmark = pytest.mark.slow

ARGS = ["gate", "--preset", "smoke", "--until-resolved", "--max-seeds", "3"]


def _finals(results: Path) -> list[tuple[str, int]]:
    """(arm, seed) of every final row in every trial folder of every launch. While a sweep runs, a
    trial that Tune is starting may have a params.json not written through yet: it has no final row
    either, so it is passed over (once the sweep has ended every file is whole, and a trial passed
    over then would make the counts below disagree)."""
    out = []
    for f in (results / "gate" / "ray").glob("*/*/result.json"):
        try:
            params = json.loads((f.parent / "params.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        out += [(params["arm"], int(params["seed"])) for row in json_rows(f.read_text()) if row.get("final")]
    return out


def _decisions(out: str) -> list[str]:
    """The per-arm lines the sweep prints at its end."""
    tail = out[out.rindex("until resolved:"):]
    return [ln.strip() for ln in tail.splitlines()[1:] if re.match(r"\s+\S+\s+n\s+\d", ln)]


def _run(results: Path, env: dict, *extra: str, kill_after: int | None = None) -> tuple[int, str]:
    proc = subprocess.Popen(senet_argv("sweep", *ARGS, "--results", str(results), *extra), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        if kill_after is None:
            out, _ = proc.communicate(timeout=600)
            return proc.returncode, out
        deadline = time.time() + 300
        while time.time() < deadline and len(_finals(results)) < kill_after and proc.poll() is None:
            time.sleep(0.2)
        kill_group(proc)
        proc.wait(timeout=30)
        return -9, ""
    finally:
        kill_group(proc)


def _killed_and_resumed(results: Path, env: dict, *extra: str) -> str:
    _run(results, env, *extra, kill_after=9)
    state = list((results / "gate" / "ray").glob("*/experiment_state-*.json"))
    rc, out = _run(results, env, *extra, *(["--resume"] if state else []))
    assert rc == 0, out
    return out


def _check_same(reference: Path, ref_out: str, results: Path, out: str) -> None:
    a = pd.read_parquet(reference / "gate" / "runs.parquet").set_index(["arm", "seed"]).sort_index()
    b = pd.read_parquet(results / "gate" / "runs.parquet").set_index(["arm", "seed"]).sort_index()
    assert list(a.index) == list(b.index)
    assert (a["test_top1_err"] == b["test_top1_err"]).all()
    assert _decisions(out) == _decisions(ref_out) and _decisions(out)
    finals = _finals(results)
    assert len(finals) == len(set(finals)) == len(b), sorted(finals)  # no (arm, seed) trained twice


def test_killed_and_resumed_sweep_decides_the_same(tmp_path):
    ref = tmp_path / "uninterrupted"
    rc, ref_out = _run(ref, sweep_env(tmp_path))
    assert rc == 0, ref_out
    assert len(_finals(ref)) == len(pd.read_parquet(ref / "gate" / "runs.parquet"))
    killed = tmp_path / "killed"
    out = _killed_and_resumed(killed, sweep_env(tmp_path))
    _check_same(ref, ref_out, killed, out)


@pytest.mark.cluster
def test_killed_and_resumed_on_a_two_node_cluster(cluster, tmp_path):  # noqa: F811
    address, env = cluster
    env = sweep_env(tmp_path, {**env, "RAY_AUTH_MODE": "token"})
    ref = tmp_path / "uninterrupted"
    rc, ref_out = _run(ref, sweep_env(tmp_path))  # a local run gives the decisions to match
    assert rc == 0, ref_out
    killed = tmp_path / "killed"
    out = _killed_and_resumed(killed, env, "--address", address)
    _check_same(ref, ref_out, killed, out)
    df = pd.read_parquet(killed / "gate" / "runs.parquet")
    assert df["node_id"].nunique() == 2
