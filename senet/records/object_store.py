"""Object storage: the URIs of a sweep's Tune storage and of the checkpoints its table records.

``--storage`` names a folder (a path, or ``file:///PATH``, which is the same folder) or a prefix of an
object store that pyarrow's file systems open (``s3://BUCKET/PREFIX``, ``gs://BUCKET/PREFIX``, ...).
Credentials are never part of a URI: pyarrow finds them as the cloud SDKs do (for S3 the variables
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL`` for an
S3-compatible store, else ``~/.aws``, else the instance's role), so a URI can be printed, stored in a
table and shown in a resume command without giving any secret away; one that carries a secret is
refused.

This machine reads a store through a local copy: :func:`mirror` copies the files it is asked for and
copies a file again only when its size or modification time changed; :func:`fetch` copies one file
(a checkpoint a table names). The copies sit in a cache folder of the study (:func:`cache_root`).
pyarrow is imported only when a URI is opened.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..errors import UserError
from ..registry import Registry
from .layout import StudyPaths, study_paths


@dataclass(frozen=True)
class Scheme:
    """What a URI scheme needs: whether its first path part is a bucket (a container that must exist
    beforehand) and where its credentials come from (for the error that names them)."""

    bucket: bool = True
    credentials: str = ""


#: The object stores ``--storage`` accepts (``file://`` is a local folder, not a store).
SCHEMES: Registry[str] = Registry("storage scheme", info=Scheme)
SCHEMES.add("s3", "Amazon S3, or an S3-compatible store with AWS_ENDPOINT_URL",
            credentials="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or ~/.aws, or the instance's role)")
SCHEMES.add("gs", "Google Cloud Storage", credentials="GOOGLE_APPLICATION_CREDENTIALS (or the node's service account)")
SCHEMES.add("gcs", "Google Cloud Storage", credentials="GOOGLE_APPLICATION_CREDENTIALS (or the node's service account)")
SCHEMES.add("abfs", "Azure Blob Storage", credentials="AZURE_STORAGE_ACCOUNT_KEY (or Azure's default credentials)")
SCHEMES.add("abfss", "Azure Blob Storage over TLS",
            credentials="AZURE_STORAGE_ACCOUNT_KEY (or Azure's default credentials)")
SCHEMES.add("hdfs", "HDFS", bucket=False, credentials="the Hadoop configuration")

_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
#: Query keys of a pyarrow URI that would carry a secret into every file and line that shows the URI.
_SECRET_KEYS = ("access_key", "secret_key", "session_token", "account_key", "password", "token")


def is_uri(text: str | os.PathLike) -> bool:
    """Whether ``text`` is a URI (``scheme://...``) rather than a path."""
    return bool(_URI.match(str(text)))


def local_folder(text: str | os.PathLike) -> Path | None:
    """``text`` as a folder of this machine (a path, or a ``file://`` URI), or None for an object store."""
    text = str(text)
    m = _URI.match(text)
    if m is None:
        return Path(text).expanduser().absolute()
    if m.group(1).lower() != "file":
        return None
    parts = urlsplit(text)
    if parts.netloc not in ("", "localhost"):
        raise UserError(f"{text}: a file:// URI names a folder of this machine (file:///PATH), not of {parts.netloc}")
    return Path(parts.path or "/").absolute()


@dataclass(frozen=True)
class Location:
    """A folder or file of an object store: ``scheme://BUCKET/KEY`` (a query, such as pyarrow's
    ``?endpoint_override=HOST:PORT``, stays at the end of every URI made from it)."""

    scheme: str
    path: str  # BUCKET/KEY, without slashes at either end
    query: str = ""

    @property
    def uri(self) -> str:
        return f"{self.scheme}://{self.path}" + (f"?{self.query}" if self.query else "")

    def __str__(self) -> str:
        return self.uri

    def child(self, *parts: str) -> Location:
        path = "/".join(p.strip("/") for p in (self.path, *parts) if p.strip("/"))
        return Location(self.scheme, path, self.query)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        return Location(self.scheme, self.path.rsplit("/", 1)[0] if "/" in self.path else "", self.query)

    def filesystem(self) -> tuple[Any, str]:
        """(pyarrow's file system for the store, this location's path in it); a URI pyarrow cannot
        open is one line (:class:`~senet.errors.UserError`)."""
        import pyarrow.fs

        try:
            return pyarrow.fs.FileSystem.from_uri(self.uri)
        except (ValueError, OSError, ImportError) as e:  # ArrowInvalid is a ValueError
            raise UserError(f"cannot open {self.uri}: {_first_line(e)}") from None


def location(text: str | os.PathLike) -> Location:
    """``text`` (an object store's URI) parsed and checked: its scheme is one of :data:`SCHEMES`, it
    names a bucket where the scheme has buckets, and it carries no credentials."""
    text = str(text)
    m = _URI.match(text)
    if m is None:
        raise UserError(f"{text!r} is not a URI (scheme://BUCKET/PATH)")
    scheme = m.group(1).lower()
    if scheme not in SCHEMES:
        raise UserError(f"unknown storage scheme {scheme}:// in {text}; use a folder, file:///PATH or one of: "
                        + ", ".join(f"{s}://" for s in SCHEMES))
    parts = urlsplit(text)
    secret = [k for k, _ in parse_qsl(parts.query) if k.lower() in _SECRET_KEYS]
    if "@" in parts.netloc or secret:
        raise UserError(f"{scheme}:// URIs must not carry credentials (they would be written wherever the URI "
                        f"is: tables, logs, resume commands); set {SCHEMES.info(scheme).credentials} instead")
    path = "/".join(p for p in (parts.netloc, parts.path.strip("/")) if p)
    if SCHEMES.info(scheme).bucket and not parts.netloc:
        raise UserError(f"{text} names no bucket; write {scheme}://BUCKET/PREFIX")
    return Location(scheme, path, parts.query)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def check(loc: Location) -> None:
    """Reach the store once, so that a typo, a missing bucket or missing credentials is one line
    before anything starts: the bucket must exist and the prefix must be listable."""
    import pyarrow.fs

    fs, path = loc.filesystem()
    info = SCHEMES.info(loc.scheme)
    hint = f"; check the URI and the credentials ({info.credentials})"
    try:
        if info.bucket:
            bucket = path.split("/", 1)[0]
            if fs.get_file_info(bucket).type == pyarrow.fs.FileType.NotFound:
                raise UserError(f"bucket {bucket!r} of {loc.uri} does not exist (or these credentials cannot "
                                f"see it){hint}")
        fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    except OSError as e:
        raise UserError(f"cannot read {loc.uri}: {_first_line(e)}{hint}") from None


@dataclass(frozen=True)
class Entry:
    """A file of a store, as a listing gives it."""

    size: int
    mtime: float  # seconds since the epoch; 0 when the store gives none


def listing(loc: Location) -> dict[str, Entry]:
    """Every file under ``loc`` by its path relative to it (``/``-separated); {} when there is none."""
    import pyarrow.fs

    fs, root = loc.filesystem()
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True, recursive=True))
    except OSError as e:
        raise UserError(f"cannot list {loc.uri}: {_first_line(e)}") from None
    out = {}
    for info in infos:
        if info.type == pyarrow.fs.FileType.File and info.path.startswith(root + "/"):
            mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
            out[info.path[len(root) + 1:]] = Entry(int(info.size or 0), mtime)
    return out


def _fresh(local: Path, entry: Entry) -> bool:
    try:
        st = local.stat()
    except OSError:
        return False
    return st.st_size == entry.size and abs(st.st_mtime - entry.mtime) < 1e-3


def _download(fs, fs_path: str, local: Path, entry: Entry | None) -> None:
    """Copy one file of the store to ``local`` atomically, with the store's modification time."""
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.{os.getpid()}.tmp")
    try:
        with fs.open_input_stream(fs_path) as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 22):
                dst.write(chunk)
        if entry is not None and entry.mtime:
            os.utime(tmp, (entry.mtime, entry.mtime))
        os.replace(tmp, local)
    finally:
        tmp.unlink(missing_ok=True)


def mirror(loc: Location, local: Path, keep: Callable[[str], bool]) -> dict[str, Entry]:
    """Bring ``local`` up to date with the files under ``loc`` for which ``keep(relative path)`` holds
    (the others are listed, not copied); files of ``local`` the store no longer has are deleted.
    Returns the listing of ``loc``: every file there, copied or not."""
    files = listing(loc)
    fs, root = loc.filesystem()
    for rel, entry in files.items():
        target = local / rel
        if keep(rel) and not _fresh(target, entry):
            try:
                _download(fs, f"{root}/{rel}", target, entry)
            except FileNotFoundError:  # deleted since the listing (a pruned checkpoint)
                continue
            except OSError as e:
                raise UserError(f"cannot read {loc.child(rel).uri}: {_first_line(e)}") from None
    if local.is_dir():
        for f in sorted(local.rglob("*"), reverse=True):  # a folder's files before the folder
            rel = f.relative_to(local).as_posix()
            if f.is_file() and rel not in files and not f.name.startswith("."):
                f.unlink()
            elif f.is_dir() and not any(f.iterdir()):
                f.rmdir()
    return files


def sibling(uri: str, name: str) -> str:
    """The URI of the file ``name`` in the folder of the file ``uri``."""
    return location(uri).parent.child(name).uri


def cache_root(paths: StudyPaths) -> Path:
    """The study's cache of what it read from object stores: inside its ``ray`` folder, which, like the
    rest of Tune's storage on this machine, git does not keep."""
    return paths.ray / ".remote"


def cache_path(root: Path, loc: Location) -> Path:
    """Where ``loc`` is copied under a cache ``root``: ``<root>/<scheme>/<bucket>/<key>``."""
    return root / loc.scheme / Path(*loc.path.split("/"))


def fetch(uri: str, root: Path, missing_ok: bool = False) -> Path | None:
    """A local copy of the file ``uri`` under the cache ``root`` (copied again only when the store's
    file changed); a file that is not there is one line, or None with ``missing_ok``."""
    import pyarrow.fs

    loc = location(uri)
    fs, path = loc.filesystem()
    try:
        info = fs.get_file_info(path)
    except OSError as e:
        raise UserError(f"cannot read {loc.uri}: {_first_line(e)}; check the credentials "
                        f"({SCHEMES.info(loc.scheme).credentials})") from None
    if info.type != pyarrow.fs.FileType.File:
        if missing_ok:
            return None
        raise UserError(f"{loc.uri} does not exist (deleted from the store, or another store's URI)")
    entry = Entry(int(info.size or 0), info.mtime.timestamp() if info.mtime is not None else 0.0)
    local = cache_path(root, loc)
    if not _fresh(local, entry):
        try:
            _download(fs, path, local, entry)
        except OSError as e:
            raise UserError(f"cannot read {loc.uri}: {_first_line(e)}") from None
    return local


def fetch_for_study(uri: str, study_dir: str | Path, missing_ok: bool = False) -> Path | None:
    """:func:`fetch` into the cache of the study folder ``study_dir`` (``<results>/<study>``)."""
    study_dir = Path(study_dir)
    return fetch(uri, cache_root(study_paths(study_dir.parent, study_dir.name)), missing_ok)
