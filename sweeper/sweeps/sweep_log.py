"""The sweep's log file: tracebacks go to ``<sweep dir>/sweep.log``, the terminal gets one line.

Why: a sweep whose storage or disk fails mid-way used to bury its one-line verdict under
hundreds of stderr lines: MLflow's own handler printing every ``database or disk is full``
with its traceback (its loggers do not propagate), the packed worker processes'
``Process sweeper-population-0:`` tracebacks, threads' ``Exception in thread``, logging's own
``--- Logging error ---`` once the disk was full. Each of those already has its one-line
form (a progress line, the tracker's ``sweeper: tracking: ...`` line, the final
``sweeper: the sweep stopped: ...``), so here:

* every record, traceback included, also goes to ``sweep.log`` (the root logger and every
  logger that does not propagate, e.g. ``mlflow``, ``optuna``);
* the console handlers print a record without its traceback, and drop third-party records
  that carry one (a library's error that the sweeper reports in its own words);
* an exception that ends a thread is logged (one console line, traceback in the file), not
  printed by :func:`threading.excepthook`;
* ``logging.raiseExceptions`` is off: a handler that cannot write (the disk is full) stays
  silent instead of printing logging's own traceback.

If the file cannot be opened (full or read-only disk) the console is still quieted: the
tracebacks are then lost, the one-line verdicts are not. The packed worker processes do the
same with :func:`worker_logging` (the file's path reaches them in :data:`LOG_ENV`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

LOG_NAME = "sweep.log"
LOG_ENV = "SWEEPER_SWEEP_LOG"  # the file's path, for the sweep's worker processes
FILE_FORMAT = "[%(asctime)s][%(process)d %(threadName)s][%(name)s][%(levelname)s] %(message)s"
OWN_LOGGERS = ("sweeper", "HYDRA", "hydra", "__main__")  # their records keep their line

log = logging.getLogger("sweeper.sweeps")

_file: logging.FileHandler | None = None


class OneLineFormatter(logging.Formatter):
    """Formats with ``inner`` but without the record's traceback or stack: the console gets
    the message, the file handler (same record, formatted separately) the traceback."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        # exc_text too: logging caches the formatted traceback there, and Formatter.format
        # appends a cached one even when exc_info is None
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            text = self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
        return text


class ThirdPartyTracebacks(logging.Filter):
    """Drops, on a console handler, a library's record that carries a traceback (MLflow's
    ``SQLAlchemy database error. The following exception is caught.``, once per failed
    commit): the file keeps it, the sweeper reports the failure in its own words."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info and not record.exc_text:
            return True
        return record.name.split(".")[0] in OWN_LOGGERS


def install(sweep_dir: Path | str) -> Path | None:
    """Send full records to ``<sweep_dir>/sweep.log`` and quiet the console (see the module's
    docstring); the file's path, or None if it could not be opened. Idempotent: call it
    again after a library configured its own loggers (MLflow does on import)."""
    global _file
    path = Path(sweep_dir) / LOG_NAME
    logging.raiseExceptions = False
    if _file is None or Path(_file.baseFilename) != path.resolve():
        _file = _open(path)
        if _file is not None:
            os.environ[LOG_ENV] = str(path.resolve())
    root = logging.getLogger()
    if _file is not None and _file not in root.handlers:
        root.addHandler(_file)
    quiet_consoles()
    threading.excepthook = _thread_died
    return path if _file is not None else None


def worker_logging(prefix: str) -> None:
    """A packed worker process's logging: warnings on stderr, one line each, ``prefix``
    naming the process; full records in the sweep's log file when the sweeper has one."""
    global _file
    logging.raiseExceptions = False
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(
        logging.Formatter(f"[%(asctime)s][%(name)s][%(levelname)s] - {prefix} %(message)s")
    )
    root = logging.getLogger()
    for handler in list(root.handlers):  # e.g. inherited from a fork: this process's own
        root.removeHandler(handler)
    root.addHandler(console)
    root.setLevel(logging.WARNING)
    where = os.environ.get(LOG_ENV)
    _file = _open(Path(where)) if where else None
    if _file is not None:
        _file.setLevel(logging.WARNING)
        root.addHandler(_file)
    quiet_consoles()
    threading.excepthook = _thread_died


def quiet_consoles() -> None:
    """Every console handler (a stream handler that is not a file) of every logger: one-line
    records, no third-party tracebacks; every logger that keeps its records to itself
    (``propagate=False``, e.g. MLflow's, Optuna's) also writes to the file."""
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [
        each
        for each in logging.Logger.manager.loggerDict.values()
        if isinstance(each, logging.Logger)
    ]
    for logger in loggers:
        if not logger.handlers:
            continue
        for handler in logger.handlers:
            _quiet(handler)
        if (
            _file is not None
            and logger is not logging.getLogger()
            and not logger.propagate
            and _file not in logger.handlers
        ):
            logger.addHandler(_file)


def log_path() -> Path | None:
    """The sweep log of this process, if one is open."""
    return Path(_file.baseFilename) if _file is not None else None


def details() -> str:
    """`` (details: <sweep.log>)`` for a final line, when the file has something to show."""
    path = log_path()
    try:
        return f" (details: {path})" if path is not None and path.stat().st_size > 0 else ""
    except OSError:
        return ""


def to_file(message: str, err: BaseException | None = None) -> None:
    """``message`` (and ``err``'s traceback) in the log file only: the console already has,
    or is about to get, its one-line form."""
    if _file is None:
        return
    exc_info = (type(err), err, err.__traceback__) if err is not None else None
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, (), exc_info)
    _file.handle(record)


def _open(path: Path) -> logging.FileHandler | None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    except OSError:
        return None
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    handler.setLevel(logging.DEBUG)
    return handler


def _quiet(handler: logging.Handler) -> None:
    if isinstance(handler, logging.FileHandler) or not isinstance(handler, logging.StreamHandler):
        return
    if not isinstance(handler.formatter, OneLineFormatter):
        handler.setFormatter(OneLineFormatter(handler.formatter))
    if not any(isinstance(f, ThirdPartyTracebacks) for f in handler.filters):
        handler.addFilter(ThirdPartyTracebacks())


def _thread_died(args: Any) -> None:
    """:data:`threading.excepthook`: the thread's error as one logged line (traceback in the
    file); a thread ended by ``SystemExit`` stays silent, as with Python's own hook."""
    if args.exc_type is SystemExit:
        return
    from sweeper.sweeps.errors import error_text

    name = args.thread.name if args.thread is not None else "?"
    with contextlib.suppress(Exception):
        log.error(
            "thread %s ended: %s",
            name,
            error_text(args.exc_value) if args.exc_value is not None else args.exc_type.__name__,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )
