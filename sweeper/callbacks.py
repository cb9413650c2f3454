"""The metric stream: the training loop publishes, callbacks subscribe.

Trackers (MLflow), pruners (Optuna), writers and progress bars are all callbacks, so the loop
never knows who listens. A callback may raise from ``on_eval`` to stop training (pruning).
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Metrics = Mapping[str, float]


class Callback:
    """No-op base: override what you need."""

    def on_train_start(self, info: Mapping[str, Any]) -> None:
        """Before the first step; ``info`` holds budget and space sizes."""

    def on_episode_end(self, episode: int, step: int, metrics: Metrics) -> None:
        """After each training episode (1-based ``episode``; ``step``: env steps so far)."""

    def on_eval(self, index: int, episode: int, step: int, metrics: Metrics) -> None:
        """After each greedy evaluation (``index`` 0-based); may raise to stop training."""

    def on_result(self, result: Mapping[str, Any]) -> None:
        """Once before ``on_train_end`` of a replicate group: its record (the aggregate
        objective with n and CI, per-seed values; ``sweeper.replicates.group_result``)."""

    def on_train_end(self, objective: float, status: str) -> None:
        """Once, with the final objective; status is FINISHED, FAILED, PRUNED or KILLED."""

    def close(self, error: BaseException | None = None) -> None:
        """Last, after the run's files are written (also when it failed with ``error``):
        release what the callback holds (e.g. the tracker logs those files and ends its
        MLflow run)."""


class CallbackList(Callback):
    """Fans every event out to several callbacks, in order."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)

    def on_train_start(self, info: Mapping[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_train_start(info)

    def on_episode_end(self, episode: int, step: int, metrics: Metrics) -> None:
        for cb in self.callbacks:
            cb.on_episode_end(episode, step, metrics)

    def on_eval(self, index: int, episode: int, step: int, metrics: Metrics) -> None:
        for cb in self.callbacks:
            cb.on_eval(index, episode, step, metrics)

    def on_result(self, result: Mapping[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_result(result)

    def on_train_end(self, objective: float, status: str) -> None:
        for cb in self.callbacks:
            cb.on_train_end(objective, status)

    def close(self, error: BaseException | None = None) -> None:
        for cb in self.callbacks:
            cb.close(error)


class CsvWriter(Callback):
    """Writes episodes.csv and evals.csv; rows are flushed per eval so a killed run keeps data."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._files: dict[str, Any] = {}
        self._writers: dict[str, csv.DictWriter] = {}

    def _write(self, name: str, row: Mapping[str, Any]) -> None:
        if name not in self._writers:
            f = open(self.directory / f"{name}.csv", "w", newline="")  # noqa: SIM115
            self._files[name] = f
            self._writers[name] = csv.DictWriter(f, fieldnames=list(row))
            self._writers[name].writeheader()
        self._writers[name].writerow(row)

    def on_episode_end(self, episode: int, step: int, metrics: Metrics) -> None:
        self._write("episodes", {"episode": episode, "step": step, **metrics})

    def on_eval(self, index: int, episode: int, step: int, metrics: Metrics) -> None:
        self._write("evals", {"eval": index, "episode": episode, "step": step, **metrics})
        self.flush()

    def flush(self) -> None:
        for f in self._files.values():
            f.flush()

    def on_train_end(self, objective: float, status: str) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        self._writers.clear()


class ProgressBar(Callback):
    """A rich progress bar: episode, return, epsilon. Silent when stderr is not a terminal."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._progress = None
        self._task = None

    def on_train_start(self, info: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        total = info.get("episodes") or info.get("total_steps")
        self._by_steps = not info.get("episodes")
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            transient=True,
        )
        self._task = self._progress.add_task("train", total=total, status="")
        self._progress.start()

    def on_episode_end(self, episode: int, step: int, metrics: Metrics) -> None:
        if self._progress is None:
            return
        ret, eps = metrics.get("return", math.nan), metrics.get("epsilon", math.nan)
        self._progress.update(
            self._task,
            completed=step if self._by_steps else episode,
            status=f"ep {episode} return {ret:.1f} eps {eps:.3f}",
        )

    def on_train_end(self, objective: float, status: str) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
