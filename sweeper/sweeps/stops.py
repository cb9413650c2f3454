"""How a sweep stops before its end: Ctrl-C (a clean stop, exit 130) and a failed storage or
hook (one line naming the cause, exit 1). Either way what finished is kept and every MLflow run
ends (``sweeper.tracking.run_ends``), and the same command resumes."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sweeper.study_storage import redact
from sweeper.sweeps.errors import root_cause

if TYPE_CHECKING:
    from sweeper.sweeps.ledger import TrialLedger
    from sweeper.sweeps.plan import Plan

log = logging.getLogger("sweeper.sweeps")

INTERRUPTED = "interrupted: Ctrl-C"


def interrupted(plan: Plan, ledger: TrialLedger | None, close_launcher: Callable[[], None]) -> None:
    """Ctrl-C: a clean stop. The trials this process ran fail uncounted ("interrupted";
    their points are asked again by the next run), the worker processes end, every MLflow
    run of this process ends KILLED (``outcome=interrupted``), then one line and exit
    code 130 (128 + SIGINT, as a shell reports it). A second Ctrl-C ends at once."""
    signal.signal(signal.SIGINT, _exit_now)
    if ledger is not None:
        ledger.stop.set()
        _quietly(ledger.fail_owned, INTERRUPTED)  # before the workers are killed (not deaths)
    close_launcher()
    if ledger is not None:
        _quietly(ledger.run_due_hooks)
    for hook in plan.hooks:
        _quietly(hook.on_study_end, plan.info, {"error": INTERRUPTED, "interrupted": True})
    try:
        done = f"{ledger.done_before() if ledger is not None else 0}/{plan.n_trials}"
    except Exception:  # noqa: BLE001 - the storage is gone too: say what is known
        done = "the finished"
    sys.stderr.write(
        f"sweeper: interrupted: {done} trials finished and kept in "
        f"{redact(plan.storage_spec)}; re-run the same command to resume\n"
    )
    sys.stderr.flush()
    raise SystemExit(130)


def abort(plan: Plan, err: BaseException) -> None:
    """End a sweep whose storage (or a hook) failed mid-way: one line naming the cause.

    What finished is kept: every finished trial was told before the failure, and the
    trials still RUNNING in the storage are failed as stale by the next run. The hooks are
    told (``results["error"]``) so that e.g. the MLflow parent run does not stay RUNNING.
    """
    if not isinstance(err, Exception):
        raise err
    cause = root_cause(err)
    for hook in plan.hooks:
        try:
            hook.on_study_end(plan.info, {"study": None, "error": cause})
        except Exception as hook_err:  # noqa: BLE001 - the storage's error matters more
            log.debug("study hook %s failed: %s", type(hook).__name__, hook_err)
    raise SystemExit(
        f"sweeper: the sweep stopped: storage {redact(plan.storage_spec)} failed: {cause}; "
        "finished trials are kept (re-run the same command to resume)"
    ) from None


def _exit_now(signum: int, frame: Any) -> None:
    """A second Ctrl-C while the first one is being handled: end now (what is not closed
    yet is closed by the next run of the same command)."""
    os._exit(130)


def _quietly(fn: Any, *args: Any) -> None:
    """A clean-up step that must not stop the next one (logged at debug level)."""
    try:
        fn(*args)
    except Exception as err:  # noqa: BLE001
        log.debug("%s failed: %s", getattr(fn, "__name__", fn), err)
