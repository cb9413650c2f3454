"""Replicates: one config trained on N seeds, advanced in lockstep, judged by their aggregate.

Why a unit of its own: returns over seeds are the sample a config's value is estimated from,
not noise to tune away (Agarwal et al. 2021; Eimer et al. 2023). A trial of the Optuna sweeper
is "N replicates of one config": its value is their aggregate (IQM by default, with a 95%
bootstrap CI from ``sweeper.statistics``), and what its pruner sees after each evaluation
period is the aggregate of the N evaluations, never one lucky seed. The replicates train
together as one population (``sweeper.training.Population``: one batched update for all
seeds), and :func:`lockstep` turns the members' evaluations into rounds of the group.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass

from sweeper.statistics import aggregate, estimate
from sweeper.training import DivergenceError, Ended, EvalPoint, advance

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


def lockstep(
    events: Generator[EvalPoint | Ended, None, None],
    seeds: Sequence[int],
    how: str,
    on_round: Callable[[Round], None],
) -> list[float]:
    """Drive a population whose member ``k`` is the replicate of ``seeds[k]``
    (:class:`~sweeper.training.Population` events); call ``on_round`` once every replicate
    has reached evaluation ``j`` or ended (it may raise, e.g. to prune the group); return
    each replicate's objective.

    A replicate that fails ends the group: a divergence names its seed (the others' files
    stay as far as they got)."""
    points: list[list[EvalPoint]] = [[] for _ in seeds]
    objectives: list[float | None] = [None] * len(seeds)
    index = 0

    def publish() -> None:
        nonlocal index
        while True:
            ready = all(len(p) > index or o is not None for p, o in zip(points, objectives))
            reached = any(len(p) > index for p in points)
            if not (ready and reached):
                return
            latest = tuple(p[min(index, len(p) - 1)] if p else None for p in points)
            present = [p for p in latest if p is not None]
            on_round(
                Round(
                    index=index,
                    episode=max(p.episode for p in present),
                    step=max(p.step for p in present),
                    metrics=summarize(latest, how),
                    points=latest,
                )
            )
            index += 1

    while True:
        event, _ = advance(events)
        if event is None:
            break
        k = event.member
        if isinstance(event, Ended):
            err = event.error
            if isinstance(err, DivergenceError):
                raise DivergenceError(
                    err.episode, err.step, f"{err.what} (seed {seeds[k]})"
                ) from err
            if err is not None:
                err.add_note(f"in the replicate with seed {seeds[k]}")
                raise err
            objectives[k] = event.objective
        else:
            points[k].append(event)
        publish()
    return [float(o) for o in objectives]  # type: ignore[arg-type]


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
        "sweeper:seeds": list(seeds),
        "sweeper:aggregate": how,
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
