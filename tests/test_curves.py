"""`senet curves`: training histories of run directories, their summary and their figure."""
from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from analysis import curves
from senet.cli import main


def _line(epoch, test_err, loss, val=None, status="running"):
    return {"epoch": epoch, "train_loss": loss, "test_top1_err": test_err, "test_top5_err": test_err / 10,
            "val_top1_err": val, "images_per_s": 100.0 + epoch, "epoch_time_s": 10.0, "status": status}


def _run(path, model, errs, *, final=None, tail=""):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model": {"name": model}}))
    lines = [_line(i + 1, e, 1.0 / (i + 1)) for i, e in enumerate(errs)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + tail)
    if final is not None:
        (path / "final.json").write_text(json.dumps(final))
    return path


@pytest.fixture
def two_runs(tmp_path):
    se = _run(tmp_path / "se", "se_resnet20", [30.0, 12.0, 9.0, 8.0],
              final={"status": "completed", "wall_time_s": 3723.4})
    # still running, and killed in the middle of writing its last line
    plain = _run(tmp_path / "plain", "resnet20", [28.0, 14.0, 10.0], tail='{"epoch": 4, "train_lo')
    return se, plain


def test_history_and_summary(two_runs):
    se, plain = two_runs
    h = curves.load_history([se, plain / "metrics.jsonl"])
    assert list(h["run"].cat.categories) == ["se", "plain"]
    assert h.groupby("run", observed=True).size().to_dict() == {"se": 4, "plain": 3}
    s = curves.run_summary(h).set_index("run")
    assert s.loc["se", ["model", "epochs", "status"]].tolist() == ["se_resnet20", 4, "completed"]
    assert s.loc["se", "test_top1_err"] == 8.0 and s.loc["se", "best_epoch"] == 4
    assert s.loc["se", "wall_time_s"] == pytest.approx(3723.4)
    assert s.loc["plain", "status"] == "running" and s.loc["plain", "wall_time_s"] == pytest.approx(30.0)
    assert s.loc["plain", "best_test_top1_err"] == 10.0
    assert s.loc["plain", "images_per_s"] == pytest.approx(102.0)
    rows = dict((r[0], r) for r in curves.summary_rows(s.reset_index()))
    assert rows["se"][6:8] == ["8.00 (4)", "1:02:03"]


def test_resumed_epochs_keep_the_last_line(tmp_path):
    d = _run(tmp_path / "r", "resnet20", [30.0, 20.0])
    with open(d / "metrics.jsonl", "a") as f:
        f.write(json.dumps(_line(2, 18.0, 0.4)) + "\n")
    h = curves.load_history([d])
    assert h["test_top1_err"].tolist() == [30.0, 18.0]


def test_figure_has_a_panel_per_logged_metric(two_runs):
    h = curves.load_history(list(two_runs), labels=["SE-ResNet-20", "ResNet-20"])
    assert curves.available_metrics(h) == ["train_loss", "test_top1_err"]  # val never logged
    fig = curves.training_curves(h)
    axes = fig.get_axes()
    assert [a.get_title() for a in axes] == ["training loss", "test top-1 error (%)"]
    assert [len(a.get_lines()) for a in axes] == [2, 2]
    assert [t.get_text() for t in axes[1].get_legend().get_texts()] == ["SE-ResNet-20", "ResNet-20"]
    assert [t.get_text() for t in axes[1].texts] == ["min 8.00 (epoch 4)", "min 10.00 (epoch 3)"]
    plt.close(fig)
    with pytest.raises(ValueError, match="was not logged"):
        curves.training_curves(h, ["test_top1_er"])


def test_cli_writes_table_csv_and_figure(two_runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["curves", *map(str, two_runs), "--out", str(out), "--labels", "SE,plain"]) == 0
    printed = capsys.readouterr().out
    assert "| SE | se_resnet20 | 4 | completed | 8.00 | 0.80 | 8.00 (4) | 1:02:03 | 102 |" in printed
    assert (out / "training_curves.png").is_file() and (out / "training_curves.pdf").is_file()
    assert len(pd.read_csv(out / "curves.csv")) == 7
    assert "training_curves.png" in (out / "summary.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["nowhere"], "run directory not found: nowhere"),
    (["{se}", "--labels", "a,b"], "2 labels for 1 runs"),
    (["{se}", "--metrics", "accuracy"], "metric 'accuracy' was not logged"),
])
def test_bad_input_is_one_line(two_runs, tmp_path, capsys, args, message):
    se, _ = two_runs
    args = [a.format(se=se) for a in args]
    assert main(["curves", *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
