"""Every MLflow run of a study ends: FINISHED, FAILED or KILLED, with an ``outcome`` tag that
says why, and Optuna is the truth about a trial.

Why the sweeper closes runs that other processes opened: a run is normally ended by its own
tracker before the job returns, but not when its process dies. A packed population logs its
runs in the worker process itself (a local store: one logging child per run would be K x
(seeds + 1) processes), so a worker killed by ``kill -9`` or the OOM killer leaves its trials'
and seeds' runs RUNNING; a Ctrl-C stops workers mid-run; a killed sweeper leaves every run it
had open. Optuna's state is durable (a committed trial survives), so the runs are made to agree
with it: after each trial (its runs and its seeds' runs), and for the whole study at the end of
a sweep and at the start of the next run of the same command.

A RUNNING run is closed when (a) its trial has finished in Optuna (a trial that is RUNNING in
a live process is left alone: another sweeper of the same study may be training it), or (b)
the sweeper process that made it (tag ``sweeper.owner``, this host only) is gone, or (c) it is
this process's own and this process is ending. The outcome tag: ``finished``, ``failed``,
``pruned``, or why a trial did not count (``interrupted``, ``stale``, ``worker died``,
``store full``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from sweeper import study_attrs
from sweeper.processes import owner, owner_alive
from sweeper.tracking import store
from sweeper.tracking.limits import MAX_KEY, MAX_PARAM, MAX_TAG

# What a finished Optuna trial's MLflow run must say.
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
RUN_OUTCOME = {"COMPLETE": "finished", "PRUNED": "pruned", "FAIL": "failed"}
OWNER_TAG = "sweeper.owner"  # the sweeper process a run belongs to (host, pid, start)
OWNER_ENV = "SWEEPER_OWNER"  # how its trial processes learn it (they inherit the environment)


def why(reason: str | None) -> str | None:
    """The ``outcome`` for a trial that did not count or a run that was cut short, from the
    reason the sweeper recorded (``sweeper:uncounted`` / ``sweeper:error``)."""
    text = (reason or "").lower()
    if "no space left" in text or "disk full" in text or "enospc" in text:
        return "store full"
    if text.startswith("worker died") or "workerdied" in text:
        return "worker died"
    if text.startswith("interrupted"):
        return "interrupted"
    if text.startswith("stale"):
        return "stale"
    return None


def trial_end(trial) -> tuple[str, dict[str, str]] | None:
    """``(status, tags)`` that a finished trial's runs must have; None while it runs."""
    state = trial.state.name
    if state not in RUN_STATUS:
        return None
    tags = {"outcome": RUN_OUTCOME[state]}
    if state == "FAIL":
        uncounted = trial.user_attrs.get(study_attrs.UNCOUNTED)
        error = trial.user_attrs.get(study_attrs.ERROR)
        cause = why(uncounted) or why(error)
        if cause:
            tags["outcome"] = cause
        if error or uncounted:
            tags["error"] = str(error or uncounted)[:MAX_TAG]
        if uncounted and cause in ("interrupted", "stale"):
            return "KILLED", tags
    return RUN_STATUS[state], tags


def _counts(trial) -> bool:
    from sweeper.analysis import counts

    return counts(trial)


def owner_tag() -> str:
    """This process as a run's owner, for its trial processes' environment."""
    return json.dumps(owner(), sort_keys=True)


def owner_gone(tag: str | None) -> bool:
    """Whether the run's sweeper process is known to be gone (on this host)."""
    if not tag:
        return False
    try:
        who = json.loads(tag)
    except ValueError:
        return False
    return owner_alive(who) is False


def _end(client, run, status: str, tags: dict[str, str]) -> None:
    store.retry(
        client.log_batch,
        run.info.run_id,
        tags=[_tag(k, v) for k, v in tags.items()],
    )
    store.retry(client.set_terminated, run.info.run_id, status)


def _tag(key: str, value: str):
    from mlflow.entities import RunTag

    return RunTag(key, str(value)[:MAX_TAG])


def _runs_of(client, exp_id: str, parent_run_id: str, study_name: str, number: int) -> list:
    """The runs of trial ``number`` (its own and its seeds'), deleted ones too."""
    from mlflow.entities import ViewType

    runs = store.retry(
        client.search_runs,
        [exp_id],
        f"tags.trial_number = '{number}'",
        run_view_type=ViewType.ALL,  # a deleted run (a config error) is not to be replaced
        max_results=1000,
    )
    return [
        r
        for r in runs
        if r.data.tags.get("study_name") == study_name
        or r.data.tags.get("mlflow.parentRunId") == parent_run_id
    ]


def close_trial_runs(
    client, parent_run_id: str, study_name: str, trials: Iterable, make_missing: bool = True
) -> int:
    """Make the MLflow runs of finished trials (their own and their seeds') agree with
    Optuna; returns how many changed. A run still RUNNING (or FINISHED for a trial that did
    not complete: a kill after the run was logged but before the job returned) takes the
    trial's status and outcome; with ``make_missing`` a failed trial that counts and has no
    run at all (its process died before its run was made) gets one."""
    from mlflow.entities import Param

    exp_id = store.retry(client.get_run, parent_run_id).info.experiment_id
    changed = 0
    for trial in trials:
        end = trial_end(trial)
        if end is None:
            continue  # RUNNING or WAITING: not finished
        status, tags = end
        runs = _runs_of(client, exp_id, parent_run_id, study_name, trial.number)
        # made up only for a trial that ran and failed: not for one that never started
        # (stale before its claim, surplus, interrupted: ``sweeper:uncounted``)
        if not runs and make_missing and status == "FAILED" and _counts(trial):
            run = store.retry(
                client.create_run,
                exp_id,
                tags={
                    "mlflow.parentRunId": parent_run_id,
                    "mlflow.runName": f"trial-{trial.number}",
                    "study_name": study_name,
                    "trial_number": str(trial.number),
                    **tags,
                },
            )
            params = [Param(k[:MAX_KEY], str(v)[:MAX_PARAM]) for k, v in trial.params.items()]
            if params:
                store.retry(client.log_batch, run.info.run_id, params=params[:100])
            store.retry(client.set_terminated, run.info.run_id, status)
            changed += 1
            continue
        for run in runs:
            if run.info.lifecycle_stage == "deleted":
                continue
            current = run.info.status
            if current == status or (status != "FINISHED" and current in ("FAILED", "KILLED")):
                continue
            if current == "RUNNING" or (current == "FINISHED" and status != "FINISHED"):
                _end(client, run, status, tags)
                changed += 1
    return changed


def close_study_runs(
    client,
    parent_run_id: str,
    study,
    *,
    ending: bool,
    outcome: str = "interrupted",
    study_name: str | None = None,
) -> int:
    """Close every RUNNING run of ``study`` that nobody will end (see the module's rule);
    ``ending``: this process ends now, so its own runs are closed too (``outcome``, KILLED),
    and the failed trials that have no run get one. ``study`` may be None (its storage
    failed: ``study_name`` names it): only runs whose owner is gone or this process are
    closed then. Returns how many runs changed."""
    exp_id = store.retry(client.get_run, parent_run_id).info.experiment_id
    study_name = study.study_name if study is not None else str(study_name)
    name = study_name.replace("'", "\\'")
    running = store.retry(
        client.search_runs,
        [exp_id],
        f"tags.study_name = '{name}' and attributes.status = 'RUNNING'",
        max_results=5000,
    )
    running += [
        r
        for r in store.retry(
            client.search_runs,
            [exp_id],
            f"tags.`mlflow.parentRunId` = '{parent_run_id}' and attributes.status = 'RUNNING'",
            max_results=5000,
        )
        if "study_name" not in r.data.tags
    ]
    trials = {t.number: t for t in study.get_trials(deepcopy=False)} if study is not None else {}
    me = os.environ.get(OWNER_ENV) if ending else None
    changed = 0
    numbers: set[int] = set()
    for run in running:
        tags = run.data.tags
        if run.info.run_id == parent_run_id or tags.get(store.ROLE_TAG) == "parent":
            continue
        number = tags.get("trial_number")
        trial = trials.get(int(number)) if number and number.isdigit() else None
        if trial is not None and trial_end(trial) is not None:
            numbers.add(trial.number)  # its trial finished: Optuna says how it ended
            continue
        owner = tags.get(OWNER_TAG)
        if owner_gone(owner):
            _end(client, run, "KILLED", {"outcome": "stale", "error": "its sweeper is gone"})
            changed += 1
        elif me is not None and owner == me:
            _end(client, run, "KILLED", {"outcome": outcome})
            changed += 1
    changed += close_trial_runs(
        client, parent_run_id, study_name, [trials[n] for n in sorted(numbers)]
    )
    if ending:  # failed trials whose process died before it made their run
        failed = [t for t in trials.values() if t.state.name == "FAIL" and _counts(t)]
        if failed:
            have = _numbers_with_runs(client, exp_id, parent_run_id)
            missing = [t for t in failed if str(t.number) not in have]
            changed += close_trial_runs(client, parent_run_id, study_name, missing)
    return changed


def _numbers_with_runs(client, exp_id: str, parent_run_id: str) -> set[str]:
    from mlflow.entities import ViewType

    runs: list[Any] = []
    token = None
    while True:
        page = store.retry(
            client.search_runs,
            [exp_id],
            f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
            run_view_type=ViewType.ALL,
            max_results=1000,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return {r.data.tags.get("trial_number") for r in runs}
