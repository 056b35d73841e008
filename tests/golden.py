"""``senet/golden.json``: parameters, FLOPs and SE widths of every registered model and of the SE
variants (each registered gate, squeeze, excitation and placement, r, ... on se_resnet20 and
se_resnet50). ``tests/test_models.py`` compares the library against the file.

    python -m tests.golden            # compare only; exit 1 if an entry differs or is missing
    python -m tests.golden --write    # rewrite the file (on purpose: review the diff)

Models are built on the ``meta`` device: shapes, parameter counts and FLOPs need no real weights.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields, replace
from pathlib import Path

import torch

import senet
from senet import MODELS, SEConfig
from senet.se import PRESETS, hidden_width, study_choices

GOLDEN = Path(senet.__file__).with_name("golden.json")

#: One-axis variants of each SE slot: every registered choice other than the default.
SLOTS = ("gate", "squeeze", "excitation", "placement")
#: Variants beyond those: Tables 10, 13 and the released models' bias.
EXTRA_VARIANTS = (
    *({"reduction": r} for r in (2, 4, 8, 32)),
    {"bias": False},
    {"divisor": 8},
    {"stages": "2,3"},
)
VARIANT_MODELS = ("se_resnet20", "se_resnet50")


def variant_overrides(model: str) -> list[dict]:
    """One dict of SEConfig fields per variant: every registered choice of each slot (the paper's:
    the attention family's parts come as one preset per module), then extras, then SE in each single
    stage of ``model`` (Table 13)."""
    with torch.device("meta"):
        stages = senet.build_model(model).stages
    registry = {f.name: f.metadata["choices"] for f in fields(SEConfig) if f.name in SLOTS}
    out = []
    for slot in SLOTS:
        out += [{slot: name} for name in study_choices(registry[slot]) if name != getattr(SEConfig(), slot)]
    out += [dict(PRESETS.get(p)) for p in PRESETS if PRESETS.get(p)]  # the attention family: one per module
    return out + [dict(v) for v in EXTRA_VARIANTS] + [{"stages": str(s)} for s in stages]


def variant_key(model: str, overrides: dict) -> str:
    return model + "".join(f" se.{k}={v}" for k, v in sorted(overrides.items()))


def record(name: str, overrides: dict | None = None) -> dict:
    """Params, FLOPs (at the model's input size) and each SE block's (C, hidden width).

    For an excitation without a bottleneck (eca, linear) the width recorded is the configured
    C // r, as the file has held it since before excitations declared whether they use one; their
    parameter and FLOP counts pin those networks.
    """
    spec = MODELS.get(name)
    se = replace(SEConfig(), **overrides) if overrides else None
    with torch.device("meta"):
        model = senet.build_model(name, se=se)
    c = senet.complexity(model, spec.input_size)
    cfg = se or SEConfig()
    return {
        "input_size": spec.input_size,
        "params": c.params,
        "flops": c.flops,
        "se_params": c.se_params,
        "se_flops": c.se_flops,
        "se_hidden": {b.name: [b.se_channels, b.se_hidden or hidden_width(b.se_channels, cfg.reduction, cfg.divisor)]
                      for b in c.blocks if b.name},
    }


def expected_keys() -> dict[str, set[str]]:
    """The entries the registries call for: every model, every variant."""
    return {"models": set(MODELS.names()),
            "variants": {variant_key(m, o) for m in VARIANT_MODELS for o in variant_overrides(m)}}


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
