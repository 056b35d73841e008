"""The datasets on disk: where their files are found and how each format is read into memory.

Each loader is registered in :data:`DATASETS` and returns the raw train/test splits as uint8
``N×C×H×W`` tensors with the class names (:class:`RawDataset`); :func:`senet.data.load_datasets`
splits and normalises them.

Where the files are looked for: ``data.root`` alone when it is given (a missing or unreadable folder
is an error: falling back to another copy would train on data nobody named); otherwise
``$SENET_DATA`` (and its ``<dataset>`` subfolder), then the system locations (Debian's
``dataset-fashion-mnist`` package installs the gzipped IDX files in ``/usr/share/datasets/fashion-mnist``).
torchvision's download is used only with ``data.download true``.
"""
from __future__ import annotations

import gzip
import math
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import DataConfig
from .errors import UserValueError
from .registry import Registry

#: System-wide dataset folders (Debian's dataset-* packages).
SYSTEM_ROOTS = (Path("/usr/share/datasets"),)


class DatasetNotFoundError(UserValueError):
    """A dataset's files are missing; the message says where they were looked for and how to get them."""


@dataclass
class RawDataset:
    """What a loader returns: uint8 ``N×C×H×W`` images, int64 labels, class names."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    val_x: torch.Tensor | None = None  # a dataset's own validation split (image folders with val/ and test/)
    val_y: torch.Tensor | None = None


Loader = Callable[[DataConfig], RawDataset]
DATASETS: Registry[Loader] = Registry("dataset")


# ---------------------------------------------------------------------------------------------
# Finding files
# ---------------------------------------------------------------------------------------------
def given_root(cfg: DataConfig) -> Path | None:
    """``data.root`` as a folder, None when it is not given; raise if it is missing or unreadable.

    With ``data.download true`` a missing root is where the download will create the files.
    """
    if not cfg.root:
        return None
    p = Path(cfg.root).expanduser()
    if cfg.download and not p.exists():
        return p
    if not p.is_dir():
        why = "is not a folder" if p.exists() else "does not exist"
        raise DatasetNotFoundError(f"data.root {cfg.root!r} {why}")
    if not os.access(p, os.R_OK | os.X_OK):
        raise DatasetNotFoundError(f"data.root {cfg.root!r} is not readable")
    return p


def candidate_roots(cfg: DataConfig, subdir: str) -> list[Path]:
    """Folders to search: data.root(/subdir) alone when given, else $SENET_DATA(/subdir), system locations."""
    root = given_root(cfg)
    if root is not None:
        return [root, root / subdir]
    out: list[Path] = []
    env = os.environ.get("SENET_DATA")
    if env:
        out += [Path(env).expanduser(), Path(env).expanduser() / subdir]
    for r in SYSTEM_ROOTS:
        out += [r / subdir, r]
    seen: list[Path] = []
    for p in out:
        if p not in seen:
            seen.append(p)
    return seen


def _download_root(cfg: DataConfig) -> Path:
    if cfg.root:
        return Path(cfg.root).expanduser()
    if os.environ.get("SENET_DATA"):
        return Path(os.environ["SENET_DATA"]).expanduser()
    return Path.home() / ".cache" / "senet" / "data"


def _not_found(name: str, wanted: str, roots: list[Path], how: str) -> DatasetNotFoundError:
    where = ", ".join(str(r) for r in roots) or "(no folders)"
    return DatasetNotFoundError(f"dataset {name!r} not found: looked for {wanted} in {where}; {how}")


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST (gzipped or plain IDX files)
# ---------------------------------------------------------------------------------------------
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
_FASHION_FILES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str | Path) -> torch.Tensor:
    """Read an IDX file (gzipped or not) of unsigned bytes into a uint8 tensor of its shape."""
    p = Path(path)
    raw = gzip.open(p, "rb").read() if p.suffix == ".gz" else p.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserValueError(f"not an IDX file of unsigned bytes: {p}")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    start = 4 + 4 * ndim
    if len(raw) - start != math.prod(dims):
        raise UserValueError(f"truncated IDX file {p}: header says {dims}, {len(raw) - start} bytes of data")
    return torch.frombuffer(bytearray(raw[start:]), dtype=torch.uint8).reshape(dims)


def _find_idx(folder: Path) -> dict[str, Path] | None:
    found = {}
    for key, stem in _FASHION_FILES.items():
        for cand in (folder / f"{stem}.gz", folder / stem):
            if cand.is_file():
                found[key] = cand
                break
        else:
            return None
    return found


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(cfg: DataConfig) -> RawDataset:
    """Fashion-MNIST (Xiao et al. 2017): 60,000 + 10,000 grey 28×28 images of 10 clothing classes."""
    roots = candidate_roots(cfg, "fashion-mnist")
    # torchvision's own layout (FashionMNIST/raw) under each root, so an earlier download is found.
    folders = [f for r in roots for f in (r, r / "FashionMNIST" / "raw")]
    files = next((f for f in map(_find_idx, folders) if f), None)
    if files is None and cfg.download:
        files = _torchvision_download("FashionMNIST", cfg, lambda d: _find_idx(d / "FashionMNIST" / "raw"))
    if files is None:
        raise _not_found("fashion-mnist", "train-images-idx3-ubyte.gz (and the 3 other IDX files)", roots,
                         "install them with `apt-get install dataset-fashion-mnist`, point --data.root "
                         "or $SENET_DATA at a folder holding them, or pass --data.download true")
    t = {k: read_idx(p) for k, p in files.items()}
    return RawDataset(t["train_x"].unsqueeze(1), t["train_y"].long(), t["test_x"].unsqueeze(1),
                      t["test_y"].long(), list(FASHION_CLASSES))


def _torchvision_download(cls_name: str, cfg: DataConfig, find: Callable[[Path], object]):
    import torchvision  # only a download needs it

    dest = _download_root(cfg)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        getattr(torchvision.datasets, cls_name)(str(dest), train=True, download=True)
    except Exception as e:  # noqa: BLE001 - offline, proxy, disk: all become one line
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DatasetNotFoundError(f"download of {cls_name} into {dest} failed ({msg}); "
                                   "put the files there by hand or check the network") from None
    return find(dest)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (torchvision's on-disk pickle batches)
# ---------------------------------------------------------------------------------------------
def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def _cifar_arrays(batches: list[Path], label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for b in batches:
        d = _unpickle(b)
        data = d[b"data"]
        xs.append(torch.from_numpy(np.array(data, dtype=np.uint8)).reshape(-1, 3, 32, 32))
        ys.append(torch.as_tensor(list(d[label_key]), dtype=torch.int64))
    return torch.cat(xs), torch.cat(ys)


_CIFAR = {
    # name: (folder, train files, test files, meta file, meta key, label key, torchvision class)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "batches.meta", b"label_names", b"labels", "CIFAR10"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", b"fine_label_names", b"fine_labels",
                 "CIFAR100"),
}


def _cifar_loader(name: str) -> Loader:
    folder, train, test, meta, meta_key, label_key, tv = _CIFAR[name]

    def find(root: Path) -> Path | None:
        for d in (root / folder, root):
            if all((d / f).is_file() for f in (*train, *test, meta)):
                return d
        return None

    def load(cfg: DataConfig) -> RawDataset:
        roots = candidate_roots(cfg, name)
        d = next((f for f in map(find, roots) if f), None)
        if d is None and cfg.download:
            d = _torchvision_download(tv, cfg, find)
        if d is None:
            raise _not_found(name, f"{folder}/ ({', '.join(train + test)}, {meta})", roots,
                             "point --data.root or $SENET_DATA at the folder holding "
                             f"{folder}/, or pass --data.download true")
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in _unpickle(d / meta)[meta_key]]
        tx, ty = _cifar_arrays([d / f for f in train], label_key)
        vx, vy = _cifar_arrays([d / f for f in test], label_key)
        return RawDataset(tx, ty, vx, vy, classes)

    load.__doc__ = f"{name.upper()} (Krizhevsky 2009) from torchvision's {folder}/ pickle batches."
    return load


DATASETS.add("cifar10", _cifar_loader("cifar10"))
DATASETS.add("cifar100", _cifar_loader("cifar100"))


# ---------------------------------------------------------------------------------------------
# Image folders (ImageNet / Imagenette layout)
# ---------------------------------------------------------------------------------------------
_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".JPEG", ".JPG", ".PNG"}


def _decode_folder(folder: Path, classes: list[str], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every image once to RGB uint8, shorter side resized to ``size`` and centre-cropped."""
    # only image folders need torchvision's decoders
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2 import functional

    xs, ys = [], []
    for label, c in enumerate(classes):
        files = sorted(p for p in (folder / c).iterdir() if p.suffix in _IMAGE_EXT) \
            if (folder / c).is_dir() else []
        for p in files:
            img = decode_image(str(p), mode=ImageReadMode.RGB)
            if size:
                img = functional.center_crop(functional.resize(img, size, antialias=True), [size, size])
            xs.append(img)
            ys.append(label)
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) > 1:
        raise UserValueError(f"images in {folder} differ in size ({sorted(shapes)[:3]}...); set --data.image_size")
    if not xs:
        raise DatasetNotFoundError(f"no .png/.jpg images under {folder}/<class>/")
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)


@DATASETS.register("imagefolder")
def load_imagefolder(cfg: DataConfig) -> RawDataset:
    """``root/train/<class>/*.png|jpg`` and ``root/val/`` or ``root/test/`` (Imagenette's layout).

    With both ``val/`` and ``test/`` present, ``val/`` is the validation split and no images are held
    out of ``train/``; with one of them, it is the test set.
    """
    root = given_root(cfg)
    roots = [root] if root is not None else []
    if root is None and os.environ.get("SENET_DATA"):
        roots.append(Path(os.environ["SENET_DATA"]).expanduser())
    root = next((r for r in roots if (r / "train").is_dir() and
                 ((r / "val").is_dir() or (r / "test").is_dir())), None)
    if root is None:
        raise _not_found("imagefolder", "train/<class>/ and val/ or test/<class>/ folders", roots,
                         "pass --data.root DIR with that layout (e.g. Imagenette)")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    train_x, train_y = _decode_folder(root / "train", classes, cfg.image_size)
    has_val, has_test = (root / "val").is_dir(), (root / "test").is_dir()
    test_x, test_y = _decode_folder(root / ("test" if has_test else "val"), classes, cfg.image_size)
    raw = RawDataset(train_x, train_y, test_x, test_y, classes)
    if has_val and has_test:
        raw.val_x, raw.val_y = _decode_folder(root / "val", classes, cfg.image_size)
    return raw


# ---------------------------------------------------------------------------------------------
# Synthetic: oriented gratings, a deterministic learnable task for tests and smoke runs
# ---------------------------------------------------------------------------------------------
SYNTHETIC_CLASSES = [f"grating_{18 * k:03d}deg" for k in range(10)]


def synthetic_images(n: int, seed: int, size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` grey ``size×size`` images: class k is a grating at 18·k degrees with a random phase,
    contrast, spatial frequency and position of a Gaussian window, plus pixel noise.

    Orientation is the signal; different orientations excite different convolution channels, so the
    SE gates of a trained network become class-dependent (useful for the excitation analysis).
    """
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    y = y[torch.randperm(n, generator=g)]
    theta = y.double() * math.pi / 10
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, 1, 1, generator=g, dtype=torch.float64)
    freq, phase, amp = u(0.12, 0.22), u(0, 2 * math.pi), u(50, 110)
    cx, cy, width = u(8, size - 8), u(8, size - 8), u(6, 12)
    r = torch.arange(size, dtype=torch.float64)
    yy, xx = r.view(1, size, 1), r.view(1, 1, size)
    t = theta.view(n, 1, 1)
    wave = torch.sin(2 * math.pi * freq * (xx * torch.cos(t) + yy * torch.sin(t)) + phase)
    window = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * width ** 2))
    noise = 25 * torch.randn(n, size, size, generator=g, dtype=torch.float64)
    img = (110 + amp * wave * window + noise).clamp(0, 255).round().to(torch.uint8)
    return img.unsqueeze(1), y.long()


@DATASETS.register("synthetic")
def load_synthetic(cfg: DataConfig) -> RawDataset:
    """Procedural oriented gratings, 10 classes of 28×28 grey images (sizes: data.synthetic_*)."""
    tx, ty = synthetic_images(cfg.synthetic_train, seed=1)
    vx, vy = synthetic_images(cfg.synthetic_test, seed=2)
    return RawDataset(tx, ty, vx, vy, list(SYNTHETIC_CLASSES))
