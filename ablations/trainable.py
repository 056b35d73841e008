"""The Ray Tune trainable: one trial = one arm × one seed (× one nuisance setting) of a study.

It wraps :func:`senet.engine.fit` and nothing else: fit writes ``checkpoint.pt`` after every epoch
and then calls ``report``, which copies the checkpoint into a scratch folder and hands it to Tune
(``tune.report(..., checkpoint=tune.Checkpoint.from_directory(...))``). A trial that crashes is
restarted by Tune (``FailureConfig``) and continues from ``tune.get_checkpoint()`` through
``fit(resume=...)``, so an ablation cell is never trained from scratch twice.

The last report of a trial carries ``final: True`` and fit's final dict (final-epoch and
best-by-validation errors, params, FLOPs, SE widths, provenance), with a checkpoint folder that also
holds ``config.json``, ``metrics.jsonl`` and ``final.json``: everything ``senet collect`` needs is
in Tune's storage, readable without Ray.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from senet import config
from senet.layout import CHECKPOINT, FINAL_JSON, RUN_FILES, nan_to_null, parse_jsonl, read_json, write_json

from .trial import params_flat

#: Environment switches for the fault-tolerance tests: raise once in every trial at this epoch
#: (before its report, so the last recorded checkpoint is the previous epoch's). The flag files in
#: ``SENET_FAIL_ONCE_DIR`` remember which trials already failed.
FAIL_AT_ENV = "SENET_FAIL_ONCE_AT_EPOCH"
FAIL_DIR_ENV = "SENET_FAIL_ONCE_DIR"
SCRATCH_ENV = "SENET_SCRATCH"

_DATASETS: dict[Any, Any] = {}  # one in-memory copy per data config and worker process


class InjectedFailure(RuntimeError):
    """Raised on purpose by the fault-tolerance tests."""


def scratch_root() -> Path:
    """Node-local scratch for per-trial run folders and checkpoint copies (``$SENET_SCRATCH``).

    A driver killed with SIGKILL leaves these behind; a known place makes them easy to clean.
    """
    return Path(os.environ.get(SCRATCH_ENV) or Path(tempfile.gettempdir()) / "senet-scratch")


def datasets_for(data_cfg):
    """Load the data once per worker: with ``reuse_actors`` later trials find it here."""
    from senet.data import load_datasets

    if data_cfg not in _DATASETS:
        _DATASETS.clear()  # keep one dataset per worker; a new study's data replaces the old
        _DATASETS[data_cfg] = load_datasets(data_cfg)
    return _DATASETS[data_cfg]


def _device(requested: str) -> str:
    """Ray leaves CUDA_VISIBLE_DEVICES alone on 0-GPU trials, so ask Ray which GPUs this trial owns."""
    if requested != "auto":
        return requested
    import ray

    return "cuda" if ray.get_gpu_ids() else "cpu"


def _maybe_fail(trial_id: str, epoch: int) -> None:
    at = os.environ.get(FAIL_AT_ENV)
    if not at or int(at) != epoch:
        return
    flags = Path(os.environ.get(FAIL_DIR_ENV) or scratch_root() / "fail-once")
    flags.mkdir(parents=True, exist_ok=True)
    flag = flags / trial_id
    if flag.exists():
        return
    flag.write_text(str(epoch))
    raise InjectedFailure(f"injected failure at epoch {epoch} of trial {trial_id} ({FAIL_AT_ENV})")


def finished_before(restored, storage) -> bool:
    """Whether a trial Tune restores from ``restored`` had already finished.

    The experiment state that ``--resume`` reads can be older than the trial's files on storage:
    Tune writes the state and then uploads the driver's folder in the background, so a
    ``result.json`` uploaded with it may already hold rows logged after the state was written, up to
    the final one, while the state still names an earlier checkpoint. Such a trial, or one restored
    from its final checkpoint (``final.json``), must not train or report again: a second final row
    would count the cell twice.
    """
    import pyarrow.fs
    from ray.air.constants import EXPR_RESULT_FILE

    final = restored.filesystem.get_file_info(f"{restored.path.rstrip('/')}/{FINAL_JSON}")
    if final.type != pyarrow.fs.FileType.NotFound:  # read in place: no download of the checkpoint
        return True
    path = f"{storage.trial_fs_path.rstrip('/')}/{EXPR_RESULT_FILE}"
    try:
        with storage.storage_filesystem.open_input_stream(path) as f:
            text = f.read().decode("utf-8", errors="replace")
    except (FileNotFoundError, OSError):  # no result logged yet
        return False
    return any(row.get("final") is True for row in parse_jsonl(text))


def senet_trial(params: dict) -> None:
    """Train one cell of a study; every epoch reports metrics and a checkpoint to Tune."""
    # in the trial's worker: the driver imports this module to name the trainable, not to train
    import ray
    import torch
    from ray import tune

    from senet.engine import fit
    from senet.tensorboard import TensorBoardCallback

    # one "checkpoint created" line per epoch and trial would drown the sweep's progress table
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    ctx = tune.get_context()
    restored = tune.get_checkpoint()
    if restored is not None and finished_before(restored, ctx.get_storage()):
        # Returning without a report ends the trial: Tune marks it TERMINATED with the result it
        # last recorded and logs no row, so result.json keeps exactly one final row.
        return
    trial_id = ctx.get_trial_id()
    work = scratch_root() / ctx.get_experiment_name() / trial_id
    run_dir = work / "run"
    flat = params_flat(params)
    if not flat.get("run.threads"):
        flat["run.threads"] = torch.get_num_threads()  # Tune sets it to the trial's CPUs
    flat.update({"run.out": str(run_dir), "run.progress": False,
                 "run.device": _device(str(flat.get("run.device", "auto")))})
    cfg = config.from_flat(flat)  # the one config the trial trains and records as resolved
    node = {"node": os.uname().nodename, "node_id": ray.get_runtime_context().get_node_id()}
    tag = {"arm": params["arm"], "seed": cfg.seed, **node}

    resume = None
    shutil.rmtree(run_dir, ignore_errors=True)
    if restored is not None:
        run_dir.mkdir(parents=True)
        with restored.as_directory() as d:
            shutil.copy2(Path(d) / CHECKPOINT, run_dir / CHECKPOINT)
        resume = run_dir / CHECKPOINT

    def report(metrics: dict) -> None:
        _maybe_fail(trial_id, int(metrics["epoch"]))
        src = metrics.pop("checkpoint", None)
        metrics = nan_to_null({**metrics, **tag, "final": False})
        if not src:  # a diverged epoch writes no checkpoint
            tune.report(metrics)
            return
        copy = Path(tempfile.mkdtemp(prefix=f"e{metrics['epoch']}-", dir=work))
        shutil.copy2(src, copy / CHECKPOINT)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(copy)))
        shutil.rmtree(copy, ignore_errors=True)  # Tune has persisted it to storage by now

    datasets = datasets_for(cfg.data)
    # events go to the trial's working directory, which Tune copies into the trial's folder on
    # storage at every checkpoint (SyncConfig(sync_artifacts=True)) from whichever node runs it;
    # get_trial_dir() names it only for a reused actor (a fresh one gets the driver's staging folder)
    tensorboard = TensorBoardCallback.when_wanted(cfg, ctx.get_storage().trial_working_directory)
    result = fit(cfg, report, resume=resume, datasets=datasets, callbacks=[tensorboard])
    # the sizes of the evaluation splits set the resolution of every error a report compares
    sizes = {"num_val": len(datasets.val_x), "num_test": len(datasets.test_x)}
    result = {**sizes, **result}

    final_dir = Path(tempfile.mkdtemp(prefix="final-", dir=work))
    for name in (CHECKPOINT, *RUN_FILES):
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, final_dir / name)
    final = read_json(final_dir / FINAL_JSON)
    if isinstance(final, dict):  # so a trial reported again after a resume says the same
        write_json(final_dir / FINAL_JSON, {**sizes, **final})
    tune.report(_final_metrics(result, cfg, tag), checkpoint=tune.Checkpoint.from_directory(str(final_dir)))
    shutil.rmtree(work, ignore_errors=True)


def _final_metrics(result: Mapping[str, Any], cfg: config.Config, tag: Mapping[str, Any]) -> dict:
    out = {k: v for k, v in result.items() if k != "checkpoint"}
    out["epoch"] = out.get("epochs_run")
    out["final"] = True
    out["resolved"] = config.flatten(cfg)  # the config the trial really ran (threads, device included)
    out.update(tag)
    return nan_to_null(out)


def trial_dirname(trial) -> str:
    """``<arm>_seed<k>_<trial id>``: readable folders that stay unique."""
    cfg = trial.config
    arm = re.sub(r"[^A-Za-z0-9_.=,-]+", "_", str(cfg.get("arm", "trial")))[:60]
    return f"{arm}_seed{cfg.get('seed', 0)}_{trial.trial_id}"
