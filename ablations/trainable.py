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

Each epoch is trained and reported once, also across a SIGKILL of the driver and ``--resume``
(:func:`continuation`). A (re)started trial continues from the newest complete checkpoint in its
folder on storage, which can be newer than the one Tune restores; it reports the epochs
``result.json`` lacks from that checkpoint's history instead of training them again, and never an
epoch ``result.json`` already holds. Reports carry ``training_iteration`` = epoch (the final report:
epochs run + 1), so Tune's counter follows the epochs whatever checkpoint Tune restored.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from senet import config
from senet.records.layout import (
    CHECKPOINT,
    FINAL_JSON,
    RUN_FILES,
    nan_to_null,
    parse_jsonl,
    read_json,
    write_json,
)

from .checkpoint_retention import checkpoint_index
from .trial import params_flat

#: Environment switches for the fault-tolerance tests: raise once in every trial at this epoch
#: (before its report, so the last recorded checkpoint is the previous epoch's). The flag files in
#: ``SENET_FAIL_ONCE_DIR`` remember which trials already failed.
FAIL_AT_ENV = "SENET_FAIL_ONCE_AT_EPOCH"
FAIL_DIR_ENV = "SENET_FAIL_ONCE_DIR"
SCRATCH_ENV = "SENET_SCRATCH"
#: For the kill-loop test (``tests/kill_loop.py``): a folder where each trial appends one line per
#: epoch it hands to Tune (``what``: ``trained`` or ``replayed``), to count epochs trained twice.
#: Local Ray workers inherit it from the driver.
EPOCH_LOG_ENV = "SENET_EPOCH_LOG"

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


def stored_results(storage) -> list[dict]:
    """The rows of the trial's ``result.json`` on storage (a row cut short is skipped)."""
    from ray.air.constants import EXPR_RESULT_FILE

    path = f"{storage.trial_fs_path.rstrip('/')}/{EXPR_RESULT_FILE}"
    try:
        with storage.storage_filesystem.open_input_stream(path) as f:
            text = f.read().decode("utf-8", errors="replace")
    except (FileNotFoundError, OSError):  # no result logged yet
        return []
    return parse_jsonl(text)


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

    final = restored.filesystem.get_file_info(f"{restored.path.rstrip('/')}/{FINAL_JSON}")
    if final.type != pyarrow.fs.FileType.NotFound:  # read in place: no download of the checkpoint
        return True
    return any(row.get("final") is True for row in stored_results(storage))


@dataclass
class Continuation:
    """Where a (re)started trial goes on: see :func:`continuation`."""

    checkpoint: Path | None = None  # the checkpoint.pt to continue from (None: from scratch)
    index: int = -1  # its folder's index on storage (-1: none): the next checkpoint goes to index + 1
    replay: list[dict] = field(default_factory=list)  # metrics lines to report without training
    recorded: frozenset[int] = frozenset()  # epochs result.json holds: never reported again


def _checkpoint_folders(storage) -> dict[int, str]:
    """The trial's ``checkpoint_<k>`` folders on storage by index, as paths on its filesystem."""
    import pyarrow.fs

    selector = pyarrow.fs.FileSelector(storage.trial_fs_path.rstrip("/"), allow_not_found=True)
    out = {}
    for info in storage.storage_filesystem.get_file_info(selector):
        i = checkpoint_index(info.base_name)
        if i is not None and info.type == pyarrow.fs.FileType.Directory:
            out[i] = info.path
    return out


def _fetch(storage, folder: str, dst: Path):
    """Copy ``folder``/checkpoint.pt from storage to ``dst`` and read it; None when it is missing or
    unreadable (an upload that a kill cut short)."""
    import pyarrow.fs

    from senet.resume import ResumePoint

    dst.unlink(missing_ok=True)
    try:
        pyarrow.fs.copy_files(f"{folder}/{CHECKPOINT}", str(dst), source_filesystem=storage.storage_filesystem,
                              destination_filesystem=pyarrow.fs.LocalFileSystem())
        return ResumePoint.load(dst)
    except Exception:  # noqa: BLE001 - a missing file, a truncated zip, a store that did not answer
        dst.unlink(missing_ok=True)
        return None


def continuation(restored, storage, scratch: Path) -> Continuation:
    """Where a trial that Tune (re)starts from ``restored`` (None: from scratch) goes on, so that no
    epoch is trained or reported twice.

    The race this closes: a trial persists checkpoint k to storage, then reports epoch k, whose row
    the driver logs (``result.json``) before it registers the checkpoint, and Tune's experiment
    state, written at most once a second, names the checkpoints registered when it was written.
    A driver SIGKILLed after the row (and the ``result.json`` holding it) reached storage but before
    a state naming checkpoint k did is restored by ``--resume`` from checkpoint k-1 (or from scratch),
    so the trial would train epoch k again and log its row twice. And in reverse: killed after
    checkpoint k reached storage but before its row did, the trial would train epoch k again though
    it had finished it.

    The sweep deletes no checkpoint newer than the one the state names (:mod:`ablations.checkpoint_retention`),
    so the trial's folder on storage holds every checkpoint it persisted since. So:

    - continue from the newest ``checkpoint_<k>`` folder whose ``checkpoint.pt`` reads whole (at or
      after ``restored``); folders above it are uploads a kill cut short and are deleted, so the
      next checkpoint's folder (``index`` + 1) starts empty;
    - ``replay``: the epochs after ``restored`` and up to that checkpoint that ``result.json`` lacks,
      from the checkpoint's history, reported without training. Not those up to ``restored``: the
      driver logged them before it registered ``restored``, though a live driver retrying a crashed
      trial may not have copied them to storage yet;
    - ``recorded``: the epochs ``result.json`` holds, which the trial trains again only where no
      checkpoint covers them (``run.checkpoint_every`` > 1) and then does not report.

    A trial Tune starts from scratch gets a new, empty ``result.json`` in the driver (Tune restores a
    trial's log files only with a checkpoint), so then every epoch of the newest checkpoint is
    replayed and none counts as recorded.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    folders = _checkpoint_folders(storage)
    since = checkpoint_index(PurePosixPath(restored.path).name) if restored is not None else None
    rows = stored_results(storage) if restored is not None else []
    recorded = frozenset(int(r["epoch"]) for r in rows if not r.get("final") and r.get("epoch") is not None)

    dst = scratch / CHECKPOINT
    found, point = None, None
    for i in sorted(folders, reverse=True):
        if since is not None and i < since:
            break
        point = _fetch(storage, folders[i], dst)
        if point is not None:
            found = i
            break
    base = found if found is not None else (since if since is not None else -1)
    for i, folder in folders.items():
        if i > base:  # unreadable: cut short by the kill (every one above `found` was tried)
            storage.storage_filesystem.delete_dir(folder)
    if found is None:  # nothing newer reads whole: where Tune restores (as the trial did before)
        if restored is None:
            return Continuation(index=-1, recorded=recorded)
        with restored.as_directory() as d:
            shutil.copy2(Path(d) / CHECKPOINT, dst)
        return Continuation(dst, since, recorded=recorded)

    last = point.epoch
    if restored is None:
        first = 0
    elif found == since:
        first = last
    else:  # the epoch Tune restores at: its rows the driver has logged, whatever storage holds yet
        held = _fetch(storage, folders[since], scratch / f"restored-{CHECKPOINT}") if since in folders else None
        first = held.epoch if held is not None else last
    history = point.state.get("metrics") or []
    replay = [dict(h) for h in history if first < int(h.get("epoch", 0)) <= last and int(h["epoch"]) not in recorded]
    (scratch / f"restored-{CHECKPOINT}").unlink(missing_ok=True)
    return Continuation(dst, found, replay, recorded)


def _log_epoch(trial_id: str, epoch: int, what: str) -> None:
    where = os.environ.get(EPOCH_LOG_ENV)
    if not where:
        return
    Path(where).mkdir(parents=True, exist_ok=True)
    with open(Path(where) / f"{trial_id}.jsonl", "a") as f:
        f.write(json.dumps({"epoch": epoch, "what": what, "pid": os.getpid(), "t": time.time()}) + "\n")


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

    shutil.rmtree(run_dir, ignore_errors=True)
    storage = ctx.get_storage()
    cont = continuation(restored, storage, run_dir)
    resume = cont.checkpoint
    storage.current_checkpoint_index = cont.index  # the next checkpoint never lands on an old folder
    for line in cont.replay:  # epochs trained before whose rows result.json lacks
        epoch = int(line["epoch"])
        line = {k: v for k, v in line.items() if k != "checkpoint"}
        tune.report(nan_to_null({**line, **tag, "final": False, "training_iteration": epoch}))
        _log_epoch(trial_id, epoch, "replayed")

    def report(metrics: dict) -> None:
        epoch = int(metrics["epoch"])
        _maybe_fail(trial_id, epoch)
        src = metrics.pop("checkpoint", None)
        if epoch in cont.recorded:  # trained again (no checkpoint held it), reported once already
            return
        metrics = nan_to_null({**metrics, **tag, "final": False, "training_iteration": epoch})
        if not src:  # a diverged epoch writes no checkpoint
            tune.report(metrics)
        else:
            copy = Path(tempfile.mkdtemp(prefix=f"e{epoch}-", dir=work))
            shutil.copy2(src, copy / CHECKPOINT)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(copy)))
            shutil.rmtree(copy, ignore_errors=True)  # Tune has persisted it to storage by now
        _log_epoch(trial_id, epoch, "trained")

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
    out["training_iteration"] = int(out.get("epochs_run") or 0) + 1  # after one report per epoch
    out["resolved"] = config.flatten(cfg)  # the config the trial really ran (threads, device included)
    out.update(tag)
    return nan_to_null(out)


def trial_dirname(trial) -> str:
    """``<arm>_seed<k>_<trial id>``: readable folders that stay unique."""
    cfg = trial.config
    arm = re.sub(r"[^A-Za-z0-9_.=,-]+", "_", str(cfg.get("arm", "trial")))[:60]
    return f"{arm}_seed{cfg.get('seed', 0)}_{trial.trial_id}"
