"""What the analysis commands load from a checkpoint: the trained network, its config with the
command line's ``--data.*`` options, the datasets and the normalisation the run trained with."""
from __future__ import annotations

import senet.data
from senet import config
from senet.checkpoint import load_model
from senet.errors import UserError


def load_trained(checkpoint: str, overrides: dict, command: str):
    """(model, config with the ``--data.*`` overrides, the config it was trained with, the
    checkpoint's meta). Other overrides are refused: the analysis reads a trained network as it is."""
    bad = [k for k in overrides if not k.startswith("data.")]
    if bad:
        raise UserError(f"{command} takes --data.* options, not --{bad[0]}")
    model, trained, meta = load_model(checkpoint)
    return model, config.from_flat(overrides, base=trained), trained, meta


def load_data(cfg, meta: dict, cache: dict | None = None):
    """(datasets of ``cfg.data``, mean, std, class names): the normalisation and classes the run
    recorded in its checkpoint, else the dataset's. With a ``cache``, each data config loads once."""
    cache = {} if cache is None else cache
    key = tuple(sorted((k, str(v)) for k, v in config.flatten(cfg).items() if k.startswith("data.")))
    if key not in cache:
        cache[key] = senet.data.load_datasets(cfg.data)  # found on the module when called: tests watch it
    ds = cache[key]
    data = meta.get("data", {}) or {}
    return ds, data.get("mean", ds.mean), data.get("std", ds.std), list(data.get("classes") or ds.classes)
