"""``sweeper retest``: re-train a finished study's best configs on unseen test seeds.

What the Optuna sweeper does at the end of a sweep (``hydra.sweeper.retest``), as a command
on a study that is already there: the best ``top`` complete trials (``retest.top_trials``),
each re-trained on ``seeds`` test seeds (``replicate_seeds(sweep_seed, seeds, "test")``,
disjoint from the tuning seeds), one plain ``python -m sweeper.train`` run per (config, test
seed), ``jobs`` at a time, each in its own process group under
``<dir>/test/trial-<n>/seed_<s>/`` (its output in ``seed_<s>.log`` beside it).

Each run gets the trial's semantic config (its recorded overrides, expanded against the
default config by :func:`sweeper.analysis.expand_overrides`, so that a ``+sweep=...`` override
never starts a sweep; checked by config hash), the trial's plot/model/tracking settings, the
test seed, ``trial.phase=test`` and ``trial.test_of=<n>`` (MLflow tags ``phase=test`` and
``test_of_trial=<n>``), ``trial.study_name=<study>`` and, when the tracking store holds the
study's parent run (tags ``sweeper.role=parent`` and ``study_name``), ``trial.parent_run_id``:
the test runs nest under it; without one they are top-level runs with the same tags.

The outcome goes where the sweeper's own re-test puts it: ``retest.summarize`` (the study's
user attr ``sweeper:retest``, which ``sweeper report`` shows), ``analysis.retest_lines`` and
the figure ``figures.tuning_vs_test`` in ``<dir>/figures/tuning_vs_test.png``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper import analysis, study_attrs
from sweeper.messages import one_line

#: Non-semantic settings of the trial's config that its test runs keep (the semantic ones come
#: from expand_overrides; train.progress is always off: the runs' output goes to a log file).
#: Each with its default (``sweeper.config``): only a changed one becomes an override.
CARRIED = {
    "train.plot": True,
    "train.save_model": True,
    "tracking.enabled": True,
    "tracking.experiment": None,
    "tracking.tracking_uri": None,  # masked as configs hold it; --tracking-uri replaces it
}
#: Seconds a run gets to end its MLflow run after SIGINT, then after SIGTERM, before SIGKILL.
STOP_GRACE = (10.0, 5.0)
POLL_S = 0.1


class RetestError(RuntimeError):
    """A one-line reason why nothing can be re-tested (nothing was started or written)."""


@dataclass
class Job:
    trial: int
    seed: int
    run_dir: Path
    overrides: list[str]
    returncode: int | None = None
    value: float | None = None
    error: str | None = None

    @property
    def log(self) -> Path:
        return self.run_dir.with_name(self.run_dir.name + ".log")

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "sweeper.train", *self.overrides]


@dataclass
class Plan:
    study: Any
    trials: list
    seeds: list[int]
    out_dir: Path
    aggregate: str
    parent_run_id: str | None
    tracking_uri: str | None  # resolved; None when tracking is off
    jobs: list[Job] = field(default_factory=list)


# -- planning -------------------------------------------------------------------------------
def trial_overrides(study, trial) -> tuple[list[str], Any]:
    """(overrides, composed config) of ``trial`` for a plain run: its semantic config as
    :func:`analysis.expand_overrides` gives it, plus the :data:`CARRIED` settings."""
    from sweeper.config import compose_config
    from sweeper.overrides import format_value

    recorded = trial.user_attrs.get(analysis.OVERRIDES_ATTR)
    if recorded:
        recorded = [o for o in recorded if not o.startswith(("trial.", "hydra."))]
    else:  # an older trial: the study's fixed overrides and the sampled params
        fixed = list(study.user_attrs.get(analysis.FIXED_ATTR, []))
        recorded = fixed + [f"{k}={format_value(v)}" for k, v in trial.params.items()]
    try:
        expanded = analysis.expand_overrides(recorded)
        cfg = compose_config(recorded, mask_secrets=True)
    except Exception as err:  # noqa: BLE001 - composition failed here: one line
        from sweeper.secrets import mask_text

        raise RetestError(
            f"trial {trial.number}: its overrides do not compose here ({one_line(mask_text(err))})"
        ) from None
    from omegaconf import OmegaConf

    carried = []
    for key, default in CARRIED.items():
        value = OmegaConf.select(cfg, key, default=default)
        if value != default:
            carried.append(f"{key}={format_value(value)}")
    return expanded + carried, cfg


def sweep_seed(study, cfg) -> int:
    """The seed the study's tuning seeds came from (the sweeper's rule when it is missing:
    the config's ``seed``)."""
    from omegaconf import OmegaConf

    recorded = study.user_attrs.get(study_attrs.REPLICATE_SEEDS) or {}
    if isinstance(recorded, dict) and recorded.get("sweep_seed") is not None:
        return int(recorded["sweep_seed"])
    return int(OmegaConf.select(cfg, "seed", default=0) or 0)


def default_out_dir(study_name: str, best) -> Path:
    """The best trial's sweep directory when it is still there, else
    ``outputs/retest/<study>``."""
    from sweeper import tracking

    recorded = best.user_attrs.get(analysis.OUTPUT_DIR_ATTR)
    if recorded:
        sweep_dir = Path(recorded).parent
        if sweep_dir.is_dir():
            return sweep_dir
    return tracking.outputs_dir() / "retest" / study_name


def plan(
    study,
    top: int,
    n_seeds: int,
    *,
    tracking_uri: str | None = None,
    out_dir: Path | None = None,
) -> Plan:
    """Everything to run, checked: raises :class:`RetestError` before anything is written."""
    from omegaconf import OmegaConf

    from sweeper import secrets, tracking
    from sweeper.overrides import format_value
    from sweeper.seeding import replicate_seeds
    from sweeper.sweeps import retest

    if len(study.directions) != 1:
        raise RetestError(f"study {study.study_name} has several objectives: nothing to rank")
    trials = retest.top_trials(study, top)
    if not trials:
        raise RetestError(f"study {study.study_name} has no complete trial: nothing to re-test")
    configs = {t.number: trial_overrides(study, t) for t in trials}
    best_cfg = configs[trials[0].number][1]
    seeds = replicate_seeds(sweep_seed(study, best_cfg), n_seeds, "test")
    aggregate = str(trials[0].user_attrs.get(analysis.AGGREGATE_ATTR) or "iqm")

    tracked = bool(OmegaConf.select(best_cfg, "tracking.enabled", default=True))
    configured = tracking_uri or OmegaConf.select(best_cfg, "tracking.tracking_uri", default=None)
    uri = parent_run_id = None
    if tracked:
        key = "--tracking-uri" if tracking_uri else "tracking.tracking_uri"
        if not configured and os.environ.get("MLFLOW_TRACKING_URI"):
            key = "MLFLOW_TRACKING_URI"
        try:
            uri = tracking.resolve_tracking_uri(configured)
            tracking.check_tracking_uri(uri, key=key)
            parent_run_id = tracking.find_parent_run(study.study_name, uri)
        except (tracking.TrackingUriError, ValueError) as err:
            raise RetestError(one_line(err)) from None
        except Exception as err:  # noqa: BLE001 - the store failed: one line
            raise RetestError(
                f"tracking store {secrets.mask(uri)}: {' '.join(secrets.mask_text(err).split())}"
            ) from None

    out = Path(out_dir) if out_dir is not None else default_out_dir(study.study_name, trials[0])
    out = out.resolve()
    extra = [f"trial.study_name={format_value(study.study_name)}"]
    if parent_run_id:
        extra.append(f"trial.parent_run_id={format_value(parent_run_id)}")
    if tracked and tracking_uri:
        extra.append(f"tracking.tracking_uri={format_value(secrets.keep(tracking_uri))}")
    result = Plan(study, trials, seeds, out, aggregate, parent_run_id, uri)
    for t in trials:
        overrides = configs[t.number][0]
        if tracking_uri:  # --tracking-uri wins over the trial's own
            overrides = [o for o in overrides if not o.startswith("tracking.tracking_uri=")]
        for s in seeds:
            run_dir = retest.run_dir(out, t.number, s)
            job = retest.job_overrides(
                overrides,
                t.number,
                s,
                [
                    *extra,
                    f"hydra.run.dir={format_value(str(run_dir))}",
                    "train.progress=false",
                ],
            )
            result.jobs.append(Job(t.number, s, run_dir, job))
    return result


# -- running --------------------------------------------------------------------------------
def run_jobs(
    jobs: Sequence[Job],
    n_parallel: int,
    on_done: Callable[[Job], None] | None = None,
    env: dict[str, str] | None = None,
) -> None:
    """Run ``jobs`` as subprocesses, ``n_parallel`` at a time, each in its own process group
    with its output in ``job.log``; sets each job's ``returncode``. On KeyboardInterrupt (or
    any exception) the running ones are stopped (:func:`stop`) and it propagates."""
    pending = list(jobs)
    running: dict[subprocess.Popen, Job] = {}
    try:
        while pending or running:
            while pending and len(running) < max(1, n_parallel):
                job = pending.pop(0)
                job.log.parent.mkdir(parents=True, exist_ok=True)
                with open(job.log, "wb") as log:
                    proc = subprocess.Popen(
                        job.argv(),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                        start_new_session=True,  # its own group: stopped as a whole
                    )
                running[proc] = job
            time.sleep(POLL_S)
            for proc in [p for p in running if p.poll() is not None]:
                job = running.pop(proc)
                job.returncode = proc.returncode
                if on_done is not None:
                    on_done(job)
    except BaseException:
        stop(list(running))
        for proc, job in running.items():
            job.returncode = proc.returncode
        raise


def stop(procs: Sequence[subprocess.Popen]) -> None:
    """Stop runs and everything they started: SIGINT to each group (the training process ends
    its MLflow run KILLED; its logging child ignores SIGINT to record that), then SIGTERM to
    the training process (its logging child closes the run when its input ends), then SIGKILL
    to each group."""
    alive = list(procs)
    for sig, grace in zip((signal.SIGINT, signal.SIGTERM), STOP_GRACE, strict=True):
        for p in alive:
            try:
                if sig == signal.SIGINT:
                    os.killpg(p.pid, sig)
                else:
                    p.send_signal(sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if p.poll() is None]
            if alive:
                time.sleep(POLL_S)
    for p in procs:  # whatever is left in the groups (the leaders may be gone already)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


# -- results --------------------------------------------------------------------------------
def last_line(path: Path) -> str:
    """The last non-empty line of a run's log (its one-line error, usually)."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    return lines[-1] if lines else ""


def read_results(p: Plan) -> None:
    """Each job's objective (``retest.read_objective``) or why there is none."""
    from sweeper.sweeps import retest

    for job in p.jobs:
        job.value = retest.read_objective(job.run_dir) if job.returncode == 0 else None
        if job.value is not None:
            job.error = None
        elif job.returncode == 0:
            job.error = "finished without a finite objective in result.json"
        elif job.returncode is None:
            job.error = "not run"
        else:
            code = (
                f"killed by {signal.Signals(-job.returncode).name}"
                if job.returncode < 0
                else f"exit code {job.returncode}"
            )
            tail = last_line(job.log)
            job.error = f"{code}: {tail}" if tail else code


def finish(p: Plan) -> tuple[dict[str, Any], Path]:
    """Store the outcome in the study (``sweeper:retest``) and draw tuning vs test values;
    returns (the summary, the figure's path)."""
    from sweeper import figures
    from sweeper.sweeps import retest

    values: dict[int, list[float | None]] = {}
    for job in p.jobs:
        values.setdefault(job.trial, []).append(job.value)
    summary = retest.summarize(p.study, p.trials, p.seeds, values, p.aggregate)
    by_number = {t.number: t for t in p.trials}
    rows = [
        {
            "label": f"trial {r['number']}",
            "tuning": analysis.replicates(by_number[r["number"]]),
            "test": [v for v in r["test_per_seed"] if v is not None],
        }
        for r in summary["configs"]
    ]
    figure = figures.tuning_vs_test(
        rows,
        p.out_dir / "figures" / "tuning_vs_test.png",
        title="best configs: tuning seeds vs unseen test seeds",
        how=p.aggregate,
    )
    return summary, figure
