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


def _run(path, model, errs, *, final=None, tail="", val=None):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model": {"name": model}}))
    lines = [_line(i + 1, e, 1.0 / (i + 1), val[i] if val else None) for i, e in enumerate(errs)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + tail)
    if final is not None:
        (path / "final.json").write_text(json.dumps(final))
    return path


@pytest.fixture
def two_runs(tmp_path):
    # validation is best at epoch 3 (10.5, test 9.0 there); the lowest test error (8.0, epoch 4) is
    # not a selection: choosing on test is optimistically biased
    se = _run(tmp_path / "se", "se_resnet20", [30.0, 12.0, 9.0, 8.0], val=[31.0, 11.0, 10.5, 10.9],
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
    assert s.loc["se", "test_top1_err"] == 8.0 and s.loc["se", "best_epoch"] == 3
    assert s.loc["se", ["best_val_top1_err", "test_top1_err_at_best_val"]].tolist() == [10.5, 9.0]
    assert s.loc["se", "wall_time_s"] == pytest.approx(3723.4)
    assert s.loc["plain", "status"] == "running" and s.loc["plain", "wall_time_s"] == pytest.approx(30.0)
    # no validation split: no best epoch, and never the lowest test error in its place
    assert pd.isna(s.loc["plain", "best_epoch"]) and pd.isna(s.loc["plain", "test_top1_err_at_best_val"])
    assert s.loc["plain", "images_per_s"] == pytest.approx(102.0)
    rows = dict((r[0], r) for r in curves.summary_rows(s.reset_index()))
    assert curves.SUMMARY_HEADER[6:8] == ["best val top-1 (epoch)", "test top-1 at best val"]
    assert rows["se"][6:9] == ["10.50 (3)", "9.00", "1:02:03"] and rows["plain"][6:8] == ["–", "–"]


def test_resumed_epochs_keep_the_last_line(tmp_path):
    d = _run(tmp_path / "r", "resnet20", [30.0, 20.0])
    with open(d / "metrics.jsonl", "a") as f:
        f.write(json.dumps(_line(2, 18.0, 0.4)) + "\n")
    h = curves.load_history([d])
    assert h["test_top1_err"].tolist() == [30.0, 18.0]


def test_figure_has_a_panel_per_logged_metric(two_runs):
    h = curves.load_history(list(two_runs), labels=["SE-ResNet-20", "ResNet-20"])
    assert curves.available_metrics(h) == ["train_loss", "val_top1_err", "test_top1_err"]
    fig = curves.training_curves(h)
    axes = fig.get_axes()
    assert [a.get_title() for a in axes] == ["training loss", "validation top-1 error (%)", "test top-1 error (%)"]
    assert [t.get_text() for t in axes[2].get_legend().get_texts()] == ["SE-ResNet-20", "ResNet-20"]
    # the corner names the best epoch by validation and the test error there; the plain run has no
    # validation split and gets no mark
    assert [t.get_text() for t in axes[1].texts] == ["best val 10.50 @ ep 3"]
    assert [t.get_text() for t in axes[2].texts] == ["test 9.00 @ ep 3 (best val)"]
    assert [len(a.get_lines()) for a in axes] == [2, 3, 3]  # two curves and the SE run's star
    plt.close(fig)
    with pytest.raises(ValueError, match="was not logged"):
        curves.training_curves(h, ["test_top1_er"])


def test_cli_writes_table_csv_and_figure(two_runs, tmp_path, capsys, drawn):
    out = tmp_path / "cmp"
    assert main(["curves", *map(str, two_runs), "--out", str(out), "--labels", "SE,plain"]) == 0
    printed = capsys.readouterr().out
    assert "| SE | se_resnet20 | 4 | completed | 8.00 | 0.80 | 10.50 (3) | 9.00 | 1:02:03 | 102 |" in printed
    assert (out / "training_curves.png").is_file() and (out / "training_curves.pdf").is_file()
    # the figure written: a panel per logged metric, each run's logged values by epoch
    axes = drawn["training_curves"].axes
    assert [a.get_title() for a in axes] == ["training loss", "validation top-1 error (%)", "test top-1 error (%)"]
    curves_drawn = {ln.get_label(): ln for ln in axes[2].lines if not ln.get_label().startswith("_")}
    assert list(curves_drawn) == ["SE", "plain"]
    assert list(curves_drawn["SE"].get_xdata()) == [1, 2, 3, 4]
    assert list(curves_drawn["SE"].get_ydata()) == [30.0, 12.0, 9.0, 8.0]
    assert list(curves_drawn["plain"].get_ydata()) == [28.0, 14.0, 10.0]  # its cut last line is not drawn
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


def test_a_run_without_an_epoch_is_skipped_with_a_note(two_runs, tmp_path, capsys):
    # a run that has just started (no epoch logged) must not make `senet curves` refuse the others
    se, plain = two_runs
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.json").write_text(json.dumps({"model": {"name": "resnet20"}}))  # no metrics.jsonl yet
    empty = _run(tmp_path / "empty", "resnet20", [])  # metrics.jsonl with no line
    out = tmp_path / "cmp"
    assert main(["curves", str(se), str(fresh), str(plain), str(empty), "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert cap.err.count("note: skipping") == 2 and "fresh" in cap.err and "empty" in cap.err
    assert "| se |" in cap.out and "| plain |" in cap.out and "| fresh |" not in cap.out
    assert set(pd.read_csv(out / "curves.csv")["run"]) == {"se", "plain"}
    assert main(["curves", str(fresh), str(empty), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no run has an epoch logged yet" in err
