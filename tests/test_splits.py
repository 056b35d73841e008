"""Splits are a property of the data config (``data.split_seed``), sized from what is used, and an
explicit ``data.root`` is the only place the data is taken from."""
from __future__ import annotations

import json

import pytest
import torch

from senet import cli, config, data, datasets, engine
from senet.models import MODELS
from senet.models.backbone_registry import register_model
from senet.models.blocks import BasicBlock
from senet.models.resnet import ResNet
from senet.resume import ResumePoint, check_resume
from tests.test_data import make_fashion

TINY = "tiny_split_resnet"


pytestmark = pytest.mark.usefixtures("one_thread", "no_senet_data")


@pytest.fixture
def tiny_model():
    register_model(TINY, lambda **kw: ResNet(BasicBlock, (1, 1, 1), (4, 8, 8), stem="cifar",
                                             stem_width=4, shortcut="pad", **kw),
                   family="test", input_size=28, num_classes=10, in_chans=1, doc="test network")
    yield TINY
    MODELS.remove(TINY)
    MODELS.remove(f"se_{TINY}")


def _spy(monkeypatch, module) -> list[data.Datasets]:
    """Record every Datasets that ``module.load_datasets`` hands out."""
    seen: list[data.Datasets] = []
    real = data.load_datasets

    def wrapped(*a, **kw):
        seen.append(real(*a, **kw))
        return seen[-1]

    monkeypatch.setattr(module, "load_datasets", wrapped)
    return seen


def test_analysis_of_a_seed_1_run_sees_the_runs_val_and_test_images(tmp_path, monkeypatch, tiny_model):
    """analyze reads the run's own validation and test images: a re-split with the run's seed would
    make --split val mostly training images and a test_subset a different sample."""
    from analysis import analyze

    cfg = config.from_flat({"model.name": f"se_{tiny_model}", "data.name": "synthetic", "data.synthetic_train": 120,
                       "data.synthetic_test": 64, "data.val_fraction": 0.25, "data.test_subset": 24,
                       "data.augment": "none", "optim.epochs": 1, "optim.batch_size": 32, "seed": 1,
                       "run.threads": 1, "run.progress": False, "run.out": str(tmp_path / "run")})
    used = _spy(monkeypatch, engine)
    engine.fit(cfg)
    assert len(used) == 1
    run = used[0]
    assert (len(run.val_x), len(run.test_x)) == (30, 24)

    loaded = _spy(monkeypatch, data)  # analyze imports load_datasets from senet.data when it runs
    analyze._load(str(tmp_path / "run" / "checkpoint.pt"), {})
    assert len(loaded) == 1
    seen = loaded[0]
    for split in ("val", "test", "train"):
        assert torch.equal(getattr(seen, f"{split}_x"), getattr(run, f"{split}_x")), split
        assert torch.equal(getattr(seen, f"{split}_y"), getattr(run, f"{split}_y")), split


def test_split_seed_decides_the_split_and_is_recorded(tmp_path, monkeypatch, tiny_model):
    base = {"name": "synthetic", "synthetic_train": 80, "synthetic_test": 40, "val_fraction": 0.25,
            "test_subset": 10}
    a, b = data.load_datasets(config.DataConfig(**base)), data.load_datasets(config.DataConfig(**base, split_seed=3))
    assert not torch.equal(a.val_x, b.val_x) and not torch.equal(a.test_x, b.test_x)
    assert torch.equal(a.val_x, data.load_datasets(config.DataConfig(**base, split_seed=0)).val_x)

    cfg = config.from_flat({"model.name": tiny_model, **{f"data.{k}": v for k, v in base.items()},
                       "data.split_seed": 3, "data.augment": "none", "optim.epochs": 1,
                       "optim.batch_size": 32, "seed": 5, "run.threads": 1, "run.progress": False,
                       "run.out": str(tmp_path / "run")})
    used = _spy(monkeypatch, engine)
    engine.fit(cfg)
    assert torch.equal(used[0].val_x, b.val_x) and torch.equal(used[0].test_x, b.test_x)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"]["split_seed"] == 3
    # a resume cannot move the split
    with pytest.raises(ValueError, match="data.split_seed"):
        check_resume(config.from_flat({"data.split_seed": 0}, base=cfg), ResumePoint.load(tmp_path / "run"))


def test_config_without_split_seed_loads_as_the_split_training_always_used():
    saved = config.to_dict(config.Config())
    del saved["data"]["split_seed"]
    assert config.from_dict(saved).data.split_seed == 0


def test_load_datasets_takes_no_run_seed():
    with pytest.raises(TypeError):
        data.load_datasets(config.DataConfig(name="synthetic", synthetic_train=20, synthetic_test=10), 1)


@pytest.mark.parametrize("value", ["-1", "-7"])
def test_negative_split_seed_is_one_line_config_error(value):
    with pytest.raises(config.ConfigError) as e:
        config.from_flat({"data.split_seed": value})
    assert "\n" not in str(e.value) and "data.split_seed" in str(e.value) and value in str(e.value)


def test_subset_sizes_the_validation_split_from_the_subset():
    """The validation fraction applies to the subset: --data.subset 2000 holds out 10% of 2000,
    not of all 60,000 images."""
    kw = {"name": "synthetic", "synthetic_train": 400, "synthetic_test": 20, "val_fraction": 0.1}
    ds = data.load_datasets(config.DataConfig(**kw, subset=100))
    assert (len(ds.val_x), len(ds.train_x)) == (10, 100)
    full = data.load_datasets(config.DataConfig(**kw))
    assert (len(full.val_x), len(full.train_x)) == (40, 360)
    # both come from the one fixed shuffle: validation first, the training subset next
    raw = data.DATASETS.get("synthetic")(config.DataConfig(**kw))
    perm = torch.randperm(400, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ds.val_x, raw.train_x[perm[:10].sort().values])
    assert torch.equal(ds.train_x, raw.train_x[perm[10:110].sort().values])
    # a subset as large as the file is the whole file
    assert (len(data.load_datasets(config.DataConfig(**kw, subset=10_000)).val_x)) == 40


def test_missing_data_root_is_one_line_error_naming_it(capsys, tmp_path, monkeypatch, tiny_model):
    """A --data.root that does not exist is an error, never a fall-back to another copy."""
    make_fashion(tmp_path / "elsewhere" / "fashion-mnist")  # the copy it must not fall back to
    monkeypatch.setenv("SENET_DATA", str(tmp_path / "elsewhere"))
    monkeypatch.setattr(datasets, "SYSTEM_ROOTS", ())
    missing = str(tmp_path / "no-such-folder")
    code = cli.main(["train", "--data.name", "fashion-mnist", "--data.root", missing,
                     "--model.name", tiny_model, "--epochs", "1", "--data.subset", "8",
                     "--run.threads", "1", "--run.progress", "false"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if not ln.startswith("senet: warning")]
    assert code != 0 and len(lines) == 1 and missing in lines[0] and "Traceback" not in err


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10", "imagefolder"])
def test_given_data_root_is_the_only_place_looked_in(tmp_path, monkeypatch, name):
    make_fashion(tmp_path / "elsewhere" / "fashion-mnist")
    monkeypatch.setenv("SENET_DATA", str(tmp_path / "elsewhere"))
    monkeypatch.setattr(datasets, "SYSTEM_ROOTS", ())
    missing = tmp_path / "no-such-folder"
    with pytest.raises(data.DatasetNotFoundError, match="does not exist") as e:
        data.load_datasets(config.DataConfig(name=name, root=str(missing)))
    assert str(missing) in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(data.DatasetNotFoundError, match="is not a folder"):
        data.load_datasets(config.DataConfig(name=name, root=str(tmp_path / "a-file")))
    # a folder that exists but lacks the files is not a licence to use another copy either
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DatasetNotFoundError) as e:
        data.load_datasets(config.DataConfig(name=name, root=str(tmp_path / "empty")))
    assert str(tmp_path / "empty") in str(e.value) and "elsewhere" not in str(e.value)


def test_missing_root_is_the_download_destination(tmp_path, monkeypatch):
    """With data.download true a missing root is where the files will go, not an error."""
    dest = tmp_path / "new"
    cfg = config.DataConfig(name="fashion-mnist", root=str(dest), download=True)
    assert datasets.given_root(cfg) == dest and datasets.candidate_roots(cfg, "fashion-mnist")[0] == dest
