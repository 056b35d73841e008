"""``senet sweep STUDY --until-resolved``: seeds added where they decide something.

The study runs in seed blocks: every arm gets the design's ``min_seeds`` seeds; after that a block
``s`` holds the arms of every comparison still open. The comparisons are the report's (each arm
against the reference, at level α/k for the study's k arms) and the findings' (the paper's claims
about pairs of this study's arms, :mod:`senet.claims`, at α/k_f for the k_f claims of a finding).
After each trial they are re-assessed from their seed pairs in seed order
(:func:`senet.sequential.assess`): a comparison whose confidence sequence decides it closes, an arm
that no open comparison reads gets no more seeds, and the sweep ends when every comparison is
closed or has reached the cap. ``aims``: ``report`` (the arms against the reference only),
``findings`` (the claims only; an arm no claim reads stops after the first seeds) or both. The sequence is valid at any n and under any stopping,
so trials already running when an arm closes (at most the concurrency) only narrow it.

:class:`SeedSequencer` is a Ray Tune searcher (``suggest`` / ``on_trial_complete``, run under a
``ConcurrencyLimiter``), so it runs the same on a cluster. Its results come from the study's rows
(its ``runs.parquet`` and the trial folders the table lacks, read, not written:
:class:`ablations.collect.StudyRows`) and from the trials it sees complete; a restored one reads
the rows again, so after a SIGKILL a recorded (configuration, seed) is never trained twice. The Tune side is
:mod:`ablations.seed_searcher`; this module imports no Ray.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from senet.claims import settles
from senet.errors import UserError
from senet.records import trial_index
from senet.sequential import OPEN, UNRESOLVED, Assessment, Design, assess

METRIC = "test_top1_err"


Key = tuple[str, int]  # (arm, seed)
AIMS = ("both", "report", "findings")


class SeedSequencer:
    """The seed blocks of one study; the Tune searcher (:func:`searcher`) wraps it.

    ``cells``: (arm, seed) -> the trial's parameters, for every trial the sweep may train (up to
    the cap); ``table``: the study's runs.parquet, or a callable that returns its rows, whose
    finished rows are the known results (``known``: those rows as the caller has just read them,
    taken at first instead of ``table``);
    ``k``: the comparisons sharing α, the study's arms less the reference (default: these arms'),
    so a sweep of some arms (``--arms``) closes an arm exactly when the study's report does."""

    def __init__(self, arms: list[str], reference: str, design: Design, cells: Mapping[Key, dict],
                 table: Path | None = None, ids: Mapping[tuple[str, int], str] | None = None,
                 metric: str = METRIC, resolution: float = 0.0, k: int | None = None,
                 claims: Iterable[tuple[str, list[tuple[str, str, str]]]] = (), aim: str = "both", out=None,
                 known: Iterable[Mapping[str, Any]] | None = None):
        if reference not in arms:
            raise UserError(f"the reference arm {reference!r} is not one of the arms ({', '.join(arms)})")
        self.arms, self.reference, self.design = list(arms), reference, design
        self.others = [a for a in self.arms if a != reference]
        self.k = len(self.others) if k is None else int(k)
        if self.k < len(self.others):
            raise UserError(f"k = {self.k} comparisons, fewer than the {len(self.others)} arms compared")
        if aim not in AIMS:
            raise UserError(f"unknown aim {aim!r}; choose one of: {', '.join(AIMS)}")
        self.aim = aim
        # the findings' claims on these arms: (arm, vs, expect, k_f, finding)
        self.claims = [(a, v, e, len(got), key) for key, got in claims for a, v, e in got
                       if a in self.arms and v in self.arms] if aim != "report" else []
        self.claims_closed: dict[tuple[str, str], Assessment] = {}
        self.cells = dict(cells)
        self.table = table
        self.ids = dict(ids or {})  # (config_id, seed) -> arm: how a table row is one of ours
        self.metric = metric
        self.resolution = resolution
        self.values: dict[Key, float] = {}  # finished: the metric, or NaN (diverged, failed)
        self.live: dict[str, Key] = {}  # trial id -> the cell it trains
        self.closed: dict[str, Assessment] = {}
        self._out = out
        self._quiet = True  # what the table already decided is shown by the state lines, not announced
        if known is None:
            self.load_table()
        else:  # the rows the caller has just read: not read again
            self.know(known)
        self._quiet = False

    # -- state -----------------------------------------------------------------------------------
    def load_table(self) -> None:
        """Take every finished row of the study's table as a known result."""
        if self.table is None:
            return
        df = self.table() if callable(self.table) else trial_index.read_table(self.table)[0]
        if df is not None and not df.empty:
            self.know(trial_index.with_ids(df).to_dict("records"))

    def know(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for r in rows:
            if r.get("status") not in trial_index.FINISHED:
                continue
            arm = self.ids.get(trial_index.key_of(r))
            if arm is None:
                continue
            self._record((arm, int(r["seed"])), r)
        self.update()

    def _record(self, key: Key, row: Mapping[str, Any]) -> None:
        """A finished trial's result (a table row or a final report): its metric, NaN if it did
        not complete; its test-set size sets the resolution."""
        v = row.get(self.metric)
        ok = row.get("status", "completed") == "completed" and v is not None and math.isfinite(float(v))
        self.values[key] = float(v) if ok else math.nan
        if not self.resolution and row.get("num_test"):
            self.resolution = 100.0 / float(row["num_test"])

    def pairs(self, arm: str, vs: str | None = None) -> list[float]:
        """The arm's differences from ``vs`` (default the reference), seed by seed, up to the first
        seed whose pair is not complete yet (a pair that will never be, a diverged or failed trial,
        is skipped)."""
        vs = self.reference if vs is None else vs
        out = []
        for s in range(self.design.max_seeds):
            a, r = self.values.get((arm, s)), self.values.get((vs, s))
            if a is None or r is None:
                if self._pending(arm, s) or self._pending(vs, s):
                    break
                continue
            if math.isfinite(a) and math.isfinite(r):
                out.append(a - r)
        return out

    def _pending(self, arm: str, seed: int) -> bool:
        """Whether (arm, seed) may still get a result: running, or still to be trained."""
        key = (arm, seed)
        return key not in self.values and (key in self.live.values() or key in self.cells)

    def assess(self, arm: str, vs: str | None = None, k: int | None = None) -> Assessment:
        vs = self.reference if vs is None else vs
        capped = not any(self._pending(arm, s) or self._pending(vs, s) for s in range(self.design.max_seeds)
                         if (arm, s) not in self.values or (vs, s) not in self.values)
        return assess(self.pairs(arm, vs), self.design, k=self.k if k is None else k, resolution=self.resolution,
                      capped=capped)

    def _claim_state(self, claim) -> tuple[Assessment, bool]:
        """A claim's assessment and whether it decides the claim (:func:`senet.claims.settles`)."""
        arm, vs, expect, k, _ = claim
        a = self.assess(arm, vs, k)
        return a, settles(expect, a.outcome, a.low, a.high, self.design.delta)

    def update(self) -> list[tuple[str, Assessment]]:
        """Re-assess the open comparisons; return the arms that closed now (and say which claims did)."""
        now, claims_now = [], []
        for arm in self.others:
            if arm in self.closed:
                continue
            a = self.assess(arm)
            if a.closed:
                self.closed[arm] = a
                now.append((arm, a))
        for c in self.claims:
            if (c[0], c[1]) in self.claims_closed:
                continue
            a, decided = self._claim_state(c)
            if decided:
                self.claims_closed[(c[0], c[1])] = a
                claims_now.append((c, a))
        if not getattr(self, "_quiet", False):
            for arm, a in now:
                self.say(f"closed {arm}: {a.outcome} after {a.n} seed pairs, Δ {a.mean:+.2f} pp, CS {a.interval()} "
                         f"({a.reason()})")
            for (arm, vs, _, _, key), a in claims_now:
                self.say(f"settled {arm} − {vs} ({key}): {a.outcome} after {a.n} seed pairs, Δ {a.mean:+.2f} pp, "
                         f"CS {a.interval()}")
        return now

    def open_arms(self) -> set[str]:
        """The arms an open comparison still reads."""
        out = set()
        if self.aim != "findings":
            for arm in self.others:
                if arm not in self.closed:
                    out |= {arm, self.reference}
        for arm, vs, *_ in self.claims:
            if (arm, vs) not in self.claims_closed:
                out |= {arm, vs}
        return out

    def needed(self, arm: str, seed: int) -> bool:
        if seed < self.design.min_seeds:
            return True
        return arm in self.open_arms()

    def next_cell(self) -> Key | None:
        """The lowest seed block's first cell that is needed, not known, not running and trainable."""
        running = set(self.live.values())
        for s in range(self.design.max_seeds):
            for arm in [self.reference, *self.others]:
                key = (arm, s)
                if key in self.values or key in running or key not in self.cells:
                    continue
                if self.needed(arm, s):
                    return key
        return None

    def done(self) -> bool:
        return not self.live and self.next_cell() is None

    def states(self) -> list[tuple[str, Assessment]]:
        return [(arm, self.closed.get(arm) or self.assess(arm)) for arm in self.others]

    def claim_states(self) -> list[tuple[tuple, Assessment, bool]]:
        """Each claim, its assessment and whether it is decided."""
        out = []
        for c in self.claims:
            got = self.claims_closed.get((c[0], c[1]))
            out.append((c, got, True) if got is not None else (c, *self._claim_state(c)))
        return out

    def projection(self) -> dict[str, int]:
        """arm -> the seeds it would have once every open comparison settles, if each Δ̂ and σ̂_d
        stays as it is now: an arm's first ``min_seeds`` always, and no more for a comparison with no
        spread estimate yet (fewer than 2 pairs); one that would not settle by the cap runs to it."""
        cap, first = self.design.max_seeds, self.design.min_seeds
        want = {arm: first for arm in self.arms}

        def to(arm: str, vs: str, a: Assessment) -> None:
            if a.outcome != OPEN or a.n < 2:
                return
            n = cap if a.more_seeds is None else min(cap, max(first, a.n + a.more_seeds))
            for x in (arm, vs):
                want[x] = max(want.get(x, 0), n)

        if self.aim != "findings":
            for arm, a in self.states():
                to(arm, self.reference, a)
        for (arm, vs, *_), a, decided in self.claim_states():
            if not decided:
                to(arm, vs, a)
        return want

    def projected_trials(self, want: Mapping[str, int] | None = None) -> int:
        """How many more trials ``want`` (default :meth:`projection`) asks for, beyond the seeds each
        arm has."""
        have: dict[str, int] = {}
        for arm, _ in self.values:
            have[arm] = have.get(arm, 0) + 1
        want = self.projection() if want is None else want
        return sum(max(0, n - have.get(arm, 0)) for arm, n in want.items())

    # -- the searcher's calls ----------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | None | str:
        key = self.next_cell()
        if key is None:
            return "FINISHED" if not self.live else None
        self.live[trial_id] = key
        return dict(self.cells[key])

    def complete(self, trial_id: str, result: Mapping[str, Any] | None = None, error: bool = False) -> None:
        key = self.live.pop(trial_id, None)
        if key is None:
            return
        if key not in self.values:
            if result and result.get("final"):
                self._record(key, result)
            elif error:
                self.values[key] = math.nan  # failed after its retries: this seed gives the arm no pair
            else:  # stopped without a final result (the sweep was interrupted): the table knows
                self.load_table()
        self.update()

    def say(self, line: str) -> None:
        print(f"[until-resolved] {line}", file=self._out or sys.stdout, flush=True)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_out"] = None  # a stream does not pickle; the driver's stdout is used after a restore
        return state


def for_plan(p, todo, out=None, known: Iterable[Mapping[str, Any]] | None = None) -> SeedSequencer:
    """The seed blocks of a sequential sweep's plan: its arms and design, ``todo`` (the cells no
    table records) to train, its study's rows (:class:`ablations.collect.StudyRows`) as the known
    results (``known``: those rows as the sweep planned from them), α shared by all the study's
    comparisons (also when ``--arms`` trains some), the findings' claims on its arms."""
    from senet.claims import study_claims

    from .collect import StudyRows

    every = [a.label for a in p.study.resolve_arms(p.base)]
    return SeedSequencer([a.label for a in p.arms], p.study.reference_arm, p.design,
                         {(c.arm, c.seed): c.params() for c in todo}, table=StudyRows.of(p),
                         ids={c.key: c.arm for c in p.cells}, k=len(every) - 1,
                         claims=study_claims(p.study.name, every), aim=p.aim, out=out, known=known)


def state_lines(seq: SeedSequencer) -> list[str]:
    """One line per arm: n, Δ̂, the interval, the state and why."""
    lines = []
    for arm, a in seq.states():
        delta = "–" if not math.isfinite(a.mean) else f"{a.mean:+.2f}"
        state = a.outcome if a.outcome not in (OPEN, UNRESOLVED) else f"{a.outcome} (n = {a.n})"
        lines.append(f"  {arm:<14} n {a.n:>2}  Δ {delta:>6} pp  CS {a.interval():<18} {state}: {a.reason()}")
    for (arm, vs, _, k, key), a, decided in seq.claim_states():
        delta = "–" if not math.isfinite(a.mean) else f"{a.mean:+.2f}"
        state = "settled" if decided else f"open (n = {a.n})"
        lines.append(f"  {arm + ' − ' + vs:<14} n {a.n:>2}  Δ {delta:>6} pp  CS {a.interval():<18} {state}: "
                     f"{key}, {a.outcome} at α/{k}")
    return lines
