"""TensorBoard logs of `senet train` runs and sweep trials, read back through a real TensorBoard server.

Each test starts ``tensorboard --logdir ... --host 127.0.0.1`` on a free port and reads what it
serves over its HTTP API (the same data its web page draws), so the event files are checked by
TensorBoard's own reader, not by a parser of ours.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from senet import config
from senet.checkpoint import build_from_config
from senet.cli import main
from senet.models import se_modules
from senet.tensorboard import EXCITATION_TAG, SCALAR_TAGS, StreamingHistogram
from tests.helpers import free_port

TINY = "tb_tiny_resnet"  # registered while this module's tests run (the tiny_resnet fixture)
TENSORBOARD = shutil.which("tensorboard", path=str(Path(sys.executable).parent)) or shutil.which("tensorboard")

pytestmark = pytest.mark.usefixtures("tiny_resnet")


# ------------------------------------------------------------------------------------------------
# A TensorBoard server for one test
# ------------------------------------------------------------------------------------------------
class Board:
    """The HTTP API of a TensorBoard server: runs, scalars and histograms."""

    def __init__(self, url: str):
        self.url = url

    def get(self, path: str, **query):
        q = f"?{urllib.parse.urlencode(query)}" if query else ""
        with urllib.request.urlopen(f"{self.url}{path}{q}", timeout=10) as r:
            return json.loads(r.read())

    def runs(self) -> list[str]:
        return self.get("/data/runs")

    def scalar_tags(self) -> dict[str, set[str]]:
        return {run: set(tags) for run, tags in self.get("/data/plugin/scalars/tags").items()}

    def histogram_tags(self) -> dict[str, set[str]]:
        return {run: set(tags) for run, tags in self.get("/data/plugin/histograms/tags").items()}

    def scalars(self, run: str, tag: str) -> list[tuple[int, float]]:
        """(step, value) pairs."""
        return [(step, value) for _wall, step, value in self.get("/data/plugin/scalars/scalars", run=run, tag=tag)]

    def histograms(self, run: str, tag: str) -> list[tuple[int, list[list[float]]]]:
        """(step, [[left, right, count], ...]) pairs."""
        return [(step, buckets) for _wall, step, buckets in
                self.get("/data/plugin/histograms/histograms", run=run, tag=tag)]

    def wait_for(self, ready, timeout: float = 90.0):
        """Poll until ``ready(self)`` is true: the server loads the event files in the background."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if ready(self):
                    return
            except (OSError, KeyError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"TensorBoard did not show the data within {timeout:.0f} s: "
                                     f"runs {self.runs()}, scalars {self.scalar_tags()}")
            time.sleep(0.5)


@contextlib.contextmanager
def tensorboard(logdir: Path, log: Path):
    """``tensorboard --logdir logdir`` on 127.0.0.1, answering; killed (with its data server) after."""
    assert TENSORBOARD, "the tensorboard command is not installed"
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([TENSORBOARD, "--logdir", str(logdir), "--host", "127.0.0.1",
                                 "--port", str(port), "--reload_interval", "1"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        board = Board(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while True:
            try:
                board.runs()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"TensorBoard did not start:\n{log.read_text()}") from None
                time.sleep(0.3)
        yield board
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # its own process group: the server and its data server
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _check_run(board: Board, run: str, metrics: list[dict], blocks: dict[str, int], n_images: int,
               hist_epochs: list[int] | None = None) -> None:
    """Every finite value of the metrics lines once, at step = epoch; one histogram per SE block and
    epoch (``hist_epochs``: every epoch) holding the excitation of every channel of every image of
    the evaluation pass it was read on."""
    expect = {tag: [(m["epoch"], m[key]) for m in metrics if m[key] is not None and math.isfinite(m[key])]
              for key, tag in SCALAR_TAGS.items()}
    assert board.scalar_tags()[run] == {tag for tag, points in expect.items() if points}
    for tag, points in expect.items():
        if points:
            got = board.scalars(run, tag)
            assert [s for s, _ in got] == [s for s, _ in points], (tag, got)
            assert [v for _, v in got] == pytest.approx([v for _, v in points], rel=1e-6), tag
    assert board.histogram_tags()[run] == {EXCITATION_TAG.format(block=b) for b in blocks}
    for block, channels in blocks.items():
        hists = board.histograms(run, EXCITATION_TAG.format(block=block))
        assert [s for s, _ in hists] == (hist_epochs or [m["epoch"] for m in metrics])
        for _, buckets in hists:
            assert sum(c for _, _, c in buckets) == n_images * channels
            assert 0.0 <= buckets[0][0] and buckets[-1][1] <= 1.0  # sigmoid gates


# ------------------------------------------------------------------------------------------------
# senet train
# ------------------------------------------------------------------------------------------------
_TRAIN = ["--model", f"se_{TINY}", "--se.reduction", "4", "--data.name", "synthetic",
          "--data.synthetic_train", "64", "--data.synthetic_test", "32", "--data.val_fraction", "0.25",
          "--data.augment", "none", "--optim.batch_size", "16", "--run.threads", "1", "--run.progress", "false"]


def test_senet_train_runs_show_in_tensorboard(tmp_path, capsys):
    runs = tmp_path / "runs"
    # a run trained for 2 epochs, then resumed for a third: one point per epoch (test set included)
    every = ["--run.eval_test", "every"]
    assert main(["train", *_TRAIN, *every, "--epochs", "2", "--out", str(runs / "resumed")]) == 0
    assert main(["train", "--resume", str(runs / "resumed"), "--epochs", "3"]) == 0
    # a run started over with --overwrite: the older run's epochs are hidden
    assert main(["train", *_TRAIN, *every, "--epochs", "2", "--out", str(runs / "redone")]) == 0
    assert main(["train", *_TRAIN, *every, "--epochs", "1", "--seed", "7", "--out", str(runs / "redone"),
                 "--overwrite"]) == 0
    # the test set evaluated at the end only (the default): its curve holds the best validation
    # epoch and the last
    assert main(["train", *_TRAIN, "--epochs", "3", "--out", str(runs / "end")]) == 0
    # no validation split: the excitations come from the test pass
    assert main(["train", *_TRAIN, *every, "--epochs", "2", "--data.val_fraction", "0",
                 "--out", str(runs / "noval")]) == 0
    capsys.readouterr()
    assert len(list((runs / "resumed").glob("events.out.tfevents.*"))) == 2
    end = _metrics(runs / "end")
    assert [m["epoch"] for m in end if m["test_top1_err"] is not None] == sorted({3, _best_epoch(end)})

    blocks = _blocks(f"se_{TINY}")
    with tensorboard(runs, tmp_path / "tb.log") as board:
        shown = {"resumed": 3, "redone": 1, "end": 3, "noval": 2}
        board.wait_for(lambda b: sorted(b.runs()) == sorted(shown)
                       and all(len(b.scalars(r, "loss/train")) == n for r, n in shown.items())
                       and all(len(b.histograms(r, "excitation/SE_4_1")) == n for r, n in shown.items()))
        for run in ("resumed", "redone", "end"):
            _check_run(board, run, _metrics(runs / run), blocks, n_images=16)
        _check_run(board, "noval", _metrics(runs / "noval"), blocks, n_images=32)


def _best_epoch(metrics: list[dict]) -> int:
    return min(metrics, key=lambda m: (m["val_top1_err"], m["epoch"]))["epoch"]


def _blocks(model: str) -> dict[str, int]:
    """The SE blocks of ``model`` (for 10 classes of 1-channel images) and their channels C."""
    cfg = config.from_flat({"model.name": model, "se.reduction": 4})
    return {name: m.channels for name, m in se_modules(build_from_config(cfg, 10, 1)).items()}


@pytest.mark.slow
def test_a_compiled_run_records_every_epochs_excitations(tmp_path, capsys):
    """torch.compile'd, the gate hooks must neither recompile the network every epoch nor drop out."""
    assert main(["train", *_TRAIN, "--epochs", "3", "--run.compile", "true", "--out", str(tmp_path / "compiled")]) == 0
    capsys.readouterr()
    with tensorboard(tmp_path, tmp_path / "tb.log") as board:
        board.wait_for(lambda b: len(b.histograms("compiled", "excitation/SE_4_1")) == 3)
        _check_run(board, "compiled", _metrics(tmp_path / "compiled"), _blocks(f"se_{TINY}"), n_images=16)


@pytest.mark.skipif("run.tensorboard" not in config.keys(), reason="no run.tensorboard config key yet")
def test_run_tensorboard_false_writes_no_event_file(tmp_path, capsys):
    assert main(["train", *_TRAIN, "--epochs", "1", "--out", str(tmp_path), "--run.tensorboard", "false"]) == 0
    assert (tmp_path / "final.json").is_file() and not list(tmp_path.glob("events.out.tfevents.*"))


def test_the_library_loads_tensorboard_only_for_a_run_that_logs():
    code = ("import sys; import senet.train_cmd, senet.tensorboard, ablations.trainable; "
            "print(sorted(m for m in sys.modules if m.startswith(('tensorboard', 'torch.utils.tensorboard'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------------------------
# The excitation histogram
# ------------------------------------------------------------------------------------------------
def test_streaming_histogram_matches_numpy_over_a_growing_range():
    gen = torch.Generator().manual_seed(0)
    batches = [torch.rand(50, 8, generator=gen) * 0.9 + 0.05,  # starts as [0, 1]
               torch.randn(40, 8, generator=gen) * 3 + 2,  # grows both ways
               torch.tensor([math.nan, math.inf, -math.inf, 0.5]),  # left out
               torch.full((5,), 40.0)]
    hist = StreamingHistogram(bins=16)
    for b in batches:
        hist.add(b)
    values = torch.cat([b.flatten() for b in batches])
    values = values[torch.isfinite(values)].double().numpy()
    expect, _ = np.histogram(values, bins=16, range=(hist.lo, hist.hi))
    assert hist.lo <= values.min() and values.max() <= hist.hi and hist.lo == math.floor(hist.lo)
    assert hist.counts.tolist() == expect.tolist()
    assert hist.num == len(values) and hist.min == values.min() and hist.max == values.max()
    assert hist.sum == pytest.approx(values.sum()) and hist.sum_squares == pytest.approx((values ** 2).sum())


def test_a_sigmoid_gate_keeps_the_unit_interval():
    hist = StreamingHistogram()
    hist.add(torch.sigmoid(torch.randn(100, 16)))
    hist.add(torch.ones(3))
    assert (hist.lo, hist.hi) == (0.0, 1.0) and hist.num == 1603


# ------------------------------------------------------------------------------------------------
# A sweep: one TensorBoard run per trial, named by arm and seed, in the study's Ray storage
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smoke_sweep_trials_show_in_tensorboard(ray_session, tmp_path, capsys):
    spec = tmp_path / "tb.yaml"
    spec.write_text("name: tb\naxes: {se.reduction: [4, 8]}\n")
    assert main(["sweep", "custom", "--spec", str(spec), "--preset", "smoke", "--seeds", "1",
                 "--results", str(tmp_path), "--cpus-per-trial", "1"]) == 0
    capsys.readouterr()
    storage = tmp_path / "tb" / "ray"
    trials = sorted(p for p in (storage / "tb-smoke").iterdir() if p.is_dir())
    assert [re.sub(r"_[0-9a-f]+_\d+$", "", t.name) for t in trials] == ["reduction=4_seed0", "reduction=8_seed0"]
    for trial in trials:  # Tune copies each trial's working directory to storage (RunConfig's SyncConfig)
        assert list(trial.glob("events.out.tfevents.*")), f"no event file in {trial} (sync_artifacts off?)"
    blocks = _blocks("se_resnet20")

    with tensorboard(storage, tmp_path / "tb.log") as board:
        names = [f"tb-smoke/{t.name}" for t in trials]
        board.wait_for(lambda b: sorted(b.runs()) == names
                       and all(len(b.histograms(n, "excitation/SE_4_3")) == 1 for n in names))
        for trial, name in zip(trials, names, strict=True):
            final = next(trial.glob("checkpoint_*/metrics.jsonl"))
            _check_run(board, name, _metrics(final.parent), blocks, n_images=16)
