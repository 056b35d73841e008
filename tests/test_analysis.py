"""Excitation extraction, statistics, SE removal and captum attribution (analysis package)."""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.extract import ExcitationAccumulator, block_position, extract_excitations, select_blocks
from analysis.removal import (
    identity_se,
    mean_excitations,
    mean_se,
    param_budget,
    removal_table,
    removal_variants,
)
from analysis.stats import hist_quantile, pooled, selectivity, spearman
from senet import SEConfig, build_model, se_modules

MEAN, STD = (0.5,), (0.25,)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    model = build_model("se_resnet20", num_classes=4, in_chans=1).eval()
    x = torch.randint(0, 256, (96, 1, 16, 16), dtype=torch.uint8)
    y = torch.arange(96) % 4
    return model, x, y


# ---------------------------------------------------------------------------------------------
# The accumulator against numpy
# ---------------------------------------------------------------------------------------------
def _known(n, k, c, seed):
    """Excitations with a known distribution: class k, channel c ~ Beta(1 + k, 1 + c) plus a few
    values outside [0, 1] to exercise the clipping into the end bins."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = rng.beta(1 + y[:, None], 1 + np.arange(c)[None, :])
    x[::97] += 1.5
    x[::89] -= 1.5
    return x, y


def test_accumulator_matches_numpy():
    k, c, bins = 3, 5, 20
    x, y = _known(5000, k, c, 0)
    acc = ExcitationAccumulator(k, bins)
    acc.add_block("SE_4_2", c, (0.0, 1.0))
    # Uneven batches, one with a class missing, to exercise the Chan merge.
    for lo, hi in ((0, 1), (1, 700), (700, 701), (701, 3333), (3333, 5000)):
        acc.update("SE_4_2", torch.from_numpy(x[lo:hi]).float().view(hi - lo, c, 1, 1),
                   torch.from_numpy(y[lo:hi]))
    st, hist = acc.tables(["a", "b", "c"])
    xf = x.astype(np.float32).astype(np.float64)  # the gate's output precision
    for kk in range(k):
        v = xf[y == kk]
        s = st[st["class_index"] == kk].sort_values("channel")
        assert (s["count"] == len(v)).all()
        np.testing.assert_allclose(s["mean"], v.mean(0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(s["std"], v.std(0), rtol=0, atol=1e-12)
        for ch in range(c):
            want, _ = np.histogram(np.clip(v[:, ch], 0, 1 - 1e-9), bins=bins, range=(0, 1))
            got = hist[(hist["class_index"] == kk) & (hist["channel"] == ch)].sort_values("bin")["count"]
            np.testing.assert_array_equal(got.to_numpy(), want)
    assert hist["count"].sum() == len(x) * c
    # Beta(1 + k, 1 + c) has mean (1 + k) / (2 + k + c): the stats recover the known distribution.
    clean = st[(st["class_index"] == 2) & (st["channel"] == 0)]["mean"].item()
    assert abs(clean - 3 / 4) < 0.05


def test_nosqueeze_gates_are_averaged_over_positions():
    acc = ExcitationAccumulator(2, 10)
    acc.add_block("SE_2_1", 3, (0.0, 1.0))
    s = torch.rand(8, 3, 4, 4)
    y = torch.tensor([0, 1] * 4)
    acc.update("SE_2_1", s, y)
    st, _ = acc.tables()
    per_image = s.mean((2, 3)).double()
    np.testing.assert_allclose(st[st["class_index"] == 1].sort_values("channel")["mean"],
                               per_image[y == 1].mean(0).numpy(), atol=1e-7)


def test_update_all_equals_block_by_block():
    g = torch.Generator().manual_seed(1)
    one, many = ExcitationAccumulator(3, 8), ExcitationAccumulator(3, 8)
    for acc in (one, many):
        acc.add_block("SE_2_1", 4, (0.0, 1.0))
        acc.add_block("SE_3_1", 6, (-1.0, 1.0))
    for _ in range(3):
        a, b = torch.rand(10, 4, 1, 1, generator=g), torch.rand(10, 6, 2, 2, generator=g) * 2 - 1
        y = torch.randint(0, 3, (10,), generator=g)
        one.update("SE_2_1", a, y)
        one.update("SE_3_1", b, y)
        many.update_all({"SE_3_1": b, "SE_2_1": a}, y)
    for t1, t2 in zip(one.tables(), many.tables(), strict=True):
        pd.testing.assert_frame_equal(t1, t2)
    with pytest.raises(ValueError, match="needs every block"):
        many.update_all({"SE_2_1": a}, y)


def test_memory_is_flat_in_the_number_of_images():
    def run(batches):
        acc = ExcitationAccumulator(10, 50)
        acc.add_block("SE_3_1", 32, (0.0, 1.0))
        g = torch.Generator().manual_seed(0)
        for _ in range(batches):
            acc.update("SE_3_1", torch.rand(64, 32, 1, 1, generator=g), torch.randint(0, 10, (64,), generator=g))
        return acc

    small, big = run(2), run(200)
    # float64 count, mean, M2 and int64 histograms per (class, channel); histogram range per channel.
    assert small.state_nbytes() == big.state_nbytes() == 10 * 32 * (3 * 8 + 50 * 8) + 32 * 2 * 8
    assert len(small.tables()[0]) == len(big.tables()[0]) == 320
    t = big.tables()[0]
    assert t.loc[t["channel"] == 0, "count"].sum() == 200 * 64


# ---------------------------------------------------------------------------------------------
# Block choice and hooks on a real network
# ---------------------------------------------------------------------------------------------
def test_default_blocks_follow_the_paper():
    r50 = list(se_modules(build_model("se_resnet50")))
    assert select_blocks(r50) == ["SE_2_3", "SE_3_4", "SE_4_6", "SE_5_1", "SE_5_2", "SE_5_3"]  # Fig. 6
    r20 = list(se_modules(build_model("se_resnet20")))
    assert select_blocks(r20) == ["SE_2_3", "SE_3_3", "SE_4_1", "SE_4_2", "SE_4_3"]
    assert select_blocks(r20, "all") == r20
    assert select_blocks(r20, "3,SE_2_1") == ["SE_2_1", "SE_3_1", "SE_3_2", "SE_3_3"]
    with pytest.raises(ValueError, match="choose one of: default, all, SE_2_1"):
        select_blocks(r20, "SE_9_9")
    assert block_position("SE_5_2") == (5, 2)


def test_extraction_matches_captured_gates_and_leaves_forward_alone(tiny):
    model, x, y = tiny
    from senet.data import normalize

    xb = normalize(x, MEAN, STD)
    seen = {}

    def keep(name):
        def hook(mod, inputs, out):
            seen[name] = out.detach()
        return hook

    hs = [m.gate.register_forward_hook(keep(n)) for n, m in se_modules(model).items()]
    with torch.no_grad():
        before = model(xb)
    for h in hs:
        h.remove()
    st, hist = extract_excitations(model, x, y, MEAN, STD, num_classes=4, blocks="all", batch_size=40,
                                   device="cpu", progress=False)
    with torch.no_grad():
        after = model(xb)
    torch.testing.assert_close(before, after)  # hooks are gone, forward unchanged
    assert not any(m.gate._forward_hooks for m in se_modules(model).values())
    for name, s in seen.items():
        s = s.flatten(1).double()
        got = st[(st["block"] == name) & (st["class_index"] == 2)].sort_values("channel")
        np.testing.assert_allclose(got["mean"], s[y == 2].mean(0).numpy(), atol=1e-6)
        np.testing.assert_allclose(got["std"], s[y == 2].std(0, correction=0).numpy(), atol=1e-6)
    assert set(st.columns) >= {"block", "stage", "block_index", "class", "channel", "count", "mean", "std"}
    assert (st["count"] == 24).all()
    assert set(hist.groupby(["block", "class", "channel"])["count"].sum()) == {24}


# ---------------------------------------------------------------------------------------------
# Selectivity and saturation from hand-built tables
# ---------------------------------------------------------------------------------------------
def _stats(rows):
    df = pd.DataFrame(rows, columns=["block", "stage", "block_index", "class", "channel", "count", "mean", "std"])
    return df.assign(range_lo=0.0, range_hi=1.0)


def test_selectivity_and_saturation_hand_computed():
    rows = [
        # SE_2_1: both classes identical -> class-agnostic (η² = 0)
        ("SE_2_1", 2, 1, "a", 0, 10, 0.5, 0.1), ("SE_2_1", 2, 1, "b", 0, 10, 0.5, 0.1),
        # SE_3_1, channel 0: class alone sets the value (η² = 1); channel 1: η² = 0.25² / (0.25² + 0.1²)
        ("SE_3_1", 3, 1, "a", 0, 10, 0.2, 0.0), ("SE_3_1", 3, 1, "b", 0, 10, 0.8, 0.0),
        ("SE_3_1", 3, 1, "a", 1, 10, 0.3, 0.1), ("SE_3_1", 3, 1, "b", 1, 10, 0.8, 0.1),
        # SE_4_1: saturated, one channel near 1 and one near 0
        ("SE_4_1", 4, 1, "a", 0, 10, 0.97, 0.01), ("SE_4_1", 4, 1, "b", 0, 30, 0.95, 0.01),
        ("SE_4_1", 4, 1, "a", 1, 10, 0.02, 0.01), ("SE_4_1", 4, 1, "b", 1, 30, 0.04, 0.01),
    ]
    st = _stats(rows)
    p = pooled(st)
    c = p[(p["block"] == "SE_4_1") & (p["channel"] == 0)].iloc[0]
    assert c["count"] == 40 and c["mean"] == pytest.approx((10 * 0.97 + 30 * 0.95) / 40)
    sel = selectivity(st).set_index("block")
    assert list(sel.index) == ["SE_2_1", "SE_3_1", "SE_4_1"]
    assert sel.loc["SE_2_1", "eta2"] == pytest.approx(0.0)
    assert sel.loc["SE_3_1", "eta2"] == pytest.approx((1 + 0.0625 / (0.0625 + 0.01)) / 2)
    assert sel.loc["SE_2_1", "saturated"] == 0
    assert sel.loc["SE_4_1", "saturated"] == 1 and sel.loc["SE_4_1", "saturated_high"] == 0.5
    # Saturation is only defined for gates with range (0, 1).
    tanh = st.assign(range_lo=-1.0)
    assert np.isnan(selectivity(tanh)["saturated"]).all()


def test_eta2_of_a_channel_that_never_varies_is_undefined_and_skipped():
    """η² = 0/0 for a constant channel is undefined, not 0 (which would read as
    "class-agnostic"); the block average skips it and says how many channels it averaged."""
    rows = [
        # SE_2_1: every channel constant in every class -> no η² at all
        ("SE_2_1", 2, 1, "a", 0, 10, 0.5, 0.0), ("SE_2_1", 2, 1, "b", 0, 10, 0.5, 0.0),
        ("SE_2_1", 2, 1, "a", 1, 10, 0.7, 0.0), ("SE_2_1", 2, 1, "b", 1, 10, 0.7, 0.0),
        # SE_3_1: channel 0 constant (undefined), channel 1 fully class-driven (η² = 1)
        ("SE_3_1", 3, 1, "a", 0, 10, 0.5, 0.0), ("SE_3_1", 3, 1, "b", 0, 10, 0.5, 0.0),
        ("SE_3_1", 3, 1, "a", 1, 10, 0.2, 0.0), ("SE_3_1", 3, 1, "b", 1, 10, 0.8, 0.0),
    ]
    sel = selectivity(_stats(rows)).set_index("block")
    assert np.isnan(sel.loc["SE_2_1", "eta2"]) and sel.loc["SE_2_1", "eta2_channels"] == 0
    assert sel.loc["SE_3_1", "eta2"] == pytest.approx(1.0) and sel.loc["SE_3_1", "eta2_channels"] == 1
    assert (sel["channels"] == 2).all()


def test_saturation_is_undefined_for_gates_that_do_not_saturate():
    """A softmax gate lies in (0, 1) but its weights sum to 1 (mean 1/C), so the
    share of channels near 0 or 1 says nothing; only sigmoid-like gates get a saturation."""
    torch.manual_seed(0)
    x = torch.randint(0, 256, (24, 1, 16, 16), dtype=torch.uint8)
    y = torch.arange(24) % 4
    got, tables = {}, {}
    for gate in ("softmax", "sigmoid", "hard_sigmoid"):
        model = build_model("resnet20", num_classes=4, in_chans=1, se=SEConfig(gate=gate)).eval()
        tables[gate] = extract_excitations(model, x, y, MEAN, STD, num_classes=4, blocks="SE_2_1,SE_4_3",
                                           device="cpu", progress=False)
        got[gate] = selectivity(*tables[gate])
    soft = got["softmax"]
    assert soft[["saturated", "saturated_high", "saturated_low", "mass_high", "mass_low"]].isna().all().all()
    assert (soft["mean"] < 0.1).all()  # 1/C: every channel would have counted as "saturated low"
    for gate in ("sigmoid", "hard_sigmoid"):
        assert got[gate][["saturated", "mass_high"]].notna().all().all()
    for gate, (st, _) in tables.items():
        assert (st["saturating"] == (gate != "softmax")).all()
    # Hand-built tables: the column decides; without it, a (0, 1) range still counts as saturating.
    rows = [("SE_2_1", 2, 1, "a", 0, 10, 0.02, 0.01), ("SE_2_1", 2, 1, "b", 0, 10, 0.04, 0.01)]
    assert selectivity(_stats(rows))["saturated"].item() == 1
    assert np.isnan(selectivity(_stats(rows).assign(saturating=False))["saturated"].item())


def test_spearman_and_histogram_quantile():
    assert spearman([1, 2, 3, 4], [10, 20, 25, 100]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    h = pd.DataFrame({"block": "SE_2_1", "class": "a", "channel": 0, "bin": range(4),
                      "bin_lo": [0, .25, .5, .75], "bin_hi": [.25, .5, .75, 1.0], "count": [0, 10, 10, 0]})
    assert hist_quantile(h, 0.5)["q0.5"].item() == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# SE removal
# ---------------------------------------------------------------------------------------------
def test_removal_param_budget_matches_the_paper():
    # SE-ResNet-50 (r = 16, FC biases): 2,530,992 SE params = 9.9% of ResNet-50's 25,557,032;
    # without stage 5's SE 3.7%: the paper's "from ~10% to ~4%" (§7.2).
    m = build_model("se_resnet50")
    full, no5 = param_budget(m), param_budget(m, ["SE_5_1", "SE_5_2", "SE_5_3"])
    assert full["plain_params"] == 25_557_032 and full["se_params_kept"] == 2_530_992
    assert round(full["added_params_pct"], 1) == 9.9 and round(no5["added_params_pct"], 1) == 3.7
    # SE-ResNet-20: (2/r) Σ N_s C_s² = 2016 weights plus 357 biases.
    assert param_budget(build_model("se_resnet20"))["se_params_kept"] == 2373


def test_identity_se_equals_the_network_without_se(tiny):
    model, x, y = tiny
    from senet.data import normalize

    xb = normalize(x[:8], MEAN, STD)
    bare = copy.deepcopy(model)
    for m in bare.modules():
        if getattr(m, "se", None) is not None:
            m.se, m.se_site = None, ""
    with torch.no_grad(), identity_se(model, list(se_modules(model))):
        off = model(xb)
    with torch.no_grad():
        torch.testing.assert_close(off, bare(xb))
        assert not torch.allclose(model(xb), off)  # restored on exit


def test_removal_table(tiny):
    model, x, y = tiny
    means = mean_excitations(model, x[:48], MEAN, STD, batch_size=32, device="cpu", progress=False)
    t = removal_table(model, x[48:], y[48:], MEAN, STD, means=means, batch_size=48, device="cpu",
                      progress=False)
    names = [v[0] for v in removal_variants(list(se_modules(model)))]
    assert list(t["removed"]) == names == ["none", "stage 2", "stage 3", "stage 4"] + [
        f"SE_{s}_{b}" for s in (2, 3, 4) for b in (1, 2, 3)]
    for mode in ("mean", "identity"):
        assert t[f"delta_top1_{mode}"].iloc[0] == 0 and t[f"delta_top5_{mode}"].iloc[0] == 0
        assert ((t[f"top1_err_{mode}"] >= 0) & (t[f"top1_err_{mode}"] <= 100)).all()
        np.testing.assert_allclose(t[f"delta_top1_{mode}"], t[f"top1_err_{mode}"] - t[f"top1_err_{mode}"].iloc[0])
    assert t["top1_err_mean"].iloc[0] == t["top1_err_identity"].iloc[0]  # the intact model, once
    assert (t["n"] == 48).all()
    assert t.loc[t["removed"] == "stage 4", "params_saved"].item() == 3 * 580
    with pytest.raises(ValueError, match="needs the mean excitations"):
        removal_table(model, x, y, MEAN, STD, device="cpu", progress=False)
    with pytest.raises(ValueError, match="unknown removal mode 'zero'"):
        removal_table(model, x, y, MEAN, STD, means=means, modes=("zero",), device="cpu", progress=False)


def _half_gates(model):
    """Every gate's pre-activation 0, so s = sigmoid(0) = 0.5 whatever the input (a trained SE's
    gates average ~0.5 too: the demo's model has mean s ≈ 0.50 in every block)."""
    for m in se_modules(model).values():
        for p in m.excitation.fc2.parameters():
            torch.nn.init.zeros_(p)
    return model


def test_mean_removal_keeps_an_input_independent_gate_while_identity_rescales(tiny):
    """s = 1 doubles a block whose gate sits at 0.5, so the identity removal
    measures a rescale; the mean removal of a gate that does not depend on the input changes
    nothing, exactly."""
    model, x, y = tiny
    model = _half_gates(model)
    from senet.data import normalize

    xb = normalize(x[:16], MEAN, STD)
    means = mean_excitations(model, x[16:], MEAN, STD, batch_size=40, device="cpu", progress=False)
    assert set(means) == set(se_modules(model))
    assert all(torch.equal(v, torch.full_like(v, 0.5)) for v in means.values())

    seen = {}
    block = model.layer2[1]  # hosts SE_3_2
    h = block.register_forward_hook(lambda m, i, o: seen.setdefault(len(seen), o.detach().clone()))
    with torch.no_grad():
        intact = model(xb)
        with mean_se(model, ["SE_3_2"], means):
            fixed = model(xb)
        with identity_se(model, ["SE_3_2"]):
            model(xb)
    h.remove()
    torch.testing.assert_close(seen[1], seen[0], rtol=0, atol=0)  # the block's output, unchanged
    torch.testing.assert_close(fixed, intact, rtol=0, atol=0)
    assert (seen[2] - seen[0]).abs().mean() > 0.2 * seen[0].abs().mean()  # the rescale

    with torch.no_grad(), mean_se(model, list(means), means):
        torch.testing.assert_close(model(xb), intact, rtol=0, atol=0)
    with torch.no_grad(), identity_se(model, list(means)):
        off = model(xb)
    assert (off - intact).abs().max() > 0.1 * intact.abs().max()  # the logits move a lot

    t = removal_table(model, x[:48], y[:48], MEAN, STD, means=means, batch_size=48, device="cpu",
                      progress=False)
    assert (t["delta_top1_mean"] == 0).all() and (t["delta_top5_mean"] == 0).all()


def test_mean_excitations_are_the_gates_average_and_mean_se_fixes_them(tiny):
    model, x, y = tiny
    from senet.data import normalize

    seen = {}
    hs = [m.gate.register_forward_hook(lambda mod, i, o, n=n: seen.setdefault(n, []).append(o.detach()))
          for n, m in se_modules(model).items()]
    with torch.no_grad():
        model(normalize(x, MEAN, STD))
    for h in hs:
        h.remove()
    means = mean_excitations(model, x, MEAN, STD, batch_size=40, device="cpu", progress=False)
    for name, outs in seen.items():
        want = torch.cat(outs).double().mean((0, 2, 3))
        torch.testing.assert_close(means[name], want, rtol=0, atol=1e-7)
    gate = se_modules(model)["SE_4_2"].gate
    with torch.no_grad(), mean_se(model, ["SE_4_2"], means):
        s = gate(torch.randn(5, 64, 1, 1))
    torch.testing.assert_close(s, means["SE_4_2"].float().view(1, 64, 1, 1).expand(5, 64, 1, 1))
    assert not gate._forward_hooks  # removed on exit


# ---------------------------------------------------------------------------------------------
# Captum
# ---------------------------------------------------------------------------------------------
def test_channel_importance_is_the_logit_drop_of_closing_a_channel(tiny):
    from analysis.attribution import channel_importance, gradcam
    from senet.data import normalize

    model, x, y = tiny
    xb, yb = normalize(x[:12], MEAN, STD), y[:12]
    imp = channel_importance(model, ["SE_3_2"], xb, yb, ["a", "b", "c", "d"], progress=False)
    assert len(imp) == 4 * 32 and set(imp["class"]) == {"a", "b", "c", "d"}
    # Ground truth for one (class, channel): zero channel 5 of the gate's output by hand.
    gate = se_modules(model)["SE_3_2"].gate
    xs = xb[yb == 1]
    with torch.no_grad():
        full = model(xs)[:, 1]
        h = gate.register_forward_hook(lambda m, i, o: o.index_fill(1, torch.tensor([5]), 0.0))
        closed = model(xs)[:, 1]
        h.remove()
    want = (full - closed).mean().item()
    got = imp[(imp["class"] == "b") & (imp["channel"] == 5)]["importance"].item()
    assert got == pytest.approx(want, rel=1e-4, abs=1e-6)

    maps = gradcam(model, xb[:3], yb[:3])
    assert maps.shape == (3, 16, 16) and (maps >= 0).all()


@pytest.mark.parametrize("name", ["se_resnet20", "resnet20", "se_wrn16_8", "se_resnet18", "se_resnext50_32x4d",
                                  "se_inception_small", "inception_small", "se_bn_inception",
                                  "se_mobilenet_v1"])
def test_gradcam_layer_is_the_last_block_of_every_family(name):
    """Grad-CAM's target is not a ``layer<n>`` (Inception networks have none) but the last block of
    the last stage, found from the blocks themselves; its output is
    the feature map the classifier pools (a pre-activation net's closing BN-ReLU aside)."""
    from analysis.attribution import gradcam, gradcam_layer

    model = build_model(name, num_classes=3, in_chans=1).eval()
    layer = gradcam_layer(model)
    x = torch.randn(2, 1, 32, 32)
    seen = {}
    h = layer.register_forward_hook(lambda m, i, o: seen.setdefault("o", o))
    with torch.no_grad():
        feats = model.forward_features(x)
    h.remove()
    if getattr(model, "preact", False):
        feats_from_layer = torch.relu(model.final_bn(seen["o"]))
    else:
        feats_from_layer = seen["o"]
    torch.testing.assert_close(feats_from_layer, feats)
    maps = gradcam(model, x, torch.tensor([0, 2]))
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all()


def test_analysis_evaluates_in_the_precision_the_run_recorded():
    """A run trained and tested in bf16 (the default on CPUs with native bf16) is analysed in bf16,
    so the analysis reproduces the run's own errors; a checkpoint without a record keeps the default
    (bf16 on CUDA, fp32 elsewhere)."""
    from analysis.analyze import trained_precision
    from analysis.extract import autocast_as_trained, run_precision

    lin, x, cpu = torch.nn.Linear(4, 4), torch.randn(2, 4), torch.device("cpu")
    with run_precision(trained_precision({"provenance": {"precision": "bf16"}})), autocast_as_trained(cpu):
        assert lin(x).dtype == torch.bfloat16
    with run_precision(trained_precision({"provenance": {"precision": "fp32"}})), autocast_as_trained(cpu):
        assert lin(x).dtype == torch.float32
    with run_precision(trained_precision({})), autocast_as_trained(cpu):
        assert lin(x).dtype == torch.float32
