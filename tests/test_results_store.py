"""The results store: each distinct (configuration, seed) is trained once and every study
reads it; a sweep continues from the committed runs.parquet tables; collect merges what a table
records with the trial folders on disk and never drops a recorded row; git keeps the tables, not
Ray's folders. Fast tests build tables by hand; one scenario runs real smoke sweeps on Ray."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from ablations import studies, sweep
from ablations.collect import LIVE_S, STATUSES, collect
from ablations.plan import Plan, SweepOptions, plan, reused_rows, study_meta, triage
from analysis.study_results import checkpoint_path
from senet import config
from senet.cli import main
from senet.records import trial_index as store
from senet.records.recipe import recipe_hash
from senet.records.study_file import record_launch

ROOT = Path(__file__).resolve().parents[1]


def _plan(study, preset="smoke", results="results", **kw) -> Plan:
    return plan(SweepOptions(study, preset=preset, results=str(results), **kw))


def _ids(study, preset="smoke") -> dict[str, str]:
    """arm -> config_id of seed 0."""
    return {c.arm: c.config_id for c in _plan(study, preset).cells if c.seed == 0}


def _rows(p: Plan, seeds, status="completed", experiment=None, err=10.0) -> list[dict]:
    """Table rows as a sweep of ``p`` records them: the trial's whole flat config, its status and errors."""
    rows = []
    for seed in seeds:
        for arm in p.arms:
            flat = config.flatten(config.from_flat({**arm.overrides, "seed": seed}, p.base))
            flat.update({"run.threads": 1, "run.device": "cpu"})  # bookkeeping a trial resolves
            flat["precision"] = store.trial_precision(p.base)  # provenance: what `auto` resolved to
            rows.append({**flat, "study": p.study.name, "arm": arm.label, "trial_id": f"{arm.label}-{seed}",
                         "status": status, "test_top1_err": err + seed, "preset": p.preset,
                         "experiment": experiment or p.experiment, "git_commit": "c0ffee"})
    return rows


def _write(results: Path, study: str, rows: list[dict]) -> Path:
    (results / study).mkdir(parents=True, exist_ok=True)
    path = results / study / "runs.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


# ------------------------------------------------------------------------------------------------
# The standard preset and the studies' seeds
# ------------------------------------------------------------------------------------------------
def test_standard_preset_is_the_published_recipe(capsys):
    cfg = studies.base_config(studies.STUDIES.get("gate"), "standard")
    d, o = cfg.data, cfg.optim
    assert (cfg.model.name, d.name, d.subset, d.test_subset) == ("se_resnet20", "fashion-mnist", 20000, 0)
    assert round(d.val_fraction * d.subset) == 2000  # held out of the training file, beside the 20,000
    assert (o.epochs, o.schedule, o.batch_size, o.lr) == (5, "cosine", 128, 0.1) and o.warmup_epochs > 0
    assert (d.augment, cfg.run.precision) == ("crop_flip", "bf16")  # pinned: one recipe on every CPU
    # seeds: gate 5 at standard, every other study the preset's 3; other presets unchanged
    assert {n: studies.STUDIES.get(n).seeds_at("standard") for n in studies.RUN_ORDER} == {
        "gate": 5, "reduction": 3, "squeeze": 3, "placement": 3, "stages": 3}
    assert studies.STUDIES.get("gate").seeds_at("quick") == 2
    assert _plan("gate", "standard").seeds == 5 and _plan("gate", "standard", seeds=2).seeds == 2
    assert main(["studies"]) == 0
    out = capsys.readouterr().out
    assert "gate: Excitation gate" in out and "5 at standard" in out.split("gate: ")[1].splitlines()[0]


@pytest.mark.parametrize("preset", ["smoke", "standard"])
def test_the_arms_studies_share_are_one_configuration(preset):
    gate, red, sq, pl, st = (_ids(n, preset) for n in studies.RUN_ORDER)
    # the paper's default SE (r=16, avg, sigmoid, standard, all stages) in five studies
    assert gate["sigmoid"] == red["r=16"] == sq["avg"] == pl["standard"] == st["all"]
    assert red["baseline"] == st["none"]  # the plain network
    assert len({gate["sigmoid"], gate["tanh"], red["r=8"], red["baseline"], st["stage2"]}) == 5
    assert _ids("gate", "quick")["sigmoid"] != gate["sigmoid"]  # another recipe is another trial


def test_config_id_ignores_bookkeeping_and_fills_keys_an_old_table_lacks():
    flat = config.flatten(config.from_flat({"se.gate": "tanh"}))
    cid = store.config_id(flat)
    assert store.config_id({**flat, "run.threads": 2, "run.out": "/x", "seed": 7}) == cid
    older = {k: v for k, v in flat.items() if k != "run.precision"}  # a key added since, at its default
    assert store.config_id(older) == cid
    assert store.config_id({**flat, "run.precision": "bf16"}) != cid
    assert store.config_id({**flat, "se.gate": "relu"}) != cid


def test_a_study_whose_arms_coincide_is_refused(tmp_path, capsys):
    spec = tmp_path / "dup.yaml"  # one table row per (configuration, seed): one arm would vanish
    spec.write_text("name: dup\naxes: {se.reduction: [16, 16.0]}\n")
    rc = main(["sweep", "custom", "--spec", str(spec), "--preset", "smoke", "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "reduction=16 seed 0 and reduction=16.0 seed 0 are the same configuration" in err, err


# ------------------------------------------------------------------------------------------------
# What a sweep trains: only what no table records
# ------------------------------------------------------------------------------------------------
def test_recorded_trials_are_skipped_and_shared_ones_copied(tmp_path):
    gate = _plan("gate", results=tmp_path)
    _write(tmp_path, "gate", _rows(gate, [0, 1]) + [
        {**_rows(gate, [2])[1], "status": "error"}])  # tanh seed 2 failed: not a result
    found = store.recorded(tmp_path)
    t = triage(_plan("gate", results=tmp_path, seeds=3), found)
    assert len(t.recorded) == 2 * len(gate.arms) and not t.reused  # seeds 0 and 1 of every arm
    assert sorted(c.name for c in t.todo) == sorted(f"{a.label} seed 2" for a in gate.arms)

    red = _plan("reduction", results=tmp_path, seeds=3)
    t = triage(red, found)
    assert [c.name for c, _ in t.reused] == ["r=16 seed 0", "r=16 seed 1"]
    assert len(t.todo) == len(red.arms) * 3 - 2 and not t.recorded
    meta = study_meta(red)
    rows = reused_rows(red, meta, t.reused)
    assert {(r["study"], r["arm"], r["reused_from"]) for r in rows} == {("reduction", "r=16", "gate/gate-smoke")}
    assert {r["test_top1_err"] for r in rows} == {10.0, 11.0}  # gate's sigmoid seeds 0 and 1, as recorded
    assert {r["recipe"] for r in rows} == {meta["recipe"]}  # one recipe with reduction's own arms


def test_a_copied_row_names_its_checkpoint_from_the_study_it_is_copied_into(tmp_path):
    gate = _plan("gate", results=tmp_path)
    ckpt = "ray/gate-smoke/sigmoid_seed0/checkpoint_000001/checkpoint.pt"
    _write(tmp_path, "gate", [{**r, "checkpoint": ckpt} for r in _rows(gate, [0])])
    red = _plan("reduction", results=tmp_path)
    (row,) = reused_rows(red, study_meta(red), triage(red, store.recorded(tmp_path)).reused)
    assert row["checkpoint"] == "../gate/" + ckpt
    assert (tmp_path / "reduction" / row["checkpoint"]).resolve() == (tmp_path / "gate" / ckpt).resolve()
    # a URI or an absolute path stands as it is
    assert store.rebase_checkpoint("s3://b/p/x/checkpoint.pt", "gate") == "s3://b/p/x/checkpoint.pt"
    assert store.rebase_checkpoint("/abs/x/checkpoint.pt", "gate") == "/abs/x/checkpoint.pt"
    assert store.rebase_checkpoint(None, "gate") is None


def test_collect_mends_copies_recorded_relative_to_their_origin_or_absolute(tmp_path):
    """Tables written before copies were rebased: a copy's path relative to the study it came from,
    or an absolute path inside the results folder, both become ../<origin>/... on the next collect."""
    red = _plan("reduction", results=tmp_path)
    rows = _rows(red, [0, 1])
    mine = "ray/reduction-smoke/r8_seed0/checkpoint_000001/checkpoint.pt"
    for r in rows:
        r.update(config_id=store.config_id(r), checkpoint=mine, reused_from=None)
    old_copy, abs_copy = (r for r in rows if r["arm"] == "r=16")
    old_copy.update(reused_from="gate/gate-smoke", checkpoint="ray/gate-smoke/s0/checkpoint_000001/checkpoint.pt")
    abs_copy.update(reused_from="gate/gate-smoke-2",
                    checkpoint=str(tmp_path.absolute() / "gate/ray/gate-smoke-2/s1/checkpoint_000001/checkpoint.pt"))
    _write(tmp_path, "reduction", rows)
    table = collect("reduction", tmp_path).set_index(["arm", "seed"])
    assert table.loc[("r=16", 0), "checkpoint"] == "../gate/ray/gate-smoke/s0/checkpoint_000001/checkpoint.pt"
    assert table.loc[("r=16", 1), "checkpoint"] == "../gate/ray/gate-smoke-2/s1/checkpoint_000001/checkpoint.pt"
    assert set(table.loc["r=8", "checkpoint"]) == {mine}  # its own trials stay relative to itself
    again = collect("reduction", tmp_path).set_index(["arm", "seed"])  # idempotent
    assert again["checkpoint"].equals(table["checkpoint"])


def test_a_trial_recorded_in_another_precision_is_another_configuration(tmp_path, monkeypatch):
    """`run.precision auto` is bf16 on a CPU with native bf16 and fp32 elsewhere: a trial recorded in
    bf16 is not reused where auto means fp32 (it is trained anew), and the two never share a recipe."""
    import senet.runtime

    gate = _plan("gate", results=tmp_path, seeds=2)
    rows = [{**r, "precision": "bf16"} for r in _rows(gate, [0])]
    _write(tmp_path, "gate", rows)
    found = store.recorded(tmp_path)
    for here, recorded in (("bf16", len(gate.arms)), ("fp32", 0)):  # bf16: seed 0 of every arm
        monkeypatch.setattr(senet.runtime, "default_precision", lambda device, here=here: here)
        t = triage(_plan("gate", results=tmp_path, seeds=2), found)  # a plan's cells are built once
        assert len(t.recorded) == recorded, here
        assert len(t.todo) == 2 * len(gate.arms) - recorded, here
    fp32 = {**rows[0], "precision": "fp32"}
    assert store.config_id(rows[0]) != store.config_id(fp32)
    assert recipe_hash(rows[0]) != recipe_hash(fp32)
    assert recipe_hash({**rows[0], "run.precision": "bf16"}) == recipe_hash(rows[0])  # auto -> bf16 is bf16

def test_dry_run_counts_the_distinct_trials_of_several_studies(tmp_path, capsys):
    assert main(["sweep", "all", "--preset", "smoke", "--dry-run", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # every study's arms, 1 seed: the default SE is one trial of all five studies and the plain net
    # one of two (reduction's baseline, stages' none), so 4 + 1 of the cells are trained earlier
    arms = {n: len(_plan(n, results=tmp_path).arms) for n in studies.RUN_ORDER}
    distinct = sum(arms.values()) - 4 - 1
    assert f"[{','.join(studies.RUN_ORDER)}] {distinct} distinct trials would be trained" in out
    assert f"[reduction] {arms['reduction']} trials" in out and "1 trained by an earlier study" in out
    assert not (tmp_path / "gate").exists()  # a dry run writes nothing


def test_several_studies_run_in_turn_each_with_its_wall_time(tmp_path, monkeypatch, capsys):
    ran = []

    def fake(opts, out=None, err=None):
        ran.append(opts.study)
        return sweep.SweepOutcome(Path(), 1, 1, (), "", trained=1)

    monkeypatch.setattr(sweep, "run_sweep", fake)
    assert main(["sweep", "all", "--preset", "smoke", "--results", str(tmp_path)]) == 0
    assert ran == list(studies.RUN_ORDER)
    out = capsys.readouterr().out
    assert all(f"[{s}] wall time" in out for s in studies.RUN_ORDER)
    assert main(["sweep", "gate,stages", "--resume", "--results", str(tmp_path)]) == 2
    assert main(["sweep", "gate,gat", "--results", str(tmp_path)]) == 2


def test_a_launch_gets_a_new_experiment_name(tmp_path):
    p = _plan("gate", results=tmp_path)
    assert p.experiment == "gate-smoke"
    (p.storage / "gate-smoke").mkdir(parents=True)
    assert _plan("gate", results=tmp_path).experiment == "gate-smoke-2"
    record_launch(p.paths, {**study_meta(p), "experiment": "gate-smoke-7"})
    shutil.rmtree(p.storage)  # a fresh clone: study.json remembers the launches
    assert _plan("gate", results=tmp_path).experiment == "gate-smoke-8"
    meta = json.loads((p.results_dir / "study.json").read_text())
    assert meta["code_commit"] == meta["experiments"]["gate-smoke-7"]["code_commit"]
    assert "code_dirty" in meta


# ------------------------------------------------------------------------------------------------
# collect merges: the table's rows + the trial folders, one row per (config_id, seed)
# ------------------------------------------------------------------------------------------------
def _trial(exp: Path, arm: str, seed: int, tid: str, status="completed", err=10.0, epochs=1) -> Path:
    """A finished gate trial folder as Tune leaves it (no Ray needed)."""
    d = exp / f"{arm}_seed{seed}_{tid}"
    d.mkdir(parents=True)
    base = {"model.name": "se_resnet20", "se.bias": False, "optim.epochs": epochs}
    params = {"study": "gate", "preset": "smoke", "arm": arm, "seed": seed, "nuisance_keys": [],
              "base": base, "arms": {arm: {"se.gate": arm}}, "meta": {"axis": "se.gate"}}
    (d / "params.json").write_text(json.dumps(params))
    rows = [{"trial_id": tid, "epoch": 1, "test_top1_err": err, "final": False}]
    if status != "running":
        rows.append({"trial_id": tid, "final": True, "status": status, "test_top1_err": err, "epochs_run": 1,
                     "provenance": {"git_commit": "abc"}})
    (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_collect_keeps_committed_rows_whose_ray_folders_are_absent(tmp_path):
    """A fresh clone: the committed table and no Ray folders; a new launch's trials are added."""
    ray = tmp_path / "gate" / "ray"
    _trial(ray / "gate-smoke", "sigmoid", 0, "a0")
    _trial(ray / "gate-smoke", "tanh", 0, "a1")
    first = collect("gate", tmp_path)
    shutil.rmtree(ray)
    pd.testing.assert_frame_equal(collect("gate", tmp_path), first)  # nothing on disk: nothing lost
    _trial(ray / "gate-smoke-2", "sigmoid", 1, "b0", err=12.0)
    df = collect("gate", tmp_path)
    assert sorted(zip(df["arm"], df["seed"], df["experiment"], strict=True)) == [
        ("sigmoid", 0, "gate-smoke"), ("sigmoid", 1, "gate-smoke-2"), ("tanh", 0, "gate-smoke")]
    assert df["config_id"].notna().all() and df["reused_from"].isna().all()


def test_collect_keeps_the_recorded_row_of_a_trial_and_a_finished_one_over_an_unfinished(tmp_path):
    ray = tmp_path / "gate" / "ray"
    _trial(ray / "gate-smoke", "sigmoid", 0, "a0", err=10.0)
    _trial(ray / "gate-smoke", "tanh", 0, "a1", status="running", err=30.0)
    collect("gate", tmp_path)
    # the same configurations and seeds trained again in a later launch (a stale clone, say)
    _trial(ray / "gate-smoke-2", "sigmoid", 0, "b0", err=99.0)
    _trial(ray / "gate-smoke-2", "tanh", 0, "b1", err=11.0)
    df = collect("gate", tmp_path).set_index("arm")
    assert len(df) == 2
    assert (df.loc["sigmoid", "trial_id"], df.loc["sigmoid", "test_top1_err"]) == ("a0", 10.0)  # recorded kept
    assert (df.loc["tanh", "trial_id"], df.loc["tanh", "status"]) == ("b1", "completed")  # finished wins


def _tune_state(exp: Path, trials: dict[str, str], age_s: float = 0.0) -> Path:
    """Tune's experiment state naming each trial folder's status, last written ``age_s`` ago."""
    entries = [[json.dumps({"trial_id": d.rsplit("_", 1)[-1], "relative_logdir": d, "status": status}),
                json.dumps({"num_failures": 0})] for d, status in trials.items()]
    path = exp / "experiment_state-2026-01-01_00-00-00.json"
    path.write_text(json.dumps({"trial_data": entries}))
    when = time.time() - age_s
    os.utime(path, (when, when))
    return path


def _status(df: pd.DataFrame) -> dict[str, str]:
    return dict(zip(df["arm"], df["status"], strict=True))


def test_an_unfinished_trial_is_running_only_while_its_sweep_is(tmp_path):
    """Never diverged, never lumped with the errors: running while the sweep writes the experiment,
    interrupted once it has stopped (killed, Ctrl-C), error when Tune ended it without a result."""
    exp = tmp_path / "gate" / "ray" / "gate-smoke"
    _trial(exp, "sigmoid", 0, "a0")
    for arm, tid in (("tanh", "a1"), ("relu", "a2"), ("softmax", "a3"), ("identity", "a4")):
        _trial(exp, arm, 0, tid, status="running")
    states = {"sigmoid_seed0_a0": "TERMINATED", "tanh_seed0_a1": "RUNNING", "relu_seed0_a2": "ERROR",
              "softmax_seed0_a3": "PENDING", "identity_seed0_a4": "TERMINATED"}
    _tune_state(exp, states)
    expected = {"sigmoid": "completed", "tanh": "running", "relu": "error", "softmax": "running", "identity": "error"}
    assert _status(collect("gate", tmp_path)) == expected
    # the sweep that collects after its launch knows the launch is over
    over = {**expected, "tanh": "interrupted", "softmax": "interrupted"}
    assert _status(collect("gate", tmp_path, ended=["gate-smoke"])) == over
    _tune_state(exp, states, age_s=2 * LIVE_S)  # a driver killed long ago
    assert _status(collect("gate", tmp_path)) == over
    assert set(over.values()) <= set(STATUSES)


def test_checkpoints_are_recorded_relative_to_the_study_folder(tmp_path):
    exp = tmp_path / "gate" / "ray" / "gate-smoke"
    for arm, tid in (("sigmoid", "a0"), ("tanh", "a1")):
        ckpt = _trial(exp, arm, 0, tid) / "checkpoint_000004"
        ckpt.mkdir()
        (ckpt / "checkpoint.pt").write_bytes(b"x")
    first = collect("gate", tmp_path).set_index("arm")
    assert first.loc["tanh", "checkpoint"] == "ray/gate-smoke/tanh_seed0_a1/checkpoint_000004/checkpoint.pt"
    # a table written before keeps its absolute paths; the trial folders do not rewrite a recorded row
    old = pd.read_parquet(tmp_path / "gate" / "runs.parquet")
    old.loc[old["arm"] == "sigmoid", "checkpoint"] = "/elsewhere/results/gate/ray/x/checkpoint.pt"
    old.to_parquet(tmp_path / "gate" / "runs.parquet", index=False)
    again = collect("gate", tmp_path).set_index("arm")
    assert again.loc["sigmoid", "checkpoint"] == "/elsewhere/results/gate/ray/x/checkpoint.pt"
    assert again.loc["tanh", "checkpoint"] == first.loc["tanh", "checkpoint"]
    # a recorded absolute path inside this study folder (an older collect's) is made relative
    old = pd.read_parquet(tmp_path / "gate" / "runs.parquet")
    inside = tmp_path / "gate" / "ray" / "gate-smoke" / "tanh_seed0_a1" / "checkpoint_000004" / "checkpoint.pt"
    old.loc[old["arm"] == "tanh", "checkpoint"] = str(inside)
    old.to_parquet(tmp_path / "gate" / "runs.parquet", index=False)
    assert collect("gate", tmp_path).set_index("arm").loc["tanh", "checkpoint"] == first.loc["tanh", "checkpoint"]
    # a --storage outside the study folder: the path stays absolute
    storage = tmp_path / "shared"
    ckpt = _trial(storage / "gate-smoke", "relu", 0, "b0") / "checkpoint_000001"
    ckpt.mkdir()
    (ckpt / "checkpoint.pt").write_bytes(b"x")
    row = collect("gate", tmp_path, storage=storage).set_index("arm").loc["relu"]
    assert row["checkpoint"] == str(ckpt / "checkpoint.pt")


def test_a_corrupted_table_is_rebuilt_and_says_whether_rows_were_lost(tmp_path, capsys):
    ray = tmp_path / "gate" / "ray" / "gate-smoke"
    _trial(ray, "sigmoid", 0, "a0")
    tanh = _trial(ray, "tanh", 0, "a1")
    collect("gate", tmp_path)
    parquet = tmp_path / "gate" / "runs.parquet"
    parquet.write_bytes(b"PAR1 truncated")
    df = collect("gate", tmp_path)
    err = capsys.readouterr().err
    assert "could not be read" in err and "all 2 trials it recorded are recovered" in err and "lost" not in err
    assert len(df) == 2 and (tmp_path / "gate" / "runs.parquet.unreadable").read_bytes() == b"PAR1 truncated"

    parquet.write_bytes(b"garbage")
    shutil.rmtree(tanh)  # its only other record
    df = collect("gate", tmp_path)
    err = capsys.readouterr().err
    assert "1 of the 2 trials it recorded are lost" in err and "tanh seed 0" in err
    assert list(df["arm"]) == ["sigmoid"]
    assert "rebuilding it from the trial folders" in err and err.count("\n") == 1


# ------------------------------------------------------------------------------------------------
# Git keeps the tables and reports, never Ray's folders
# ------------------------------------------------------------------------------------------------
KEPT = ["results/gate/runs.parquet", "results/gate/runs.csv", "results/gate/study.json", "results/gate/report.md",
        "results/gate/table.tex", "results/gate/figures/points.png", "results/gate/figures/points.pdf",
        "results/gate/analysis/summary.md", "results/README.md", "results/reference/se_resnet20/checkpoint.pt",
        "results/reference/se_resnet20/metrics.jsonl"]
IGNORED = ["results/gate/ray/gate-standard/sigmoid_seed0_x/params.json",
           "results/gate/ray/gate-standard/sigmoid_seed0_x/checkpoint_000004/checkpoint.pt",
           "results/reference/resnet20/checkpoint.pt", "results/gate/analysis/model.pt",
           "results/gate/.runs.parquet.123.tmp", "results/gate/runs.parquet.unreadable", "runs/demo/gate/runs.parquet"]


def test_gitignore_keeps_results_tables_and_drops_ray_folders():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    r = subprocess.run(["git", "check-ignore", "--no-index", "--stdin", "-n", "-v"], cwd=ROOT, text=True,
                       input="\n".join(KEPT + IGNORED) + "\n", capture_output=True)
    # -v -n: "source:line:pattern<TAB>path" for every path; "::" = no pattern, "!..." = re-included
    matched = dict(reversed(ln.split("\t", 1)) for ln in r.stdout.splitlines())
    ignored = {path for path, how in matched.items() if how != "::" and not how.split(":", 2)[2].startswith("!")}
    assert ignored == set(IGNORED), r.stdout


def test_make_results_runs_every_study_in_order_and_is_phony():
    text = (ROOT / "Makefile").read_text()
    phony = next(ln for ln in text.splitlines() if ln.startswith(".PHONY"))
    assert " results" in phony  # results/ exists: a non-phony target would always be "up to date"
    assert f"STUDIES ?= {' '.join(studies.RUN_ORDER)}" in text
    recipe = text.split("\nresults:", 1)[1].split("\n\n", 1)[0]
    # the sweep collects its trials as it ends: a collect after it would read the same folders again
    assert recipe.index("senet sweep") < recipe.index("senet report") and "senet collect" not in recipe
    assert "--preset standard" in recipe and "done in" in recipe


# ------------------------------------------------------------------------------------------------
# The whole story on real Ray, at the smoke preset
# ------------------------------------------------------------------------------------------------
def _trained(results: Path, study: str) -> dict[str, int]:
    """Trial folders per Tune experiment: the trials that really ran on Ray."""
    ray = results / study / "ray"
    return {e.name: len(list(e.glob("*/params.json"))) for e in sorted(ray.iterdir())} if ray.is_dir() else {}


def _sweep(results, spec, seeds) -> int:
    return main(["sweep", "custom", "--spec", str(spec), "--preset", "smoke", "--seeds", str(seeds),
                 "--results", str(results), "--cpus-per-trial", "1"])


@pytest.mark.slow
def test_each_trial_is_trained_once_across_seeds_studies_and_clones(ray_session, tmp_path, capsys):
    res = tmp_path / "results"
    gate, red = tmp_path / "gate.yaml", tmp_path / "red.yaml"
    gate.write_text("name: g\naxes: {se.gate: [sigmoid, tanh]}\n")
    red.write_text("name: r\naxes: {se.reduction: [16, 8]}\n")  # r=16 with sigmoid: g's sigmoid arm

    assert _sweep(res, gate, 1) == 0
    assert _sweep(res, gate, 2) == 0  # 2 seeds after 1: only seed 1 is trained
    assert _trained(res, "g") == {"g-smoke": 2, "g-smoke-2": 2}
    g = pd.read_parquet(res / "g" / "runs.parquet")
    assert sorted(zip(g["arm"], g["seed"], strict=True)) == [("gate=sigmoid", 0), ("gate=sigmoid", 1),
                                                            ("gate=tanh", 0), ("gate=tanh", 1)]

    assert _sweep(res, red, 2) == 0  # r=16 is g's sigmoid: copied, not trained
    assert _trained(res, "r") == {"r-smoke": 2}
    r = pd.read_parquet(res / "r" / "runs.parquet").set_index(["arm", "seed"])
    assert r.loc[("reduction=16", 0), "reused_from"] == "g/g-smoke"
    assert r.loc[("reduction=16", 1), "reused_from"] == "g/g-smoke-2"
    assert r.loc[("reduction=16", 1), "trial_id"] == g.set_index(["arm", "seed"]).loc[("gate=sigmoid", 1), "trial_id"]
    assert r["recipe"].nunique() == 1 and r["reused_from"].loc["reduction=8"].isna().all()
    for seed in (0, 1):  # a copy's checkpoint is found from the study it was copied into
        assert checkpoint_path(r.loc[("reduction=16", seed), "checkpoint"], res / "r").is_file()
    out = capsys.readouterr().out
    print(out)
    assert "4/4 trials finished (2 trained" in out and "2 reused from other studies" in out

    # a fresh clone: the tables without Ray's folders
    for study in ("g", "r"):
        shutil.rmtree(res / study / "ray")
    pd.testing.assert_frame_equal(collect("g", res), g)
    assert main(["report", "r", "--results", str(res), "--n-boot", "1000"]) == 0
    report = (res / "r" / "report.md").read_text()
    assert "Trained at commit" in report and "2 of its 4 trials were trained for another study" in report
    assert _sweep(res, gate, 3) == 0  # continues from the tables: seed 2 only, in a new experiment
    assert _trained(res, "g") == {"g-smoke-3": 2}
    assert len(pd.read_parquet(res / "g" / "runs.parquet")) == 6
    print(capsys.readouterr().out)
