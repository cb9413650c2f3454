"""Python values as Hydra override values: what the sweeper, the reports and the reproduce lines
print so that pasting them back on the command line gives the same config.

One module below every caller (sweeps, tracking, analysis, secrets) because all of them print
overrides: the grammar is Hydra's (``OverridesParser``), and a value is written bare only where
Hydra parses the bare text back to the same value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser

_SAFE_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:+@")


def format_value(value: Any) -> str:
    """A Python value as an override value that Hydra parses back to the same value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        if value and set(value) <= _SAFE_CHARS and _reparses_as(value, value):
            return value
        # Hydra's quoted strings: only quotes and the backslashes before a quote or before
        # the end of the string are escaped (a lone backslash stays as it is)
        escaped = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value).replace("'", "\\'")
        return f"'{escaped}'"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Iterable):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    raise TypeError(f"cannot format {value!r} as an override value")


def _reparses_as(text: str, value: Any) -> bool:
    try:
        parsed = OverridesParser.create().parse_override(f"k={text}").value()
    except Exception:
        return False
    return type(parsed) is type(value) and parsed == value


def grammar_error(text: str) -> str | None:
    """Why Hydra's override grammar refuses ``text``, on one line naming its key (``agent.lr:
    cannot parse 'interval(1e-2)': missing a required argument: 'end'``); None if it parses.
    Hydra's own error is four lines around the same reason."""
    try:
        OverridesParser.create().parse_override(text)
    except Exception as err:  # noqa: BLE001 - HydraException, or a grammar library's error
        key, _, value = text.partition("=")
        reason = " ".join(str(err).split())
        # "TypeError while evaluating 'interval(1e-2)': ..." says the value once more
        reason = re.sub(r"^\w+ while evaluating '.*?': ", "", reason)
        return f"{key.strip() or text}: cannot parse {value!r}: {reason}"
    return None
