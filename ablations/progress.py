"""A live progress table for a sweep: trials running, done, failed per arm, and the best so far.

Tune's own reporter prints one row per trial and every metric; an ablation wants the table's
shape instead (one row per arm, the seeds pooled), so this callback prints that, on every
finished or failed trial and at most every ``every_s`` seconds otherwise.
"""
from __future__ import annotations

import math
import sys
import time

from ray import tune


class SweepProgress(tune.Callback):
    def __init__(self, study: str, arms: list[str], every_s: float = 30.0, stream=None):
        self.study = study
        self.arms = list(arms)
        self.every_s = every_s
        self.stream = stream
        self._last = 0.0
        self._errors: dict[str, float] = {}  # trial id -> final test top-1 error
        self._t0 = time.time()

    # -- Tune hooks ------------------------------------------------------------------------------
    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("final"):
            err = result.get("test_top1_err")
            self._errors[trial.trial_id] = math.nan if err is None else float(err)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._print(trials, f"done: {self._name(trial)}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._print(trials, f"crashed, retrying from its last checkpoint: {self._name(trial)}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._print(trials, f"failed (no retries left): {self._name(trial)}")

    def on_step_end(self, iteration, trials, **info):
        if time.time() - self._last >= self.every_s:
            self._print(trials, "")

    def on_experiment_end(self, trials, **info):
        self._print(trials, "sweep finished")

    # -- rendering -------------------------------------------------------------------------------
    @staticmethod
    def _name(trial) -> str:
        return f"{trial.config.get('arm')} seed {trial.config.get('seed')}"

    def _print(self, trials, headline: str) -> None:
        self._last = time.time()
        out = self.stream or sys.stdout
        rows = {a: {"pending": 0, "running": 0, "done": 0, "failed": 0, "errs": []} for a in self.arms}
        for t in trials:
            r = rows.setdefault(t.config.get("arm"), {"pending": 0, "running": 0, "done": 0, "failed": 0,
                                                      "errs": []})
            status = t.status
            if status == "TERMINATED":
                r["done"] += 1
                err = self._errors.get(t.trial_id, (t.last_result or {}).get("test_top1_err"))
                if err is not None and not (isinstance(err, float) and math.isnan(err)):
                    r["errs"].append(float(err))
            elif status == "ERROR":
                r["failed"] += 1
            elif status == "RUNNING":
                r["running"] += 1
            else:
                r["pending"] += 1
        total = {k: sum(r[k] for r in rows.values()) for k in ("pending", "running", "done", "failed")}
        best = min(((sum(r["errs"]) / len(r["errs"]), a) for a, r in rows.items() if r["errs"]),
                   default=None)
        elapsed = time.time() - self._t0
        lines = [f"[{self.study}] {elapsed:6.0f}s  {headline}".rstrip(),
                 f"  trials: {total['done']} done, {total['running']} running, {total['pending']} pending, "
                 f"{total['failed']} failed"
                 + (f"; best so far: {best[1]} ({best[0]:.2f}% test top-1 err)" if best else "")]
        w = max([len(str(a)) for a in rows] + [3])
        lines.append(f"  {'arm':<{w}}  run  done  fail  test top-1 err (mean of done)")
        for a, r in rows.items():
            mean = f"{sum(r['errs']) / len(r['errs']):.2f}" if r["errs"] else "-"
            lines.append(f"  {a!s:<{w}}  {r['running']:>3}  {r['done']:>4}  {r['failed']:>4}  {mean}")
        print("\n".join(lines), file=out, flush=True)
