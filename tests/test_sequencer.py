"""The seed sequencer of ``senet sweep --until-resolved``, driven by hand (no Ray, no training)."""
from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest

from ablations.sequencer import SeedSequencer, state_lines
from senet.records import trial_index
from senet.sequential import ALIKE, DESIGNS, OPEN, UNRESOLVED, WORSE, Design, design_of, simulate

ARMS = ["ref", "big", "none", "tiny"]


def make(design=Design(g=1.0, min_seeds=2, max_seeds=12), arms=ARMS, table=None, known=()):
    cells = {(a, s): {"arm": a, "seed": s} for a in arms for s in range(design.max_seeds) if (a, s) not in known}
    ids = {(f"id-{a}", s): a for a in arms for s in range(design.max_seeds)}
    return SeedSequencer(arms, "ref", design, cells, table=table, ids=ids, resolution=0.01, out=io.StringIO())


def errors(arm: str, seed: int) -> float:
    """Made-up test errors: 'big' is 5 pp worse than the reference, 'none' equal, 'tiny' +0.2 pp."""
    rng = np.random.default_rng(1000 * seed + ARMS.index(arm))
    shift = {"ref": 0.0, "big": 5.0, "none": 0.0, "tiny": 0.2}[arm]
    return 10.0 + shift + float(rng.normal(0, 0.05))


def run(seq: SeedSequencer, concurrency: int = 3, limit: int = 10_000) -> list[tuple[str, int]]:
    """Drive the sequencer like Tune: keep ``concurrency`` trials live, complete the oldest first."""
    trained, live, i = [], [], 0
    while i < limit:
        while len(live) < concurrency:
            got = seq.suggest(f"t{i}")
            if got in (None, "FINISHED"):
                break
            live.append((f"t{i}", got))
            i += 1
        if not live:
            assert seq.suggest(f"t{i}") == "FINISHED"
            return trained
        tid, params = live.pop(0)
        trained.append((params["arm"], params["seed"]))
        seq.complete(tid, {"final": True, "status": "completed",
                           "test_top1_err": errors(params["arm"], params["seed"]), "num_test": 10000})
    raise AssertionError("the sequencer never finished")


def test_blocks_close_arms_and_never_train_a_cell_twice():
    seq = make()
    trained = run(seq)
    assert len(trained) == len(set(trained))  # no (arm, seed) twice
    # every arm gets the design's first seeds; the clear effect closes and gets no more
    for a in ARMS:
        assert {(a, s) for s in range(seq.design.min_seeds)} <= set(trained)
    states = dict(seq.states())
    assert states["big"].outcome == WORSE
    assert states["none"].outcome == ALIKE
    n_big = sum(1 for a, _ in trained if a == "big")
    assert n_big < seq.design.max_seeds and n_big == states["big"].n
    # the reference ran as long as any arm was open, and a block holds the reference and open arms only
    assert sum(1 for a, _ in trained if a == "ref") == max(sum(1 for a, _ in trained if a == x) for x in ARMS)
    # the seeds of every arm are the first ones, in order
    for a in ARMS:
        seeds = sorted(s for x, s in trained if x == a)
        assert seeds == list(range(len(seeds)))


def test_cap_leaves_open_arms_unresolved():
    seq = make(Design(g=1.0, min_seeds=2, max_seeds=4))
    trained = run(seq)
    assert len(trained) == len(ARMS) * 4
    states = dict(seq.states())
    assert states["tiny"].outcome == UNRESOLVED and states["tiny"].n == 4
    assert any("cap reached" in line for line in state_lines(seq))


def test_pairs_wait_for_the_lower_seeds():
    """Results are used in seed order: a finished seed 1 counts only once seed 0's pair is in."""
    seq = make()
    ids = {}
    for i in range(2 * len(ARMS)):
        p = seq.suggest(f"t{i}")
        ids[(p["arm"], p["seed"])] = f"t{i}"
    for a in ("ref", "big"):
        seq.complete(ids[(a, 1)], {"final": True, "test_top1_err": errors(a, 1)})
    assert seq.pairs("big") == []
    for a in ("ref", "big"):
        seq.complete(ids[(a, 0)], {"final": True, "test_top1_err": errors(a, 0)})
    assert len(seq.pairs("big")) == 2


def test_failed_trial_is_skipped_not_retrained():
    seq = make(Design(g=1.0, min_seeds=2, max_seeds=3))
    p = seq.suggest("t0")
    assert (p["arm"], p["seed"]) == ("ref", 0)
    seq.complete("t0", None, error=True)
    assert math.isnan(seq.values[("ref", 0)])
    trained = run(seq)
    assert ("ref", 0) not in trained
    assert dict(seq.states())["big"].n == 2  # seed 0 gives no pair


def test_recorded_rows_are_known_and_not_suggested(tmp_path):
    """A sequencer built (or restored) over the study's table trains none of its finished rows."""
    rows = [{"study": "s", "arm": a, "seed": s, "status": "completed", "test_top1_err": errors(a, s),
             "num_test": 10000} for a in ARMS for s in range(2)]
    table = tmp_path / "runs.parquet"

    ids = {trial_index.key_of({**r, "config_id": trial_index.config_id(r)}): r["arm"]
           for r in [{"arm": a, "seed": s, "model.name": f"m-{a}"} for a in ARMS for s in range(12)]}
    pd.DataFrame([{**r, "model.name": f"m-{r['arm']}"} for r in rows]).to_parquet(table)
    design = Design(g=1.0, min_seeds=2, max_seeds=12)
    cells = {(a, s): {"arm": a, "seed": s} for a in ARMS for s in range(2, 12)}
    seq = SeedSequencer(ARMS, "ref", design, cells, table=table, ids=ids, out=io.StringIO())
    assert len(seq.values) == 2 * len(ARMS)
    assert seq.resolution == pytest.approx(0.01)
    p = seq.suggest("t0")
    assert p["seed"] == 2


def test_designs_are_declared_per_preset():
    meta = {"sequential": {"quick": {"alpha": 0.05, "delta": 0.3, "g": 2.0, "min_seeds": 3, "max_seeds": 9}}}
    d, declared = design_of(meta, "quick")
    assert declared and d.delta == 0.3 and d.max_seeds == 9
    d, declared = design_of(meta, "standard")
    assert not declared and d == DESIGNS["standard"]
    assert not dict(make().states())["big"].closed and make().states()[0][1].outcome == OPEN


@pytest.mark.parametrize("preset", sorted(DESIGNS))
def test_every_preset_design_keeps_its_error_rates(preset):
    """Each preset's default design (the small ones use g = 50 to decide after a few seeds) errs at
    most α: 4,000 simulated studies with Δ = 0 and with Δ = δ, at k = 3."""
    d = DESIGNS[preset]
    null = simulate(0.0, 0.5, d, k=3, studies=4000, seed=21)
    edge = simulate(d.delta, 0.5, d, k=3, studies=4000, seed=22)
    assert null["different"] <= d.alpha and null["coverage"] >= 1 - d.alpha
    assert edge["alike"] + edge["within"] <= d.alpha and edge["coverage"] >= 1 - d.alpha


def test_some_arms_share_alpha_with_the_whole_study():
    """A sweep of some arms (--arms) judges each at the study's level α/k, as its report does."""
    from senet.sequential import assess

    design = Design(g=1.0, min_seeds=2, max_seeds=12)
    arms = ["ref", "tiny"]
    cells = {(a, s): {"arm": a, "seed": s} for a in arms for s in range(design.max_seeds)}
    seq = SeedSequencer(arms, "ref", design, cells, k=3, resolution=0.01, out=io.StringIO())
    for s in range(6):
        for a in arms:
            seq.values[(a, s)] = errors(a, s)
    got = seq.assess("tiny")
    assert got.level == pytest.approx(design.level(3))
    assert got.interval() == assess(seq.pairs("tiny"), design, k=3, resolution=0.01).interval()
    assert got.interval() != assess(seq.pairs("tiny"), design, k=1, resolution=0.01).interval()
    with pytest.raises(Exception, match="fewer than"):
        SeedSequencer(["ref", "a", "b"], "ref", design, cells, k=1)


def _claims_run(aim: str):
    """ref; 'a' and 'b' 5 pp worse than ref (decided against it at once) and 0.3 pp apart: the
    findings' claim a − b needs more seeds than the report's comparisons."""
    arms = ["ref", "a", "b"]
    design = Design(g=1.0, min_seeds=2, max_seeds=30)
    cells = {(x, s): {"arm": x, "seed": s} for x in arms for s in range(design.max_seeds)}
    seq = SeedSequencer(arms, "ref", design, cells, resolution=0.01, out=io.StringIO(),
                        claims=[("made_up", [("a", "b", "lower")])], aim=aim)
    shift = {"ref": 0.0, "a": 5.0, "b": 5.25}
    trained, i = [], 0
    while (got := seq.suggest(f"t{i}")) not in (None, "FINISHED"):
        rng = np.random.default_rng(1000 * got["seed"] + arms.index(got["arm"]))
        seq.complete(f"t{i}", {"final": True, "status": "completed", "num_test": 10000,
                               "test_top1_err": 10.0 + shift[got["arm"]] + float(rng.normal(0, 0.2))})
        trained.append((got["arm"], got["seed"]))
        i += 1
    return seq, trained


def test_findings_claims_get_seeds_the_reference_does_not():
    from senet.claims import settles

    seq, trained = _claims_run("both")
    n = {x: sum(1 for a, _ in trained if a == x) for x in ("ref", "a", "b")}
    assert dict(seq.states())["a"].outcome == WORSE and dict(seq.states())["b"].outcome == WORSE
    (claim, a, decided), = seq.claim_states()
    assert decided and a.outcome in ("better", "alike", "different within ±δ")  # settled: lower, or no effect ≥ δ
    assert n["a"] == n["b"] == a.n > n["ref"] >= seq.design.min_seeds  # the reference stopped when it decided nothing
    assert any("settled a − b (made_up)" in ln for ln in seq._out.getvalue().splitlines())
    assert any(ln.strip().startswith("a − b") and "settled: made_up" in ln for ln in state_lines(seq))
    # the report alone: the claim is not pursued; the findings alone: the reference stops at the first seeds
    seq_r, trained_r = _claims_run("report")
    assert seq_r.claim_states() == [] and max(s for _, s in trained_r) < max(s for _, s in trained)
    seq_f, trained_f = _claims_run("findings")
    assert sum(1 for a, _ in trained_f if a == "ref") == seq_f.design.min_seeds
    assert [x for x in trained_f if x[0] != "ref"] == [x for x in trained if x[0] != "ref"]
    # an "alike" claim stays open while its sequence reaches inside ±δ, closes inside or beyond it
    assert not settles("alike", WORSE, 0.1, 0.7, 0.5)
    assert settles("alike", WORSE, 0.6, 0.9, 0.5) and settles("alike", ALIKE, -0.3, 0.3, 0.5)
    assert settles("lower", ALIKE, -0.3, 0.3, 0.5) and not settles("lower", OPEN, -1, 1, 0.5)


def test_every_published_finding_names_arms_of_its_study():
    """The claims the sweep pursues are the findings' own, on arms the studies have."""
    from ablations.studies import get_study
    from analysis.findings import FINDINGS
    from senet.claims import ARM_CLAIMS, study_claims
    from senet.config import Config

    for key, sources in ARM_CLAIMS.items():
        assert key in FINDINGS
        study = get_study(sources[0][0])
        arms = [a.label for a in study.resolve_arms(Config())]
        got = dict(study_claims(study.name, arms))
        assert key in got and all(a in arms and v in arms for a, v, _ in got[key])


def test_the_projection_asks_the_first_seeds_then_what_each_open_arm_needs():
    """Before any result every arm needs the design's first seeds; once the clear effects have
    closed, only the arms of open comparisons (and the reference) are projected past them, and the
    projected trials are those seeds less the ones each arm has."""
    seq = make()
    first = seq.design.min_seeds
    assert seq.projection() == {a: first for a in ARMS}
    assert seq.projected_trials() == first * len(ARMS)
    for s in range(first):
        for a in ARMS:
            seq.values[(a, s)] = errors(a, s)
    seq.update()
    want = seq.projection()
    open_arms = {arm for arm, a in seq.states() if a.outcome == OPEN}
    assert all(want[a] == first for a in ARMS if a not in open_arms | {"ref"})
    assert all(first <= want[a] <= seq.design.max_seeds for a in ARMS)
    assert open_arms and all(want[a] > first for a in open_arms | {"ref"})
    assert seq.projected_trials() == sum(n - first for n in want.values())
