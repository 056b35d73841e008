"""The channel-attention family's table (analysis/family_table.py, `senet report family --readme`):
one row per arm, params and FLOPs added over the plain network from runs.parquet, the report's
verdicts, and the README splice between its markers. Fast tests on a hand-made study; (slow) the
same on the family study's smoke sweep through real Ray Tune."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.family_table import MARKERS, family_table
from senet.cli import main

README = "# Title\n\nBefore the table.\n\n{start}\nplaceholder\n{end}\n\nAfter the table.\n"
#: The hand-made study: arm -> offset from SE's error (points); cbam's seeds are noisy.
OFFSETS = {"baseline": 3.0, "se": 0.0, "eca": 0.0, "cbam": 0.5}
PARAMS = {"baseline": 269_434, "se": 271_807, "eca": 269_461, "cbam": 272_350}


def table_cells(md: str) -> dict[str, dict[str, str]]:
    """A Markdown table's rows by their first cell, each as column -> cell."""
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[1:]]
    return {r[0]: dict(zip(header, r, strict=True)) for r in rows}


def column(cells: dict, prefix: str) -> dict[str, str]:
    """arm -> the cell of the (one) column whose name starts with ``prefix``."""
    return {arm: next(v for k, v in row.items() if k.startswith(prefix)) for arm, row in cells.items()}


def count(cell: str) -> int:
    """An amount added, as the table prints it ("+2,373 (+0.88%)", "0")."""
    return int(cell.split(" ")[0].replace(",", ""))


def write_family(results, seeds: int = 6) -> None:
    """``results/family``: four arms, ``seeds`` seeds each, error = 10 + a seed effect + the arm's offset."""
    rng = np.random.default_rng(0)
    rows = []
    for arm, off in OFFSETS.items():
        for s in range(seeds):
            e = 10.0 + 0.3 * np.sin(s) + off + rng.normal(0, 1.5 if arm == "cbam" else 0.01)
            rows.append({"study": "family", "arm": arm, "trial_id": f"{arm}_{s}", "seed": s, "status": "completed",
                         "model.name": "se_resnet20", "data.name": "fashion-mnist", "data.image_size": 0,
                         "preset": "quick", "recipe": "rec-family", "test_top1_err": e, "test_top5_err": e / 10,
                         "num_test": 10000, "params": PARAMS[arm], "flops": 40_000_000 + 10 * PARAMS[arm]})
    d = results / "family"
    d.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(d / "runs.parquet", index=False)
    design = {"alpha": 0.05, "delta": 0.5, "g": 50.0, "min_seeds": 3, "max_seeds": 6}
    (d / "study.json").write_text(json.dumps({
        "name": "family", "title": "family", "reference_arm": "se", "sequential": {"quick": design},
        "arms": [{"arm": a, "overrides": {}} for a in OFFSETS]}))


def report_and_table(results, preset: str, *extra: str) -> tuple[dict, dict, dict]:
    """``senet report family``: the family table's cells, the report's top-1 outcomes by arm, and the
    runs by arm (first row)."""
    assert main(["report", "family", "--results", str(results), "--preset", preset, "--n-boot", "200", *extra]) == 0
    d = results / "family"
    outcomes = column(table_cells((d / "comparison_test_top1_err.md").read_text()), "outcome")
    runs = pd.read_parquet(d / "runs.parquet").groupby("arm").first()
    return table_cells((d / "family_table.md").read_text()), outcomes, runs


def check_table(cells: dict, outcomes: dict, runs: pd.DataFrame, arms: list[str]) -> None:
    assert list(cells) == arms  # one row per arm, in the study's order
    for col, key in (("params added", "params"), ("FLOPs added", "flops")):
        assert cells["baseline"][col] == "0"
        for arm in arms:
            assert count(cells[arm][col]) == runs.loc[arm, key] - runs.loc["baseline", key], (arm, col)
    verdicts = column(cells, "verdict")
    assert verdicts.pop("se") == "reference" and verdicts == outcomes


def check_readme(tmp_path, results, preset: str) -> None:
    """The README's text outside the markers is kept, and a second run writes the same bytes."""
    readme = tmp_path / "README.md"
    original = README.format(start=MARKERS[0], end=MARKERS[1])
    readme.write_text(original)
    report_and_table(results, preset, "--readme", str(readme))
    first = readme.read_bytes()
    before, rest = first.decode().split(MARKERS[0])
    inside, after = rest.split(MARKERS[1])
    assert before == original.split(MARKERS[0])[0] and after == original.split(MARKERS[1])[1]
    assert "placeholder" not in inside and inside.strip().startswith("Written by `senet report family")
    assert inside.strip().endswith(family_table(results, preset=preset, n_boot=200).strip())
    report_and_table(results, preset, "--readme", str(readme))
    assert readme.read_bytes() == first


# ------------------------------------------------------------------------------------------------
# A hand-made study: no training
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def family_results(tmp_path):
    write_family(tmp_path / "results")
    return tmp_path / "results"


def test_table_of_a_hand_made_study(family_results):
    cells, outcomes, runs = report_and_table(family_results, "quick")
    check_table(cells, outcomes, runs, list(OFFSETS))
    assert outcomes["baseline"] == "worse" and outcomes["eca"] == "alike"  # the report decides both
    assert cells["se"]["params added"] == "+2,373 (+0.88%)" and cells["se"]["n"] == "6"
    text = (family_results / "family" / "family_table.md").read_text()
    assert "`se_resnet20`" in text and "preset `quick`" in text and "δ = 0.5 pp" in text and "k = 3" in text


def test_readme_splice_replaces_only_between_the_markers(family_results, tmp_path):
    check_readme(tmp_path, family_results, "quick")


@pytest.mark.parametrize("text", ["# no markers\n", f"{MARKERS[1]}\n{MARKERS[0]}\n", f"{MARKERS[0]}\n"])
def test_readme_without_its_markers_is_one_line_error(family_results, tmp_path, capsys, text):
    readme = tmp_path / "README.md"
    readme.write_text(text)
    assert main(["report", "family", "--results", str(family_results), "--n-boot", "200",
                 "--readme", str(readme)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("senet: error:") and "lacks the markers" in err and "\n" not in err
    assert readme.read_text() == text and not (family_results / "family" / "family_table.md").exists()


def test_readme_for_a_study_without_a_table_is_refused(family_results, capsys):
    assert main(["report", "gate", "--results", str(family_results), "--readme", "README.md"]) == 2
    assert "no README table" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# The family study's smoke sweep through real Ray Tune
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_results(ray_session, tmp_path_factory):
    results = tmp_path_factory.mktemp("family_table")
    assert main(["sweep", "family", "--preset", "smoke", "--results", str(results), "--cpus-per-trial", "1"]) == 0
    return results


@pytest.mark.slow
def test_table_of_the_smoke_sweep(smoke_results):
    from ablations.studies import STUDIES, base_config

    study = STUDIES.get("family")
    arms = [a.label for a in study.resolve_arms(base_config(study, "smoke"))]
    cells, outcomes, runs = report_and_table(smoke_results, "smoke")
    check_table(cells, outcomes, runs, arms)


@pytest.mark.slow
def test_readme_splice_of_the_smoke_sweep(smoke_results, tmp_path):
    check_readme(tmp_path, smoke_results, "smoke")
