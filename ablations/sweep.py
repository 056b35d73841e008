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
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from senet import config as C
from senet.cli import UserError

from .studies import PRESETS, Study, base_config, get_study

#: Experiment-state snapshots every second: after a SIGKILL of the driver, trials that finished
#: since the last snapshot would otherwise be run again on --resume (a snapshot costs ~20 ms).
_TUNE_ENV = {
    "TUNE_GLOBAL_CHECKPOINT_S": "1",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no tensorboardX logger; JSON and CSV are passed in
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_DEDUP_LOGS": "0",
}
#: Ray's switch for single-machine mode: node address 127.0.0.1 and every server bound to loopback.
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: Environment variables forwarded to the trials (fault injection, scratch location).
_FORWARD = ("SENET_FAIL_ONCE_AT_EPOCH", "SENET_FAIL_ONCE_DIR", "SENET_SCRATCH", "SENET_DATA")


@dataclass(frozen=True)
class SweepOptions:
    study: str
    preset: str = "quick"
    seeds: int | None = None  # default: the preset's
    results: str = "results"
    storage: str | None = None  # default: <results>/<study>/ray
    address: str | None = None  # default: $RAY_ADDRESS, else an in-process local Ray
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None  # None: 1 when the cluster has GPUs, else 0
    max_concurrent: int = 0  # 0: as many as the resources allow
    max_failures: int = 3  # retries of a crashed trial, each from its last checkpoint
    resume: bool = False
    model: str | None = None
    spec: str | None = None  # YAML file of the custom study
    overrides: Mapping[str, Any] = field(default_factory=dict)
    progress_every_s: float = 30.0


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

    @property
    def experiment_path(self) -> Path:
        return self.storage / self.experiment

    @property
    def n_trials(self) -> int:
        n = len(self.arms) * self.seeds
        for values in self.study.nuisance.values():
            n *= len(values)
        return n


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
    for arm in arms:  # a bad arm fails here, before Ray starts
        C.from_flat(arm.overrides, base)
    seeds = preset.seeds if opts.seeds is None else int(opts.seeds)
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    results_dir = Path(opts.results).expanduser().absolute() / study.name
    storage = Path(opts.storage).expanduser().absolute() if opts.storage else results_dir / "ray"
    return Plan(study, preset.name, seeds, base, arms, results_dir, storage, f"{study.name}-{preset.name}")


def study_meta(p: Plan) -> dict:
    s = p.study
    return {"name": s.name, "title": s.title, "paper_table": s.paper_table, "axis": s.axis,
            "reference_arm": s.reference_arm, "arms": [a.to_dict() for a in p.arms], "preset": p.preset,
            "seeds": p.seeds, "nuisance": {k: list(v) for k, v in s.nuisance.items()},
            "fixed": dict(s.fixed), "doc": s.doc}


def write_study_json(results_dir: Path, meta: Mapping[str, Any]) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / "study.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, path)
    return path


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


def connect(address: str | None) -> bool:
    """Start or join Ray; return True when this call started it (and so must shut it down)."""
    os.environ.update({k: v for k, v in _TUNE_ENV.items() if k not in os.environ})
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not address:
        os.environ[_LOOPBACK_ENV] = "0"
    import ray  # noqa: PLC0415

    if ray.is_initialized():
        return False
    if address:
        check_address(address)
        try:
            ray.init(address=address, runtime_env=_runtime_env() or None, log_to_driver=True,
                     configure_logging=False)
        except ConnectionError as e:
            raise UserError(f"could not join the Ray cluster at {address}: {str(e).splitlines()[0]}") from None
    else:
        from ray._private import ray_constants  # noqa: PLC0415

        ray_constants.ENABLE_RAY_CLUSTER = False  # already-imported Ray: the same switch as the env var
        ray.init(address="local", include_dashboard=False, runtime_env=_runtime_env() or None,
                 configure_logging=False,
                 _node_ip_address="127.0.0.1")
    return True


# --------------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------------
def _trainable(cpus: float, gpus: float):
    from ray import tune  # noqa: PLC0415

    from .trainable import senet_trial  # noqa: PLC0415

    return tune.with_resources(senet_trial, {"cpu": cpus, "gpu": gpus})


def run_sweep(opts: SweepOptions, out=None) -> Path:
    """Run (or with ``resume`` continue) a study; collect its results; return the results folder."""
    out = out or sys.stdout
    p = plan(opts)
    exp = p.experiment_path
    has_state = exp.is_dir() and any(exp.glob("experiment_state-*.json"))
    if has_state and not opts.resume:
        raise UserError(f"{exp} already holds a {p.experiment} sweep; add --resume to continue it, or "
                        "choose another --results / --storage")
    if opts.resume and not has_state:
        raise UserError(f"nothing to resume: no {p.experiment} sweep in {p.storage}")
    if opts.cpus_per_trial <= 0:
        raise UserError(f"--cpus-per-trial must be > 0, got {opts.cpus_per_trial}")
    if opts.gpus_per_trial is not None and opts.gpus_per_trial < 0:
        raise UserError(f"--gpus-per-trial must be >= 0, got {opts.gpus_per_trial}")

    started = connect(opts.address)
    try:
        import ray  # noqa: PLC0415
        from ray import tune  # noqa: PLC0415
        from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback  # noqa: PLC0415

        from .progress import SweepProgress  # noqa: PLC0415
        from .trainable import trial_dirname  # noqa: PLC0415

        gpus = opts.gpus_per_trial
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        trainable = _trainable(float(opts.cpus_per_trial), float(gpus))
        write_study_json(p.results_dir, study_meta(p))
        print(f"[{p.study.name}] {p.n_trials} trials ({len(p.arms)} arms × {p.seeds} seeds"
              + "".join(f" × {len(v)} {k}" for k, v in p.study.nuisance.items())
              + f"), preset {p.preset}, {opts.cpus_per_trial:g} CPU / {gpus:g} GPU per trial; "
              f"storage {exp}", file=out, flush=True)
        t0 = time.time()
        if opts.resume:
            if not tune.Tuner.can_restore(str(exp)):
                raise UserError(f"the sweep in {exp} cannot be restored (incomplete experiment state)")
            tuner = tune.Tuner.restore(str(exp), trainable=trainable, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=param_space(p),
                tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=opts.max_concurrent or None,
                                            trial_dirname_creator=trial_dirname),
                run_config=tune.RunConfig(
                    name=p.experiment, storage_path=str(p.storage), verbose=0,
                    failure_config=tune.FailureConfig(max_failures=opts.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    callbacks=[JsonLoggerCallback(), CSVLoggerCallback(),
                               SweepProgress(p.study.name, [a.label for a in p.arms], opts.progress_every_s)],
                ),
            )
        grid = tuner.fit()
        wall = time.time() - t0
    finally:
        if started:
            import ray  # noqa: PLC0415

            ray.shutdown()

    from .collect import collect  # noqa: PLC0415

    df = collect(p.study.name, opts.results, storage=str(p.storage))
    mine = df[df["experiment"] == p.experiment] if "experiment" in df else df
    done = int(mine["status"].isin(["completed", "diverged"]).sum())
    print(f"[{p.study.name}] {done}/{len(grid)} trials finished in {wall:.0f} s; "
          f"results in {p.results_dir / 'runs.parquet'}", file=out, flush=True)
    if done < len(grid):
        print(f"[{p.study.name}] {len(grid) - done} trials unfinished or failed; "
              f"`senet sweep {opts.study} --preset {p.preset} --resume` continues them", file=out, flush=True)
    return p.results_dir
