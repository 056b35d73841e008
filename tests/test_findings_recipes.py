"""The recipe table's compute columns: trial-hours, and the img/s of each way bf16 convolutions ran."""
from __future__ import annotations

import math

import pandas as pd

from analysis.findings.evidence import compute_spent, kernels


def _runs(kinds, status=None):
    n = len(kinds)
    return pd.DataFrame({"status": status or ["completed"] * n, "bf16_kernels": kinds,
                         "data.subset": [1000] * n, "epochs_run": [2] * n,
                         "train_time_s": [10.0 * (i + 1) for i in range(n)], "wall_time_s": [3600.0] * n})


def test_each_kind_of_bf16_convolution_has_its_count_and_median_rate():
    runs = _runs(["fp32", "native", None, "fp32"], ["completed", "completed", "completed", "error"])
    # fp32: only trial 0 completed (2000 img / 10 s); native: trial 1 (2000 / 20); unrecorded: trial 2
    assert kernels(runs) == "fp32 2 (200 img/s), native 1 (100 img/s), unrecorded 1 (67 img/s)"
    spent = compute_spent(runs)
    assert spent["trial_hours"] == 4.0 and spent["kernels"] == kernels(runs)
    assert math.isclose(spent["rate"], 100.0)  # the median over the three completed trials


def test_a_table_from_before_the_column_counts_its_trials_as_unrecorded():
    runs = _runs([None, None]).drop(columns="bf16_kernels")
    assert kernels(runs) == "unrecorded 2 (150 img/s)"
    assert kernels(runs.iloc[:0]) == ""


def test_rows_reused_from_another_study_count_there_not_here():
    runs = _runs(["fp32", "native", "native"]).assign(reused_from=[None, "gate/gate-standard", None])
    spent = compute_spent(runs)
    assert spent["trial_hours"] == 2.0 and spent["kernels"] == "fp32 1 (200 img/s), native 1 (67 img/s)"
