"""Re-test: the best configs of a study re-trained on test seeds the sweep never saw.

Why: a config picked as the best of many on a few tuning seeds is picked partly for its luck
on those seeds, so its tuning value is optimistic (the winner's curse; Eimer et al. 2023 tune
and report on disjoint seeds, ARLBench reports the incumbent on test seeds). Re-training the
top ``k`` configs on ``m`` fresh seeds gives each an unbiased estimate with its CI, the
optimism gap (tuning minus test value) and the winner on test seeds, which may be another
config than the tuning winner (``sweeper.analysis.retest_lines`` says it).

Test seeds come from the same sweep seed as the tuning seeds, from a disjoint range
(``sweeper.seeding.replicate_seeds``). Each (config, test seed) is one plain single run: its
own MLflow run tagged ``phase=test`` and ``test_of_trial=<n>`` under the study's parent run,
reproducible from its config hash like any run. The sweeper launches these jobs at the end
of a sweep with its launcher (with ``hydra.sweeper.population`` > 1 it trains them packed,
several runs per population, one population per slot: ``sweeper.sweeps.packed_workers``);
``sweeper retest`` runs them as subprocesses. Both build the
jobs and read the results with this module. The outcome is kept in the study (user attr
``sweeper:retest``), so ``sweeper report`` shows it too.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from sweeper import study_attrs
from sweeper.analysis import RETEST_ATTR
from sweeper.statistics import estimate
from sweeper.sweeps.search_space import override_key

OVERRIDES_ATTR = study_attrs.OVERRIDES


def top_trials(study: optuna.Study, k: int) -> list[optuna.trial.FrozenTrial]:
    """The ``k`` best complete trials (by their aggregate value, the study's direction)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    ranked = sorted(complete, key=lambda t: (-t.value if maximize else t.value, t.number))
    return ranked[:k]


def job_overrides(
    trial_overrides: Sequence[str], trial_number: int, seed: int, extra: Sequence[str] = ()
) -> list[str]:
    """The overrides of one test run: the trial's config with ``seed`` set, tagged as a test
    of ``trial_number`` (no pruning: it has no ``trial.number``)."""
    keep = [
        o
        for o in trial_overrides
        if override_key(o) != "seed" and not override_key(o).startswith(("trial.", "hydra."))
    ]
    return [
        *keep,
        f"seed={int(seed)}",
        "trial.phase=test",
        f"trial.test_of={int(trial_number)}",
        *extra,
    ]


def run_cost(output_dir: Path | str | None) -> float:
    """What one test run of a trial's config will cost, estimated from the trial's tuning
    runs in ``output_dir``: their mean env steps (the last ``step`` of each
    ``seed_*/episodes.csv``); 1.0 when unknown. A config that learned runs long episodes, so
    its runs cost several times a failing config's: packed re-tests use this to give every
    slot an even share of the work, not of the runs. A balancing hint only: where the
    tuning runs' files are on another machine (a Ray or SLURM launcher) every run counts 1.0,
    and nothing the sweep reports depends on it."""
    if not output_dir:
        return 1.0
    steps = []
    for path in Path(output_dir).glob("seed_*/episodes.csv"):
        try:
            with path.open(newline="") as f:
                rows = list(csv.DictReader(f))
            if rows:
                steps.append(float(rows[-1]["step"]))
        except (OSError, KeyError, ValueError):
            continue
    return sum(steps) / len(steps) if steps else 1.0


def run_dir(root: Path, trial_number: int, seed: int) -> Path:
    return Path(root) / "test" / f"trial-{trial_number}" / f"seed_{seed}"


def read_objective(output_dir: Path) -> float | None:
    """A test run's objective from its ``result.json`` (None: missing, failed or not finite)."""
    try:
        result = json.loads((Path(output_dir) / "result.json").read_text())
    except (OSError, ValueError):
        return None
    value = result.get("objective")
    if result.get("status") != "FINISHED" or value is None or not math.isfinite(float(value)):
        return None
    return float(value)


def summarize(
    study: optuna.Study,
    trials: Sequence[optuna.trial.FrozenTrial],
    test_seeds: Sequence[int],
    test_values: Mapping[int, Sequence[float | None]],
    how: str = "iqm",
) -> dict[str, Any]:
    """Tuning vs test value per config (aggregate, 95% CI, n), the optimism gap and the
    winner on test seeds; stored in the study as ``sweeper:retest``."""
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    rows = []
    for t in trials:
        tuning_values = t.user_attrs.get("objective_per_seed") or [t.value]
        tuning = estimate([math.nan if v is None else v for v in tuning_values], how)
        values = list(test_values.get(t.number, []))
        test = estimate([math.nan if v is None else v for v in values], how)
        rows.append(
            {
                "number": t.number,
                "params": {k: v for k, v in t.params.items()},
                "tuning": _est(tuning),
                "test": _est(test),
                "test_per_seed": values,
                "optimism_gap": (
                    tuning.value - test.value if maximize else test.value - tuning.value
                )
                if test.n
                else None,
            }
        )
    tested = [r for r in rows if r["test"]["n"]]
    winner = None
    if tested:
        best = (max if maximize else min)(tested, key=lambda r: r["test"]["value"])
        winner = best["number"]
    out = {
        "aggregate": how,
        "test_seeds": list(test_seeds),
        "configs": rows,
        "tuning_winner": trials[0].number if trials else None,
        "test_winner": winner,
    }
    study.set_user_attr(RETEST_ATTR, out)
    return out


def _est(e) -> dict[str, Any]:
    return {
        "value": None if not math.isfinite(e.value) else e.value,
        "ci_low": e.low,
        "ci_high": e.high,
        "n": e.n,
        "how": e.how,
    }
