"""Parameters and FLOPs in the paper's convention: one multiply-add is one FLOP.

Counted: convolutions (``N_out · C_in/groups · K²`` per output element), fully connected layers,
and the SE block's own elementwise work (its squeeze pooling and its channel scaling), which is
where most of SE's 0.26% overhead on ResNet-50 comes from (paper §4). BatchNorm, ReLU, the
network's pooling layers and the gate nonlinearity are not counted, as in the paper's tables.

Counting is done with forward hooks on one image, so any registered network, SE variant or custom
module is counted the same way; a new module type gets a counter with ``@register_flops(Type)``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .models.blocks import SESlot
from .se import Squeeze, SqueezeExcitation

FlopFn = Callable[[nn.Module, tuple, torch.Tensor], float]
FLOP_COUNTERS: dict[type, FlopFn] = {}


def register_flops(*types: type) -> Callable[[FlopFn], FlopFn]:
    def deco(fn: FlopFn) -> FlopFn:
        for t in types:
            FLOP_COUNTERS[t] = fn
        return fn

    return deco


@register_flops(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def _conv(m, inputs, out):
    k = 1
    for s in m.kernel_size:
        k *= s
    return out.numel() * (m.in_channels // m.groups) * k


@register_flops(nn.Linear)
def _linear(m, inputs, out):
    return out.numel() * m.in_features


@register_flops(Squeeze)
def _squeeze(m, inputs, out):
    return inputs[0].numel() * m.ops_per_element


@register_flops(SqueezeExcitation)
def _scale(m, inputs, out):
    return out.numel()


@register_flops(SESlot)
def _residual_add(m, inputs, out):
    if not m.residual:  # Inception modules and MobileNet blocks have no identity addition
        return 0
    fused = m.se is not None and m.se_site in ("branch_out", "shortcut")  # u·s + x: one multiply-add
    return 0 if fused else out.numel()


def _counter_for(m: nn.Module) -> FlopFn | None:
    for cls in type(m).__mro__:
        if cls in FLOP_COUNTERS:
            return FLOP_COUNTERS[cls]
    return None


@dataclass
class BlockRow:
    module: str  # the block's path in the model (e.g. layer1.0)
    name: str  # the paper's name of its SE block (SE_2_1), or "" without SE
    params: int
    flops: int
    se_params: int = 0
    se_flops: int = 0
    se_channels: int = 0
    se_hidden: int = 0


@dataclass
class Complexity:
    params: int  # all parameters
    flops: int  # multiply-adds for one image
    se_params: int  # parameters inside SE blocks
    se_flops: int  # FLOPs inside SE blocks (pooling, FCs, scaling)
    input_size: tuple
    blocks: list[BlockRow] = field(default_factory=list)

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d


def _is_block(m: nn.Module) -> bool:
    return hasattr(m, "stage") and hasattr(m, "index")


def complexity(model: nn.Module, input_size: int | tuple = 224, in_chans: int | None = None) -> Complexity:
    """Count parameters and FLOPs of ``model`` for one image of ``input_size`` (side or (H, W)).

    Returns totals and one row per block (every module with ``stage`` and ``index`` attributes).
    """
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    if in_chans is None:
        first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
        in_chans = first.in_channels if isinstance(first, nn.Conv2d) else 3

    flops: dict[str, float] = {}
    names = {m: n for n, m in model.named_modules()}
    handles = []

    def hook(m, inputs, out):
        fn = _counter_for(m)
        if fn is not None:
            flops[names[m]] = flops.get(names[m], 0.0) + float(fn(m, inputs, out))

    for m in model.modules():
        if _counter_for(m) is not None:
            handles.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters(), None)
        x = torch.zeros(1, in_chans, *input_size, device=p.device if p is not None else "cpu")
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    def under(prefix: str, d: dict[str, float]) -> float:
        return sum(v for k, v in d.items() if k == prefix or k.startswith(prefix + "."))

    se_paths = [n for n, m in model.named_modules() if isinstance(m, SqueezeExcitation)]
    se_flops = sum(under(p, flops) for p in se_paths)
    se_params = sum(sum(q.numel() for q in model.get_submodule(p).parameters()) for p in se_paths)

    rows = []
    for path, m in model.named_modules():
        if not _is_block(m):
            continue
        se_path = next((p for p in se_paths if p.startswith(path + ".")), None)
        se_mod = model.get_submodule(se_path) if se_path else None
        rows.append(BlockRow(
            module=path,
            name=getattr(se_mod, "block_name", "") if se_mod is not None else "",
            params=sum(q.numel() for q in m.parameters()),
            flops=int(round(under(path, flops))),
            se_params=sum(q.numel() for q in se_mod.parameters()) if se_mod is not None else 0,
            se_flops=int(round(under(se_path, flops))) if se_path else 0,
            se_channels=getattr(se_mod, "channels", 0) if se_mod is not None else 0,
            se_hidden=getattr(se_mod, "hidden", 0) if se_mod is not None else 0,
        ))
    return Complexity(
        params=sum(q.numel() for q in model.parameters()),
        flops=int(round(sum(flops.values()))),
        se_params=se_params,
        se_flops=int(round(se_flops)),
        input_size=tuple(input_size),
        blocks=rows,
    )
