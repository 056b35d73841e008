"""The anytime-valid confidence sequence and the four outcomes (senet.sequential): golden multipliers
from the design note, the closed form against its e-value, the running intersection, the outcome
rules, final verdicts, the seed projection, and the operating characteristics by simulation."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from senet.errors import UserValueError
from senet.sequential import (
    ALIKE,
    BETTER,
    CLOSED,
    OPEN,
    UNRESOLVED,
    WITHIN,
    WORSE,
    Design,
    assess,
    multiplier,
    outcome,
    running_cs,
    seeds_to_settle,
    simulate,
)

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "sequential_design.py"


def e_value(d, mu0: float, alpha_unused=None, g: float = 1.0) -> float:
    """E_n(μ₀) = (1 + ng)^(−1/2) [(1 + t²/ν) / (1 + t²/(ν(1 + ng)))]^(n/2): the mixture t martingale."""
    d = np.asarray(d, float)
    n = len(d)
    nu = n - 1
    t = math.sqrt(n) * (d.mean() - mu0) / d.std(ddof=1)
    return (1 + n * g) ** -0.5 * ((1 + t * t / nu) / (1 + t * t / (nu * (1 + n * g)))) ** (n / 2)


# ---------------------------------------------------------------------------------------------
# The multiplier and the interval
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, alpha, want", [(5, 0.05, 8.453), (10, 0.05, 3.870), (20, 0.05, 3.425),
                                            (6, 0.05 / 3, 9.87)])
def test_golden_multipliers_of_the_design_note(n, alpha, want):
    assert multiplier(n, alpha) == pytest.approx(want, abs=5e-3)


def test_first_finite_interval():
    assert math.isinf(multiplier(4, 0.05)) and math.isfinite(multiplier(5, 0.05))
    assert math.isinf(multiplier(5, 0.05 / 3)) and math.isfinite(multiplier(6, 0.05 / 3))
    assert math.isinf(multiplier(1, 0.05))
    n = np.arange(5, 400)
    m = multiplier(n, 0.05)
    # the half-width shrinks with n (the multiplier itself grows again slowly, ~√log n), never below z
    assert np.all(np.diff(m / np.sqrt(n)) < 0) and np.all(m > 1.96) and np.argmin(m) < len(m) - 1


@pytest.mark.parametrize("n, alpha, g, seed", [(5, 0.05, 1.0, 0), (12, 0.05 / 3, 1.0, 1), (30, 0.01, 2.5, 2)])
def test_the_closed_form_is_where_the_e_value_crosses_one_over_alpha(n, alpha, g, seed):
    d = np.random.default_rng(seed).normal(0.3, 0.7, n)
    half = multiplier(n, alpha, g) * d.std(ddof=1) / math.sqrt(n)
    for end in (d.mean() - half, d.mean() + half):
        assert e_value(d, end, g=g) == pytest.approx(1 / alpha, rel=1e-8)
    for inside in (d.mean(), d.mean() - 0.99 * half, d.mean() + 0.99 * half):
        assert e_value(d, inside, g=g) < 1 / alpha
    for outside in (d.mean() - 1.01 * half, d.mean() + 1.01 * half):
        assert e_value(d, outside, g=g) > 1 / alpha


def test_the_running_intersection_is_monotone_and_intersects_every_prefix():
    d = np.random.default_rng(3).normal(0.2, 0.5, 40)
    lo, hi = running_cs(d, 0.05)
    finite = np.isfinite(lo)
    assert not finite[:4].any() and finite[4:].all()
    assert np.all(np.diff(lo[4:]) >= 0) and np.all(np.diff(hi[4:]) <= 0) and np.all(lo <= hi)
    for n in (5, 17, 40):  # each end is the tightest of the single-n intervals so far
        ends = [(d[:m].mean() - multiplier(m, 0.05) * d[:m].std(ddof=1) / math.sqrt(m),
                 d[:m].mean() + multiplier(m, 0.05) * d[:m].std(ddof=1) / math.sqrt(m)) for m in range(5, n + 1)]
        assert lo[n - 1] == pytest.approx(max(e[0] for e in ends)) and hi[n - 1] == pytest.approx(min(e[1] for e in ends))


# ---------------------------------------------------------------------------------------------
# Outcomes
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("low, high, mean, res, want", [
    (0.1, 0.9, 0.5, 0.0, WORSE),  # excludes 0, reaches past +δ
    (-0.9, -0.1, -0.5, 0.0, BETTER),
    (-0.3, 0.3, 0.0, 0.0, ALIKE),  # inside ±δ
    (0.1, 0.4, 0.25, 0.0, WITHIN),  # both: a real difference smaller than δ
    (-0.2, 0.8, 0.3, 0.0, OPEN),  # neither
    (-math.inf, math.inf, 2.0, 0.0, OPEN),
    (0.001, 0.7, 0.005, 0.01, OPEN),  # excludes 0, but |Δ̂| is half a test image: never a difference
    (0.001, 0.009, 0.005, 0.01, ALIKE),  # the same inside ±δ is alike, not "different within"
    (0.01, 0.7, 0.02, 0.01, WORSE),  # one image and more is a difference
])
def test_outcome_on_hand_made_intervals(low, high, mean, res, want):
    assert outcome(low, high, mean, 0.5, res) == want


def test_a_verdict_is_final_as_seeds_are_added():
    design = Design()
    rng = np.random.default_rng(7)
    for mu in (1.0, 0.3, 0.0, -0.6):
        for _ in range(20):
            d = rng.normal(mu, 0.5, 40)
            first = None
            for n in range(1, 41):
                s = assess(d[:n], design)
                if n < design.min_seeds:
                    assert s.outcome == OPEN
                if first is None and s.closed:
                    first = s
                elif first is not None:  # stays closed, same n of closing, never reversed
                    assert s.closed and s.closed_at == first.closed_at and s.more_seeds is None
                    if first.outcome in (BETTER, WORSE, WITHIN):
                        assert s.outcome in (first.outcome, WITHIN) and np.sign(s.low) == np.sign(first.low)
                    else:
                        assert s.outcome in (ALIKE, WITHIN)
            if first is None:
                assert s.outcome == UNRESOLVED and "cap reached" in s.reason()


def test_assess_reads_the_family_level_and_the_cap():
    d = np.random.default_rng(0).normal(0.1, 0.5, 8)
    one, three = assess(d, Design(), k=1), assess(d, Design(), k=3)
    assert three.level == pytest.approx(0.05 / 3) and three.high - three.low > one.high - one.low
    assert assess(d, Design(max_seeds=8)).outcome in (*CLOSED, UNRESOLVED)
    assert assess(d[:3], Design()).reason().startswith("Δ ∈ (−∞, ∞); ≈ ")
    assert assess([], Design()).outcome == OPEN
    with pytest.raises(UserValueError, match="unknown keys in the sequential design: beta"):
        Design.from_dict({"beta": 1})
    assert Design.from_dict(None) == Design() and Design.from_dict({"delta": 0.3}).delta == 0.3


@pytest.mark.parametrize("n, mean, sd, alpha", [(5, 0.3, 0.5, 0.05), (3, 1.2, 0.9, 0.05 / 6), (10, 0.05, 0.4, 0.05)])
def test_seeds_to_settle_matches_the_multiplier(n, mean, sd, alpha):
    m = seeds_to_settle(n, mean, sd, alpha, 1.0, 0.5)
    target = max(abs(mean), 0.5 - abs(mean))
    half = lambda k: multiplier(k, alpha) * sd / math.sqrt(k)  # noqa: E731
    assert m >= 1 and half(n + m) < target
    assert all(half(k) >= target for k in range(n + 1, n + m))
    assert seeds_to_settle(1, mean, sd, alpha, 1.0, 0.5) is None and seeds_to_settle(5, mean, 0.0, alpha, 1.0, 0.5) is None


# ---------------------------------------------------------------------------------------------
# Operating characteristics (acceptance): 4,000 simulated studies per case
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3])
def test_simulated_error_rates_and_coverage(k):
    design = Design()
    null = simulate(0.0, 0.5, design, k=k, studies=4000, seed=11)
    assert null["different"] <= 0.05 and null["coverage"] >= 0.95
    edge = simulate(design.delta, 0.5, design, k=k, studies=4000, seed=12)
    assert edge["alike"] + edge["within"] <= 0.05 and edge["coverage"] >= 0.95
    # shares add up, and the design stops early when it can
    for r in (null, edge):
        assert r["different"] + r["alike"] + r["unresolved"] == pytest.approx(1.0)
        assert design.min_seeds <= r["seeds"] < design.max_seeds


def test_the_design_script_runs(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--studies", "200"], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("α/")]
    assert len(lines) == 8 and "fixed-n" in out
    assert lines[0].split()[-1] == "10" and lines[4].split()[-1] == "14"  # fixed-n t seeds, 80% power at δ
