"""The Optuna journal file, with a torn last record repaired before the next append.

Why this exists. What Optuna's ``JournalFileBackend`` already guarantees (read in optuna 5.0,
``optuna/storages/journal/_file.py``):

* ``append_logs`` writes a whole batch of records (one per call from ``JournalStorage``), each
  a JSON object on one line ending in ``\\n``, under the journal's file lock
  (``JournalFileOpenLock``: an ``O_CREAT|O_EXCL`` lock file), then flushes and fsyncs;
* ``read_logs`` never yields a line without its ``\\n`` and never records its offset: a torn
  *last* line (a writer killed, or a write that failed, half-way) is skipped, so a journal
  that merely ends in a torn record stays readable.

What it does not do: ``append_logs`` opens the file in append mode and writes after whatever
is there. When an append failed half-way (``ENOSPC`` on a full disk: the caller got the
``OSError``, the partial line stayed) the next append, once space is back, is glued onto the
partial line: that line is no longer the last one, ``read_logs`` raises ``JSONDecodeError``
on it, and every later sweep and ``sweeper report`` on the journal fail for good.

What this adds, under the journal's lock (a ``JournalFileOpenLock`` on ``<journal>.lock``, as
the sweeper has always opened it; another program appending to the same file must use that
lock too: Optuna's default ``JournalFileSymlinkLock`` would not exclude this one, nor Optuna's
own writers from each other):

* before appending, bytes after the last ``\\n`` are truncated away. They are never part of
  an acknowledged record (their append raised or its process died before returning) and no
  reader has applied them (``read_logs`` skips a line without ``\\n``), so no process's replayed
  state refers to them;
* an append that fails (``OSError`` from ``write`` or ``fsync``) truncates its own partial
  line at once (best effort; if that fails too the next append does it) and re-raises, so the
  file ends on a clean line and a full disk leaves nothing half-written behind once freed.

Only bytes after the last newline are ever removed: a complete line may already have been
read and applied by another process, so it is kept even if its append reported an error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Any

from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalFileSymlinkLock

log = logging.getLogger(__name__)
_CHUNK = 1 << 16


class JournalFile(JournalFileBackend):
    """``JournalFileBackend`` whose appends first drop a torn last record (module docstring).

    ``lock_obj`` defaults to ``JournalFileOpenLock`` (the lock file ``<path>.lock``)."""

    def __init__(
        self, file_path: str, lock_obj: JournalFileOpenLock | JournalFileSymlinkLock | None = None
    ) -> None:
        lock = lock_obj or JournalFileOpenLock(file_path)
        super().__init__(file_path, lock_obj=lock)
        self._path = file_path
        self._append_lock = lock

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = ("\n".join(json.dumps(rec, separators=(",", ":")) for rec in logs) + "\n").encode()
        self._append_lock.acquire()
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                dropped = drop_torn_tail(fd)
                if dropped:
                    log.warning(
                        "%s: dropped a torn last record (%d bytes) left by a failed append",
                        self._path,
                        dropped,
                    )
                try:
                    view = memoryview(data)
                    while view:  # os.write may write less than asked (a nearly full disk)
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                except OSError:
                    with contextlib.suppress(OSError):
                        drop_torn_tail(fd)
                    raise
            finally:
                os.close(fd)
        finally:
            self._append_lock.release()


def drop_torn_tail(fd: int) -> int:
    """Truncate the file open at ``fd`` after its last ``\\n`` (to 0 if it has none);
    the number of bytes removed."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return 0
    end, pos = 0, size
    while pos > 0:
        start = max(0, pos - _CHUNK)
        i = os.pread(fd, pos - start, start).rfind(b"\n")
        if i >= 0:
            end = start + i + 1
            break
        pos = start
    os.ftruncate(fd, end)
    return size - end
