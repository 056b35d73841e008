"""What ``senet config`` prints: every config key with its resolved value, default, choices and meaning.

The meanings are the comments on the dataclass fields of :mod:`senet.config` and :class:`senet.se.SEConfig`,
read from their source, so the comment beside a field stays the one place its meaning is written.
The choices come from the registries (a newly registered gate or backbone shows up by itself) and
from the fixed lists the config validates against.

:class:`ConfigCommand` is the command without a base config of its own to offer; the command that
``senet`` registers (:mod:`ablations.config_cmd`) adds the sweeps' (``--study``, ``--preset``).
"""
from __future__ import annotations

import ast
import functools
import inspect
import io
import json
import textwrap
import tokenize
import types
import typing
from dataclasses import fields, is_dataclass
from typing import TYPE_CHECKING, Any

from .cli import ConfiguredCommand, UserError

if TYPE_CHECKING:
    from .config import Config


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field: comment}`` from the ``name: type = default  # comment`` lines of a dataclass."""
    src = textwrap.dedent(inspect.getsource(cls))
    body = ast.parse(src).body[0].body
    at_line = {n.lineno: n.target.id for n in body
               if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    docs: dict[str, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT and tok.start[0] in at_line:
            docs[at_line[tok.start[0]]] = tok.string.lstrip("#").strip()
    return docs


def _flat_fields(cls: type, prefix: str = "") -> dict[str, tuple[type, str, Any]]:
    """``{dotted key: (owning dataclass, field name, field type)}`` in declaration order."""
    out: dict[str, tuple[type, str, Any]] = {}
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        typ = hints[f.name]
        if is_dataclass(typ):
            out.update(_flat_fields(typ, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = (cls, f.name, typ)
    return out


def _type_choices(typ: Any) -> list[str] | None:
    if typ is bool:
        return ["true", "false"]
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        inner = _type_choices(args[0]) if len(args) == 1 else None
        return None if inner is None else [*inner, "none"]
    return None


def _type_name(typ: Any) -> str:
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        return " | ".join("none" if a is type(None) else a.__name__ for a in typing.get_args(typ))
    return typ.__name__


def describe(cfg: Config) -> list[dict[str, Any]]:
    """One dict per flat key: ``key``, ``value``, ``default``, ``type``, ``choices`` (or None),
    ``help`` (the field's comment) and ``alias`` (its short CLI spelling, or None)."""
    from . import config

    values, defaults = config.flatten(cfg), config.flatten(config.Config())
    named = config.choices()  # keys whose value is one of a list of names
    aliases = {v: k for k, v in config.ALIASES.items()}
    rows = []
    for key, (owner, name, typ) in _flat_fields(config.Config).items():
        rows.append({"key": key, "value": values[key], "default": defaults[key], "type": _type_name(typ),
                     "choices": named.get(key) or _type_choices(typ),
                     "help": field_docs(owner).get(name, ""), "alias": aliases.get(key)})
    return rows


def _show(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v).lower()
    return repr(v) if v == "" else str(v)


class ConfigCommand(ConfiguredCommand):
    """``senet config``: the config of ``--config FILE`` (or the defaults), or of :meth:`base`, with the
    overrides on top, printed as text or JSON."""

    name = "config"
    help = "print the resolved config: every key's value, default, choices and meaning"
    config_help = "start from a JSON or YAML config (as senet train does)"
    #: The options :meth:`base` reads, named in the error when they come with ``--config``.
    base_options = ""

    def configure(self, p):
        super().configure(p)
        p.add_argument("--json", action="store_true", help="print one JSON list of {key, value, default, ...}")
        p.epilog = ("Overrides are the options of senet train: --key value (--se.gate tanh --optim.lr 0.05); "
                    "* marks a value that differs from the default.")

    def base(self, args, overrides: dict[str, str]) -> tuple[Config, str, dict[str, str]] | None:
        """A base config named by a subclass's own options: ``(config with the overrides applied, a
        title such as "study gate, preset quick", {key: note})`` when they were given, else None."""
        return None

    def run(self, args, overrides):
        picked = self.base(args, overrides)
        if picked and args.config:
            raise UserError(f"--config and {self.base_options} each give a base config; pass one")
        if picked:
            cfg, title, notes = picked
        else:
            cfg = self.config_from(args, overrides)
            title, notes = (f"from {args.config}" if args.config else "defaults") + (
                " with overrides" if overrides else ""), {}
        rows = describe(cfg)
        for r in rows:
            r["note"] = notes.get(r["key"])
        if args.json:
            print(json.dumps(rows, indent=1))
            return 0
        label = {r["key"]: r["key"] + (f" (--{r['alias']})" if r["alias"] else "") for r in rows}
        w_key = max(map(len, label.values()))
        w_val = min(24, max(len(_show(r["value"])) for r in rows))
        print(f"senet config ({title}); * = differs from the default")
        pad = " " * (w_key + 1 + 1 + w_val + 2)
        for r in rows:
            star = "*" if r["value"] != r["default"] else " "
            print(f"{label[r['key']]:<{w_key}}{star} {_show(r['value']):<{w_val}}  {r['help']}".rstrip())
            extra = [f"default {_show(r['default'])}"] if star == "*" else []
            if r["choices"]:
                extra.append("choices: " + ", ".join(r["choices"]))
            if r["note"]:
                extra.append(r["note"])
            for line in extra:  # long registries (the backbones) wrap under the value column
                print(textwrap.fill(line, width=max(100, len(pad) + 40), initial_indent=pad,
                                    subsequent_indent=pad + "  ", break_on_hyphens=False))
        return 0
