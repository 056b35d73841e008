"""Comparisons of arms over seeds that stay valid however seeds are added: the anytime-valid t
confidence sequence and the four outcomes a comparison can end in.

A paired difference per seed, d_s = err(arm, s) − err(reference, s) in points, is taken as i.i.d.
normal with unknown σ. The t interval d̄ ± t·s/√n is valid only at an n fixed in advance: looking
after every seed and stopping when it excludes 0 rejects a true null about 23% of the time. The
confidence sequence below holds at every n at once (P(∃n: Δ ∉ CS_n) ≤ α, by Ville's inequality on
the scale-invariant Gaussian-mixture t martingale: Lai 1976; Wang & Ramdas, arXiv 2310.03722), so a
study may be checked after each seed, stopped when it is decided, resumed or extended later.

With prior N(0, g) on the standardised effect, ν = n − 1, K = ((1 + ng)/α²)^(1/n) and
W = ν(K − 1)/(1 − K/(1 + ng)), CS_n = d̄ ± √W·s/√n (the whole line while 1 − K/(1 + ng) ≤ 0). The
intervals of successive n are intersected (still valid: every one of them holds at once).

Outcomes, read off one interval at level α/k for k arms compared with one reference (Bonferroni:
every claim of the family together errs with probability ≤ α):

- ``better`` / ``worse``: the interval excludes 0 and |Δ̂| is at least one test image;
- ``alike``: the interval lies inside (−δ, δ);
- ``different within ±δ``: both (a real difference, smaller than δ);
- ``open`` while neither holds, ``unresolved`` once the seed cap is reached.

A verdict, once reached, stands: more seeds can only narrow the intersected interval, which may
refine ``better`` into ``different within ±δ`` but never reverse it. δ, α, g and the caps are a
study's :class:`Design`, fixed in its study.json before its first seed. numpy only.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from .errors import UserValueError

OPEN, BETTER, WORSE, ALIKE, WITHIN, UNRESOLVED = (
    "open", "better", "worse", "alike", "different within ±δ", "unresolved")
#: Outcomes that close an arm: the searcher stops giving it seeds.
CLOSED = (BETTER, WORSE, ALIKE, WITHIN)
#: Outcomes that claim a difference (the interval excludes 0).
DIFFERENT = (BETTER, WORSE, WITHIN)


@dataclass(frozen=True)
class Design:
    """What a sequential study declares before its first seed (kept in study.json as ``sequential``).

    ``alpha``: family-wise error over the arms compared with the reference (each at ``alpha / k``);
    ``delta``: half-width of "alike", points of error; ``g``: the mixture's prior variance on the
    standardised effect (1 is robust from about 10 seeds on; a larger g gives a finite interval at
    fewer seeds and a wider one later); ``min_seeds``: the seeds every arm gets before any is
    closed; ``max_seeds``: the cap, where an open arm ends ``unresolved``."""

    alpha: float = 0.05
    delta: float = 0.5
    g: float = 1.0
    min_seeds: int = 5
    max_seeds: int = 40

    def __post_init__(self):
        if not 0 < self.alpha < 1:
            raise UserValueError(f"sequential alpha must be in (0, 1), got {self.alpha}")
        if not self.delta > 0:
            raise UserValueError(f"sequential delta must be > 0 (points of error), got {self.delta}")
        if not self.g > 0:
            raise UserValueError(f"sequential g must be > 0, got {self.g}")
        if not 1 <= self.min_seeds <= self.max_seeds:
            raise UserValueError(f"sequential seeds need 1 <= min_seeds <= max_seeds, got "
                                 f"{self.min_seeds} and {self.max_seeds}")

    def level(self, k: int) -> float:
        """The error level of each of ``k`` comparisons with one reference."""
        return self.alpha / max(1, int(k))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, **defaults) -> Design:
        """A design from study.json's ``sequential`` entry (unknown keys refused), else ``defaults``."""
        d = dict(d or {})
        names = {f.name for f in fields(cls)}
        bad = sorted(set(d) - names)
        if bad:
            raise UserValueError(f"unknown keys in the sequential design: {', '.join(bad)}")
        return cls(**{**defaults, **d})


def multiplier(n, alpha: float, g: float = 1.0):
    """√W: the half-width of CS_n in units of s/√n (inf where the sequence is still the whole line,
    or n < 2). Vectorised over ``n``. At α = 0.05, g = 1: 8.453 at n = 5, 3.870 at 10, 3.425 at 20."""
    n = np.asarray(n, float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        big = 1.0 + n * g
        k = np.exp((np.log(big) - 2.0 * math.log(alpha)) / n)
        den = 1.0 - k / big
        w = (n - 1.0) * (k - 1.0) / den
        out = np.where((n >= 2) & (den > 0), np.sqrt(w), np.inf)
    return float(out) if out.ndim == 0 else out


def running_cs(d, alpha: float, g: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The intersected confidence sequence of the differences ``d`` (last axis: seeds in order):
    (low, high) after each prefix of 1, 2, ... seeds. A prefix whose differences do not vary gives
    no interval of its own (its s is 0: the seeds said nothing about the spread)."""
    d = np.asarray(d, float)
    n = np.arange(1, d.shape[-1] + 1, dtype=float)
    csum = np.cumsum(d, axis=-1)
    mean = csum / n
    with np.errstate(invalid="ignore", divide="ignore"):
        ss = np.cumsum(d * d, axis=-1) - csum * mean
        sd = np.sqrt(np.maximum(ss, 0.0) / np.maximum(n - 1, 1))
        flat = sd <= 1e-9 * np.maximum(1.0, np.abs(mean))
        half = np.where(flat, np.inf, multiplier(n, alpha, g) * sd / np.sqrt(n))
        half = np.where(np.isnan(half), np.inf, half)
    lo = np.maximum.accumulate(mean - half, axis=-1)
    hi = np.minimum.accumulate(mean + half, axis=-1)
    return lo, hi


def outcome(low: float, high: float, mean: float, delta: float, resolution: float = 0.0) -> str:
    """The closed outcome an interval reads, or :data:`OPEN`."""
    inside = -delta < low and high < delta
    if (low > 0 or high < 0) and abs(mean) >= resolution - 1e-12:
        return WITHIN if inside else (WORSE if low > 0 else BETTER)
    return ALIKE if inside else OPEN


def seeds_to_settle(n: int, mean: float, sd: float, alpha: float, g: float, delta: float,
                    limit: int = 100_000) -> int | None:
    """≈ how many more seeds would close a comparison, if σ_d stays ``sd`` and Δ stays ``mean``:
    the fewest extra seeds after which the interval's half-width is below max(|Δ̂|, δ − |Δ̂|) (then it
    excludes 0, or fits inside ±δ). None when unknown (fewer than 2 seeds, no spread) or beyond
    ``limit``."""
    if n < 2 or not (math.isfinite(sd) and sd > 0 and math.isfinite(mean)):
        return None
    target = max(abs(mean), delta - abs(mean))
    lo, hi = n + 1, n + 1
    while multiplier(hi, alpha, g) * sd / math.sqrt(hi) >= target:
        lo, hi = hi, hi * 2
        if hi > n + limit:
            return None
    while lo < hi:  # the half-width shrinks with n: bisect for the first n below the target
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if multiplier(mid, alpha, g) * sd / math.sqrt(mid) >= target else (lo, mid)
    return lo - n


@dataclass(frozen=True)
class Assessment:
    """One arm against the reference after ``n`` seed pairs (in seed order)."""

    n: int
    mean: float  # Δ̂, points (arm − reference)
    sd: float  # σ̂_d
    low: float  # the intersected confidence sequence at level alpha / k
    high: float
    level: float  # alpha / k
    outcome: str
    closed_at: int | None  # the n at which the arm first closed
    more_seeds: int | None  # for an open or unresolved arm: ≈ seeds that would settle it

    @property
    def closed(self) -> bool:
        return self.outcome in CLOSED

    def interval(self) -> str:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return "(−∞, ∞)"
        return f"[{self.low:+.2f}, {self.high:+.2f}]"

    def reason(self) -> str:
        """What decided the arm, or what it still lacks, in words."""
        at = f" at n = {self.closed_at}" if self.closed_at and self.closed_at != self.n else ""
        if self.outcome in (BETTER, WORSE):
            return f"the {1 - self.level:.4g} sequence excludes 0{at}"
        if self.outcome == ALIKE:
            return f"the sequence lies inside ±δ{at}"
        if self.outcome == WITHIN:
            return f"the sequence excludes 0 and lies inside ±δ{at}"
        more = ("; no spread estimate yet" if self.more_seeds is None and self.n < 2 else
                f"; ≈ {self.more_seeds} more seed{'s' if self.more_seeds != 1 else ''} would settle it"
                if self.more_seeds is not None else "")
        if self.outcome == UNRESOLVED:
            return f"cap reached: Δ ∈ {self.interval()}{more}"
        return f"Δ ∈ {self.interval()}{more}"


def assess(d: Sequence[float], design: Design, k: int = 1, resolution: float = 0.0,
           capped: bool | None = None) -> Assessment:
    """The state of one arm from its paired differences ``d`` in seed order.

    ``resolution``: one test image in points (a smaller |Δ̂| is never a difference); ``capped``:
    whether the arm can get no more seeds (default: n ≥ the design's cap)."""
    d = np.asarray(d, float)
    n = len(d)
    alpha = design.level(k)
    if n == 0:
        return Assessment(0, math.nan, math.nan, -math.inf, math.inf, alpha, OPEN, None, None)
    lo, hi = running_cs(d, alpha, design.g)
    means = np.cumsum(d) / np.arange(1, n + 1)
    closed_at, state = None, OPEN
    for i in range(design.min_seeds - 1, n):  # no arm closes before every arm has min_seeds
        state = outcome(lo[i], hi[i], means[i], design.delta, resolution)
        if state != OPEN:
            closed_at = i + 1
            break
    mean, sd = float(means[-1]), float(d.std(ddof=1)) if n >= 2 else math.nan
    if closed_at is not None:  # final; the later seeds only refine it (better -> within ±δ)
        state = outcome(lo[-1], hi[-1], mean, design.delta, resolution)
        if state == OPEN:  # |Δ̂| fell below one image after the verdict: keep the verdict reached
            state = outcome(lo[closed_at - 1], hi[closed_at - 1], means[closed_at - 1], design.delta, resolution)
        more = None
    else:
        more = seeds_to_settle(n, mean, sd, alpha, design.g, design.delta)
        if capped if capped is not None else n >= design.max_seeds:
            state = UNRESOLVED
    return Assessment(n, mean, sd, float(lo[-1]), float(hi[-1]), alpha, state, closed_at, more)


#: The design a study's sequential sweep declares when it starts, per preset (α, δ in points of
#: test error, g, seeds before any arm closes, the cap). ``standard`` is the suite's default design
#: (g = 1, robust from about 10 seeds on); the small presets use a larger g, which gives a finite
#: interval after 3-4 seeds, where their large effects (the softmax gate) are decided.
DESIGNS: dict[str, Design] = {
    "smoke": Design(g=50.0, min_seeds=2, max_seeds=4),
    "quick": Design(g=50.0, min_seeds=3, max_seeds=4),
    "standard": Design(),
    "full": Design(),
}


def default_design(preset: str) -> Design:
    return DESIGNS.get(preset, Design())


def design_of(meta: Mapping[str, Any] | None, preset: str) -> tuple[Design, bool]:
    """The design a study declared for ``preset`` in its study.json (``sequential``: preset ->
    design), and whether it was declared; else the preset's default and False."""
    got = ((meta or {}).get("sequential") or {}).get(preset)
    return (Design.from_dict(got), True) if isinstance(got, Mapping) else (default_design(preset), False)


# ---------------------------------------------------------------------------------------------
# Operating characteristics by simulation (no training: synthetic paired differences)
# ---------------------------------------------------------------------------------------------
def simulate(mu: float, sigma: float, design: Design, *, k: int = 1, studies: int = 4000,
             resolution: float = 0.0, seed: int = 0) -> dict[str, float]:
    """Run ``studies`` sequential comparisons with true difference ``mu`` and σ_d ``sigma``, each
    checked after every seed from ``min_seeds`` to ``max_seeds`` by the rules of :func:`assess`,
    stopping at the first verdict. Returns the share ending in each outcome, the coverage (the true
    Δ inside the interval when the comparison stops) and the mean seeds used."""
    rng = np.random.default_rng(seed)
    n_max = design.max_seeds
    d = rng.normal(mu, sigma, size=(studies, n_max))
    lo, hi = running_cs(d, design.level(k), design.g)
    means = np.cumsum(d, axis=1) / np.arange(1, n_max + 1)
    inside = (-design.delta < lo) & (hi < design.delta)
    differs = ((lo > 0) | (hi < 0)) & (np.abs(means) >= resolution - 1e-12)
    closed = inside | differs
    closed[:, : design.min_seeds - 1] = False
    any_closed = closed.any(axis=1)
    stop = np.where(any_closed, closed.argmax(axis=1), n_max - 1)
    rows = np.arange(studies)
    lo_s, hi_s, in_s, dif_s = lo[rows, stop], hi[rows, stop], inside[rows, stop], differs[rows, stop]
    return {
        "mu": mu, "sigma": sigma, "studies": studies,
        "different": float((dif_s & any_closed).mean()),  # better, worse or within ±δ
        "alike": float((in_s & ~dif_s & any_closed).mean()),
        "within": float((in_s & dif_s & any_closed).mean()),
        "unresolved": float((~any_closed).mean()),
        "coverage": float(((lo_s <= mu) & (mu <= hi_s)).mean()),
        "seeds": float((stop + 1).mean()),
    }


def fixed_n_seeds(effect: float, sigma: float, alpha: float, power: float = 0.8) -> int:
    """Seeds a fixed-n paired t-test needs to detect ``effect`` with ``power`` (two-sided ``alpha``),
    by the noncentral t; the design the sequential one is set against."""
    from scipy import stats  # only for this comparison

    for n in range(3, 100_000):
        df, nc = n - 1, effect / sigma * math.sqrt(n)
        crit = stats.t.ppf(1 - alpha / 2, df)
        if stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc) >= power:
            return n
    raise ValueError("effect too small for any n")
