"""Where the project's tables are printed: a rich Console as wide as the reader's screen, or
a width that reads in a log.

Why not rich's default: when stdout is not a terminal (piped into ``tee``, a CI log, a file)
rich assumes 80 columns and cuts paths, study names and metric names (``optimization_results.
ya…``). Here a terminal keeps its own width, ``$COLUMNS`` wins when set, and otherwise piped
output is :data:`PIPED_WIDTH` columns: long cells wrap inside their column. What a reader
copies (a path, the command that reproduces a run) must not wrap: :func:`print_rows` prints
such a value whole below its table when it does not fit its cell.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Sequence
from typing import Any

#: Width of a table that is not printed to a terminal and has no ``$COLUMNS``: one that
#: reads in a log file or a CI page (a 270-column table does not).
PIPED_WIDTH = 120
#: The cell of a value printed whole below its table.
BELOW = "(in full below)"
_BORDERS = 7  # "│ key │ value │": the two-column table's borders and padding


def console(stderr: bool = False):
    """A rich Console on stdout (or stderr): the terminal's width, else ``$COLUMNS``, else
    :data:`PIPED_WIDTH`."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        width: int | None = int(columns)
    else:
        width = None if stream.isatty() else PIPED_WIDTH
    # a height too: with a width alone rich still says 80 columns on a "dumb" TERM
    return Console(file=stream, width=width, height=None if width is None else 25)


def print_rows(
    title: str,
    rows: Sequence[tuple[str, str]],
    verbatim: Collection[str] = (),
    out: Any = None,
) -> None:
    """``rows`` as a two-column (key, value) table titled ``title`` on ``out`` (default
    :func:`console`). The value of a key in ``verbatim`` (a path, a command line) that would
    wrap in its cell is printed whole below the table instead (``key: value``, one line each
    of its lines, never wrapped), its cell saying :data:`BELOW`; other long values wrap."""
    from rich.table import Table
    from rich.text import Text

    out = out or console()
    key_width = max((len(key) for key, _ in rows), default=0)
    room = max(10, out.width - key_width - _BORDERS)
    table = Table(title=title, show_header=False)
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("")
    below: list[tuple[str, str]] = []
    for key, value in rows:
        if key in verbatim and any(len(line) > room for line in value.splitlines()):
            below.append((key, value))
            value = BELOW
        table.add_row(key, Text(value))  # Text: an override's "[a,b]" is not rich markup
    out.print(table)
    for key, value in below:
        print_verbatim(out, key, value)


def print_verbatim(out: Any, key: str, value: str) -> None:
    """``key: value`` on ``out``, never wrapped nor cut (a value of several lines: the key,
    then each line indented by two spaces)."""
    from rich.text import Text

    lines = value.splitlines() or [""]
    if len(lines) == 1:
        out.print(Text(f"{key}: {lines[0]}"), soft_wrap=True)
        return
    out.print(Text(f"{key}:"), soft_wrap=True)
    for line in lines:
        out.print(Text(f"  {line}"), soft_wrap=True)
