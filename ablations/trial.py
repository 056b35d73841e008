"""What one sweep trial trains: the override order of its flat config, defined here alone.

A trial is one arm × one seed (× one value of each nuisance key) of a study. Its config is the
study's base config with, in this order (the later wins): the arm's overrides, the nuisance values,
the seed. The sweep plans the trials with it, the trainable builds the config it trains from it, and
collect reads back the config of a trial that stopped before it recorded its resolved one.

The trial's Tune parameters (``params.json`` in its folder) carry what the order needs: ``base``
(the flat base config), ``arms`` (each arm's overrides by label), ``arm``, ``seed``,
``nuisance_keys`` and the value of each nuisance key.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def trial_flat(base: Mapping[str, Any], arm: Mapping[str, Any], nuisance: Mapping[str, Any],
               seed: int) -> dict[str, Any]:
    """The trial's flat config: base <- the arm's overrides <- the nuisance values <- the seed."""
    return {**base, **arm, **nuisance, "seed": int(seed)}


def params_flat(params: Mapping[str, Any]) -> dict[str, Any]:
    """The flat config of the trial whose Tune parameters are ``params``."""
    nuisance = {k: params[k] for k in params.get("nuisance_keys", ())}
    return trial_flat(params["base"], params["arms"][params["arm"]], nuisance, params["seed"])
