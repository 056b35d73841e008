"""Regenerate ``senet/golden.json``: parameters, FLOPs and SE hidden widths of every registered
model and of the SE variants (each gate, squeeze, excitation, placement, r, ... on se_resnet20 and
se_resnet50). ``tests/test_models.py`` compares the library against this file.

    python benchmarks/regen_golden.py            # compare only; exit 1 if anything changed
    python benchmarks/regen_golden.py --write    # rewrite the file (on purpose: review the diff)

Models are built on the ``meta`` device: shapes, parameter counts and FLOPs need no real weights.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

import senet
from senet import EXCITATIONS, GATES, MODELS, PLACEMENTS, SQUEEZES, SEConfig

GOLDEN = Path(senet.__file__).with_name("golden.json")

#: Variants beyond one-axis changes of each registry: Tables 10, 13 and the released models' bias.
EXTRA_VARIANTS = (
    *({"reduction": r} for r in (2, 4, 8, 32)),
    {"bias": False},
    {"divisor": 8},
    {"stages": "2,3"},
)
VARIANT_MODELS = ("se_resnet20", "se_resnet50")


def variant_overrides(model: str) -> list[dict]:
    """One dict of SEConfig fields per variant: every registered choice of each slot, then extras,
    then SE in each single stage of ``model`` (Table 13)."""
    with torch.device("meta"):
        stages = senet.build_model(model).stages
    out = []
    for field, reg in (("gate", GATES), ("squeeze", SQUEEZES), ("excitation", EXCITATIONS),
                       ("placement", PLACEMENTS)):
        out += [{field: name} for name in reg.names() if name != getattr(SEConfig(), field)]
    return out + [dict(v) for v in EXTRA_VARIANTS] + [{"stages": str(s)} for s in stages]


def variant_key(model: str, overrides: dict) -> str:
    return model + "".join(f" se.{k}={v}" for k, v in sorted(overrides.items()))


def record(name: str, overrides: dict | None = None) -> dict:
    """Params, FLOPs (at the model's input size) and each SE block's (C, hidden width)."""
    spec = MODELS.get(name)
    se = replace(SEConfig(), **overrides) if overrides else None
    with torch.device("meta"):
        model = senet.build_model(name, se=se)
    c = senet.complexity(model, spec.input_size)
    return {
        "input_size": spec.input_size,
        "params": c.params,
        "flops": c.flops,
        "se_params": c.se_params,
        "se_flops": c.se_flops,
        "se_hidden": {b.name: [b.se_channels, b.se_hidden] for b in c.blocks if b.name},
    }


def generate() -> dict:
    models = {name: record(name) for name in MODELS.names()}
    variants = {variant_key(m, o): {"model": m, "se": o, **record(m, o)}
                for m in VARIANT_MODELS for o in variant_overrides(m)}
    return {"models": models, "variants": variants}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help="rewrite senet/golden.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    new = generate()
    old = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {"models": {}, "variants": {}}
    changed = [f"{sec}/{k}" for sec in new for k in sorted(set(new[sec]) | set(old.get(sec, {})))
               if new[sec].get(k) != old.get(sec, {}).get(k)]
    for k in changed:
        print("changed:", k)
    if args.write:
        GOLDEN.write_text(json.dumps(new, indent=1, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN.name}: {len(new['models'])} models, {len(new['variants'])} variants")
        return 0
    print(f"{len(changed)} entries differ" + ("; rerun with --write to accept" if changed else ""))
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
