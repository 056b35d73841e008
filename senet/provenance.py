"""Where a result came from: code version, library versions, device and precision.

Every checkpoint, ``final.json`` and results row carries this dict, so a number in a table can be
traced to the commit and the hardware that produced it.
"""
from __future__ import annotations

import functools
import platform
import socket
import subprocess
from pathlib import Path

import torch

from . import __version__
from .runtime import bf16_kernels

#: Folders of the checkout that hold what runs write, not code: their changes do not make the code dirty
#: (a sweep run from a checkout updates its results/<study>/runs.parquet while it trains).
DATA_DIRS = ("results", "runs")


@functools.lru_cache(maxsize=1)
def git_commit() -> dict:
    """The suite's git commit and whether the checkout's code had uncommitted changes (changes under
    :data:`DATA_DIRS` do not count; None outside git)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = None
        if commit:
            dirty = code_dirty(here)
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"git_commit": commit, "git_dirty": dirty}


def code_dirty(cwd: Path) -> bool:
    """Whether the git checkout holding ``cwd`` has uncommitted changes to tracked files outside
    :data:`DATA_DIRS`."""
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/",
                             *(f":(top,exclude){d}" for d in DATA_DIRS)], cwd=cwd, capture_output=True,
                            text=True, timeout=10, check=True).stdout
    return bool(status.strip())


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def provenance(device: torch.device | str = "cpu", precision: str = "fp32") -> dict:
    """A JSON-able record of the code, libraries and hardware of a run."""
    try:
        import torchvision  # for its version only; the training core runs without it

        tv = str(torchvision.__version__)
    except ImportError:  # pragma: no cover - torchvision is a dependency, but the core must not need it
        tv = None
    device = torch.device(device)
    return {
        **git_commit(),
        "senet_version": __version__,
        "torch_version": str(torch.__version__),  # TorchVersion is not weights_only-loadable
        "torchvision_version": tv,
        "python_version": platform.python_version(),
        "cuda_version": torch.version.cuda if device.type == "cuda" else None,
        "device": str(device),
        "device_name": device_name(device),
        "precision": precision,
        # how bf16 convolutions were computed: natively, or as fp32 ones on bf16 values (senet.runtime)
        "bf16_kernels": bf16_kernels(device) if precision == "bf16" else None,
        "threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
    }
