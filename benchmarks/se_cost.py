"""Where SE-ResNet-50's inference overhead goes, part by part, at batch 1 (the paper's §4 setting).

    python benchmarks/se_cost.py [--repeats 40] [--warmup 5] [--size 224] [--stride-in-3x3]
                                 [--copies 6] [--only parts,timm,gemv]

``parts``: one SE-ResNet-50 and one ResNet-50 that shares its weights: every parameter and buffer of
the plain network is the SE network's own tensor, so the two read the same memory and differ only by
the SE's work (separately built networks differ by a few percent from where their weights land).
The SE network runs with each bottleneck's folded SE (:meth:`senet.se.SqueezeExcitation.fold`)
replaced, for the round, by a part of its work:

* no SE work: ``bn(conv(v)) + x`` added in place, the plain block's work (checks the harness:
  about 1.000);
* pooling and scaling: the squeeze, the gate on it, and the scaling in BN's pass, without the FCs;
* FCs and scaling: the excitation on a fixed vector, the gate, the scaling, without the pooling;
* FC1 precomputed: the squeeze on the convolution's input through a product of FC1, BN's affine
  map and the convolution computed once beforehand (4× fewer FC1 weights to read). Not what the
  suite ships: such a product is a cache of the weights that edits through ``.data`` would leave
  stale; the row shows what it would buy;
* as shipped: the fold itself.

Each row is the median per-round ratio to ResNet-50 (all variants interleaved, rotating order) with
a distribution-free 95% interval; the thread's CPU time by default.

``timm``: the same like-for-like ratio for timm's SE-ResNet-50 and ours, both in timm's stride
convention (3×3), each against its own plain ResNet-50 holding its SE network's weights, the four
networks interleaved.

``gemv``: the excitation's FC weights are read once per image, and at batch 1 they are a
matrix-vector product on weights that are not in any cache. This section reads copies of
SE-ResNet-50's 32 FC matrices (10 MB per copy in fp32), a different copy each round so none is in
cache, by ``F.linear`` (what the excitation calls) and by ``Tensor.sum(1)`` (a reduction over the
same bytes), and prints both rates in GB/s.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import senet
from senet.fused import add_into, pooled_conv_bn, scaled_bn
from senet.se import SqueezeExcitation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import interleaved, median_ci  # noqa: E402  (benchmarks/latency.py, beside this file)


def share_weights(plain: torch.nn.Module, source: torch.nn.Module) -> torch.nn.Module:
    """Make every parameter and buffer of ``plain`` the tensor of the same name in ``source``."""
    modules = dict(source.named_modules())
    for name, m in plain.named_modules():
        other = modules.get(name)
        for kind in ("_parameters", "_buffers"):
            own, theirs = getattr(m, kind), getattr(other, kind, {})
            for key, t in own.items():
                if t is None:
                    continue
                if key not in theirs or theirs[key].shape != t.shape:
                    raise ValueError(f"{name}.{key} has no counterpart of its shape in the source network")
                own[key] = theirs[key]
    return plain


def _no_se(se, conv, bn, v, x):
    return add_into(bn(conv(v)), x)  # the plain block's addition at inference


def _folded(excite):
    """The fold's arithmetic (:meth:`senet.se.SqueezeExcitation.fold`) with ``excite(se, conv, bn,
    v, y)``, the (N, C) input of the gate, in place of the squeeze and excitation."""
    def fold(se, conv, bn, v, x):
        y = conv(v)
        n, c = y.shape[:2]
        s = se.gate(excite(se, conv, bn, v, y).view(n, c, 1, 1))
        return add_into(scaled_bn(y, bn, s), x)
    return fold


def composed_fc1(se, conv, bn) -> tuple[torch.Tensor, torch.Tensor]:
    """FC1 after BN's affine map and the 1×1 convolution, as one (hidden, width of v) matrix and
    bias: ``W1 (a ⊙ (W3 m) + b) + b1 = (W1 diag(a) W3) m + (W1 b + b1)`` for m the mean of v."""
    with torch.no_grad():
        a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        b = bn.bias - bn.running_mean * a
        fc1 = se.excitation.fc1
        w1 = fc1.weight.flatten(1)
        return ((w1 * a) @ conv.weight.flatten(1)).contiguous(), w1 @ b + fc1.bias


def _precomputed(products):
    def excite(se, conv, bn, v, y):
        w, bias = products[id(se)]
        fc2 = se.excitation.fc2
        h = se.excitation.act(F.linear(v.mean((2, 3)), w, bias))
        return F.linear(h, fc2.weight.flatten(1), fc2.bias)
    return _folded(excite)


class Parts:
    """Switch every SE of ``model`` between its fold and a part of it (see the module's doc)."""

    def __init__(self, model: torch.nn.Module):
        blocks = [m for m in model.modules() if isinstance(getattr(m, "se", None), SqueezeExcitation)]
        if not all(hasattr(m, "bn3") for m in blocks):
            raise ValueError("the parts are defined for bottleneck networks")
        self.ses = [m.se for m in blocks]
        products = {id(m.se): composed_fc1(m.se, m.conv3, m.bn3) for m in blocks}
        self.variants = {
            "no SE work": _no_se,
            "pooling and scaling": _folded(lambda se, conv, bn, v, y: pooled_conv_bn(conv, bn, v, y)),
            "FCs and scaling": _folded(lambda se, conv, bn, v, y: se.excitation(y.new_zeros(y.shape[:2]))),
            "FC1 precomputed": _precomputed(products),
            "as shipped": None,
        }

    def use(self, variant: str) -> None:
        fn = self.variants[variant]
        for se in self.ses:
            if fn is None:
                se.__dict__.pop("fold", None)  # the class's own fold again
            else:
                se.fold = fn.__get__(se)


def parts(repeats: int, warmup: int, size: int, stride_in_1x1: bool, clock) -> dict[str, list[float]]:
    """Per-round times (ms) of ResNet-50 and of each variant of the SE network."""
    torch.manual_seed(0)
    se_net = senet.build_model("se_resnet50", stride_in_1x1=stride_in_1x1).eval()
    plain = share_weights(senet.build_model("resnet50", stride_in_1x1=stride_in_1x1), se_net).eval()
    switch = Parts(se_net)
    models = {"ResNet-50": plain, **dict.fromkeys(switch.variants, se_net)}
    try:
        return interleaved(models, torch.randn(1, 3, size, size), repeats, warmup, clock,
                           before=lambda name: name in switch.variants and switch.use(name))
    finally:
        switch.use("as shipped")


def against_timm(repeats: int, warmup: int, size: int, clock) -> dict[str, list[float]] | None:
    """Per-round times (ms) of timm's and our SE-ResNet-50 and ResNet-50 (stride in the 3×3), each
    plain network holding its SE network's weights; None without timm."""
    try:
        import timm  # noqa: PLC0415 (optional: a test dependency)
    except ImportError:
        return None
    torch.manual_seed(0)
    timm_se = timm.create_model("seresnet50", pretrained=False).eval()
    ours_se = senet.build_model("se_resnet50", stride_in_1x1=False).eval()
    models = {
        "timm ResNet-50": share_weights(timm.create_model("resnet50", pretrained=False), timm_se).eval(),
        "timm SE-ResNet-50": timm_se,
        "ours ResNet-50": share_weights(senet.build_model("resnet50", stride_in_1x1=False), ours_se).eval(),
        "ours SE-ResNet-50": ours_se,
    }
    return interleaved(models, torch.randn(1, 3, size, size), repeats, warmup, clock)


def _ratio_row(label: str, plain: list[float], se: list[float]) -> str:
    r, lo, hi = median_ci([b / a for a, b in zip(plain, se, strict=True)])
    return f"{label:<34}{statistics.median(se):>10.1f}{r:>20.3f}{f'[{lo:.3f}, {hi:.3f}]':>18}"


def fc_shapes(model: torch.nn.Module) -> list[tuple[int, int]]:
    """(out, in) of every FC of the model's SE excitations, in network order."""
    return [tuple(m.weight.shape[:2]) for name, m in model.named_modules()
            if isinstance(m, torch.nn.Conv2d) and ".se.excitation." in f".{name}"]


def gemv(copies: int, rounds: int, clock) -> dict[str, float]:
    """GB/s of reading SE-ResNet-50's FC weights cold by F.linear and by a row sum."""
    shapes = fc_shapes(senet.build_model("se_resnet50"))
    g = torch.Generator().manual_seed(0)
    sets = [[torch.randn(o, i, generator=g) for o, i in shapes] for _ in range(copies)]
    vectors = [torch.randn(1, i, generator=g) for _, i in shapes]
    nbytes = sum(w.numel() * w.element_size() for w in sets[0])
    ops = {"F.linear (the excitation's product)": lambda w, z: F.linear(z, w),
           "Tensor.sum(1) (a reduction, same bytes)": lambda w, z: w.sum(1)}
    seconds: dict[str, list[float]] = {k: [] for k in ops}
    with torch.inference_mode():
        for r in range(rounds + 1):
            for j, (name, op) in enumerate(ops.items()):
                ws = sets[(r * len(ops) + j) % copies]  # read again only after all the other copies
                t = clock()
                for w, z in zip(ws, vectors, strict=True):
                    op(w, z)
                if r:
                    seconds[name].append(clock() - t)
    return {"MB": nbytes / 1e6, "matrices": len(shapes),
            **{k: nbytes / statistics.median(v) / 1e9 for k, v in seconds.items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=40, help="measured rounds of the parts (default 40)")
    p.add_argument("--warmup", type=int, default=5, help="rounds discarded first")
    p.add_argument("--size", type=int, default=224, help="image side (default 224, the paper's)")
    p.add_argument("--stride-in-3x3", action="store_true", help="the v1.5 convention (default: the paper's, stride in 1×1)")
    p.add_argument("--copies", type=int, default=6, help="copies of the FC weights cycled by the gemv section")
    p.add_argument("--clock", choices=("wall", "cpu"), default="cpu", help="thread CPU time (default) or wall clock")
    p.add_argument("--only", default="", help="comma-separated sections: parts, timm, gemv (default all)")
    args = p.parse_args(argv)
    sections = {"parts", "timm", "gemv"}
    want = set(args.only.split(",")) if args.only else sections
    if bad := want - sections:
        p.error(f"unknown section(s) {', '.join(sorted(bad))}; choose from {', '.join(sorted(sections))}")
    if args.repeats < 1 or args.warmup < 0 or args.copies < 2 or args.size < 32:
        p.error("--repeats must be at least 1, --warmup at least 0, --copies at least 2, --size at least 32")
    torch.set_num_threads(1)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    if "parts" in want:
        times = parts(args.repeats, args.warmup, args.size, not args.stride_in_3x3, clock)
        where = "3×3 (v1.5)" if args.stride_in_3x3 else "1×1 (paper)"
        print(f"SE-ResNet-50, stride in {where}, batch 1, {args.size}², 1 thread, torch {torch.__version__}, "
              f"{'thread CPU time' if args.clock == 'cpu' else 'wall clock'}, {args.repeats} interleaved rounds; "
              "ResNet-50 shares the SE network's weights")
        print(f"{'':<34}{'median ms':>10}{'ratio to ResNet-50':>20}{'95% CI':>18}")
        base = times["ResNet-50"]
        print(f"{'ResNet-50':<34}{statistics.median(base):>10.1f}")
        for name, v in times.items():
            if name != "ResNet-50":
                print(_ratio_row("SE-ResNet-50, " + name, base, v), flush=True)
    if "timm" in want:
        got = against_timm(args.repeats, args.warmup, args.size, clock)
        if got is None:
            print("\ntimm is not installed: its comparison is left out")
        else:
            print(f"\nstride in 3×3 (timm's convention), {args.repeats} interleaved rounds; each ResNet-50 shares "
                  "its SE network's weights")
            print(f"{'':<34}{'median ms':>10}{'SE/plain':>20}{'95% CI':>18}")
            for who in ("timm", "ours"):
                print(f"{who + ' ResNet-50':<34}{statistics.median(got[who + ' ResNet-50']):>10.1f}")
                print(_ratio_row(who + " SE-ResNet-50", got[who + " ResNet-50"], got[who + " SE-ResNet-50"]),
                      flush=True)
    if "gemv" in want:
        got = gemv(args.copies, max(3, args.repeats // 4), clock)
        print(f"\nSE-ResNet-50's {got['matrices']} FC matrices ({got['MB']:.1f} MB fp32), read cold, "
              f"{args.copies} copies cycled, 1 thread: GB/s")
        for k, v in got.items():
            if k not in ("MB", "matrices"):
                print(f"  {k:<42}{v:>6.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
