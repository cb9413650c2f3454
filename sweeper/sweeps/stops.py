"""How a sweep stops before its end: Ctrl-C (a clean stop, exit 130) and a failed storage or
hook (one line naming the cause, exit 1). Either way what finished is kept and every MLflow run
ends (``sweeper.tracking.run_ends``), and the same command resumes."""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeper.messages import one_line
from sweeper.secrets import mask_text
from sweeper.study_storage import redact
from sweeper.sweeps import sweep_log
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
    sweep_log.to_file("the sweep stopped", err)
    cause = full_disk(err, plan) or root_cause(err)
    for hook in plan.hooks:
        try:
            hook.on_study_end(plan.info, {"study": None, "error": cause})
        except Exception as hook_err:  # noqa: BLE001 - the storage's error matters more
            log.debug("study hook %s failed: %s", type(hook).__name__, hook_err)
    raise SystemExit(
        f"sweeper: the sweep stopped: storage {redact(plan.storage_spec)} failed: {cause}; "
        f"finished trials are kept (re-run the same command to resume){sweep_log.details()}"
    ) from None


def full_disk(err: BaseException, plan: Plan | None = None) -> str | None:
    """The cause to name when the disk is full, else None.

    A full disk fails several things at once, and the innermost exception of the chain is
    not always the disk's: a packed worker dies of ENOSPC in its own process, and the slot's
    retry then hits ENOSPC in the journal *while handling* that ``WorkerDied``, so
    :func:`root_cause` would blame the death. ENOSPC anywhere in the chain (or SQLite's
    ``database or disk is full``) wins; failing that, a ``WorkerDied`` while the disk under
    the sweep directory or the journal is full is named with that disk."""
    seen: set[int] = set()
    each: BaseException | None = err
    died = False
    while each is not None and id(each) not in seen:
        seen.add(id(each))
        if _is_enospc(each):
            return mask_text(f"{type(each).__name__}: {one_line(each, 400)}")
        died = died or type(each).__name__ == "WorkerDied"
        each = each.__cause__ or each.__context__
    if died and plan is not None:
        for where in _disks(plan):
            if _full(where):
                return (
                    f"OSError: [Errno {errno.ENOSPC}] No space left on device: the disk under "
                    f"{where} is full ({root_cause(err)})"
                )
    return None


def _is_enospc(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    text = str(err).lower()
    return "no space left on device" in text or "database or disk is full" in text


def _disks(plan: Plan) -> list[Path]:
    """Where the sweep writes: its directory and, for a journal, the journal's directory."""
    spec = str(plan.storage_spec or "")
    places = [Path(plan.sweep_dir)]
    if spec.startswith("journal:"):
        places.append(Path(spec.removeprefix("journal:")).parent)
    return places


def _full(path: Path, margin: int = 64 * 1024) -> bool:
    """Whether the file system holding ``path`` (or its nearest existing parent) has less than
    ``margin`` bytes free for this user."""
    for each in (path, *path.parents):
        try:
            st = os.statvfs(each)
        except OSError:
            continue
        return st.f_bavail * st.f_frsize < margin
    return False


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
