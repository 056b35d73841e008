"""Run a study on Ray Tune: every arm × seed (× nuisance value) as one trial, FIFO, to the end.

A sweep is planned before Ray starts (:mod:`ablations.plan`: the trials, and which of them any
study's table already records, :mod:`senet.records.trial_index`), the trials no table records are
trained as a new Tune experiment (:mod:`ablations.launch`, on the Ray that :mod:`ablations.cluster`
starts or joins; ``--resume`` continues the latest one, :mod:`ablations.sweep_resume`), and the
study's table is written once, when they end (:mod:`ablations.collect`). The plan reads what is
recorded without writing it: every study's table, and this study's trial folders that its table
lacks (a launch whose driver was killed before it collected them, :func:`collect.known_table`).
Each distinct trial is trained once: asking for 5 seeds after 3 trains the 2 new ones, and an
interrupted sweep run again trains what it lacks.

Layout on disk (:class:`senet.records.layout.StudyPaths`)::

    <results>/<study>/study.json              the study's arms, axis, paper numbers; every launch's
                                              preset, seeds and code commit; the rows recorded
    <results>/<study>/ray/<study>-<preset>[-n]/ Tune's storage of launch n: trial folders, checkpoints
    <results>/<study>/runs.parquet, runs.csv  one row per trial (senet collect): what git keeps

``--storage`` moves Tune's storage to another folder or to an object store (``s3://BUCKET/PREFIX``,
:mod:`ablations.tune_storage`), which the sweep reads through a local copy of its small files.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from senet.errors import UserError
from senet.records import trial_index
from senet.records.study_file import declare_design, record_launch

from .bf16_note import say_emulated_bf16
from .cluster import check_address, connect
from .collect import collect, known_table
from .launch import check_data, cluster_gpus_per_trial, fit_experiment, run_options
from .plan import Cell, Plan, SweepOptions, Triage, plan, reused_rows, study_meta, triage
from .sequencer import SeedSequencer, for_plan, state_lines
from .studies import study_names
from .sweep_resume import interrupted_launches, resume_command, resume_plan


@dataclass(frozen=True)
class SweepOutcome:
    """What a sweep left: finished trials (completed or diverged) and a line for each that did not."""

    results_dir: Path
    total: int
    finished: int
    unfinished: tuple[str, ...]
    resume_command: str
    trained: int = 0  # trials this launch ran on Ray (or resumed)
    reused: int = 0  # rows copied from other studies' tables
    recorded: int = 0  # trials the study's table already held

    @property
    def ok(self) -> bool:
        return self.finished == self.total and not self.unfinished


def run_sweep(opts: SweepOptions, out=None, err=None) -> SweepOutcome:
    """Run (or with ``resume`` continue) a study: train the trials no table records, copy those another
    study's table records, collect; say what did not finish."""
    out = out or sys.stdout
    err = err or sys.stderr
    p = plan(opts)
    exp = p.experiment_path
    has_state = exp.is_dir() and any(exp.glob("experiment_state-*.json"))
    if opts.resume and not has_state:
        raise UserError(f"nothing to resume: no {p.study.name}-{p.preset} sweep in {p.tune_storage}")
    if opts.resume:
        p = resume_plan(p, opts)
    run = run_options(opts, p)
    name = p.study.name
    known = known_table(name, p.paths.results, p.tune_storage)  # read only: the one collect ends the sweep
    found = trial_index.recorded(p.paths.results, err, known={name: known})
    t = triage(p, found)
    say_emulated_bf16(p, opts, opts.resume or bool(t.todo), err)  # what bf16 costs on a CPU without it
    seq = _sequencer(p, t, known, out) if p.design is not None else None
    if opts.dry_run:
        if seq is not None:
            return _say_sequential_plan(p, t, seq, out, trial_s=_median_trial_s(known))
        _say_plan(p, t, out, dry=True)
        return SweepOutcome(p.results_dir, len(p.cells), len(t.recorded) + len(t.reused), (), "",
                            trained=len(t.todo), reused=len(t.reused), recorded=len(t.recorded))

    launching = opts.resume or bool(t.todo)
    if seq is not None:
        note = declare_design(p.paths, p.preset, p.design.to_dict())
        if note:
            print(f"[{name}] {note}", file=err, flush=True)
        launching = opts.resume or seq.next_cell() is not None
    meta = study_meta(p)
    meta.setdefault("run_options", dict(run))
    meta.setdefault("trials", {"planned": len(p.cells), "recorded": len(t.recorded),
                               "reused": len(t.reused), "trained": len(t.todo)})
    if not launching:
        meta["experiment"] = None  # no Tune experiment of this name exists
    if launching or t.reused or not p.paths.study_json.is_file():
        record_launch(p.paths, meta, launch=launching)  # a sweep with nothing to do changes nothing
    copied = reused_rows(p, meta, t.reused)  # recorded by the collect that ends the sweep
    if seq is None:
        _say_plan(p, t, out)
    else:
        _say_sequential_plan(p, t, seq, out, dry=False, trial_s=_median_trial_s(known))
    stale = interrupted_launches(known, t.todo)
    if stale and not opts.resume:
        print(f"[{name}] note: {', '.join(stale)} left some of these unfinished; they start over in "
              f"{p.experiment} (`--resume` continues {stale[-1]} from its checkpoints instead)", file=err, flush=True)

    wall, trained = 0.0, 0
    if launching:
        wall, trained = _train(p, opts, run, meta, t.todo, seq, out, err)

    df = collect(name, opts.results, storage=p.tune_storage, out=err, ended=(p.experiment,), extra=copied)
    started = None
    if seq is not None:  # the cells the sequencer asked for, and those recorded before
        seq.load_table()
        started = _started(p, df, t)
        _say_sequential_end(p, seq, out)
    outcome = _outcome(p, df, opts, trained=trained, reused=len(t.reused), recorded=len(t.recorded),
                       planned=started)
    print(f"[{name}] {outcome.finished}/{outcome.total} trials finished ({trained} trained in {wall:.0f} s, "
          f"{outcome.reused} reused from other studies, {outcome.recorded} already recorded); results in "
          f"{p.paths.runs_parquet}", file=out, flush=True)
    if not outcome.ok:
        shown = outcome.unfinished[:10]
        more = f"; and {len(outcome.unfinished) - 10} more" if len(outcome.unfinished) > 10 else ""
        print(f"[{name}] not finished: {'; '.join(shown)}{more}", file=err, flush=True)
        print(f"[{name}] continue with: {outcome.resume_command}", file=err, flush=True)
    return outcome


def _train(p: Plan, opts: SweepOptions, run: dict, meta: dict, todo: tuple[Cell, ...],
           seq: SeedSequencer | None, out, err) -> tuple[float, int]:
    """Check the address and the data, start or join Ray, decide the GPUs per trial where the command
    line left them to the cluster (recorded in study.json, which --resume reads), train; return (wall
    time, trials trained)."""
    address = opts.address or os.environ.get("RAY_ADDRESS") or None
    if address:
        check_address(address)
    try:
        check_data(p)
    except UserError as e:
        if not address:
            raise
        # the trials read the data on the cluster's nodes, which may hold it where this machine does not
        print(f"[{p.study.name}] note: this machine cannot read the data ({e}); the cluster's nodes must",
              file=err, flush=True)
    started = connect(address, verbose=opts.verbose, checked=True)
    try:
        if run["gpus_per_trial"] is None:
            run["gpus_per_trial"] = cluster_gpus_per_trial()
            if not opts.resume:  # a resume keeps the trials' resources as they were started
                meta["run_options"] = {**meta["run_options"], "gpus_per_trial": run["gpus_per_trial"]}
                record_launch(p.paths, meta)
        return fit_experiment(p, opts, run, todo, out, seq)
    finally:
        if started:
            import ray  # here, not at the top: planning and dry runs never load Ray

            ray.shutdown()


def _say_plan(p: Plan, t: Triage, out, dry: bool = False) -> None:
    n = len(t.recorded) + len(t.reused) + len(t.earlier) + len(t.todo)
    shape = (f"{len(p.arms)} arms × {p.seeds} seeds"
             + "".join(f" × {len(v)} {k}" for k, v in p.study.nuisance.items()))
    sources = sorted({trial_index.origin(row).split("/")[0] for _, row in t.reused})
    parts = [f"{len(t.recorded)} recorded", f"{len(t.reused)} reused" + (f" from {', '.join(sources)}" if sources else "")]
    if t.earlier:
        parts.append(f"{len(t.earlier)} trained by an earlier study of this command")
    what = "would train" if dry else "to train"
    print(f"[{p.study.name}] {n} trials ({shape}), preset {p.preset}: {', '.join(parts)}, "
          f"{len(t.todo)} {what}", file=out, flush=True)


# ---------------------------------------------------------------------------------------------
# Sequential sweeps (--until-resolved)
# ---------------------------------------------------------------------------------------------
def _sequencer(p: Plan, t: Triage, known: pd.DataFrame | None, out=None) -> SeedSequencer:
    """The study's seed blocks as its rows record them (``known``, as the plan read them; the reused
    rows counted in)."""
    rows = known.to_dict("records") if known is not None else []  # ids set by collect.known_table
    seq = for_plan(p, t.todo, out, known=rows)
    if t.reused:
        seq.know({**row, "arm": c.arm} for c, row in t.reused)
    return seq


def _median_trial_s(df: pd.DataFrame | None) -> float | None:
    """The median wall time of the completed trials a study's rows record (None where none did)."""
    if df is None or df.empty or "wall_time_s" not in df:
        return None
    wall = pd.to_numeric(df.loc[df["status"] == "completed", "wall_time_s"], errors="coerce").dropna()
    return float(wall.median()) if len(wall) else None


def _say_projection(p: Plan, seq: SeedSequencer, trial_s: float | None, out) -> None:
    """≈ the trials (and trial-hours) that would settle every open comparison if Δ̂ and σ̂_d stay."""
    want = seq.projection()
    more = seq.projected_trials(want)
    if not more:
        return
    reach = ", ".join(f"{arm} {n}" for arm, n in want.items() if n > seq.design.min_seeds)
    hours = (f", ≈ {more * trial_s / 3600:.1f} trial-hours at the {trial_s / 60:.0f} min a completed trial "
             "took (median of those recorded, on the machines that trained them)" if trial_s else "")
    print(f"[{p.study.name}] if every Δ̂ and σ̂_d stay as they are: ≈ {more} more trials (seeds per arm: "
          f"{reach or 'the first ' + str(seq.design.min_seeds)}){hours}", file=out, flush=True)


def _say_sequential_plan(p: Plan, t: Triage, seq: SeedSequencer, out, dry: bool = True,
                         trial_s: float | None = None):
    d = p.design
    known = len(seq.values)
    nxt = seq.next_cell()
    what = "would train" if dry else "to train"
    block = (f"next: seed block {nxt[1]} ({sum(1 for a in p.arms if seq.needed(a.label, nxt[1]))} trials) {what}"
             if nxt else "nothing left to train")
    print(f"[{p.study.name}] until resolved, preset {p.preset}: {len(p.arms)} arms, α {d.alpha:g} (α/{seq.k} "
          f"per arm), δ {d.delta:g} pp, g {d.g:g}, {d.min_seeds} seeds before any arm closes, cap {d.max_seeds} seeds; "
          f"{len(t.recorded)} recorded, {len(t.reused)} reused, {known} results known; {block}", file=out, flush=True)
    for line in state_lines(seq):
        print(line, file=out, flush=True)
    _say_projection(p, seq, trial_s, out)
    if dry:
        return SweepOutcome(p.results_dir, known, known, (), "", trained=0, reused=len(t.reused),
                            recorded=len(t.recorded))
    return None


def _say_sequential_end(p: Plan, seq: SeedSequencer, out) -> None:
    states = seq.states() if seq.aim != "findings" else []
    claims = seq.claim_states()
    closed = sum(a.closed for _, a in states) + sum(decided for *_, decided in claims)
    total = len(states) + len(claims)
    why = ("every comparison is decided" if closed == total else
           f"{total - closed} reached the cap of {p.design.max_seeds} seeds" if seq.done() else
           "stopped before every comparison was decided (run the same command again to continue)")
    what = " and ".join(x for x, n in (("arms against the reference", states), ("findings' claims", claims)) if n)
    print(f"[{p.study.name}] until resolved: {closed} of {total} comparisons ({what}) decided; {why}",
          file=out, flush=True)
    for line in state_lines(seq):
        print(line, file=out, flush=True)


def _started(p: Plan, df: pd.DataFrame, t: Triage) -> tuple[Cell, ...]:
    """The planned cells the table has any row of (started by a launch, or recorded or reused)."""
    keys = {trial_index.key_of(r) for r in trial_index.with_ids(df).to_dict("records")} if df is not None and len(df) else set()
    return tuple(c for c in p.cells if c.key in keys)


def run_sweeps(opts: SweepOptions, out=None, err=None) -> list[SweepOutcome]:
    """``senet sweep all`` or ``senet sweep a,b,c``: each study in turn, each reusing what the earlier
    ones trained (so a trial two studies share is trained once), with its wall time. A dry run
    counts the distinct trials the whole command would train."""
    out = out or sys.stdout
    err = err or sys.stderr
    names = study_names(opts.study)
    if len(names) == 1:
        return [run_sweep(opts, out, err)]
    if opts.resume:
        raise UserError("--resume continues one study's launch; name that study (senet sweep STUDY --resume)")
    outcomes = []
    if opts.dry_run and not opts.until_resolved:
        plans = [plan(replace(opts, study=n)) for n in names]
        found = trial_index.recorded(Path(opts.results).expanduser().absolute(), err,
                                     known={p.study.name: known_table(p.study.name, p.paths.results, p.tune_storage)
                                            for p in plans})
        earlier: set = set()
        for p in plans:
            t = triage(p, found, frozenset(earlier))
            _say_plan(p, t, out, dry=True)
            earlier |= {c.key for c in t.todo}
        print(f"[{','.join(names)}] {len(earlier)} distinct trials would be trained", file=out, flush=True)
        say_emulated_bf16(p, opts, bool(earlier), err, tag=",".join(names))
        return outcomes
    for n in names:
        t0 = time.time()
        outcomes.append(run_sweep(replace(opts, study=n), out, err))
        print(f"[{n}] wall time {time.time() - t0:.0f} s", file=out, flush=True)
    print(f"[{','.join(names)}] {sum(o.trained for o in outcomes)} trials trained, "
          f"{sum(o.reused for o in outcomes)} reused", file=out, flush=True)
    return outcomes


def _trial_error(exp: Path, trial_id: str) -> str:
    """The last line of a failed trial's error.txt (the exception), or ''."""
    for d in exp.glob(f"*_{trial_id}"):
        try:
            lines = [ln.strip() for ln in (d / "error.txt").read_text().splitlines() if ln.strip()]
        except OSError:
            continue
        if lines:
            return lines[-1][:200]
    return ""


def _outcome(p: Plan, df, opts: SweepOptions, *, trained: int = 0, reused: int = 0,
             recorded: int = 0, planned: tuple[Cell, ...] | None = None) -> SweepOutcome:
    """Every planned trial against the table: finished, failed (with its error) or never started."""
    planned = p.cells if planned is None else planned
    rows = {}
    for r in trial_index.with_ids(df).to_dict("records"):
        k = trial_index.key_of(r)
        if k not in rows or r["status"] in trial_index.FINISHED:
            rows[k] = r
    finished, lines, never = 0, [], 0
    for cell in planned:
        row = rows.get(cell.key)
        if row is None:
            never += 1
        elif row["status"] in trial_index.FINISHED:
            finished += 1
        elif row["status"] == "error":
            why = _trial_error(p.storage / str(row.get("experiment")), str(row.get("trial_id")))
            lines.append(f"{cell.name} failed" + (f" ({why})" if why else ""))
        else:
            lines.append(f"{cell.name} stopped before it finished")
    if never:
        lines.append(f"{never} trial(s) never started")
    return SweepOutcome(p.results_dir, len(planned), finished, tuple(lines), resume_command(opts, p),
                        trained=trained, reused=reused, recorded=recorded)
