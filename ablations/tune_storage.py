"""A sweep's Tune storage as this machine reads it: a folder, or an object store's prefix.

``--storage`` is a folder (default ``<results>/<study>/ray``; a ``file://`` URI is the same folder)
or an object store's URI (``s3://BUCKET/PREFIX``, :mod:`senet.records.object_store`), which Ray Tune writes to
through pyarrow (``RunConfig(storage_path=URI)``, ``Tuner.restore(URI/<experiment>)``). A URI is
checked before Ray starts: an unknown scheme, a missing bucket or credentials that cannot list it is
one line.

Planning, collecting and resuming read an object store through a local copy of the small files of
the study's experiments (:data:`READ`: experiment states, each trial's ``params.json``,
``result.json`` and ``error.txt``, and the ``final.json`` / ``config.json`` of its checkpoints), in
the study's cache (:func:`senet.records.object_store.cache_root`, inside ``<results>/<study>/ray``, which git
ignores); the folder code then reads the copy exactly as it reads a local storage. Checkpoints are
not copied: a row's ``checkpoint`` is the checkpoint's full URI, which ``senet analyze --best``
fetches. Checkpoint pruning and repair (:mod:`ablations.checkpoint_retention`) act on the store itself
(:class:`StoredExperiment`).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from senet.records.layout import CHECKPOINT, StudyPaths
from senet.records.object_store import (
    Entry,
    Location,
    cache_path,
    cache_root,
    check,
    local_folder,
    location,
    mirror,
)

#: The files of a Tune experiment that planning, collect and --resume read, relative to the storage.
READ = re.compile(r"[^/]+/(experiment_state-[^/]*\.json"
                  r"|[^/]+/(params\.json|result\.json|error\.txt)"
                  r"|[^/]+/checkpoint_\d+/(final\.json|config\.json))")
_CHECKPOINT_FILE = re.compile(rf"([^/]+/[^/]+)/checkpoint_\d+/{re.escape(CHECKPOINT)}")


@dataclass(frozen=True)
class Storage:
    """Where a study's Tune experiments are: ``local``, the folder this machine reads (the storage
    itself, or the copy of an object store's files), and ``remote``, the object store Tune writes to."""

    local: Path
    remote: Location | None = None

    @property
    def tune_path(self) -> str:
        """``RunConfig(storage_path=...)``: the folder, or the store's URI."""
        return self.remote.uri if self.remote else str(self.local)

    def experiment(self, name: str) -> str:
        """An experiment's path or URI, as ``Tuner.restore`` takes it."""
        return self.remote.child(name).uri if self.remote else str(self.local / name)

    def __str__(self) -> str:
        return self.tune_path


def open_storage(storage: str | Path | None, paths: StudyPaths) -> Storage:
    """The study's storage: ``--storage`` (a folder, ``file:///PATH`` or a URI), else its ``ray`` folder.
    An object store is reached once here, so what is wrong with it is one line before Ray starts."""
    if not storage:
        return Storage(paths.ray)
    folder = local_folder(storage)
    if folder is not None:
        return Storage(folder)
    loc = location(storage)
    check(loc)
    return Storage(cache_path(cache_root(paths), loc), loc)


@dataclass(frozen=True)
class StoreCopy:
    """The local copy of a store's experiments and the listing it was made from: what the copy lacks
    (the checkpoints) is named by its URI."""

    remote: Location
    local: Path
    files: Mapping[str, Entry]
    _by_trial: dict[str, list[str]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        for rel in sorted(self.files):
            m = _CHECKPOINT_FILE.fullmatch(rel)
            if m:
                self._by_trial.setdefault(m.group(1), []).append(rel)

    def checkpoint(self, trial_dir: Path) -> str | None:
        """The URI of the trial's newest checkpoint file (``trial_dir``: its folder in the copy)."""
        found = self._by_trial.get(trial_dir.relative_to(self.local).as_posix())
        return self.remote.child(found[-1]).uri if found else None


def refresh(storage: Storage, study: str) -> StoreCopy | None:
    """Bring the local copy of ``study``'s experiments in an object store up to date (nothing to do
    for a folder). Experiments are named ``<study>-<preset>[-n]``, so only those are copied."""
    if storage.remote is None:
        return None
    first = f"{study}-"
    files = mirror(storage.remote, storage.local,
                   lambda rel: rel.startswith(first) and READ.fullmatch(rel) is not None)
    return StoreCopy(storage.remote, storage.local, files)


class StoredExperiment:
    """A Tune experiment in an object store, with the methods of
    :class:`ablations.checkpoint_retention.LocalExperiment`: what checkpoint pruning and repair read and change."""

    def __init__(self, fs, root: str):
        self.fs = fs
        self.root = root.rstrip("/")
        self._files: list[str] | None = None

    @classmethod
    def at(cls, loc: Location) -> StoredExperiment:
        fs, root = loc.filesystem()
        return cls(fs, root)

    def _listing(self) -> list[str]:
        if self._files is None:
            import pyarrow.fs

            infos = self.fs.get_file_info(pyarrow.fs.FileSelector(self.root, allow_not_found=True, recursive=True))
            self._files = [i.path[len(self.root) + 1:] for i in infos if i.type == pyarrow.fs.FileType.File]
        return self._files

    def state(self) -> object:
        import json

        states = sorted(f for f in self._listing() if "/" not in f and f.startswith("experiment_state-")
                        and f.endswith(".json"))
        if not states:
            return None
        try:
            with self.fs.open_input_stream(f"{self.root}/{states[-1]}") as f:
                return json.loads(f.read())
        except (OSError, ValueError):  # being written, or deleted since the listing
            return None

    def has_trial(self, logdir: str) -> bool:
        return any(f.startswith(logdir + "/") for f in self._listing())

    def checkpoints(self, logdir: str) -> dict[int, str]:
        out = {}
        for f in self._listing():
            parts = PurePosixPath(f).parts
            if len(parts) >= 3 and parts[0] == logdir and re.fullmatch(r"checkpoint_(\d{6})", parts[1]):
                out[int(parts[1][len("checkpoint_"):])] = parts[1]
        return out

    def remove(self, logdir: str, name: str) -> None:
        try:
            self.fs.delete_dir(f"{self.root}/{logdir}/{name}")
        except FileNotFoundError:
            pass
        self._files = None

    def copy(self, logdir: str, src: str, dst: str) -> None:
        """Copy a checkpoint folder file by file, the checkpoint itself last: a copy cut short holds
        no ``checkpoint.pt``, and a restore from it fails instead of loading half a state."""
        files = sorted((f for f in self._listing() if f.startswith(f"{logdir}/{src}/")),
                       key=lambda f: (f.endswith("/" + CHECKPOINT), f))
        for f in files:
            rel = f[len(f"{logdir}/{src}/"):]
            self.fs.copy_file(f"{self.root}/{f}", f"{self.root}/{logdir}/{dst}/{rel}")
        self._files = None


def tune_experiment(storage_context):
    """The experiment folder of a running sweep, from a trial's ``storage`` (Tune's StorageContext):
    a local folder, or the object store's experiment."""
    fs = storage_context.storage_filesystem
    if fs.type_name == "local":
        return Path(storage_context.experiment_fs_path)
    return StoredExperiment(fs, storage_context.experiment_fs_path)

