"""Fixtures shared by the test files."""
from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture
def one_thread():
    """One torch thread for the test (the machines are small and shared; results do not depend on it)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
