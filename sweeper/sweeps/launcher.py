"""``hydra/launcher=isolated``: Hydra jobs on independent worker processes.

Same contract as joblib's launcher (``launch`` returns one JobReturn per job, job dirs under
``hydra.sweep.dir``; a batch runs ``n_jobs`` jobs at a time, default: the CPU count), and safe
to call from several threads at once (the Optuna sweeper's slots each launch one job at a
time). A job whose process dies comes back as a FAILED
JobReturn holding :class:`~sweeper.sweeps.workers.WorkerDied`, so the sweeper fails that trial
alone and goes on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from sweeper.sweeps.workers import WorkerDied, WorkerPool

log = logging.getLogger(__name__)


class IsolatedLauncherImpl:
    def __init__(self, n_jobs: int | None = None) -> None:
        if n_jobs is not None and int(n_jobs) < 1:
            raise ValueError(f"hydra.launcher.n_jobs: must be >= 1 or null, got {n_jobs}")
        self.n_jobs = None if n_jobs is None else int(n_jobs)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self._pool: WorkerPool | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.task_function = task_function
        self.hydra_context = hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[Any]:
        import cloudpickle

        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        if self._pool is None:
            self._pool = WorkerPool(self.n_jobs)
        state = Singleton.get_state()

        def one(i: int, overrides: Sequence[str]) -> Any:
            idx = initial_job_idx + i
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            payload = cloudpickle.dumps(
                (idx, list(overrides), self.hydra_context, self.config, self.task_function, state)
            )
            try:
                ret = self._pool.run(payload)
            except WorkerDied as err:
                ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
                ret._return_value = err
            if isinstance(ret, BaseException):  # escaped run_job itself
                err, ret = ret, JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
                ret._return_value = err
            return ret

        if len(job_overrides) == 1:  # the Optuna sweeper's slots: one job per call
            return [one(0, job_overrides[0])]
        # a batch (Hydra's basic sweeper): n_jobs at a time, like joblib's launcher
        workers = self.n_jobs or os.cpu_count() or 1
        with ThreadPoolExecutor(max_workers=min(workers, len(job_overrides))) as threads:
            return list(threads.map(one, range(len(job_overrides)), job_overrides))

    def close(self) -> None:
        """End the workers; a launch after this fails its jobs (the pool refuses them)."""
        if self._pool is not None:
            self._pool.close()
