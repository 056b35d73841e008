"""Parameters and FLOPs in the paper's convention: one multiply-add is one FLOP.

Counted: convolutions (``N_out · C_in/groups · K²`` per output element, transposed ones
``N_in · C_out/groups · K²``), fully connected layers, matrix products and the residual additions (an
SE scaling that feeds the addition directly is one multiply-add). So is the SE block's own elementwise
work, its squeeze pooling and channel scaling: most of SE's 0.26% overhead on ResNet-50 (paper §4).
BatchNorm, ReLU, the network's pooling layers and the gate nonlinearity are not counted, as in the
paper's tables.

Convolutions and matrix products are counted by :class:`torch.utils.flop_counter.FlopCounterMode`,
which sees every aten op, so ``F.conv2d``, ``x @ W`` and ``ConvTranspose2d`` inside any module count
as well as ``nn.Conv2d`` (it charges 2 FLOPs per multiply-add; this module halves). The SE-specific
work has no matrix product to see and is charged by forward hooks on its module types, attributed
to the block that runs it; a new module type gets a counter with ``@register_flops(Type)``.

A module with its own parameters that ran, but did no counted work and has no counter, raises an
:class:`UncountedWorkWarning` naming it: its cost would otherwise be a silent zero.
"""
from __future__ import annotations

import copy
import itertools
import operator
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import UserValueError
from .models.blocks import SESlot
from .se import Squeeze, SqueezeExcitation

FlopFn = Callable[[nn.Module, tuple, torch.Tensor], float]
FLOP_COUNTERS: dict[type, FlopFn] = {}

#: Input side assumed for a model that does not record its own (``build_model`` records it).
FALLBACK_INPUT_SIZE = 224


class UncountedWorkWarning(UserWarning):
    """A module with parameters ran, but nothing counted its work."""


class InputSizeError(UserValueError):
    """The input size is not positive, or too small for the network's downsampling."""


def register_flops(*types: type) -> Callable[[FlopFn], FlopFn]:
    """Register a counter ``fn(module, inputs, output) -> FLOPs`` for work that
    ``FlopCounterMode`` does not see (elementwise ops); it adds to what that sees."""
    def deco(fn: FlopFn) -> FlopFn:
        for t in types:
            FLOP_COUNTERS[t] = fn
        return fn

    return deco


def no_flops(m, inputs, out) -> float:
    """Counter of modules whose parameters do no counted work (the paper leaves BN out)."""
    return 0.0


register_flops(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm,
               nn.LayerNorm, nn.RMSNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
               nn.PReLU, nn.Embedding)(no_flops)


@register_flops(Squeeze)
def _squeeze(m, inputs, out):
    return inputs[0].numel() * m.ops_per_element


@register_flops(SqueezeExcitation)
def _scale(m, inputs, out):
    return out.numel() * getattr(m, "scalings", 1)


@register_flops(SESlot)
def _residual_add(m, inputs, out):
    if not m.residual:  # Inception modules and MobileNet blocks have no identity addition
        return 0
    fused = (m.se is not None and m.se_site in ("branch_out", "shortcut")  # u·s + x: one multiply-add
             and getattr(m.se, "fuses_add", True))
    return 0 if fused else out.numel()


def _own_counter(m, inputs, out):
    return m.extra_flops(inputs, out)


def _counter_for(m: nn.Module) -> FlopFn | None:
    """The registered counter of ``m``'s type; a module that declares its own elementwise work with
    an ``extra_flops(inputs, output)`` method counts by it (the attention family's parts do)."""
    if callable(getattr(m, "extra_flops", None)):
        return _own_counter
    for cls in type(m).__mro__:
        if cls in FLOP_COUNTERS:
            return FLOP_COUNTERS[cls]
    return None


# FlopCounterMode leaves out matrix-vector and vector-vector products (``W @ v``, ``v @ v``);
# counted here in its convention (2 per multiply-add), like the products it knows.
def _mv_flop(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1]


def _dot_flop(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0]


_EXTRA_FORMULAS = {torch.ops.aten.mv: _mv_flop, torch.ops.aten.dot: _dot_flop,
                   torch.ops.aten.vdot: _dot_flop}


@dataclass
class BlockRow:
    module: str  # the block's path in the model (e.g. layer1.0)
    name: str  # the paper's name of its SE block (SE_2_1), or "" without SE
    params: int
    flops: int
    se_params: int = 0
    se_flops: int = 0
    se_channels: int = 0
    se_hidden: int = 0  # the SE bottleneck's width C/r; 0 without SE or for an excitation with no bottleneck

    @property
    def se_width(self) -> str:
        """``"256→16"`` (C → C/r), ``"256"`` for an SE without a bottleneck (eca, linear), or ``""``."""
        if not self.name:
            return ""
        return f"{self.se_channels}→{self.se_hidden}" if self.se_hidden else str(self.se_channels)


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


def _own_params(m: nn.Module) -> bool:
    return next(m.parameters(recurse=False), None) is not None


def _side_pair(size) -> tuple[int, int]:
    try:
        h, w = (size, size) if not isinstance(size, (tuple, list)) else size
        h, w = operator.index(h), operator.index(w)
    except (TypeError, ValueError):
        h = w = 0
    if h <= 0 or w <= 0 or isinstance(size, bool):
        raise InputSizeError(f"input size must be a positive number of pixels (side or (H, W)), got {size!r}")
    return h, w


def _forward(model: nn.Module, in_chans: int, size: tuple[int, int]) -> None:
    p = next(model.parameters(), None)
    x = torch.zeros(1, in_chans, *size, device=p.device if p is not None else "cpu")
    with torch.no_grad():
        model(x)


def _runs(model: nn.Module, in_chans: int, size: tuple[int, int]) -> bool:
    try:
        _forward(model, in_chans, size)
    except RuntimeError:
        return False
    return True


def _meta_twin(model: nn.Module) -> nn.Module | None:
    """A copy of ``model`` on the meta device (shapes only: no arithmetic, no copied weights), or
    None if it cannot be copied."""
    memo: dict[int, torch.Tensor] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        meta = t.detach().to("meta")
        memo[id(t)] = nn.Parameter(meta, t.requires_grad) if isinstance(t, nn.Parameter) else meta
    try:
        return copy.deepcopy(model, memo).eval()
    except Exception:  # noqa: BLE001 - an uncopyable attribute: probe the model itself
        return None


#: How many square sides above a failing size are tried to name one that runs.
_SIZE_SCAN = 64


def _size_error(model: nn.Module, in_chans: int, size: tuple[int, int], error: RuntimeError) -> None:
    """After the forward pass failed at ``size``: raise InputSizeError naming the nearest square
    size that runs if the model runs at its own size, else re-raise ``error`` (not the size's fault).

    Downsampling and concatenated branches do not fit every size (BN-Inception's Caffe layout runs
    at 31-38, 63-70 ... px, not in between), so sizes are tried upwards rather than bisected.
    """
    own = getattr(model, "default_input_size", None) or FALLBACK_INPUT_SIZE
    probe = _meta_twin(model) or model
    if size == (own, own) or not _runs(probe, in_chans, (own, own)):
        raise error
    start = min(size)
    nearest = next((s for s in range(start, start + _SIZE_SCAN)
                    if (s, s) != size and _runs(probe, in_chans, (s, s))), None)
    hint = (f"the nearest size up that runs is {nearest}×{nearest}" if nearest
            else f"it runs at {own}×{own}")
    name = getattr(model, "senet_name", type(model).__name__)
    raise InputSizeError(f"input size {size[0]}×{size[1]} does not fit {name} (too small for its "
                         f"downsampling, or its branches disagree in size); {hint}") from None


def complexity(model: nn.Module, input_size: int | tuple | None = None,
               in_chans: int | None = None) -> Complexity:
    """Count parameters and FLOPs of ``model`` for one image of ``input_size`` (side or (H, W)).

    ``input_size=None`` takes the side the model was built for (``model.default_input_size``,
    recorded by :func:`senet.build_model`; 224 for other models). Returns totals and one row per
    block (every module with ``stage`` and ``index`` attributes). A size that is not positive, or
    that the network cannot take, raises :class:`InputSizeError` (a ValueError).
    """
    if input_size is None:
        input_size = getattr(model, "default_input_size", None) or FALLBACK_INPUT_SIZE
    input_size = _side_pair(input_size)
    if in_chans is None:
        first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
        in_chans = first.in_channels if isinstance(first, nn.Conv2d) else 3

    # FlopCounterMode sees the convolutions and matrix products; hooks read its running total on
    # entry and exit of each watched module, so each call's own work (its total less its watched
    # submodules') goes to the module that did it, whichever path it is called by; unwatched
    # modules' work goes to their nearest watched caller. Watched: the root, the blocks and SE
    # blocks (the rows), modules with a counter and modules with parameters (for the warning).
    # The registered counters add the work FlopCounterMode cannot see.
    fcm = FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS)
    names = {m: n for n, m in model.named_modules()}
    counters: dict[nn.Module, FlopFn | None] = {}  # the watched modules and their counters
    for m, path in names.items():
        fn = _counter_for(m)
        if (fn not in (None, no_flops) or (fn is None and _own_params(m)) or not path or _is_block(m)
                or isinstance(m, SqueezeExcitation)):
            counters[m] = fn
    flops: dict[str, float] = {}  # by module path: the module's own work
    ran: set[str] = set()  # modules with parameters and no counter that ran
    stack: list[list[int]] = []  # per running watched module: the total on entry, submodules' work

    def enter(m, inputs):
        stack.append([fcm.get_total_flops(), 0])

    def leave(m, inputs, out):
        entry, inner = stack.pop()
        total = fcm.get_total_flops() - entry
        if stack:
            stack[-1][1] += total
        own = (total - inner) / 2  # FlopCounterMode charges 2 per multiply-add
        fn = counters[m]
        if fn is not None:
            own += float(fn(m, inputs, out))
        elif own == 0 and _own_params(m):
            ran.add(names[m])
        if own:
            flops[names[m]] = flops.get(names[m], 0.0) + own

    handles = [h for m in counters for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    was_training = model.training
    model.eval()
    try:
        try:
            with fcm:
                _forward(model, in_chans, input_size)
        finally:
            for h in handles:
                h.remove()
    except RuntimeError as e:
        _size_error(model, in_chans, input_size, e)
    finally:
        model.train(was_training)

    uncounted = sorted(p for p in ran if p not in flops)  # a shared module may count on another call
    if uncounted:
        listed = ", ".join(f"{p or '<model>'} ({type(model.get_submodule(p)).__name__})"
                           for p in uncounted[:5])
        more = f" and {len(uncounted) - 5} more" if len(uncounted) > 5 else ""
        warnings.warn(f"FLOPs not counted for modules with parameters: {listed}{more}; "
                      f"register a counter with senet.complexity.register_flops(Type)",
                      UncountedWorkWarning, stacklevel=2)

    def under(prefix: str, d: dict[str, float]) -> float:
        return sum(v for k, v in d.items() if k == prefix or k.startswith(prefix + "."))

    se_paths = [n for n, m in model.named_modules() if isinstance(m, SqueezeExcitation)]
    se_flops = sum(under(p, flops) for p in se_paths)
    se_params = sum(sum(q.numel() for q in model.get_submodule(p).parameters()) for p in se_paths)

    rows = []
    for path, m in model.named_modules():
        if not _is_block(m):
            continue
        inside = [p for p in se_paths if p.startswith(path + ".")]  # several at GCT's every_conv site
        se_mod = model.get_submodule(inside[0]) if inside else None
        rows.append(BlockRow(
            module=path,
            name=getattr(se_mod, "block_name", "") if se_mod is not None else "",
            params=sum(q.numel() for q in m.parameters()),
            flops=int(round(under(path, flops))),
            se_params=sum(q.numel() for p in inside for q in model.get_submodule(p).parameters()),
            se_flops=int(round(sum(under(p, flops) for p in inside))),
            se_channels=getattr(se_mod, "channels", 0) if se_mod is not None else 0,
            se_hidden=(getattr(se_mod, "hidden", 0) or 0) if se_mod is not None else 0,
        ))
    return Complexity(
        params=sum(q.numel() for q in model.parameters()),
        flops=int(round(sum(flops.values()))),
        se_params=se_params,
        se_flops=int(round(se_flops)),
        input_size=tuple(input_size),
        blocks=rows,
    )
