"""The dataset loaders read small files written here in each real on-disk format."""
from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from senet import data, datasets
from senet.config import DataConfig

pytestmark = pytest.mark.usefixtures("one_thread", "no_senet_data")


@pytest.fixture
def no_system(monkeypatch):
    """Hide /usr/share/datasets so a missing dataset is really missing."""
    monkeypatch.setattr(datasets, "SYSTEM_ROOTS", ())


def write_idx(path, arr: np.ndarray):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def make_fashion(folder, n_train=50, n_test=20):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte.gz": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": (np.arange(n_test) * 3) % 10,
    }
    for name, a in arrays.items():
        write_idx(folder / name, a)
    return arrays


def test_fashion_mnist_gzipped_idx(tmp_path, no_system):
    arrays = make_fashion(tmp_path / "fm")
    ds = data.load_datasets(DataConfig(name="fashion-mnist", root=str(tmp_path / "fm"), val_fraction=0.2))
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert ds.train_x.shape == (40, 1, 28, 28) and ds.val_x.shape == (10, 1, 28, 28)
    assert ds.test_x.shape == (20, 1, 28, 28)
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot" and ds.num_classes == 10
    # test split untouched and in file order
    assert torch.equal(ds.test_x[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte.gz"].astype(np.uint8)))
    assert ds.test_y.tolist() == arrays["t10k-labels-idx1-ubyte.gz"].tolist()
    # train + val is a partition of the training file
    labels = sorted(ds.train_y.tolist() + ds.val_y.tolist())
    assert labels == sorted(arrays["train-labels-idx1-ubyte.gz"].tolist())
    # uniform random bytes: mean ~ 127.5/255, std ~ 73.9/255
    assert ds.mean[0] == pytest.approx(0.5, abs=0.02) and ds.std[0] == pytest.approx(0.29, abs=0.02)


def test_fashion_mnist_found_through_senet_data(tmp_path, monkeypatch, no_system):
    make_fashion(tmp_path / "fashion-mnist")
    monkeypatch.setenv("SENET_DATA", str(tmp_path))
    ds = data.load_datasets(DataConfig(name="fashion-mnist", val_fraction=0, subset=7))
    assert len(ds.train_x) == 7 and len(ds.val_x) == 0


def test_split_is_fixed_and_seeded(tmp_path, no_system):
    make_fashion(tmp_path)
    cfg = DataConfig(name="fashion-mnist", root=str(tmp_path), val_fraction=0.2)
    other = DataConfig(name="fashion-mnist", root=str(tmp_path), val_fraction=0.2, split_seed=1)
    a, b, c = data.load_datasets(cfg), data.load_datasets(cfg), data.load_datasets(other)
    assert torch.equal(a.val_x, b.val_x) and not torch.equal(a.val_x, c.val_x)


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, no_system):
    with pytest.raises(ValueError) as e:
        data.load_datasets(DataConfig(name="fashion-mnist", root=str(tmp_path)))
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg and "apt-get install dataset-fashion-mnist" in msg


def test_corrupt_idx_is_one_line_error(tmp_path, no_system):
    make_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x09ab"))
    with pytest.raises(ValueError, match="truncated IDX"):
        data.load_datasets(DataConfig(name="fashion-mnist", root=str(tmp_path)))


def _pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def test_cifar10_pickle_batches(tmp_path, no_system):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        _pickle(d / f"data_batch_{i}", {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                                        b"labels": [i % 10, 1, 2, 3]})
    test = rng.integers(0, 256, (6, 3072), dtype=np.uint8)
    _pickle(d / "test_batch", {b"data": test, b"labels": [0, 1, 2, 3, 4, 5]})
    _pickle(d / "batches.meta", {b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer",
                                                  b"dog", b"frog", b"horse", b"ship", b"truck"]})
    ds = data.load_datasets(DataConfig(name="cifar10", root=str(tmp_path), val_fraction=0.25))
    assert ds.train_x.shape == (15, 3, 32, 32) and ds.val_x.shape == (5, 3, 32, 32)
    assert ds.classes[0] == "airplane" and len(ds.classes) == 10 and len(ds.mean) == 3
    # CIFAR rows are channel-major 32×32 planes
    assert torch.equal(ds.test_x[2, 1], torch.from_numpy(test[2, 1024:2048].reshape(32, 32)))
    assert ds.test_y.tolist() == [0, 1, 2, 3, 4, 5]


def test_cifar100_pickle_batches(tmp_path, no_system):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    rng = np.random.default_rng(1)
    _pickle(d / "train", {b"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8),
                          b"fine_labels": list(range(10)), b"coarse_labels": [0] * 10})
    _pickle(d / "test", {b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8),
                         b"fine_labels": [99, 5, 7], b"coarse_labels": [0] * 3})
    _pickle(d / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)]})
    ds = data.load_datasets(DataConfig(name="cifar100", root=str(d), val_fraction=0))
    assert ds.num_classes == 100 and ds.test_y.tolist() == [99, 5, 7] and len(ds.train_x) == 10


def test_missing_cifar_names_the_folder(tmp_path, no_system):
    with pytest.raises(ValueError, match="cifar-10-batches-py"):
        data.load_datasets(DataConfig(name="cifar10", root=str(tmp_path)))


def test_imagefolder_pngs(tmp_path):
    from torchvision.io import write_png

    for split, n in (("train", 3), ("val", 2)):
        for c, colour in (("cat", 200), ("dog", 30)):
            folder = tmp_path / split / c
            folder.mkdir(parents=True)
            for i in range(n):
                img = torch.full((3, 12, 16), colour, dtype=torch.uint8)
                img[0, 0, 0] = i
                write_png(img, str(folder / f"{i}.png"))
    ds = data.load_datasets(DataConfig(name="imagefolder", root=str(tmp_path), image_size=8, val_fraction=0))
    assert ds.classes == ["cat", "dog"]
    assert ds.train_x.shape == (6, 3, 8, 8) and ds.test_x.shape == (4, 3, 8, 8)
    assert ds.test_y.tolist() == [0, 0, 1, 1]
    assert int(ds.test_x[0, 1].float().mean()) == 200 and int(ds.test_x[3, 1].float().mean()) == 30


def test_imagefolder_missing(tmp_path):
    with pytest.raises(ValueError, match="train/<class>"):
        data.load_datasets(DataConfig(name="imagefolder", root=str(tmp_path)))


def test_synthetic_is_deterministic_and_balanced():
    cfg = DataConfig(name="synthetic", synthetic_train=200, synthetic_test=100, val_fraction=0.1)
    a, b = data.load_datasets(cfg), data.load_datasets(cfg)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert a.train_x.shape[1:] == (1, 28, 28) and len(a.train_x) == 180 and len(a.val_x) == 20
    assert torch.bincount(a.test_y, minlength=10).tolist() == [10] * 10
    # the signal: orientation. Class-mean images of classes 0 and 5 (0° vs 90°) differ clearly
    # in their horizontal vs vertical gradient energy.
    x = a.train_x.float()
    gx = (x[..., 1:] - x[..., :-1]).abs().mean((1, 2, 3))
    gy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3))
    ratio = gx / gy
    assert ratio[a.train_y == 0].mean() > 1.2 * ratio[a.train_y == 5].mean()


def test_unknown_dataset_lists_choices():
    with pytest.raises(ValueError, match="fashion-mnist.*synthetic"):
        data.load_datasets(DataConfig(name="mnist"))


def test_normalize_formula():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    y = data.normalize(x, (0.2,), (0.5,))
    assert torch.allclose(y.flatten(), torch.tensor([-0.4, 0.0, 1.6]), atol=1e-6)
    assert y.dtype == torch.float32


def test_crop_is_a_zero_padded_shift_and_flip_mirrors():
    x = torch.arange(1, 1 + 2 * 3 * 6 * 6, dtype=torch.int64).remainder(250).add(1).to(torch.uint8)
    x = x.view(2, 3, 6, 6)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(data.random_crop(x, g, pad=0), x)
    out = data.random_crop(x, g, pad=2)
    assert out.shape == x.shape and out.dtype == torch.uint8
    for n in range(2):  # every crop is x shifted by (dy, dx) in [-2, 2]² with zeros coming in
        ok = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ref = torch.zeros_like(x[n])
                src = x[n][:, max(0, dy):6 + min(0, dy), max(0, dx):6 + min(0, dx)]
                ref[:, max(0, -dy):6 - max(0, dy), max(0, -dx):6 - max(0, dx)] = src
                ok |= torch.equal(out[n], ref)
        assert ok
    flips = data.random_flip(x.repeat(32, 1, 1, 1), torch.Generator().manual_seed(1))
    is_flip = [torch.equal(f, x[i % 2].flip(2)) for i, f in enumerate(flips)]
    is_same = [torch.equal(f, x[i % 2]) for i, f in enumerate(flips)]
    assert all(a or b for a, b in zip(is_flip, is_same, strict=True)) and 8 < sum(is_flip) < 56


def test_augment_registry_and_determinism():
    x = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)
    a = data.augment(x, "crop_flip", torch.Generator().manual_seed(3))
    b = data.augment(x, "crop_flip", torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert torch.equal(data.augment(x, "none", torch.Generator()), x)
    with pytest.raises(ValueError, match="crop_flip"):
        data.augment(x, "mixup", torch.Generator())


@pytest.mark.skipif(not (datasets.SYSTEM_ROOTS[0] / "fashion-mnist").is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_fits_in_100_mb():
    ds = data.load_datasets(DataConfig(name="fashion-mnist"))
    assert (len(ds.train_x), len(ds.val_x), len(ds.test_x)) == (54000, 6000, 10000)
    assert ds.nbytes() <= 100e6
    # Fashion-MNIST's published training-set statistics: mean 0.286, std 0.353
    assert ds.mean[0] == pytest.approx(0.286, abs=0.002) and ds.std[0] == pytest.approx(0.353, abs=0.002)


def test_test_subset_is_a_fixed_sample_of_the_test_set():
    full = data.load_datasets(DataConfig(name="synthetic", synthetic_train=64, synthetic_test=100))
    cfg = DataConfig(name="synthetic", synthetic_train=64, synthetic_test=100, test_subset=30)
    a, b = data.load_datasets(cfg), data.load_datasets(cfg)
    assert len(a.test_x) == 30 and torch.equal(a.test_x, b.test_x) and torch.equal(a.test_y, b.test_y)
    # every kept image is one of the full test set's, and training data is untouched
    flat = full.test_x.flatten(1)
    assert all((flat == img.flatten()).all(1).any() for img in a.test_x)
    assert torch.equal(a.train_x, full.train_x)
