"""Which process is this, and is another one still alive: a process is named by its host,
pid and start time (a pid alone is reused). Shared by the sweeper's trial liveness
(``sweeper.sweeps.liveness``), its worker processes and the MLflow run ends
(``sweeper.tracking.run_ends``); Linux's ``/proc`` where it exists, the pid alone elsewhere."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat``
    field 22): with the pid it names one process, even after the pid is reused."""
    fields = _stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def process_alive(pid: int, start: str | None = None) -> bool:
    """Whether process ``pid`` (started at ``start``, when given) is alive on this host; a
    zombie is dead for our purposes."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if start is None:
        return True
    fields = _stat(pid)
    if not fields or len(fields) <= 19:
        return True  # no /proc: the pid alone decides
    return fields[19] == start and fields[0] != "Z"


def owner() -> dict[str, Any]:
    """This process as the owner of a trial or a run."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": process_start(pid)}


def owner_alive(who: dict[str, Any]) -> bool | None:
    """True/False for an owner on this host; None when it lives elsewhere (unknown)."""
    if not isinstance(who, dict) or who.get("host") != socket.gethostname():
        return None
    return process_alive(int(who.get("pid", -1)), who.get("start"))
