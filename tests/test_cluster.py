"""A two-node Ray cluster on loopback (a head and a second node started with ``ray start`` on this
machine): ``senet sweep --address`` runs the smoke gate study on it and its trials land on both
nodes; a missing token is reported in seconds, naming RAY_AUTH_MODE.

Teardown stops only this test's Ray processes (each ``ray start`` runs in its own process group),
so other Ray sessions on the machine survive."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import free_port, gate_arms, senet_argv, sweep_env

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture
def cluster(tmp_path):
    port = free_port()
    env = sweep_env(tmp_path)
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # a local Ray of an earlier test sets it: no second node
    env["RAY_AUTH_MODE"] = "token"  # the second node joins by address, which needs the head's token
    procs = []
    current = Path("/tmp/ray/ray_current_cluster")
    before = current.read_text() if current.exists() else None

    def start(*args):
        p = subprocess.Popen([RAY, "start", "--num-cpus", "1", "--disable-usage-stats", *args], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
        procs.append(p)
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out

    try:
        start("--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--include-dashboard", "false")
        start("--address", f"127.0.0.1:{port}")
        yield f"127.0.0.1:{port}", env
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(2)
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if current.exists() and current.read_text() != before:
            if before is None:
                current.unlink()
            else:
                current.write_text(before)


def _sweep(args, env, timeout=400):
    return subprocess.run(senet_argv("sweep", *args), env=env, capture_output=True, text=True, timeout=timeout)


def test_missing_token_is_named_within_seconds(cluster, tmp_path):
    address, env = cluster
    env = {**env, "RAY_AUTH_MODE": "disabled"}
    t0 = time.time()
    r = _sweep(["gate", "--preset", "smoke", "--address", address, "--results", str(tmp_path)], env, 60)
    assert r.returncode == 2
    assert "RAY_AUTH_MODE=token" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert time.time() - t0 < 15


def test_two_node_sweep_uses_both_nodes(cluster, tmp_path):
    address, env = cluster
    env = {**env, "RAY_AUTH_MODE": "token"}
    r = _sweep(["gate", "--preset", "smoke", "--seeds", "1", "--address", address, "--results", str(tmp_path),
                "--optim.epochs", "2"], env)
    assert r.returncode == 0, r.stdout + r.stderr
    df = pd.read_parquet(tmp_path / "gate" / "runs.parquet")
    assert len(df) == gate_arms() and set(df["status"]) == {"completed"}  # one trial per gate
    assert df["node_id"].nunique() == 2, df[["arm", "node_id"]]
