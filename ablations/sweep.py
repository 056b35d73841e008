"""Run a study on Ray Tune: every arm × seed (× nuisance value) as one trial, FIFO, to the end.

No early stopping: every cell of an ablation table must train fully, so the default FIFO scheduler
runs each trial for the preset's epochs (ASHA and friends would cut the weaker arms short and bias
the table). Without an address Ray starts in-process on this machine, listening on loopback only;
with ``--address`` (or ``RAY_ADDRESS``) the sweep joins an existing cluster after checking, within
seconds, that the address answers and accepts this machine's credentials.

Each distinct trial is trained once. Before Ray starts, the sweep reads every
``<results>/*/runs.parquet`` (what is committed: a fresh clone has the tables and no Ray folders)
and looks each planned trial up by its identity ``(config_id, seed)`` (:mod:`ablations.store`): a
trial this study already records is skipped, one another study records (``gate``'s sigmoid arm is
``reduction``'s r = 16) is copied into this study's table with this study's arm label and
``reused_from``, and only the rest run on Ray, in a new Tune experiment per launch. So asking for 5
seeds after 3 trains the 2 new ones, and an interrupted sweep run again trains what it lacks.

Layout on disk::

    <results>/<study>/study.json              the study's arms, axis, paper numbers; every launch's
                                              preset, seeds and code commit; the rows recorded
    <results>/<study>/ray/<study>-<preset>[-n]/ Tune's storage of launch n: trial folders, checkpoints
    <results>/<study>/runs.parquet, runs.csv  one row per trial (senet collect): what git keeps
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from senet import config as C
from senet.errors import UserError
from senet.recipe import PRECISION_COLUMN, recipe_hash

from . import store
from .studies import PRESETS, Arm, Study, base_config, get_study, study_names

#: Experiment-state snapshots every second: after a SIGKILL of the driver, trials that finished
#: since the last snapshot would otherwise be run again on --resume (a snapshot costs ~20 ms).
_TUNE_ENV = {
    "TUNE_GLOBAL_CHECKPOINT_S": "1",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no tensorboardX logger; JSON and CSV are passed in
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_DEDUP_LOGS": "0",
}
#: Without --verbose the sweep's own table is the only progress output: Tune's legacy engine at
#: verbosity 0 prints nothing (the new one prints its banners at every verbosity).
_QUIET_ENV = {"RAY_AIR_NEW_OUTPUT": "0"}
#: Ray's switch for single-machine mode: node address 127.0.0.1 and every server bound to loopback.
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: Environment variables forwarded to the trials (fault injection, scratch location).
_FORWARD = ("SENET_FAIL_ONCE_AT_EPOCH", "SENET_FAIL_ONCE_DIR", "SENET_SCRATCH", "SENET_DATA")
#: How trials run: fixed when a sweep starts (its trials keep their resources and retries on --resume).
RUN_DEFAULTS = {"cpus_per_trial": 1.0, "gpus_per_trial": None, "max_concurrent": 0, "max_failures": 3}
#: Trial statuses that count as finished: a diverged arm is a result (the loss became NaN), not a failure.
FINISHED = store.FINISHED


@dataclass(frozen=True)
class SweepOptions:
    study: str
    preset: str = "quick"
    seeds: int | None = None  # default: the study's at the preset (on --resume: the sweep's own)
    results: str = "results"
    storage: str | None = None  # default: <results>/<study>/ray
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


@dataclass(frozen=True)
class Plan:
    """Everything decided before Ray starts: the study, its base config, arms, seeds and paths."""

    study: Study
    preset: str
    seeds: int
    base: C.Config
    arms: tuple
    results_dir: Path
    storage: Path
    experiment: str
    stored: Mapping[str, Any] | None = None  # on --resume: the experiment's meta as it was started

    @property
    def experiment_path(self) -> Path:
        return self.storage / self.experiment

    @property
    def n_trials(self) -> int:
        n = len(self.arms) * self.seeds
        for values in self.study.nuisance.values():
            n *= len(values)
        return n


@dataclass(frozen=True)
class Cell:
    """One planned trial: an arm, a seed and the nuisance values, with its identity ``config_id``."""

    arm: str
    seed: int
    nuisance: tuple[tuple[str, Any], ...]
    config_id: str

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


@dataclass(frozen=True)
class SweepOutcome:
    """What a sweep left: finished trials (completed or diverged) and a line for each that did not."""

    results_dir: Path
    total: int
    finished: int
    unfinished: tuple[str, ...]
    resume_command: str
    trained: int = 0  # trials this launch ran on Ray (or resumed)
    reused: int = 0  # rows copied from other studies' tables
    recorded: int = 0  # trials the study's table already held

    @property
    def ok(self) -> bool:
        return self.finished == self.total and not self.unfinished


def plan(opts: SweepOptions) -> Plan:
    study = get_study(opts.study, opts.spec)
    preset = PRESETS.get(opts.preset)
    overrides = dict(opts.overrides)
    if opts.model:
        overrides["model.name"] = opts.model
    axis_keys = set(study.axis.split(","))
    clash = sorted(k for k in overrides if C.ALIASES.get(k, k) in axis_keys or C.ALIASES.get(k, k) == "seed")
    if clash:
        raise UserError(f"--{clash[0]} is swept by the {study.name} study (its axis or the seeds); "
                        "drop it or use --seeds N")
    base = base_config(study, preset.name, overrides)
    arms = study.resolve_arms(base)
    for _cfg in _trial_configs(base, arms, study.nuisance):  # a bad arm fails here, before Ray starts
        pass
    seeds = study.seeds_at(preset.name) if opts.seeds is None else int(opts.seeds)
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    results_dir = Path(opts.results).expanduser().absolute() / study.name
    storage = Path(opts.storage).expanduser().absolute() if opts.storage else results_dir / "ray"
    return Plan(study, preset.name, seeds, base, arms, results_dir, storage,
                launch_name(study.name, preset.name, results_dir, storage, latest=opts.resume))


def launch_name(study: str, preset: str, results_dir: Path, storage: Path, latest: bool = False) -> str:
    """A new Tune experiment per launch, so launches never mix: ``<study>-<preset>`` the first time,
    then ``-2``, ``-3``, ... (counting the folders on disk and the launches study.json records, so a
    fresh clone does not reuse a name). ``latest``: the newest launch with Tune state on disk (resume)."""
    first = f"{study}-{preset}"
    pattern = re.compile(rf"{re.escape(first)}(?:-(\d+))?")
    names = {d.name for d in storage.iterdir() if d.is_dir()} if storage.is_dir() else set()
    try:
        names |= set(json.loads((results_dir / "study.json").read_text()).get("experiments") or {})
    except (OSError, ValueError, AttributeError):
        pass
    used = {int(m.group(1) or 1): n for n in names if (m := pattern.fullmatch(n))}
    if latest:
        started = [i for i, n in used.items() if any((storage / n).glob("experiment_state-*.json"))]
        return used[max(started)] if started else first
    n = max(used, default=0) + 1
    return first if n == 1 else f"{first}-{n}"


def _trial_configs(base: C.Config, arms, nuisance: Mapping[str, tuple]):
    """Every arm's config, and every nuisance value on top of each (each raises if invalid)."""
    for arm in arms:
        cfg = C.from_flat(arm.overrides, base)
        yield cfg
        for key, values in nuisance.items():
            for v in values:
                yield C.from_flat({key: v}, cfg)


def cells(p: Plan) -> tuple[Cell, ...]:
    """Every planned trial, seed by seed (all arms of seed 0 first: an interrupted sweep leaves whole
    seeds, which paired comparisons need). Two cells that are one configuration are refused: the
    table keeps one row per identity, so one arm would silently vanish."""
    nuisance = list(p.study.nuisance.items())
    out: list[Cell] = []
    seen: dict[tuple[str, int], Cell] = {}
    for seed in range(p.seeds):
        for arm in p.arms:
            cfg = C.from_flat(arm.overrides, p.base)
            resolved = {PRECISION_COLUMN: store.trial_precision(cfg)}
            for values in itertools.product(*(v for _, v in nuisance)):
                point = tuple(zip((k for k, _ in nuisance), values, strict=True))
                flat = C.flatten(C.from_flat({**dict(point), "seed": seed}, cfg))
                cell = Cell(arm.label, seed, point, store.config_id({**flat, **resolved}))
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
        new["recipe"] = recipe_hash(new, axis_keys(meta), p.study.nuisance)
        out.append(new)
    return out


def axis_keys(meta: Mapping[str, Any]) -> set[str]:
    """The keys a study's arms set: its axis and every arm's overrides (the reduction study's baseline
    sets se.stages although its axis is se.reduction). The recipe hash leaves them out."""
    keys = {k.strip() for k in str(meta.get("axis", "")).split(",") if k.strip()}
    return keys | {k for a in meta.get("arms", []) for k in a.get("overrides", {})}


def study_meta(p: Plan) -> dict:
    """The experiment as it is started; ``study.json`` keeps one per experiment (see write_study_json)."""
    if p.stored is not None:
        return dict(p.stored)
    s = p.study
    base = C.flatten(p.base)
    base.pop("run.out", None)
    meta = {"name": s.name, "title": s.title, "paper_table": s.paper_table, "axis": s.axis,
            "reference_arm": s.reference_arm, "arms": [a.to_dict() for a in p.arms], "preset": p.preset,
            "seeds": p.seeds, "nuisance": {k: list(v) for k, v in s.nuisance.items()},
            "average_nuisance": bool(s.average_nuisance), "fixed": dict(s.fixed), "doc": s.doc,
            "experiment": p.experiment, "base": base}
    from senet.provenance import git_commit  # noqa: PLC0415

    code = git_commit()  # the checkout the launch ran from; each row also records its trial's commit
    meta.update(code_commit=code["git_commit"], code_dirty=code["git_dirty"])
    meta["recipe"] = recipe_hash({**base, PRECISION_COLUMN: store.trial_precision(p.base)}, axis_keys(meta), s.nuisance)
    return meta


def write_study_json(results_dir: Path, meta: Mapping[str, Any], launch: bool = True) -> Path:
    """``study.json``: the experiment just started or resumed at the top level, and under
    ``experiments`` every experiment of the study by name (a smoke and a quick sweep of one study
    are two experiments with their own seeds and recipe). ``recorded`` (the trials the table holds,
    written by collect) is kept. ``launch=False``: a sweep that trained nothing (every trial was
    recorded) updates the top level alone."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / "study.json"
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    old = old if isinstance(old, dict) else {}
    experiments = dict(old.get("experiments") or {})
    kept = {k: old[k] for k in ("recorded",) if k in old}
    meta = {k: v for k, v in meta.items() if k not in ("experiments", "recorded")}
    if launch:
        experiments[meta.get("experiment") or f"{meta.get('name')}-{meta.get('preset')}"] = meta
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**meta, "experiments": experiments, **kept}, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def stored_meta(p: Plan) -> dict | None:
    """The experiment's meta as it was started: from study.json, else from its trials' parameters."""
    try:
        got = json.loads((p.results_dir / "study.json").read_text()).get("experiments", {}).get(p.experiment)
    except (OSError, ValueError, AttributeError):
        got = None
    if got:
        return got
    for params_file in sorted(p.experiment_path.glob("*/params.json")):  # sweeps from before study.json kept it
        try:
            params = json.loads(params_file.read_text())
        except (OSError, ValueError):
            continue
        if params.get("meta"):
            return {**params["meta"], "experiment": p.experiment, "base": params.get("base", {})}
    return None


def _typed(key: str, value: Any) -> Any:
    try:
        return C.flatten(C.from_flat({key: value}))[key]
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
    given = {C.ALIASES.get(k, k) for k in opts.overrides} | ({"model.name"} if opts.model else set())
    new_base = C.flatten(p.base)
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
        base = C.from_flat(stored_base) if stored_base else p.base
    except UserError:  # keys renamed since it started; Tune still restores the trials' own configs
        base = p.base
    return replace(p, study=study, arms=study.arms, seeds=int(stored.get("seeds", p.seeds)), base=base,
                   stored={**stored, "experiment": p.experiment})


def param_space(p: Plan) -> dict:
    """The trials' shared parameters; which (arm, seed, nuisance values) run is :func:`trial_points`."""
    from ray import tune  # noqa: PLC0415

    base = C.flatten(p.base)
    base.pop("run.out")
    space: dict[str, Any] = {
        "study": p.study.name, "preset": p.preset,
        "seed": tune.choice(list(range(p.seeds))),
        "arm": tune.choice([a.label for a in p.arms]),
        "base": base,
        "arms": {a.label: dict(a.overrides) for a in p.arms},
        "nuisance_keys": list(p.study.nuisance),
        "meta": study_meta(p),
    }
    for key, values in p.study.nuisance.items():
        space[key] = tune.choice(list(values))
    return space


def trial_points(todo: tuple[Cell, ...]):
    """Tune's search over exactly the cells to train, which need not be a full arms × seeds grid (a
    sweep that adds seeds, or reuses another study's arm, trains the missing ones): each cell is a
    point to evaluate, and there are as many samples as points, so nothing is drawn at random."""
    from ray.tune.search.basic_variant import BasicVariantGenerator  # noqa: PLC0415

    return BasicVariantGenerator(points_to_evaluate=[c.params() for c in todo]), len(todo)


def check_data(p: Plan) -> None:
    """Read every dataset the trials will read, once, in the driver: a missing or unreadable dataset
    is one line before Ray starts instead of an error inside every trial (Fashion-MNIST and CIFAR
    take about a second)."""
    from senet.data import DATASETS  # noqa: PLC0415

    seen = set()
    for cfg in _trial_configs(p.base, p.arms, p.study.nuisance):
        d = cfg.data
        key = (d.name, d.root, d.download, d.image_size)
        if key in seen:
            continue
        seen.add(key)
        try:
            DATASETS.get(d.name)(d)
        except UserError:
            raise
        except OSError as e:
            raise UserError(f"cannot read the {d.name} data: {e}") from None


# --------------------------------------------------------------------------------------------------
# Connecting to Ray
# --------------------------------------------------------------------------------------------------
def _split_address(address: str) -> tuple[str, int]:
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"bad Ray address {address!r}; expected HOST:PORT (the head's GCS port, "
                        "6379 by default), ray://HOST:PORT or auto")
    return host.strip("[]"), int(port)


def check_address(address: str, timeout_s: float = 3.0) -> None:
    """Fail within seconds, saying why, when a cluster address cannot be joined.

    ``ray.init`` on an unreachable address or without the cluster's token retries for ~20 s and
    then raises a bare ConnectionError; these checks name the cause instead.
    """
    if address == "auto":
        return
    host, port = _split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise UserError(f"cannot reach a Ray cluster at {host}:{port} ({why}); check --address / "
                        f"RAY_ADDRESS, or start a head node with `ray start --head --port {port}`") from None
    if address.startswith("ray://"):
        return  # Ray Client: authentication happens in ray.init
    probe = ("from ray._raylet import GcsClient\n"
             f"GcsClient(address={f'{host}:{port}'!r}).internal_kv_get(b'session_name', namespace=None, "
             "timeout=5)\n")
    try:
        r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise UserError(f"{host}:{port} accepts connections but does not answer as a Ray GCS within 30 s; "
                        "is it the head node's port (6379 by default)?") from None
    if r.returncode == 0:
        return
    err = r.stderr
    if "InvalidAuthToken" in err or "Authentication" in err or "Unauthenticated" in err:
        if os.environ.get("RAY_AUTH_MODE", "") != "token":
            raise UserError(f"the Ray cluster at {host}:{port} requires token authentication: set "
                            "RAY_AUTH_MODE=token and provide the cluster's token (RAY_AUTH_TOKEN, "
                            "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, copied from the head node)")
        raise UserError(f"the Ray cluster at {host}:{port} rejected this machine's auth token; set "
                        "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH to the head node's ~/.ray/auth_token")
    last = [ln for ln in err.strip().splitlines() if ln.strip()]
    raise UserError(f"{host}:{port} is not a Ray cluster this machine can join: "
                    f"{last[-1] if last else 'unknown error'}")


def _runtime_env() -> dict:
    env = {k: os.environ[k] for k in _FORWARD if os.environ.get(k)}
    return {"env_vars": env} if env else {}


def connect(address: str | None, verbose: bool = True, checked: bool = False) -> bool:
    """Start or join Ray; return True when this call started it (and so must shut it down).

    ``verbose=False`` keeps Ray's and Tune's banners, log lines and the trials' own output off the
    terminal (the trials' errors are in their folders' ``error.txt`` and in the sweep's summary).
    ``checked``: the caller has already run :func:`check_address` on ``address``.
    """
    os.environ.update({k: v for k, v in _TUNE_ENV.items() if k not in os.environ})
    if not verbose:
        os.environ.update({k: v for k, v in _QUIET_ENV.items() if k not in os.environ})
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not address:
        os.environ[_LOOPBACK_ENV] = "0"
    import ray  # noqa: PLC0415

    if not verbose:
        # after the import, which sets up Ray's loggers: their warnings (the token-authentication
        # banner, Tune's per-trial tracebacks) would otherwise reach stderr between the table's lines
        for name in ("ray", "ray.tune", "ray.train"):
            logging.getLogger(name).setLevel(logging.CRITICAL)

    if ray.is_initialized():
        return False
    if address:
        if not checked:
            check_address(address)
        try:
            ray.init(address=address, runtime_env=_runtime_env() or None, log_to_driver=verbose,
                     configure_logging=False)
        except ConnectionError as e:
            raise UserError(f"could not join the Ray cluster at {address}: {str(e).splitlines()[0]}") from None
    else:
        from ray._private import ray_constants  # noqa: PLC0415

        ray_constants.ENABLE_RAY_CLUSTER = False  # already-imported Ray: the same switch as the env var
        ray.init(address="local", include_dashboard=False, runtime_env=_runtime_env() or None,
                 configure_logging=False, log_to_driver=verbose,
                 _node_ip_address="127.0.0.1")
    return True


# --------------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------------
def _trainable(cpus: float, gpus: float):
    from ray import tune  # noqa: PLC0415

    from .trainable import senet_trial  # noqa: PLC0415

    return tune.with_resources(senet_trial, {"cpu": cpus, "gpu": gpus})


def _run_options(opts: SweepOptions, p: Plan) -> dict[str, Any]:
    """The trials' resources and retries: the command line's, else the sweep's own (--resume), else defaults."""
    stored = dict((p.stored or {}).get("run_options") or {})
    out = {}
    for key, default in RUN_DEFAULTS.items():
        given = getattr(opts, key)
        out[key] = given if given is not None else stored.get(key, default)
    if out["cpus_per_trial"] <= 0:
        raise UserError(f"--cpus-per-trial must be > 0, got {out['cpus_per_trial']:g}")
    if out["gpus_per_trial"] is not None and out["gpus_per_trial"] < 0:
        raise UserError(f"--gpus-per-trial must be >= 0, got {out['gpus_per_trial']:g}")
    if out["max_concurrent"] < 0 or out["max_failures"] < 0:
        raise UserError("--max-concurrent and --max-failures must be >= 0")
    return out


def resume_command(opts: SweepOptions, p: Plan) -> str:
    """The command that continues this sweep, from any folder: what names the experiment (study,
    spec, preset, results, storage) and where it runs (address); the rest is stored with it."""
    args = ["senet", "sweep", opts.study]
    if opts.spec:
        args += ["--spec", str(Path(opts.spec).expanduser().absolute())]
    args += ["--preset", p.preset, "--results", str(p.results_dir.parent)]
    if opts.storage:
        args += ["--storage", str(p.storage)]
    if opts.address:
        args += ["--address", opts.address]
    return shlex.join([*args, "--resume"])


def _collect_first(p: Plan, err) -> None:
    """Bring the study's table up to date with its trial folders before looking trials up in it: a
    driver killed mid-sweep leaves finished trials that only the folders record."""
    from .collect import collect, experiments  # noqa: PLC0415

    if experiments(p.storage) or (p.results_dir / "runs.parquet").exists():
        try:
            collect(p.study.name, p.results_dir.parent, storage=str(p.storage), out=err)
        except UserError:
            pass  # nothing recorded yet


def _interrupted(p: Plan, todo: tuple[Cell, ...]) -> list[str]:
    """The launches that left some of ``todo`` unfinished (stopped or failed), by name."""
    df, _ = store.read_table(p.results_dir / "runs.parquet")
    if df is None or df.empty or "experiment" not in df:
        return []
    df = store.with_ids(df[~df["status"].isin(FINISHED)])
    keys = {c.key for c in todo}
    return sorted({str(r["experiment"]) for r in df.to_dict("records") if store.key_of(r) in keys})


def run_sweep(opts: SweepOptions, out=None, err=None) -> SweepOutcome:
    """Run (or with ``resume`` continue) a study: train the trials no table records, copy those another
    study's table records, collect; say what did not finish."""
    out = out or sys.stdout
    err = err or sys.stderr
    p = plan(opts)
    exp = p.experiment_path
    has_state = exp.is_dir() and any(exp.glob("experiment_state-*.json"))
    if opts.resume and not has_state:
        raise UserError(f"nothing to resume: no {p.study.name}-{p.preset} sweep in {p.storage}")
    if opts.resume:
        p = resume_plan(p, opts)
    run = _run_options(opts, p)
    name = p.study.name
    if not opts.dry_run:
        _collect_first(p, err)
    found = store.recorded(p.results_dir.parent, err)
    t = triage(p, found)
    if opts.dry_run:
        _say_plan(p, t, out, dry=True)
        return SweepOutcome(p.results_dir, len(cells(p)), len(t.recorded) + len(t.reused), (), "",
                            trained=len(t.todo), reused=len(t.reused), recorded=len(t.recorded))

    launching = opts.resume or bool(t.todo)
    meta = study_meta(p)
    meta.setdefault("run_options", dict(run))
    meta.setdefault("trials", {"planned": len(cells(p)), "recorded": len(t.recorded),
                               "reused": len(t.reused), "trained": len(t.todo)})
    if not launching:
        meta["experiment"] = None  # no Tune experiment of this name exists
    if launching or t.reused or not (p.results_dir / "study.json").is_file():
        write_study_json(p.results_dir, meta, launch=launching)  # a sweep with nothing to do changes nothing
    if t.reused:  # into the table now, so an interrupted launch keeps them
        from .collect import save_table  # noqa: PLC0415

        old, _ = store.read_table(p.results_dir / "runs.parquet")
        save_table(p.results_dir, store.merge(old, pd.DataFrame(reused_rows(p, meta, t.reused))))
    _say_plan(p, t, out)
    stale = _interrupted(p, t.todo)
    if stale and not opts.resume:
        print(f"[{name}] note: {', '.join(stale)} left some of these unfinished; they start over in "
              f"{p.experiment} (`--resume` continues {stale[-1]} from its checkpoints instead)", file=err, flush=True)

    wall, trained = 0.0, 0
    if launching:
        wall, trained = _launch(p, opts, run, meta, t.todo, out, err)

    from .collect import collect  # noqa: PLC0415

    df = collect(name, opts.results, storage=str(p.storage), out=err)
    outcome = _outcome(p, df, opts, trained=trained, reused=len(t.reused), recorded=len(t.recorded))
    print(f"[{name}] {outcome.finished}/{outcome.total} trials finished ({trained} trained in {wall:.0f} s, "
          f"{outcome.reused} reused from other studies, {outcome.recorded} already recorded); results in "
          f"{p.results_dir / 'runs.parquet'}", file=out, flush=True)
    if not outcome.ok:
        shown = outcome.unfinished[:10]
        more = f"; and {len(outcome.unfinished) - 10} more" if len(outcome.unfinished) > 10 else ""
        print(f"[{name}] not finished: {'; '.join(shown)}{more}", file=err, flush=True)
        print(f"[{name}] continue with: {outcome.resume_command}", file=err, flush=True)
    return outcome


def _say_plan(p: Plan, t: Triage, out, dry: bool = False) -> None:
    n = len(t.recorded) + len(t.reused) + len(t.earlier) + len(t.todo)
    shape = (f"{len(p.arms)} arms × {p.seeds} seeds"
             + "".join(f" × {len(v)} {k}" for k, v in p.study.nuisance.items()))
    sources = sorted({store.origin(row).split("/")[0] for _, row in t.reused})
    parts = [f"{len(t.recorded)} recorded", f"{len(t.reused)} reused" + (f" from {', '.join(sources)}" if sources else "")]
    if t.earlier:
        parts.append(f"{len(t.earlier)} trained by an earlier study of this command")
    what = "would train" if dry else "to train"
    print(f"[{p.study.name}] {n} trials ({shape}), preset {p.preset}: {', '.join(parts)}, "
          f"{len(t.todo)} {what}", file=out, flush=True)


def _launch(p: Plan, opts: SweepOptions, run: dict, meta: dict, todo: tuple[Cell, ...], out,
            err) -> tuple[float, int]:
    """Train ``todo`` on Ray as a new Tune experiment (or, with ``resume``, restore the latest one);
    return (wall time, trials in the experiment)."""
    exp = p.experiment_path
    address = opts.address or os.environ.get("RAY_ADDRESS") or None
    if address:
        check_address(address)
    try:
        check_data(p)
    except UserError as e:
        if not address:
            raise
        # the trials read the data on the cluster's nodes, which may hold it where this machine does not
        print(f"[{p.study.name}] note: this machine cannot read the data ({e}); the cluster's nodes must",
              file=err, flush=True)

    started = connect(address, verbose=opts.verbose, checked=True)
    try:
        import ray  # noqa: PLC0415
        from ray import tune  # noqa: PLC0415
        from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback  # noqa: PLC0415

        from .checkpoints import repair_missing  # noqa: PLC0415
        from .progress import CheckpointPruner, SweepProgress  # noqa: PLC0415
        from .trainable import trial_dirname  # noqa: PLC0415

        if run["gpus_per_trial"] is None:
            run["gpus_per_trial"] = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
            if not opts.resume:  # a resume keeps the trials' resources as they were started
                meta["run_options"] = {**meta["run_options"], "gpus_per_trial": run["gpus_per_trial"]}
                write_study_json(p.results_dir, meta)
        trainable = _trainable(float(run["cpus_per_trial"]), float(run["gpus_per_trial"]))
        print(f"[{p.study.name}] {'resuming ' + p.experiment if opts.resume else p.experiment}: "
              f"{run['cpus_per_trial']:g} CPU / {run['gpus_per_trial']:g} GPU per trial; storage {exp}",
              file=out, flush=True)
        t0 = time.time()
        if opts.resume:
            if not tune.Tuner.can_restore(str(exp)):
                raise UserError(f"the sweep in {exp} cannot be restored (incomplete experiment state)")
            for note in repair_missing(exp):
                print(f"[{p.study.name}] {note}", file=out, flush=True)
            tuner = tune.Tuner.restore(str(exp), trainable=trainable, resume_errored=True)
        else:
            search, n = trial_points(todo)
            tuner = tune.Tuner(
                trainable,
                param_space=param_space(p),
                tune_config=tune.TuneConfig(reuse_actors=True, trial_dirname_creator=trial_dirname,
                                            search_alg=search, num_samples=n,
                                            max_concurrent_trials=int(run["max_concurrent"]) or None),
                run_config=tune.RunConfig(
                    name=p.experiment, storage_path=str(p.storage), verbose=1 if opts.verbose else 0,
                    failure_config=tune.FailureConfig(max_failures=int(run["max_failures"])),
                    # Tune deletes nothing: CheckpointPruner deletes a checkpoint only once the
                    # experiment state that --resume reads names a newer one
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
                    callbacks=[JsonLoggerCallback(), CSVLoggerCallback(),
                               SweepProgress(p.study.name, [a.label for a in p.arms], opts.progress_every_s),
                               CheckpointPruner()],
                ),
            )
        grid = tuner.fit()
        wall = time.time() - t0
    finally:
        if started:
            import ray  # noqa: PLC0415

            ray.shutdown()

    from .checkpoints import prune_superseded  # noqa: PLC0415

    prune_superseded(exp)  # fit wrote its final experiment state before returning
    return wall, len(grid)


def run_sweeps(opts: SweepOptions, out=None, err=None) -> list[SweepOutcome]:
    """``senet sweep all`` or ``senet sweep a,b,c``: each study in turn, each reusing what the earlier
    ones trained (so a trial two studies share is trained once), with its wall time. A dry run
    counts the distinct trials the whole command would train."""
    out = out or sys.stdout
    err = err or sys.stderr
    names = study_names(opts.study)
    if len(names) == 1:
        return [run_sweep(opts, out, err)]
    if opts.resume:
        raise UserError("--resume continues one study's launch; name that study (senet sweep STUDY --resume)")
    outcomes = []
    if opts.dry_run:
        found = store.recorded(Path(opts.results).expanduser().absolute(), err)
        earlier: set = set()
        for n in names:
            p = plan(replace(opts, study=n))
            t = triage(p, found, frozenset(earlier))
            _say_plan(p, t, out, dry=True)
            earlier |= {c.key for c in t.todo}
        print(f"[{','.join(names)}] {len(earlier)} distinct trials would be trained", file=out, flush=True)
        return outcomes
    for n in names:
        t0 = time.time()
        outcomes.append(run_sweep(replace(opts, study=n), out, err))
        print(f"[{n}] wall time {time.time() - t0:.0f} s", file=out, flush=True)
    print(f"[{','.join(names)}] {sum(o.trained for o in outcomes)} trials trained, "
          f"{sum(o.reused for o in outcomes)} reused", file=out, flush=True)
    return outcomes


def _trial_error(exp: Path, trial_id: str) -> str:
    """The last line of a failed trial's error.txt (the exception), or ''."""
    for d in exp.glob(f"*_{trial_id}"):
        try:
            lines = [ln.strip() for ln in (d / "error.txt").read_text().splitlines() if ln.strip()]
        except OSError:
            continue
        if lines:
            return lines[-1][:200]
    return ""


def _outcome(p: Plan, df, opts: SweepOptions, *, trained: int = 0, reused: int = 0,
             recorded: int = 0) -> SweepOutcome:
    """Every planned trial against the table: finished, failed (with its error) or never started."""
    planned = cells(p)
    rows = {}
    for r in store.with_ids(df).to_dict("records"):
        k = store.key_of(r)
        if k not in rows or r["status"] in FINISHED:
            rows[k] = r
    finished, lines, never = 0, [], 0
    for cell in planned:
        row = rows.get(cell.key)
        if row is None:
            never += 1
        elif row["status"] in FINISHED:
            finished += 1
        elif row["status"] == "error":
            why = _trial_error(p.storage / str(row.get("experiment")), str(row.get("trial_id")))
            lines.append(f"{cell.name} failed" + (f" ({why})" if why else ""))
        else:
            lines.append(f"{cell.name} stopped before it finished")
    if never:
        lines.append(f"{never} trial(s) never started")
    return SweepOutcome(p.results_dir, len(planned), finished, tuple(lines), resume_command(opts, p),
                        trained=trained, reused=reused, recorded=recorded)
