"""Study-level hooks: the one place where a sweep announces "study started / finished".

The MLflow integration (issue 4) plugs in here to open one parent run per Optuna study: a hook's
``on_study_start`` may return a parent run id, which the sweeper injects into every trial as
``trial.parent_run_id``.

Hooks come from ``hydra.sweeper.study_hooks`` (import paths ``module:function`` or
``module.function`` of factories ``f(task_cfg) -> StudyHook | None``), plus
``sweeper.tracking:study_hook`` when ``tracking.enabled`` is true and that function exists.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger(__name__)


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

    def on_study_start(self, info: StudyInfo) -> str | None:
        """Before the first trial; may return a parent run id for the trials."""
        return None

    def on_study_end(self, info: StudyInfo, results: Mapping[str, Any]) -> None:
        """After the last trial (also after max_failures or when every trial failed)."""


def _resolve(path: str):
    module, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def load_hooks(paths: Sequence[str], task_cfg: DictConfig) -> list[StudyHook]:
    hooks: list[StudyHook] = []
    for path in paths or ():
        hook = _resolve(path)(task_cfg)
        if hook is not None:
            hooks.append(hook)
    if task_cfg.get("tracking") is not None and task_cfg.tracking.get("enabled", False):
        try:
            factory = _resolve("sweeper.tracking:study_hook")
        except (ImportError, AttributeError):
            factory = None
        if factory is not None and "sweeper.tracking:study_hook" not in (paths or ()):
            hook = factory(task_cfg)
            if hook is not None:
                hooks.append(hook)
    return hooks
