"""Replicates: one config trained on N seeds, advanced in lockstep, judged by their aggregate.

Why a unit of its own: returns over seeds are the sample a config's value is estimated from,
not noise to tune away (Agarwal et al. 2021; Eimer et al. 2023). A trial of the Optuna sweeper
is "N replicates of one config": its value is their aggregate (IQM by default, with a 95%
bootstrap CI from ``sweeper.statistics``), and what its pruner sees after each evaluation
period is the aggregate of the N evaluations, never one lucky seed. The replicates train
together as members of one population (``sweeper.training.Population``: one batched update
for all seeds), and :class:`Rounds` turns the members' evaluations into rounds of the group.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sweeper import study_attrs
from sweeper.statistics import aggregate, estimate
from sweeper.training import EvalPoint

#: The evaluation metric a pruner judges (its aggregate over the replicates).
REPORT_KEY = "eval_return_mean"


@dataclass(frozen=True)
class Round:
    """One evaluation period of the whole group: the aggregate of each metric over the
    replicates (under the metric's own name), the CI of the reported one, and each replicate's
    latest point (a replicate that stopped early, e.g. solved, keeps its last evaluation)."""

    index: int
    episode: int
    step: int
    metrics: dict[str, float]
    points: tuple[EvalPoint | None, ...]


def summarize(points: Sequence[EvalPoint | None], how: str) -> dict[str, float]:
    """Per metric, the ``how`` aggregate over the replicates' points; for the reported metric
    also its 95% CI (``<key>_ci_low``/``_ci_high``) and ``n``."""
    present = [p for p in points if p is not None]
    keys = list(dict.fromkeys(k for p in present for k in p.metrics))
    out = {k: aggregate([p.metrics.get(k, math.nan) for p in present], how) for k in keys}
    if REPORT_KEY in out:
        est = estimate([p.metrics[REPORT_KEY] for p in present if REPORT_KEY in p.metrics], how)
        out[f"{REPORT_KEY}_ci_low"] = math.nan if est.low is None else est.low
        out[f"{REPORT_KEY}_ci_high"] = math.nan if est.high is None else est.high
        out["n"] = float(est.n)
    return out


class Rounds:
    """Turns the evaluations of N replicates, which arrive in any order (each member of a
    population evaluates on its own schedule), into the group's rounds: round ``j`` is due
    once every replicate has reached its evaluation ``j`` or ended; a replicate that ended
    early (e.g. solved) keeps its last evaluation."""

    def __init__(self, n: int, how: str) -> None:
        self.how = how
        self.points: list[list[EvalPoint]] = [[] for _ in range(n)]
        self.ended = [False] * n
        self.index = 0

    def add(self, row: int, point: EvalPoint) -> list[Round]:
        self.points[row].append(point)
        return self._due()

    def end(self, row: int) -> list[Round]:
        self.ended[row] = True
        return self._due()

    def _due(self) -> list[Round]:
        out = []
        j = self.index
        while all(len(p) > j or e for p, e in zip(self.points, self.ended)) and any(
            len(p) > j for p in self.points
        ):
            latest = tuple(p[min(j, len(p) - 1)] if p else None for p in self.points)
            present = [p for p in latest if p is not None]
            out.append(
                Round(
                    index=j,
                    episode=max(p.episode for p in present),
                    step=max(p.step for p in present),
                    metrics=summarize(latest, self.how),
                    points=latest,
                )
            )
            j += 1
        self.index = j
        return out


def group_result(
    seeds: Sequence[int],
    objectives: Sequence[float | None],
    metrics: Mapping[str, Sequence[float | None]],
    how: str,
) -> dict[str, object]:
    """The group's record (its ``result.json`` fields and the trial's user attrs): the
    objective's aggregate with n and 95% CI, each replicate's objective, and per metric the
    aggregate and the per-seed values (``<metric>_per_seed``, aligned with ``seeds``)."""
    est = estimate([math.nan if o is None else o for o in objectives], how)
    out: dict[str, object] = {
        study_attrs.SEEDS: list(seeds),
        study_attrs.AGGREGATE: how,
        "objective_per_seed": [_num(o) for o in objectives],
        f"objective_{how}": _num(est.value),
        "objective_ci_low": est.low,
        "objective_ci_high": est.high,
        "objective_n": est.n,
    }
    for name, values in metrics.items():
        out[f"{name}_per_seed"] = [_num(v) for v in values]
        out[name] = _num(aggregate([math.nan if v is None else v for v in values], how))
    return out


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)
