"""Planning a sweep before Ray starts: the study, its base config, arms, seeds and paths; every
planned trial with its identity; and which of them the results folder already records.

Each distinct trial is trained once. The sweep reads every ``<results>/*/runs.parquet`` (what is
committed: a fresh clone has the tables and no Ray folders) and looks each planned trial up by its
identity ``(config_id, seed)`` (:mod:`ablations.store`): a trial this study already records is
skipped, one another study records (``gate``'s sigmoid arm is ``reduction``'s r = 16) is copied
into this study's table with this study's arm label and ``reused_from``, and only the rest are
trained, in a new Tune experiment per launch.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from senet import config
from senet.errors import UserError
from senet.layout import StudyPaths, study_paths
from senet.recipe import PRECISION_COLUMN, recipe_hash
from senet.sequential import Design, design_of
from senet.storage import Location

from . import store
from .storage import Storage, open_storage, refresh
from .studies import PRESETS, Study, base_config, get_study
from .study_json import meta_axis_keys, read_study
from .trial import trial_flat


@dataclass(frozen=True)
class SweepOptions:
    study: str
    preset: str = "quick"
    seeds: int | None = None  # default: the study's at the preset (on --resume: the sweep's own)
    results: str = "results"
    storage: str | None = None  # a folder or an object store's URI; default: <results>/<study>/ray
    address: str | None = None  # default: $RAY_ADDRESS, else an in-process local Ray
    cpus_per_trial: float | None = None  # None: RUN_DEFAULTS (on --resume: what the sweep started with)
    gpus_per_trial: float | None = None  # None: 1 when the cluster has GPUs, else 0
    max_concurrent: int | None = None  # 0: as many as the resources allow
    max_failures: int | None = None  # retries of a crashed trial, each from its last checkpoint
    resume: bool = False
    model: str | None = None
    spec: str | None = None  # YAML file of the custom study
    overrides: Mapping[str, Any] = field(default_factory=dict)
    progress_every_s: float = 30.0
    verbose: bool = False  # Ray's and Tune's own output too
    dry_run: bool = False  # say what would be trained and reused; start nothing, write nothing
    until_resolved: bool = False  # add seeds in blocks until every arm is decided (ablations.sequencer)
    max_seeds: int | None = None  # with until_resolved: the cap (default: the study's declared design)
    aim: str = "both"  # with until_resolved: which comparisons get seeds (ablations.sequencer.AIMS)
    arms: tuple[str, ...] | None = None  # only these arms (the reference is always included)


@dataclass(frozen=True)
class Plan:
    """Everything decided before Ray starts: the study, its base config, arms, seeds and paths."""

    study: Study
    preset: str
    seeds: int
    base: config.Config
    arms: tuple
    paths: StudyPaths
    storage: Path  # the folder this machine reads Tune's storage in (an object store's: a local copy)
    experiment: str
    stored: Mapping[str, Any] | None = None  # on --resume: the experiment's meta as it was started
    remote: Location | None = None  # the object store Tune writes to, when --storage is a URI
    design: Design | None = None  # a sequential sweep's design (its cap is ``seeds``)
    aim: str = "both"  # a sequential sweep's comparisons: the report's, the findings' or both

    @property
    def results_dir(self) -> Path:
        return self.paths.dir

    @property
    def experiment_path(self) -> Path:
        return self.storage / self.experiment

    @property
    def store(self) -> Storage:
        return Storage(self.storage, self.remote)

    @property
    def base_flat(self) -> dict[str, Any]:
        """The flat base config the trials start from (without ``run.out``, which each trial sets)."""
        flat = config.flatten(self.base)
        flat.pop("run.out", None)
        return flat

    @property
    def n_trials(self) -> int:
        n = len(self.arms) * self.seeds
        for values in self.study.nuisance.values():
            n *= len(values)
        return n


@dataclass(frozen=True)
class Cell:
    """One planned trial: an arm, a seed and the nuisance values, with its identity ``config_id``
    and the config it trains."""

    arm: str
    seed: int
    nuisance: tuple[tuple[str, Any], ...]
    config_id: str
    cfg: config.Config | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> tuple[str, int]:
        return self.config_id, self.seed

    @property
    def name(self) -> str:
        return f"{self.arm} seed {self.seed}" + "".join(f" {k}={v}" for k, v in self.nuisance)

    def params(self) -> dict[str, Any]:
        return {"arm": self.arm, "seed": self.seed, **dict(self.nuisance)}


@dataclass(frozen=True)
class Triage:
    """Where each planned trial of a study comes from."""

    recorded: tuple[Cell, ...]  # already in this study's table
    reused: tuple[tuple[Cell, dict], ...]  # in another study's table: copied, with that row
    earlier: tuple[Cell, ...]  # trained by an earlier study of the same command (dry runs)
    todo: tuple[Cell, ...]  # to train


def plan(opts: SweepOptions) -> Plan:
    study = get_study(opts.study, opts.spec)
    preset = PRESETS.get(opts.preset)
    overrides = dict(opts.overrides)
    if opts.model:
        overrides["model.name"] = opts.model
    axis = set(study.axis.split(","))
    clash = sorted(k for k in overrides
                   if config.ALIASES.get(k, k) in axis or config.ALIASES.get(k, k) == "seed")
    if clash:
        raise UserError(f"--{clash[0]} is swept by the {study.name} study (its axis or the seeds); "
                        "drop it or use --seeds N")
    base = base_config(study, preset.name, overrides)
    arms = select_arms(study.resolve_arms(base), opts.arms, study)
    paths = study_paths(Path(opts.results).expanduser().absolute(), study.name)
    design = sequential_design(opts, paths, preset.name)
    if design is not None:
        seeds = design.max_seeds
    else:
        seeds = study.seeds_at(preset.name) if opts.seeds is None else int(opts.seeds)
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    where = open_storage(opts.storage, paths)  # an object store is checked here, before Ray starts
    refresh(where, study.name)
    p = Plan(study, preset.name, seeds, base, arms, paths, where.local,
             launch_name(study.name, preset.name, paths, where.local, latest=opts.resume), remote=where.remote,
             design=design, aim=opts.aim)
    cells(p)  # a bad arm or two arms of one configuration fail here, before Ray starts
    return p


def select_arms(arms: tuple, wanted: tuple[str, ...] | None, study: Study) -> tuple:
    """The study's arms named in ``wanted`` (``--arms``), in the study's order, with the reference."""
    if not wanted:
        return arms
    labels = [a.label for a in arms]
    unknown = [w for w in wanted if w not in labels]
    if unknown:
        raise UserError(f"--arms: {', '.join(unknown)} is not an arm of the {study.name} study "
                        f"({', '.join(labels)})")
    keep = {*wanted, study.reference_arm}
    return tuple(a for a in arms if a.label in keep)


def sequential_design(opts: SweepOptions, paths: StudyPaths, preset: str) -> Design | None:
    """The design of a sequential sweep: the one the study declared for ``preset`` in its study.json
    when its first sequential sweep started (else the preset's default), with ``--max-seeds`` as
    the cap; None for a sweep of a fixed number of seeds."""
    if not opts.until_resolved:
        if opts.max_seeds is not None or opts.aim != "both":
            raise UserError("--max-seeds and --aim go with --until-resolved (a fixed sweep takes --seeds N)")
        return None
    if get_study(opts.study, opts.spec).nuisance:
        raise UserError(f"--until-resolved compares one result per arm and seed; the {opts.study} study also "
                        "sweeps nuisance values: run it with --seeds N")
    if opts.seeds is not None:
        raise UserError("--seeds fixes the seeds per arm; --until-resolved adds them until each arm is "
                        "decided: give the cap with --max-seeds N")
    design, _ = design_of(read_study(paths), preset)
    if opts.max_seeds is not None:
        if opts.max_seeds < design.min_seeds:
            raise UserError(f"--max-seeds must be >= the design's {design.min_seeds} seeds before any arm "
                            f"closes, got {opts.max_seeds}")
        design = replace(design, max_seeds=int(opts.max_seeds))
    return design


def launch_name(study: str, preset: str, paths: StudyPaths, storage: Path, latest: bool = False) -> str:
    """A new Tune experiment per launch, so launches never mix: ``<study>-<preset>`` the first time,
    then ``-2``, ``-3``, ... (counting the folders on disk and the launches study.json records, so a
    fresh clone does not reuse a name). ``latest``: the newest launch with Tune state on disk (resume)."""
    first = f"{study}-{preset}"
    pattern = re.compile(rf"{re.escape(first)}(?:-(\d+))?")
    names = {d.name for d in storage.iterdir() if d.is_dir()} if storage.is_dir() else set()
    experiments = read_study(paths).get("experiments")
    if isinstance(experiments, dict):
        names |= set(experiments)
    used = {int(m.group(1) or 1): n for n in names if (m := pattern.fullmatch(n))}
    if latest:
        started = [i for i, n in used.items() if any((storage / n).glob("experiment_state-*.json"))]
        return used[max(started)] if started else first
    n = max(used, default=0) + 1
    return first if n == 1 else f"{first}-{n}"


def cells(p: Plan) -> tuple[Cell, ...]:
    """Every planned trial, seed by seed (all arms of seed 0 first: an interrupted sweep leaves whole
    seeds, which paired comparisons need), each with the config it trains (built once, in the
    order of :mod:`ablations.trial`). Two cells that are one configuration are refused: the table
    keeps one row per identity, so one arm would silently vanish."""
    nuisance = list(p.study.nuisance.items())
    base = p.base_flat
    out: list[Cell] = []
    seen: dict[tuple[str, int], Cell] = {}
    for seed in range(p.seeds):
        for arm in p.arms:
            for values in itertools.product(*(v for _, v in nuisance)):
                point = tuple(zip((k for k, _ in nuisance), values, strict=True))
                cfg = config.from_flat(trial_flat(base, arm.overrides, dict(point), seed))
                flat = {**config.flatten(cfg), PRECISION_COLUMN: store.trial_precision(cfg)}
                cell = Cell(arm.label, seed, point, store.config_id(flat), cfg)
                if cell.key in seen:
                    raise UserError(f"study {p.study.name!r}: {seen[cell.key].name} and {cell.name} are the "
                                    "same configuration; give each arm a different setting")
                seen[cell.key] = cell
                out.append(cell)
    return tuple(out)


def triage(p: Plan, found: Mapping[tuple[str, int], list[dict]], earlier: frozenset = frozenset()) -> Triage:
    """Sort the planned trials by what the results folder already records (:func:`store.recorded`)."""
    recorded, reused, before, todo = [], [], [], []
    for cell in cells(p):
        rows = found.get(cell.key, [])
        if any(r.get("_table") == p.study.name for r in rows):
            recorded.append(cell)
        elif rows:
            reused.append((cell, rows[0]))
        elif cell.key in earlier:
            before.append(cell)
        else:
            todo.append(cell)
    return Triage(tuple(recorded), tuple(reused), tuple(before), tuple(todo))


def reused_rows(p: Plan, meta: Mapping[str, Any], reused) -> list[dict]:
    """Rows of other studies' tables relabelled as this study's arms: its study, arm and recipe (the
    recipe hash leaves out this study's axis keys), and ``reused_from`` naming where it was trained."""
    out = []
    for cell, row in reused:
        new = {k: v for k, v in row.items() if k != "_table"}
        new.update(study=p.study.name, arm=cell.arm, reused_from=store.origin(row))
        new["checkpoint"] = store.rebase_checkpoint(new.get("checkpoint"), row["_table"])
        new["recipe"] = recipe_hash(new, meta_axis_keys(meta), p.study.nuisance)
        out.append(new)
    return out


def study_meta(p: Plan) -> dict:
    """The experiment as it is started; ``study.json`` keeps one per experiment
    (:func:`ablations.study_json.write_study_json`)."""
    if p.stored is not None:
        return dict(p.stored)
    s = p.study
    base = p.base_flat
    meta = {"name": s.name, "title": s.title, "paper_table": s.paper_table, "axis": s.axis,
            "reference_arm": s.reference_arm, "arms": [a.to_dict() for a in p.arms], "preset": p.preset,
            "seeds": p.seeds, "nuisance": {k: list(v) for k, v in s.nuisance.items()},
            "average_nuisance": bool(s.average_nuisance), "fixed": dict(s.fixed), "doc": s.doc,
            "experiment": p.experiment, "base": base}
    if p.design is not None:
        meta["until_resolved"] = {**p.design.to_dict(), "aim": p.aim}
    from senet.provenance import git_commit  # loads torch, which a dry run of fixed precision need not

    code = git_commit()  # the checkout the launch ran from; each row also records its trial's commit
    meta.update(code_commit=code["git_commit"], code_dirty=code["git_dirty"])
    meta["recipe"] = recipe_hash({**base, PRECISION_COLUMN: store.trial_precision(p.base)},
                                 meta_axis_keys(meta), s.nuisance)
    return meta
