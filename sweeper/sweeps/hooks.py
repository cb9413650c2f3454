"""Study-level hooks: the one place where a sweep announces "study started / finished".

The MLflow integration plugs in here to open one parent run per Optuna study: a hook's
``on_study_start`` may return a parent run id, which the sweeper injects into every trial as
``trial.parent_run_id``.

Hooks come from ``hydra.sweeper.study_hooks`` (import paths ``module:function`` or
``module.function`` of factories ``f(task_cfg) -> StudyHook | None``), plus the factories that
installed packages register under the entry-point group ``sweeper.study_hooks`` (as MLflow finds
its tracking stores, and pytest its plugins): this project registers ``sweeper.tracking:
study_hook`` in ``pyproject.toml``, which returns None when ``tracking.enabled`` is false. So the
sweeper never names the tracking package, and another integration is one entry point.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from sweeper.messages import error_line, one_line

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "sweeper.study_hooks"


@dataclass
class StudyInfo:
    study_name: str
    storage: str  # redacted: no password
    direction: str
    n_trials: int
    search_space: Mapping[str, str]  # parameter -> distribution in override grammar
    fixed_overrides: Sequence[str]
    sweep_dir: str
    task_config: DictConfig  # composed task config with the fixed overrides (no hydra node)


class StudyHook:
    """No-op base."""

    #: modules the trials import because of this hook (e.g. MLflow's client): the trial
    #: processes' fork server imports them once (``sweeper.sweeps.workers.preload``)
    preload: Sequence[str] = ()

    def remote_problem(self) -> str | None:
        """Why trials on other machines (a Ray or SLURM launcher) cannot use this hook's
        store, in one line naming the key to change; None when they can."""
        return None

    def on_study_start(self, info: StudyInfo) -> str | None:
        """Before the first trial; may return a parent run id for the trials."""
        return None

    def on_trial_end(self, info: StudyInfo, trial: Any) -> None:
        """After the sweeper told Optuna how a trial ended (a FrozenTrial, the truth about
        it): also for trials whose process died and for stale trials failed on resume."""

    def on_study_end(self, info: StudyInfo, results: Mapping[str, Any]) -> None:
        """After the last trial (also after max_failures or when every trial failed). When the
        sweep stopped because its storage failed, ``results`` is ``{"study": None, "error":
        <cause>}``."""


class HookError(ValueError):
    """An import path that cannot be resolved or a hook factory that failed; one line."""


def resolve(path: str, key: str = "") -> Any:
    """The object at ``module:attr`` (or ``module.attr``); HookError (one line, naming ``key``
    and the path as the user spelled it) when it cannot be imported."""
    where = f"{key}: " if key else ""
    module, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not module or not attr:
        raise HookError(f"{where}{path!r} is not an import path (module:attr)")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except Exception as err:  # ImportError, AttributeError, or an error while importing
        raise HookError(f"{where}cannot import {path!r}: {error_line(err)}") from None
    if not callable(obj):
        raise HookError(f"{where}{path!r} is not callable")
    return obj


def registered() -> list[str]:
    """The hook factories installed packages register (entry points of
    :data:`ENTRY_POINT_GROUP`), as ``module:attr`` paths, in a stable order."""
    eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return sorted({ep.value.replace(" ", "") for ep in eps})


def load_hooks(paths: Sequence[str], task_cfg: DictConfig) -> list[StudyHook]:
    """The hooks of ``paths`` (factories ``f(task_cfg)``) and of the registered factories;
    raises HookError (one line)."""
    hooks: list[StudyHook] = []
    configured = list(paths or ())
    for path in configured:
        factory = resolve(path, "hydra.sweeper.study_hooks")
        try:
            hook = factory(task_cfg)
        except Exception as err:
            raise HookError(f"hydra.sweeper.study_hooks: {path}: {error_line(err)}") from None
        if hook is not None:
            hooks.append(hook)
    for path in registered():
        if path in configured:
            continue
        try:
            factory = resolve(path)
        except HookError as err:  # a broken installed plugin does not stop the sweep
            log.warning("study hook entry point %s: %s", path, err)
            continue
        try:
            hook = factory(task_cfg)
        except ValueError as err:  # a bad setting (e.g. tracking URI): its message names the key
            raise HookError(one_line(err)) from None
        except Exception as err:
            raise HookError(f"{path}: {error_line(err)}") from None
        if hook is not None:
            hooks.append(hook)
    return hooks
