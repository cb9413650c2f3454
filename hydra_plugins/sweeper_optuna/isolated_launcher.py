"""The discovered Launcher ``hydra/launcher=isolated`` (thin: work is in sweeper.sweeps.launcher).

Each job in flight runs in its own worker process; a worker that dies fails only its own job,
and workers die with the sweeper (see ``sweeper.sweeps.workers`` for why joblib's pool cannot).
"""

# No ``from __future__ import annotations``: see optuna_sweeper.py.
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class IsolatedLauncherConf:
    _target_: str = "hydra_plugins.sweeper_optuna.isolated_launcher.IsolatedLauncher"
    # at most this many jobs in flight (null: the sweeper's slots; a batch: the CPU count)
    n_jobs: int | None = None


ConfigStore.instance().store(
    group="hydra/launcher", name="isolated", node=IsolatedLauncherConf, provider="sweeper_optuna"
)


class IsolatedLauncher(Launcher):
    def __init__(self, **kwargs: Any) -> None:
        from sweeper.sweeps.launcher import IsolatedLauncherImpl

        self.impl = IsolatedLauncherImpl(**kwargs)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        return self.impl.launch(job_overrides, initial_job_idx)

    def close(self) -> None:
        self.impl.close()
