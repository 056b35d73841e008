"""Verdicts over seeds (issue 9 items 2-3, issue 10): paired t-test, BCa bootstrap, Holm, power,
the test set's resolution, one recipe per report, and nuisance values that are not seeds."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis.compare import compare_arms, power_summary
from analysis.report import write_report
from analysis.stats import MIN_PAIRS, holm, min_detectable_effect, paired_test, pooled_sd, seeds_needed
from senet.cli import main
from senet.recipe import recipe_hash

GATE = {"name": "gate", "title": "Excitation gate", "axis": "se.gate", "reference_arm": "sigmoid",
        "arms": [{"arm": a, "overrides": {"se.gate": a}} for a in ("sigmoid", "tanh", "relu")]}


def _rows(errs: dict[str, list[float]], **extra) -> list[dict]:
    return [{"study": "gate", "arm": arm, "trial_id": f"{arm}_{extra.get('preset', '')}{seed}", "seed": seed,
             "model.name": "se_resnet20", "se.gate": arm, "data.name": "fashion-mnist", "status": "completed",
             "test_top1_err": e, "test_top5_err": e / 10, **extra}
            for arm, vals in errs.items() for seed, e in enumerate(vals)]


def _study(tmp_path, rows, meta=GATE):
    d = tmp_path / meta["name"]
    d.mkdir(exist_ok=True)
    pd.DataFrame(rows).to_parquet(d / "runs.parquet", index=False)
    (d / "study.json").write_text(json.dumps(meta))
    return tmp_path


def _verdict_lines(report: str) -> list[str]:
    return [ln for ln in report.splitlines() if ln.startswith(("| tanh | sigmoid", "| relu | sigmoid"))]


# ---------------------------------------------------------------------------------------------
# The statistics themselves
# ---------------------------------------------------------------------------------------------
def test_holm_step_down_hand_computed():
    # sorted 0.01, 0.03, 0.04 (k = 3): 3·0.01, max(.03, 2·0.03), max(.06, 1·0.04); NaN is no test
    adj = holm([0.04, 0.01, np.nan, 0.03])
    assert adj[[1, 3, 0]] == pytest.approx([0.03, 0.06, 0.06]) and np.isnan(adj[2])
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0]


def test_paired_test_matches_scipy_and_the_t_formula():
    a, r = np.array([9.0, 10.5, 11.5, 10.0]), np.array([8.0, 9.0, 10.0, 9.5])
    t = paired_test(a, r, n_boot=1000)
    d = a - r
    half = sps.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert (t["t_low"], t["t_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert t["p"] == pytest.approx(sps.ttest_rel(a, r).pvalue)
    assert t["boot_method"] == "BCa" and t["ci_low"] <= d.mean() <= t["ci_high"]


@pytest.mark.parametrize("d", [[0.5, 0.5], [0.5, 0.5, 0.5], [-0.1, -0.1 + 1e-15, -0.1], [0.0, 0.0, 1.0],
                               [1.0], [], [0.0, 0.0, 0.0, 0.0, 0.0, 7.0]])
def test_degenerate_pairs_neither_raise_nor_warn(d):
    r = np.full(len(d), 9.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = paired_test(r + np.asarray(d), r, n_boot=500)
    assert t["pairs"] == len(d)
    if len(d) >= 2 and np.ptp(d) < 1e-9:  # an interval of width zero is a symptom, not certainty
        assert t["zero_spread"] and np.isnan(t["p"]) and np.isnan(t["ci_low"])


def test_power_formula_and_seeds_needed():
    # (t(0.975, 4) + t(0.80, 4)) · 1 / √5 = (2.7764 + 0.9410) / 2.2361
    assert min_detectable_effect(1.0, 5) == pytest.approx(1.6625, abs=1e-4)
    n = seeds_needed(1.0, 0.5)
    assert min_detectable_effect(1.0, n) <= 0.5 < min_detectable_effect(1.0, n - 1)
    assert seeds_needed(0.0, 0.5) == MIN_PAIRS and seeds_needed(np.nan, 0.5) is None
    sd, df = pooled_sd([np.array([1.0, 3.0]), np.array([0.0, 1.0, 2.0])])
    assert df == 3 and sd == pytest.approx(np.sqrt((2 + 2) / 3))


# ---------------------------------------------------------------------------------------------
# Verdicts in the report
# ---------------------------------------------------------------------------------------------
def test_two_seeds_one_image_apart_get_no_verdict(tmp_path):
    # Issue 9 item 2: sigmoid 9.3/9.8 vs tanh 9.2/9.7 was called "better" (two equal differences,
    # intervals of width zero, one image of a 1,000-image test set).
    root = _study(tmp_path, _rows({"sigmoid": [9.3, 9.8], "tanh": [9.2, 9.7], "relu": [9.4, 9.6]}))
    text = write_report(root, "gate", n_boot=500).read_text()
    lines = _verdict_lines(text)
    assert len(lines) == 4 and not any("| better |" in ln or "| worse |" in ln for ln in lines)
    assert all("| no verdict |" in ln for ln in lines)
    assert "Power (top-1 error): σ_d = " in text and "with n = 2 seeds" in text


def test_a_difference_below_one_test_image_is_never_better(tmp_path):
    # 5 seeds, tanh 0.05 pp below sigmoid every time (p tiny) on 1,000 test images: half an image.
    sig = [9.3, 9.8, 10.1, 9.0, 9.6]
    rows = _rows({"sigmoid": sig, "tanh": [e - 0.05 + 0.01 * i for i, e in enumerate(sig)],
                  "relu": [e + 0.3 + 0.1 * i for i, e in enumerate(sig)]}, num_test=1000)
    text = write_report(_study(tmp_path, rows), "gate", n_boot=500).read_text()
    tanh, relu = _verdict_lines(text)[:2]
    assert "| inconclusive | |Δ| below one test image (0.10 pp) |" in tanh.replace("\\|", "|")
    assert "| worse |" in relu
    assert "one test image is 0.10 pp (N = 1000 test images, from num_test)" in text


def test_holm_corrects_for_the_arms_compared(tmp_path):
    # tanh and relu both 1.075 pp below sigmoid on 4 seeds: p = 0.040 each, which alone would pass
    # 5%; Holm over the 2 arms makes it 0.080: inconclusive, and the table says it is Holm's.
    sig = [10.0, 11.0, 9.0, 10.5]
    d = [-1.0, -1.8, -0.3, -1.2]
    rows = _rows({"sigmoid": sig, "tanh": [s + x for s, x in zip(sig, d, strict=True)],
                  "relu": [s + x for s, x in zip(sig, d, strict=True)]}, num_test=1000)
    text = write_report(_study(tmp_path, rows), "gate", n_boot=500).read_text()
    assert all("| inconclusive | Holm p = 0.08 > 0.05 |" in ln for ln in _verdict_lines(text))
    header = next(ln for ln in text.splitlines() if ln.startswith("| arm | vs |"))
    assert "| p (Holm) |" in header and "Holm's step-down adjustment over the 2 arms" in text
    b = compare_arms(pd.DataFrame(rows), GATE, n_boot=500).set_index("arm")
    assert b.loc["tanh", "p"] == pytest.approx(0.0402, abs=1e-4) and b.loc["tanh", "t_high"] < 0
    assert b.loc["tanh", "p_holm"] == pytest.approx(2 * b.loc["tanh", "p"])


def test_inconclusive_comes_with_the_seeds_it_would_take(tmp_path):
    rows = _rows({"sigmoid": [9.0, 9.5, 10.0], "tanh": [9.5, 9.4, 10.6], "relu": [9.2, 9.9, 9.6]},
                 num_test=1000)
    b = compare_arms(pd.DataFrame(rows), GATE, n_boot=500).set_index("arm")
    p = power_summary(pd.DataFrame(rows), GATE, num_test=1000)
    sd = pooled_sd([np.array([0.5, -0.1, 0.6]), np.array([0.2, 0.4, -0.4])])[0]
    assert p["sd"] == pytest.approx(sd) and p["n"] == 3
    assert p["mde"] == pytest.approx(min_detectable_effect(sd, 3)) and p["seeds"] == seeds_needed(sd, 0.5)
    assert b.loc["tanh", "verdict"] == "inconclusive"
    assert b.loc["tanh", "seeds_for_diff"] == seeds_needed(sd, b.loc["tanh", "mean_diff"])


# ---------------------------------------------------------------------------------------------
# One recipe per report; nuisance values are not seeds
# ---------------------------------------------------------------------------------------------
def test_recipe_hash_ignores_seed_axis_nuisance_and_bookkeeping():
    base = {"model.name": "se_resnet20", "se.gate": "sigmoid", "optim.epochs": 2, "optim.lr": 0.1,
            "seed": 0, "run.out": "/a", "run.threads": 1, "data.test_subset": 1000, "test_top1_err": 9.0}
    h = recipe_hash(base, ["se.gate"], ["optim.lr"])
    pandas_row = {**base, "se.gate": "tanh", "seed": np.int64(3), "run.out": "/b", "optim.lr": 0.05,
                  "optim.epochs": np.float64(2.0), "data.test_subset": 1000.0, "test_top1_err": 8.0}
    assert recipe_hash(pandas_row, ["se.gate"], ["optim.lr"]) == h
    assert recipe_hash({**base, "optim.epochs": 3}, ["se.gate"], ["optim.lr"]) != h
    assert recipe_hash({**base, "data.test_subset": None}, ["se.gate"], ["optim.lr"]) != h
    assert recipe_hash(base, ["se.gate"]) != h  # the lr is part of the recipe unless it is swept


def test_report_refuses_to_pool_recipes_until_one_is_chosen(tmp_path, capsys):
    # Issue 9 item 3: smoke and quick trials in one runs.parquet were averaged together.
    smoke = _rows({"sigmoid": [90.0, 88.0], "tanh": [89.0, 91.0], "relu": [87.5, 90.0]}, preset="smoke",
                  experiment="gate-smoke")
    for r in smoke:
        r["data.name"] = "synthetic"
    quick = _rows({"sigmoid": [9.0, 9.5, 10.0], "tanh": [9.5, 9.4, 10.6], "relu": [9.2, 9.9, 9.6]},
                  preset="quick", experiment="gate-quick")
    root = _study(tmp_path, smoke + quick)
    assert main(["report", "gate", "--results", str(root), "--n-boot", "200"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mixes 2 recipes" in err
    assert "(preset smoke, experiment gate-smoke, 6 trials)" in err
    assert "(preset quick, experiment gate-quick, 9 trials)" in err
    assert main(["report", "gate", "--results", str(root), "--n-boot", "200", "--preset", "quick"]) == 0
    out = capsys.readouterr().out
    assert "| sigmoid (ref) | 9.50 ± 0.50 | 0.95 ± 0.05 | 3 | 0 |" in out and "preset `quick`" in out
    assert main(["report", "gate", "--results", str(root), "--experiment", "gate-smoke"]) == 0
    assert "| sigmoid (ref) | 89.00 ± 1.41 |" in capsys.readouterr().out
    assert main(["report", "gate", "--results", str(root), "--preset", "full"]) == 2
    assert "no trials with preset 'full'" in capsys.readouterr().err


def test_nuisance_values_are_groups_not_seeds(tmp_path):
    meta = {**GATE, "name": "custom", "nuisance_keys": ["optim.lr"], "nuisance": {"optim.lr": [0.1, 0.05]}}
    rows = []
    for lr, shift in ((0.1, 0.0), (0.05, 5.0)):
        for r in _rows({"sigmoid": [9.0, 9.5, 10.0], "tanh": [9.5, 9.4, 10.6], "relu": [9.2, 9.9, 9.6]}):
            rows.append({**r, "study": "custom", "trial_id": f"{r['trial_id']}_{lr}", "optim.lr": lr,
                         "test_top1_err": r["test_top1_err"] + shift})
    root = _study(tmp_path, rows, meta)
    text = write_report(root, "custom", n_boot=200).read_text()
    # each lr is its own table with n = 3 seeds, never n = 6
    assert "# optim.lr = 0.05" in text and "# optim.lr = 0.1" in text
    assert text.count("| sigmoid (ref) | 9.50 ± 0.50 | 0.95 ± 0.05 | 3 |") == 1
    assert text.count("| sigmoid (ref) | 14.50 ± 0.50 | 0.95 ± 0.05 | 3 |") == 1
    (root / "custom" / "study.json").write_text(json.dumps({**meta, "average_nuisance": True}))
    text = write_report(root, "custom", n_boot=200).read_text()
    assert "averaged over the 2 combinations of optim.lr" in text
    assert "| sigmoid (ref) | 12.00 ± 0.50 | 0.95 ± 0.05 | 3 |" in text


# ---------------------------------------------------------------------------------------------
# Bad input is one line (issue 10)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_boot", ["0", "-5", "199"])
def test_report_n_boot_too_small_is_one_line(tmp_path, capsys, n_boot):
    root = _study(tmp_path, _rows({"sigmoid": [9.0, 9.5, 10.0], "tanh": [9.5, 9.4, 10.6], "relu": [9.2, 9.9, 9.6]}))
    assert main(["report", "gate", "--results", str(root), "--n-boot", n_boot]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--n-boot must be >= 200" in err


def test_corrupted_runs_parquet_is_one_line_pointing_to_collect(tmp_path, capsys):
    d = tmp_path / "gate"
    d.mkdir()
    (d / "runs.parquet").write_bytes(b"PAR1 not really a parquet file")
    assert main(["report", "gate", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "runs.parquet is unreadable" in err and "senet collect gate" in err
