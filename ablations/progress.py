"""The sweep's Tune callbacks: a live progress table, the checkpoint retention that resume needs, and
a ``result.json`` logger that writes each row once.

Tune's own reporter prints one row per trial and every metric; an ablation wants the table's
shape instead (one row per arm, the seeds pooled). On a terminal the table is drawn once and redrawn
in place; in a log (stdout not a terminal) each event is one appended line and the table is printed
once, at the end.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from ray import tune
from ray.air.constants import EXPR_RESULT_FILE
from ray.tune.logger import JsonLoggerCallback

from senet.records.layout import parse_jsonl

from .checkpoint_retention import prune_superseded
from .tune_storage import tune_experiment

_STATES = ("pending", "running", "done", "failed")


class SweepProgress(tune.Callback):
    def __init__(self, study: str, arms: list[str], every_s: float = 30.0, stream=None):
        self.study = study
        self.arms = list(arms)
        self.every_s = every_s
        self.stream = stream
        self.setup()

    # Tune pickles its callbacks with the experiment and restores them on --resume, so everything
    # that belongs to one run of the driver is (re)set here, which Tune calls when a run starts.
    def setup(self, **info):
        self._t0 = time.time()
        self._last = 0.0
        self._drawn = 0  # lines of the table on the terminal, to redraw it in place
        self._errors: dict[str, float] = {}  # trial id -> final test top-1 error
        self._state: dict[str, str] = {}  # trial id -> done | failed, ahead of trial.status

    @property
    def _out(self):
        return self.stream or sys.stdout

    @property
    def _live(self) -> bool:
        isatty = getattr(self._out, "isatty", None)
        return bool(isatty and isatty())

    # -- Tune hooks ------------------------------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info):
        self._state.pop(trial.trial_id, None)
        if self._live:
            self._event(trials, "")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("final"):
            err = result.get("test_top1_err")
            self._errors[trial.trial_id] = math.nan if err is None else float(err)

    # Tune calls these before it updates trial.status, so the trial's new state is taken from the
    # event itself: otherwise every line would be one trial behind.
    def on_trial_complete(self, iteration, trials, trial, **info):
        self._state[trial.trial_id] = "done"
        err = self._errors.get(trial.trial_id, math.nan)
        note = "" if math.isnan(err) else f" ({err:.2f}% test top-1 err)"
        self._event(trials, f"done: {self._name(trial)}{note}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._event(trials, f"crashed, retrying from its last checkpoint: {self._name(trial)}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._state[trial.trial_id] = "failed"
        self._event(trials, f"failed (no retries left): {self._name(trial)}")

    def on_step_end(self, iteration, trials, **info):
        if time.time() - self._last >= (1.0 if self._live else self.every_s):
            self._event(trials, "")

    def on_experiment_end(self, trials, **info):
        self._last = time.time()
        _, total = self._rows(trials)
        lines = self._table(trials, "sweep stopped" if total["pending"] or total["running"] else "sweep finished")
        if self._live:
            self._redraw(lines)
        else:
            print("\n".join(lines), file=self._out, flush=True)

    # -- rendering -------------------------------------------------------------------------------
    @staticmethod
    def _name(trial) -> str:
        return f"{trial.config.get('arm')} seed {trial.config.get('seed')}"

    def _status(self, t) -> str:
        said = self._state.get(t.trial_id)
        if said in ("done", "failed"):  # final within this run of the driver, whatever trial.status says yet
            return said
        return {"TERMINATED": "done", "ERROR": "failed", "RUNNING": "running"}.get(t.status, "pending")

    def _rows(self, trials) -> tuple[dict, dict]:
        rows = {a: {**dict.fromkeys(_STATES, 0), "errs": []} for a in self.arms}
        for t in trials:
            r = rows.setdefault(t.config.get("arm"), {**dict.fromkeys(_STATES, 0), "errs": []})
            status = self._status(t)
            r[status] += 1
            if status == "done":
                err = self._errors.get(t.trial_id, (t.last_result or {}).get("test_top1_err"))
                if err is not None and not (isinstance(err, float) and math.isnan(err)):
                    r["errs"].append(float(err))
        total = {k: sum(r[k] for r in rows.values()) for k in _STATES}
        return rows, total

    def _summary(self, total: dict, rows: dict) -> str:
        best = min(((sum(r["errs"]) / len(r["errs"]), a) for a, r in rows.items() if r["errs"]), default=None)
        return (f"trials: {total['done']} done, {total['running']} running, {total['pending']} pending, "
                f"{total['failed']} failed"
                + (f"; best so far: {best[1]} ({best[0]:.2f}% test top-1 err)" if best else ""))

    def _table(self, trials, headline: str) -> list[str]:
        rows, total = self._rows(trials)
        elapsed = time.time() - self._t0
        lines = [f"[{self.study}] {elapsed:6.0f}s  {headline}".rstrip(), "  " + self._summary(total, rows)]
        w = max([len(str(a)) for a in rows] + [3])
        lines.append(f"  {'arm':<{w}}  run  done  fail  test top-1 err (mean of done)")
        for a, r in rows.items():
            mean = f"{sum(r['errs']) / len(r['errs']):.2f}" if r["errs"] else "-"
            lines.append(f"  {a!s:<{w}}  {r['running']:>3}  {r['done']:>4}  {r['failed']:>4}  {mean}")
        return lines

    def _event(self, trials, headline: str) -> None:
        self._last = time.time()
        if self._live:
            self._redraw(self._table(trials, headline or "running"))
            return
        rows, total = self._rows(trials)
        elapsed = time.time() - self._t0
        what = f"{headline}; " if headline else ""
        print(f"[{self.study}] {elapsed:6.0f}s  {what}{self._summary(total, rows)}", file=self._out, flush=True)

    def _redraw(self, lines: list[str]) -> None:
        # cursor to the start of the table's first line, clear to the end of the screen, draw
        up = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
        self._out.write(up + "\n".join(lines) + "\n")
        self._out.flush()
        self._drawn = len(lines)


class CheckpointPruner(tune.Callback):
    """Delete a trial's checkpoints once the experiment state on storage names a newer one.

    Tune itself keeps every checkpoint (``num_to_keep=None``): its own deletion runs ahead of the
    experiment-state snapshot that ``--resume`` reads (see :mod:`ablations.checkpoint_retention`). The
    experiment folder is taken from the trials, so a sweep moved to another folder and resumed
    there prunes the right one. In an object store each round lists the experiment, so it runs less
    often there, and a round the store did not answer is left to the next.
    """

    #: Seconds between rounds in an object store (a class attribute: Tune restores pickled callbacks).
    STORE_EVERY_S = 10.0

    def __init__(self, every_s: float = 2.0):
        self.every_s = every_s
        self._last = 0.0

    def setup(self, **info):
        self._last = 0.0

    def on_step_end(self, iteration, trials, **info):
        if not trials:
            return
        exp = tune_experiment(trials[0].storage)
        now = time.monotonic()
        if now - self._last < (self.every_s if isinstance(exp, Path) else max(self.every_s, self.STORE_EVERY_S)):
            return
        self._last = now
        try:
            prune_superseded(exp)
        except OSError:
            if isinstance(exp, Path):
                raise


class OnceJsonLogger(JsonLoggerCallback):
    """Tune's ``result.json`` logger that writes each epoch's row, and the final row, of a trial once.

    A trial restored after a SIGKILL of the driver reports the epochs its checkpoint holds but
    ``result.json`` may lack (:func:`ablations.trainable.continuation`). Which rows the file holds
    is known only here, in the driver: on a cluster, whose Ray session outlives a killed driver, the
    driver's local copy of the file keeps the rows logged after the last upload to storage, which
    the trial cannot see. So the rows already in the file are read when the trial (re)starts and a
    row for an epoch (or a final row) the file holds is not written again.
    """

    def __init__(self):
        super().__init__()
        self._seen: dict = {}

    @staticmethod
    def _key(result: dict):
        if result.get("final"):
            return ("final",)
        return ("epoch", int(result["epoch"])) if result.get("epoch") is not None else None

    def log_trial_start(self, trial):
        super().log_trial_start(trial)
        rows = parse_jsonl(_read_text(Path(trial.local_path) / EXPR_RESULT_FILE))
        self._seen[trial] = {k for k in map(self._key, rows) if k is not None}

    def log_trial_result(self, iteration, trial, result):
        key = self._key(result)
        seen = self._seen.setdefault(trial, set())
        if key is not None and key in seen:
            return
        if key is not None:
            seen.add(key)
        super().log_trial_result(iteration, trial, result)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
