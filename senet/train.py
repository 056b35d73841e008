"""``senet.train.fit(cfg)``: train a network from a config (the library's entry point for training).

The engine (:func:`~senet.engine.fit`, its callbacks, the result) is :mod:`senet.engine`; evaluation
is :mod:`senet.evaluation`, the learning-rate schedules :mod:`senet.schedules`, device and precision
:mod:`senet.runtime`, resuming and schedule phases :mod:`senet.resume`, the files of a run
:mod:`senet.runfolder`, and the ``senet train`` command :mod:`senet.train_cmd`.
"""
from __future__ import annotations

from .callbacks import Callback
from .engine import fit
from .metrics import METRIC_COLUMNS, FitResult

__all__ = ["METRIC_COLUMNS", "Callback", "FitResult", "fit"]
