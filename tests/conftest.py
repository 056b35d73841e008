"""Fixtures shared by the test files."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


@pytest.fixture
def one_thread():
    """One torch thread for the test (the machines are small and shared; results do not depend on it)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def torch_seed():
    """torch's global generator seeded with 0, so the random inputs of a test are the same each run."""
    torch.manual_seed(0)


@pytest.fixture
def no_senet_data(monkeypatch):
    """No ``SENET_DATA`` in the environment: the loaders look where a test points them, not where the
    machine keeps its datasets."""
    monkeypatch.delenv("SENET_DATA", raising=False)


@pytest.fixture(scope="module")
def tiny_resnet(request):
    """The test module's ``TINY`` name registered as a 3-block CIFAR-style ResNet (and its se_ twin)
    while the module's tests run: the engine's tests need speed, not depth, and registry-wide tests
    elsewhere never see it."""
    from tests.helpers import register_tiny_resnet, remove_model

    name = request.module.TINY
    register_tiny_resnet(name)
    yield name
    remove_model(name)


@pytest.fixture
def drawn(monkeypatch):
    """Every figure a test writes to a file, by the file's stem: what a command drew, to assert on
    (its panels, lines, labels and plotted values). The files are written as ever."""
    from matplotlib.figure import Figure

    figures = {}
    savefig = Figure.savefig

    def recording(fig, fname, *args, **kwargs):
        figures[Path(fname).stem] = fig
        return savefig(fig, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording)
    return figures


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    """One local Ray for a test module's sweeps, with checkpoints in a scratch folder of its own."""
    from ablations.sweep import connect

    scratch = tmp_path_factory.mktemp("scratch")
    old = os.environ.get("SENET_SCRATCH")
    os.environ["SENET_SCRATCH"] = str(scratch)
    started = connect(None)
    yield scratch
    import ray

    if started:
        ray.shutdown()
    if old is None:
        os.environ.pop("SENET_SCRATCH", None)
    else:
        os.environ["SENET_SCRATCH"] = old
