"""How the project tells a user what went wrong: on one line.

Errors from libraries (Hydra's grammar errors, Gymnasium's registry, MLflow's REST errors,
SQLAlchemy's chains) span several lines; a sweep's error column, a trial's ``sweeper:error``
attribute and the one line a refused command prints must not. Secrets are masked by the
caller (``sweeper.secrets.mask_text``) where a message may quote a URL.
"""

from __future__ import annotations

from typing import Any


def one_line(text: Any, limit: int | None = None) -> str:
    """``text`` with its whitespace runs (newlines included) as single spaces; cut to
    ``limit`` characters with ``...`` when given."""
    line = " ".join(str(text).split())
    if limit is not None and len(line) > limit:
        return line[: limit - 3] + "..."
    return line


def error_line(err: BaseException, limit: int | None = None) -> str:
    """``Type: message`` of an exception, on one line."""
    return one_line(f"{type(err).__name__}: {err}", limit)
