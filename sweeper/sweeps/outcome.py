"""A trial's job and how it ended: the task function guarded against ``sys.exit``, and the
Optuna outcome (state, value, error, user attrs) of a job's return.

Everything the sweeper keeps of a job comes back in its ``JobReturn`` (a :class:`JobResult`
holding the objective and what the job's ``result.json`` said, read in the job's process:
the job may have run on another machine); the same :class:`Outcome` is built by packed populations
(``sweeper.sweeps.packing``) and told by the ledger (``sweeper.sweeps.ledger``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from sweeper import study_attrs
from sweeper.sweeps.errors import TrialExit, error_text
from sweeper.sweeps.workers import process_start, watch_parent

OUTPUT_DIR = study_attrs.OUTPUT_DIR


@dataclass
class JobResult:
    """What a trial's job returns to the sweeper, wherever it ran: the objective and what the
    sweeper keeps of the job's ``result.json`` (:func:`result_attrs`), read where the file
    was written. A job on a Ray worker or a SLURM node has its files on that machine; the
    sweeper reads nothing back from them."""

    value: Any
    attrs: dict[str, Any] = field(default_factory=dict)


ATTRS = "sweeper_attrs"  # a failed job's exception carries its result attrs here


class GuardedTask:
    """Wraps the task function so that ``SystemExit`` inside a job becomes an ordinary
    exception: Hydra's ``run_job`` only catches ``Exception``, so a ``SystemExit`` would end the
    whole sweep under the basic launcher (and abort joblib's executor).

    It returns a :class:`JobResult` (a failed job's exception carries the same attrs in
    :data:`ATTRS`), so that everything the sweeper needs travels back in the job's return.

    In a worker process on this machine (joblib's, the isolated launcher's, submitit's local
    jobs) it also ties the worker's life to the sweeper's
    (:func:`~sweeper.sweeps.workers.watch_parent`): no orphan trains on after a kill -9 of the
    sweeper. Not on a remote launcher's workers (``watch=False``): the sweeper's pid means
    nothing on another machine; Ray ends a dead driver's tasks itself. ``environ``: variables
    the job sets first (a Ray worker does not inherit the sweeper's environment: the masked
    URLs' secrets, ``MLFLOW_*``)."""

    def __init__(self, task_function: TaskFunction) -> None:
        self.task_function = task_function
        self.sweeper_pid = os.getpid()
        self.sweeper_start = process_start(self.sweeper_pid)
        self.watch = True
        self.environ: dict[str, str] = {}

    def __call__(self, cfg: DictConfig) -> Any:
        os.environ.update(self.environ)
        if self.watch:
            watch_parent(self.sweeper_pid, self.sweeper_start)
        try:
            value = self.task_function(cfg)
        except SystemExit as exc:
            cause = exc.__cause__ or exc.__context__
            detail = f": {type(cause).__name__}: {cause}" if cause is not None else ""
            err = TrialExit(f"the job exited with code {exc.code}{detail}")
            setattr(err, ATTRS, _job_attrs())
            raise err from None
        except Exception as exc:
            setattr(exc, ATTRS, _job_attrs())
            raise
        return JobResult(value, _job_attrs())


def _job_attrs() -> dict[str, Any]:
    """:func:`result_attrs` of this job's output dir (Hydra's), in the job's process."""
    try:
        from hydra.core.hydra_config import HydraConfig

        out_dir = HydraConfig.get().runtime.output_dir
    except Exception:  # noqa: BLE001 - not under Hydra (a unit test): nothing to keep
        return {}
    return result_attrs(Path(out_dir)) if out_dir else {}


def result_attrs(out_dir: Path) -> dict[str, Any]:
    """What a trial keeps from its job's ``result.json`` (as user attrs): a replicate group's
    per-seed objectives and metrics with their aggregates and CI (``sweeper.replicates``),
    or a single run's metrics (e.g. ``mean_max_q``)."""
    try:
        result = json.loads((Path(out_dir) / "result.json").read_text())
    except (OSError, ValueError):
        return {}
    if study_attrs.SEEDS in result:
        skip = ("objective", "objective_name", "status", "error", "runs")
        return {k: v for k, v in result.items() if k not in skip and v is not None}
    return {k: v for k, v in (result.get("metrics") or {}).items() if v is not None}


@dataclass
class Outcome:
    state: TrialState
    value: float | None = None
    error: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


def outcome_of(ret: JobReturn | BaseException) -> Outcome:
    """The Optuna outcome of a job: COMPLETE with a finite value, PRUNED, or FAIL with an error.

    Works on JobReturns from the sweeper's process, from worker processes and from other
    machines (whose exception came back pickled): it reads the job's return only, never its
    files (:class:`JobResult`).
    """
    if isinstance(ret, BaseException):
        return Outcome(TrialState.FAIL, error=error_text(ret))
    attrs: dict[str, Any] = {}
    if ret.hydra_cfg is not None:
        out_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir")
        if out_dir:
            attrs[OUTPUT_DIR] = str(out_dir)
    value = ret._return_value
    if isinstance(value, JobResult):
        attrs.update(value.attrs)
        value = value.value
    elif isinstance(value, BaseException):
        attrs.update(getattr(value, ATTRS, None) or {})
    if ret.status == JobStatus.COMPLETED:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return Outcome(
                TrialState.FAIL, error=f"the objective is not a number: {value!r}", attrs=attrs
            )
        if not math.isfinite(number):
            return Outcome(TrialState.FAIL, error=f"the objective is {number}", attrs=attrs)
        return Outcome(TrialState.COMPLETE, value=number, attrs=attrs)
    exc = value
    if isinstance(exc, optuna.TrialPruned):
        return Outcome(TrialState.PRUNED, attrs=attrs)
    if isinstance(exc, BaseException):
        return Outcome(TrialState.FAIL, error=error_text(exc), attrs=attrs)
    return Outcome(TrialState.FAIL, error=f"job status {ret.status}: {exc!r}", attrs=attrs)
