"""Figures and ablation reports (rendering side of the analysis: no torch)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from analysis.compare import compare_arms, summary_table
from analysis.errors import ReportInputError
from analysis.figures import (
    attribution_scatter,
    error_edf,
    excitation_bands,
    excitation_means,
    gradcam_grid,
    point_plot,
    removal_bars,
    seed_interval,
    selectivity_depth,
)
from analysis.report import table_rows, write_report
from analysis.stats import selectivity, t_quantile
from analysis.study_results import best_checkpoint, completed, count_test_images, load_study
from analysis.style import LABELS, save
from analysis.tables import latex, markdown
from senet.sequential import DESIGNS, seeds_to_settle

BLOCKS = ["SE_2_3", "SE_3_3", "SE_4_1", "SE_4_2", "SE_4_3"]
CLASSES = ["T-shirt/top", "Trouser", "Bag"]


#: The modules that read tables and write text and figures: none of them may load torch.
RENDERING = ("analysis.style", "analysis.figures", "analysis.report", "analysis.stats", "analysis.tables",
             "analysis.study_results", "analysis.compare", "analysis.errors", "analysis.findings",
             "analysis.findings.render", "analysis.gates_render", "analysis.cli")


def test_rendering_imports_no_torch():
    code = f"import sys; import {', '.join(RENDERING)}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def stats_tables():
    rng = np.random.default_rng(0)
    rows = []
    for block in BLOCKS:
        stage, idx = int(block[3]), int(block[5])
        c = 16 * 2 ** (stage - 2)
        for k, cls in enumerate(CLASSES):
            m = np.clip(rng.random(c) * 0.5 + 0.1 * k * (stage - 1), 0, 1)
            rows.append(pd.DataFrame({"block": block, "stage": stage, "block_index": idx, "class": cls,
                                      "class_index": k, "channel": np.arange(c), "count": 20 + k,
                                      "mean": m, "std": 0.05 + 0.02 * rng.random(c),
                                      "range_lo": 0.0, "range_hi": 1.0}))
    return pd.concat(rows, ignore_index=True)


def test_fig6_fig7_selectivity_panels(stats_tables, tmp_path):
    fig = excitation_means(stats_tables, CLASSES[:2])
    assert [ax.get_title() for ax in fig.axes] == BLOCKS
    assert all(len(ax.lines) == 3 for ax in fig.axes)  # two classes + the all-class mean
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["T-shirt/top", "Trouser", LABELS["all_classes"]]
    paths = save(fig, tmp_path / "fig6")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in paths)

    fig = excitation_bands(stats_tables, CLASSES[:2], blocks=["SE_2_3", "SE_4_3"])
    assert [ax.get_title() for ax in fig.axes] == ["SE_2_3", "SE_4_3"]
    assert all(len(ax.collections) == 2 and len(ax.lines) == 2 for ax in fig.axes)  # ± std bands

    sel = selectivity(stats_tables)
    fig = selectivity_depth(sel)
    assert len(fig.axes) == 2 and [t.get_text() for t in fig.axes[0].get_xticklabels()] == BLOCKS
    with pytest.raises(ValueError, match="unknown class 'pug'; choose from: T-shirt/top"):
        excitation_means(stats_tables, ["pug"])


def test_attribution_removal_and_gradcam_figures():
    attr = pd.DataFrame({"block": ["SE_2_3"] * 4 + ["SE_4_3"] * 4, "stage": [2] * 4 + [4] * 4,
                         "block_index": 3, "class": ["a", "a", "b", "b"] * 2, "channel": [0, 1] * 4,
                         "importance": [1, 2, 3, 4, 4, 3, 2, 1.0],
                         "mean_excitation": [.1, .2, .3, .4, .1, .2, .3, .4]})
    fig = attribution_scatter(attr)
    assert [ax.get_title() for ax in fig.axes] == ["SE_2_3  ρ = 1.00", "SE_4_3  ρ = -1.00"]

    rem = pd.DataFrame({"removed": ["none", "stage 2", "SE_2_1"], "delta_top1": [0, 0.5, 0.1],
                        "added_params_pct": [10.0, 4.0, 9.0]})
    fig = removal_bars(rem)
    assert len(fig.axes) == 2 and len(fig.axes[0].patches) == 2

    imgs = np.random.default_rng(0).random((3, 8, 8))
    fig = gradcam_grid(imgs, {"SE": imgs, "plain": imgs}, ["x", "y", "z"])
    assert len(fig.axes) == 9 and fig.axes[1].get_title() == "SE" and fig.axes[3].get_title() == "y"


# ---------------------------------------------------------------------------------------------
# Ablation reports from a fixture parquet
# ---------------------------------------------------------------------------------------------
STUDY = {"name": "gate", "title": "Excitation gate", "paper_table": "Table 12", "axis": "se.gate",
         "reference_arm": "sigmoid",
         "arms": [{"arm": "sigmoid", "overrides": {"se.gate": "sigmoid"}, "paper_top1": 22.28, "paper_top5": 6.03},
                  {"arm": "tanh", "overrides": {"se.gate": "tanh"}, "paper_top1": 23.00, "paper_top5": 6.38},
                  {"arm": "relu", "overrides": {"se.gate": "relu"}, "paper_top1": 23.47, "paper_top5": 6.98},
                  {"arm": "softmax", "overrides": {"se.gate": "softmax"}, "paper_top1": None, "paper_top5": None}],
         "preset": "quick", "seeds": 3}


def _runs():
    rows = []
    errs = {"sigmoid": [8.0, 9.0, 10.0], "tanh": [9.0, 10.5, 11.5], "relu": [7.0, 10.0, 9.5],
            "softmax": [8.5, 9.5, None]}
    for arm, vals in errs.items():
        for seed, e in enumerate(vals):
            status = "completed" if e is not None else "diverged"
            rows.append({"study": "gate", "arm": arm, "trial_id": f"{arm}_{seed}", "seed": seed,
                         "model.name": "se_resnet20", "se.gate": arm, "status": status,
                         "test_top1_err": e if e is not None else np.nan,
                         "test_top5_err": (e / 10 if e is not None else np.nan),
                         # validation ranks differently from test: sigmoid seed 0 is best on validation
                         "best_val_top1_err": (7.5 if (arm, seed) == ("sigmoid", 0) else
                                               e + 1.0 if e is not None else np.nan),
                         "test_top1_err_at_best_val": e,
                         "params": 272095, "flops": 41_000_000 + (1000 if arm == "softmax" else 0),
                         "se_hidden": 4, "epochs_run": 2, "wall_time_s": 1.0, "train_time_s": 1.0,
                         "node": "n", "git_commit": "abc", "checkpoint": f"/r/{arm}_{seed}/checkpoint.pt"})
    # An arm's diverged retry of a seed is counted but never averaged.
    rows.append({**rows[0], "trial_id": "sigmoid_x", "status": "diverged", "test_top1_err": 99.0})
    return pd.DataFrame(rows)


@pytest.fixture
def study_dir(tmp_path):
    d = tmp_path / "gate"
    d.mkdir()
    _runs().to_parquet(d / "runs.parquet", index=False)
    (d / "study.json").write_text(json.dumps(STUDY))
    return tmp_path


def test_summary_table_hand_computed():
    runs = _runs()
    t = summary_table(runs, STUDY).set_index("arm")
    assert list(t.index) == ["sigmoid", "tanh", "relu", "softmax"]
    assert t.loc["sigmoid", "n"] == 3 and t.loc["sigmoid", "diverged"] == 1
    assert t.loc["sigmoid", "test_top1_err_mean"] == pytest.approx(9.0)
    assert t.loc["sigmoid", "test_top1_err_std"] == pytest.approx(1.0)
    assert t.loc["tanh", "test_top1_err_mean"] == pytest.approx(31 / 3)
    assert t.loc["tanh", "delta_test_top1_err"] == pytest.approx(31 / 3 - 9)
    assert t.loc["softmax", "n"] == 2 and t.loc["softmax", "diverged"] == 1
    assert t.loc["softmax", "test_top1_err_std"] == pytest.approx(np.std([8.5, 9.5], ddof=1))
    assert t.loc["tanh", "paper_delta_top1"] == pytest.approx(0.72)
    rows = {r[0]: r for r in table_rows(t.reset_index())}
    assert rows["sigmoid (ref)"][1:5] == ["9.00 ± 1.00", "0.90 ± 0.10", "3", "1"]
    assert rows["tanh"][7:] == ["+1.33", "23.00 / 6.38", "+0.72"]
    assert rows["softmax"][6] == "41M" and rows["softmax"][8] == "–"


def test_compare_arms_outcomes():
    # judged by the standard preset's default design (g = 1), as no design is declared
    b = compare_arms(_runs(), {**STUDY, "preset": "standard"}, "test_top1_err", n_boot=2000).set_index("arm")
    k = len(STUDY["arms"]) - 1  # every arm but the reference shares α
    assert b.attrs["k"] == k and b.attrs["level"] == pytest.approx(0.05 / k) and not b.attrs["declared"]
    # tanh - sigmoid per seed: +1.0, +1.5, +1.5. The fixed-n t interval 4/3 ± t(0.975, 2)·0.2887/√3
    # = [+0.616, +2.051] excludes 0, but no sequence is finite at 3 seeds: open, with the seeds it lacks.
    t = b.loc["tanh"]
    assert t["pairs"] == 3 and t["mean_diff"] == pytest.approx(4 / 3) and t["sd_diff"] == pytest.approx(0.288675, abs=1e-6)
    assert (t["t_low"], t["t_high"]) == pytest.approx((0.6162, 2.0505), abs=1e-4)
    assert 1.0 <= t["ci_low"] and t["ci_high"] <= 1.5  # the bootstrap: descriptive too
    assert t["outcome"] == "open" and np.isinf(t["cs_low"]) and np.isinf(t["cs_high"])
    assert t["more_seeds"] == seeds_to_settle(3, 4 / 3, t["sd_diff"], 0.05 / k, 1.0, 0.5)
    assert t["rho"] == pytest.approx(np.corrcoef([9.0, 10.5, 11.5], [8.0, 9.0, 10.0])[0, 1])
    # relu - sigmoid: -1, +1, -0.5: open as well.
    assert b.loc["relu", "outcome"] == "open" and b.loc["relu", "t_low"] < 0 < b.loc["relu", "t_high"]
    # softmax pairs only on the two completed seeds: +0.5, +0.5. Two equal differences have no
    # spread: no verdict (a zero-width interval would call it "worse") and no projection.
    s = b.loc["softmax"]
    assert s["pairs"] == 2 and s["outcome"] == "open" and pd.isna(s["more_seeds"])
    assert s["reason"] == "Δ ∈ (−∞, ∞)" and np.isnan(s["t_low"]) and np.isnan(s["rho"])
    # the quick preset's default design (g = 50) gives a finite sequence at 3 seeds already
    q = compare_arms(_runs(), STUDY, "test_top1_err", n_boot=2000)
    assert q.attrs["design"] == DESIGNS["quick"] and not q.attrs["declared"]
    lo, hi = q.set_index("arm").loc["tanh", ["cs_low", "cs_high"]]
    assert np.isfinite(lo) and lo < 4 / 3 < hi


def test_markdown_and_latex_tables():
    md = markdown(["arm", "top-1"], [["a|b", "1.00 ± 0.10"]])
    assert md.splitlines() == ["| arm | top-1 |", "|---|---:|", "| a\\|b | 1.00 ± 0.10 |"]
    tex = latex(["arm", "Δ top-1"], [["se_resnet", "22.28 ± 0.10"]], "Table 12")
    assert "se\\_resnet & 22.28 $\\pm$ 0.10 \\\\" in tex and "$\\Delta$ top-1" in tex
    assert "\\toprule" in tex and "\\caption{Table 12}" in tex


def test_write_report(study_dir, drawn):
    path = write_report(study_dir, "gate", n_boot=500)
    text = path.read_text()
    assert path == study_dir / "gate" / "report.md"
    assert "| sigmoid (ref) | 9.00 ± 1.00 | 0.90 ± 0.10 | 3 | 1 |" in text
    assert "22.28 / 6.03" in text and "Table 12" in text
    assert "13 trials: 11 completed, 2 not (diverged: 2)" in text
    assert "Not in the table" not in text  # every trial finished
    for stem in ("pointplot", "edf_test_top1_err", "edf_test_top5_err"):
        for ext in ("png", "pdf"):
            assert (study_dir / "gate" / "figures" / f"{stem}.{ext}").is_file()
        assert f"figures/{stem}.png" in text
    assert (study_dir / "gate" / "table.tex").read_text().startswith("\\begin{table}")
    # what the figures show: the arms in the study's order with their finished seeds, and each
    # arm's finished errors (the diverged retry left out)
    arms, ok = ["sigmoid", "tanh", "relu", "softmax"], completed(_runs())
    points = drawn["pointplot"]
    assert [ax.get_title() for ax in points.axes] == ["top-1 error (%)", "top-5 error (%)"]
    for ax in points.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["sigmoid\nn=3", "tanh\nn=3", "relu\nn=3", "softmax\nn=2"]
    for metric in ("test_top1_err", "test_top5_err"):
        edf = drawn[f"edf_{metric}"].axes[0]
        assert [t.get_text().split(" (")[0] for t in edf.get_legend().get_texts()] == arms
        for line, arm in zip(edf.lines, arms, strict=True):
            assert sorted(set(line.get_xdata())) == sorted(ok.loc[ok["arm"] == arm, metric])
            assert line.get_ydata()[-1] == 1.0  # every finished run counted


def test_running_and_errored_trials_are_not_counted_as_diverged(study_dir):
    """The table's `diverged` column counts status "diverged" only (an interrupted, running trial is
    not a diverged one); trials not finished, and errored ones, are named below it."""
    runs = _runs()
    unfinished = [{**runs.iloc[3].to_dict(), "trial_id": "tanh_3", "seed": 3, "status": "running"},
                  {**runs.iloc[6].to_dict(), "trial_id": "relu_3", "seed": 3, "status": "error"}]
    runs = pd.concat([runs, pd.DataFrame(unfinished).assign(test_top1_err=np.nan, test_top5_err=np.nan)],
                     ignore_index=True)
    t = summary_table(runs, STUDY).set_index("arm")
    counts = t[["n", "diverged", "running", "errored"]].to_dict("index")
    assert counts["sigmoid"] == {"n": 3, "diverged": 1, "running": 0, "errored": 0}
    assert counts["tanh"] == {"n": 3, "diverged": 0, "running": 1, "errored": 0}
    assert counts["relu"] == {"n": 3, "diverged": 0, "running": 0, "errored": 1}
    assert [r[4] for r in table_rows(t.reset_index())] == ["1", "0", "0", "1"]
    runs.to_parquet(study_dir / "gate" / "runs.parquet", index=False)
    text = write_report(study_dir, "gate", n_boot=500).read_text()
    assert "| tanh | 10.33 ± 1.26 | 1.03 ± 0.13 | 3 | 0 |" in text and "| relu | 8.83 ± 1.61 | 0.88 ± 0.16 | 3 | 0 |" in text
    assert ("Not in the table (`diverged` counts diverged trials only): not finished (running, or interrupted "
            "and not resumed): tanh 1; errored: relu 1.") in text
    assert "15 trials: 11 completed, 4 not (" in text and "running: 1" in text and "error: 1" in text
    assert "| tanh | 10.33 ± 1.26 | 1.03 ± 0.13 | 3 | 0 |" in (study_dir / "gate" / "table.md").read_text()


def test_a_rows_checkpoint_is_relative_to_the_study_folder(study_dir, tmp_path_factory, monkeypatch):
    """collect records a trial's checkpoint relative to <results>/<study>, so the table stays
    valid wherever the results folder is; tables with absolute paths (collected before) still work."""
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))  # never relative to the working directory
    rel = "ray/gate-quick/sigmoid_0/checkpoint_000002"
    ckpt_dir = study_dir / "gate" / rel
    ckpt_dir.mkdir(parents=True)
    (ckpt_dir / "final.json").write_text(json.dumps({"num_test": 400}))
    runs = _runs()
    for recorded in (rel, f"{rel}/checkpoint.pt", str(ckpt_dir / "checkpoint.pt")):
        runs.loc[0, "checkpoint"] = recorded  # sigmoid seed 0: the best by validation
        runs.to_parquet(study_dir / "gate" / "runs.parquet", index=False)
        path, row = best_checkpoint(study_dir, "gate")
        assert path == str(study_dir / "gate" / recorded) and row["checkpoint"] == recorded
        # the test-set size read from the final.json beside it (the table has no num_test column)
        assert count_test_images(runs, study_dir / "gate") == (400, "final.json")
        assert "N = 400 test images, from final.json" in write_report(study_dir, "gate", n_boot=200).read_text()


def test_point_plot_and_edf_panels():
    ok = completed(_runs())
    arms = ["sigmoid", "tanh", "relu", "softmax"]
    fig = point_plot(ok, arms)
    assert len(fig.axes) == 2
    # the interval is a Student-t interval over the seeds, and says so with its n
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [
        "sigmoid\nn=3", "tanh\nn=3", "relu\nn=3", "softmax\nn=2"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "single runs", "mean ± 95% t-CI over seeds (none for n = 1)"]
    # sigmoid 8, 9, 10: 9 ± t(0.975, 2)·1/√3 = 9 ± 2.484
    bars = fig.axes[0].collections[-1].get_segments()
    assert bars[0][0][1] == pytest.approx(9 - 2.4841, abs=1e-3) and bars[0][1][1] == pytest.approx(9 + 2.4841, abs=1e-3)
    one = point_plot(ok.query("arm != 'tanh' or seed == 0"), arms, ["test_top1_err"])
    assert "tanh\nn=1" in [t.get_text() for t in one.axes[0].get_xticklabels()]
    assert np.isnan(seed_interval([9.0])[1])  # one seed: no interval
    fig = error_edf(ok, arms)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    # the bracketed pair "sigmoid [8.00, 9.00]" said nothing about what it was
    assert labels[0] == "sigmoid (3 runs: min 8.00, mean 9.00)" and len(fig.axes[0].lines) == 4


def test_missing_study_is_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results for study 'nope'"):
        load_study(tmp_path, "nope")


def test_best_checkpoint_is_chosen_on_validation_never_test(study_dir):
    # relu seed 0 has the lowest test error (7.0) but sigmoid seed 0 the lowest
    # validation error (7.5); the diverged 'sigmoid_x' row and NaNs never win.
    path, row = best_checkpoint(study_dir, "gate")
    assert path == "/r/sigmoid_0/checkpoint.pt" and row["arm"] == "sigmoid" and row["best_val_top1_err"] == 7.5


def test_best_checkpoint_without_validation_is_refused(study_dir):
    runs = _runs().drop(columns="best_val_top1_err")
    runs.to_parquet(study_dir / "gate" / "runs.parquet", index=False)
    with pytest.raises(ReportInputError, match="no validation error .* never on test"):
        best_checkpoint(study_dir, "gate")
    runs.assign(best_val_top1_err=np.nan).to_parquet(study_dir / "gate" / "runs.parquet", index=False)
    with pytest.raises(ReportInputError, match="no validation error"):
        best_checkpoint(study_dir, "gate")


def test_t_quantile_matches_tables():
    # two-sided 95% critical values of Student's t (any statistics table)
    for df, t in [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (30, 2.042)]:
        assert abs(t_quantile(0.975, df) - t) < 2e-3


def test_two_noisy_seeds_stay_open():
    # Differences +1 and +9 points: the bootstrap interval [+1, +9] would exclude 0, but two seeds this
    # far apart prove nothing (t interval: 5 ± 12.706·5.657/√2 = [-45.8, +55.8]; no sequence at all).
    runs = pd.DataFrame([{"arm": a, "seed": s, "status": "completed", "test_top1_err": e}
                         for a, s, e in [("sigmoid", 0, 10.0), ("sigmoid", 1, 10.0),
                                         ("tanh", 0, 11.0), ("tanh", 1, 19.0)]])
    meta = {"reference_arm": "sigmoid", "arms": [{"arm": "sigmoid"}, {"arm": "tanh"}]}
    b = compare_arms(runs, meta, "test_top1_err", n_boot=2000).set_index("arm")
    # a bootstrap over 2 pairs (3 possible resampled means) is not computed at all
    assert np.isnan(b.loc["tanh", "ci_low"])
    assert abs(b.loc["tanh", "t_low"] + 45.8) < 0.1 and abs(b.loc["tanh", "t_high"] - 55.8) < 0.1
    assert b.loc["tanh", "outcome"] == "open" and np.isinf(b.loc["tanh", "cs_high"])
    assert b.loc["tanh", "reason"].startswith("Δ ∈ (−∞, ∞); ≈ ")


def test_a_figure_drawn_again_from_the_same_table_is_the_same_file(tmp_path):
    """Figures are committed beside their tables: regenerating them must not change a byte (the
    single runs' jitter and the PDF creation date are fixed), nor the caller's random state."""
    ok = completed(_runs())
    arms = ["sigmoid", "tanh", "relu", "softmax"]
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first = save(point_plot(ok, arms), tmp_path / "a" / "pointplot")
    assert np.array_equal(np.random.get_state()[1], before)
    second = save(point_plot(ok, arms), tmp_path / "b" / "pointplot")
    for p, q in zip(first, second, strict=True):
        assert p.read_bytes() == q.read_bytes(), p.name
