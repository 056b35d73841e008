"""``senet sweep --resume``: continue a launch as it was started, never as today's command line says.

Tune restores each trial with the parameters it was started with, so the plan of a resumed sweep is
the stored one (study.json's entry for the experiment, else the ``meta`` parameter of its trials),
and arguments that would change it are refused instead of being silently ignored.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from senet import config
from senet.errors import UserError
from senet.records import trial_index
from senet.records.layout import read_json
from senet.records.study_file import experiment_meta
from senet.sequential import Design

from .plan import Cell, Plan, SweepOptions
from .studies import Arm


def stored_meta(p: Plan) -> dict | None:
    """The experiment's meta as it was started: from study.json, else from its trials' parameters."""
    got = experiment_meta(p.paths, p.experiment)
    if got:
        return got
    for params_file in sorted(p.experiment_path.glob("*/params.json")):  # sweeps from before study.json kept it
        params = read_json(params_file)
        if isinstance(params, dict) and params.get("meta"):
            return {**params["meta"], "experiment": p.experiment, "base": params.get("base", {})}
    return None


def _typed(key: str, value: Any) -> Any:
    try:
        return config.flatten(config.from_flat({key: value}))[key]
    except UserError:
        return value


def resume_plan(p: Plan, opts: SweepOptions) -> Plan:
    """The plan of the experiment being resumed: what it was started with, not today's command line.

    Arguments that would change it (other seeds, config overrides, a changed spec, other trial
    resources) are refused: Tune restores the trials as they were, so they could only be ignored.
    """
    stored = stored_meta(p)
    if stored is None:
        return p
    again = f"--resume continues {p.experiment} as it was started"
    other = "or start a new sweep with another --results"
    if opts.seeds is not None and int(opts.seeds) != int(stored.get("seeds", -1)):
        raise UserError(f"{again}, with {stored.get('seeds')} seeds; drop --seeds {opts.seeds}, {other}")
    stored_base = stored.get("base") or {}
    given = {config.ALIASES.get(k, k) for k in opts.overrides} | ({"model.name"} if opts.model else set())
    new_base = config.flatten(p.base)
    for key in sorted(given):
        if key in stored_base and _typed(key, stored_base[key]) != new_base.get(key):
            raise UserError(f"{again}, with {key}={stored_base[key]}; drop --{key}, {other}")
    if opts.spec:
        now = {"arms": [a.to_dict() for a in p.arms], "nuisance": {k: list(v) for k, v in p.study.nuisance.items()},
               "fixed": dict(p.study.fixed)}
        for part, value in now.items():
            if json.dumps(value, sort_keys=True) != json.dumps(stored.get(part, value), sort_keys=True):
                raise UserError(f"{again}, but {opts.spec} now gives other {part}; restore the spec, {other}")
    for opt, value in (stored.get("run_options") or {}).items():
        mine = getattr(opts, opt, None)
        if mine is not None and value is not None and float(mine) != float(value):
            raise UserError(f"{again}, with --{opt.replace('_', '-')} {value:g}; drop "
                            f"--{opt.replace('_', '-')} {mine:g}, {other}")
    arms = tuple(Arm(a["arm"], dict(a.get("overrides") or {}), a.get("paper_top1"), a.get("paper_top5"))
                 for a in stored.get("arms", []))
    study = replace(p.study, arms=arms or p.arms, axis=stored.get("axis", p.study.axis),
                    reference_arm=stored.get("reference_arm", p.study.reference_arm),
                    nuisance={k: tuple(v) for k, v in (stored.get("nuisance") or {}).items()},
                    fixed=dict(stored.get("fixed") or {}),
                    average_nuisance=bool(stored.get("average_nuisance", False)))
    try:
        base = config.from_flat(stored_base) if stored_base else p.base
    except UserError:  # keys renamed since it started; Tune still restores the trials' own configs
        base = p.base
    sequential = stored.get("until_resolved")
    if opts.until_resolved and not sequential:
        raise UserError(f"{again}, with a fixed number of seeds; drop --until-resolved, {other}")
    sequential = dict(sequential) if isinstance(sequential, dict) else None
    aim = sequential.pop("aim", "both") if sequential is not None else p.aim
    design = Design.from_dict(sequential) if sequential is not None else None
    return replace(p, study=study, arms=study.arms, seeds=int(stored.get("seeds", p.seeds)), base=base,
                   stored={**stored, "experiment": p.experiment}, design=design, aim=aim)


def resume_command(opts: SweepOptions, p: Plan) -> str:
    """The command that continues this sweep, from any folder: what names the experiment (study,
    spec, preset, results, storage) and where it runs (address); the rest is stored with it."""
    args = ["senet", "sweep", opts.study]
    if opts.spec:
        args += ["--spec", str(Path(opts.spec).expanduser().absolute())]
    args += ["--preset", p.preset, "--results", str(p.paths.results)]
    if opts.storage:
        args += ["--storage", str(p.tune_storage)]
    if opts.address:
        args += ["--address", opts.address]
    return shlex.join([*args, "--resume"])


def interrupted_launches(df: pd.DataFrame | None, todo: tuple[Cell, ...]) -> list[str]:
    """The launches that left some of ``todo`` unfinished (stopped or failed), by name, from the
    study's rows ``df`` (:func:`ablations.collect.known_table`)."""
    if df is None or df.empty or "experiment" not in df:
        return []
    df = trial_index.with_ids(df[~df["status"].isin(trial_index.FINISHED)])
    keys = {c.key for c in todo}
    return sorted({str(r["experiment"]) for r in df.to_dict("records") if trial_index.key_of(r) in keys})
