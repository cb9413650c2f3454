"""Where studies live.

The default is an Optuna ``JournalStorage`` on a ``JournalFileBackend`` under ``outputs/optuna/``
(``sweeper.study_storage.journal.JournalFile``: the same format and lock, and a torn last record
left by a failed append, e.g. on a full disk, never makes the journal unreadable).
Why a journal file and not SQLite: Optuna's docs advise against SQLite for parallel workers (one
writer lock for the whole file, ``database is locked`` errors under concurrent writes, and broken
locking on network file systems). The journal is an append-only log of operations guarded by a
file lock (``JournalFileOpenLock``, an ``O_CREAT|O_EXCL`` lock file that works on local disks and
NFS); every process replays the log, so several local processes (joblib workers, trial processes
reporting intermediate values, workers started by hand) share it correctly without a server.
For workers on several machines use an RDB URL (PostgreSQL): the engine gets
``pool_pre_ping=True`` so connections dropped by the server are replaced transparently.

A storage is named by one string that the sweeper also hands to every trial
(``trial.storage``): an RDB URL such as ``postgresql+psycopg://user:pw@host/db``, or
``journal:<path>`` (a bare path ending in ``.log`` or ``.journal`` also means a journal file;
a string with ``://`` is always an RDB URL).
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileOpenLock
from sqlalchemy.exc import IntegrityError, ProgrammingError

from sweeper import secrets
from sweeper.study_storage.journal import JournalFile

DEFAULT_STORAGE = "journal:outputs/optuna/journal.log"

_cache: dict[str, BaseStorage] = {}
_lock = threading.Lock()


class StorageError(ValueError):
    """The storage cannot be opened; the message is one line."""


def canonical(spec: str | None) -> str:
    """The storage string with a journal path made absolute (so trials in other cwds agree)
    and a password masked (``user:***@``): the form the sweeper hands to trials and shows;
    the real URL is kept for :func:`open_storage` (``sweeper.secrets``)."""
    spec = spec or DEFAULT_STORAGE
    if is_journal(spec):
        return "journal:" + str(Path(journal_path(spec)).expanduser().resolve())
    return secrets.keep(spec)


def is_journal(spec: str) -> bool:
    """``journal:<path>``, or a bare path ending in .log/.journal; anything with ``://`` is an
    RDB URL (``sqlite:///runs/optuna.log`` is an SQLite file, not a journal)."""
    if spec.startswith("journal:"):
        return True
    return "://" not in spec and spec.endswith((".log", ".journal"))


def journal_path(spec: str) -> str:
    return spec[len("journal:") :] if spec.startswith("journal:") else spec


def redact(spec: str) -> str:
    """The storage string without secrets (for logs and result files): ``secrets.mask``."""
    return secrets.mask(spec)


def open_storage(spec: str | None) -> BaseStorage:
    """An Optuna storage for ``spec`` (cached per process), a masked URL revealed.
    Raises StorageError (one line, secrets masked)."""
    shown = canonical(spec)
    try:
        spec = secrets.reveal(shown)
    except ValueError as err:
        raise StorageError(f"hydra.sweeper.storage: {err}") from None
    with _lock:
        if spec in _cache:
            return _cache[spec]
        try:
            storage = _open(spec)
        except StorageError as err:
            raise StorageError(secrets.mask_text(err)) from None
        except Exception as err:  # sqlalchemy OperationalError, ArgumentError, OSError, ...
            first = " ".join(secrets.mask_text(str(err).split("\n")[0]).split())
            raise StorageError(
                f"hydra.sweeper.storage: cannot open {shown!r}: {type(err).__name__}: {first}"
            ) from None
        _cache[spec] = storage
        return storage


def _open(spec: str) -> BaseStorage:
    if is_journal(spec):
        path = Path(journal_path(spec))
        path.parent.mkdir(parents=True, exist_ok=True)
        # Optuna's JournalFileBackend, plus: a torn last record (a failed append, ENOSPC)
        # is truncated before the next append instead of being glued onto (study_storage/journal.py)
        backend = JournalFile(str(path), lock_obj=JournalFileOpenLock(str(path)))
        return JournalStorage(backend)
    if "://" not in spec:
        raise StorageError(
            f"hydra.sweeper.storage: {spec!r} is neither an RDB URL (dialect://...) nor "
            "journal:<path>"
        )
    engine_kwargs = {"pool_pre_ping": True}
    if spec.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 30}
    else:
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    for attempt in range(6):
        try:
            storage = RDBStorage(spec, engine_kwargs=engine_kwargs)
            break
        except (IntegrityError, ProgrammingError):
            # workers starting together on an empty database race to create Optuna's tables
            if attempt == 5:
                raise
            time.sleep(0.2 + random.random())
    optuna.study.get_all_study_names(storage)  # one round trip: fail now if unreachable
    return storage
