"""The ablations package: the study registry against the paper's Tables 10-16, the sweep's user
errors, collect's merge rules, and the smoke preset of every study through real Ray Tune on CPU
(one Ray session for the module)."""
from __future__ import annotations

import json
import os
import pickle
import re
import shlex
import subprocess
import threading
import time

import pandas as pd
import pytest

from ablations import studies, sweep
from ablations.checkpoint_retention import named_checkpoints, prune_superseded, repair_missing
from ablations.collect import METRICS, collect
from ablations.launch import param_space
from ablations.plan import Plan, SweepOptions, plan, study_meta
from ablations.sweep_resume import resume_plan
from ablations.trial import params_flat, trial_flat
from senet import config
from senet.cli import main
from senet.records.recipe import recipe_hash
from senet.records.study_file import record_launch
from senet.se import GATES, PLACEMENTS, SQUEEZES, study_choices

REQUIRED = ["study", "arm", "trial_id", "seed", "se.gate", "se.reduction", "se.squeeze", "se.placement",
            "se.stages", "model.name", "status", "test_top1_err", "test_top5_err", "best_val_top1_err",
            "test_top1_err_at_best_val", "test_top5_err_at_best_val", "params", "flops", "se_hidden",
            "epochs_run", "wall_time_s", "train_time_s", "node", "git_commit", "torch_version", "device",
            "precision", "checkpoint"]


# ------------------------------------------------------------------------------------------------
# The registry
# ------------------------------------------------------------------------------------------------
def test_studies_carry_the_papers_numbers():
    gate = {a.label: (a.paper_top1, a.paper_top5) for a in studies.STUDIES.get("gate").arms}
    assert gate["sigmoid"] == (22.28, 6.03) and gate["tanh"] == (23.00, 6.38) and gate["relu"] == (23.47, 6.98)
    red = {a.label: a for a in studies.STUDIES.get("reduction").arms}
    assert [red[f"r={r}"].paper_top1 for r in (2, 4, 8, 16, 32)] == [22.29, 22.25, 22.26, 22.28, 22.72]
    assert red["baseline"].paper_top1 == 23.30 and red["baseline"].overrides == {"se.stages": "none"}
    # a slot study's arms are its registry's study choices; those the paper tested carry its number
    sq = {a.label: a.paper_top1 for a in studies.STUDIES.get("squeeze").arms}
    assert list(sq) == study_choices(SQUEEZES)
    assert {k: v for k, v in sq.items() if v is not None} == {"avg": 22.28, "max": 22.57, "none": 22.93}
    assert sq["avgmax"] is None and sq["avgstd"] is None
    pl = {a.label: a.paper_top1 for a in studies.STUDIES.get("placement").arms}
    assert list(pl) == study_choices(PLACEMENTS)
    assert {k: v for k, v in pl.items() if v is not None} == {
        "standard": 22.28, "pre": 22.23, "post": 22.78, "identity": 22.20, "inner": 22.48}


def test_every_study_is_one_axis_and_keeps_ablation_fc_bias_off():
    for name, study in studies.STUDIES.items():
        if name == "custom":
            continue
        base = studies.base_config(study, "smoke")
        # §6: the ablation runs remove the excitation's FC biases; the family study (not a table of the
        # paper) keeps each module's own defaults, SE's biases included
        assert base.se.bias is (name == "family")
        arms = study.resolve_arms(base)
        assert study.reference_arm in [a.label for a in arms]
        for arm in arms:
            assert set(arm.overrides) <= {*study.axis.split(","), "se.stages"}, (name, arm)
            config.from_flat(arm.overrides, base)  # every arm is a valid config


def test_stage_arms_follow_the_backbone():
    study = studies.STUDIES.get("stages")
    cifar = [a.label for a in study.resolve_arms(studies.base_config(study, "smoke"))]
    assert cifar == ["stage2", "stage3", "stage4", "all", "none"]
    imagenet = {a.label: a.paper_top1 for a in study.resolve_arms(studies.base_config(study, "full", {"model": "resnet50"}))}
    assert imagenet == {"stage2": 23.03, "stage3": 23.04, "stage4": 22.68, "stage5": None, "all": 22.28,
                        "none": 23.30}


def test_plain_backbone_becomes_its_se_twin():
    assert studies.base_config(studies.STUDIES.get("gate"), "quick", {"model.name": "resnet56"}).model.name == "se_resnet56"


def test_custom_study_grid_and_random(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: gxr\naxes: {se.gate: [sigmoid, tanh], se.reduction: [4, 16]}\n"
                    "nuisance: {optim.lr: [0.05, 0.1]}\n")
    st = studies.get_study("custom", str(spec))
    assert st.name == "gxr" and len(st.arms) == 4 and st.nuisance == {"optim.lr": (0.05, 0.1)}
    spec.write_text("mode: random\nsamples: 3\naxes: {se.gate: [sigmoid, tanh, relu], se.reduction: [4, 16]}\n")
    labels = [a.label for a in studies.get_study("custom", str(spec)).arms]
    assert len(labels) == len(set(labels)) == 3
    assert labels == [a.label for a in studies.get_study("custom", str(spec)).arms]  # seeded sample
    spec.write_text("axes: {se.gat: [sigmoid]}\n")
    with pytest.raises(ValueError, match="se.gat"):
        studies.get_study("custom", str(spec))


def test_quick_preset_holds_out_a_validation_split_to_select_with():
    d = studies.base_config(studies.STUDIES.get("gate"), "quick").data
    n_val = round(d.val_fraction * d.subset)  # val_fraction applies to the subset
    assert n_val >= 300, "30 held-out images cannot tell two checkpoints apart"
    assert d.test_subset >= 2000


def test_study_json_records_whether_nuisance_values_may_be_averaged(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: lrs\naxes: {se.gate: [sigmoid]}\nnuisance: {optim.lr: [0.05, 0.1]}\n")
    meta = study_meta(plan(SweepOptions("custom", preset="smoke", spec=str(spec), results=str(tmp_path))))
    assert meta["average_nuisance"] is False and meta["experiment"] == "lrs-smoke"
    spec.write_text(spec.read_text() + "average_nuisance: true\n")
    meta = study_meta(plan(SweepOptions("custom", preset="smoke", spec=str(spec), results=str(tmp_path))))
    assert meta["average_nuisance"] is True
    gate = study_meta(plan(SweepOptions("gate", preset="smoke", results=str(tmp_path))))
    assert gate["average_nuisance"] is False and len(gate["recipe"]) == 10


def test_a_trials_config_is_base_then_arm_then_nuisance_then_seed():
    base = {"optim.lr": 0.1, "se.gate": "sigmoid", "se.reduction": 16, "seed": 9}
    flat = trial_flat(base, {"se.gate": "tanh", "optim.lr": 0.2}, {"optim.lr": 0.05}, 3)
    assert flat == {"optim.lr": 0.05, "se.gate": "tanh", "se.reduction": 16, "seed": 3}
    params = {"base": base, "arms": {"t": {"se.gate": "tanh", "optim.lr": 0.2}}, "arm": "t", "seed": 3,
              "nuisance_keys": ["optim.lr"], "optim.lr": 0.05}
    assert params_flat(params) == flat


def test_the_sweep_plans_the_config_its_trials_train(tmp_path):
    """The config a cell is planned (and identified) with is the one the trainable builds from the
    trial's Tune parameters, bookkeeping aside."""
    spec = tmp_path / "s.yaml"
    spec.write_text("name: n\naxes: {se.gate: [sigmoid, tanh]}\nnuisance: {optim.lr: [0.05, 0.1]}\n")
    p = plan(SweepOptions("custom", preset="smoke", spec=str(spec), seeds=2, results=str(tmp_path)))
    space = param_space(p)  # what Tune hands every trial, besides its arm, seed and nuisance values
    shared = {k: space[k] for k in ("base", "arms", "nuisance_keys")}
    planned = p.cells
    assert len(planned) == 8 and len({c.key for c in planned}) == 8
    for cell in planned:
        assert config.from_flat(params_flat({**shared, **cell.params()})) == cell.cfg
        assert (cell.cfg.seed, cell.cfg.optim.lr) == (cell.seed, dict(cell.nuisance)["optim.lr"])


# ------------------------------------------------------------------------------------------------
# User errors: one line on stderr, exit 2, before Ray starts
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, expect", [
    (["sweep", "gat"], "unknown study 'gat'; choose one of: reduction"),
    (["sweep", "gate", "--preset", "huge"], "unknown preset 'huge'; choose one of: smoke, quick, standard, full"),
    (["sweep", "gate", "--se.gate", "tanh"], "swept by the gate study"),
    (["sweep", "gate", "--optim.epoch", "3"], "unknown config key 'optim.epoch'"),
    (["sweep", "custom"], "needs --spec"),
    (["sweep", "gate", "--address", "nohost"], "bad Ray address 'nohost'"),
    (["sweep", "gate", "--address", "127.0.0.1:9"], "cannot reach a Ray cluster at 127.0.0.1:9"),
    (["collect", "gate"], "no results for study 'gate'"),
])
def test_user_errors_are_one_line(argv, expect, capsys, tmp_path):
    t0 = time.time()
    rc = main([*argv, "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert expect in err and err.count("\n") == 1, err
    assert time.time() - t0 < 10  # "within seconds", not Ray's 20 s connection retries


@pytest.mark.parametrize("spec, expect", [
    ("axes: {run.device: []}", "axes.run.device has no values"),
    ("axes: {se.reduction: []}", "axes.se.reduction has no values"),
    ("mode: random\nsamples: 0\naxes: {se.gate: [sigmoid, tanh]}", "samples must be a whole number >= 1"),
    ("axes: {se.gate: [sigmoid, tanh]}\nnuisance: {optim.lr: []}", "nuisance.optim.lr has no values"),
    ("axes: {se.gate: [sigmoid, sigmoyd]}", "unknown gate 'sigmoyd'"),
    ("axes: {se.gate: [sigmoid]}\naverage_nuisance: maybe", "average_nuisance must be true or false"),
])
def test_bad_custom_specs_are_one_line(spec, expect, capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(spec + "\n")
    rc = main(["sweep", "custom", "--spec", str(path), "--preset", "smoke", "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert expect in err and err.count("\n") == 1, err


def test_missing_dataset_is_one_line_before_ray_starts(capsys, tmp_path, monkeypatch):
    def no_ray(*a, **k):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(sweep, "connect", no_ray)
    t0 = time.time()
    rc = main(["sweep", "gate", "--preset", "quick", "--seeds", "1", "--data.root", "/nonexistent",
               "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "/nonexistent" in err and err.count("\n") == 1, err
    assert time.time() - t0 < 10
    assert not (tmp_path / "gate" / "ray").exists()


def test_resume_without_a_sweep_says_so(capsys, tmp_path):
    assert main(["sweep", "gate", "--preset", "smoke", "--resume", "--results", str(tmp_path)]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_studies_lists_arms(capsys):
    assert main(["studies"]) == 0
    out = capsys.readouterr().out
    for name in studies.STUDIES:
        assert re.search(rf"^{name}: ", out, re.M)
    assert "softmax_c" in out and "paper 23.47 / 6.98" in out


# ------------------------------------------------------------------------------------------------
# collect, without Ray: merge by trial id, never drop rows, idempotent
# ------------------------------------------------------------------------------------------------
def _fake_trial(exp, arm, seed, tid, final=True, err=10.0):
    d = exp / f"{arm}_seed{seed}_{tid}"
    (d / "checkpoint_000001").mkdir(parents=True)
    (d / "checkpoint_000001" / "checkpoint.pt").write_bytes(b"x")
    params = {"study": "gate", "preset": "smoke", "arm": arm, "seed": seed, "nuisance_keys": [],
              "base": {"model.name": "se_resnet20", "se.bias": False}, "arms": {arm: {"se.gate": arm}}}
    (d / "params.json").write_text(json.dumps(params))
    rows = [{"trial_id": tid, "epoch": 1, "test_top1_err": err + 1, "final": False}]
    if final:
        rows.append({"trial_id": tid, "final": True, "status": "completed", "test_top1_err": err,
                     "test_top5_err": 1.0, "params": 100, "flops": 1000, "epochs_run": 1,
                     "provenance": {"git_commit": "abc", "torch_version": "2", "device": "cpu",
                                    "precision": "fp32"}})
    (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"trial_id": "cut')
    return d


def test_collect_merges_and_never_drops_rows(tmp_path):
    exp = tmp_path / "gate" / "ray" / "gate-smoke"
    a = _fake_trial(exp, "sigmoid", 0, "t_0")
    _fake_trial(exp, "tanh", 0, "t_1", final=False)
    df = collect("gate", tmp_path)
    assert list(df["trial_id"]) == ["t_0", "t_1"]
    assert df.set_index("trial_id").loc["t_0", "status"] == "completed"
    assert df.set_index("trial_id").loc["t_1", "status"] == "running"
    assert df.set_index("trial_id").loc["t_1", "test_top1_err"] == 11.0
    assert df.columns.tolist().count("seed") == 1
    assert set(config.keys()) <= set(df.columns)
    # relative to the study folder, so the table stays valid wherever the results folder is moved
    assert df.loc[0, "checkpoint"] == "ray/gate-smoke/sigmoid_seed0_t_0/checkpoint_000001/checkpoint.pt"
    assert (tmp_path / "gate" / df.loc[0, "checkpoint"]).samefile(a / "checkpoint_000001" / "checkpoint.pt")
    first = pd.read_parquet(tmp_path / "gate" / "runs.parquet")
    pd.testing.assert_frame_equal(first, collect("gate", tmp_path))  # idempotent
    import shutil

    shutil.rmtree(a)  # a trial folder lost: its row stays
    again = collect("gate", tmp_path)
    assert sorted(again["trial_id"]) == ["t_0", "t_1"]
    assert (tmp_path / "gate" / "runs.csv").exists()
    assert not list((tmp_path / "gate").glob(".*tmp"))


def test_the_tables_columns_keep_their_order():
    """The committed runs.csv files have these columns in this order; a new result key of fit's
    would be added after se_hidden, never reorder them."""
    assert METRICS == [
        "status", "test_top1_err", "test_top5_err", "best_val_top1_err", "best_val_epoch",
        "test_top1_err_at_best_val", "test_top5_err_at_best_val", "params", "flops", "se_params", "se_flops",
        "se_hidden", "epochs_run", "wall_time_s", "train_time_s", "node", "node_id", "git_commit", "git_dirty",
        "torch_version", "device", "precision", "checkpoint", "preset", "experiment", "recipe", "config_id",
        "reused_from", "num_test", "num_val", "num_failures", "bf16_kernels"]


def test_collect_rebuilds_an_unreadable_parquet_and_says_so(tmp_path, capsys):
    exp = tmp_path / "gate" / "ray" / "gate-smoke"
    _fake_trial(exp, "sigmoid", 0, "t_0")
    _fake_trial(exp, "tanh", 0, "t_1")
    (tmp_path / "gate" / "runs.parquet").write_bytes(b"not a parquet file")
    assert main(["collect", "gate", "--results", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "could not be read" in err and "rebuilding it from the trial folders" in err
    df = pd.read_parquet(tmp_path / "gate" / "runs.parquet")
    assert sorted(df["trial_id"]) == ["t_0", "t_1"]


def test_collect_reads_a_finished_trial_from_its_final_checkpoint(tmp_path):
    """A driver killed after a trial's last report but before Tune copied result.json's last lines:
    the final checkpoint still holds final.json, and the row comes from it."""
    exp = tmp_path / "gate" / "ray" / "gate-smoke"
    d = _fake_trial(exp, "sigmoid", 0, "t_0", final=False)
    ckpt = d / "checkpoint_000001"
    (ckpt / "final.json").write_text(json.dumps({"status": "completed", "test_top1_err": 7.5, "epochs_run": 1,
                                                 "num_test": 32, "num_val": 16}))
    cfg = config.from_flat({"se.gate": "sigmoid", "se.bias": False, "run.threads": 1})
    (ckpt / "config.json").write_text(json.dumps(config.to_dict(cfg)))
    row = collect("gate", tmp_path).iloc[0]
    assert (row["status"], row["test_top1_err"], row["epochs_run"], row["num_test"]) == ("completed", 7.5, 1, 32)
    assert row["run.threads"] == 1


def test_every_row_carries_its_experiment_and_recipe(tmp_path):
    for preset, epochs in (("smoke", 1), ("quick", 2)):
        exp = tmp_path / "gate" / "ray" / f"gate-{preset}"
        for arm, tid in (("sigmoid", f"{preset}_0"), ("tanh", f"{preset}_1")):
            d = _fake_trial(exp, arm, 0, tid)
            params = json.loads((d / "params.json").read_text())
            params.update(preset=preset, meta={"axis": "se.gate"})
            params["base"]["optim.epochs"] = epochs
            (d / "params.json").write_text(json.dumps(params))
            rows = [json.loads(ln) for ln in (d / "result.json").read_text().splitlines()[:-1]]
            rows[-1].update(num_test=100 * epochs, num_val=10 * epochs)
            (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    df = collect("gate", tmp_path).set_index("trial_id")
    assert df.loc["smoke_0", "preset"] == "smoke" and df.loc["quick_0", "experiment"] == "gate-quick"
    assert (df.loc["quick_0", "num_test"], df.loc["quick_0", "num_val"]) == (200, 20)
    # the arms of one experiment share a recipe; the two presets' recipes differ
    assert df.loc["smoke_0", "recipe"] == df.loc["smoke_1", "recipe"] != df.loc["quick_0", "recipe"]
    row = df.loc["quick_1"].to_dict()
    assert row["recipe"] == recipe_hash(row, {"se.gate"}, ())  # what senet report recomputes
    assert len(df) == 4  # never merged into one experiment


class _Stream:
    def __init__(self, tty: bool):
        self.text, self.tty = "", tty

    def write(self, s):
        self.text += s

    def flush(self):
        pass

    def isatty(self):
        return self.tty


def _trials(*specs):
    from types import SimpleNamespace

    return [SimpleNamespace(trial_id=f"t{i}", config={"arm": arm, "seed": 0}, status=status, last_result={})
            for i, (arm, status) in enumerate(specs)]


def test_progress_is_one_line_per_event_in_a_log_and_not_one_trial_behind():
    from ablations.progress import SweepProgress

    log = _Stream(tty=False)
    cb = SweepProgress("gate", ["sigmoid", "tanh"], every_s=1e9, stream=log)
    trials = _trials(("sigmoid", "RUNNING"), ("tanh", "RUNNING"))
    cb.on_trial_result(1, trials, trials[0], {"final": True, "test_top1_err": 9.5})
    cb.on_trial_complete(1, trials, trials[0])  # Tune calls it before trial.status says TERMINATED
    cb.on_trial_error(1, trials, trials[1])
    lines = log.text.splitlines()
    assert len(lines) == 2  # a log gets appended lines, not a table per event
    assert "done: sigmoid seed 0 (9.50% test top-1 err); trials: 1 done, 1 running" in lines[0]
    assert "failed (no retries left): tanh seed 0; trials: 1 done, 0 running, 0 pending, 1 failed" in lines[1]
    cb.on_experiment_end(trials)
    assert "sweep finished" in log.text and log.text.count("test top-1 err (mean of done)") == 1
    assert "\x1b[" not in log.text


def test_progress_redraws_one_table_in_place_on_a_terminal():
    from ablations.progress import SweepProgress

    tty = _Stream(tty=True)
    cb = SweepProgress("gate", ["sigmoid", "tanh"], stream=tty)
    trials = _trials(("sigmoid", "RUNNING"), ("tanh", "PENDING"))
    cb.on_trial_start(1, trials, trials[0])
    first = len(tty.text.splitlines())
    cb.on_trial_complete(1, trials, trials[0])
    assert tty.text.count(f"\x1b[{first}F\x1b[J") == 1  # back to the table's top, cleared, redrawn
    assert tty.text.rsplit("\x1b[J", 1)[1].count("test top-1 err (mean of done)") == 1


# ------------------------------------------------------------------------------------------------
# Checkpoints that --resume may need: deleted only once the experiment state names a newer one
# ------------------------------------------------------------------------------------------------
def _state(exp, named: dict[str, tuple], stamp="2026-01-01_00-00-00"):
    """An experiment-state snapshot as Tune writes it: per trial, the checkpoints its manager holds
    (a pickle, in hex) and the last result, which may already name a newer, unregistered one."""
    entries = []
    for logdir, (registered, last) in named.items():
        meta = {"trial_id": logdir.rsplit("_", 1)[-1], "relative_logdir": logdir, "status": "RUNNING"}
        paths = [str(exp.absolute() / logdir / f"checkpoint_{i:06d}") for i in registered]
        run = {"last_result": {"checkpoint_dir_name": f"checkpoint_{last:06d}"} if last is not None else {},
               "checkpoint_manager": {"_type": "CLOUDPICKLE_FALLBACK", "value": pickle.dumps(paths).hex()},
               "num_failures": 0}
        entries.append([json.dumps(meta), json.dumps(run)])
    (exp / f"experiment_state-{stamp}.json").write_text(json.dumps({"trial_data": entries}))


def _ckpts(trial, *indices):
    for i in indices:
        (trial / f"checkpoint_{i:06d}").mkdir(parents=True)
        (trial / f"checkpoint_{i:06d}" / "checkpoint.pt").write_text(str(i))


def test_checkpoints_are_pruned_only_below_the_one_the_state_names(tmp_path):
    exp = tmp_path / "exp"
    a, b, c = exp / "a_seed0_t1", exp / "b_seed0_t2", exp / "c_seed0_t3"
    _ckpts(a, 0, 1, 2, 3)
    _ckpts(b, 0, 1, 2)
    _ckpts(c, 0, 1)
    _state(exp, {a.name: ((0, 1), 1), b.name: ((0, 1), 1), c.name: ((), None)}, "2026-01-01_00-00-00")
    # the newest snapshot: b's last result already names checkpoint 2, which Tune has not registered
    # yet, so a restore would still load checkpoint 1 (what went wrong in a kept failure)
    _state(exp, {a.name: ((0, 1, 2), 2), b.name: ((0, 1), 2), c.name: ((), None)}, "2026-01-02_00-00-00")
    assert named_checkpoints(exp) == {a.name: "checkpoint_000002", b.name: "checkpoint_000001"}
    assert prune_superseded(exp) == 3
    assert sorted(p.name for p in a.iterdir()) == ["checkpoint_000002", "checkpoint_000003"]
    assert sorted(p.name for p in b.iterdir()) == ["checkpoint_000001", "checkpoint_000002"]
    assert len(list(c.iterdir())) == 2  # its state names no checkpoint: nothing of it is deleted
    (exp / "experiment_state-2026-01-03_00-00-00.json").write_text('{"trial_data": [["cut')
    assert named_checkpoints(exp) == {} and prune_superseded(exp) == 0  # a snapshot being copied


def test_resume_mends_a_named_checkpoint_that_is_gone(tmp_path):
    exp = tmp_path / "exp"
    a, b = exp / "a_seed0_t1", exp / "b_seed0_t2"
    _ckpts(a, 3)  # sweeps from before the pruner: checkpoint 2 deleted when 3 was written
    _ckpts(b, 1)
    _state(exp, {a.name: ((2,), 3), b.name: ((1,), 1)})
    notes = repair_missing(exp)
    assert len(notes) == 1 and a.name in notes[0]
    assert (a / "checkpoint_000002" / "checkpoint.pt").read_text() == "3"  # the newest state
    assert repair_missing(exp) == []


def _started(tmp_path, *args) -> Plan:
    """A sweep as if started with ``args``: its study.json and an experiment state, no Ray."""
    p = plan(SweepOptions("gate", preset="smoke", results=str(tmp_path), **dict(args)))
    record_launch(p.paths, {**study_meta(p), "run_options": {"cpus_per_trial": 1.0}})
    p.experiment_path.mkdir(parents=True)
    (p.experiment_path / "experiment_state-2026-01-01_00-00-00.json").write_text('{"trial_data": []}')
    return p


@pytest.mark.parametrize("argv, expect", [
    (["--seeds", "3"], "with 2 seeds; drop --seeds 3"),
    (["--optim.epochs", "5"], "with optim.epochs=1; drop --optim.epochs"),
    (["--cpus-per-trial", "2"], "with --cpus-per-trial 1; drop --cpus-per-trial 2"),
])
def test_resume_refuses_arguments_that_would_change_the_sweep(argv, expect, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sweep, "connect", lambda *a, **k: pytest.fail("Ray was started"))
    _started(tmp_path, ("seeds", 2))
    rc = main(["sweep", "gate", "--preset", "smoke", "--resume", "--results", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and expect in err and err.count("\n") == 1, err


def test_resume_keeps_what_the_sweep_was_started_with(tmp_path):
    started = _started(tmp_path, ("seeds", 2), ("overrides", {"optim.epochs": 2}))
    meta = json.loads((started.results_dir / "study.json").read_text())
    opts = SweepOptions("gate", preset="smoke", results=str(tmp_path), resume=True)  # no --seeds, no overrides
    p = resume_plan(plan(opts), opts)
    assert p.seeds == 2 and p.base.optim.epochs == 2 and p.n_trials == 2 * len(p.arms)
    assert [a.label for a in p.arms] == study_choices(GATES)  # every gate: the sweep named no --arms
    assert study_meta(p) == meta["experiments"]["gate-smoke"]  # study.json is not rewritten from argv
    record_launch(p.paths, study_meta(p))
    after = json.loads((started.results_dir / "study.json").read_text())
    assert after["seeds"] == 2 and after["experiments"] == meta["experiments"]


# ------------------------------------------------------------------------------------------------
# The smoke preset of every study through real Ray Tune (one Ray session for all of them)
# ------------------------------------------------------------------------------------------------
def _ray_listeners() -> list[str]:
    out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout.splitlines()[1:]
    mine = re.compile(rf"raylet|gcs_server|ray::|pid={os.getpid()},")
    return [ln for ln in out if mine.search(ln)]


def _sweep(study, results, *extra):
    return main(["sweep", study, "--preset", "smoke", "--seeds", "1", "--results", str(results),
                 "--cpus-per-trial", "1", *extra])


SMOKE = list(studies.RUN_ORDER)  # every paper study


def test_local_ray_listens_on_loopback_only(ray_session):
    listeners = _ray_listeners()
    assert listeners, "no Ray listener found"
    for ln in listeners:
        local = ln.split()[3]
        assert local.startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:")), ln


@pytest.mark.parametrize("study", SMOKE)
def test_smoke_sweep_every_study(study, ray_session, tmp_path, capsys):
    assert _sweep(study, tmp_path) == 0
    out = capsys.readouterr().out
    assert "sweep finished" in out and "best so far" in out
    df = pd.read_parquet(tmp_path / study / "runs.parquet")
    meta = json.loads((tmp_path / study / "study.json").read_text())
    arms = [a["arm"] for a in meta["arms"]]
    assert meta["name"] == study and meta["preset"] == "smoke" and meta["seeds"] == 1
    assert meta["reference_arm"] in arms
    assert list(df["arm"]) == arms  # one trial per arm and seed, in the study's order
    assert set(df["status"]) == {"completed"}
    assert not set(REQUIRED) - set(df.columns)
    assert (df["epochs_run"] == 1).all() and (df["params"] > 0).all() and (df["flops"] > 0).all()
    assert df["checkpoint"].map(lambda c: not os.path.isabs(c) and (tmp_path / study / c).is_file()).all()
    assert (df["run.threads"] == 1).all() and (df["se.bias"] == False).all()  # noqa: E712
    for arm in meta["arms"]:
        row = df[df["arm"] == arm["arm"]].iloc[0]
        for k, v in arm["overrides"].items():
            assert str(row[k]) == str(config.from_flat({k: v}).__getattribute__(k.split(".")[0]).__getattribute__(
                k.split(".")[1]))
    if study == "reduction":  # the baseline is the plain network: no SE parameters at all
        by = df.set_index("arm")
        assert by.loc["baseline", "se_params"] == 0 and by.loc["r=2", "se_params"] > by.loc["r=32", "se_params"]
    if study == "stages":
        by = df.set_index("arm")
        assert by.loc["none", "se_hidden"] == "" and by.loc["stage2", "se_hidden"].startswith("SE_2_1:")


def test_smoke_sweep_custom_with_nuisance(ray_session, tmp_path):
    spec = tmp_path / "c.yaml"
    spec.write_text("name: mine\naxes: {se.reduction: [4]}\nnuisance: {optim.lr: [0.05, 0.1]}\n")
    assert _sweep("custom", tmp_path, "--spec", str(spec)) == 0
    df = pd.read_parquet(tmp_path / "mine" / "runs.parquet")
    assert len(df) == 2 and set(df["status"]) == {"completed"}
    assert sorted(zip(df["se.reduction"], df["optim.lr"], strict=True)) == [(4, 0.05), (4, 0.1)]
    # the same sweep again trains nothing, every (configuration, seed) being recorded, and is not
    # refused; it starts no second Tune experiment to mix with the first
    assert _sweep("custom", tmp_path, "--spec", str(spec)) == 0
    assert [d.name for d in (tmp_path / "mine" / "ray").iterdir() if d.is_dir()] == ["mine-smoke"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "mine" / "runs.parquet"), df)


def _named_but_missing(exp) -> list[str]:
    """Checkpoints that a restore from the experiment state on storage would load (decoded by Tune's
    own code) but that no longer exist, checked against a snapshot that did not change meanwhile."""
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    states = sorted(exp.glob("experiment_state-*.json"), key=lambda p: p.name)
    if not states:
        return []
    try:
        text = states[-1].read_text()
        entries = json.loads(text)["trial_data"]
    except (OSError, ValueError, KeyError):
        return []  # being written
    missing = []
    for entry in entries:
        latest = _TrainingRunMetadata.from_json_state(entry[1]).checkpoint_manager.latest_checkpoint_result
        if latest is not None and not os.path.isdir(latest.checkpoint.path):
            missing.append(latest.checkpoint.path.split("/ray/", 1)[-1])
    if missing and states[-1].read_text() != text:
        return []  # a newer snapshot arrived between reading it and looking at the folders
    return missing


def test_a_checkpoint_the_experiment_state_names_is_never_deleted(ray_session, tmp_path):
    """The root of the lost-trial bug: Tune's num_to_keep deleted checkpoint k when k+1 was written,
    while the experiment state (what a driver killed then would be resumed from) still named k."""
    spec = tmp_path / "two.yaml"
    spec.write_text("name: ckpt\naxes: {se.gate: [sigmoid, tanh]}\n")
    exp = tmp_path / "ckpt" / "ray" / "ckpt-smoke"
    seen: list[str] = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            seen.extend(_named_but_missing(exp))
            time.sleep(0.003)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        assert _sweep("custom", tmp_path, "--spec", str(spec), "--optim.epochs", "4") == 0
    finally:
        done.set()
        t.join()
    assert not seen, f"named by the experiment state but deleted: {sorted(set(seen))}"
    for trial in exp.glob("*_seed0_*"):  # and once the final state is written, only the last is kept
        assert [p.name for p in trial.glob("checkpoint_*")] == ["checkpoint_000004"]


def test_failed_trials_fail_the_sweep_and_the_printed_resume_command_works(ray_session, tmp_path, capsys,
                                                                          monkeypatch):
    spec = tmp_path / "broken.yaml"  # valid to the driver, fails inside the trial on any machine
    spec.write_text("name: broken\naxes: {se.gate: [sigmoid]}\nfixed: {run.device: 'cuda:99'}\n")
    results = tmp_path / "res"
    assert _sweep("custom", results, "--spec", str(spec), "--max-failures", "0") == 1
    cap = capsys.readouterr()
    assert "0/1 trials finished" in cap.out
    assert re.search(r"not finished: gate=sigmoid seed 0 failed \(.*run\.device", cap.err), cap.err
    cmd = re.search(r"continue with: (.+)$", cap.err, re.M).group(1)
    argv = shlex.split(cmd)
    assert argv[:3] == ["senet", "sweep", "custom"] and argv[-1] == "--resume"
    assert {"--spec", "--results"} <= set(argv)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the command works from any folder
    assert main(argv[1:]) == 1  # resumed, and the retried trial fails again, so not a success
    cap = capsys.readouterr()
    assert "nothing to resume" not in cap.err and "continue with:" in cap.err
    df = pd.read_parquet(results / "broken" / "runs.parquet")
    assert len(df) == 1 and df.loc[0, "status"] == "error"
    assert df.loc[0, "num_failures"] == 2  # --resume retried the errored trial
