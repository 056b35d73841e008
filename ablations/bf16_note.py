"""The console note of a sweep that will train in bf16 on a CPU without native bf16.

The standard preset pins ``run.precision bf16`` (the precision of its recorded trials), so that
every machine plans the same trials: on a CPU without AVX512-BF16 or AMX they train emulated, more
slowly than fp32 would, and the sweep says so once before it starts (a dry run too).
"""
from __future__ import annotations

import os

from senet.runtime import emulated_bf16_note

from .plan import Plan, SweepOptions
from .studies import PRESETS


def say_emulated_bf16(p: Plan, opts: SweepOptions, training: bool, err, tag: str | None = None) -> None:
    """Print :func:`senet.runtime.emulated_bf16_note` for the trials of ``p`` on ``err`` (prefixed
    ``[tag]``, the study's name by default) when ``training`` (the sweep trains some trials) and
    they train on this machine's CPU. A Ray cluster (``--address`` or ``$RAY_ADDRESS``) or a GPU per
    trial runs them elsewhere, where this CPU's flags say nothing."""
    if not training or opts.address or os.environ.get("RAY_ADDRESS") or (opts.gpus_per_trial or 0) > 0:
        return
    run = p.base.run
    from_preset = "run.precision" not in opts.overrides and PRESETS.get(p.preset).overrides.get("run.precision") == run.precision
    source = f"preset {p.preset}" if from_preset else "this sweep"
    note = emulated_bf16_note(run.precision, run.device, source)
    if note:
        print(f"[{tag or p.study.name}] {note}", file=err, flush=True)
