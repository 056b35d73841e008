"""Where and how a run computes: its device, precision, threads, determinism and random number generators.

Precision (``run.precision``, ``auto`` by default): the forward pass runs under bf16 autocast on a GPU
and on a CPU with native bf16 arithmetic (AVX512-BF16 or AMX, read from the CPU's flags by
:func:`cpu_has_native_bf16`), in fp32 elsewhere (bf16 there gains no speed; asked for, its convolutions run as fp32 ones on bf16
values, :class:`Bf16ConvolutionsInFp32`, rounded as native kernels round them). Autocast
leaves the parameters, the optimizer state and the BN statistics in fp32 (BN accumulates its
statistics of bf16 inputs in fp32); the loss is computed from fp32 logits. The SE excitation runs
in bf16 like the rest: in fp32 it changed the excitations of a trained SE-ResNet-20 by less than
the bf16 rounding of the features it reads (mean |Δ| 1.2e-3 vs 0.7e-3 against fp32) and left the
logits' error against fp32 the same (mean |Δ| 0.017). channels_last is on only on a GPU: on a CPU
it sped fp32 training up but slowed bf16 down.
"""
from __future__ import annotations

import contextlib
import functools
import os
import random
from pathlib import Path

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from .config import Config, ConfigError

#: Images per forward pass when evaluating, per device type. On a CPU the activations of large
#: batches leave the caches (SE-ResNet-20, 28², 1 thread, inference_mode, img/s at batch
#: 64/128/256/512/1024: fp32 1279/1318/1072/833/572, bf16 1892/2015/2063/1701/1393; `python
#: benchmarks/bench.py --only eval` measures it). A GPU wants large batches to fill it (not measured here).
EVAL_BATCH = {"cpu": 128, "cuda": 1024}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"bad value for run.device: {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"bad value for run.device: {name!r} (no CUDA device is available)")
    return device


#: CPU flags (Linux ``/proc/cpuinfo``) of native bf16 arithmetic: AVX512-BF16 (dot products of bf16
#: pairs) and AMX (bf16 tile matrix multiply). Without them bf16 is converted to fp32 and back around
#: fp32 arithmetic: nothing to gain, rounding to lose.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them; empty where there is no /proc/cpuinfo."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":  # x86; the same on every core
            return frozenset(value.split())
    return frozenset()


#: Environment variable that overrides the detection: ``1`` says the CPU has native bf16, ``0`` says
#: it has none (what ``auto`` and the sweeps' plans then do is what they do on such a CPU; the tests
#: use it). Local Ray workers inherit it from the sweep that starts them.
BF16_ENV = "SENET_CPU_BF16"


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX), detected from its flags.

    Elsewhere (no such flag, or no /proc/cpuinfo to read) False: ``run.precision auto`` then trains
    in fp32, and ``bf16`` still works but runs emulated. ``SENET_CPU_BF16=1`` or ``0``
    (:data:`BF16_ENV`) overrides the detection, to see on any machine what the other kind of CPU does.
    """
    forced = os.environ.get(BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        raise ConfigError(f"bad value for ${BF16_ENV}: {forced!r}; use 1 (native bf16), 0 (none) or leave it unset")
    return bool(cpu_flags() & set(BF16_CPU_FLAGS))


#: What bf16 costs on a CPU without native bf16, where convolutions run as
#: :class:`Bf16ConvolutionsInFp32`: an SE-ResNet-20 training step, one thread, ``python
#: benchmarks/bench.py --quick --only train`` on a 2-core AMD EPYC with AVX2 only. PyTorch's own bf16
#: convolutions there (an im2col and a bf16 matrix product) ran at 22 img/s.
EMULATED_BF16 = ("about as fast as fp32 (an SE-ResNet-20 training step: 263 img/s in bf16 against 268 in fp32 "
                 "on an AVX2 core)")


def cpu_device(device: str) -> bool:
    """Whether ``run.device`` ``device`` runs on this machine's CPU (``auto`` without a GPU here),
    without opening a device (a bad name is left for :func:`resolve_device` to refuse)."""
    return device == "cpu" or (device == "auto" and not torch.cuda.is_available())


def emulated_bf16_note(precision: str, device: str, source: str = "this run") -> str | None:
    """One line saying what bf16 costs where it is emulated: for ``run.precision`` ``precision`` as
    asked (``auto`` is fp32 on such a CPU) on ``run.device`` ``device``, when that is bf16 on a CPU
    without native bf16; else None. ``source`` names what trains in bf16 (a run, a preset's sweep)."""
    if precision != "bf16" or not cpu_device(device) or cpu_has_native_bf16():
        return None
    return (f"note: this CPU has no native bf16 (AVX512-BF16/AMX); {source} trains in bf16, its convolutions "
            f"as fp32 ones on bf16 values rounded once to bf16, as native kernels round them: {EMULATED_BF16}")


def default_precision(device: torch.device) -> str:
    """What ``run.precision auto`` means on ``device``."""
    if device.type == "cuda":
        return "bf16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def eval_batch(device: torch.device) -> int:
    """Images per forward pass when evaluating on ``device`` (see :data:`EVAL_BATCH`)."""
    return EVAL_BATCH.get(device.type, EVAL_BATCH["cpu"])


def resolve_precision(cfg: Config, device: torch.device) -> tuple[str, bool]:
    """(``"bf16"`` | ``"fp32"``, channels_last) after resolving ``auto`` (:func:`default_precision`)."""
    precision = cfg.run.precision
    if precision == "auto":
        precision = default_precision(device)
    cl = cfg.run.channels_last
    channels_last = device.type == "cuda" if cl == "auto" else cl == "true"
    return precision, channels_last


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def determinism(on: bool, threads: int):
    """Deterministic algorithms and thread count for the run, restored afterwards (a Ray worker
    that reuses its process for the next trial must not inherit them)."""
    prev = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
            torch.backends.cudnn.deterministic, torch.get_num_threads())
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = not on
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = prev[1], prev[2]
        torch.set_num_threads(prev[3])


def _to_bf16_values(t: torch.Tensor | None) -> torch.Tensor | None:
    """``t`` as the fp32 tensor of its bf16 values (exact for a bf16 ``t``; autocast's cast for an fp32 one)."""
    if t is None or not t.is_floating_point():
        return t
    return t.float() if t.dtype == torch.bfloat16 else t.to(torch.bfloat16).float()


class Bf16ConvolutionsInFp32(TorchFunctionMode):
    """Under CPU bf16 autocast, each convolution computed as native bf16 kernels compute it, with fp32 ones.

    A native bf16 convolution (oneDNN with AVX512-BF16 or AMX) reads bf16 inputs and weights,
    accumulates in fp32 (oneDNN's default, "strict", accumulation mode) and rounds its output to
    bf16 once; its gradients the same. On a CPU without them PyTorch falls back to an im2col and a
    bf16 matrix product that is about 11x slower than fp32 on an AVX2 core and rounds partial sums:
    its weight gradients were 4x further from the exact ones than a single rounding. This mode
    casts the inputs and the weight to bf16 (as autocast does), computes the convolution in fp32 on
    those values and casts the output to bf16, so the casts' backward passes round the gradients
    once each too: the rounding of native kernels, up to the order of the fp32 sums, at fp32's speed
    (:data:`EMULATED_BF16`). Everything else autocast does is left as it is.
    """

    OPS = frozenset({torch.conv1d, torch.conv2d, torch.conv3d})  # torch.nn.functional's convNd are these

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func not in self.OPS or not torch.is_autocast_enabled("cpu"):
            return func(*args, **kwargs)
        args = [_to_bf16_values(a) for a in args[:3]] + list(args[3:])
        if "bias" in kwargs:
            kwargs["bias"] = _to_bf16_values(kwargs["bias"])
        with torch.autocast("cpu", enabled=False):
            return func(*args, **kwargs).to(torch.bfloat16)


def bf16_kernels(device: torch.device) -> str:
    """How bf16 autocast computes convolutions on ``device``: ``native``, or ``fp32`` on a CPU
    without native bf16 (:class:`Bf16ConvolutionsInFp32`)."""
    return "fp32" if device.type == "cpu" and not cpu_has_native_bf16() else "native"


@contextlib.contextmanager
def _cpu_bf16_in_fp32():
    with torch.autocast("cpu", dtype=torch.bfloat16), Bf16ConvolutionsInFp32():
        yield


def autocast(device: torch.device, precision: str):
    """The context a run's forward passes take in ``precision`` (``bf16`` or ``fp32``) on ``device``."""
    if precision != "bf16":
        return contextlib.nullcontext()
    if bf16_kernels(device) == "fp32":
        return _cpu_bf16_in_fp32()
    return torch.autocast(device.type, dtype=torch.bfloat16)
