"""One launch of a sweep on Ray Tune: the trials' resources, their parameters and the Tune experiment.

No early stopping: every cell of an ablation table must train fully, so the default FIFO scheduler
runs each trial for the preset's epochs (ASHA and friends would cut the weaker arms short and bias
the table). Ray and Tune are imported inside the functions that use them: planning a sweep, a dry
run and collect never load them. The sweep (:mod:`ablations.sweep`) records each launch in
study.json; this module writes no results file.
"""
from __future__ import annotations

import time
from typing import Any

from senet.data import DATASETS
from senet.errors import UserError

from .plan import Cell, Plan, SweepOptions, study_meta
from .tune_storage import StoredExperiment

#: How trials run: fixed when a sweep starts (its trials keep their resources and retries on --resume).
RUN_DEFAULTS = {"cpus_per_trial": 1.0, "gpus_per_trial": None, "max_concurrent": 0, "max_failures": 3}


def run_options(opts: SweepOptions, p: Plan) -> dict[str, Any]:
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


def check_data(p: Plan) -> None:
    """Read every dataset the trials will read, once, in the driver: a missing or unreadable dataset
    is one line before Ray starts instead of an error inside every trial (Fashion-MNIST and CIFAR
    take about a second)."""
    seen = set()
    for cell in p.cells:
        d = cell.cfg.data
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


def param_space(p: Plan) -> dict:
    """The trials' shared parameters (what :func:`ablations.trial.params_flat` reads); which (arm,
    seed, nuisance values) run is :func:`trial_points`."""
    from ray import tune

    # a sequential sweep's searcher names each trial's arm and seed itself (no search space)
    sequential = p.design is not None
    space: dict[str, Any] = {
        "study": p.study.name, "preset": p.preset,
        "seed": 0 if sequential else tune.choice(list(range(p.seeds))),
        "arm": p.study.reference_arm if sequential else tune.choice([a.label for a in p.arms]),
        "base": p.base_flat,
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
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(points_to_evaluate=[c.params() for c in todo]), len(todo)


def sequential_search(todo: tuple[Cell, ...], run: dict, seq):
    """A sequential sweep's searcher (its :class:`ablations.sequencer.SeedSequencer` ``seq``) under a
    ``ConcurrencyLimiter`` of ``--max-concurrent`` trials, else as many as the cluster's CPUs (or
    GPUs) hold; the number of samples is at most every trainable cell, the searcher ends the
    experiment sooner."""
    import ray

    from .seed_searcher import seed_searcher

    slots = int(run["max_concurrent"])
    if not slots:
        res = ray.cluster_resources()
        cpus = int(res.get("CPU", 1) // max(float(run["cpus_per_trial"]), 1e-9))
        gpus = (int(res.get("GPU", 0) // float(run["gpus_per_trial"])) if run["gpus_per_trial"] else cpus)
        slots = max(1, min(cpus, gpus))
    return seed_searcher(seq, slots), max(1, len(todo))


def cluster_gpus_per_trial() -> float:
    """1 GPU per trial when the cluster this process is connected to has GPUs, else 0."""
    import ray

    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def _trainable(cpus: float, gpus: float):
    from ray import tune

    from .trainable import senet_trial

    return tune.with_resources(senet_trial, {"cpu": cpus, "gpu": gpus})


def fit_experiment(p: Plan, opts: SweepOptions, run: dict, todo: tuple[Cell, ...], out,
                   seq=None) -> tuple[float, int]:
    """Train ``todo`` as a new Tune experiment (or, with ``resume``, restore the latest one) on the Ray
    this process is connected to, with the resources of ``run`` (:func:`run_options`, its GPUs
    decided) and, for a sequential sweep, its seed sequencer ``seq``; return (wall time, trials in
    the experiment)."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback

    from .checkpoint_retention import prune_superseded, repair_missing
    from .progress import CheckpointPruner, OnceJsonLogger, SweepProgress
    from .trainable import trial_dirname

    exp = p.tune_storage.experiment(p.experiment)
    trainable = _trainable(float(run["cpus_per_trial"]), float(run["gpus_per_trial"]))
    print(f"[{p.study.name}] {'resuming ' + p.experiment if opts.resume else p.experiment}: "
          f"{run['cpus_per_trial']:g} CPU / {run['gpus_per_trial']:g} GPU per trial; storage {exp}",
          file=out, flush=True)
    t0 = time.time()
    if opts.resume:
        if not tune.Tuner.can_restore(exp):
            raise UserError(f"the sweep in {exp} cannot be restored (incomplete experiment state)")
        for note in repair_missing(_launch_experiment(p)):
            print(f"[{p.study.name}] {note}", file=out, flush=True)
        tuner = tune.Tuner.restore(exp, trainable=trainable, resume_errored=True)
    else:
        search, n = (sequential_search(todo, run, seq) if p.design is not None else trial_points(todo))
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(p),
            tune_config=tune.TuneConfig(reuse_actors=True, trial_dirname_creator=trial_dirname,
                                        search_alg=search, num_samples=n,
                                        max_concurrent_trials=(None if p.design is not None else
                                                               int(run["max_concurrent"]) or None)),
            run_config=tune.RunConfig(
                name=p.experiment, storage_path=p.tune_storage.tune_path, verbose=1 if opts.verbose else 0,
                failure_config=tune.FailureConfig(max_failures=int(run["max_failures"])),
                # Tune deletes nothing: CheckpointPruner deletes a checkpoint only once the
                # experiment state that --resume reads names a newer one
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
                # each trial's TensorBoard events live in its working directory: copied to the trial
                # folder on storage at every checkpoint, from any node
                sync_config=tune.SyncConfig(sync_artifacts=True),
                callbacks=[OnceJsonLogger(), CSVLoggerCallback(),
                           SweepProgress(p.study.name, [a.label for a in p.arms], opts.progress_every_s),
                           CheckpointPruner()],
            ),
        )
    grid = tuner.fit()
    wall = time.time() - t0
    prune_superseded(_launch_experiment(p))  # fit wrote its final experiment state before returning
    return wall, len(grid)


def _launch_experiment(p: Plan):
    """The launch's experiment as checkpoint pruning and repair act on it: its folder, or the store's."""
    return StoredExperiment.at(p.remote.child(p.experiment)) if p.remote else p.experiment_path
