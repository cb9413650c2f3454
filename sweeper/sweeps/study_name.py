"""Which study a sweep opens, and with which sampler seed.

A study's default name is ``<sweep or agent-env>-<sampler>-<hash>`` over everything that changes
which trials are asked or what their values mean, so the same command resumes its study and a
changed setting starts another. Seeding: the first process of a fresh study uses
``hydra.sweeper.sampler.seed`` (two fresh sweeps of the same command sample the same points); a
process that resumes a study or shares it with another worker derives its own seed, so it does
not repeat the points already sampled. The grid sampler keeps the configured seed everywhere (it
fixes the grid's order).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from sweeper import study_attrs
from sweeper.processes import owner
from sweeper.sweeps.search_space import SearchSpace, override_key

log = logging.getLogger("sweeper.sweeps")

WORKER = study_attrs.WORKER


def identity(
    direction: str,
    sampler_name: str,
    seed: Any,
    sampler_kwargs: Mapping[str, Any] | None,
    pruner: Any,
    seeds: int,
    aggregate: str,
) -> dict[str, Any]:
    """The settings that change which trials a study asks, or what their values mean: a
    study started with other ones is another study (its default name differs)."""
    return {
        "direction": direction,
        "sampler": {"name": sampler_name, "seed": seed, "kwargs": dict(sampler_kwargs or {})},
        "pruner": pruner,
        "seeds": seeds,
        "aggregate": aggregate,
    }


def default_study_name(
    config: DictConfig,
    space: SearchSpace,
    task_cfg: DictConfig,
    settings: Mapping[str, Any] | None = None,
) -> str:
    """``<sweep or agent-env>-<sampler>-<hash>``: the hash covers the search space, the fixed
    overrides, the composed task config and ``settings`` (the sweeper settings that change
    which trials are asked or what their values are: :func:`identity`), so
    re-running the same command resumes the same study and changing the sampler's seed, the
    pruner or the number of seeds starts another. Tracking settings are left out: turning
    MLflow on or off (or pointing it elsewhere) resumes the study too."""
    task = OmegaConf.to_container(task_cfg, resolve=False)
    if isinstance(task, dict):
        task.pop("trial", None)
        task.pop("tracking", None)
    fixed = sorted(f for f in space.fixed if override_key(f).split(".", 1)[0] != "tracking")
    ident = {"space": space.describe(), "fixed": fixed, "task": task}
    if settings:
        ident["sweeper"] = dict(settings)
    payload = json.dumps(ident, sort_keys=True, default=str)
    digest = hashlib.sha1(payload.encode()).hexdigest()[:10]
    choices = OmegaConf.select(config, "hydra.runtime.choices") or {}
    prefix = choices.get("sweep") if hasattr(choices, "get") else None
    if not prefix:
        agent = OmegaConf.select(task_cfg, "agent.name", default="task")
        env = OmegaConf.select(task_cfg, "env.name", default="")
        prefix = f"{agent}-{env}".strip("-")
    sampler = (settings or {}).get("sampler", {}).get("name")
    return "-".join(str(p) for p in (prefix, sampler, digest) if p)


def derive_seed(seed: int, *parts: Any) -> int:
    """A seed for a resumed or parallel process: deterministic in ``seed`` and ``parts``
    (existing trial count, host, pid, process start), different from ``seed`` itself."""
    payload = json.dumps([seed, *parts], default=str).encode()
    derived = int.from_bytes(hashlib.sha256(payload).digest()[:4], "big")
    return derived if derived != seed else derived ^ 1


def worker_seed(study: optuna.Study, seed: int | None, sampler: str) -> int | None:
    """The configured seed for the first process of a fresh study; a derived one on resume
    or when another worker shares the study (else both would sample the same points).

    Not for the grid sampler: its seed shuffles the grid, and the grid ids kept in the
    study's trials only mean the same points in every process with the same shuffle; so
    every process of a grid study uses the configured seed (0 when unset).

    Every process registers itself in the study (user attr ``sweeper:worker:<id>``) and then
    reads the registrations: of two processes starting together at least one sees the
    other, so at most one of them keeps the configured seed.
    """
    if sampler == "grid":
        return 0 if seed is None else seed
    me = owner()
    key = f"{WORKER}{me['host']}:{me['pid']}:{me['start']}"
    study.set_user_attr(key, time.time())
    others = [k for k in study.user_attrs if k.startswith(WORKER) and k != key]
    n_existing = len(study.get_trials(deepcopy=False))
    if seed is None or (not others and n_existing == 0):
        return seed
    derived = derive_seed(seed, n_existing, me["host"], me["pid"], me["start"])
    log.info(
        "sampler seed %s -> %s (%s)",
        seed,
        derived,
        f"resuming {n_existing} trial(s)" if n_existing else "another worker shares the study",
    )
    return derived
