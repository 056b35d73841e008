"""Sweep throughput: trials per hour of `senet sweep gate` at a preset, for a CPU layout and, for a
before/after comparison, for the code of another commit.

    python benchmarks/sweep_rate.py [--preset quick] [--seeds 2] [--cpus 1,2] [--baseline REF]

``--baseline REF`` runs the same sweep, at that commit's default layout, with the code of ``REF``
(checked out into a temporary ``git worktree``, removed afterwards), before the layouts of this tree,
and prints this tree's default over it. Each sweep uses every core, so the runs are sequential: run it
on an otherwise idle machine. ``benchmarks/bench.py --sweep`` prints the same lines.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_MAIN = "import sys; from senet.cli import main; sys.exit(main(sys.argv[1:]))"


def senet_command(code: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run ``senet ARGS`` with the package found in ``code`` (its
    folder first on the path; run it with ``cwd=code`` too, since `python -c` puts the cwd first)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")]))}
    return [sys.executable, "-c", _MAIN, *args], env


def sweep_rate(cpus: int | None, preset: str, seeds: int, code: Path | None = None) -> tuple[float, int, float]:
    """(trials per hour, trials, wall s) of `senet sweep gate` with ``cpus`` CPUs per trial (None:
    the code's default), run with the package found in ``code`` (None: this tree)."""
    code = code or ROOT
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        layout = [] if cpus is None else ["--cpus-per-trial", str(cpus)]
        cmd, env = senet_command(code, "sweep", "gate", "--preset", preset, "--seeds", str(seeds),
                                 "--results", tmp, *layout)
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=code, env=env)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"bench: `senet sweep gate --preset {preset}` with the code in {code} failed:\n"
                             f"{done.stderr[-2000:]}")
        import pandas as pd  # only here: the rest of the benchmarks need no pandas

        trials = len(pd.read_parquet(Path(tmp) / "gate" / "runs.parquet"))
    return trials / wall * 3600, trials, wall


@contextlib.contextmanager
def checkout(ref: str):
    """A temporary detached ``git worktree`` of ``ref`` (a commit, tag or branch of this repository)."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                         capture_output=True, text=True)
    if sha.returncode != 0:
        raise SystemExit(f"bench: {ref!r} is not a commit of this repository")
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(tree),
                        sha.stdout.strip()], check=True)
        try:
            yield tree, sha.stdout.strip()[:7]
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def report(preset: str, seeds: int, layouts: tuple[int, ...], baseline: str | None) -> None:
    """Print trials per hour per layout (and the baseline's), one line each as they finish."""
    print(f"\nsweep, gate study, trials per hour (wall clock, all cores; preset {preset}, --seeds {seeds})")
    base = None
    if baseline:
        with checkout(baseline) as (tree, sha):
            base = sweep_rate(None, preset, seeds, tree)
        print(f"{'baseline ' + sha + ', its default layout':<36}{base[1]:>4} trials in {base[2]:>5.0f} s = "
              f"{base[0]:>5.0f} trials/h", flush=True)
    rate = {}
    for cpus in layouts:
        rate[cpus] = sweep_rate(cpus, preset, seeds)
        tph, n, wall = rate[cpus]
        print(f"{'this tree, --cpus-per-trial ' + str(cpus):<36}{n:>4} trials in {wall:>5.0f} s = {tph:>5.0f} trials/h",
              flush=True)
    if 1 in rate and 2 in rate:
        print(f"1 CPU per trial / 2 CPUs per trial: {rate[1][0] / rate[2][0]:.2f}x")
    if base and 1 in rate:
        print(f"this tree's default (1 CPU per trial) / baseline {baseline}: {rate[1][0] / base[0]:.2f}x")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="quick", help="the sweep's preset (default quick; smoke checks the mechanics)")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--cpus", default="1,2", help="CPUs per trial to time, comma-separated (default 1,2)")
    p.add_argument("--baseline", default="", help="a commit whose code to time too, at its default layout")
    args = p.parse_args(argv)
    try:
        layouts = tuple(int(c) for c in args.cpus.split(","))
    except ValueError:
        p.error(f"--cpus takes integers separated by commas, not {args.cpus!r}")
    report(args.preset, args.seeds, layouts, args.baseline or None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
