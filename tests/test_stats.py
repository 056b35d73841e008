"""Verdicts over seeds: the anytime-valid confidence sequence at α/k
in the report, the descriptive paired t and bootstrap intervals, ρ̂, the seed projection, the test
set's resolution, one recipe per report, and nuisance values that are not seeds."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis.compare import compare_arms, projection, settle_seeds
from analysis.report import write_report
from analysis.stats import pair_correlation, paired_test, pooled_sd
from senet.cli import main
from senet.records.recipe import recipe_hash
from senet.sequential import Design, assess, fixed_n_seeds, seeds_to_settle

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


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.replace("\\|", "¦").strip("|").split("|")]


def _shifted(ref: list[float], diffs: list[float]) -> list[float]:
    return [x + d for x, d in zip(ref, diffs, strict=True)]


# ---------------------------------------------------------------------------------------------
# The statistics themselves
# ---------------------------------------------------------------------------------------------
def test_pair_correlation_is_pearsons_r_of_the_paired_errors():
    a, r = np.array([9.0, 10.5, 11.5, 10.0, 9.2]), np.array([8.0, 9.0, 10.0, 9.5, 9.9])
    assert pair_correlation(a, r) == pytest.approx(np.corrcoef(a, r)[0, 1])
    va, vr, vd = a.var(ddof=1), r.var(ddof=1), (a - r).var(ddof=1)
    assert pair_correlation(a, r) == pytest.approx((va + vr - vd) / (2 * np.sqrt(va * vr)))
    assert np.isnan(pair_correlation(a[:2], r[:2])) and np.isnan(pair_correlation(a, np.full(5, 9.0)))


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


def test_settle_seeds_uses_the_sequence_and_the_fixed_n_design():
    # the design note's fixed-n table: σ_d 0.5, δ 0.5, 80% power: 10 seeds at α, 14 at α/3
    d = Design()
    assert settle_seeds(0.5, d, 1, 0.5)[1] == 10 and settle_seeds(0.5, d, 3, 0.5)[1] == 14
    for k in (1, 3, 6):
        n, fixed = settle_seeds(0.5, d, k, 0.5)
        assert n == 2 + seeds_to_settle(2, 0.5, 0.5, d.level(k), d.g, d.delta)
        assert fixed == fixed_n_seeds(0.5, 0.5, d.level(k)) and n > fixed  # the price of any stopping
    assert settle_seeds(float("nan"), d, 1, 0.5) == (None, None) and settle_seeds(0.0, d, 1, 0.5) == (None, None)
    sd, df = pooled_sd([np.array([1.0, 3.0]), np.array([0.0, 1.0, 2.0])])
    assert df == 3 and sd == pytest.approx(np.sqrt((2 + 2) / 3))


# ---------------------------------------------------------------------------------------------
# Outcomes in the report
# ---------------------------------------------------------------------------------------------
def test_two_seeds_one_image_apart_stay_open(tmp_path):
    # sigmoid 9.3/9.8 vs tanh 9.2/9.7: two equal differences (a zero-width interval would call it
    # "better"), one image of a 1,000-image test set. No sequence is finite at 2 seeds.
    root = _study(tmp_path, _rows({"sigmoid": [9.3, 9.8], "tanh": [9.2, 9.7], "relu": [9.4, 9.6]}))
    text = write_report(root, "gate", n_boot=500).read_text()
    lines = _verdict_lines(text)
    assert len(lines) == 4
    for ln in lines:
        c = _cells(ln)
        assert c[2] == "2" and c[4] == "(−∞, ∞)" and c[5] == "open" and c[6].startswith("Δ ∈ (−∞, ∞)")
    assert "Outcomes against `sigmoid` (top-1 error, anytime-valid confidence sequences at α/k = 0.025): " \
           "2 open (of 2)." in text
    assert "Projection (top-1 error): σ̂_d = " in text and "n = 2 seed pairs at most" in text


def test_a_large_steady_difference_is_worse_and_no_difference_is_alike(tmp_path):
    # relu +5 pp with a tiny spread over 8 seeds; tanh equal to sigmoid up to a small spread over 20.
    rng = np.random.default_rng(0)
    sig = list(10 + rng.normal(0, 0.5, 20))
    rows = _rows({"sigmoid": sig, "tanh": _shifted(sig, rng.normal(0, 0.1, 20)),
                  "relu": _shifted(sig[:8], 5 + rng.normal(0, 0.05, 8))}, num_test=10000)
    text = write_report(_study(tmp_path, rows), "gate", n_boot=500).read_text()
    tanh, relu = (_cells(ln) for ln in _verdict_lines(text)[:2])
    assert tanh[2] == "20" and tanh[5] == "alike" and tanh[6].startswith("the sequence lies inside ±δ at n = ")
    assert relu[2] == "8" and relu[5] == "worse" and relu[6].startswith("the 0.975 sequence excludes 0")
    low, high = (float(x) for x in relu[4].strip("[]").split(","))
    assert 4.8 < low < 5 < high < 5.2
    assert "Outcomes against `sigmoid`: 1 worse, 1 alike (of 2)." in text
    assert "| arm | vs | n | Δ̂ (pp) | anytime 97.5% CS | outcome | reason | σ̂_d | ρ̂ | fixed-n t 95% CI " \
           "(descriptive; not valid under optional stopping) | bootstrap 95% CI (descriptive) |" in text
    assert "the defaults of `senet.sequential.Design`, because study.json declares none" in text


def test_a_difference_below_one_test_image_is_never_better(tmp_path):
    # 8 seeds, tanh 0.050-0.043 pp below sigmoid every time on 1,000 test images (half an image):
    # the sequence excludes 0 but the difference is below the resolution: alike, never better.
    sig = [9.3, 9.8, 10.1, 9.0, 9.6, 9.9, 10.4, 9.2]
    rows = _rows({"sigmoid": sig, "tanh": [e - 0.05 + 0.001 * i for i, e in enumerate(sig)],
                  "relu": [e + 0.3 + 0.1 * i for i, e in enumerate(sig)]}, num_test=1000)
    text = write_report(_study(tmp_path, rows), "gate", n_boot=500).read_text()
    tanh, relu = (_cells(ln) for ln in _verdict_lines(text)[:2])
    assert tanh[5] == "alike" and tanh[3] == "-0.05" and tanh[4].endswith("-0.04]")  # [−0.05, −0.04]
    assert relu[5] == "worse" and relu[4] == "[+0.21, +1.07]"  # Δ̂ 0.65, σ̂_d 0.24 at α/2: closed at n = 7
    assert "one test image is 0.10 pp (N = 1000 test images, from num_test)" in text


def test_the_level_is_alpha_over_the_arms_compared(tmp_path):
    # tanh below sigmoid by 1.2 pp on 6 seeds: the 95% sequence excludes 0 (better) but the 97.5%
    # one, for two arms compared with the reference, does not: open, one seed short.
    sig = [10.0, 11.0, 9.0, 10.5, 9.8, 10.2]
    d = [-1.1, -1.9, -0.4, -1.3, -1.0, -1.5]
    two = _rows({"sigmoid": sig, "tanh": _shifted(sig, d), "relu": _shifted(sig, [0.1] * 6)}, num_test=1000)
    b = compare_arms(pd.DataFrame(two), GATE, n_boot=500).set_index("arm")
    want = assess(np.array(d), Design(), k=2, resolution=0.1)
    assert b.attrs["k"] == 2 and b.attrs["level"] == pytest.approx(0.025)
    assert (b.loc["tanh", "cs_low"], b.loc["tanh", "cs_high"]) == pytest.approx((want.low, want.high))
    assert b.loc["tanh", "outcome"] == "open" and b.loc["tanh", "more_seeds"] == 1
    one_meta = {**GATE, "arms": GATE["arms"][:2]}
    one = [r for r in two if r["arm"] != "relu"]
    b1 = compare_arms(pd.DataFrame(one), one_meta, n_boot=500).set_index("arm")
    assert b1.attrs["k"] == 1 and b1.loc["tanh", "outcome"] == "better" and b1.loc["tanh", "cs_high"] < 0
    text = write_report(_study(tmp_path, two), "gate", n_boot=500).read_text()
    assert "level α/k = 0.05/2 (Bonferroni over the 2 arms compared with the reference)" in text.replace(
        "Each arm's is at level", "level")
    # the fixed-n t interval excludes 0 at 6 seeds, and is only a descriptive column
    assert b.loc["tanh", "t_high"] < 0


def test_open_comes_with_the_seeds_it_would_take(tmp_path):
    rows = _rows({"sigmoid": [9.0, 9.5, 10.0], "tanh": [9.5, 9.4, 10.6], "relu": [9.2, 9.9, 9.6]},
                 num_test=1000)
    b = compare_arms(pd.DataFrame(rows), GATE, n_boot=500).set_index("arm")
    p = projection(pd.DataFrame(rows), GATE, num_test=1000)
    sd = pooled_sd([np.array([0.5, -0.1, 0.6]), np.array([0.2, 0.4, -0.4])])[0]
    assert p["sd"] == pytest.approx(sd) and p["n"] == 3 and p["k"] == 2 and p["effect"] == 0.5
    assert (p["cs_seeds"], p["fixed_seeds"]) == settle_seeds(sd, Design(), 2, 0.5)
    t = b.loc["tanh"]
    assert t["outcome"] == "open" and t["rho"] == pytest.approx(np.corrcoef([9.5, 9.4, 10.6], [9.0, 9.5, 10.0])[0, 1])
    assert t["more_seeds"] == seeds_to_settle(3, t["mean_diff"], t["sd_diff"], 0.025, 1.0, 0.5)
    more = int(t["more_seeds"])
    assert t["reason"] == f"Δ ∈ (−∞, ∞); ≈ {more} more seed{'s' if more != 1 else ''} would settle it"


def test_a_declared_design_is_used_and_named(tmp_path):
    # study.json declares δ = 1 pp and a cap of 6 seeds: a comparison still open at 6 seeds is unresolved.
    meta = {**GATE, "preset": "standard",
            "sequential": {"standard": {"delta": 1.0, "max_seeds": 6, "min_seeds": 5, "alpha": 0.05, "g": 1.0}}}
    sig = [10.0, 11.0, 9.0, 10.5, 9.8, 10.2]
    rows = _rows({"sigmoid": sig, "tanh": _shifted(sig, [0.3, -0.5, 0.9, -0.2, 0.6, -0.4]),
                  "relu": _shifted(sig, [0.1, -0.1, 0.05, 0.0, -0.05, 0.02])}, num_test=10000)
    text = write_report(_study(tmp_path, rows, meta), "gate", n_boot=500).read_text()
    tanh, relu = (_cells(ln) for ln in _verdict_lines(text)[:2])
    assert tanh[5] == "unresolved" and tanh[6].startswith("cap reached: Δ ∈ [")
    assert relu[5] == "alike"
    assert "δ = 1 pp, g = 1, 5 seeds before any verdict, cap 6 seeds, k = 2, level α/k = 0.025; declared in " \
           "study.json (`sequential`)" in text
    (tmp_path / "gate" / "study.json").write_text(json.dumps({**meta, "sequential": {"standard": {"beta": 2}}}))
    assert main(["report", "gate", "--results", str(tmp_path)]) == 2


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
    # smoke and quick trials in one runs.parquet are two recipes: averaged together they mean nothing.
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
# Bad input is one line
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
