"""A stable hash of a run's semantic config: what decides its results, nothing else.

Hashed: the resolved ``agent``, ``env``, ``buffer``, ``train`` and ``eval`` nodes and ``seed``.
A replicate group (``trial.seeds`` set, ``sweeper.replicates``) hashes its ``seeds`` and
``aggregate`` in place of ``seed``: it is another run than the single run of any one seed.
Not hashed: the rest of ``trial`` (sweeper bookkeeping), ``tracking``, ``hydra`` (paths,
launcher, sweeper, runtime) and the UI/output flags ``train.progress``, ``train.plot`` and
``train.save_model``, which change what a run shows or leaves behind but not what it learns.

Canonical form: the semantic config as JSON with sorted keys and no whitespace, numbers
canonicalized by value (``1e-3`` and ``0.001`` are the same float; an integral float such as
``1.0`` is written like the int ``1``; NaN and infinities as strings), prefixed by a schema
version. The hash is the SHA-256 of that text, hex: the same config gives the same hash on any
machine and in any key or override order.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

HASH_VERSION = "sweeper-config-v1"
SEMANTIC_KEYS = ("agent", "env", "buffer", "train", "eval", "seed")
NON_SEMANTIC = {"train": ("progress", "plot", "save_model")}
SHORT = 12  # characters of the hash shown to people


def semantic_config(cfg: Any) -> dict[str, Any]:
    """The semantic part of a config (DictConfig or plain mapping) as plain resolved data."""
    if not isinstance(cfg, Mapping):
        raise TypeError(f"expected a config mapping, got {type(cfg).__name__}")
    grouped = "seeds" in cfg  # already semantic: a replicate group's
    missing = [k for k in SEMANTIC_KEYS if k not in cfg and not (grouped and k == "seed")]
    if missing:
        raise KeyError(f"config has no {', '.join(missing)}: not a sweeper run config")
    # Node by node: the rest (hydra, with its run-time interpolations) is never resolved.
    out = {key: _plain(cfg[key]) for key in (*SEMANTIC_KEYS, "seeds", "aggregate") if key in cfg}
    trial = cfg.get("trial") if hasattr(cfg, "get") else None
    seeds = trial.get("seeds") if isinstance(trial, Mapping) or _is_omegaconf(trial) else None
    if seeds:  # a replicate group: what it trains is each of its seeds, judged by an aggregate
        del out["seed"]
        out["seeds"] = [int(s) for s in _plain(seeds)]
        out["aggregate"] = str(trial.get("aggregate", "iqm"))
    for node, keys in NON_SEMANTIC.items():
        if isinstance(out.get(node), dict):
            for key in keys:
                out[node].pop(key, None)
    return out


def _is_omegaconf(obj: Any) -> bool:
    return type(obj).__module__.startswith("omegaconf")


def _plain(value: Any) -> Any:
    if _is_omegaconf(value):
        from omegaconf import OmegaConf

        value = OmegaConf.to_container(value, resolve=True, throw_on_missing=True)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _canonical_number(value: float) -> Any:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value  # json writes repr(float): the shortest text that round-trips


def _canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _canonical_number(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return _canonical(value.item())
    raise TypeError(f"cannot hash config value {value!r} of type {type(value).__name__}")


def canonical_json(cfg: Any) -> str:
    """The canonical text that is hashed (schema version included)."""
    payload = {"version": HASH_VERSION, "config": _canonical(semantic_config(cfg))}
    return json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def config_hash(cfg: Any) -> str:
    """SHA-256 (64 hex digits) of the canonical semantic config."""
    return hashlib.sha256(canonical_json(cfg).encode("utf-8")).hexdigest()


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"agent": {"lr": 0.001}}`` -> ``{"agent.lr": 0.001}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out
