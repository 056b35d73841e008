"""The ``senet`` command line: every command of the suite, declared one way.

A command is a :class:`Command` subclass registered with the :func:`command` decorator: its ``name``
and ``help``, its options in ``configure`` and its work in ``run``. The library's commands are here
(``models``, ``flops``) and in :mod:`senet.train_cmd`; the sweeps' and the analysis' in the modules
that :data:`COMMAND_MODULES` lists. Those are imported when the parser is built, not when this module
is, so importing the library loads no sweep or analysis code; a module that fails to import is an
error, never a missing command.

A command module imports, at its top, only what its options need: its ``run`` imports the rest
(torch, Ray, pandas), so ``senet --help`` loads none of them.

User errors (:class:`senet.errors.UserError`: bad keys, unknown names, bad values; and a missing or
unreadable file the user named) print one line on stderr and exit with 2; set ``SENET_DEBUG=1`` to see
the traceback. Any other exception is a bug and keeps its traceback, so it cannot pass for a typo.
No parser accepts abbreviated options (``--seed`` is not ``--seeds``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from importlib import import_module
from typing import Any

from .errors import UserError, UserValueError  # noqa: F401 - re-exported: commands import them from here
from .registry import Registry


class Command:
    """A subcommand. ``overrides`` = accepts ``--key value`` config overrides (``--se.gate tanh``)."""

    name = ""
    help = ""
    overrides = False
    #: Further exception types that this command's code raises for bad user input (a package whose
    #: light modules cannot import :mod:`senet.errors`); the CLI prints them as one line too.
    user_errors: tuple[type[Exception], ...] = ()

    def configure(self, p: argparse.ArgumentParser) -> None:
        pass

    def run(self, args: argparse.Namespace, overrides: dict[str, Any]) -> int:
        raise NotImplementedError


class ListingCommand(Command):
    """A command that lists what is registered: ``rows()`` printed as text, or as JSON with ``--json``."""

    def configure(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print JSON")

    def rows(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def as_json(self, rows: list[dict[str, Any]]) -> Any:
        return rows

    def print_text(self, rows: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def run(self, args: argparse.Namespace, overrides: dict[str, Any]) -> int:
        rows = self.rows()
        if args.json:
            print(json.dumps(self.as_json(rows), indent=1))
        else:
            self.print_text(rows)
        return 0


class ConfiguredCommand(Command):
    """A command that reads a run config: ``--config FILE`` with ``--key value`` overrides on top."""

    overrides = True
    config_help = "JSON or YAML config (nested or flat keys)"

    def configure(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="FILE", help=self.config_help)

    @staticmethod
    def config_from(args: argparse.Namespace, overrides: dict[str, Any], base=None):
        """The overrides applied to ``--config FILE`` when given, else to ``base`` (default: the defaults)."""
        from . import config  # loads torch (through senet.se): only commands that need a config pay for it

        return config.from_flat(overrides, config.load(args.config) if args.config else base)


COMMANDS: Registry[Command] = Registry("command")
#: The modules that declare the other commands, in the order ``senet --help`` lists them (after this
#: module's own). :func:`build_parser` imports them; importing the library imports none of them.
COMMAND_MODULES: tuple[str, ...] = (
    "senet.train_cmd", "ablations.config_cmd", "ablations.cli", "analysis.cli")


def command(cls: type[Command]) -> type[Command]:
    """Register a command: ``@command`` on a :class:`Command` subclass that sets ``name`` and ``help``."""
    COMMANDS.add(cls.name, cls())
    return cls


# Options that several commands take mean the same in each; these add them with the same words.
#: The sweep presets (``ablations.studies.PRESETS``; a test checks the two agree).
PRESET_NAMES = "smoke | quick | standard | full"


def results_option(p: argparse.ArgumentParser, role: str = "") -> None:
    """``--results DIR``: the folder of the studies' results; ``role`` (", where ...") follows "the
    results folder" in the help."""
    p.add_argument("--results", default="results", metavar="DIR",
                   help=f"the results folder{role} (default: results)")


def preset_option(p: argparse.ArgumentParser, role: str, default: str | None = None) -> None:
    """``--preset PRESET``: a sweep preset, the named recipe (data, model, epochs, seeds) a study's
    trials train at; ``role`` says what the command does with it."""
    p.add_argument("--preset", default=default, metavar="PRESET",
                   help=f"a sweep preset ({PRESET_NAMES}): {role}")


def parse_overrides(extra: list[str]) -> dict[str, str]:
    """``["--se.gate", "tanh", "--seed=3"]`` -> ``{"se.gate": "tanh", "seed": "3"}``."""
    out: dict[str, str] = {}
    i = 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--") or tok == "--":
            raise UserError(f"unexpected argument {tok!r}; options look like --key value")
        key, eq, value = tok[2:].partition("=")
        if not eq:
            if i + 1 >= len(extra) or extra[i + 1].startswith("--"):
                raise UserError(f"option --{key} needs a value")
            value = extra[i + 1]
            i += 1
        out[key] = value
        i += 1
    return out


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that never expands abbreviations: argparse would take ``--seed 3`` for
    ``--seeds 3``. Subparsers (a command's own too) are of this class, so none can turn it back on."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    for module in COMMAND_MODULES:
        import_module(module)
    parser = Parser(
        prog="senet", description="Squeeze-and-Excitation networks: models, training, ablations, analysis.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help, allow_abbrev=False)
        cmd.configure(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = bool(os.environ.get("SENET_DEBUG"))
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if not args.command:
            parser.print_help()
            return 2
        cmd = COMMANDS.get(args.command)
        if extra and not cmd.overrides:
            raise UserError(f"unrecognized arguments: {' '.join(extra)}")
        try:
            return int(cmd.run(args, parse_overrides(extra)) or 0)
        except cmd.user_errors as e:
            raise UserError(str(e)) from e
    except KeyboardInterrupt:
        print("senet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `senet models | head`
        sys.stderr.close()
        return 0
    # a missing or unreadable path is almost always one the user named; a ValueError, KeyError, ...
    # that is not a UserError is a bug and must keep its traceback
    except (UserError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        if debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"senet: error: {msg}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------------------------------
# senet models, senet flops
# ---------------------------------------------------------------------------------------------
@command
class ModelsCommand(ListingCommand):
    name = "models"
    help = "list the registered backbones (each has an se_ twin with the paper's default SE)"

    def rows(self):
        from .models import MODELS

        return [dict(name=n, family=s.family, input_size=s.input_size, num_classes=s.num_classes,
                     se=s.se_default, doc=s.doc) for n, s in MODELS.items()]

    def print_text(self, rows):
        w = max(len(r["name"]) for r in rows)
        for r in rows:
            print(f"{r['name']:<{w}}  {r['family']:<12} {r['input_size']:>4}px  {r['doc']}")


@command
class FlopsCommand(Command):
    name = "flops"
    help = "parameters and FLOPs (1 multiply-add = 1 FLOP), per block and in total"
    overrides = True

    def configure(self, p):
        p.add_argument("model", help="a registered model (see `senet models`)")
        p.add_argument("--input-size", type=int, default=None, help="input side (default: the model's)")
        p.add_argument("--num-classes", type=int, default=0, help=argparse.SUPPRESS)  # = --model.num_classes
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.epilog = "SE and model options: --se.reduction R --se.squeeze S --se.gate G " \
                   "--se.placement P --se.stages 2,3,4,5 --se.bias true|false --model.stride_in_1x1 true|false " \
                   "--model.num_classes N --model.in_chans C (the model is the positional argument)"

    def run(self, args, overrides):
        from . import config
        from .complexity import UncountedWorkWarning, complexity
        from .models import MODELS, build_model

        bad = [k for k in overrides if not (k.startswith("se.") or k.startswith("model."))]
        if bad:
            raise UserError(f"flops takes --se.* and --model.* options, not --{bad[0]}")
        if "model.name" in overrides:
            raise UserError("flops takes the model as its argument (senet flops MODEL), not --model.name")
        if args.input_size is not None and args.input_size <= 0:
            raise UserError(f"--input-size must be a positive number of pixels, got {args.input_size}")
        MODELS.get(args.model)  # an unknown name is the first thing to report
        cfg = config.from_flat({"model.name": args.model, **overrides})
        if args.num_classes:  # the older spelling of --model.num_classes
            if cfg.model.num_classes and args.num_classes != cfg.model.num_classes:
                raise UserError(f"--num-classes {args.num_classes} and --model.num_classes "
                                f"{cfg.model.num_classes} disagree; give one")
            cfg = config.from_flat({"model.num_classes": args.num_classes}, cfg)
        num_classes = cfg.model.num_classes
        for opt, v in (("--model.num_classes", num_classes), ("--model.in_chans", cfg.model.in_chans)):
            if v < 0:
                raise UserError(f"{opt} must be a positive number (0: the model's), got {v}")
        se = config.se_for(cfg)
        kw = {} if cfg.model.stride_in_1x1 is None else {"stride_in_1x1": cfg.model.stride_in_1x1}
        model = build_model(args.model, num_classes=num_classes or None,
                            in_chans=cfg.model.in_chans or None, se=se, **kw)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UncountedWorkWarning)
            c = complexity(model, args.input_size)  # None: the model's own input size
        for w in caught:  # one line each, not Python's file:line and source-line form
            print(f"senet: warning: {w.message}", file=sys.stderr)
        if args.json:
            d = c.to_dict()
            d.update(model=args.model, gflops=c.flops / 1e9, se=None if se is None else config.flatten(se))
            print(json.dumps(d))
            return 0
        print(f"{args.model} at {c.input_size[0]}×{c.input_size[1]}")
        print(f"{'block':<12} {'SE':<8} {'params':>11} {'MFLOPs':>9} {'SE params':>10} {'SE MFLOPs':>9} {'C→C/r':>10}")
        for b in c.blocks:
            width = b.se_width
            print(f"{b.module:<12} {b.name:<8} {b.params:>11,} {b.flops / 1e6:>9.2f} "
                  f"{b.se_params:>10,} {b.se_flops / 1e6:>9.3f} {width:>10}")
        print(f"total: {c.params:,} params ({c.params / 1e6:.2f}M), {c.flops / 1e9:.4f} GFLOPs; "
              f"SE: {c.se_params:,} params, {c.se_flops / 1e9:.4f} GFLOPs")
        return 0


if __name__ == "__main__":  # python -m senet.cli: the commands register in senet.cli, not in __main__
    from senet.cli import main as _main

    sys.exit(_main())
