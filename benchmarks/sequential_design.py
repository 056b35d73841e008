"""Operating characteristics of the default sequential design, by simulation (no training).

    python benchmarks/sequential_design.py [--studies 4000] [--sigma 0.5] [--seed 0]

The cases: one comparison (α = 0.05) and one of three arms compared with one reference (α/3,
Bonferroni), with σ_d = ``--sigma`` pp, δ and the seed cap of :class:`senet.sequential.Design`, at
true differences Δ = 0, δ/2, δ, 2δ. For each (:func:`senet.sequential.simulate`): the share of
studies ending "different" (better, worse or different within ±δ), "alike" or unresolved at the cap,
the coverage of the interval where each stops, and the mean seeds used. Beside them, the seeds a
fixed-n paired t-test at the same level needs for 80% power at δ
(:func:`senet.sequential.fixed_n_seeds`), valid only at that n fixed in advance.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from senet.sequential import Design, fixed_n_seeds, simulate  # noqa: E402


def rows(studies: int, sigma: float, seed: int = 0) -> list[dict]:
    """One row per (k, Δ): the simulated outcome shares, coverage and mean seeds."""
    design = Design()
    out = []
    for k in (1, 3):
        fixed = fixed_n_seeds(design.delta, sigma, design.level(k))
        for mu in (0.0, design.delta / 2, design.delta, 2 * design.delta):
            r = simulate(mu, sigma, design, k=k, studies=studies, seed=seed)
            out.append({"k": k, "level": design.level(k), "fixed_n": fixed, **r})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--studies", type=int, default=4000, help="simulated studies per row (default 4000)")
    p.add_argument("--sigma", type=float, default=0.5, help="σ_d, points (default 0.5)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.studies < 1 or not args.sigma > 0:
        p.error("--studies must be >= 1 and --sigma > 0")
    d = Design()
    print(f"default design: α {d.alpha:g}, δ {d.delta:g} pp, g {d.g:g}, seeds {d.min_seeds}..{d.max_seeds}; "
          f"σ_d {args.sigma:g} pp; {args.studies} studies per row")
    print(f"{'level':>9} {'Δ':>5} {'P(diff)':>8} {'P(alike)':>8} {'P(unres)':>8} {'coverage':>8} "
          f"{'E[seeds]':>8} {'fixed-n':>8}")
    for r in rows(args.studies, args.sigma, args.seed):
        print(f"{'α/' + str(r['k']):>9} {r['mu']:>5.2f} {r['different']:>8.3f} {r['alike']:>8.3f} "
              f"{r['unresolved']:>8.3f} {r['coverage']:>8.3f} {r['seeds']:>8.1f} {r['fixed_n']:>8d}")
    print("P(diff): better, worse or different within ±δ; P(alike): alike (inside ±δ, not excluding 0); "
          "fixed-n: seeds of a fixed-n paired t-test at the same level, 80% power at δ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
