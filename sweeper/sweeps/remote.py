"""Launchers whose trials run on other machines: Ray (``hydra/launcher=ray``) and submitit
(``hydra/launcher=submitit_local`` / ``submitit_slurm``).

The sweeper drives them like any launcher (each slot thread launches one trial at a time:
no batch barrier), but a trial on another machine sees nothing of the sweeper's machine, so
before any trial:

* **stores every machine can reach** (:func:`check`): a journal file or an SQLite study, an
  embedded MLflow store, are files on this machine; Optuna's docs say a journal file on a
  network filesystem "may not work correctly". Refused with one line naming PostgreSQL and an
  MLflow server;
* **an absolute sweep dir** (:func:`prepare`): a Ray worker runs in the directory where
  ``ray start`` ran, so a relative ``hydra.sweep.dir`` scattered the job folders;
* **Ray once**: the launcher calls ``ray.init`` inside ``launch`` when Ray is not initialized;
  our slot threads launch concurrently and raced inside ``ray.init`` ("called ray.init
  twice"). :func:`prepare` initializes Ray in the sweeper's thread first, without the
  launcher's ``object_store_memory`` default when joining a cluster (Ray refuses it there,
  Hydra issue 2893), and with ``max_retries=0`` for the trial tasks unless set: Ray retries a
  task whose worker died, which would train the same Optuna trial twice; the trial fails and
  the sweeper asks a new one instead;
* **the job's environment**: a Ray worker does not inherit the sweeper's environment, so the
  job sets the variables the trial needs (``MLFLOW_*``, the masked URLs' secrets
  ``SWEEPER_*``) first; they travel in the task's arguments (Ray's object store, memory),
  never in a file. submitit's jobs inherit the environment (``sbatch`` exports it), and its
  pickled job files on disk hold no secret;
* the launchers' per-launch banners are quiet (one launch per trial would bury the progress
  lines), and the trial no longer watches the sweeper's pid (meaningless on another node).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from sweeper import study_attrs
from sweeper.study_storage import is_journal, redact
from sweeper.sweeps.errors import SweepError

log = logging.getLogger("sweeper.sweeps")

LOGGERS = (
    "hydra_plugins.hydra_ray_launcher._core",
    "hydra_plugins.hydra_ray_launcher._launcher_util",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
)
ENV_PREFIXES = ("MLFLOW_", "SWEEPER_")
RAY_OBJECT_STORE = 78643200  # the Ray launcher's default for a cluster it starts itself

STORAGE_HINT = "use PostgreSQL: hydra.sweeper.storage=postgresql+psycopg://USER:PASSWORD@HOST/DB"


def job_environ() -> dict[str, str]:
    """What a job on a Ray worker sets first: this process's ``MLFLOW_*`` and ``SWEEPER_*``."""
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}


def remote_kind(launcher: Any) -> str | None:
    """``ray`` or ``submitit`` for a launcher whose trials may run on other machines."""
    module = type(launcher).__module__
    if module.startswith("hydra_plugins.hydra_ray_launcher"):
        return "ray"
    if module.startswith("hydra_plugins.hydra_submitit_launcher"):
        return "submitit"
    return None


def check(kind: str, launcher_name: str, storage_spec: str, hooks: Sequence[Any]) -> None:
    """SweepError (one line) unless every store the trials write is shared by machines."""
    if is_journal(storage_spec) or storage_spec.startswith(("sqlite:", "inmemory")):
        raise SweepError(
            f"hydra.sweeper.storage: {redact(storage_spec)} is a file on this machine, which "
            f"hydra/launcher={launcher_name}'s trials on other machines cannot share: "
            f"{STORAGE_HINT}"
        )
    for hook in hooks:
        problem = getattr(hook, "remote_problem", None)
        message = problem() if problem is not None else None
        if message:
            raise SweepError(f"{message} (hydra/launcher={launcher_name})")


def prepare(kind: str, launcher: Any, config: DictConfig, sweep_dir: Path, task: Any) -> None:
    """Before the slot threads start; see the module docstring."""
    with read_write(config), open_dict(config):
        config.hydra.sweep.dir = str(Path(sweep_dir).resolve())
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    task.watch = False
    if kind == "ray":
        task.environ = job_environ()
        _start_ray(launcher)


def _start_ray(launcher: Any) -> None:
    import ray

    cfg = launcher.ray_cfg
    with read_write(cfg), open_dict(cfg):
        init = cfg.init
        if init.get("address"):
            init.setdefault("object_store_memory", None)  # joining: the cluster's own
        else:
            init.setdefault("object_store_memory", RAY_OBJECT_STORE)
        if cfg.get("remote") is None:
            cfg.remote = {}
        cfg.remote.setdefault("max_retries", 0)
    if ray.is_initialized():
        return
    kwargs = {k: v for k, v in OmegaConf.to_container(init, resolve=True).items() if v is not None}
    kwargs.setdefault("logging_level", logging.WARNING)
    kwargs.setdefault("configure_logging", True)
    ray.init(**kwargs)
    log.info("ray: %s", ray.get_runtime_context().gcs_address)


# -- populations: one population, one Ray task / one submitit (SLURM) job ---------------------
class ListSource:
    """A population's trial source on the remote side: a fixed batch of jobs; the outcomes
    go back in the task's return (pruning reports went through the study's storage)."""

    def __init__(self, jobs: Sequence[Any]) -> None:
        self.todo = list(jobs)
        self.outcomes: dict[int, Any] = {}

    def claim(self) -> Any:
        return self.todo.pop(0) if self.todo else None

    def end(self, number: int, outcome: Any) -> None:
        self.outcomes[number] = outcome

    def stopped(self) -> bool:
        return False


def train_population(
    jobs: Sequence[Any], capacity: int, width: int, environ: dict[str, str]
) -> dict[int, Any]:
    """Runs where the launcher put it (a Ray worker, a SLURM node): the jobs as one
    population (``sweeper.sweeps.packing.Packed``); their outcomes by trial number."""
    from sweeper.sweeps.packing import Packed

    os.environ.update(environ)
    source = ListSource(jobs)
    Packed(source, capacity, width).run()
    for outcome in source.outcomes.values():  # which process trained it, as locally
        outcome.attrs[study_attrs.WORKER_PID] = os.getpid()
    return source.outcomes


def population_runner(kind: str, launcher: Any) -> Any:
    """``run(jobs, capacity, width) -> {number: Outcome}``: one population as one Ray task
    (the launcher's ``hydra.launcher.ray.remote`` options: by default one CPU, so size
    ``population`` K for one core) or one submitit job (the launcher's resources)."""
    environ = job_environ()
    if kind == "ray":
        import ray

        # the launcher's remote options, max_retries=0 included (set by prepare)
        options = OmegaConf.to_container(launcher.ray_cfg.remote, resolve=True) or {}
        task = ray.remote(**options)(train_population)

        def run_ray(jobs: Sequence[Any], capacity: int, width: int) -> dict[int, Any]:
            return ray.get(task.remote(list(jobs), capacity, width, environ))

        return run_ray
    executor = _submitit_executor(launcher)

    def run_submitit(jobs: Sequence[Any], capacity: int, width: int) -> dict[int, Any]:
        # no secrets in the job's pickle on disk: submitit's jobs inherit the environment
        return executor.submit(train_population, list(jobs), capacity, width, {}).result()

    return run_submitit


def _submitit_executor(launcher: Any) -> Any:
    """The executor hydra-submitit-launcher's ``launch`` builds, from the same params."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params = dict(launcher.params)
    cluster = launcher._EXECUTOR  # "local" or "slurm"
    init = {"folder": params.pop("submitit_folder")}
    if "max_num_timeout" in params:
        init[f"{cluster}_max_num_timeout"] = params.pop("max_num_timeout")
    executor = submitit.AutoExecutor(cluster=cluster, **init)
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(
        **{k if k in base else f"{cluster}_{k}": v for k, v in params.items()}
    )
    return executor
