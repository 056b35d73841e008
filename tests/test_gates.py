"""`senet gates`: gating choices compared by the excitations they learn, on two
tiny checkpoints (sigmoid and tanh SE-ResNet-20, one epoch on the synthetic data)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.extract import block_position
from analysis.gates import best_runs, gate_bounds
from analysis.gates_render import stage_summary
from senet import se_modules
from senet.checkpoint import load_model
from senet.cli import main
from senet.data import load_datasets, normalize
from tests.helpers import train_tiny_se20

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Run folders of a sigmoid and a tanh SE-ResNet-20 trained one epoch on the same synthetic data."""
    root = tmp_path_factory.mktemp("gates")
    for gate in ("sigmoid", "tanh"):
        train_tiny_se20(root / gate, gate)
    return root


def _study(root, trained, rows_extra=()):
    """A gate study whose runs.parquet points at the trained checkpoints; sigmoid has a second seed,
    better on test but worse on validation, whose checkpoint does not exist (it must not be chosen)."""
    d = root / "results" / "gate"
    d.mkdir(parents=True)
    rows = [
        {"arm": "sigmoid", "seed": 0, "se.gate": "sigmoid", "status": "completed", "test_top1_err": 50.0,
         "best_val_top1_err": 40.0, "checkpoint": str(trained / "sigmoid" / "checkpoint.pt")},
        # lower test error but higher validation error: the best run is chosen on validation
        {"arm": "sigmoid", "seed": 1, "se.gate": "sigmoid", "status": "completed", "test_top1_err": 10.0,
         "best_val_top1_err": 60.0, "checkpoint": str(root / "gone" / "checkpoint.pt")},
        {"arm": "tanh", "seed": 0, "se.gate": "tanh", "status": "completed", "test_top1_err": 55.0,
         "best_val_top1_err": 45.0, "checkpoint": str(trained / "tanh" / "checkpoint.pt")},
        *rows_extra]
    pd.DataFrame([{"study": "gate", "trial_id": f"{r['arm']}_{r['seed']}", "model.name": "se_resnet20",
                   "recipe": "r1", **r} for r in rows]).to_parquet(d / "runs.parquet", index=False)
    (d / "study.json").write_text(json.dumps({"name": "gate", "axis": "se.gate", "reference_arm": "sigmoid",
                                              "arms": [{"arm": a, "overrides": {"se.gate": a}}
                                                       for a in ("sigmoid", "tanh", "relu")]}))
    return d


def _stage_values(run_dir, stage):
    """Every excitation of one stage's blocks over the test split, computed directly (no accumulator)."""
    model, cfg, meta = load_model(run_dir / "checkpoint.pt")
    ds = load_datasets(cfg.data)
    seen = []
    mods = se_modules(model)
    hs = [m.gate.register_forward_hook(lambda mod, i, o: seen.append(o.flatten(1)))
          for n, m in mods.items() if block_position(n)[0] == stage]
    with torch.no_grad():
        model(normalize(torch.as_tensor(ds.test_x), meta["data"]["mean"], meta["data"]["std"]))
    for h in hs:
        h.remove()
    return torch.cat(seen, 1).double().numpy()


def test_gates_on_a_study_folder_picks_the_best_by_validation(tmp_path, trained, capsys, drawn):
    relu = {"arm": "relu", "seed": 0, "se.gate": "relu", "status": "completed", "test_top1_err": 60.0,
            "best_val_top1_err": 50.0, "checkpoint": "ray/relu_0/checkpoint.pt"}  # pruned or never copied
    d = _study(tmp_path, trained, [relu])
    assert main(["gates", "--results", str(tmp_path / "results"), "--device", "cpu", "--figure-images", "16"]) == 0
    out = d / "gates"
    cap = capsys.readouterr()
    assert "note: not analysed: relu: the best run's checkpoint is not here (ray/relu_0/checkpoint.pt)" in cap.err
    t = pd.read_csv(out / "gates.csv")
    assert list(zip(t["label"], t["stage"], strict=True)) == [(g, s) for g in ("sigmoid", "tanh") for s in (2, 3, 4)]
    assert (t["images"] == 40).all() and (t["blocks"] == 3).all()
    assert list(t["channels"]) == [48, 96, 192] * 2
    # the table's moments equal a direct computation over every test image and channel of the stage
    for gate in ("sigmoid", "tanh"):
        for stage in (2, 4):
            v = _stage_values(trained / gate, stage)
            row = t[(t["label"] == gate) & (t["stage"] == stage)].iloc[0]
            assert row["mean"] == pytest.approx(v.mean(), abs=1e-6)
            assert row["std"] == pytest.approx(v.std(), abs=1e-6)
            lo, hi = {"sigmoid": (0.1, 0.9), "tanh": (-0.8, 0.8)}[gate]
            assert row["near_low"] == pytest.approx((v < lo).mean()) and row["near_high"] == pytest.approx((v > hi).mean())
            assert 0 <= row["eta2"] <= 1
    sig = t[t["label"] == "sigmoid"]
    assert ((sig["mean"] > 0) & (sig["mean"] < 1)).all()
    md = (out / "gates.md").read_text()
    assert "![gates](gates.png)" in md and "| sigmoid | sigmoid | 0 | 40.00 | 50.00 |" in md  # seed 0, not 1
    assert "Not analysed: relu: the best run's checkpoint is not here" in md
    for f in ("gates.png", "gates.pdf", "gates_blocks.csv"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0
    # the figure written: a row per analysed gate, a column per stage; each panel's dashed line is
    # the stage's mean in gates.csv, and its corner gives that mean and standard deviation
    fig = drawn["gates"]
    assert [ax.get_ylabel() for ax in fig.axes[::3]] == ["sigmoid", "tanh"]
    assert [ax.get_title() for ax in fig.axes[:3]] == [f"stage {s} (conv{s}_x)" for s in (2, 3, 4)]
    for ax, (_, row) in zip(fig.axes, t.iterrows(), strict=True):
        assert ax.lines[0].get_xdata()[0] == pytest.approx(row["mean"])
        assert ax.texts[-1].get_text().startswith(f"mean {row['mean']:.2f}, sd {row['std']:.2f}")
    blocks = pd.read_csv(out / "gates_blocks.csv")
    assert len(blocks) == 18 and set(blocks["gate"]) == {"sigmoid", "tanh"}
    assert "sigmoid        stage 2" in cap.out


def test_gates_resolves_checkpoints_relative_to_the_study_folder(tmp_path, trained, monkeypatch):
    """runs.parquet records checkpoints relative to the study folder (a checkpoint folder or
    its checkpoint.pt); the working directory does not matter."""
    d = _study(tmp_path, trained)
    for gate, recorded in (("sigmoid", "ray/gate-smoke/sigmoid_0/checkpoint_000001"),
                           ("tanh", "ray/gate-smoke/tanh_0/checkpoint_000001/checkpoint.pt")):
        folder = d / "ray" / "gate-smoke" / f"{gate}_0" / "checkpoint_000001"
        folder.mkdir(parents=True)
        (folder / "checkpoint.pt").symlink_to(trained / gate / "checkpoint.pt")
        runs = pd.read_parquet(d / "runs.parquet")
        runs.loc[(runs["arm"] == gate) & (runs["seed"] == 0), "checkpoint"] = recorded
        runs.to_parquet(d / "runs.parquet", index=False)
    monkeypatch.chdir(tmp_path / "results")
    got, notes = best_runs(d)
    assert [(r.label, r.checkpoint) for r in got] == [
        (g, str(d / "ray" / "gate-smoke" / f"{g}_0" / "checkpoint_000001" / "checkpoint.pt")) for g in ("sigmoid", "tanh")]
    assert notes == []
    runs = pd.read_parquet(d / "runs.parquet")
    runs.loc[runs["arm"] == "tanh", "checkpoint"] = "ray/pruned/checkpoint_000001"
    runs.to_parquet(d / "runs.parquet", index=False)
    got, notes = best_runs(d)
    assert [r.label for r in got] == ["sigmoid"]
    assert notes == ["tanh: the best run's checkpoint is not here (ray/pruned/checkpoint_000001)"]


def test_gates_on_checkpoints_labels_them_by_their_gate(tmp_path, trained):
    out = tmp_path / "g"
    assert main(["gates", str(trained / "tanh"), str(trained / "sigmoid" / "checkpoint.pt"), "--out", str(out),
                 "--device", "cpu", "--max-images", "24"]) == 0
    t = pd.read_csv(out / "gates.csv")
    assert list(dict.fromkeys(t["label"])) == ["tanh", "sigmoid"] and (t["images"] == 24).all()
    final = json.loads((trained / "tanh" / "final.json").read_text())
    assert f"| tanh | tanh | 0 | {final['best_val_top1_err']:.2f} | {final['test_top1_err']:.2f} |" in \
        (out / "gates.md").read_text()


def test_gates_skip_a_network_without_se_and_read_every_site_of_a_block(tmp_path, trained):
    """A study's plain baseline has nothing to show and is named as such; GCT before every
    convolution has two modules per basic block, and each stage's row reads all of them."""
    plain = train_tiny_se20(tmp_path / "plain", "sigmoid", **{"se.stages": "none"})
    gct = train_tiny_se20(tmp_path / "gct", "one_plus_tanh", **{"se.preset": "gct"})
    out = tmp_path / "g"
    assert main(["gates", str(plain), str(gct), "--out", str(out), "--device", "cpu"]) == 0
    t = pd.read_csv(out / "gates.csv")
    assert list(t["label"]) == ["one_plus_tanh"] * 3 and list(t["stage"]) == [2, 3, 4]
    assert "no SE blocks, so no gate to show" in (out / "gates.md").read_text()
    model, _, _ = load_model(gct / "checkpoint.pt")
    assert {n.rsplit("_", 1)[-1] for n in se_modules(model)} == {"conv1", "conv2"}
    assert {block_position(n) for n in se_modules(model)} == {(s, b) for s in (2, 3, 4) for b in (1, 2, 3)}
    assert main(["gates", str(plain), "--out", str(tmp_path / "p")]) != 0  # one alone is refused


def test_near_bound_shares_follow_each_gate():
    s = torch.tensor([0.0, 0.0, 0.05, 0.5, 0.95, -0.9, 2.0])
    assert int(gate_bounds("relu").low(s).sum()) == 3  # exactly 0 (and below): the channel switched off
    assert gate_bounds("relu").high is None
    assert int(gate_bounds("sigmoid").low(s).sum()) == 4 and int(gate_bounds("sigmoid").high(s).sum()) == 2
    assert int(gate_bounds("tanh").low(s).sum()) == 1 and int(gate_bounds("tanh").high(s).sum()) == 2
    for g in ("softmax", "softmax_c", "identity"):
        assert gate_bounds(g).low is None and gate_bounds(g).high is None  # n/a in the table
    stats = pd.DataFrame({"block": "SE_2_1", "stage": 2, "block_index": 1, "class": ["a", "b"], "channel": 0,
                          "count": [10, 10], "mean": [0.2, 0.4], "std": [0.1, 0.1]})
    row = stage_summary(stats, {2: np.array([0, 0, 20])}, gate_bounds("softmax")).iloc[0]
    assert np.isnan(row["near_bounds"]) and row["mean"] == pytest.approx(0.3)
    assert row["std"] == pytest.approx(np.sqrt(0.01 + 0.01)) and row["eta2"] == pytest.approx(0.5)


@pytest.mark.parametrize("case", ["missing_checkpoints", "not_a_path", "checkpoints_without_out"])
def test_gates_bad_input_is_one_line(tmp_path, trained, capsys, case):
    if case == "missing_checkpoints":
        d = tmp_path / "results" / "gate"
        d.mkdir(parents=True)
        pd.DataFrame([{"arm": "sigmoid", "seed": 0, "status": "completed", "test_top1_err": 5.0, "recipe": "r",
                       "best_val_top1_err": 4.0, "checkpoint": str(tmp_path / "ray" / "checkpoint.pt")}]) \
            .to_parquet(d / "runs.parquet", index=False)
        args = ["gates", str(d)]
    elif case == "not_a_path":
        args = ["gates", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]
    else:
        args = ["gates", str(trained / "tanh")]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    if case == "missing_checkpoints":
        assert "none of the 1 arms' best checkpoints is on this machine" in err and "give checkpoint paths" in err


def test_a_stage_without_the_module_says_so_in_its_panel():
    """GC sits in stages 3+: its stage-2 panel says that no module is there, instead of a blank."""
    from analysis.gates_render import gates_figure

    rng = np.random.default_rng(0)
    samples = {"se": {2: rng.random(50), 3: rng.random(50)}, "gc": {3: rng.normal(size=50)}}
    table = pd.DataFrame([{"label": k, "stage": s, "mean": float(v.mean()), "std": float(v.std()), "eta2": 0.5,
                           "constant_channels": 0.0, "near_bounds": float("nan")}
                          for k, per in samples.items() for s, v in per.items()])
    fig = gates_figure(samples, table, {"se": "sigmoid", "gc": "identity"},
                       {"se": gate_bounds("sigmoid"), "gc": gate_bounds("identity")})
    texts = [[t.get_text() for t in ax.texts] for ax in fig.axes]
    assert texts[2] == ["no module in this stage"]  # gc, stage 2
    assert all("no module in this stage" not in t for i, t in enumerate(texts) if i != 2)
