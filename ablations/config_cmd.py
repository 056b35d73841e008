"""``senet config --study S --preset P``: the config a sweep's trials start from.

Registered through the ``senet.commands`` entry point as a :class:`senet.config_cmd.ConfigSource`,
so ``senet config`` (which lives in senet and never imports this package) gains the options.
"""
from __future__ import annotations

from senet import config
from senet.config_cmd import CONFIG_SOURCES, ConfigSource

from .studies import PRESETS, STUDIES, base_config, get_study


class StudySource(ConfigSource):
    def configure(self, p):
        p.add_argument("--study", default=None,
                       help=f"the base config of a study's trials ({', '.join(STUDIES.names())}); "
                            "its swept keys are marked")
        p.add_argument("--preset", default=None,
                       help=f"the recipe of a sweep preset ({', '.join(PRESETS.names())}; with --study: "
                            "default quick, as senet sweep)")
        p.add_argument("--spec", default=None, help="the YAML file of the custom study")

    def base(self, args, overrides):
        if not (args.study or args.preset or args.spec):
            return None
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


CONFIG_SOURCES.add("ablations", StudySource())
