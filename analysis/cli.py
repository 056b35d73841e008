"""``senet analyze``, ``report``, ``curves``, ``findings`` and ``gates``: the analysis' commands.

``senet`` imports this module to build its parser, so each command imports its own module only when
it runs: ``senet --help`` never loads torch, matplotlib or captum through here.
"""
from __future__ import annotations

import sys
from pathlib import Path

from senet.cli import Command, UserError, command, preset_option, results_option

from .errors import AnalysisInputError

#: The columns of runs.parquet besides ``preset`` that choose one recipe's trials among a study's.
RECIPE_CHOICE = {"experiment": "this Ray experiment's trials",
                 "recipe": "this recipe hash's trials (a prefix will do)"}


def study_options(p, lead: str, keys=("preset", *RECIPE_CHOICE), results: str = "") -> None:
    """``--results`` and the options that choose one recipe (``--preset``, ``--experiment``, ``--recipe``);
    ``lead`` says what the command does with the trials they choose."""
    results_option(p, results)
    for k in keys:
        if k == "preset":
            preset_option(p, f"{lead} its trials")
        else:
            p.add_argument(f"--{k}", default=None, help=f"{lead} {RECIPE_CHOICE[k]}")


def swept_study(results: str, study: str):
    """The study's paths, refused in one line when it has no runs.parquet yet."""
    from senet.records.layout import study_paths

    paths = study_paths(results, study)
    if not paths.runs_parquet.is_file():
        raise UserError(f"no {paths.runs_parquet}: sweep the {study} study first")
    return paths


def split_list(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


class AnalysisCommand(Command):
    """A command of this package: bad input to the analysis prints as one line."""

    user_errors = (AnalysisInputError,)


@command
class AnalyzeCommand(AnalysisCommand):
    name = "analyze"
    help = ("excitation statistics per block, class and channel (paper Fig. 6-7), selectivity, "
            "saturation, SE removal, captum attribution and Grad-CAM of a checkpoint")
    overrides = True

    def configure(self, p):
        p.add_argument("checkpoint", nargs="?", default="",
                       help="a suite checkpoint (checkpoint.pt or its run directory)")
        p.add_argument("--best", default="", metavar="STUDY",
                       help="instead of CHECKPOINT: the best completed SE trial of a collected study")
        study_options(p, "with --best: choose among", results=" --best reads")
        p.add_argument("--out", required=True, help="output directory for tables, figures, summary.md")
        p.add_argument("--split", default="test", help="train | val | test (default test)")
        p.add_argument("--classes", default="", help="class names or indices, comma separated "
                       "(default: the first four)")
        p.add_argument("--blocks", default="default", help="default (last block of each stage and "
                       "every block of the last stage) | all | SE_2_3,SE_4_1 | stage numbers")
        p.add_argument("--compare", default="", metavar="CKPT", help="a plain model's checkpoint (no SE, "
                       "trained on the same dataset) for Grad-CAM")
        p.add_argument("--max-images", type=int, default=0, help="use the first N images of --split and of "
                       "--mean-split (0 = all)")
        p.add_argument("--bins", type=int, default=50, help="histogram bins over the gate's range")
        p.add_argument("--batch-size", type=int, default=256)
        p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
        p.add_argument("--attr-images", type=int, default=32, help="images per class for channel ablation")
        p.add_argument("--no-singles", action="store_true", help="remove SE per stage only, not per block")
        p.add_argument("--mean-split", default="auto", help="images whose mean excitations fix the gates "
                       "in the 'mean' SE removal: auto (val when held out and not --split, else train) | "
                       "train | val | test")
        p.add_argument("--no-progress", action="store_true")
        p.epilog = "dataset options: --data.name NAME --data.root DIR (default: the checkpoint's)"

    def run(self, args, overrides):
        from .analyze import AnalyzeOptions, run_analysis
        from .study_results import best_checkpoint

        if args.max_images < 0 or args.bins < 1 or args.batch_size < 1:
            raise UserError("--max-images must be >= 0, --bins and --batch-size >= 1")
        opt = AnalyzeOptions(split=args.split, classes=args.classes, blocks=args.blocks,
                             compare=args.compare, max_images=args.max_images, bins=args.bins,
                             batch_size=args.batch_size, device=args.device,
                             attr_images=args.attr_images, singles=not args.no_singles,
                             mean_split=args.mean_split, progress=not args.no_progress)
        if bool(args.checkpoint) == bool(args.best):
            raise UserError("give either a CHECKPOINT or --best STUDY")
        if not args.best and (args.preset or args.experiment or args.recipe):
            raise UserError("--preset, --experiment and --recipe choose among a study's trials: use them with --best")
        checkpoint = args.checkpoint
        if args.best:
            checkpoint, row = best_checkpoint(args.results, args.best, preset=args.preset,
                                              experiment=args.experiment, recipe=args.recipe)
            print(f"best SE trial of {args.best} by validation: {row['arm']} seed {row['seed']} "
                  f"({row['best_val_top1_err']:.2f}% best val top-1 err; {row['test_top1_err']:.2f}% test) "
                  f"-> {checkpoint}")
        res = run_analysis(checkpoint, args.out, overrides, opt)
        sel = res["selectivity"]
        num = lambda v, nd, none: none if v != v else f"{v:.{nd}f}"  # NaN: undefined
        print(f"{res['images']} {res['split']} images: top-1 error {res['top1_err']:.2f}%, "
              f"top-5 {res['top5_err']:.2f}% (intact model)")
        print("per block: η² (class selectivity), saturated share (n/a where the gate does not saturate)")
        for r in sel.itertuples(index=False):
            print(f"  {r.block:<8} η²={num(r.eta2, 3, 'undefined')}  "
                  f"saturated={num(r.saturated, 2, 'n/a')}  mean s={r.mean:.3f}")
        rem = res["removal"]
        print(f"SE removal, Δ top-1 (pp) with gates fixed at their mean over {res['mean_images']} "
              f"{res['mean_split']} images / replaced by the identity:")
        for r in rem[rem["removed"].str.startswith("stage")].itertuples(index=False):
            print(f"  {r.removed:<8} mean {r.delta_top1_mean:+.2f}  identity {r.delta_top1_identity:+.2f}")
        print(f"wrote {res['summary']}")
        return 0


def family_table_output(args) -> list[Path]:
    """``<results>/<study>/family_table.md`` (:mod:`analysis.family_table`), and the README's table with
    ``--readme``."""
    from .family_table import write_family_table

    return write_family_table(args.results, args.study, preset=args.preset, experiment=args.experiment,
                              recipe=args.recipe, n_boot=args.n_boot, readme=args.readme)


#: What ``senet report STUDY`` writes besides report.md, per study: a writer of the command's
#: arguments that returns the files it wrote (a README's table among them with ``--readme``).
REPORT_OUTPUTS = {"family": family_table_output}


@command
class ReportCommand(AnalysisCommand):
    name = "report"
    help = ("paper-style tables, anytime-valid comparisons with the reference arm, a seed projection "
            "and figures of a study into <results>/<study>/report.md")

    def configure(self, p):
        p.add_argument("study", help="a study with collected results (results/<study>/runs.parquet)")
        study_options(p, "report only")
        p.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples of the descriptive "
                       "bootstrap interval (at least 200)")
        p.add_argument("--effect", type=float, default=None, metavar="PP", help="difference (points) the "
                       "projection line sizes the seeds for (default the design's delta, or one test image if larger)")
        p.add_argument("--readme", default=None, metavar="PATH", help="also put the study's README table "
                       f"(studies with one: {', '.join(REPORT_OUTPUTS)}) between its marker comments in PATH, "
                       "e.g. <!-- family-table:start --> and <!-- family-table:end -->")
        p.epilog = ("a table holding several recipes is refused until --preset, --experiment or --recipe chooses "
                    "one; the family study's report also writes <results>/family/family_table.md")

    def run(self, args, overrides):
        from .report import write_report

        if not Path(args.results).is_dir():
            raise UserError(f"results directory not found: {args.results}")
        extra = REPORT_OUTPUTS.get(args.study)
        if args.readme and extra is None:
            raise UserError(f"--readme: the {args.study} study has no README table (studies with one: "
                            f"{', '.join(REPORT_OUTPUTS)})")
        path = write_report(args.results, args.study, n_boot=args.n_boot, preset=args.preset,
                            experiment=args.experiment, recipe=args.recipe, effect=args.effect)
        print(path.read_text().split("## Figures")[0].rstrip())
        print(f"\nwrote {path}")
        for written in extra(args) if extra else ():
            print(f"wrote {written}")
        return 0


@command
class CurvesCommand(AnalysisCommand):
    name = "curves"
    help = "training curves and a summary table of run directories side by side (metrics.jsonl)"

    def configure(self, p):
        p.add_argument("runs", nargs="+", metavar="RUN", help="run directories written by senet train --out")
        p.add_argument("--out", required=True, help="output directory for curves.csv, summary.md and "
                       "training_curves.png/.pdf")
        p.add_argument("--labels", default="", help="names of the runs, comma separated (default: "
                       "the directory names)")
        p.add_argument("--metrics", default="", help="metrics to draw, comma separated (default: "
                       "train_loss, val_top1_err, test_top1_err: those logged)")
        p.add_argument("--title", default="Training curves")

    def run(self, args, overrides):
        from senet.records.layout import write_atomic

        from . import curves
        from .style import save
        from .tables import markdown

        history = curves.load_history(args.runs, split_list(args.labels) if args.labels else None)
        for name, why in history.attrs["skipped"]:
            print(f"note: skipping {name}: {why}", file=sys.stderr)
        summary = curves.run_summary(history)
        fig = curves.training_curves(history, split_list(args.metrics) or None, title=args.title)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        figs = save(fig, out / "training_curves")
        history.to_csv(out / "curves.csv", index=False)
        table = markdown(curves.SUMMARY_HEADER, curves.summary_rows(summary))
        write_atomic(out / "summary.md", f"# {args.title}\n\n{table}\n![curves](training_curves.png)\n")
        print(table.rstrip())
        print(f"\nwrote {out / 'summary.md'}, {out / 'curves.csv'}, {', '.join(str(f) for f in figs)}")
        return 0


@command
class FindingsCommand(AnalysisCommand):
    name = "findings"
    help = ("the findings table: each finding of the paper against the committed results (effect, "
            "anytime 95 percent confidence sequence, n, verdict, seed projection) into "
            "<results>/README.md")

    def configure(self, p):
        study_options(p, "read only", keys=("preset",))
        p.add_argument("--out", default=None, help="where to write the table (default <results>/README.md; "
                       "findings.csv goes beside it)")
        p.add_argument("--analysis", default=None, metavar="DIR", help="one network's `senet analyze` folder for "
                       "the excitation findings where no <results>/gate/seeds tables (`senet analyze-seeds`, "
                       "several networks) exist (default: the first of results/analysis, results/gate/analysis, "
                       "results/reference/se_resnet20/analysis that exists)")
        p.add_argument("--metric", default="test_top1_err", help="the error compared (default test_top1_err, "
                       "as the reports' tables)")
        p.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples of the descriptive "
                       "bootstrap interval (at least 200)")
        p.epilog = "a study holding several recipes is refused until --preset chooses one"

    def run(self, args, overrides):
        from .findings import write_findings
        from .findings.render import table

        out, df = write_findings(args.results, args.out, preset=args.preset, analysis=args.analysis,
                                 metric=args.metric, n_boot=args.n_boot)
        print(table(df).rstrip())
        print(f"\nwrote {out} and {out.with_name('findings.csv')}")
        return 0


@command
class GatesCommand(AnalysisCommand):
    name = "gates"
    help = ("gating choices compared by what they learn: the excitations of each gate arm's best run "
            "per stage (one figure, one table)")
    overrides = True

    def configure(self, p):
        p.add_argument("paths", nargs="*", metavar="STUDY_DIR|CHECKPOINT",
                       help="a gate study folder (its runs.parquet: the best run of each arm by validation) or "
                       "checkpoints (checkpoint.pt or run folders); default <results>/gate")
        study_options(p, "choose among")
        p.add_argument("--out", default=None, help="output folder (default <study>/gates; required with "
                       "checkpoints only)")
        p.add_argument("--split", default="test", help="train | val | test (default test)")
        p.add_argument("--max-images", type=int, default=0, help="the first N images of the split (0 = all)")
        p.add_argument("--figure-images", type=int, default=2000, help="images (a fixed random sample) whose "
                       "excitations the figure draws; the table uses all (0 = all)")
        p.add_argument("--batch-size", type=int, default=256)
        p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
        p.epilog = "dataset options: --data.name NAME --data.root DIR (default: the checkpoints')"

    def run(self, args, overrides):
        from senet.records.layout import CHECKPOINT, study_paths

        from .gates import GateRun, GatesOptions, best_runs, write_gates
        from .gates_render import pct
        from .study_results import checkpoint_file

        if args.max_images < 0 or args.figure_images < 0 or args.batch_size < 1:
            raise UserError("--max-images and --figure-images must be >= 0, --batch-size >= 1")
        paths = [Path(p) for p in args.paths] or [study_paths(args.results, "gate").dir]
        runs, notes, study = [], [], None
        for p in paths:
            if study_paths(p.parent, p.name).runs_parquet.is_file():
                got, skipped = best_runs(p, preset=args.preset, experiment=args.experiment, recipe=args.recipe)
                runs += got
                notes += skipped
                study = study or p
            elif p.is_file() or (p / CHECKPOINT).is_file():
                runs.append(GateRun("", str(checkpoint_file(p)), {}))  # label: its gate
            else:
                raise UserError(f"{p}: neither a study folder with runs.parquet nor a checkpoint")
        if args.out is None and study is None:
            raise UserError("give --out for checkpoints (a study folder's default is <study>/gates)")
        opt = GatesOptions(split=args.split, max_images=args.max_images, figure_images=args.figure_images,
                           batch_size=args.batch_size, device=args.device)
        res = write_gates(runs, args.out or study / "gates", overrides, opt, notes)
        for n in res["notes"]:
            print(f"note: not analysed: {n}", file=sys.stderr)
        eta = lambda v: "undefined" if v != v else f"{v:.3f}"  # NaN: no channel varies
        print("gate / stage: mean ± std of s, near the gate's bounds, class selectivity η², constant channels")
        for r in res["table"].itertuples(index=False):
            print(f"  {r.label:<14} stage {r.stage}  {r.mean:.3f} ± {r.std:.3f}  near bounds {pct(r.near_bounds):>6}"
                  f"  η² {eta(r.eta2)}  constant {pct(r.constant_channels)}")
        print(f"wrote {res['markdown']}, {res['out'] / 'gates.csv'}, {', '.join(str(f) for f in res['figures'])}")
        return 0


@command
class WeightsCommand(AnalysisCommand):
    name = "weights"
    help = ("keep trained weights beside a study's table (<study>/weights/, without optimizer state), so its "
            "gates figure and the excitation findings re-draw from a clone: the best-by-validation run of some "
            "arms and every run of others, among the runs whose checkpoint is on this machine")

    def configure(self, p):
        p.add_argument("study", help="a study of <results> (e.g. gate)")
        study_options(p, "choose among")
        p.add_argument("--best", default="", help="arms whose best run by validation is kept, as a,b or all")
        p.add_argument("--every", default="", help="arms whose every run is kept, as a,b")
        p.add_argument("--every-first", type=int, default=0, metavar="N",
                       help="of the --every arms, keep only the N lowest seeds (a size budget: a CIFAR "
                            "SE-ResNet-20 is 1.1 MB) and remove the later ones kept before (default 0: all)")

    def run(self, args, overrides):
        from .study_results import load_recipe
        from .weights import keep

        paths = swept_study(args.results, args.study)
        runs, _ = load_recipe(paths.results, paths.study, preset=args.preset, experiment=args.experiment,
                              recipe=args.recipe)
        best = list(dict.fromkeys(runs["arm"])) if args.best == "all" else split_list(args.best)
        if not best and not args.every:
            raise UserError("say which runs to keep: --best ARMS and/or --every ARMS")
        if args.every_first < 0:
            raise UserError(f"--every-first must be 0 (all) or a positive count, not {args.every_first}")
        index = keep(runs, paths.dir, best=best, every=split_list(args.every), first=args.every_first)
        size = sum((paths.dir / "weights" / f).stat().st_size for f in index["file"])
        print(f"{len(index)} networks kept in {paths.dir / 'weights'} ({size / 1e6:.1f} MB), listed in index.csv")
        return 0


@command
class AnalyzeSeedsCommand(AnalysisCommand):
    name = "analyze-seeds"
    help = ("the excitation findings over several trained networks: class selectivity by depth and the "
            "error change when each stage's SE is removed, for every run of one arm whose network is here")

    def configure(self, p):
        p.add_argument("study", nargs="?", default="gate", help="a study of <results> (default gate)")
        study_options(p, "choose among")
        p.add_argument("--arm", default=None, help="the arm whose networks are read (default: the reference)")
        p.add_argument("--out", default=None, help="output folder (default <study>/seeds)")
        p.add_argument("--max-images", type=int, default=0, help="the first N test images (0 = all)")
        p.add_argument("--batch-size", type=int, default=256)
        p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
        p.add_argument("--no-progress", action="store_true")

    def run(self, args, overrides):
        from .seeds import analyze_seeds

        if args.max_images < 0 or args.batch_size < 1:
            raise UserError("--max-images must be >= 0, --batch-size >= 1")
        paths = swept_study(args.results, args.study)
        res = analyze_seeds(paths.dir, args.out, arm=args.arm, max_images=args.max_images,
                            batch_size=args.batch_size, device=args.device, progress=not args.no_progress,
                            preset=args.preset, experiment=args.experiment, recipe=args.recipe)

        def cs(r):
            return "(−∞, ∞)" if r["low"] == -float("inf") else f"[{r['low']:+.2f}, {r['high']:+.2f}]"

        print(f"{res['networks']} {res['arm']} networks analysed into {res['out']}")
        print(f"  ρ(depth, η²): mean {res['rho']['mean']:+.2f}, CS {cs(res['rho'])} over {res['rho']['n']} seeds")
        print(f"  last stage's SE removed (gates at their mean): Δ {res['removal_last']['mean']:+.2f} pp, "
              f"CS {cs(res['removal_last'])} over {res['removal_last']['n']} seeds")
        return 0
