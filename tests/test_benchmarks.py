"""The benchmark scripts' own logic: the latency ratio's interval, the before/after checkout, and
their input errors. (What they measure is not asserted: timings do not belong in tests.)"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench  # noqa: E402
import family_latency  # noqa: E402
import latency  # noqa: E402
import se_cost  # noqa: E402
import sweep_rate  # noqa: E402
import train_wall  # noqa: E402
import variance_parts  # noqa: E402


def test_median_ci_uses_the_binomial_order_statistics():
    # n = 10: the 95% interval for the median is (x(2), x(9)), coverage 97.9%
    assert latency.median_ci([float(i) for i in range(10, 0, -1)]) == (5.5, 2.0, 9.0)
    # n = 100: ranks 40 and 61 (1-based), the textbook interval
    assert latency.median_ci([float(i) for i in range(1, 101)])[1:] == (40.0, 61.0)


def test_median_ci_brackets_the_median_for_small_samples():
    for n in range(1, 12):
        m, lo, hi = latency.median_ci([float(i) for i in range(n)])
        assert lo <= m <= hi


def test_the_unfolded_row_keeps_every_se_off_the_fold_with_the_same_outputs(monkeypatch):
    """The row measures the path before the fold: BN, then the scaling fused with the addition."""
    import torch

    import senet
    from senet.se import SqueezeExcitation

    folds = []
    real = SqueezeExcitation.fold
    monkeypatch.setattr(SqueezeExcitation, "fold", lambda se, *a: folds.append(se) or real(se, *a))
    torch.manual_seed(0)
    model = senet.build_model("se_resnet50").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        folded = model(x)
        assert len(folds) == 16
        folds.clear()
        scale_adds = []
        real_scale_add = SqueezeExcitation.scale_add
        monkeypatch.setattr(SqueezeExcitation, "scale_add",
                            lambda se, *a: scale_adds.append(se) or real_scale_add(se, *a))
        torch.testing.assert_close(latency.Unfolded(model)(x), folded, rtol=1e-5, atol=1e-5)
        assert folds == [] and len(scale_adds) == 16
        model(x)  # the hooks were for that call only: folded again
    assert len(folds) == 16 and len(scale_adds) == 16


def test_latency_pools_the_rounds_of_fresh_processes(monkeypatch, capsys):
    """--processes K: each child measures once and returns its raw times; the parent pools the
    rounds and prints each row's pooled ratio with the spread of the children's medians."""
    import json
    import types

    calls = []

    def child(cmd, **kw):
        calls.append(cmd)
        k = len(calls)
        times = {f"{row}\t{name}": [100.0, 100.0] if name == "ResNet-50" else [100.0 + k, 100.0 + k]
                 for row in ("ours", "timm") for name in ("ResNet-50", "SE-ResNet-50")}
        return types.SimpleNamespace(stdout=json.dumps(times))

    monkeypatch.setattr(latency.subprocess, "run", child)
    assert latency.main(["--processes", "3", "--repeats", "2", "--clock", "cpu"]) == 0
    assert len(calls) == 3 and all("--json" in c and c[c.index("--processes") + 1] == "1" for c in calls)
    assert all(c[c.index("--repeats") + 1] == "2" and c[c.index("--clock") + 1] == "cpu" for c in calls)
    out = capsys.readouterr().out
    assert "3 processes x 2 interleaved rounds" in out
    ours = next(line for line in out.splitlines() if line.startswith("ours"))
    assert ours.split()[3] == "1.020" and ours.endswith("1.010-1.030"), ours


def test_checkout_of_an_unknown_ref_is_one_line():
    with pytest.raises(SystemExit, match="is not a commit of this repository"), \
            sweep_rate.checkout("no-such-ref-anywhere"):
        pass


def test_checkout_gives_the_commits_tree_and_removes_it():
    head = subprocess.run(["git", "-C", str(sweep_rate.ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    with sweep_rate.checkout("HEAD") as (tree, sha):
        assert head.stdout.startswith(sha)
        assert (tree / "senet" / "__init__.py").is_file()
    assert not tree.exists()
    listed = subprocess.run(["git", "-C", str(sweep_rate.ROOT), "worktree", "list"], capture_output=True,
                            text=True).stdout
    assert str(tree) not in listed


@pytest.mark.parametrize("argv, message", [
    (["--baseline", "HEAD", "--set", "run.eval_test"], "--set takes KEY=VALUE"),
    (["--set", "a=b"], "--baseline"),
])
def test_train_wall_refuses_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        train_wall.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_sweep_rate_refuses_a_bad_layout(capsys):
    with pytest.raises(SystemExit) as e:
        sweep_rate.main(["--cpus", "one"])
    assert e.value.code == 2
    assert "--cpus takes integers" in capsys.readouterr().err


def test_se_cost_plain_network_reads_the_se_networks_own_weights():
    """The parts are measured against a ResNet-50 holding the SE network's tensors: with no SE work
    the two networks compute the same thing from the same memory."""
    import torch

    import senet

    torch.manual_seed(0)
    se_net = senet.build_model("se_resnet50").eval()
    plain = se_cost.share_weights(senet.build_model("resnet50"), se_net).eval()
    ours = dict(se_net.named_parameters()) | dict(se_net.named_buffers())
    for name, t in [*plain.named_parameters(), *plain.named_buffers()]:
        assert t is ours[name], name
    switch = se_cost.Parts(se_net)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        switch.use("no SE work")
        assert torch.equal(se_net(x), plain(x))
    with pytest.raises(ValueError, match="has no counterpart"):
        se_cost.share_weights(senet.build_model("resnet101"), se_net)


def test_se_cost_parts_switch_the_fold_and_give_it_back(monkeypatch):
    import torch

    import senet
    from senet.se import SqueezeExcitation

    torch.manual_seed(0)
    se_net = senet.build_model("se_resnet50").eval()
    for m in se_net.modules():  # BN statistics and affine maps away from 0 and 1
        if isinstance(m, torch.nn.BatchNorm2d):
            for t in (m.weight, m.bias, m.running_mean):
                t.data.uniform_(-0.5, 0.5)
            m.running_var.data.uniform_(0.5, 2.0)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        shipped = se_net(x)
        switch = se_cost.Parts(se_net)
        outs = {}
        for name in switch.variants:
            switch.use(name)
            outs[name] = se_net(x)
            assert torch.isfinite(outs[name]).all(), name
        folds = []
        real = SqueezeExcitation.fold
        monkeypatch.setattr(SqueezeExcitation, "fold", lambda se, *a: folds.append(se) or real(se, *a))
        assert torch.equal(se_net(x), shipped) and len(folds) == 16  # "as shipped" was used last
    # the product of FC1, BN's affine map and the convolution is the same function, reassociated
    torch.testing.assert_close(outs["FC1 precomputed"], shipped, rtol=1e-4, atol=1e-4)
    assert torch.equal(outs["as shipped"], shipped)
    assert not torch.equal(outs["pooling and scaling"], shipped)
    with pytest.raises(ValueError, match="bottleneck"):
        se_cost.Parts(senet.build_model("se_resnet20"))


def test_se_cost_against_timm_shares_each_pairs_weights(monkeypatch):
    pytest.importorskip("timm")
    got = {}
    monkeypatch.setattr(se_cost, "interleaved", lambda models, *a, **k: got.update(models) or {})
    se_cost.against_timm(1, 0, 32, None)
    for who in ("timm", "ours"):
        plain, se = got[f"{who} ResNet-50"], got[f"{who} SE-ResNet-50"]
        se_tensors = {id(t) for t in [*se.parameters(), *se.buffers()]}
        assert all(id(t) in se_tensors for t in [*plain.parameters(), *plain.buffers()]), who
    assert got["ours SE-ResNet-50"].layer2[0].conv2.stride == (2, 2)  # timm's convention: in the 3×3


def test_se_cost_prints_every_part_and_both_read_rates(capsys):
    assert se_cost.main(["--repeats", "2", "--warmup", "0", "--size", "32", "--copies", "2"]) == 0
    out = capsys.readouterr().out
    for row in ("ResNet-50", "no SE work", "pooling and scaling", "FCs and scaling", "FC1 precomputed",
                "as shipped", "timm SE-ResNet-50", "ours SE-ResNet-50", "F.linear", "Tensor.sum(1)"):
        assert row in out, row
    assert "32 FC matrices (10.1 MB fp32)" in out


@pytest.mark.parametrize("argv, message", [(["--only", "parts,speed"], "unknown section(s) speed"),
                                           (["--copies", "1"], "--copies at least 2")])
def test_se_cost_refuses_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        se_cost.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_bench_inference_pairs_share_their_weights():
    """Each inference row's ResNet-50 reads its SE-ResNet-50's own weight tensors."""
    import torch

    rows = bench.inference_models(torch.device("cpu"))
    assert {"ours, stride in 1×1 (paper)", "ours, stride in 3×3 (v1.5)"} <= set(rows)
    for row, pair in rows.items():
        se = {id(t) for t in [*pair["SE-ResNet-50"].parameters(), *pair["SE-ResNet-50"].buffers()]}
        plain = [*pair["ResNet-50"].parameters(), *pair["ResNet-50"].buffers()]
        assert plain and all(id(t) in se for t in plain), row


# ------------------------------------------------------------------------------------------------
# family_latency: every module of the family, ours and timm's, in one backbone
# ------------------------------------------------------------------------------------------------
def test_family_latency_swaps_timms_modules_into_the_same_sites():
    """timm's modules sit where ours do and hold as many parameters (the rows differ in code alone)."""
    from timm.layers.selective_kernel import SelectiveKernel

    from senet.se import PRESETS, study_choices

    nets = family_latency.build("se_resnet20")
    assert list(nets)[0] == family_latency.PLAIN
    assert [m for m, impl in nets if impl == "ours"] == ["plain", *study_choices(PRESETS)]
    timm_rows = {m for m, impl in nets if impl == "timm"}
    assert timm_rows == {"se", "eca", "cbam", "ge", "ca", "gc", "sk"}
    for name in timm_rows:
        ours, theirs = nets[(name, "ours")], nets[(name, "timm")]
        assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters()), name
    assert type(nets[("eca", "timm")].layer1[0].se).__module__ == "timm.layers.eca"
    assert nets[("gc", "timm")].layer1[0].se is None and nets[("gc", "timm")].layer2[0].se is not None
    assert isinstance(nets[("sk", "timm")].layer1[0].conv1, SelectiveKernel)


def test_family_latency_prints_a_ratio_for_every_network(capsys):
    assert family_latency.main(["--model", "se_resnet20", "--size", "32", "--repeats", "2", "--warmup", "0",
                                "--clock", "cpu"]) == 0
    from senet.se import PRESETS, study_choices

    out = capsys.readouterr().out.splitlines()
    rows = [ln.split() for ln in out[2:]]
    assert rows[0][:2] == ["plain", "ours"] and rows[0][3] == "1.000"
    assert [r[0] for r in rows if r[1] == "ours"] == ["plain", *study_choices(PRESETS)]
    assert len(rows) == 1 + len(study_choices(PRESETS)) + 7 and all(float(r[3]) > 0 for r in rows)


def test_family_latency_refuses_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        family_latency.main(["--repeats", "0"])
    assert "at least 1" in capsys.readouterr().err



def test_variance_parts_test_sd_of_a_difference_is_the_discordance_over_n():
    """Two networks on 8 images: they disagree on 3 (q = 3/8) and differ in error by 1/8, so the
    images alone give their difference a variance of (q − Δ²)/N."""
    import numpy as np

    a = np.array([1, 1, 1, 1, 0, 0, 1, 1], bool)
    b = np.array([1, 0, 0, 1, 1, 0, 1, 1], bool)
    assert variance_parts.pair_test_sd(a, b) == pytest.approx(100 * ((3 / 8 - (1 / 8) ** 2) / 8) ** 0.5)
    assert variance_parts.pair_test_sd(a, a) == 0.0


def test_variance_parts_pairs_arms_by_seed_and_counts_a_trials_passes():
    import pandas as pd

    rows = [{"arm": arm, "seed": s, "status": "completed", "test_top1_err": err}
            for arm, errs in {"ref": [10.0, 11.0, 12.0], "a": [10.5, 11.0, 13.5], "b": [9.0]}.items()
            for s, err in enumerate(errs)]
    rows.append({"arm": "a", "seed": 3, "status": "completed", "test_top1_err": 50.0})  # no reference pair
    got = variance_parts.comparisons(pd.DataFrame(rows), "ref")
    assert [(arm, n) for arm, n, _ in got] == [("a", 3)]  # b has one pair: no spread
    assert got[0][2] == pytest.approx(pd.Series([0.5, 0.0, 1.5]).std())
    runs = pd.DataFrame([{"optim.epochs": 5, "num_val": 2000.0, "data.subset": 20000, "num_test": 10000.0}])
    assert variance_parts.trial_cost(runs, 1) == 3 * 5 * 18000 + 5 * 2000 + 10000
    assert variance_parts.trial_cost(runs, 4) - variance_parts.trial_cost(runs, 1) == 30000
