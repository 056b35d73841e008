"""The ablations package: the study registry against the paper's Tables 10-16, the sweep's user
errors, collect's merge rules, and the smoke preset of every study through real Ray Tune on CPU
(one Ray session for the module)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pandas as pd
import pytest

from ablations import studies as S
from ablations.collect import collect
from senet import config as C
from senet.cli import main

REQUIRED = ["study", "arm", "trial_id", "seed", "se.gate", "se.reduction", "se.squeeze", "se.placement",
            "se.stages", "model.name", "status", "test_top1_err", "test_top5_err", "best_val_top1_err",
            "test_top1_err_at_best_val", "test_top5_err_at_best_val", "params", "flops", "se_hidden",
            "epochs_run", "wall_time_s", "train_time_s", "node", "git_commit", "torch_version", "device",
            "precision", "checkpoint"]


# ------------------------------------------------------------------------------------------------
# The registry
# ------------------------------------------------------------------------------------------------
def test_studies_carry_the_papers_numbers():
    gate = {a.label: (a.paper_top1, a.paper_top5) for a in S.STUDIES.get("gate").arms}
    assert gate["sigmoid"] == (22.28, 6.03) and gate["tanh"] == (23.00, 6.38) and gate["relu"] == (23.47, 6.98)
    red = {a.label: a for a in S.STUDIES.get("reduction").arms}
    assert [red[f"r={r}"].paper_top1 for r in (2, 4, 8, 16, 32)] == [22.29, 22.25, 22.26, 22.28, 22.72]
    assert red["baseline"].paper_top1 == 23.30 and red["baseline"].overrides == {"se.stages": "none"}
    sq = {a.label: a.paper_top1 for a in S.STUDIES.get("squeeze").arms}
    assert sq == {"avg": 22.28, "max": 22.57, "avgmax": None, "avgstd": None, "none": 22.93}
    pl = {a.label: a.paper_top1 for a in S.STUDIES.get("placement").arms}
    assert pl == {"standard": 22.28, "pre": 22.23, "post": 22.78, "identity": 22.20, "inner": 22.48}


def test_every_study_is_one_axis_and_keeps_ablation_fc_bias_off():
    for name, study in S.STUDIES.items():
        if name == "custom":
            continue
        base = S.base_config(study, "smoke")
        assert base.se.bias is False  # §6: the ablation runs remove the excitation's FC biases
        arms = study.resolve_arms(base)
        assert study.reference_arm in [a.label for a in arms]
        for arm in arms:
            assert set(arm.overrides) <= {study.axis, "se.stages"}, (name, arm)
            C.from_flat(arm.overrides, base)  # every arm is a valid config


def test_stage_arms_follow_the_backbone():
    study = S.STUDIES.get("stages")
    cifar = [a.label for a in study.resolve_arms(S.base_config(study, "smoke"))]
    assert cifar == ["stage2", "stage3", "stage4", "all", "none"]
    imagenet = {a.label: a.paper_top1 for a in study.resolve_arms(S.base_config(study, "full", {"model": "resnet50"}))}
    assert imagenet == {"stage2": 23.03, "stage3": 23.04, "stage4": 22.68, "stage5": None, "all": 22.28,
                        "none": 23.30}


def test_plain_backbone_becomes_its_se_twin():
    assert S.base_config(S.STUDIES.get("gate"), "quick", {"model.name": "resnet56"}).model.name == "se_resnet56"


def test_custom_study_grid_and_random(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: gxr\naxes: {se.gate: [sigmoid, tanh], se.reduction: [4, 16]}\n"
                    "nuisance: {optim.lr: [0.05, 0.1]}\n")
    st = S.get_study("custom", str(spec))
    assert st.name == "gxr" and len(st.arms) == 4 and st.nuisance == {"optim.lr": (0.05, 0.1)}
    spec.write_text("mode: random\nsamples: 3\naxes: {se.gate: [sigmoid, tanh, relu], se.reduction: [4, 16]}\n")
    labels = [a.label for a in S.get_study("custom", str(spec)).arms]
    assert len(labels) == len(set(labels)) == 3
    assert labels == [a.label for a in S.get_study("custom", str(spec)).arms]  # seeded sample
    spec.write_text("axes: {se.gat: [sigmoid]}\n")
    with pytest.raises(ValueError, match="se.gat"):
        S.get_study("custom", str(spec))


# ------------------------------------------------------------------------------------------------
# User errors: one line on stderr, exit 2, before Ray starts
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, expect", [
    (["sweep", "gat"], "unknown study 'gat'; choose one of: reduction"),
    (["sweep", "gate", "--preset", "huge"], "unknown preset 'huge'; choose one of: smoke, quick, full"),
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


def test_resume_without_a_sweep_says_so(capsys, tmp_path):
    assert main(["sweep", "gate", "--preset", "smoke", "--resume", "--results", str(tmp_path)]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_studies_lists_arms(capsys):
    assert main(["studies"]) == 0
    out = capsys.readouterr().out
    for name in S.STUDIES:
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
    assert set(C.keys()) <= set(df.columns)
    assert df.loc[0, "checkpoint"] == str(a / "checkpoint_000001" / "checkpoint.pt")
    first = pd.read_parquet(tmp_path / "gate" / "runs.parquet")
    pd.testing.assert_frame_equal(first, collect("gate", tmp_path))  # idempotent
    import shutil

    shutil.rmtree(a)  # a trial folder lost: its row stays
    again = collect("gate", tmp_path)
    assert sorted(again["trial_id"]) == ["t_0", "t_1"]
    assert (tmp_path / "gate" / "runs.csv").exists()
    assert not list((tmp_path / "gate").glob(".*tmp"))


# ------------------------------------------------------------------------------------------------
# The smoke preset of every study through real Ray Tune (one Ray session for all of them)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    from ablations.sweep import connect

    scratch = tmp_path_factory.mktemp("scratch")
    old = os.environ.get("SENET_SCRATCH")
    os.environ["SENET_SCRATCH"] = str(scratch)
    started = connect(None)
    yield scratch
    import ray

    if started:
        ray.shutdown()
    if old is None:
        os.environ.pop("SENET_SCRATCH", None)
    else:
        os.environ["SENET_SCRATCH"] = old


def _ray_listeners() -> list[str]:
    out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout.splitlines()[1:]
    mine = re.compile(rf"raylet|gcs_server|ray::|pid={os.getpid()},")
    return [ln for ln in out if mine.search(ln)]


def _sweep(study, results, *extra):
    return main(["sweep", study, "--preset", "smoke", "--seeds", "1", "--results", str(results),
                 "--cpus-per-trial", "1", *extra])


SMOKE = ["gate", "reduction", "squeeze", "placement", "stages"]


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
    assert df["checkpoint"].map(os.path.isfile).all()
    assert (df["run.threads"] == 1).all() and (df["se.bias"] == False).all()  # noqa: E712
    for arm in meta["arms"]:
        row = df[df["arm"] == arm["arm"]].iloc[0]
        for k, v in arm["overrides"].items():
            assert str(row[k]) == str(C.from_flat({k: v}).__getattribute__(k.split(".")[0]).__getattribute__(
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
    # a second sweep into the same folder must not silently mix two runs
    assert _sweep("custom", tmp_path, "--spec", str(spec)) == 2
