"""Continuing a run from its checkpoint: what may change, its schedule phases, its random state.

A run is one or more schedule *phases*. Resuming with the epochs it was planned for continues it
exactly. Resuming a finished run with more epochs (``--epochs N``) adds a phase over the extra
epochs: cosine and step schedules, whose learning rate depends on the run's length, start afresh
(warm-up, then their shape over the new epochs) instead of jumping to wherever the old formula would
put the longer run; constant and plateau schedules simply go on. Each metrics line names its
``phase`` and the checkpoint and ``final.json`` list the phases. A run is never shortened.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import config
from .checkpoint import load_checkpoint
from .config import Config
from .errors import UserValueError
from .schedules import SCHEDULES

#: Keys that must agree between a checkpoint and the config that resumes it (the rest may change,
#: e.g. more epochs, another output folder or device).
RESUME_FIXED = ("model.", "se.", "data.name", "data.subset", "data.val_fraction", "data.augment",
                "data.split_seed", "data.image_size", "data.synthetic_", "optim.batch_size", "seed")


class ResumeError(UserValueError):
    """A checkpoint that cannot be continued as asked (another model, fewer epochs, ...)."""


@dataclass(frozen=True)
class ResumePoint:
    """A checkpoint to continue from, read once: its contents and its config, parsed once."""

    path: Path
    state: dict  # what senet.checkpoint.load_checkpoint returned
    config: Config

    @classmethod
    def load(cls, path: str | Path) -> ResumePoint:
        """Read the checkpoint at ``path`` (a file, or a run folder holding ``checkpoint.pt``)."""
        state = load_checkpoint(path)
        return cls(Path(path), state, config.from_dict(state["config"]))

    @classmethod
    def of(cls, resume: str | Path | ResumePoint | None) -> ResumePoint | None:
        return resume if resume is None or isinstance(resume, ResumePoint) else cls.load(resume)

    @property
    def epoch(self) -> int:
        """The last epoch the checkpoint saved."""
        return int(self.state["epoch"])


def check_resume(cfg: Config, point: ResumePoint) -> None:
    """Raise ResumeError when ``cfg`` differs from the checkpoint's config in a :data:`RESUME_FIXED` key."""
    now, then = config.flatten(cfg), config.flatten(point.config)
    bad = [k for k in now if k.startswith(RESUME_FIXED) and now[k] != then[k]]
    if bad:
        raise ResumeError("cannot resume: the config differs from the checkpoint's in "
                          + ", ".join(f"{k} ({then[k]!r} -> {now[k]!r})" for k in bad))


def new_phase(number: int, start: int, end: int, cfg: Config) -> dict:
    return {"phase": number, "start_epoch": start, "end_epoch": end, "schedule": cfg.optim.schedule,
            "lr": cfg.optim.lr, "warmup_epochs": cfg.optim.warmup_epochs}


def saved_phases(point: ResumePoint) -> list[dict]:
    """The phases a checkpoint's run was planned with (one, for checkpoints that predate phases)."""
    if point.state.get("phases"):
        return [dict(p) for p in point.state["phases"]]
    return [new_phase(1, 0, point.config.optim.epochs, point.config)]


def plan_phases(cfg: Config, point: ResumePoint | None) -> list[dict]:
    """The run's schedule phases once ``fit(cfg, resume=point)`` has trained ``cfg.optim.epochs``.

    A fresh run has one phase over all its epochs. A resumed run keeps its phases; asking for more
    epochs than it was planned for extends its last phase when the schedule does not depend on the
    length (constant, plateau) and stays the same, and otherwise adds a phase over the extra epochs.
    Raises ResumeError for fewer epochs than were trained, or fewer than an unfinished run was
    planned for (that would change its schedule midway).
    """
    want = cfg.optim.epochs
    if point is None:
        return [new_phase(1, 0, want, cfg)]
    done = point.epoch
    phases = saved_phases(point)
    planned = phases[-1]["end_epoch"]
    if want < done:
        raise ResumeError(f"the run has already trained {done} epochs; --epochs {want} would shorten it "
                          f"(give {done} or more)")
    if done < planned and want < planned:
        raise ResumeError(f"the run stopped at epoch {done} of the {planned} it was planned for; resume it "
                          f"with --epochs {planned} (or more, to add a phase after epoch {planned})")
    if want > planned:
        last = phases[-1]
        if SCHEDULES.get(last["schedule"]).follows_length or cfg.optim.schedule != last["schedule"]:
            phases.append(new_phase(last["phase"] + 1, planned, want, cfg))
        else:
            last["end_epoch"] = want
    return phases


def rng_state(order_gen: torch.Generator, aug_gen: torch.Generator) -> dict:
    """Every RNG of the run as tensors and plain values (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
        "order": order_gen.get_state(),
        "augment": aug_gen.get_state(),
    }


def set_rng_state(state: dict, order_gen: torch.Generator, aug_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    order_gen.set_state(state["order"])
    try:
        aug_gen.set_state(state["augment"])
    except RuntimeError:  # a CUDA generator's state does not fit a CPU one, and vice versa
        raise ResumeError("cannot resume exactly on another device type than the checkpoint's "
                          "(the augmentation generator lives on the training device); set run.device") from None
