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

A study records the directory it claimed (study user attr ``sweeper:sweep_dir``). Hydra's
default ``hydra.sweep.dir`` is a new timestamp at each start, so the same command re-run after
a kill claimed a new directory: the resumed study's trials and results went there and the old
one kept only the first trials. :func:`resume` sends a resumed study (or a second process of a
study) back to its recorded directory while it is still there and its marker still names the
study (else the new one becomes the study's directory); a study recorded before this attr
existed is found through its trials' run directories (``sweeper:output_dir``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import optuna

from sweeper import study_attrs

log = logging.getLogger("sweeper.sweeps")

MARKER = ".sweeper_study"
DIR_ATTR = study_attrs.SWEEP_DIR  # study user attr: the directory the study claimed
MAX_SUFFIX = 1000


class SweepDirError(ValueError):
    """The sweep directory cannot be created or written; one line naming it."""


@dataclass
class Claim:
    path: Path
    created: list[Path]  # directories this claim created (removed by ``release``)
    marker: Path | None  # the marker this claim wrote
    resumed: bool = False  # the study's recorded directory (not the hydra.sweep.dir asked)

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


def recorded(study: optuna.Study) -> Path | None:
    """The directory ``study`` wrote to before, while it is there and its marker names the
    study: the recorded one, else (a study from before the record) its last trial's run
    directory's parent."""
    value = study.user_attrs.get(DIR_ATTR)
    candidates = [Path(value)] if value else []
    if not candidates:
        for t in reversed(study.get_trials(deepcopy=False)):
            out = t.user_attrs.get(study_attrs.OUTPUT_DIR)
            if out:
                candidates.append(Path(out).parent)
                break
    for path in candidates:
        if _owner(path / MARKER) == study.study_name:
            return path.absolute()
    return None


def resume(first: Claim, study: optuna.Study) -> Claim:
    """The study's own directory when it has one (:func:`recorded`) instead of ``first``
    (claimed from ``hydra.sweep.dir``, given up: its marker and the empty directories it
    made are removed); records the directory that the study uses from now on."""
    own = recorded(study)
    target = own if own is not None else first.path
    if study.user_attrs.get(DIR_ATTR) != str(target):
        study.set_user_attr(DIR_ATTR, str(target))
    if own is None or own == first.path:
        return first
    first.release()
    log.info("study %s goes on in its own directory %s", study.study_name, own)
    return Claim(own, [], None, resumed=True)


def _owner(marker: Path) -> str | None:
    try:
        return marker.read_text().strip()
    except OSError:
        return None


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
