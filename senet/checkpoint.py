"""Checkpoints: one ``torch.save`` file holding everything a run needs to continue or be analysed.

Contents: ``model`` (state dict), ``optimizer``, ``schedule``, ``rng`` (every random number generator
the run uses, the data-order and augmentation generators included), ``epoch``, ``best`` (best-so-far
validation results), ``phases`` (the run's schedule phases: an extended run has more than one),
``config`` (the resolved config as a plain dict), ``data`` (class names,
normalisation and input shape), ``provenance``. Files are written atomically and read with
``torch.load(weights_only=True)``, so a checkpoint can never execute code when opened.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from . import config
from .errors import UserValueError
from .models import build_from_config

__all__ = ["CheckpointError", "build_from_config", "load_checkpoint", "load_model", "save_checkpoint"]

FORMAT = "senet-checkpoint"
VERSION = 1


class CheckpointError(UserValueError):
    """A file that is not a suite checkpoint this version can read (a ValueError too)."""


def save_checkpoint(path: str | Path, **state) -> Path:
    """Write ``state`` to ``path`` atomically (a temporary file, then ``os.replace``).

    A run killed mid-write leaves the previous checkpoint intact, which is what lets a preempted
    trial resume from its last completed epoch.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a suite checkpoint with ``weights_only=True``.

    A directory means ``<dir>/checkpoint.pt``. Anything that is not a suite checkpoint (another
    program's file, a pickle that needs code to load) is refused with a one-line CheckpointError.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - the unpickler raises many kinds on foreign or unsafe input
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
        # torch's weights-only refusal is a paragraph; its "WeightsUnpickler error" line says why
        why = next((ln for ln in lines if ln.startswith("WeightsUnpickler error")), lines[0])
        raise CheckpointError(f"not a senet checkpoint: {path} ({why[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"not a senet checkpoint: {path} (no '{FORMAT}' marker)")
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(f"not a senet checkpoint this version can read: {path} "
                         f"(format version {ckpt['version']} > {VERSION})")
    return ckpt


def load_model(path: str | Path, map_location="cpu"):
    """Rebuild a trained network from a checkpoint: ``(model in eval mode, Config, meta)``, by the
    one path from a config to a network (:func:`senet.models.build_from_config`).

    ``meta`` holds everything but the weights and optimizer state: ``epoch``, ``data`` (``classes``,
    ``mean``, ``std``, ``input_size``, ``in_chans``, ``name``), ``provenance``, ``best``, ``metrics``.
    """
    ckpt = load_checkpoint(path, map_location=map_location)
    cfg = config.from_dict(ckpt["config"])
    data = ckpt.get("data", {})
    model = build_from_config(cfg, len(data.get("classes", [])), data.get("in_chans"))
    model.load_state_dict(ckpt["model"])
    model.to(map_location).eval()
    meta = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "schedule", "rng")}
    return model, cfg, meta
