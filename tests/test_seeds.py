"""Kept weights (`senet weights`) and the excitation findings over several trained networks
(`senet analyze-seeds`): the seed, not the test image, is the unit of an architecture claim."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.findings import evaluate_findings as evaluate
from analysis.seeds_render import last_stage_removal, over_seeds, per_seed_rho, removal_figure
from senet.checkpoint import load_checkpoint, load_model
from senet.cli import main
from senet.sequential import Design, running_cs
from tests.helpers import train_tiny_se20

pytestmark = pytest.mark.usefixtures("one_thread")
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Run folders of sigmoid SE-ResNet-20s (seeds 0-2) and one tanh, one epoch on synthetic data."""
    root = tmp_path_factory.mktemp("seeds")
    for gate, seed in [("sigmoid", s) for s in SEEDS] + [("tanh", 0)]:
        train_tiny_se20(root / f"{gate}_{seed}", gate, seed)
    return root


def _study(tmp_path, trained):
    """A gate study whose trial folders (``ray/...``, relative to the study) hold the checkpoints;
    validation errors make sigmoid seed 1 the best sigmoid run."""
    d = tmp_path / "results" / "gate"
    rows = []
    for gate, seed in [("sigmoid", s) for s in SEEDS] + [("tanh", 0)]:
        folder = d / "ray" / f"{gate}_{seed}"
        folder.mkdir(parents=True)
        shutil.copy(trained / f"{gate}_{seed}" / "checkpoint.pt", folder / "checkpoint.pt")
        rows.append({"study": "gate", "trial_id": f"{gate}_{seed}", "arm": gate, "seed": seed, "se.gate": gate,
                     "status": "completed", "recipe": "r1", "model.name": "se_resnet20",
                     "test_top1_err": 50.0 + seed, "best_val_top1_err": 40.0 + abs(seed - 1),
                     "checkpoint": f"ray/{gate}_{seed}/checkpoint.pt", "git_commit": "0123456789ab"})
    pd.DataFrame(rows).to_parquet(d / "runs.parquet", index=False)
    (d / "study.json").write_text(json.dumps({"name": "gate", "axis": "se.gate", "reference_arm": "sigmoid",
                                              "arms": [{"arm": a, "overrides": {"se.gate": a}}
                                                       for a in ("sigmoid", "tanh")]}))
    return d


def test_weights_are_kept_without_training_state_and_read_after_the_trials_are_gone(tmp_path, trained, capsys):
    d = _study(tmp_path, trained)
    res = str(tmp_path / "results")
    assert main(["weights", "gate", "--results", res, "--best", "all", "--every", "sigmoid"]) == 0
    index = pd.read_csv(d / "weights" / "index.csv")
    assert list(zip(index["arm"], index["seed"], strict=True)) == [("sigmoid", s) for s in SEEDS] + [("tanh", 0)]
    for gate, seed in zip(index["arm"], index["seed"], strict=True):
        kept = load_checkpoint(d / "weights" / f"{gate}_seed{seed}.pt")
        full = load_checkpoint(d / "ray" / f"{gate}_{seed}" / "checkpoint.pt")
        assert not {"optimizer", "schedule", "rng"} & set(kept) and "optimizer" in full
        assert kept["model"].keys() == full["model"].keys()
        assert all(torch.equal(kept["model"][k], full["model"][k]) for k in kept["model"])
    shutil.rmtree(d / "ray")  # a clone: the trial folders are not committed
    model, cfg, _ = load_model(d / "weights" / "sigmoid_seed1.pt")
    assert cfg.se.gate == "sigmoid" and cfg.seed == 1
    from analysis.study_results import best_checkpoint

    path, row = best_checkpoint(res, "gate")  # `senet analyze --best` in a clone: among the kept runs
    assert path == str(d / "weights" / "sigmoid_seed1.pt") and row["seed"] == 1
    assert main(["gates", "--results", res, "--device", "cpu", "--figure-images", "8"]) == 0
    md = (d / "gates" / "gates.md").read_text()
    assert "| sigmoid | sigmoid | 1 | 40.00 | 51.00 |" in md and "sigmoid_seed1.pt" in md  # best on validation


def test_weights_every_first_keeps_the_lowest_seeds_and_removes_later_ones(tmp_path, trained, capsys):
    """A size budget: the first N seeds of an --every arm, whatever a previous run kept."""
    d = _study(tmp_path, trained)
    res = str(tmp_path / "results")
    assert main(["weights", "gate", "--results", res, "--every", "sigmoid"]) == 0
    assert sorted(p.name for p in (d / "weights").glob("*.pt")) == [f"sigmoid_seed{s}.pt" for s in SEEDS]
    assert main(["weights", "gate", "--results", res, "--best", "tanh", "--every", "sigmoid", "--every-first", "2"]) == 0
    index = pd.read_csv(d / "weights" / "index.csv")
    assert list(zip(index["arm"], index["seed"], strict=True)) == [("sigmoid", 0), ("sigmoid", 1), ("tanh", 0)]
    assert sorted(p.name for p in (d / "weights").glob("*.pt")) == sorted(index["file"])
    # the best sigmoid run by validation (seed 1) stays when --best asks for it within the budget
    assert main(["weights", "gate", "--results", res, "--best", "all", "--every", "sigmoid", "--every-first", "1"]) == 0
    index = pd.read_csv(d / "weights" / "index.csv")
    assert list(zip(index["arm"], index["seed"], strict=True)) == [("sigmoid", 0), ("sigmoid", 1), ("tanh", 0)]
    assert main(["weights", "gate", "--results", res, "--every", "sigmoid", "--every-first", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.strip().endswith("--every-first must be 0 (all) or a positive count, not -1") and err.count("\n") == 1


def test_weights_refuse_what_cannot_be_kept(tmp_path, trained, capsys):
    _study(tmp_path, trained)
    res = str(tmp_path / "results")
    for args in (["--best", "nosuch"], []):
        assert main(["weights", "gate", "--results", res, *args]) != 0
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err


def test_analyze_seeds_reads_every_network_as_analyze_does(tmp_path, trained, capsys, monkeypatch):
    d = _study(tmp_path, trained)
    res = str(tmp_path / "results")
    assert main(["analyze-seeds", "gate", "--results", res, "--device", "cpu", "--no-progress"]) == 0
    out = d / "seeds"
    sel, rem = pd.read_csv(out / "selectivity.csv"), pd.read_csv(out / "removal.csv")
    assert sorted(sel["seed"].unique()) == list(SEEDS) and sel.groupby("seed")["block"].count().eq(9).all()
    assert set(rem["removed"]) == {"none", "stage 2", "stage 3", "stage 4"}
    # one network's numbers equal `senet analyze` on the same checkpoint
    assert main(["analyze", str(d / "ray" / "sigmoid_2" / "checkpoint.pt"), "--out", str(tmp_path / "one"),
                 "--blocks", "all", "--no-progress", "--device", "cpu", "--attr-images", "1"]) == 0
    one_sel = pd.read_csv(tmp_path / "one" / "selectivity.csv")
    mine = sel[sel["seed"] == 2].reset_index(drop=True)
    assert list(mine["block"]) == list(one_sel["block"])
    np.testing.assert_allclose(mine["eta2"], one_sel["eta2"], rtol=1e-9, atol=1e-12)
    one_rem = pd.read_parquet(tmp_path / "one" / "removal.parquet").set_index("removed")
    for _, r in rem[rem["seed"] == 2].iterrows():
        assert r["delta_top1_mean"] == pytest.approx(one_rem.loc[r["removed"], "delta_top1_mean"])
    printed = capsys.readouterr().out
    assert "3 sigmoid networks analysed" in printed and "CS (−∞, ∞) over 3 seeds" in printed  # < 5 seeds
    # a second run reads what it analysed before instead of recomputing it
    import analysis.seeds as seeds

    monkeypatch.setattr(seeds, "load_trained", lambda *a, **k: pytest.fail("recomputed a network"))
    before = (out / "removal.csv").read_text()
    assert main(["analyze-seeds", "gate", "--results", res, "--device", "cpu", "--no-progress"]) == 0
    assert (out / "removal.csv").read_text() == before


def _seed_tables(d, rhos, deltas):
    """``senet analyze-seeds`` tables whose per-seed ρ(depth, η²) and last-stage Δ are as given."""
    d.mkdir(parents=True, exist_ok=True)
    sel, rem = [], []
    for seed, (rho, delta) in enumerate(zip(rhos, deltas, strict=True)):
        eta2 = np.linspace(0.2, 0.8, 5) if rho > 0 else np.linspace(0.8, 0.2, 5)
        if abs(rho) < 1:  # swap the middle two: ρ = ±0.9
            eta2[[1, 2]] = eta2[[2, 1]]
        sel += [{"seed": seed, "block": f"SE_{2 + i // 3}_{1 + i % 3}", "depth": i + 1, "eta2": e}
                for i, e in enumerate(eta2)]
        rem += [{"seed": seed, "removed": "none", "n": 10000, "delta_top1_mean": 0.0, "added_params_pct": 0.75},
                {"seed": seed, "removed": "stage 2", "n": 10000, "delta_top1_mean": 0.3, "added_params_pct": 0.7},
                {"seed": seed, "removed": "stage 4", "n": 10000, "delta_top1_mean": delta, "added_params_pct": 0.2}]
    pd.DataFrame(sel).to_csv(d / "selectivity.csv", index=False)
    pd.DataFrame(rem).to_csv(d / "removal.csv", index=False)


@pytest.mark.parametrize("rhos, deltas, want", [
    ((1, 0.9, 1, 0.9, 1, 0.9), (3.0, 2.8, 3.3, 3.1, 2.9, 3.0), ("agrees", "contradicts")),
    ((-1, -0.9, -1, -0.9, -1, -0.9), (0.1, 0.05, 0.0, 0.12, 0.08, 0.02), ("contradicts", "agrees")),
    ((1, -1, 0.9, -0.9, 1, -1), (0.2, 0.9, 0.1, 0.8, 0.3, 0.7), ("unresolved", "unresolved")),
    ((1, 0.9, 1), (3.0, 2.8, 3.3), ("unresolved", "unresolved")),  # 3 networks: no reading before 5
])
def test_excitation_findings_read_the_seeds(tmp_path, rhos, deltas, want):
    r = tmp_path / "results"
    _seed_tables(r / "gate" / "seeds", rhos, deltas)
    df, _ = evaluate(r, n_boot=1000)
    rows = df.drop_duplicates("key").set_index("key")
    sel, rem = rows.loc["selectivity_depth"], rows.loc["last_stage_removal"]
    assert (sel["verdict"], rem["verdict"]) == want
    design = Design()
    assert sel["n"] == rem["n"] == len(rhos) and sel["n_label"] == "networks (seeds)"
    if len(rhos) >= design.min_seeds:
        lo, hi = running_cs(np.asarray(deltas), design.alpha, design.g)
        assert (rem["ci_low"], rem["ci_high"]) == pytest.approx((lo[-1], hi[-1]))
        assert rem["effect"] == pytest.approx(np.mean(deltas))
    else:
        assert "no reading before 5" in sel["reason"] and math.isinf(rem["ci_high"])
    assert rem["comparison"].startswith("stage 4 SE removed (mean) − intact")


def test_the_seeds_come_before_one_networks_analysis(tmp_path):
    from tests.test_findings import write_analysis

    r = tmp_path / "results"
    write_analysis(r / "gate" / "analysis", [0.4, 0.3, 0.25, 0.2, 0.1, 0.05], removal=(400, 100))  # contradicts
    before = evaluate(r, n_boot=1000)[0].drop_duplicates("key").set_index("key")
    assert before.loc["selectivity_depth", "verdict"] == "contradicts"
    _seed_tables(r / "gate" / "seeds", (1, 0.9, 1, 0.9, 1), (0.1, 0.05, 0.0, 0.12, 0.08))
    after = evaluate(r, n_boot=1000)[0].drop_duplicates("key").set_index("key")
    assert after.loc["selectivity_depth", "verdict"] == "agrees"
    assert after.loc["last_stage_removal", "verdict"] == "agrees"
    assert after.loc["last_stage_removal", "source"] == "results/gate/seeds"


def test_over_seeds_and_the_removal_figure_show_each_seed(tmp_path):
    deltas = [0.4, 0.6, 0.5, 0.7, 0.45, 0.55]
    _seed_tables(tmp_path, [1] * 6, deltas)
    rem = pd.read_csv(tmp_path / "removal.csv")
    per = last_stage_removal(rem)
    assert list(per["delta"]) == deltas and (per["removed"] == "stage 4").all()
    assert list(per_seed_rho(pd.read_csv(tmp_path / "selectivity.csv"))["rho"]) == pytest.approx([1.0] * 6)
    r = over_seeds(deltas, Design())
    lo, hi = running_cs(np.asarray(deltas), 0.05, 1.0)
    assert (r["n"], r["low"], r["high"]) == (6, pytest.approx(lo[-1]), pytest.approx(hi[-1]))
    assert math.isinf(over_seeds(deltas[:4], Design())["low"])  # before the design's first 5 seeds
    fig = removal_figure(rem, arm="sigmoid", design=Design())
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["stage 2 removed", "stage 4 removed"]
    dots = [c.get_offsets()[:, 1] for c in ax.collections]
    np.testing.assert_allclose(dots[1], deltas)  # the last stage: one dot per seed, on its own scale
    whisker = [ln for ln in ax.lines if len(ln.get_xdata()) == 2 and ln.get_xdata()[0] == ln.get_xdata()[1] == 1]
    assert whisker and tuple(whisker[0].get_ydata()) == pytest.approx((lo[-1], hi[-1]))


def test_every_kept_network_of_the_published_results_is_in_the_checkout():
    """results/<study>/weights/index.csv lists only files a clone has (the figures read them)."""
    from pathlib import Path

    indexes = sorted((Path(__file__).resolve().parents[1] / "results").glob("*/weights/index.csv"))
    for index in indexes:
        files = pd.read_csv(index)["file"]
        assert len(files) and all((index.parent / f).is_file() for f in files), index
