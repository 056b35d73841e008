"""Run a study on Ray Tune: every arm × seed (× nuisance value) as one trial, FIFO, to the end.

No early stopping: every cell of an ablation table must train fully, so the default FIFO scheduler
runs each trial for the preset's epochs (ASHA and friends would cut the weaker arms short and bias
the table). Without an address Ray starts in-process on this machine, listening on loopback only;
with ``--address`` (or ``RAY_ADDRESS``) the sweep joins an existing cluster after checking, within
seconds, that the address answers and accepts this machine's credentials.

Layout on disk (one experiment per study and preset)::

    <results>/<study>/study.json            the study's arms, axis, paper numbers, preset, seeds
    <results>/<study>/ray/<study>-<preset>/ Tune's storage: one folder per trial, checkpoints
    <results>/<study>/runs.parquet, runs.csv one row per trial (senet collect)
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from senet import config as C
from senet.errors import UserError
from senet.recipe import recipe_hash

from .studies import PRESETS, Arm, Study, base_config, get_study

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
FINISHED = ("completed", "diverged")


@dataclass(frozen=True)
class SweepOptions:
    study: str
    preset: str = "quick"
    seeds: int | None = None  # default: the preset's (on --resume: the sweep's own)
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
class SweepOutcome:
    """What a sweep left: finished trials (completed or diverged) and a line for each that did not."""

    results_dir: Path
    total: int
    finished: int
    unfinished: tuple[str, ...]
    resume_command: str

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
    seeds = preset.seeds if opts.seeds is None else int(opts.seeds)
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    results_dir = Path(opts.results).expanduser().absolute() / study.name
    storage = Path(opts.storage).expanduser().absolute() if opts.storage else results_dir / "ray"
    return Plan(study, preset.name, seeds, base, arms, results_dir, storage, f"{study.name}-{preset.name}")


def _trial_configs(base: C.Config, arms, nuisance: Mapping[str, tuple]):
    """Every arm's config, and every nuisance value on top of each (each raises if invalid)."""
    for arm in arms:
        cfg = C.from_flat(arm.overrides, base)
        yield cfg
        for key, values in nuisance.items():
            for v in values:
                yield C.from_flat({key: v}, cfg)


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
    meta["recipe"] = recipe_hash(base, axis_keys(meta), s.nuisance)
    return meta


def write_study_json(results_dir: Path, meta: Mapping[str, Any]) -> Path:
    """``study.json``: the experiment just started or resumed at the top level, and under
    ``experiments`` every experiment of the study by name (a smoke and a quick sweep of one study
    are two experiments with their own seeds and recipe)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / "study.json"
    try:
        old = json.loads(path.read_text())
        experiments = dict(old.get("experiments") or {}) if isinstance(old, dict) else {}
    except (OSError, ValueError):
        experiments = {}
    meta = {k: v for k, v in meta.items() if k != "experiments"}
    name = meta.get("experiment") or f"{meta.get('name')}-{meta.get('preset')}"
    experiments[name] = meta
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**meta, "experiments": experiments}, indent=1) + "\n")
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
    from ray import tune  # noqa: PLC0415

    base = C.flatten(p.base)
    base.pop("run.out")
    space: dict[str, Any] = {
        "study": p.study.name, "preset": p.preset,
        "seed": tune.grid_search(list(range(p.seeds))),
        "arm": tune.grid_search([a.label for a in p.arms]),
        "base": base,
        "arms": {a.label: dict(a.overrides) for a in p.arms},
        "nuisance_keys": list(p.study.nuisance),
        "meta": study_meta(p),
    }
    for key, values in p.study.nuisance.items():
        space[key] = tune.grid_search(list(values))
    return space


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


def run_sweep(opts: SweepOptions, out=None, err=None) -> SweepOutcome:
    """Run (or with ``resume`` continue) a study; collect its results; say what did not finish."""
    out = out or sys.stdout
    err = err or sys.stderr
    p = plan(opts)
    exp = p.experiment_path
    has_state = exp.is_dir() and any(exp.glob("experiment_state-*.json"))
    if has_state and not opts.resume:
        raise UserError(f"{exp} already holds a {p.experiment} sweep; add --resume to continue it, or "
                        "choose another --results / --storage")
    if opts.resume and not has_state:
        raise UserError(f"nothing to resume: no {p.experiment} sweep in {p.storage}")
    if opts.resume:
        p = resume_plan(p, opts)
    run = _run_options(opts, p)
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
        trainable = _trainable(float(run["cpus_per_trial"]), float(run["gpus_per_trial"]))
        meta = study_meta(p)
        meta.setdefault("run_options", dict(run))
        write_study_json(p.results_dir, meta)
        print(f"[{p.study.name}] {p.n_trials} trials ({len(p.arms)} arms × {p.seeds} seeds"
              + "".join(f" × {len(v)} {k}" for k, v in p.study.nuisance.items())
              + f"), preset {p.preset}, {run['cpus_per_trial']:g} CPU / {run['gpus_per_trial']:g} GPU per trial; "
              f"storage {exp}", file=out, flush=True)
        t0 = time.time()
        if opts.resume:
            if not tune.Tuner.can_restore(str(exp)):
                raise UserError(f"the sweep in {exp} cannot be restored (incomplete experiment state)")
            for note in repair_missing(exp):
                print(f"[{p.study.name}] {note}", file=out, flush=True)
            tuner = tune.Tuner.restore(str(exp), trainable=trainable, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=param_space(p),
                tune_config=tune.TuneConfig(reuse_actors=True, trial_dirname_creator=trial_dirname,
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
    from .collect import collect  # noqa: PLC0415

    prune_superseded(exp)  # fit wrote its final experiment state before returning
    df = collect(p.study.name, opts.results, storage=str(p.storage), out=err)
    outcome = _outcome(p, df, len(grid), opts)
    print(f"[{p.study.name}] {outcome.finished}/{outcome.total} trials finished in {wall:.0f} s; "
          f"results in {p.results_dir / 'runs.parquet'}", file=out, flush=True)
    if not outcome.ok:
        shown = outcome.unfinished[:10]
        more = f"; and {len(outcome.unfinished) - 10} more" if len(outcome.unfinished) > 10 else ""
        print(f"[{p.study.name}] not finished: {'; '.join(shown)}{more}", file=err, flush=True)
        print(f"[{p.study.name}] continue with: {outcome.resume_command}", file=err, flush=True)
    return outcome


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


def _outcome(p: Plan, df, n_grid: int, opts: SweepOptions) -> SweepOutcome:
    mine = df[df["experiment"] == p.experiment] if "experiment" in df else df
    total = max(p.n_trials, n_grid, len(mine))
    finished = int(mine["status"].isin(FINISHED).sum())
    lines = []
    nuisance = list(p.study.nuisance)
    for _, row in mine[~mine["status"].isin(FINISHED)].iterrows():
        name = f"{row['arm']} seed {row['seed']}" + "".join(f" {k}={row[k]}" for k in nuisance if k in row)
        if row["status"] == "error":
            why = _trial_error(p.experiment_path, str(row["trial_id"]))
            lines.append(f"{name} failed" + (f" ({why})" if why else ""))
        else:
            lines.append(f"{name} stopped before it finished")
    if total > len(mine):
        lines.append(f"{total - len(mine)} trial(s) never started")
    return SweepOutcome(p.results_dir, total, finished, tuple(lines), resume_command(opts, p))
