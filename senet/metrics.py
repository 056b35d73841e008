"""What a training run reports: one metrics line per epoch and one final result.

:data:`EPOCH_COLUMNS` names the keys of each line of ``metrics.jsonl`` (and of each epoch's report),
:class:`FitResult` is what :func:`senet.engine.fit` returns and ``final.json`` holds, and
:data:`METRIC_COLUMNS` is the one list of its scalar columns: the ones a results table carries per
trial. This module imports no torch, so the code that only reads results can use the names.

Errors are in percent (top-1 and top-5); a NaN error means the split was empty or not evaluated.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

#: The keys of one epoch's metrics, in the order ``metrics.jsonl`` writes them.
EPOCH_COLUMNS = (
    "epoch", "step", "train_loss", "train_top1_err", "val_loss", "val_top1_err", "val_top5_err",
    "test_loss", "test_top1_err", "test_top5_err", "images_per_s", "epoch_time_s", "train_time_s", "lr",
    "phase", "status", "checkpoint",
)


@dataclass(frozen=True)
class FitResult(Mapping):
    """The final results of one run, as ``final.json`` holds them.

    A read-only mapping with one key per field, so ``result["test_top1_err"]`` and ``{**result}``
    work like the dict that ``fit`` returned before it had a type.
    """

    status: str  # completed | diverged
    epochs_run: int
    test_top1_err: float  # the last epoch's
    test_top5_err: float
    best_val_top1_err: float  # the lowest validation top-1 error of the run (NaN without a validation split)
    best_val_epoch: int | None
    test_top1_err_at_best_val: float  # the test errors of the best validation epoch's weights
    test_top5_err_at_best_val: float
    wall_time_s: float
    train_time_s: float  # training and evaluation, without setup and checkpoints
    params: int
    flops: int  # 1 multiply-add = 1 FLOP, at the data's input size
    se_params: int
    se_flops: int
    se_hidden: str  # each SE block's channels C and hidden width (see senet.engine.se_hidden_summary)
    dataset: str
    num_train: int
    num_test: int  # sets the resolution of a test error: 100/N points
    checkpoint: str | None
    phases: list[dict]  # the run's schedule phases (senet.resume.plan_phases)
    provenance: dict  # code, libraries, device and the resolved precision (senet.provenance)

    def __getitem__(self, key: str) -> Any:
        if key not in _KEY_SET:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(RESULT_KEYS)

    def __len__(self) -> int:
        return len(RESULT_KEYS)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in RESULT_KEYS}


#: Every key of :class:`FitResult` (and ``final.json``), in order.
RESULT_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(FitResult))
_KEY_SET = frozenset(RESULT_KEYS)
#: The scalar columns of a run's result, in ``final.json``'s order: what a results table holds per
#: trial (``phases`` and ``provenance`` are nested; a table takes provenance's fields one by one).
METRIC_COLUMNS: tuple[str, ...] = tuple(k for k in RESULT_KEYS if k not in ("phases", "provenance"))
