"""SIGKILL a sweep's driver at random points, resume it each time, then count what went wrong.

    python -m tests.kill_loop --kills 20            # >= 20 kills over one or more smoke sweeps
    python -m tests.kill_loop --kills 20 --until-resolved   # the same for sequential sweeps

Each sweep is ``senet sweep reduction --preset smoke --seeds 3 --optim.epochs 3`` (every arm × 3
seeds, 3 epochs each) in a fresh results folder. A launch is killed (SIGKILL to its whole process
group: the driver and the Ray it started) once a random number of new result rows have reached the
trials' ``result.json`` files, plus a random fraction of a second, so the kills fall anywhere
relative to Tune's experiment-state snapshots (one a second). One kill in five falls instead 1-20 s
after the launch, where it may land in Ray's start or in Tune's restore. The next launch is
``--resume`` when Tune state exists, else the same command again. Once a launch is left to finish,
the sweep is checked and, while kills are still owed, another sweep starts.

Checks, over every sweep:

- lost trials: a planned (arm, seed) without a finished row in ``runs.parquet``;
- duplicate trials: extra rows per (config_id, seed) in ``runs.parquet``, extra final rows per
  (arm, seed) over the trial folders of all launches, and (arm, seed) pairs trained in more than
  one trial folder;
- repeated epochs: a ``result.json`` row whose epoch (per-epoch rows) or ``training_iteration`` (all
  rows) an earlier row of the same file already holds.

Also printed: missing epochs (a finished trial's per-epoch rows are not exactly 1..epochs_run) and,
where the trainable logs them (``SENET_EPOCH_LOG``), epochs that a trial handed to Tune more than
once (trained again after Tune had received them).

Every Ray process a launch starts carries a tag in its environment and a temp folder of its own
(``RAY_TMPDIR``); after each kill those processes, and only those, are killed too. Ray listens on
loopback only (the sweep's own default).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from tests.helpers import json_rows, kill_group, senet_argv

STUDY = "reduction"
EPOCH_LOG_ENV = "SENET_EPOCH_LOG"  # read by ablations.trainable
TAG_ENV = "SENET_KILL_LOOP_TAG"


def _rows(path: Path) -> list[dict]:
    try:
        return json_rows(path.read_text())
    except OSError:
        return []


def _result_lines(ray_dir: Path) -> int:
    n = 0
    for f in ray_dir.glob("*/*/result.json"):
        try:
            n += f.read_bytes().count(b"\n")
        except OSError:
            pass
    return n


def _tagged(tag: str) -> list[int]:
    """Processes of this user whose environment carries ``tag`` (the launch's Ray processes)."""
    needle = f"{TAG_ENV}={tag}".encode()
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if needle in (d / "environ").read_bytes().split(b"\0"):
                out.append(int(d.name))
        except OSError:
            pass
    return out


def _kill_all(proc: subprocess.Popen, tag: str, wait_s: float = 20.0) -> int:
    """SIGKILL the launch's process group, then any process still carrying its tag; wait until none
    is left. Return how many strays (outside the group) were killed."""
    kill_group(proc)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    strays = 0
    deadline = time.time() + wait_s
    while True:
        pids = _tagged(tag)
        if not pids or time.time() > deadline:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                strays += 1
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    return strays


class Sweep:
    def __init__(self, root: Path, seeds: int, epochs: int, sequential: bool = False):
        self.root = root
        self.results = root / "results"
        self.ray_dir = self.results / STUDY / "ray"
        how = ("--until-resolved", "--max-seeds", str(seeds)) if sequential else ("--seeds", str(seeds))
        self.common = ("--preset", "smoke", *how, "--results", str(self.results), "--optim.epochs", str(epochs))
        self.seeds = seeds
        self.sequential = sequential

    def table(self) -> dict[tuple[str, int], float]:
        """(arm, seed) -> test error of every finished row of the sweep's table."""
        import pandas as pd

        df = pd.read_parquet(self.results / STUDY / "runs.parquet")
        df = df[df["status"].isin(["completed", "diverged"])]
        return {(str(a), int(s)): float(e) for a, s, e in zip(df["arm"], df["seed"], df["test_top1_err"], strict=True)}

    def has_state(self) -> bool:
        return any(self.ray_dir.glob("*/experiment_state-*.json"))

    def argv(self) -> list[str]:
        return senet_argv("sweep", STUDY, *self.common, *(["--resume"] if self.has_state() else []))


def _launch(sweep: Sweep, env: dict, log: Path) -> subprocess.Popen:
    with log.open("a") as f:
        f.write(f"\n$ {' '.join(sweep.argv()[3:])}\n")
        f.flush()
        return subprocess.Popen(sweep.argv(), env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=sweep.root)


def _wait_to_kill(proc: subprocess.Popen, sweep: Sweep, rng: random.Random, timeout_s: float) -> str | None:
    """Wait for a random point to kill at; None when the launch ended first."""
    t0 = time.time()
    if rng.random() < 0.2:
        delay = rng.uniform(1.0, 20.0)
        while time.time() - t0 < delay:
            if proc.poll() is not None:
                return None
            time.sleep(0.02)
        return f"{delay:.1f}s after launch"
    k = rng.randint(1, 6)
    n0 = _result_lines(sweep.ray_dir)
    while _result_lines(sweep.ray_dir) < n0 + k:
        if proc.poll() is not None:
            return None
        if time.time() - t0 > timeout_s:
            return "timeout"
        time.sleep(0.02)
    extra = rng.uniform(0.0, 1.2)
    end = time.time() + extra
    while time.time() < end:
        if proc.poll() is not None:
            return None
        time.sleep(0.01)
    return f"{k} new result rows + {extra:.2f}s"


def check(sweep: Sweep, epochs: int, epoch_log: Path | None) -> dict:
    """The counts of one finished sweep (see the module's docstring)."""
    import pandas as pd

    study = json.loads((sweep.results / STUDY / "study.json").read_text())
    planned = {(a["arm"], s) for a in study["arms"] for s in range(sweep.seeds)}
    if sweep.sequential:  # the searcher decides which cells run: every one it started must finish
        planned = {(p["arm"], int(p["seed"])) for p in
                   (json.loads(f.read_text()) for f in sweep.ray_dir.glob("*/*/params.json"))}
    df = pd.read_parquet(sweep.results / STUDY / "runs.parquet")
    finished = df[df["status"].isin(["completed", "diverged"])]
    have = {(str(a), int(s)) for a, s in zip(finished["arm"], finished["seed"], strict=True)}
    lost = len(planned - have)

    dup_rows = int(sum(n - 1 for n in Counter(zip(df["config_id"], df["seed"], strict=True)).values() if n > 1))
    finals: Counter = Counter()
    folders: Counter = Counter()
    repeated, missing, notes = 0, 0, []
    for rfile in sorted(sweep.ray_dir.glob("*/*/result.json")):
        params = json.loads((rfile.parent / "params.json").read_text())
        key = (params["arm"], int(params["seed"]))
        rows = _rows(rfile)
        if rows:
            folders[key] += 1
        finals[key] += sum(1 for r in rows if r.get("final"))
        per_epoch = [int(r["epoch"]) for r in rows if not r.get("final") and "epoch" in r]
        iters = [int(r["training_iteration"]) for r in rows if "training_iteration" in r]
        rep = sum(n - 1 for n in Counter(per_epoch).values()) + sum(n - 1 for n in Counter(iters).values())
        if rep:
            repeated += rep
            notes.append(f"repeated: {rfile.parent.parent.name}/{rfile.parent.name}: epochs {per_epoch}, "
                         f"training_iteration {iters}")
        fin = [r for r in rows if r.get("final")]
        if fin:
            run = int(fin[-1].get("epochs_run") or fin[-1].get("epoch") or 0)
            if sorted(set(per_epoch)) != list(range(1, run + 1)):
                missing += len(set(range(1, run + 1)) - set(per_epoch))
                notes.append(f"missing: {rfile.parent.name}: epochs {per_epoch} of {run}")
    dup_finals = sum(n - 1 for n in finals.values() if n > 1)
    retrained_folders = sum(n - 1 for n in folders.values() if n > 1)
    for key, n in finals.items():
        if n > 1:
            notes.append(f"final rows: {key}: {n}")

    retrained = None
    if epoch_log is not None and epoch_log.is_dir() and any(epoch_log.iterdir()):
        retrained = 0
        for f in epoch_log.glob("*.jsonl"):
            counts = Counter(int(r["epoch"]) for r in _rows(f) if r.get("what") == "trained")
            extra = sum(n - 1 for n in counts.values() if n > 1)
            if extra:
                retrained += extra
                notes.append(f"retrained: {f.stem}: {dict(counts)}")
    return {"lost": lost, "duplicate_trials": dup_rows + dup_finals + retrained_folders,
            "repeated_epochs": repeated, "missing_epochs": missing, "retrained_epochs": retrained,
            "notes": notes}


def _uninterrupted(workdir: Path, seeds: int, epochs: int) -> dict[tuple[str, int], float]:
    """The table of the same sequential sweep run once without a kill (training is deterministic on
    the CPU, so a killed and resumed sweep must end with the same trials and numbers)."""
    sweep = Sweep(workdir / "uninterrupted", seeds, epochs, sequential=True)
    shutil.rmtree(sweep.root, ignore_errors=True)
    sweep.root.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["SENET_SCRATCH"] = str(sweep.root / "scratch")
    done = subprocess.run(sweep.argv(), env=env, capture_output=True, text=True, cwd=sweep.root)
    if done.returncode != 0:
        raise RuntimeError(f"the uninterrupted sweep failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return sweep.table()


def run_loop(kills: int, workdir: Path, seed: int | None = None, seeds: int = 3, epochs: int = 3,
             launch_timeout_s: float = 300.0, out=sys.stdout, sequential: bool = False) -> dict:
    """Kill and resume smoke sweeps until ``kills`` kills have landed and the last sweep finished;
    return the summed counts plus ``kills``, ``sweeps``, ``launches``, ``strays`` and ``wall_s``.
    ``sequential``: the sweeps run ``--until-resolved`` (cap ``seeds``), and each must end with the
    table of an uninterrupted run (``differs``: the cells or numbers that do not match)."""
    rng = random.Random(seed)
    t0 = time.time()
    totals = {"kills": 0, "sweeps": 0, "launches": 0, "strays": 0, "lost": 0, "duplicate_trials": 0,
              "repeated_epochs": 0, "missing_epochs": 0, "retrained_epochs": None, "notes": []}
    reference = _uninterrupted(workdir, seeds, epochs) if sequential else None
    if sequential:
        totals["differs"] = 0
    while totals["kills"] < kills:
        n = totals["sweeps"]
        sweep = Sweep(workdir / f"sweep{n}", seeds, epochs, sequential)
        shutil.rmtree(sweep.root, ignore_errors=True)
        sweep.root.mkdir(parents=True)
        tag = uuid.uuid4().hex
        raytmp = Path(tempfile.mkdtemp(prefix="kl", dir="/tmp"))  # short: Ray's socket paths live under it
        epoch_log = sweep.root / "epochs"
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update({TAG_ENV: tag, "RAY_TMPDIR": str(raytmp), "SENET_SCRATCH": str(sweep.root / "scratch"),
                    EPOCH_LOG_ENV: str(epoch_log)})
        log = sweep.root / "launches.log"
        failures = 0
        try:
            while True:
                proc = _launch(sweep, env, log)
                totals["launches"] += 1
                when = _wait_to_kill(proc, sweep, rng, launch_timeout_s) if totals["kills"] < kills else None
                if when is None:
                    try:
                        rc = proc.wait(timeout=launch_timeout_s)
                    except subprocess.TimeoutExpired:
                        rc = "timeout"
                    totals["strays"] += _kill_all(proc, tag)
                    if rc == 0:
                        break
                    failures += 1
                    print(f"[kill-loop] sweep {n}: launch ended with {rc}; see {log}", file=out, flush=True)
                    if failures >= 3:
                        raise RuntimeError(f"sweep {n} did not finish after {failures} failed launches; see {log}")
                    continue
                totals["strays"] += _kill_all(proc, tag)
                totals["kills"] += 1
                print(f"[kill-loop] kill {totals['kills']}: sweep {n}, {when} "
                      f"({time.time() - t0:.0f}s)", file=out, flush=True)
        finally:
            shutil.rmtree(raytmp, ignore_errors=True)
        counts = check(sweep, epochs, epoch_log)
        totals["sweeps"] += 1
        for k in ("lost", "duplicate_trials", "repeated_epochs", "missing_epochs"):
            totals[k] += counts[k]
        if counts["retrained_epochs"] is not None:
            totals["retrained_epochs"] = (totals["retrained_epochs"] or 0) + counts["retrained_epochs"]
        totals["notes"] += [f"sweep {n}: {note}" for note in counts["notes"]]
        if reference is not None:
            got = sweep.table()
            bad = sorted(k for k in set(got) | set(reference) if got.get(k) != reference.get(k))
            totals["differs"] += len(bad)
            totals["notes"] += [f"sweep {n}: differs from the uninterrupted run at {k}" for k in bad]
        print(f"[kill-loop] sweep {n} finished: lost {counts['lost']}, duplicate trials "
              f"{counts['duplicate_trials']}, repeated epochs {counts['repeated_epochs']}", file=out, flush=True)
    totals["wall_s"] = round(time.time() - t0, 1)
    return totals


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.kill_loop", description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLs in total (default 20)")
    ap.add_argument("--workdir", help="where the sweeps go (default: a new temporary folder, removed "
                                      "when all checks pass)")
    ap.add_argument("--seed", type=int, help="random seed of the kill points")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per arm of each sweep (default 3)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per trial (default 3)")
    ap.add_argument("--until-resolved", action="store_true",
                    help="sequential sweeps (--until-resolved, cap --seeds), each checked against an "
                         "uninterrupted run of the same sweep")
    args = ap.parse_args(argv)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="kill-loop-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"[kill-loop] sweeps in {workdir}", flush=True)
    r = run_loop(args.kills, workdir, seed=args.seed, seeds=args.seeds, epochs=args.epochs,
                 sequential=args.until_resolved)
    for note in r["notes"]:
        print(f"[kill-loop] {note}")
    retrained = "n/a" if r["retrained_epochs"] is None else r["retrained_epochs"]
    print(f"kills: {r['kills']}  sweeps: {r['sweeps']}  launches: {r['launches']}  lost trials: {r['lost']}  "
          f"duplicate trials: {r['duplicate_trials']}  repeated epochs: {r['repeated_epochs']}  "
          f"missing epochs: {r['missing_epochs']}  retrained epochs: {retrained}  "
          f"stray Ray processes killed: {r['strays']}  wall time: {r['wall_s']:.0f} s"
          + (f"  cells differing from the uninterrupted run: {r['differs']}" if "differs" in r else ""))
    ok = r["lost"] == r["duplicate_trials"] == r["repeated_epochs"] == r.get("differs", 0) == 0
    if ok and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
