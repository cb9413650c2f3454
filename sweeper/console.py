"""Where the project's tables are printed: a rich Console as wide as the reader's screen.

Why not rich's default: when stdout is not a terminal (piped into ``tee``, a CI log, a file)
rich assumes 80 columns and cuts paths, study names and metric names (``optimization_results.
ya…``). Here a terminal keeps its own width, ``$COLUMNS`` wins when set, and otherwise piped
output is wide enough that no cell is cut.
"""

from __future__ import annotations

import os
import sys

#: Width of a table that is not printed to a terminal and has no ``$COLUMNS``.
PIPED_WIDTH = 1000


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
