"""Learning-rate schedules: ``lr(step)`` for every SGD step, registered by name in :data:`SCHEDULES`.

``plateau`` is the paper's ImageNet recipe (lr ÷ 10 when the validation error stops improving);
``cosine`` and ``step`` warm up linearly first. A schedule runs over one *phase* of a run
(:func:`senet.resume.plan_phases`): its ``step`` and ``cfg.epochs`` count from the phase's start.
"""
from __future__ import annotations

import math

from .config import OptimConfig
from .registry import Registry


class Schedule:
    """``lr(step)`` for every SGD step; ``epoch_end(metric)`` after each epoch (plateau uses it).

    ``step`` and ``cfg.epochs`` count from the start of the schedule's phase (:func:`senet.resume.plan_phases`).
    """

    #: The learning rate depends on the phase's length, so extending a finished run needs a new phase.
    follows_length = False

    def __init__(self, cfg: OptimConfig, steps_per_epoch: int):
        self.peak = cfg.lr
        self.spe = steps_per_epoch
        self.total = cfg.epochs * steps_per_epoch
        self.warmup = int(round(cfg.warmup_epochs * steps_per_epoch)) if self.uses_warmup else 0
        self.cfg = cfg

    uses_warmup = False

    def lr(self, step: int) -> float:
        if step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        return self.after_warmup(step)

    def after_warmup(self, step: int) -> float:
        return self.peak

    def epoch_end(self, metric: float) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


SCHEDULES: Registry[type[Schedule]] = Registry("schedule")


@SCHEDULES.register("constant")
class ConstantSchedule(Schedule):
    """The peak learning rate throughout."""


@SCHEDULES.register("cosine")
class CosineSchedule(Schedule):
    """Linear warm-up, then half a cosine from the peak to 0 at the last step (Loshchilov & Hutter)."""

    uses_warmup = True
    follows_length = True

    def after_warmup(self, step):
        span = max(1, self.total - self.warmup)
        t = min(1.0, (step - self.warmup) / span)
        return 0.5 * self.peak * (1 + math.cos(math.pi * t))


@SCHEDULES.register("step")
class StepSchedule(Schedule):
    """Linear warm-up, then ÷10 at each epoch of ``optim.milestones`` (default: 50% and 75%; both
    count from the first epoch of the schedule's phase)."""

    uses_warmup = True
    follows_length = True

    def __init__(self, cfg, steps_per_epoch):
        super().__init__(cfg, steps_per_epoch)
        ms = cfg.milestones
        self.milestones = ([int(m) for m in ms.split(",")] if ms
                           else [int(cfg.epochs * 0.5), int(cfg.epochs * 0.75)])

    def after_warmup(self, step):
        epoch = step // self.spe
        return self.peak * 0.1 ** sum(epoch >= m for m in self.milestones)


@SCHEDULES.register("plateau")
class PlateauSchedule(Schedule):
    """The paper's ImageNet recipe: ÷10 when the validation error has not improved for
    ``optim.plateau_patience`` epochs (the training loss when there is no validation split)."""

    def __init__(self, cfg, steps_per_epoch):
        super().__init__(cfg, steps_per_epoch)
        self.best, self.bad, self.scale = math.inf, 0, 1.0

    def after_warmup(self, step):
        return self.peak * self.scale

    def epoch_end(self, metric):
        if not math.isfinite(metric):
            return
        if metric < self.best - 1e-9:
            self.best, self.bad = metric, 0
        else:
            self.bad += 1
            if self.bad > self.cfg.plateau_patience:
                self.scale, self.bad = self.scale * 0.1, 0

    def state_dict(self):
        return {"best": self.best, "bad": self.bad, "scale": self.scale}

    def load_state_dict(self, state):
        self.best, self.bad, self.scale = state["best"], state["bad"], state["scale"]
