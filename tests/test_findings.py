"""`senet findings` (issue 12 item 5): the paper's findings against a results folder, by code.

The fixtures are synthetic ``runs.parquet`` files with known differences, so each verdict is known
in advance: agrees, contradicts, no effect ≥ δ here, unresolved, not run yet."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.findings import FINDINGS, Finding, evaluate, write_findings
from analysis.findings.arms import ArmClaims
from senet.claims import higher
from senet.cli import main
from senet.sequential import Design, assess

#: Per-seed offsets shared by every arm (what pairing by seed removes).
SEED_EFFECT = [0.30, -0.20, 0.10, 0.50, -0.40]
ARMS = {
    "reduction": ("se.reduction", "r=16", ["baseline", "r=2", "r=4", "r=8", "r=16", "r=32"]),
    "squeeze": ("se.squeeze", "avg", ["avg", "max", "avgmax", "avgstd", "none"]),
    "gate": ("se.gate", "sigmoid", ["sigmoid", "tanh", "relu"]),
    "placement": ("se.placement", "standard", ["standard", "pre", "post", "identity", "inner"]),
    "stages": ("se.stages", "all", ["stage2", "stage3", "stage4", "all", "none"]),
}


def hidden(r: int) -> str:
    """SE-ResNet-20's SE widths as training records them (``SE_2_1:16/1,...``)."""
    return ",".join(f"SE_{s}_{b}:{c}/{max(1, c // r)}" for s, c in ((2, 16), (3, 32), (4, 64)) for b in (1, 2, 3))


def write_study(results, study, offsets, *, seeds=8, noise=0.02, num_test=10000, seed=0, extra=None):
    """``results/<study>/runs.parquet`` + ``study.json``: error = 10 + seed effect + the arm's offset
    + noise (sd ``noise``); ``offsets`` maps arm -> offset, or (offset, n seeds, noise sd)."""
    axis, ref, arms = ARMS[study]
    rng = np.random.default_rng(seed)
    rows = []
    for arm in arms:
        if arm not in offsets:
            continue
        off, n, sd = offsets[arm] if isinstance(offsets[arm], tuple) else (offsets[arm], seeds, noise)
        for s in range(n):
            e = 10.0 + SEED_EFFECT[s % len(SEED_EFFECT)] + off + rng.normal(0, sd)
            rows.append({"study": study, "arm": arm, "trial_id": f"{arm}_{s}", "seed": s, "model.name": "se_resnet20",
                         axis: arm, "data.name": "fashion-mnist", "optim.epochs": 5, "data.subset": 20000,
                         "preset": "standard", "recipe": f"rec-{study}", "status": "completed",
                         "test_top1_err": e, "test_top5_err": e / 10, "best_val_top1_err": e + 0.1,
                         "num_test": num_test, "params": 272_474 if arm != "baseline" else 270_000,
                         "se_hidden": hidden(32 if arm == "r=32" else 16), "git_commit": "0123456789abcdef",
                         **(extra or {})})
    d = results / study
    d.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(d / "runs.parquet", index=False)
    (d / "study.json").write_text(json.dumps({"name": study, "title": study, "axis": axis, "reference_arm": ref,
                                              "arms": [{"arm": a, "overrides": {axis: a}} for a in arms]}))


def write_analysis(d, eta2, *, removal=(30, 25), n=10000, err=10.0):
    """An ``senet analyze`` folder: ``selectivity.csv`` with the given η² by depth and a removal
    table whose last stage's ``mean`` removal makes ``removal[0]`` images wrong and ``[1]`` right."""
    d.mkdir(parents=True, exist_ok=True)
    blocks = [f"SE_{s}_{b}" for s in (2, 3, 4) for b in (1, 2, 3)][:len(eta2)]
    pd.DataFrame({"block": blocks, "depth": range(1, len(eta2) + 1), "eta2": eta2}).to_csv(d / "selectivity.csv",
                                                                                      index=False)
    wrong, right = removal
    e_last = err + 100 * (wrong - right) / n
    rows = [{"removed": "none", "blocks": 0, "n": n, "top1_err_mean": err, "delta_top1_mean": 0.0,
             "newly_wrong_mean": 0, "newly_right_mean": 0, "added_params_pct": 1.6},
            {"removed": "stage 2", "blocks": 3, "n": n, "top1_err_mean": err + 1, "delta_top1_mean": 1.0,
             "newly_wrong_mean": 150, "newly_right_mean": 50, "added_params_pct": 1.5},
            {"removed": "stage 4", "blocks": 3, "n": n, "top1_err_mean": e_last, "delta_top1_mean": e_last - err,
             "newly_wrong_mean": wrong, "newly_right_mean": right, "added_params_pct": 0.4}]
    pd.DataFrame(rows).to_parquet(d / "removal.parquet", index=False)


def verdicts(df: pd.DataFrame) -> dict[str, str]:
    return df.drop_duplicates("key").set_index("key")["finding_verdict"].to_dict()


@pytest.fixture
def results(tmp_path):
    r = tmp_path / "results"
    # SE 1 pp better than the baseline; r = 2, 4, 8 within a few hundredths of r = 16; r = 32 +0.8.
    write_study(r, "reduction", {"baseline": 1.0, "r=2": 0.0, "r=4": 0.02, "r=8": -0.03, "r=16": 0.0, "r=32": 0.8})
    # tanh clearly *better* than sigmoid: the paper's order is contradicted.
    write_study(r, "gate", {"sigmoid": 0.0, "tanh": -0.8, "relu": 1.0})
    # max vs avg drowned in seed noise, NoSqueeze with 2 seeds: both unresolved.
    write_study(r, "squeeze", {"avg": (0.0, 3, 0.0), "max": (0.3, 3, 1.0), "none": (0.7, 2, 0.02)})
    write_analysis(r / "gate" / "analysis", [0.05, 0.08, 0.12, 0.2, 0.31, 0.4])
    return r


def test_findings_verdicts_on_a_synthetic_results_folder(results):
    df, recipes = evaluate(results, n_boot=1000)
    assert verdicts(df) == {
        "se_beats_baseline": "agrees", "reduction": "agrees", "avg_beats_max": "unresolved",
        "nosqueeze_worse": "unresolved", "gate_order": "contradicts", "placement": "not run yet",
        "stages": "not run yet", "selectivity_depth": "agrees", "last_stage_removal": "agrees"}
    se = df[df["key"] == "se_beats_baseline"].iloc[0]
    assert se["source"] == "reduction" and se["comparison"] == "r=16 − baseline" and se["n"] == 8
    assert se["effect"] == pytest.approx(-1.0, abs=0.05) and se["ci_low"] < se["effect"] < se["ci_high"] < 0
    assert se["outcome"] == "better" and se["reason"].startswith("better than baseline; the 0.95 sequence excludes 0")
    red = df[df["key"] == "reduction"]
    assert list(red["comparison"]) == ["r=2 − r=16", "r=4 − r=16", "r=8 − r=16", "r=32 − r=16"]
    assert list(red["verdict"]) == ["agrees"] * 4
    assert set(red["outcome"].iloc[:3]) <= {"alike", "different within ±δ"} and red["outcome"].iloc[3] == "worse"
    assert "per stage: r=32 16→1, 32→1, 64→2; r=16 16→1, 32→2, 64→4" in red["notes"].iloc[3]
    assert (red["notes"].iloc[:3].fillna("") == "").all()  # same widths: nothing to note
    gate = df[df["key"] == "gate_order"]
    assert gate.iloc[0]["verdict"] == "contradicts" and "sigmoid − tanh" in gate.iloc[0]["finding_reason"]
    assert gate.iloc[0]["reason"].startswith("worse than tanh")
    for key in ("avg_beats_max", "nosqueeze_worse"):  # 3 and 2 seeds: no sequence yet, and what it lacks
        row = df[df["key"] == key].iloc[0]
        assert row["reason"].startswith("Δ ∈ (−∞, ∞)") and np.isinf(row["ci_high"])
    assert "≈" in df[df["key"] == "avg_beats_max"].iloc[0]["reason"]
    place = df[df["key"] == "placement"].iloc[0]
    assert "no " in place["finding_reason"] and "placement" in place["finding_reason"]
    sel = df[df["key"] == "selectivity_depth"].iloc[0]
    assert sel["effect"] == pytest.approx(1.0) and sel["n"] == 6
    assert sel["p"] == pytest.approx(2 / 720)  # exact: ρ = ±1 are 2 of the 6! orderings
    rem = df[df["key"] == "last_stage_removal"].iloc[0]
    assert rem["comparison"].startswith("stage 4 SE removed") and rem["effect"] == pytest.approx(0.05)
    half = 1.959964 * 100 * np.sqrt((55 / 1e4 - 0.0005 ** 2) / 1e4)  # McNemar: 30 + 25 discordant of 10⁴
    assert rem["ci_high"] - rem["effect"] == pytest.approx(half, rel=1e-4)
    assert {r["study"] for r in recipes} == {"reduction", "gate", "squeeze"}


def test_the_level_is_alpha_over_the_comparisons_of_one_finding(results):
    df, _ = evaluate(results, n_boot=1000)
    for key, k in (("se_beats_baseline", 1), ("gate_order", 2), ("reduction", 4)):
        rows = df[df["key"] == key]
        assert len(rows) == k
        assert (rows["ci_method"] == f"anytime t-CS at α/{k} ({100 * (1 - 0.05 / k):.4g}%)").all()
    # the interval is the sequence of the paired differences at that level, seeds in order
    runs = pd.read_parquet(results / "gate" / "runs.parquet").pivot(index="seed", columns="arm",
                                                                    values="test_top1_err").sort_index()
    want = assess((runs["sigmoid"] - runs["tanh"]).to_numpy(), Design(), k=2, resolution=0.01)
    got = df[(df["key"] == "gate_order") & (df["comparison"] == "sigmoid − tanh")].iloc[0]
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((want.low, want.high))
    assert got["ci_high"] - got["ci_low"] > got["t_high"] - got["t_low"] > 0  # the sequence is the wider


def test_alike_contradicts_when_the_interval_lies_beyond_delta(tmp_path):
    r = tmp_path / "results"
    write_study(r, "reduction", {"baseline": 1.0, "r=2": 1.5, "r=4": 0.0, "r=8": 0.5, "r=16": 0.0, "r=32": 0.8},
                noise=0.05)
    df, _ = evaluate(r, n_boot=1000)
    red = df[df["key"] == "reduction"].set_index("comparison")
    assert red.loc["r=2 − r=16", "verdict"] == "contradicts"  # 1.5 pp apart: not alike at δ = 0.5
    assert red.loc["r=4 − r=16", "verdict"] == "agrees"
    # 0.5 ± ~0.1: the sequence excludes 0 (worse) but straddles +δ: not alike, not shown to differ by δ
    assert red.loc["r=8 − r=16", "verdict"] == "unresolved" and red.loc["r=8 − r=16", "outcome"] == "worse"
    assert "reaches inside ±0.5 pp" in red.loc["r=8 − r=16", "reason"]
    assert red["finding_verdict"].iloc[0] == "contradicts"


def test_no_effect_and_differences_within_delta(tmp_path):
    r = tmp_path / "results"
    # sigmoid and tanh alike; tanh 0.3 pp below ReLU, a real difference smaller than δ: the finding has
    # no effect ≥ δ here (one claim agrees, one finds nothing), naming the comparison without one.
    write_study(r, "gate", {"sigmoid": 0.0, "tanh": 0.0, "relu": 0.3}, noise=0.01)
    df, _ = evaluate(r, n_boot=1000)
    g = df[df["key"] == "gate_order"].set_index("comparison")
    assert g.loc["sigmoid − tanh", "verdict"] == "no effect ≥ δ here" and g.loc["sigmoid − tanh", "outcome"] == "alike"
    assert g.loc["tanh − relu", "verdict"] == "agrees" and g.loc["tanh − relu", "outcome"] == "different within ±δ"
    assert g.loc["tanh − relu", "reason"].startswith("lower than relu but within ±0.5 pp (smaller than δ)")
    assert g["finding_verdict"].iloc[0] == "no effect ≥ δ here"
    assert g["finding_reason"].iloc[0] == "no effect ≥ δ in sigmoid − tanh"
    # the same small difference against the paper's direction contradicts it
    write_study(r, "gate", {"sigmoid": 0.0, "tanh": 0.0, "relu": -0.3}, noise=0.01)
    g = evaluate(r, n_boot=1000)[0].query("key == 'gate_order'").set_index("comparison")
    assert g.loc["tanh − relu", "verdict"] == "contradicts" and g["finding_verdict"].iloc[0] == "contradicts"


def test_a_difference_below_one_test_image_is_never_a_difference(tmp_path):
    r = tmp_path / "results"
    # 100 test images: one image is 1 pp; a steady 0.5 pp is below it, however narrow the sequence.
    write_study(r, "gate", {"sigmoid": 0.0, "tanh": 0.5, "relu": 3.0}, num_test=100, noise=0.01)
    df, _ = evaluate(r, n_boot=1000)
    g = df[df["key"] == "gate_order"].set_index("comparison")
    assert g.loc["sigmoid − tanh", "verdict"] == "unresolved" and g.loc["sigmoid − tanh", "ci_high"] < 0
    assert "below one test image (1.00 pp), never a difference" in g.loc["sigmoid − tanh", "reason"]
    assert g.loc["tanh − relu", "verdict"] == "agrees"
    assert "the CS at α/2 settles δ = 0.5 pp in ≈ " in g.loc["sigmoid − tanh", "power"]  # the projection


def test_stage_globs_and_the_alternative_source(tmp_path):
    r = tmp_path / "results"
    write_study(r, "stages", {"stage2": -0.6, "stage3": -0.5, "stage4": -0.7, "all": -1.0, "none": 0.0})
    df, _ = evaluate(r, n_boot=1000)
    st = df[df["key"] == "stages"].set_index("comparison")
    assert list(st.index) == ["stage2 − none", "stage3 − none", "stage4 − none",
                              "all − stage2", "all − stage3", "all − stage4"]
    assert (st["verdict"] == "agrees").all()
    assert (st["ci_method"] == "anytime t-CS at α/6 (99.17%)").all()  # one family of six
    # all − stage3 = −0.5 ± noise and all − stage2 = −0.4: lower, but by less than δ where the CS says so
    assert st.loc["all − stage2", "outcome"] == "different within ±δ"
    assert "smaller than δ" in st.loc["all − stage2", "reason"]
    se = df[df["key"] == "se_beats_baseline"].iloc[0]  # no reduction study: the stages study answers
    assert se["source"] == "stages" and se["comparison"] == "all − none" and se["verdict"] == "agrees"


def test_excitation_findings_contradict_and_fall_back_to_a_labelled_bound(tmp_path):
    r = tmp_path / "results"
    a = r / "analysis"
    write_analysis(a, [0.4, 0.3, 0.25, 0.2, 0.1, 0.05], removal=(400, 100))
    df, _ = evaluate(r, n_boot=1000)
    v = verdicts(df)
    assert v["selectivity_depth"] == "contradicts" and v["last_stage_removal"] == "contradicts"  # +3 pp
    t = pd.read_parquet(a / "removal.parquet").drop(columns=["newly_wrong_mean", "newly_right_mean"])
    t.to_parquet(a / "removal.parquet", index=False)
    rem = evaluate(r, n_boot=1000)[0].set_index("key").loc["last_stage_removal"]
    assert rem["ci_method"].startswith("conservative bound")
    e0, e1 = 0.10, 0.13  # Var ≤ (e0 + e1 − Δ²)/N: wider than the paired interval
    assert rem["ci_high"] - rem["effect"] == pytest.approx(1.959964 * 100 * np.sqrt((e0 + e1 - 0.03 ** 2) / 1e4),
                                                            rel=1e-4)


def test_a_registered_finding_appears_in_the_output(results, monkeypatch):
    monkeypatch.setitem(FINDINGS, "relu_worst", Finding(
        "relu_worst", "ReLU is worse than sigmoid", "Table 12: 23.47 vs 22.28",
        (ArmClaims("gate", (higher("relu", "sigmoid"),)),)))
    out, df = write_findings(results, n_boot=1000)
    assert verdicts(df)["relu_worst"] == "agrees"
    row = [ln for ln in out.read_text().splitlines() if "ReLU is worse than sigmoid" in ln]
    assert row and row[0].startswith("| 10 |") and "relu − sigmoid" in row[0] and "| agrees |" in row[0]
    assert (out.parent / "findings.csv").is_file()


def test_findings_command_writes_the_readme_deterministically(results, capsys):
    out = results / "README.md"
    assert main(["findings", "--results", str(results), "--n-boot", "1000"]) == 0
    text = out.read_text()
    printed = capsys.readouterr().out
    assert "| 5 | sigmoid beats tanh, which beats ReLU |" in printed and f"wrote {out}" in printed
    for needle in ("not ImageNet and not ResNet-50", "fashion-mnist", "se_resnet20", "0123456789ab",
                   "| reduction | standard | fashion-mnist | se_resnet20 | 5 | 20,000 | 10,000 | 8 |",
                   "not run yet", "unresolved at n = 3", "**Headline:** of 9 findings: 1 contradicts, 4 agree, "
                   "0 no effect ≥ δ here, 2 unresolved, 2 not run yet.",
                   "| comparison | expected | n | Δ | interval | interval method | outcome | σ̂_d | ρ̂ | fixed-n t "
                   "95% CI (descriptive; not valid under optional stopping) |", "holds at every n at once: valid however seeds were added"):
        assert needle in text, needle
    assert main(["findings", "--results", str(results), "--n-boot", "1000"]) == 0
    assert out.read_text() == text  # nothing in it depends on when or where it ran


def test_nothing_run_yet_is_not_an_error(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    assert main(["findings", "--results", str(tmp_path / "results")]) == 0
    df = pd.read_csv(tmp_path / "results" / "findings.csv")
    assert set(df["finding_verdict"]) == {"not run yet"}


@pytest.mark.parametrize("case", ["no_dir", "mixed_recipes", "bad_analysis"])
def test_findings_bad_input_is_one_line(tmp_path, capsys, case):
    r = tmp_path / "results"
    args = ["findings", "--results", str(r)]
    if case != "no_dir":
        write_study(r, "gate", {"sigmoid": 0.0, "tanh": 0.5, "relu": 1.0})
    if case == "mixed_recipes":
        runs = pd.read_parquet(r / "gate" / "runs.parquet")
        smoke = runs.assign(recipe="other", preset="smoke", trial_id=runs["trial_id"] + "_s")
        pd.concat([runs, smoke]).to_parquet(r / "gate" / "runs.parquet", index=False)
    if case == "bad_analysis":
        args += ["--analysis", str(tmp_path / "nowhere")]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    if case == "mixed_recipes":  # --preset picks one, as in senet report
        assert "--preset" in err
        assert main(args + ["--preset", "standard", "--n-boot", "1000"]) == 0
        assert main(args + ["--preset", "quick", "--n-boot", "1000"]) == 0  # a preset not run: not an error
        df = pd.read_csv(r / "findings.csv")
        assert "no trials of preset 'quick' in results/gate/runs.parquet" in \
            df.loc[df["key"] == "gate_order", "finding_reason"].iloc[0]


def test_removal_table_counts_the_images_a_removal_flips():
    from analysis.removal import mean_excitations, removal_table
    from senet import build_model

    torch.manual_seed(0)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_model("se_resnet20", num_classes=4, in_chans=1).eval()
        x = torch.randint(0, 256, (64, 1, 16, 16), dtype=torch.uint8)
        y = torch.arange(64) % 4
        means = mean_excitations(model, x[:32], (0.5,), (0.25,), device="cpu", progress=False)
        t = removal_table(model, x[32:], y[32:], (0.5,), (0.25,), means=means, singles=False, device="cpu",
                          progress=False)
    finally:
        torch.set_num_threads(n)
    for m in ("mean", "identity"):
        assert t[f"newly_wrong_{m}"].iloc[0] == 0 and t[f"newly_right_{m}"].iloc[0] == 0
        # b − c images is exactly the change in top-1 error
        np.testing.assert_allclose(100 * (t[f"newly_wrong_{m}"] - t[f"newly_right_{m}"]) / t["n"],
                                   t[f"delta_top1_{m}"], atol=1e-9)
    assert (t[["newly_wrong_identity", "newly_right_identity"]].sum(axis=1).iloc[1:] > 0).any()


@pytest.mark.parametrize("argv", [["--help"], ["findings", "--help"], ["gates", "--help"]])
def test_help_of_the_new_commands_renders(argv, capsys):
    # argparse %-formats help strings: a bare "95% CI" in a command's help broke `senet --help`
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert all(c in out for c in (("findings", "gates") if argv == ["--help"] else ("--results", "--out")))
