"""``senet studies``, ``senet sweep`` and ``senet collect``: the sweeps' commands.

Each command imports what it works with (the studies, Ray, pandas) when it runs, so that building
``senet``'s parser loads none of them.
"""
from __future__ import annotations

from senet.cli import Command, ListingCommand, command, preset_option, results_option


@command
class StudiesCommand(ListingCommand):
    name = "studies"
    help = "list the ablation studies (paper Tables 10-16), their arms and the presets"

    def rows(self):
        from .studies import PRESETS, STUDIES, base_config

        rows = []
        for name, study in STUDIES.items():
            arms = () if name == "custom" else study.resolve_arms(base_config(study, "quick"))
            rows.append({"name": name, "title": study.title, "paper_table": study.paper_table,
                         "axis": study.axis, "reference_arm": study.reference_arm,
                         "fixed": dict(study.fixed), "arms": [a.to_dict() for a in arms],
                         "seeds": {preset: study.seeds_at(preset) for preset in PRESETS.names()}})
        return rows

    def as_json(self, rows):
        from .studies import PRESETS

        return {"studies": rows, "presets": {n: {"doc": p.doc, "seeds": p.seeds, "overrides": dict(p.overrides)}
                                             for n, p in PRESETS.items()}}

    def print_text(self, rows):
        from .studies import PRESETS

        for r in rows:
            table = f" ({r['paper_table']})" if r["paper_table"] else ""
            seeds = ", ".join(f"{n} at {preset}" for preset, n in r["seeds"].items())
            print(f"{r['name']}: {r['title']}{table}; axis {r['axis']}, reference {r['reference_arm'] or '-'}; "
                  f"seeds {seeds}")
            for a in r["arms"]:
                paper = (f"paper {a['paper_top1']:.2f} / {a['paper_top5']:.2f}"
                         if a["paper_top1"] is not None else "")
                over = ", ".join(f"{k}={v}" for k, v in a["overrides"].items())
                print(f"  {a['arm']:<14} {over:<28} {paper}".rstrip())
            if r["name"] == "custom":
                print("  (arms from --spec FILE.yaml: axes as a grid or random samples)")
        print("presets: " + "; ".join(f"{n} ({p.doc})" for n, p in PRESETS.items()))


@command
class SweepCommand(Command):
    name = "sweep"
    help = ("train every arm × seed of a study on Ray Tune (local, or a cluster with --address), "
            "skipping the trials any study's table already records")
    overrides = True

    def configure(self, p):
        p.add_argument("study", help="a study (see `senet studies`), several as a,b,c, or all (gate, "
                       "reduction, squeeze, placement, stages, in turn)")
        preset_option(p, "the recipe the trials train at (default: quick)", default="quick")
        p.add_argument("--seeds", type=int, default=None,
                       help="seeds per arm (default: the study's at the preset, see `senet studies`)")
        results_option(p, ", where each study's table and trials go")
        p.add_argument("--storage", default=None, help="Tune storage: a folder or an object store's URI "
                       "(s3://BUCKET/PREFIX, gs://...; credentials from the environment) (default: "
                       "<results>/<study>/ray); on a cluster, one every node reaches")
        p.add_argument("--address", default=None, help="join a Ray cluster (HOST:PORT or auto; "
                       "default: $RAY_ADDRESS, else a local Ray on loopback)")
        p.add_argument("--cpus-per-trial", type=float, default=None,
                       help="CPUs (= torch threads) per trial (default 1)")
        p.add_argument("--gpus-per-trial", type=float, default=None,
                       help="GPUs per trial, fractions pack trials on one GPU (default: 1 if any, else 0)")
        p.add_argument("--max-concurrent", type=int, default=None, help="at most K trials at once (default 0: no limit)")
        p.add_argument("--max-failures", type=int, default=None, help="retries of a crashed trial (default 3)")
        p.add_argument("--resume", action="store_true",
                       help="continue an interrupted sweep as it was started (its seeds, arms, config and "
                            "resources; trials that ended in error are retried)")
        p.add_argument("--until-resolved", action="store_true",
                       help="add seeds in blocks (the arms of every comparison still open) until each "
                            "comparison's anytime-valid interval decides it, or the cap (the design in study.json)")
        p.add_argument("--aim", default="both", choices=("both", "report", "findings"),
                       help="with --until-resolved: the comparisons that get seeds: the report's (each arm "
                            "against the reference), the findings' (the paper's claims on this study's arms) "
                            "or both (default)")
        p.add_argument("--max-seeds", type=int, default=None,
                       help="with --until-resolved: the seed cap (default: the study's declared design; "
                            "40 at standard)")
        p.add_argument("--arms", default=None,
                       help="only these arms, as a,b,c (the reference arm is always included)")
        p.add_argument("--verbose", action="store_true", help="also show Ray's and Tune's own output")
        p.add_argument("--dry-run", action="store_true",
                       help="say which trials are recorded, reused from another study or to train; start nothing")
        p.add_argument("--model", default=None, help="backbone (its se_ twin is used for every arm)")
        p.add_argument("--spec", default=None, metavar="FILE", help="the YAML file of the custom study")
        p.epilog = ("Config overrides: --key value, e.g. --optim.epochs 3 --data.subset 2000. "
                    "`senet config --study STUDY --preset PRESET [--key value ...]` prints the trials' "
                    "config: every key's value, default, choices, meaning and what the study sweeps.")

    def run(self, args, overrides):
        from .plan import SweepOptions
        from .sweep import run_sweeps

        outcomes = run_sweeps(SweepOptions(
            study=args.study, preset=args.preset, seeds=args.seeds, results=args.results,
            storage=args.storage, address=args.address, cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent,
            max_failures=args.max_failures, resume=args.resume, model=args.model, spec=args.spec,
            overrides=overrides, verbose=args.verbose, dry_run=args.dry_run,
            until_resolved=args.until_resolved, max_seeds=args.max_seeds, aim=args.aim,
            arms=tuple(a.strip() for a in args.arms.split(",") if a.strip()) if args.arms else None))
        # a sweep that left any trial unfinished or failed is not a success, whatever it wrote
        return 0 if args.dry_run or all(o.ok for o in outcomes) else 1


@command
class CollectCommand(Command):
    name = "collect"
    help = "gather a study's trials into <results>/<study>/runs.parquet and runs.csv (no Ray needed)"

    def configure(self, p):
        p.add_argument("study", help="the study's name (its folder under --results)")
        results_option(p)
        p.add_argument("--storage", default=None, help="Tune storage the sweep used: a folder or a URI "
                       "(s3://BUCKET/PREFIX, ...) (default: <results>/<study>/ray)")

    def run(self, args, overrides):
        from .collect import collect

        df = collect(args.study, args.results, storage=args.storage)
        counts = df["status"].value_counts().to_dict()
        print(f"{len(df)} trials ({', '.join(f'{n} {s}' for s, n in counts.items())}) -> "
              f"{args.results}/{args.study}/runs.parquet, runs.csv")
        return 0
