"""The sweeper's errors and how they are told: one line, passwords masked.

``SweepError`` is a problem found while planning (before any trial runs); ``TrialExit`` is a
job that called ``sys.exit``; :func:`root_cause` and :func:`error_text` turn an exception (often
a storage error wrapped by SQLAlchemy and Optuna) into the line a user reads and the study
keeps.
"""

from __future__ import annotations

from sweeper.messages import one_line
from sweeper.secrets import mask_text


class SweepError(Exception):
    """A problem found before any trial ran; one line."""


class TrialExit(RuntimeError):
    """A job called ``sys.exit`` (e.g. a config error): the trial fails, the sweep goes on."""


def error_text(exc: BaseException) -> str:
    """``Type: message`` on one line, URL passwords masked (it is stored in the study and
    copied to MLflow; an MLflow error quotes the whole tracking URL)."""
    return mask_text(f"{type(exc).__name__}: {one_line(exc, 2000)}")


def root_cause(err: BaseException, limit: int = 400) -> str:
    """``Type: message`` of the innermost exception of ``err``'s chain, on one line: Optuna's
    RDB storage wraps a lost connection ("the database system is shutting down") in a
    StorageInternalError whose own text blames "invalid data in the commit"."""
    seen = {id(err)}
    inner = err
    while True:
        nxt = inner.__cause__ or inner.__context__
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        if str(nxt).strip() not in ("", "()"):  # e.g. SQLAlchemy's InvalidatePoolError: no text
            inner = nxt
        else:
            inner = _deeper(nxt, seen) or inner
            break
    return mask_text(f"{type(inner).__name__}: {one_line(inner, limit)}")


def _deeper(err: BaseException, seen: set[int]) -> BaseException | None:
    """The innermost exception below ``err`` in its chain that says something, if any."""
    found = None
    while True:
        nxt = err.__cause__ or err.__context__
        if nxt is None or id(nxt) in seen:
            return found
        seen.add(id(nxt))
        if str(nxt).strip() not in ("", "()"):
            found = nxt
        err = nxt
