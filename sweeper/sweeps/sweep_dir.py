"""One sweep directory per study, even for sweeps started in the same second.

Hydra's default ``outputs/multirun/<date>/<time>`` names a directory by the second a sweep
started: two sweeps started together wrote their job folders 0, 1, ... ``multirun.yaml``,
``optimization_results.yaml`` and ``plots/`` into the same place, the second overwriting the
first. A sweep now *claims* its directory with a marker file naming its study, created
atomically (written aside, then hard-linked into place, which fails if the marker exists):

* no marker yet: the directory is this study's (an existing directory without a marker, e.g. a
  ``hydra.sweep.dir`` chosen by hand, is adopted);
* the marker names this study: the same directory (a resumed sweep, or a second worker of the
  same study: job folders are trial numbers, unique within a study);
* the marker names another study: ``<dir>-1``, ``<dir>-2``, ... the first free or own one.

Claiming also proves the directory writable before any trial starts.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

MARKER = ".sweeper_study"
MAX_SUFFIX = 1000


class SweepDirError(ValueError):
    """The sweep directory cannot be created or written; one line naming it."""


@dataclass
class Claim:
    path: Path
    created: list[Path]  # directories this claim created (removed by ``release``)
    marker: Path | None  # the marker this claim wrote

    def release(self) -> None:
        """Undo the claim of a sweep that never started: its marker and new empty dirs."""
        if self.marker is not None:
            self.marker.unlink(missing_ok=True)
        for directory in reversed(self.created):
            try:
                directory.rmdir()
            except OSError:
                break


def claim(base: Path, study_name: str) -> Claim:
    """Claim ``base`` (or the first free ``base-N``) for ``study_name``; SweepDirError if the
    directory cannot be created or written."""
    base = Path(base).absolute()
    for n in range(MAX_SUFFIX):
        path = base if n == 0 else base.with_name(f"{base.name}-{n}")
        created = _makedirs(path, base)
        marker = path / MARKER
        try:
            _link_marker(marker, study_name)
            return Claim(path, created, marker)
        except FileExistsError:
            pass
        except OSError as err:
            Claim(path, created, None).release()
            raise SweepDirError(
                f"hydra.sweep.dir {str(base)!r}: not writable: {_why(err)}"
            ) from None
        try:
            owner = marker.read_text().strip()
        except OSError as err:
            raise SweepDirError(f"hydra.sweep.dir {str(base)!r}: {_why(err)}") from None
        if owner == study_name:
            return Claim(path, created, None)
    raise SweepDirError(f"hydra.sweep.dir {str(base)!r}: {MAX_SUFFIX} sweeps already use it")


def _makedirs(path: Path, base: Path) -> list[Path]:
    missing = [p for p in [path, *path.parents] if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SweepDirError(f"hydra.sweep.dir {str(base)!r}: cannot create: {_why(err)}") from None
    if not path.is_dir():
        raise SweepDirError(f"hydra.sweep.dir {str(base)!r}: not a directory")
    return list(reversed(missing))


def _link_marker(marker: Path, study_name: str) -> None:
    """Create ``marker`` holding the study name, atomically (never seen half-written)."""
    fd, tmp = tempfile.mkstemp(prefix=MARKER + ".", dir=marker.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(study_name + "\n")
        os.link(tmp, marker)
    finally:
        os.unlink(tmp)


def _why(err: OSError) -> str:
    return err.strerror or type(err).__name__
