"""Who re-tests a study that several sweeper processes worked on: one of them, once.

Why: every process of a study (the same command started N times on one storage) ran its own
re-test at its end; 4 processes made 55 test runs and re-tested one trial 4 times on the same
seeds. Now a process re-tests only if it holds the study's *re-test claim*:

* **done once**: nobody claims a re-test that is already done, i.e. the study's ``sweeper:retest``
  (``retest.summarize``) or a released claim covers the same trials on the same test seeds (a
  resumed study whose top trials changed is re-tested again);
* **by whoever finishes last**: a process whose tuning ended while live trials of another
  process still run (``liveness.stale_reason``: RUNNING, owner alive or fresh heartbeat) leaves
  the re-test to that process, which checks again when its own tuning ends;
* **taken over from the dead**: a claim whose process is gone (kill -9: its owner, recorded as
  for trials, is no longer alive; on another host: its heartbeat is older than the grace period)
  no longer holds, and the next process (or the next run of the command) claims it.

How, and why this primitive. Every Optuna storage the sweeper supports (JournalStorage file,
SQLite, PostgreSQL) makes one write visible to every read that starts after the write returned:
the journal appends under a file lock and replays the whole log on each read, an RDB commits
before returning and each read is a new statement. Each claim attempt writes its *own* study
user attr ``sweeper:retest_claim:<id>`` (one writer per key, so last-writer-wins never loses a
record) and then reads all of them (the flag protocol of Dekker and Peterson; the same
register-then-read as ``study_name.worker_seed``). Of two attempts A and B, the one that reads
second sees the other's record (claiming, running or done: a record only leaves these states
by a release or by its process dying), since the other wrote before it read: at most one sees
neither a live contender nor a done re-test, and wins; one that sees a contender withdraws and
retries after a random backoff, so that attempts that saw each other do not collide again.

Not a marker trial with Optuna's WAITING->RUNNING compare-and-set (how ``Study.ask`` pops an
enqueued trial): that transition is atomic for *one* trial, but creating that one trial is not
(``create_new_trial`` is unconditional, and on PostgreSQL trial numbers do not follow commit
order, so "the lowest-numbered marker" is not the same trial for everyone); a WAITING marker
is popped as a tuning trial by any ``study.ask`` of a concurrent process; and a marker trial
would count towards ``n_trials`` while RUNNING, show in the trials line and need excluding from
every reader of a study's trials. A study user attr touches none of them.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from sweeper import study_attrs
from sweeper.processes import owner, owner_alive
from sweeper.sweeps import liveness

log = logging.getLogger("sweeper.sweeps")

PREFIX = study_attrs.RETEST_CLAIM  # study user attrs: one per claim attempt
CONTENDING = ("claiming", "running")  # states that hold (or may hold) the claim
ATTEMPTS = 12
BACKOFF_S = (0.05, 0.4)  # random wait after a withdrawal, times the attempt number


def what(trials: Sequence[int], seeds: Sequence[int]) -> dict[str, list[int]]:
    """What a re-test covers: the trial numbers it re-trains and the test seeds."""
    return {"trials": [int(n) for n in trials], "seeds": [int(s) for s in seeds]}


def records(attrs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The claim records among a study's user attrs."""
    return {k: v for k, v in attrs.items() if k.startswith(PREFIX) and isinstance(v, dict)}


def is_done(attrs: Mapping[str, Any], trials: Sequence[int], seeds: Sequence[int]) -> bool:
    """Whether the study's re-test (``sweeper:retest``) or a claim released as done covers
    these trials on these test seeds."""
    want = what(trials, seeds)
    stored = attrs.get(study_attrs.RETEST)
    if isinstance(stored, dict):
        numbers = [c.get("number") for c in stored.get("configs") or [] if isinstance(c, dict)]
        if numbers == want["trials"] and list(stored.get("test_seeds") or []) == want["seeds"]:
            return True
    return any(r.get("state") == "done" and r.get("what") == want for r in records(attrs).values())


def holds(record: Mapping[str, Any], now: float, grace_period: float) -> bool:
    """Whether a claim record still holds: contending, and its process alive (on this host)
    or its heartbeat younger than ``grace_period`` (another host)."""
    if record.get("state") not in CONTENDING:
        return False
    alive = owner_alive(record.get("owner"))
    if alive is not None:
        return alive
    beat = record.get("heartbeat")
    return isinstance(beat, (int, float)) and now - float(beat) <= grace_period


def live_tuning(
    study: optuna.Study, now: float, grace_period: float
) -> optuna.trial.FrozenTrial | None:
    """A RUNNING trial of another live process (not stale), or None."""
    me = owner()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get(liveness.OWNER) == me:
            continue  # this process's own leftovers: its tuning has ended
        if liveness.stale_reason(t, now, grace_period) is None:
            return t
    return None


@dataclass
class Claim:
    """This process holds the study's re-test claim until :meth:`release`; a daemon thread
    refreshes its heartbeat (what another host judges it by). Also a context manager:
    released as done when the block ends without an exception."""

    study: optuna.Study
    key: str
    record: dict[str, Any]
    heartbeat_interval: float = 5.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _beat: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start_heartbeat(self) -> None:
        self._beat = threading.Thread(target=self._heartbeat, name="retest-claim", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_interval):
            with self._lock:
                if self._stop.is_set():
                    return
                self.record["heartbeat"] = time.time()
                try:
                    self.study.set_user_attr(self.key, dict(self.record))
                except Exception as err:  # noqa: BLE001 - the next beat tries again
                    log.debug("re-test claim heartbeat failed: %s", err)

    @property
    def released(self) -> bool:
        return self._stop.is_set()

    def release(self, done: bool) -> None:
        """Give the claim up: ``done`` (the re-test's results are stored: nobody re-tests the
        same trials on the same seeds again) or not (the next process may claim it). Once."""
        with self._lock:
            if self._stop.is_set():
                return
            self._stop.set()
            self.record.update(state="done" if done else "released", heartbeat=time.time())
            self.study.set_user_attr(self.key, dict(self.record))
        if self._beat is not None and self._beat is not threading.current_thread():
            self._beat.join(timeout=1.0)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.release(done=exc_type is None)


def claim(
    study: optuna.Study,
    trials: Sequence[int],
    seeds: Sequence[int],
    *,
    grace_period: float = 60.0,
    heartbeat_interval: float = 5.0,
    attempts: int = ATTEMPTS,
) -> Claim | None:
    """The study's re-test claim for re-testing ``trials`` on ``seeds``, or None (logged
    why): done already, held by a live process, or left to a process that still tunes."""
    want = what(trials, seeds)
    key = f"{PREFIX}{uuid.uuid4().hex[:16]}"
    mine: dict[str, Any] = {"owner": owner(), "what": want}
    for attempt in range(1, attempts + 1):
        reason = _yield_reason(study, key, want, grace_period)
        if reason is not None:
            log.info("re-test of study %s: %s", study.study_name, reason)
            return None
        mine.update(state="claiming", heartbeat=time.time())
        study.set_user_attr(key, dict(mine))
        attrs, now = study.user_attrs, time.time()
        if is_done(attrs, want["trials"], want["seeds"]):  # a winner was quicker still
            mine.update(state="withdrawn", heartbeat=time.time())
            study.set_user_attr(key, dict(mine))
            log.info("re-test of study %s: done already by another process", study.study_name)
            return None
        contenders = [
            r for k, r in records(attrs).items() if k != key and holds(r, now, grace_period)
        ]
        if not contenders:
            mine.update(state="running", heartbeat=time.time())
            study.set_user_attr(key, dict(mine))
            held = Claim(study, key, dict(mine), heartbeat_interval)
            held.start_heartbeat()
            return held
        mine.update(state="withdrawn", heartbeat=time.time())
        study.set_user_attr(key, dict(mine))
        time.sleep(random.uniform(*BACKOFF_S) * attempt)
    log.warning(
        "re-test of study %s: not claimed after %d attempts (other processes kept claiming)",
        study.study_name,
        attempts,
    )
    return None


def _yield_reason(
    study: optuna.Study, key: str, want: dict[str, list[int]], grace_period: float
) -> str | None:
    """Why this process must not claim now, or None."""
    attrs = study.user_attrs
    if is_done(attrs, want["trials"], want["seeds"]):
        return "done already for these trials and test seeds"
    now = time.time()
    for k, r in records(attrs).items():
        if k != key and r.get("state") == "running" and holds(r, now, grace_period):
            return f"process {_who(r.get('owner'))} is running it"
    tuning = live_tuning(study, now, grace_period)
    if tuning is not None:
        who = _who(tuning.user_attrs.get(liveness.OWNER))
        return f"left to process {who}, which still runs trial {tuning.number}"
    return None


def _who(who: Any) -> str:
    if not isinstance(who, dict):
        return "?"
    return f"{who.get('pid')} on {who.get('host')}"


__all__ = ["Claim", "PREFIX", "claim", "holds", "is_done", "live_tuning", "records", "what"]
