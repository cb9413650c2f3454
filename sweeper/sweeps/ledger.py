"""The trial ledger of one sweep process: which trials it asked and runs, how each ended, which
ones do not count, and when it gives up.

Counting (resume, several workers): the study is done when the trials that *count* reach
``n_trials``. Every trial counts except queued (WAITING) ones and those marked
``sweeper:uncounted`` (RUNNING trials of a killed process found stale, surplus trials from a race
between workers, interrupted trials); with the grid sampler the params of such a trial are
queued again (``enqueue_trial``), since Optuna's grid sampler takes every finished trial's point
as visited. Staleness is :mod:`sweeper.sweeps.liveness`'s; this ledger refreshes the heartbeat
of the trials it runs.

Thread safety: slots (threads) and packed populations call :meth:`TrialLedger.next_trial` and
:meth:`TrialLedger.tell` concurrently; the ask, the stale check and the count are one critical
section, the hooks (which may call a slow MLflow server) run outside it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from sweeper import study_attrs
from sweeper.analysis import UNCOUNTED, counts, n_counted, tally
from sweeper.sweeps import liveness
from sweeper.sweeps.outcome import Outcome
from sweeper.sweeps.search_space import param_overrides

if TYPE_CHECKING:
    from sweeper.sweeps.plan import Plan

log = logging.getLogger("sweeper.sweeps")

ERROR = study_attrs.ERROR
OVERRIDES = study_attrs.OVERRIDES
REQUEUED = study_attrs.REQUEUED
RETRIES = study_attrs.RETRIES
# Attempts of one point whose worker process died (kill -9, the OOM killer, preemption) that
# are retried before the trial fails and counts (Optuna's RetryFailedTrialCallback default 2+1).
MAX_RETRIES = 2


class _Surplus(Exception):
    pass


class TrialLedger:
    """Ask, claim, tell and fail the trials of ``plan`` for this process."""

    def __init__(
        self,
        plan: Plan,
        *,
        max_failures: int | None = None,
        grace_period: float = 60.0,
        heartbeat_interval: float = 5.0,
    ) -> None:
        self.plan = plan
        self.max_failures = max_failures
        self.grace_period = float(grace_period)
        self.heartbeat_interval = float(heartbeat_interval)
        self.stop = threading.Event()  # set: no slot asks another trial
        self.failures = 0  # trials failed in this run
        self.last_error: str | None = None
        self._lock = threading.RLock()
        self._running: dict[int, optuna.trial.Trial] = {}  # number -> trial this process runs
        self._hooks_due: list[int] = []  # trials failed under the lock, hooks not yet told

    # -- what a caller reads --------------------------------------------------------------------
    def gave_up(self) -> bool:
        """Whether ``max_failures`` trials failed in this run (the sweep stops)."""
        return self.max_failures is not None and self.failures >= self.max_failures

    def stop_message(self) -> str | None:
        if not self.gave_up():
            return None
        return (
            f"stopped after {self.failures} failed trial(s) in this run "
            f"(hydra.sweeper.max_failures={self.max_failures}); last error: {self.last_error}"
        )

    def done_before(self) -> int:
        """The trials that count already (a resumed study)."""
        return n_counted(tally(self.plan.study.get_trials(deepcopy=False)))

    # -- ask and claim ------------------------------------------------------------------------
    def next_trial(self) -> tuple[optuna.trial.Trial, list[str], list[str]] | None:
        """Ask and claim the next trial: ``(trial, job overrides, sampled overrides)``, or
        None when the study has its trials (or this run stops)."""
        plan, study = self.plan, self.plan.study
        while True:
            with self._lock:
                if self.stop.is_set():
                    return None
                self.fail_stale()
                trials = study.get_trials(deepcopy=False)
                if n_counted(tally(trials)) < plan.n_trials:
                    trial = study.ask(fixed_distributions=plan.space.distributions)
                    self._running[trial.number] = trial
                    break
                if not self._unclaimed(trials):
                    return None
            # a trial that counts but was never claimed (its process failed between ask and
            # claim: a full disk) is failed as stale after liveness.CLAIM_GRACE, and its
            # point asked again: wait for that rather than end short of n_trials
            self.run_due_hooks()
            if self.stop.wait(1.0):
                return None
        self.run_due_hooks()
        try:
            overrides, shown = self._claim(trial)
        except _Surplus:
            self.run_due_hooks()
            return None
        except Exception:  # the storage failed right after ask: no trial stays RUNNING
            with contextlib.suppress(Exception):
                self.finish_uncounted(
                    trial.number, "interrupted: storage error", dict(trial.params)
                )
            raise
        return trial, overrides, shown

    def _unclaimed(self, trials: list) -> list[int]:
        """RUNNING trials nobody claimed (no owner) that this process does not run."""
        return [
            t.number
            for t in trials
            if t.state == TrialState.RUNNING
            and t.number not in self._running
            and not t.user_attrs.get(liveness.OWNER)
        ]

    def _claim(self, trial: optuna.trial.Trial) -> tuple[list[str], list[str]]:
        """Mark the new trial as ours and check it is not one too many (another worker may
        have asked at the same moment); returns the job's overrides and the sampled ones."""
        plan = self.plan
        trial.set_user_attr(liveness.OWNER, liveness.owner())
        trial.set_user_attr(liveness.HEARTBEAT, time.time())
        sampled = param_overrides(plan.space.distributions, trial.params)
        overrides = list(plan.space.fixed) + sampled
        trial.set_user_attr(OVERRIDES, overrides)
        counted = [t.number for t in plan.study.get_trials(deepcopy=False) if counts(t)]
        if trial.number in counted and sorted(counted).index(trial.number) >= plan.n_trials:
            self.finish_uncounted(trial.number, "surplus", dict(trial.params))
            raise _Surplus
        job = overrides + list(plan.trial_overrides) + [f"trial.number={trial.number}"]
        return job, sampled

    # -- tell -----------------------------------------------------------------------------------
    def tell(self, trial: optuna.trial.Trial, outcome: Outcome) -> None:
        for key, value in outcome.attrs.items():
            safe(trial.set_user_attr, key, value)
        if outcome.error:
            safe(trial.set_user_attr, ERROR, outcome.error)
        try:
            if outcome.state == TrialState.COMPLETE:
                self.plan.study.tell(trial, outcome.value, skip_if_finished=True)
            else:
                self.plan.study.tell(trial, state=outcome.state, skip_if_finished=True)
        finally:
            with self._lock:
                self._running.pop(trial.number, None)
        self.trial_ended(trial.number)
        if outcome.state == TrialState.FAIL:
            log.warning("trial %d failed: %s", trial.number, outcome.error)
            with self._lock:
                self.failures += 1
                self.last_error = outcome.error
                if self.gave_up():
                    self.stop.set()

    def retry(self, trial: optuna.trial.Trial, error: str) -> Outcome | None:
        """Trial ``trial`` did not fail of itself: its worker process died (kill -9, the OOM
        killer) while it trained, maybe for another trial. As Optuna's
        ``RetryFailedTrialCallback``: the attempt stays FAIL with the reason and does not
        count, its params are queued again (any sampler) with the attempt's number; after
        :data:`MAX_RETRIES` such deaths of one point the trial fails and counts."""
        attempts = int(trial.user_attrs.get(RETRIES, 0) or 0)
        if attempts >= MAX_RETRIES:
            failed = Outcome(TrialState.FAIL, error=f"{error} (retried {attempts} times before)")
            self.tell(trial, failed)
            return failed
        log.warning("trial %d: %s: its params are queued again", trial.number, error)
        self.finish_uncounted(
            trial.number, f"worker died: {error}", dict(trial.params), retries=attempts + 1
        )
        return None

    def finish_uncounted(
        self,
        number: int,
        reason: str,
        params: dict[str, Any] | None = None,
        retries: int | None = None,
    ) -> None:
        """Fail a stale, surplus or interrupted trial so that it does not count. Its point was
        never evaluated: for the grid sampler (which takes every finished trial's point as
        visited) the params are queued again, so the grid loses no point; with ``retries``
        (its worker died: :meth:`retry`) for every sampler."""
        plan = self.plan
        trial_id = plan.storage.get_trial_id_from_study_id_trial_number(plan.study_id, number)
        safe(plan.storage.set_trial_user_attr, trial_id, UNCOUNTED, reason)
        safe(plan.storage.set_trial_user_attr, trial_id, ERROR, reason)
        failed = False
        try:
            if plan.storage.get_trial(trial_id).state == TrialState.RUNNING:
                plan.study.tell(number, state=TrialState.FAIL)  # raises if finished meanwhile
                failed = True
        except Exception as err:  # finished meanwhile by its owner or another worker
            log.debug("could not fail trial %d: %s", number, err)
        with self._lock:
            self._running.pop(number, None)
            if failed:  # the hooks run outside the lock (they may call a slow server)
                self._hooks_due.append(number)
        if failed and (retries is not None or plan.sampler_name == "grid"):
            self._requeue(number, params or {}, retries)

    def _requeue(self, number: int, params: dict[str, Any], retries: int | None = None) -> None:
        """Queue ``params`` again unless a counted trial has them or they are queued already.

        A trial that failed before all its params were written (a full disk, a kill between
        two writes) has only some: the grid sampler's point (``grid_id``) completes them; the
        grid sampler refuses an incomplete point, and for other samplers a partial point is
        not queued (the sampler proposes anew)."""
        names = set(self.plan.space.distributions)
        if set(params) != names:
            params = self._grid_point(number) or {}
            if set(params) != names:
                return
        for t in self.plan.study.get_trials(deepcopy=False):
            if t.state == TrialState.WAITING and t.user_attrs.get(REQUEUED) == number:
                return
            if t.number != number and counts(t) and t.params == params:
                return
        attrs: dict[str, Any] = {REQUEUED: number}
        if retries is not None:
            attrs[RETRIES] = retries
        self.plan.study.enqueue_trial(params, user_attrs=attrs)
        log.info("trial %d's params queued again: %s", number, params)

    def _grid_point(self, number: int) -> dict[str, Any] | None:
        """Trial ``number``'s whole point: the params it was queued with (``fixed_params``),
        or the grid sampler's (from its ``grid_id``); None if neither is known."""
        sampler = self.plan.study.sampler
        grids, names = getattr(sampler, "_all_grids", None), getattr(sampler, "_param_names", None)
        try:
            trial = self.plan.study.get_trials(deepcopy=False)[number]
            queued = trial.system_attrs.get("fixed_params")
            if isinstance(queued, dict):
                return dict(queued)
            if not grids or not names:
                return None
            grid_id = trial.system_attrs.get("grid_id")
            return None if grid_id is None else dict(zip(names, grids[int(grid_id)], strict=True))
        except (IndexError, KeyError, TypeError, ValueError):
            return None

    def fail_stale(self) -> None:
        now = time.time()
        for t in self.plan.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number in self._running:
                continue
            reason = liveness.stale_reason(t, now, self.grace_period)
            if reason:
                log.warning("trial %d was left RUNNING (%s): marked FAIL", t.number, reason)
                self.finish_uncounted(t.number, reason, dict(t.params))

    def fail_owned(self, reason: str) -> None:
        """Fail (uncounted) every trial this process still runs: the sweep was interrupted."""
        for number, trial in list(self._running.items()):
            self.finish_uncounted(number, reason, dict(trial.params))

    def heartbeat(self) -> None:
        """Refresh the heartbeat of the trials this process runs until :attr:`stop` is set
        (the body of a daemon thread)."""
        while not self.stop.wait(self.heartbeat_interval):
            with self._lock:
                owned = list(self._running.values())
            for trial in owned:
                safe(trial.set_user_attr, liveness.HEARTBEAT, time.time())

    # -- hooks ----------------------------------------------------------------------------------
    def run_due_hooks(self) -> None:
        """``on_trial_end`` for the trials failed as stale/surplus/interrupted meanwhile."""
        with self._lock:
            due, self._hooks_due = self._hooks_due, []
        for number in due:
            self.trial_ended(number)

    def trial_ended(self, number: int) -> None:
        """Tell the hooks how a trial ended (e.g. MLflow closes a run its process left open)."""
        plan = self.plan
        hooks = [h for h in plan.hooks if callable(getattr(h, "on_trial_end", None))]
        if not hooks or plan.info is None:
            return
        try:
            trial = plan.storage.get_trial(
                plan.storage.get_trial_id_from_study_id_trial_number(plan.study_id, number)
            )
        except Exception as err:  # noqa: BLE001 - the storage error surfaces in the slot
            log.debug("trial %d not readable for hooks: %s", number, err)
            return
        for hook in hooks:
            try:
                hook.on_trial_end(plan.info, trial)
            except Exception as err:  # noqa: BLE001 - a hook never fails a trial
                log.warning("study hook %s on trial %d: %s", type(hook).__name__, number, err)


def safe(fn, *args) -> None:
    """Call a storage write whose failure must not fail the sweep (the trial was finished
    meanwhile, or a transient storage error); logged at debug level."""
    try:
        fn(*args)
    except Exception as err:
        log.debug("%s%s failed: %s", getattr(fn, "__name__", fn), args[:2], err)
