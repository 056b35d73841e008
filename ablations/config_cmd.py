"""``senet config``, which can also start from the config a sweep's trials start from
(``--study S --preset P``, ``--spec FILE`` for the custom study).

What it prints is :mod:`senet.config_cmd`'s; the command is declared here because the studies and
presets are this package's. The studies are imported when it runs, not for its options.
"""
from __future__ import annotations

from senet import config_cmd
from senet.cli import command, preset_option


@command
class ConfigCommand(config_cmd.ConfigCommand):
    base_options = "--study/--preset/--spec"

    def configure(self, p):
        super().configure(p)
        p.add_argument("--study", default=None,
                       help="start from the config of a study's trials (see `senet studies`); its swept "
                            "keys are marked")
        preset_option(p, "start from its recipe (with --study: default quick, as senet sweep)")
        p.add_argument("--spec", default=None, metavar="FILE", help="the YAML file of the custom study")

    def base(self, args, overrides):
        if not (args.study or args.preset or args.spec):
            return None
        from senet import config

        from .studies import PRESETS, base_config, get_study

        preset = PRESETS.get(args.preset or "quick").name
        if not args.study:
            if args.spec:
                raise config.ConfigError("--spec describes the custom study: add --study custom")
            user = {config.ALIASES.get(k, k): v for k, v in overrides.items()}
            return config.from_flat({**PRESETS.get(preset).overrides, **user}), f"preset {preset}", {}
        study = get_study(args.study, args.spec)
        cfg = base_config(study, preset, overrides)
        notes = {"seed": "swept: one trial per seed (senet sweep --seeds N)"}
        arms = study.resolve_arms(cfg)
        swept = dict.fromkeys([*study.axis.split(","), *(k for a in arms for k in a.overrides)])
        for key in swept:
            values = [(a.label, str(a.overrides[key])) for a in arms if key in a.overrides]
            notes[key] = f"swept by the {study.name} study: " + ", ".join(
                label if v in label else f"{label}={v}" for label, v in values)
        for key, values in study.nuisance.items():
            notes[key] = "swept for every arm: " + ", ".join(map(str, values))
        for key in study.fixed:
            notes.setdefault(key, f"held fixed by the {study.name} study")
        return cfg, f"study {study.name}, preset {preset}", notes
