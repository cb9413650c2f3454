"""Whose is a RUNNING trial, and is its owner still alive?

A trial's owner is the sweeper process that asked it: hostname + pid + process start time, kept
in the user attr ``sweeper:owner``; that process refreshes ``sweeper:heartbeat`` every
``heartbeat_interval`` seconds while the trial trains. A RUNNING trial that nobody in this
process runs is *stale* when its owner is on this host and that process is gone (a kill -9), or,
when the owner lives on another host (or the trial has no owner yet), when its heartbeat is older
than ``grace_period`` seconds. JournalStorage has no heartbeat of its own and Optuna's RDB
heartbeat only runs inside ``Study.optimize``, hence this one for every storage.
"""

from __future__ import annotations

import optuna

from sweeper import study_attrs
from sweeper.processes import owner, owner_alive

__all__ = ["owner", "owner_alive", "stale_reason", "OWNER", "HEARTBEAT"]

OWNER = study_attrs.OWNER
HEARTBEAT = study_attrs.HEARTBEAT
CLAIM_GRACE = 30.0  # seconds a RUNNING trial may go without an owner (claimed milliseconds
# after it is asked)


def stale_reason(trial: optuna.trial.FrozenTrial, now: float, grace_period: float) -> str | None:
    """Why a RUNNING trial that this process does not run is stale, or None if it is not."""
    who = trial.user_attrs.get(OWNER)
    alive = owner_alive(who) if who else None
    beat = trial.user_attrs.get(HEARTBEAT)
    if beat is None and trial.datetime_start is not None:
        beat = trial.datetime_start.timestamp()
    if alive is False:
        return f"stale: its sweeper process {who.get('pid')} is gone"
    if not who and beat is not None and now - float(beat) > CLAIM_GRACE:
        # asked but never claimed: its process failed in between (a full disk), and nobody
        # else will ever finish it
        return f"stale: never claimed in {now - float(beat):.0f}s"
    if alive is None and beat is not None and now - float(beat) > grace_period:
        # the heartbeat only decides when liveness cannot be checked (another host)
        return f"stale: no heartbeat for {now - float(beat):.0f}s"
    return None
