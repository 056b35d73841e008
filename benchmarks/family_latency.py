"""Inference latency of the channel-attention family: each module's extra cost at batch 1 on one
CPU thread, in SE-ResNet-50 at 224² (the paper's §4 setting), beside timm's module where timm has one.

    python benchmarks/family_latency.py [--repeats 20] [--warmup 3] [--threads 1] [--size 224]
                                        [--model se_resnet50] [--clock wall|cpu] [--no-timm]

Every network is the same backbone (the suite's ResNet-50 with the paper's stride in the first 1×1)
with one module of the family at its preset (senet/family/): the plain network, SE, and every arm
of the ``family`` study. timm's modules (SE, ECA, CBAM, GE-θ⁻, GC, SK, coordinate attention) are
swapped into the same blocks at the same sites (an SE plan whose factory builds timm's module; SK's
conv in place of the 3×3 conv), so the two rows of a module differ in the module's code alone; the
suite's SE folds into the bottleneck's last conv and BN at inference, timm's modules never do.
All networks run interleaved in one process (:func:`latency.interleaved`: one forward of each per
round, the order rotated), so they share the machine's load; the ratio is the median of the
per-round ratios to the same round's plain network, with a distribution-free 95% interval
(:func:`latency.median_ci`).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from latency import interleaved, median_ci

import senet
from senet.complexity import complexity
from senet.se import PRESETS, SEConfig, SEPlan, study_choices

PLAIN = ("plain", "ours")


def _timm_modules() -> dict[str, dict]:
    """timm's module per preset: an SE plan's factory (and stages), or SK's conv."""
    from timm.layers.cbam import CbamModule
    from timm.layers.coord_attn import CoordAttn
    from timm.layers.eca import EcaModule
    from timm.layers.gather_excite import GatherExcite
    from timm.layers.global_context import GlobalContext
    from timm.layers.selective_kernel import SelectiveKernel
    from timm.layers.squeeze_excite import SEModule

    return {
        "se": {"factory": lambda c: SEModule(c, rd_ratio=1 / 16, rd_divisor=1)},
        "eca": {"factory": EcaModule},
        "cbam": {"factory": CbamModule},
        "ge": {"factory": lambda c: GatherExcite(c, use_mlp=False)},  # GE-θ⁻: the one form 1.0.31 builds
        "ca": {"factory": CoordAttn},
        "gc": {"factory": lambda c: GlobalContext(c, fuse_add=True, fuse_scale=False, rd_ratio=1 / 16),
               "stages": "3+"},
        "sk": {"conv": lambda cin, cout, stride=1, groups=1: SelectiveKernel(
            cin, cout, stride=stride, groups=groups, split_input=False)},  # the paper's unsplit paths
    }


def _timm_plan(spec: dict) -> SEPlan:
    plan = SEPlan.make(spec.get("factory", lambda c: None), "standard", spec.get("stages", "all"))
    return SEPlan(plan.factory, plan.placement, plan.site, plan.channels, plan.stages, conv=spec.get("conv"))


def build(model: str, with_timm: bool = True) -> dict[tuple[str, str], torch.nn.Module]:
    """(module, implementation) -> network, the plain one first."""
    spec = senet.MODELS.get(model)
    kw = {"stride_in_1x1": True} if spec.family == "resnet" else {}  # the paper's Caffe ResNets
    nets = {PLAIN: senet.build_model(model, se=SEConfig(stages="none"), **kw)}
    timm = _timm_modules() if with_timm else {}
    for name in study_choices(PRESETS):
        nets[(name, "ours")] = senet.build_model(model, se=SEConfig.from_preset(name), **kw)
        if name in timm:
            net = spec.build(num_classes=spec.num_classes, in_chans=spec.in_chans, se=_timm_plan(timm[name]), **kw)
            nets[(name, "timm")] = net
    return {k: m.eval() for k, m in nets.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20, help="measured rounds (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="rounds discarded first")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--size", type=int, default=224, help="input side (default 224)")
    p.add_argument("--model", default="se_resnet50", help="the backbone (default se_resnet50)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall clock (default) or the thread's CPU time (a CPU shared with other jobs)")
    p.add_argument("--no-timm", action="store_true", help="leave timm's modules out")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1 or args.size < 1:
        p.error("--repeats, --threads and --size must be at least 1, --warmup at least 0")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    nets = build(args.model, not args.no_timm)
    base = complexity(nets[PLAIN], args.size)
    cost = {k: complexity(m, args.size) for k, m in nets.items() if k[1] == "ours"}
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    x = torch.randn(1, 3, args.size, args.size)
    t0 = time.perf_counter()
    times = interleaved(nets, x, args.repeats, args.warmup, clock)
    print(f"{args.model}, batch 1, {args.size}², cpu, {torch.get_num_threads()} thread(s), torch {torch.__version__}, "
          f"{'thread CPU time' if args.clock == 'cpu' else 'wall clock'}, {len(nets)} networks x {args.repeats} "
          f"interleaved rounds after {args.warmup} warm-up ({time.perf_counter() - t0:.0f} s): median ms, median "
          "per-round ratio to the plain network [95% CI]; extra parameters and FLOPs (ours, senet.complexity)")
    print(f"{'module':<8} {'impl':<5} {'ms':>8} {'ratio':>7} {'95% CI':>16} {'+params':>9} {'+FLOPs':>8}")
    plain = times[PLAIN]
    for key, ts in times.items():
        r, lo, hi = median_ci([b / a for a, b in zip(plain, ts, strict=True)])
        c = cost.get(key)
        extra = (f"{c.params - base.params:>9,} {100 * (c.flops - base.flops) / base.flops:>7.2f}%" if c
                 else f"{sum(q.numel() for q in nets[key].parameters()) - base.params:>9,} {'':>8}")
        print(f"{key[0]:<8} {key[1]:<5} {statistics.median(ts):>8.1f} {r:>7.3f} {f'[{lo:.3f}, {hi:.3f}]':>16} {extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
