"""``senet analyze``, ``senet report`` and ``senet curves`` (registered through the
``senet.commands`` entry point)."""
from __future__ import annotations

from pathlib import Path

from senet.cli import Command, UserError, command


@command
class AnalyzeCommand(Command):
    name = "analyze"
    help = ("excitation statistics per block, class and channel (paper Fig. 6-7), selectivity, "
            "saturation, SE removal, captum attribution and Grad-CAM of a checkpoint")
    overrides = True

    def configure(self, p):
        p.add_argument("checkpoint", nargs="?", default="",
                       help="a suite checkpoint (checkpoint.pt or its run directory)")
        p.add_argument("--best", default="", metavar="STUDY",
                       help="instead of CHECKPOINT: the best completed SE trial of a collected study")
        p.add_argument("--results", default="results", help="results directory for --best")
        p.add_argument("--out", required=True, help="output directory for tables, figures, summary.md")
        p.add_argument("--split", default="test", help="train | val | test (default test)")
        p.add_argument("--classes", default="", help="class names or indices, comma separated "
                       "(default: the first four)")
        p.add_argument("--blocks", default="default", help="default (last block of each stage and "
                       "every block of the last stage) | all | SE_2_3,SE_4_1 | stage numbers")
        p.add_argument("--compare", default="", metavar="CKPT", help="a plain model's checkpoint for Grad-CAM")
        p.add_argument("--max-images", type=int, default=0, help="use the first N images (0 = all)")
        p.add_argument("--bins", type=int, default=50, help="histogram bins over the gate's range")
        p.add_argument("--batch-size", type=int, default=256)
        p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
        p.add_argument("--attr-images", type=int, default=32, help="images per class for channel ablation")
        p.add_argument("--no-singles", action="store_true", help="remove SE per stage only, not per block")
        p.add_argument("--no-progress", action="store_true")
        p.epilog = "dataset options: --data.name NAME --data.root DIR (default: the checkpoint's)"

    def run(self, args, overrides):
        from .analyze import AnalyzeOptions, run_analysis  # noqa: PLC0415

        if args.max_images < 0 or args.bins < 1 or args.batch_size < 1:
            raise UserError("--max-images must be >= 0, --bins and --batch-size >= 1")
        opt = AnalyzeOptions(split=args.split, classes=args.classes, blocks=args.blocks,
                             compare=args.compare, max_images=args.max_images, bins=args.bins,
                             batch_size=args.batch_size, device=args.device,
                             attr_images=args.attr_images, singles=not args.no_singles,
                             progress=not args.no_progress)
        if bool(args.checkpoint) == bool(args.best):
            raise UserError("give either a CHECKPOINT or --best STUDY")
        checkpoint = args.checkpoint
        if args.best:
            from .report import best_checkpoint  # noqa: PLC0415

            checkpoint, row = best_checkpoint(args.results, args.best)
            print(f"best SE trial of {args.best}: {row['arm']} seed {row['seed']} "
                  f"({row['test_top1_err']:.2f}% test top-1 err) -> {checkpoint}")
        res = run_analysis(checkpoint, args.out, overrides, opt)
        sel = res["selectivity"]
        print(f"{res['images']} images; per block: η² (class selectivity), saturated share")
        for r in sel.itertuples(index=False):
            print(f"  {r.block:<8} η²={r.eta2:.3f}  saturated={r.saturated:.2f}  mean s={r.mean:.3f}")
        print(f"wrote {res['summary']}")
        return 0


@command
class ReportCommand(Command):
    name = "report"
    help = "paper-style tables, bootstrap CIs and figures of a study into <results>/<study>/report.md"

    def configure(self, p):
        p.add_argument("study", help="a study with collected results (results/<study>/runs.parquet)")
        p.add_argument("--results", default="results", help="results directory (default ./results)")
        p.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples")

    def run(self, args, overrides):
        from .report import write_report  # noqa: PLC0415

        if not Path(args.results).is_dir():
            raise UserError(f"results directory not found: {args.results}")
        path = write_report(args.results, args.study, n_boot=args.n_boot)
        print(path.read_text().split("## Differences")[0].rstrip())
        print(f"\nwrote {path}")
        return 0


@command
class CurvesCommand(Command):
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
        from . import curves  # noqa: PLC0415
        from .report import markdown  # noqa: PLC0415
        from .style import save  # noqa: PLC0415

        split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
        history = curves.load_history(args.runs, split(args.labels) if args.labels else None)
        summary = curves.run_summary(history)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        fig = curves.training_curves(history, split(args.metrics) or None, title=args.title)
        figs = save(fig, out / "training_curves")
        history.to_csv(out / "curves.csv", index=False)
        table = markdown(curves.SUMMARY_HEADER, curves.summary_rows(summary))
        (out / "summary.md").write_text(f"# {args.title}\n\n{table}\n![curves](training_curves.png)\n")
        print(table.rstrip())
        print(f"\nwrote {out / 'summary.md'}, {out / 'curves.csv'}, {', '.join(str(f) for f in figs)}")
        return 0
