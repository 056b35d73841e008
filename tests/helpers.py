"""Small helpers shared by the test files (fixtures live in conftest.py)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path


def senet_argv(*args: str) -> list[str]:
    """The ``senet`` command line run by this interpreter (a subprocess sees the same packages)."""
    return [sys.executable, "-c", "import sys; from senet.cli import main; sys.exit(main())", *args]


def sweep_env(tmp: Path, base: dict | None = None, **extra: str) -> dict:
    """The environment of a ``senet sweep`` subprocess: ``base`` (this one's by default, less
    ``RAY_ADDRESS``, so the sweep starts a Ray of its own), with its scratch folder under ``tmp``."""
    env = dict(base or os.environ)
    if base is None:
        env.pop("RAY_ADDRESS", None)
    env.update(SENET_SCRATCH=str(tmp / "scratch"), **extra)
    return env


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def json_rows(text: str) -> list[dict]:
    """The JSON objects of a JSON-lines text (a ``result.json``), skipping a line a kill cut short."""
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def terminated_trial_ids(state: str) -> set[str]:
    """The ids of the trials a Tune experiment state (``experiment_state-*.json``, the file
    ``--resume`` reads) records as finished; none while the file is caught mid-write."""
    try:
        data = json.loads(state)
    except json.JSONDecodeError:
        return set()
    trials = [json.loads(t[0]) for t in data["trial_data"]]
    return {t["trial_id"] for t in trials if t.get("status") == "TERMINATED"}


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a driver started with ``start_new_session``: its own Ray processes (gcs, raylet,
    agents) share its process group."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def register_tiny_resnet(name: str) -> None:
    """A 3-block CIFAR-style ResNet (and its se_ twin) under ``name``: tests of the engine need
    speed, not depth. Remove it with :func:`remove_model`."""
    from senet.models.backbone_registry import register_model
    from senet.models.blocks import BasicBlock
    from senet.models.resnet import ResNet

    register_model(name, lambda **kw: ResNet(BasicBlock, (1, 1, 1), (8, 16, 32), stem="cifar",
                                             stem_width=8, shortcut="pad", **kw),
                   family="test", input_size=28, num_classes=10, in_chans=1, doc="test network")


def remove_model(name: str) -> None:
    from senet.models import MODELS

    MODELS.remove(name)
    MODELS.remove(f"se_{name}")


def gate_arms() -> int:
    """How many arms the gate study sweeps (one per gate its registry holds for the study): the
    trials of a one-seed smoke sweep of ``gate``."""
    from ablations.studies import STUDIES

    return len(STUDIES.get("gate").arms)


def train_tiny_se20(out: Path, gate: str, seed: int = 0, **keys) -> Path:
    """A run folder of SE-ResNet-20 with ``gate`` (and any other flat config ``keys``, e.g.
    ``**{"se.preset": "gct"}``) trained one epoch on a small synthetic set, on one torch thread
    (restored afterwards)."""
    import torch

    from senet.config import from_flat
    from senet.train import fit

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit(from_flat({"model.name": "se_resnet20", "se.gate": gate, "data.name": "synthetic",
                       "data.synthetic_train": 64, "data.synthetic_test": 40, "data.val_fraction": 0.25,
                       "optim.batch_size": 32, "optim.epochs": 1, "run.threads": 1, "run.progress": False,
                       "run.device": "cpu", "seed": seed, "run.out": str(out), **keys}))
    finally:
        torch.set_num_threads(n)
    return out
