"""One recipe whatever the machine: the standard preset pins bf16 (the precision of its published
trials), so a CPU without native bf16 plans the same trials as one with it and counts the committed
results; such a CPU is told how it computes bf16. ``SENET_CPU_BF16`` forces the detection either
way. Dry runs only: nothing is trained."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from ablations import studies
from ablations.plan import SweepOptions, plan
from senet import engine, runtime
from senet.cli import main
from senet.errors import UserError

RESULTS = Path(__file__).resolve().parents[1] / "results"
NOTE = "note: this CPU has no native bf16"


@pytest.fixture
def results(tmp_path):
    """A copy of the committed tables (a dry run writes nothing; the copy makes sure of it)."""
    dest = tmp_path / "results"
    for table in sorted(RESULTS.glob("*/runs.parquet")):
        (dest / table.parent.name).mkdir(parents=True)
        shutil.copy2(table, dest / table.parent.name / table.name)
    return dest


def _files(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in folder.rglob("*")}


def _committed(study: str) -> pd.DataFrame:
    """The committed finished trials of ``study`` at standard (a table may also hold a trial a
    stopped sweep left unfinished, which a sweep trains again)."""
    df = pd.read_parquet(RESULTS / study / "runs.parquet")
    return df[(df["preset"] == "standard") & df["status"].isin(["completed", "diverged"])]


def _arms(study: str) -> int:
    """How many arms the study plans at standard: its registry's (or its backbone's) choices."""
    return len(plan(SweepOptions(study, preset="standard")).arms)


def _dry(capsys, results: Path, *argv: str) -> tuple[str, str]:
    before = _files(results)
    assert main(["sweep", *argv, "--preset", "standard", "--dry-run", "--results", str(results)]) == 0
    cap = capsys.readouterr()
    assert _files(results) == before  # a dry run writes nothing
    return cap.out, cap.err


@pytest.mark.parametrize("flags", [{"avx2", "avx512f"}, {"avx2"}])
def test_the_note_says_how_bf16_convolutions_run_there(monkeypatch, flags):
    """Without native bf16, convolutions run as fp32 ones on bf16 values, at about fp32's speed."""
    monkeypatch.setenv(runtime.BF16_ENV, "0")
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset(flags))
    note = runtime.emulated_bf16_note("bf16", "cpu")
    assert "as fp32 ones on bf16 values rounded once to bf16" in note and "about as fast as fp32" in note


@pytest.mark.parametrize("native", ["0", "1"])
def test_one_more_seed_of_the_published_gate_study_trains_only_that_seed(native, monkeypatch, capsys, results):
    monkeypatch.setenv(runtime.BF16_ENV, native)
    assert runtime.cpu_has_native_bf16() is (native == "1")
    df = _committed("gate")
    arms, seeds = _arms("gate"), int(df["seed"].max()) + 1  # a sequential study's arms may differ in n
    out, err = _dry(capsys, results, "gate", "--seeds", str(seeds + 1))
    # every recorded trial counts; only the cells of the new seed (and any an arm skipped, or an arm
    # registered after the table was published) would train
    assert (f"[gate] {arms * (seeds + 1)} trials ({arms} arms × {seeds + 1} seeds), preset standard: "
            f"{len(df)} recorded, 0 reused, {arms * (seeds + 1) - len(df)} would train") in out
    # the note goes to stderr, once, only where bf16 is emulated
    assert err.count(NOTE) == (native == "0"), err
    if native == "0":
        assert "[gate] note:" in err and "preset standard trains in bf16" in err and err.count("\n") == 1


@pytest.mark.parametrize("native", ["0", "1"])
def test_every_published_study_is_recorded_whatever_the_cpu(native, monkeypatch, capsys, results):
    monkeypatch.setenv(runtime.BF16_ENV, native)
    out, err = _dry(capsys, results, "all")
    unrecorded = set()  # (config_id, seed) of the planned trials no committed table holds
    for name in studies.RUN_ORDER:
        df = _committed(name)
        keys = set(zip(df["config_id"], df["seed"], strict=True))
        planned = plan(SweepOptions(name, preset="standard", results=str(results))).cells  # `all`'s seeds
        recorded = sum(c.key in keys for c in planned)
        # every committed trial of the plan counts as recorded, whatever the CPU: today all of them
        # (an arm registered after the tables were published is all that would train)
        assert recorded == len(df[df["seed"] < studies.STUDIES.get(name).seeds_at("standard")])
        unrecorded |= {c.key for c in planned if c.key not in keys}
        assert (f"[{name}] {len(planned)} trials" in out
                and f": {recorded} recorded, 0 reused, {len(planned) - recorded} would train" in out)
    assert out.rstrip().endswith(f"{len(unrecorded)} distinct trials would be trained"), out
    # the note costs what would be trained: today nothing, so it says nothing
    assert (NOTE in err) == (native == "0" and bool(unrecorded)), err


def test_fp32_is_another_recipe(monkeypatch, capsys, results):
    monkeypatch.setenv(runtime.BF16_ENV, "0")
    seeds = studies.STUDIES.get("gate").seeds_at("standard")
    out, err = _dry(capsys, results, "gate", "--run.precision", "fp32")
    assert f"0 recorded, 0 reused, {_arms('gate') * seeds} would train" in out
    assert NOTE not in err


def test_only_the_published_preset_pins_bf16():
    gate = studies.STUDIES.get("gate")
    assert studies.base_config(gate, "standard").run.precision == "bf16"
    assert studies.base_config(gate, "quick").run.precision == "auto"
    assert studies.base_config(gate, "smoke").run.precision == "auto"


def test_the_note_is_for_bf16_on_a_cpu_without_it(monkeypatch):
    monkeypatch.setenv(runtime.BF16_ENV, "0")
    assert NOTE in runtime.emulated_bf16_note("bf16", "cpu")
    assert runtime.emulated_bf16_note("auto", "cpu") is None  # auto trains fp32 there
    assert runtime.emulated_bf16_note("fp32", "cpu") is None
    assert runtime.emulated_bf16_note("bf16", "cuda") is None
    monkeypatch.setenv(runtime.BF16_ENV, "1")
    assert runtime.emulated_bf16_note("bf16", "cpu") is None


@pytest.mark.parametrize("native", ["0", "1"])
def test_senet_train_says_what_emulated_bf16_costs(native, monkeypatch, capsys, tmp_path):
    def stop(*a, **k):
        raise UserError("stopped before training")

    monkeypatch.setenv(runtime.BF16_ENV, native)
    monkeypatch.setattr(engine, "fit", stop)  # senet train imports fit when it runs
    rc = main(["train", "--data.name", "synthetic", "--run.device", "cpu", "--run.precision", "bf16",
               "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "stopped before training" in err
    assert err.count(NOTE) == (native == "0"), err


def test_a_bad_override_of_the_detection_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv(runtime.BF16_ENV, "yes")
    rc = main(["sweep", "gate", "--preset", "quick", "--dry-run", "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "bad value for $SENET_CPU_BF16: 'yes'" in err and err.count("\n") == 1, err
