"""Sweep progress: trials done / total and the best value so far.

A rich progress bar on a terminal (stderr is a tty); otherwise one log line per finished trial.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

import optuna
from optuna.trial import TrialState

log = logging.getLogger("sweeper.sweeps")


class SweepProgress:
    def __init__(self, total: int, direction: str, enabled: bool = True) -> None:
        self.total = total
        self.maximize = direction == "maximize"
        self.tty = enabled and sys.stderr.isatty()
        self._bar = None
        self._task = None
        self._lock = threading.Lock()
        self.best: tuple[float, int] | None = None

    def _done(self, study: optuna.Study) -> int:
        from sweeper.analysis import tally

        c = tally(study.get_trials(deepcopy=False))
        return c["complete"] + c["pruned"] + c["failed"]

    def start(self, study: optuna.Study) -> None:
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            self._offer(t.value, t.number)
        done = self._done(study)
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bar = Progress(
                TextColumn("[bold]sweep"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                transient=False,
            )
            self._task = self._bar.add_task(
                "sweep", total=self.total, completed=done, status=self._best_text()
            )
            self._bar.start()

    def _offer(self, value: float | None, number: int) -> None:
        if value is None:
            return
        if self.best is None or (value > self.best[0] if self.maximize else value < self.best[0]):
            self.best = (value, number)

    def _best_text(self) -> str:
        if self.best is None:
            return "best: -"
        return f"best {self.best[0]:.4g} (trial {self.best[1]})"

    def trial_started(self, number: int, params: str = "") -> None:
        if not self.tty:
            log.info("trial %d started %s", number, params)

    def trial_finished(self, study: optuna.Study, number: int, outcome: Any) -> None:
        with self._lock:
            if outcome.state == TrialState.COMPLETE:
                self._offer(outcome.value, number)
            done = self._done(study)
            value = f" value {outcome.value:.4g}" if outcome.value is not None else ""
            if self._bar is not None:
                self._bar.update(
                    self._task, completed=min(done, self.total), status=self._best_text()
                )
                self._bar.console.log(f"trial {number} {outcome.state.name.lower()}{value}")
            else:
                log.info(
                    "trial %d %s%s | %d/%d done, %s",
                    number,
                    outcome.state.name.lower(),
                    value,
                    done,
                    self.total,
                    self._best_text(),
                )

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
