"""A short name for "the same experiment": the recipe hash of a run's flat config.

Two trials belong to one comparison only if they differ in nothing but the study's arm axis, the
seed, nuisance values the study sweeps on purpose, and bookkeeping that cannot change a result (where
the run was written, how many CPU threads it used, progress bars). Everything else (the backbone, the
data and its split, the schedule, the precision) is the recipe: reports group rows by its hash so
that a smoke run and a quick run are never averaged together.

Sweeps record the hash per trial (``recipe`` in ``runs.parquet``); reports recompute it with the same
function for tables written before the column existed. The keys a study's arms set are named by
:func:`arm_keys` for both. Importing this module loads no torch; hashing reads the config's keys
(:mod:`senet.config`, which imports the models) on first use.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

#: Config keys that say how or where a run was executed, not what was trained: excluded from the
#: recipe. ``run.precision`` stays in it (bf16 and fp32 are different arithmetic), and so does
#: ``data.root`` (another folder may hold other images).
BOOKKEEPING = frozenset({
    "run.out", "run.device", "run.threads", "run.progress", "run.checkpoint_every", "run.compile",
    "run.channels_last", "run.deterministic", "data.download", "run.tensorboard",
    "run.eval_test",  # when the test set is evaluated; the final and best-val test errors are the same
})
#: The results column (from the run's provenance) holding the precision ``run.precision auto``
#: resolved to.
PRECISION_COLUMN = "precision"


@functools.cache
def _config_keys() -> frozenset[str]:
    from .. import config

    return frozenset(config.keys())


def arm_keys(axis: str | None, arm_overrides: Iterable[Mapping[str, Any] | None] = ()) -> list[str]:
    """The keys a study's arms set, in order: its axis (``"se.gate"``, or several joined by commas;
    a description in parentheses names no key) and every key an arm overrides (the reduction study's
    baseline sets ``se.stages`` although its axis is ``se.reduction``). The recipe leaves them out."""
    keys = [k.strip() for k in str(axis or "").split(",") if k.strip() and not k.strip().startswith("(")]
    keys += [k for overrides in arm_overrides for k in (overrides or {})]
    return list(dict.fromkeys(keys))


def study_arm_keys(meta: Mapping[str, Any]) -> list[str]:
    """:func:`arm_keys` of a study's meta (``study.json``, or a trial's ``meta`` parameter)."""
    return arm_keys(meta.get("axis"), (a.get("overrides") for a in meta.get("arms", [])))


def _canonical(value: Any) -> Any:
    """One spelling per value, whatever wrote it: JSON, pandas (NaN for None, 3.0 for 3) or numpy."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy scalars
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)  # an int column that held a missing value comes back as float
    if isinstance(value, (int, float, str)):
        return value
    return str(value)


def recipe_items(flat: Mapping[str, Any], axis_keys: Iterable[str] = (),
                 nuisance_keys: Iterable[str] = ()) -> dict[str, Any]:
    """The part of ``flat`` that is the recipe: config keys only (a results row's metric columns
    are ignored), without the seed, the arm axis keys, the nuisance keys and :data:`BOOKKEEPING`;
    missing values are dropped so an older table without a newer key hashes like one that has it unset."""
    drop = {"seed", *BOOKKEEPING, *(k.strip() for k in axis_keys), *(k.strip() for k in nuisance_keys)}
    known = _config_keys()
    out = {}
    for key in sorted(flat):
        if key in known and key not in drop:
            v = _canonical(flat[key])
            if v is not None:
                out[key] = v
    # `auto` is bf16 on one machine and fp32 on another: a row (or a planned trial) that says what it
    # resolved to (PRECISION_COLUMN) is hashed with that, so the two arithmetics are never one recipe
    resolved = _canonical(flat.get(PRECISION_COLUMN))
    if out.get("run.precision") == "auto" and resolved in ("fp32", "bf16"):
        out["run.precision"] = resolved
    return out


def recipe_hash(flat: Mapping[str, Any], axis_keys: Iterable[str] = (),
                nuisance_keys: Iterable[str] = ()) -> str:
    """10 hex digits naming the recipe of one trial (see :func:`recipe_items`).

    ``axis_keys`` are the study's scientific axis (``Study.axis.split(",")``), ``nuisance_keys`` the
    keys it sweeps identically for every arm; both are excluded, as is the seed.
    """
    text = json.dumps(recipe_items(flat, axis_keys, nuisance_keys), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]
