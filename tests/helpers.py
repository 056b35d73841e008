"""Small helpers shared by the test files (fixtures live in conftest.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys


def senet_argv(*args: str) -> list[str]:
    """The ``senet`` command line run by this interpreter (a subprocess sees the same packages)."""
    return [sys.executable, "-c", "import sys; from senet.cli import main; sys.exit(main())", *args]


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
    from senet.models.blocks import BasicBlock
    from senet.models.registry import register_model
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
