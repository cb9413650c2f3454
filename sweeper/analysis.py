"""Study analysis, in one place: what an Optuna study of the sweeper says, as plain data.

Used by the end of a sweep (``sweeper.sweeps.results``: summary table,
``optimization_results.yaml``), the MLflow parent run (``sweeper.tracking.parent``) and
``sweeper report`` (``sweeper.tracking.report``); it imports neither of those packages.

- **Counting**: :func:`counts`, :func:`tally`, :func:`n_counted` (which trials count towards
  ``n_trials``; a trial marked ``sweeper:uncounted`` does not).
- **Trials**: a trial's value is the aggregate (IQM by default, user attr ``sweeper:aggregate``)
  of its tuning seeds (``sweeper:seeds``); its per-seed values are the user attr
  ``objective_per_seed`` (and ``<metric>_per_seed`` for each metric, ``<metric>`` being their
  aggregate). :func:`replicates` gives those values, or the one value of an older trial without
  them (one replicate). :func:`trial_estimate`: the trial's value with its 95% bootstrap CI
  over seeds. :func:`best_trial`, :func:`best_summary`, :func:`ranked_trials`.
- **Importance** (:func:`importance`): Optuna's fANOVA, named and seeded (Optuna's default
  evaluator is PED-ANOVA), on the aggregated values of the COMPLETE trials; pruned trials are
  left out (their last reports are at a shorter budget) and the result says how many. Its
  uncertainty: a bootstrap over trials and, within each resampled trial, over its seeds (the
  aggregate recomputed), fANOVA refitted on each resample; per parameter a percentile interval
  and ``top_share``, the fraction of resamples where it ranked first. A parameter is said to
  matter most only when it ranked first in at least 90% of the resamples of at least
  ``MIN_TRIALS_TO_RANK`` trials; otherwise the verdict is "not enough evidence to rank", with
  the reason.
- **Marginal effects** (:func:`marginal_effects`): per parameter value (numeric parameters with
  many values in at most 5 quantile bins) the IQM and 95% CI of the per-seed values pooled over
  the complete trials there, and how many trials were pruned there.
- **Groups** (:func:`groups_table`): the ablation's arms, DQN vs Double DQN: per group the
  per-seed values of its trials pooled (one trial of 5 seeds gives n=5), IQM [95% CI] of the
  objective and of each metric.
- **Reproducing**: :func:`flatten` (``sweeper.config_hash``'s), :func:`diff_overrides`,
  :func:`expand_overrides`, :func:`best_overrides` (the sweeper's own Hydra config loader
  part stays in ``sweeper.sweeps.results``).
- :func:`study_summary`
  (everything above for one study).

``seed`` is a replicate, not a hyperparameter: it is never among the best params, nor ranked
by importance, even in an older study that swept it as a parameter.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sweeper import study_attrs
from sweeper.config_hash import flatten
from sweeper.decomposition_verdict import answer, percent
from sweeper.messages import one_line
from sweeper.statistics import AGGREGATES, CONFIDENCE, LABELS, Estimate, aggregate, estimate
from sweeper.variance_decomposition import SEED, Decomposition, Interval, decompose, full_grid
from sweeper.verdicts import Verdict

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

# the user attrs the sweeper writes on trials and studies (sweeper.study_attrs)
UNCOUNTED = study_attrs.UNCOUNTED
SEEDS_ATTR = study_attrs.SEEDS
AGGREGATE_ATTR = study_attrs.AGGREGATE
OVERRIDES_ATTR = study_attrs.OVERRIDES
FIXED_ATTR = study_attrs.FIXED_OVERRIDES
ERROR_ATTR = study_attrs.ERROR
RETEST_ATTR = study_attrs.RETEST
OUTPUT_DIR_ATTR = study_attrs.OUTPUT_DIR
SWEEP_ATTR = study_attrs.SWEEP
SAMPLER_ATTR = study_attrs.SAMPLER
OBJECTIVE = "objective"
PER_SEED = "_per_seed"

SEED_PARAMS = ("seed",)  # replicates, not hyperparameters

EVALUATOR = "fANOVA"
EXACT = "exact ANOVA"  # a full grid's importance (sweeper.variance_decomposition)
N_TREES = 16  # Optuna's default is 64; 16 keeps 100 refits to seconds
MAX_DEPTH = 64  # Optuna's default
N_BOOTSTRAP = 100
MIN_TRIALS_TO_IMPORTANCE = 3  # below this no importance at all
MIN_TRIALS_TO_RANK = 8  # below this no parameter is said to matter most
TOP_SHARE_TO_RANK = 0.9  # ranked first in at least this share of the resamples
NOT_ENOUGH = "not enough evidence to rank"
MAX_BINS = 5


# -- counting ------------------------------------------------------------------------------
def counts(t: FrozenTrial) -> bool:
    """Whether a trial counts towards n_trials: everything but stale/surplus/interrupted
    trials and queued (WAITING) trials that have not started."""
    from optuna.trial import TrialState

    if t.state == TrialState.WAITING:
        return False
    return not (t.state == TrialState.FAIL and UNCOUNTED in t.user_attrs)


def tally(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    """Trials by state: complete, pruned, failed, running (these count towards n_trials),
    waiting (queued) and uncounted (stale/surplus/interrupted)."""
    from optuna.trial import TrialState

    c = {"complete": 0, "pruned": 0, "failed": 0, "running": 0, "waiting": 0, "uncounted": 0}
    for t in trials:
        if t.state == TrialState.WAITING:
            c["waiting"] += 1
        elif not counts(t):
            c["uncounted"] += 1
        elif t.state == TrialState.COMPLETE:
            c["complete"] += 1
        elif t.state == TrialState.PRUNED:
            c["pruned"] += 1
        elif t.state == TrialState.FAIL:
            c["failed"] += 1
        else:
            c["running"] += 1
    return c


def n_counted(c: Mapping[str, int]) -> int:
    """How many trials of a tally count towards n_trials."""
    return c["complete"] + c["pruned"] + c["failed"] + c["running"]


# -- one trial -----------------------------------------------------------------------------
def _finite(value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def is_complete(t: FrozenTrial) -> bool:
    from optuna.trial import TrialState

    return t.state == TrialState.COMPLETE and _finite(t.value)


def is_pruned(t: FrozenTrial) -> bool:
    from optuna.trial import TrialState

    return t.state == TrialState.PRUNED


def aggregate_of(t: FrozenTrial) -> str:
    """How the trial's value aggregates its seeds (``iqm`` for a trial that does not say)."""
    how = t.user_attrs.get(AGGREGATE_ATTR)
    return how if how in AGGREGATES else "iqm"


def has_seeds(t: FrozenTrial) -> bool:
    """Whether the trial carries per-seed values (the per-seed data contract)."""
    return isinstance(t.user_attrs.get(OBJECTIVE + PER_SEED), (list, tuple))


def seeds_of(t: FrozenTrial) -> list[int]:
    seeds = t.user_attrs.get(SEEDS_ATTR)
    if isinstance(seeds, (list, tuple)):
        return [int(s) for s in seeds]
    if "seed" in t.params:
        return [int(t.params["seed"])]
    return []


def replicates(t: FrozenTrial, metric: str = OBJECTIVE) -> list[float]:
    """The trial's finite per-seed values of ``metric`` (``objective`` or a metric user attr):
    ``<metric>_per_seed`` when the trial has it (a seed that gave no value is left out), else
    its one value (an older trial: one replicate); [] when there is none."""
    per_seed = t.user_attrs.get(metric + PER_SEED)
    if isinstance(per_seed, (list, tuple)):
        values = [float(v) for v in per_seed if _finite(v)]
        if values:
            return values
    scalar = t.value if metric == OBJECTIVE else t.user_attrs.get(metric)
    return [float(scalar)] if _finite(scalar) else []


def trial_estimate(t: FrozenTrial, metric: str = OBJECTIVE) -> Estimate | None:
    """The trial's value of ``metric`` with its bootstrap CI over its seeds (``None`` without a
    value). The value is the trial's own (``trial.value`` for the objective); with one
    replicate there is no CI, and an older trial without per-seed values has
    ``how="value"``."""
    values = replicates(t, metric)
    if not values:
        return None
    own = t.value if metric == OBJECTIVE else t.user_attrs.get(metric)
    if not has_seeds(t) or len(values) < 2:
        value = float(own) if _finite(own) else values[0]
        how = aggregate_of(t) if has_seeds(t) else "value"
        return Estimate(value, None, None, len(values), how)
    est = estimate(values, how=aggregate_of(t))
    return dataclasses.replace(est, value=float(own)) if _finite(own) else est


def last_report(t: FrozenTrial) -> tuple[int, float] | None:
    """(step, value) of the trial's last intermediate value (for a pruned trial: where it
    stopped; an aggregate over its seeds)."""
    if not t.intermediate_values:
        return None
    step = max(t.intermediate_values)
    return step, float(t.intermediate_values[step])


def hyperparams(t: FrozenTrial) -> dict[str, Any]:
    """The trial's params without the seed (a replicate, not a hyperparameter)."""
    return {k: v for k, v in t.params.items() if k.lstrip("+~") not in SEED_PARAMS}


def format_estimate(
    value: float | None,
    low: float | None = None,
    high: float | None = None,
    n: int | None = None,
    how: str | None = None,
    unit: str = "seeds",
    confidence: float = CONFIDENCE,
) -> str:
    """``IQM 205.3, 95% CI [190.1, 220.4] (n=5 seeds)``; ``205.3`` for one run."""
    if value is None or not _finite(value):
        return "-"
    label = LABELS.get(how or "", "")
    text = f"{label} {value:.4g}".strip()
    if low is not None and high is not None:
        text += f", {confidence:.0%} CI [{low:.4g}, {high:.4g}]"
    if n is not None and (how in LABELS or n > 1):
        text += f" (n={n} {unit})" if low is not None else f" (n={n} {unit}, no CI)"
    return text


# -- best and ranked trials ----------------------------------------------------------------
def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best COMPLETE trial, or None (no complete trial; multi-objective)."""
    try:
        return study.best_trial
    except (ValueError, RuntimeError):
        return None


def best_summary(study: optuna.Study) -> dict[str, Any] | None:
    """The best trial as plain data: ``number``, ``value`` (the aggregate over its seeds),
    ``aggregate`` (None for a one-run trial), ``ci_low``/``ci_high`` (95% bootstrap over its
    seeds; None with fewer than two), ``n`` (seeds with a value), ``seeds``, ``params`` (never
    the seed) and ``per_seed``."""
    best = best_trial(study)
    if best is None:
        return None
    est = trial_estimate(best)
    out: dict[str, Any] = {
        "number": best.number,
        "value": best.value,
        "aggregate": est.how if est is not None and est.how in AGGREGATES else None,
        "ci_low": est.low if est is not None else None,
        "ci_high": est.high if est is not None else None,
        "n": est.n if est is not None else 0,
        "params": hyperparams(best),
    }
    seeds = seeds_of(best)
    if seeds:
        out["seeds"] = seeds
    if has_seeds(best):
        out["per_seed"] = [
            float(v) if _finite(v) else None for v in best.user_attrs[OBJECTIVE + PER_SEED]
        ]
    return out


def ranked_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials best first, then pruned (by their last report), then the rest."""
    sign = -1.0 if study.direction.name == "MAXIMIZE" else 1.0

    def key(t):
        if is_complete(t):
            return (0, sign * t.value, t.number)
        if is_pruned(t):
            last = last_report(t)
            value = last[1] if last is not None else math.nan
            return (1, sign * value if math.isfinite(value) else math.inf, t.number)
        return (2, 0.0, t.number)

    return sorted(study.get_trials(deepcopy=False), key=key)


# -- importance ----------------------------------------------------------------------------
@dataclass
class Importance:
    """Parameter importances with their uncertainty (see :func:`importance`)."""

    evaluator: str
    params: list[str]
    values: dict[str, float] = field(default_factory=dict)  # on all complete trials
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    top_share: dict[str, float] = field(default_factory=dict)
    n_trials: int = 0
    n_pruned: int = 0
    n_bootstrap: int = 0  # resamples drawn
    n_refits: int = 0  # resamples the evaluator could fit (a resample of equal values cannot)
    resampled: str = "trials"  # or "trials and seeds"
    most_important: str | None = None
    reason: str | None = None  # why no parameter is said to matter most
    settings: dict[str, Any] = field(default_factory=dict)
    confidence: float = CONFIDENCE
    # the seed's share of the variance (between seeds of one config), where trials have seeds
    seed_share: Interval | None = None
    # a full grid: its exact decomposition, of which ``values`` are the main effects' shares
    decomposition: Decomposition | None = None

    @property
    def available(self) -> bool:
        return bool(self.values)

    @property
    def pruned_note(self) -> str:
        if not self.n_pruned:
            return "no pruned trials"
        return (
            f"{self.n_pruned} pruned trial(s) left out of the importance "
            "(their last reports are at a shorter budget)"
        )

    @property
    def verdict(self) -> str:
        if self.decomposition is not None:
            return self.answer().details["status"]
        if self.most_important is not None:
            share = self.top_share.get(self.most_important, 0.0)
            return (
                f"{self.most_important} (ranked first in {share:.0%} of "
                f"{self.n_bootstrap} resamples)"
            )
        return f"{NOT_ENOUGH} ({self.reason})" if self.reason else NOT_ENOUGH

    @property
    def header(self) -> str:
        """``importance (fANOVA, 27 trials, pruned left out: 3)``."""
        return importance_text(self.as_dict())[0]

    def describe(self) -> str:
        """``agent.lr 0.81 [0.62, 0.93], buffer.capacity 0.11 [0.02, 0.30] (95% bootstrap CI
        over trials and seeds)``, or why there are no importances."""
        return importance_text(self.as_dict())[1]

    def ranking(self) -> dict[str, dict[str, float]]:
        """Per parameter ``importance``, ``low``, ``high``, ``top_share``, ``n_trials``,
        ``n_resamples``: the input of ``sweeper.verdicts.importance_ranking``."""
        return {
            p: {
                "importance": v,
                "low": self.ci.get(p, (math.nan, math.nan))[0],
                "high": self.ci.get(p, (math.nan, math.nan))[1],
                "top_share": self.top_share.get(p, 0.0),
                "n_trials": self.n_trials,
                "n_resamples": self.n_bootstrap,
            }
            for p, v in self.values.items()
        }

    def answer(self) -> Verdict:
        """The decomposition's answer (:func:`sweeper.decomposition_verdict.answer`)."""
        if self.decomposition is None:
            raise ValueError("only a full grid's importance is a decomposition")
        return answer(self.decomposition)

    def as_dict(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.seed_share is not None:
            extra["seed_share"] = [round(v, 4) for v in self.seed_share.as_list()]
        if self.decomposition is not None:
            extra["decomposition"] = self.decomposition.as_dict()
            extra["answer"] = self.answer().line
        return {
            "evaluator": self.evaluator,
            "settings": dict(self.settings),
            "params": list(self.params),
            "values": {k: round(v, 4) for k, v in self.values.items()},
            "ci": {k: [round(lo, 4), round(hi, 4)] for k, (lo, hi) in self.ci.items()},
            "confidence": self.confidence,
            "top_share": {k: round(v, 4) for k, v in self.top_share.items()},
            "n_trials": self.n_trials,
            "n_pruned": self.n_pruned,
            "pruned": self.pruned_note,
            "n_bootstrap": self.n_bootstrap,
            "n_refits": self.n_refits,
            "resampled": self.resampled,
            "most_important": self.most_important,
            "reason": self.reason,
            "verdict": self.verdict,
            **extra,
        }


def importance_text(imp: Mapping[str, Any]) -> tuple[str, str]:
    """(header, values) of an importance in its plain-data form (:meth:`Importance.as_dict`,
    as stored in ``optimization_results.yaml``): ``importance (fANOVA, 27 trials, pruned left
    out: 3)`` and ``agent.lr 0.81 [0.62, 0.93], ... (95% bootstrap CI over trials and seeds)``.
    """
    head = (
        f"importance ({imp.get('evaluator')}, {imp.get('n_trials')} trials, "
        f"pruned left out: {imp.get('n_pruned')})"
    )
    values = imp.get("values") or {}
    level = f"{imp.get('confidence', CONFIDENCE):.0%}"
    seed = imp.get("seed_share")
    seed_text = (
        f"the seed {percent(seed[0])}% [{percent(seed[1])}, {percent(seed[2])}]" if seed else ""
    )
    grid = imp.get("decomposition")
    if grid:
        head = (
            f"share of the variance (exact ANOVA, omega squared: {grid['n_configs']} configs x "
            f"{grid['n_seeds']} seeds)"
        )
        parts = [
            f"{name} {percent(v)}% [{percent(lo)}, {percent(hi)}]"
            for name, (v, lo, hi) in grid["shares"].items()
            if name != "seed"
        ]
        return head, ", ".join([*parts, seed_text]) + f" ({level} bootstrap CI over seeds)"
    if not values:
        return head, f"unavailable: {imp.get('reason') or imp.get('verdict')}"
    ci = imp.get("ci") or {}
    parts = []
    for name, value in values.items():
        lo_hi = ci.get(name)
        parts.append(
            f"{name} {value:.2f}" + (f" [{lo_hi[0]:.2f}, {lo_hi[1]:.2f}]" if lo_hi else "")
        )
    text = ", ".join(parts) + f" ({level} bootstrap CI over {imp.get('resampled')})"
    if seed:
        text += (
            f"; these split the hyperparameters' part only: {seed_text} of the variance "
            f"(between seeds of one config; {level} CI)"
        )
    return head, text


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """No "A new study created in memory" line per bootstrap resample."""
    import warnings

    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optuna.logging.set_verbosity(level)


def importance_params(study: optuna.Study, params: Sequence[str] | None = None) -> list[str]:
    """The parameters to rank: ``params`` (default: those of the complete trials), without the
    seed and without parameters that never varied (a single-valued distribution)."""
    complete = [t for t in study.get_trials(deepcopy=False) if is_complete(t)]
    if params is None:
        seen: dict[str, None] = {}
        for t in complete:
            seen.update(dict.fromkeys(t.params))
        params = list(seen)
    out = []
    for p in params:
        if p in SEED_PARAMS:
            continue
        dists = [t.distributions[p] for t in complete if p in t.distributions]
        if dists and not all(d.single() for d in dists):
            out.append(p)
    return out


#: Importances already computed (or being computed), by everything they are computed from.
_FITTED: OrderedDict[tuple, Future] = OrderedDict()
_FITTED_LOCK = threading.Lock()
_FITTED_MAX = 16


def importance(
    study: optuna.Study,
    params: Sequence[str] | None = None,
    *,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
    n_trees: int = N_TREES,
    max_depth: int = MAX_DEPTH,
    confidence: float = CONFIDENCE,
    min_trials: int = MIN_TRIALS_TO_RANK,
    top_share_to_rank: float = TOP_SHARE_TO_RANK,
    metric: str = OBJECTIVE,
) -> Importance:
    """fANOVA importances of ``params`` with a bootstrap over trials and seeds.

    Point values: Optuna's ``FanovaImportanceEvaluator(n_trees, max_depth, seed)`` on the
    aggregated values of the COMPLETE trials that have every parameter (normalized to sum 1,
    as Optuna's ``get_param_importances``). Pruned trials are left out (counted in
    ``n_pruned``). Uncertainty: ``n_bootstrap`` resamples, each drawing the trials with
    replacement and, within each drawn trial that has per-seed values, its seeds with
    replacement (its aggregate recomputed with ``sweeper.statistics.aggregate``), fANOVA refitted
    on an in-memory study of the resample (evaluator seed ``seed + 1 + b``). ``ci``: the
    percentile interval of the resampled importances; ``top_share``: the fraction of the
    resamples where the parameter ranked first alone (a resample that cannot be fitted or ties
    for first ranks nothing first). ``most_important`` is set only when its ``top_share`` is at
    least ``top_share_to_rank`` and there are at least ``min_trials`` trials; else ``reason``
    says why not. Deterministic in ``seed``.
    """
    names = importance_params(study, params)
    complete = [
        t
        for t in study.get_trials(deepcopy=False)
        if is_complete(t) and all(p in t.params for p in names) and replicates(t, metric)
    ]
    n_pruned = sum(1 for t in study.get_trials(deepcopy=False) if is_pruned(t))
    settings = (n_bootstrap, seed, n_trees, max_depth, confidence, min_trials, top_share_to_rank)
    # Memoized on its inputs (the data of the trials it fits, not the study object), so the
    # end of a sweep can compute it early (:func:`prefetch_importance`) and a second call
    # with the same data costs nothing; the same inputs always give the same result.
    key = (
        tuple(study.directions),
        tuple(names),
        metric,
        n_pruned,
        settings,
        tuple(
            (
                tuple(t.params[p] for p in names),
                tuple(repr(t.distributions[p]) for p in names),
                tuple(replicates(t, metric)),
                aggregate_of(t),
            )
            for t in complete
        ),
    )
    with _FITTED_LOCK:
        future = _FITTED.get(key)
        owner = future is None
        if owner:
            future = _FITTED[key] = Future()
            while len(_FITTED) > _FITTED_MAX:
                _FITTED.popitem(last=False)
    if owner:
        try:
            future.set_result(_importance(study, names, complete, n_pruned, metric, *settings))
        except BaseException as err:
            future.set_exception(err)
            with _FITTED_LOCK:
                _FITTED.pop(key, None)
            raise
    return copy.deepcopy(future.result())


def prefetch_importance(
    study: optuna.Study, requests: Sequence[tuple[Sequence[str], str]]
) -> threading.Thread:
    """Start computing :func:`importance` of ``(params, metric)`` pairs in a background
    thread, so that the bootstrap's refits (seconds) overlap other work of the sweep (its
    re-test runs train in worker processes meanwhile); a later :func:`importance` call with
    the same data waits for that result instead of refitting. Errors are left for that
    call to raise again."""

    def run() -> None:
        for params, metric in requests:
            with contextlib.suppress(Exception):
                importance(study, list(params), metric=metric)

    thread = threading.Thread(target=run, name="sweeper-importance", daemon=True)
    thread.start()
    return thread


def _importance(
    study: optuna.Study,
    names: list[str],
    complete: list[FrozenTrial],
    n_pruned: int,
    metric: str,
    n_bootstrap: int,
    seed: int,
    n_trees: int,
    max_depth: int,
    confidence: float,
    min_trials: int,
    top_share_to_rank: float,
) -> Importance:
    import optuna

    with_seeds = any(has_seeds(t) and len(replicates(t)) > 1 for t in complete)
    result = Importance(
        evaluator=EVALUATOR,
        params=names,
        n_trials=len(complete),
        n_pruned=n_pruned,
        resampled="trials and seeds" if with_seeds else "trials",
        settings={"n_trees": n_trees, "max_depth": max_depth, "seed": seed},
        confidence=confidence,
    )
    if len(study.directions) != 1:
        result.reason = "a multi-objective study"
        return result
    if len(names) < 2:
        result.reason = (
            "only one parameter varied" if names else "no parameter varied"
        ) + " (importance ranks two or more)"
        return result
    if len(complete) < MIN_TRIALS_TO_IMPORTANCE:
        result.reason = (
            f"only {len(complete)} complete trial(s), needs at least {MIN_TRIALS_TO_IMPORTANCE}"
        )
        return result
    grid = full_grid(
        [(t.params, seeds_of(t), t.user_attrs.get(metric + PER_SEED)) for t in complete], names
    )
    if not isinstance(grid, str) and not n_pruned:
        return _grid_importance(
            result, decompose(grid[0], names, grid[1], metric=metric, seed=seed)
        )
    result.seed_share = _seed_share(complete, metric, seed)
    try:
        import sklearn  # noqa: F401 - fANOVA's random forest
    except ImportError:
        result.reason = "fANOVA needs scikit-learn (pip install scikit-learn)"
        return result

    dists = {p: complete[0].distributions[p] for p in names}
    for t in complete:  # the widest distribution a trial used (a resumed study may differ)
        for p in names:
            dists[p] = _wider(dists[p], t.distributions[p])
    direction = study.direction

    def fit(values: Sequence[float], trials: Sequence[FrozenTrial], fit_seed: int):
        sub = optuna.create_study(direction=direction)
        sub.add_trials(
            [
                optuna.trial.create_trial(
                    params={p: t.params[p] for p in names}, distributions=dists, value=float(v)
                )
                for t, v in zip(trials, values)
            ]
        )
        evaluator = optuna.importance.FanovaImportanceEvaluator(
            n_trees=n_trees, max_depth=max_depth, seed=fit_seed
        )
        return optuna.importance.get_param_importances(sub, evaluator=evaluator, params=names)

    with _quiet_optuna():
        try:
            point = fit(
                [aggregate(replicates(t, metric), aggregate_of(t)) for t in complete],
                complete,
                seed,
            )
        except Exception as err:  # noqa: BLE001 - e.g. every trial the same value
            result.reason = f"{EVALUATOR} could not be fitted: {one_line(err)}"
            return result
        if not all(math.isfinite(v) for v in point.values()):
            result.reason = f"{EVALUATOR} gave non-finite importances"
            return result
        result.values = {k: float(v) for k, v in point.items()}

        reps = [replicates(t, metric) for t in complete]
        hows = [aggregate_of(t) for t in complete]
        rng = np.random.default_rng(seed)
        boot = np.full((n_bootstrap, len(names)), np.nan)
        first = np.zeros(len(names))
        refits = 0
        for b in range(n_bootstrap):
            idx = rng.integers(0, len(complete), len(complete))
            drawn, values = [], []
            for i in idx:
                r = reps[i]
                if len(r) > 1:
                    values.append(aggregate(rng.choice(r, size=len(r), replace=True), hows[i]))
                else:
                    values.append(float(r[0]))
                drawn.append(complete[i])
            try:
                imp = fit(values, drawn, seed + 1 + b)
            except Exception:  # noqa: BLE001 - a resample of equal values: no variance to split
                continue
            row = np.array([imp.get(p, 0.0) for p in names], dtype=float)
            if not np.all(np.isfinite(row)):
                continue
            refits += 1
            boot[b] = row
            top = np.flatnonzero(row == row.max())
            if len(top) == 1:
                first[top[0]] += 1
    result.n_bootstrap = n_bootstrap
    result.n_refits = refits
    if refits:
        tail = (1 - confidence) / 2 * 100
        fitted = boot[~np.isnan(boot).any(axis=1)]
        for j, p in enumerate(names):
            lo, hi = np.percentile(fitted[:, j], [tail, 100 - tail])
            result.ci[p] = (float(lo), float(hi))
    if n_bootstrap:
        result.top_share = {
            p: float(first[j] / n_bootstrap)
            for j, p in sorted(enumerate(names), key=lambda jp: -first[jp[0]])
        }
    leader = max(result.values, key=result.values.get)
    share = result.top_share.get(leader, 0.0)
    if len(complete) < min_trials:
        result.reason = f"only {len(complete)} complete trials, needs at least {min_trials}"
    elif not n_bootstrap:
        result.reason = "no bootstrap resamples"
    elif share < top_share_to_rank or max(result.top_share, key=result.top_share.get) != leader:
        top, top_share = max(result.top_share.items(), key=lambda kv: kv[1])
        result.reason = (
            f"the ranking is not stable: {top} ranked first in only {top_share:.0%} of "
            f"{n_bootstrap} resamples, needs {top_share_to_rank:.0%}"
        )
    else:
        result.most_important = leader
    return result


def _grid_importance(result: Importance, d: Decomposition) -> Importance:
    """A full grid's importance: the exact decomposition (``sweeper.variance_decomposition``),
    not a forest fitted to it; ``values`` are the main effects' shares of the variance (not
    normalized: the seed and the interactions take the rest)."""
    verdict = answer(d)
    result.evaluator = EXACT
    result.decomposition = d
    result.resampled = "seeds"
    result.settings = dict(d.settings)
    result.n_bootstrap = result.n_refits = d.n_resamples
    result.values = {p: d.shares[p].value for p in d.params}
    result.ci = {p: (d.shares[p].low, d.shares[p].high) for p in d.params}
    result.top_share = dict(sorted(d.first.items(), key=lambda kv: -kv[1]))
    result.seed_share = d.shares[SEED]
    result.most_important = verdict.details["most_important"]
    if result.most_important is None:
        result.reason = verdict.details["status"]
    return result


def _seed_share(complete: Sequence[FrozenTrial], metric: str, seed: int) -> Interval | None:
    """Where the trials are not a grid but share their tuning seeds: the seed's share of the
    variance of the per-seed values, from the same decomposition with one factor, the config
    (its share: all the hyperparameters' effects together)."""
    rows = [
        (t.params | {"config": t.number}, seeds_of(t), t.user_attrs.get(metric + PER_SEED))
        for t in complete
    ]
    grid = full_grid(rows, ["config"])
    if isinstance(grid, str):
        return None
    return decompose(grid[0], ["config"], grid[1], metric=metric, seed=seed).shares[SEED]


def _wider(a, b):
    """The wider of two distributions of one parameter (the one with more room)."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(a, CategoricalDistribution) or isinstance(b, CategoricalDistribution):
        return a if len(getattr(a, "choices", ())) >= len(getattr(b, "choices", ())) else b
    if type(a) is not type(b):
        return a
    if (a.low, a.high) == (b.low, b.high):
        return a
    low, high = min(a.low, b.low), max(a.high, b.high)
    kwargs = {"log": a.log, "step": a.step}
    if kwargs["log"]:
        kwargs.pop("step")
    return type(a)(low, high, **kwargs)


# -- marginal effects ----------------------------------------------------------------------
def _cells(
    study: optuna.Study, params: Sequence[str] | None, max_bins: int
) -> dict[str, list[tuple[dict[str, Any], list[FrozenTrial]]]]:
    """Per parameter, its values (or quantile bins) with the complete and pruned trials there."""
    from optuna.distributions import CategoricalDistribution

    trials = [t for t in study.get_trials(deepcopy=False) if is_complete(t) or is_pruned(t)]
    if params is None:
        seen: dict[str, None] = {}
        for t in trials:
            seen.update(dict.fromkeys(t.params))
        params = [p for p in seen if p not in SEED_PARAMS]
    out: dict[str, list[tuple[dict[str, Any], list[FrozenTrial]]]] = {}
    for p in params:
        here = [t for t in trials if p in t.params]
        if not here:
            continue
        categorical = isinstance(here[0].distributions[p], CategoricalDistribution)
        values = [t.params[p] for t in here]
        distinct = _distinct(values)
        if categorical or len(distinct) <= max_bins or not all(_finite(v) for v in values):
            out[p] = [
                ({"value": v, "label": _label(v)}, [t for t in here if _same(t.params[p], v)])
                for v in distinct
            ]
            continue
        x = np.array([float(v) for v in values])
        edges = np.unique(np.quantile(x, np.linspace(0, 1, max_bins + 1)))
        index = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
        cells = []
        for k in range(len(edges) - 1):
            lo, hi = float(edges[k]), float(edges[k + 1])
            members = [t for t, i in zip(here, index) if i == k]
            if members:
                closing = "]" if k == len(edges) - 2 else ")"
                center = float(np.median([float(t.params[p]) for t in members]))
                head = {"low": lo, "high": hi, "center": center}
                head["label"] = f"[{lo:.4g}, {hi:.4g}{closing}"
                cells.append((head, members))
        out[p] = cells
    return out


def marginal_effects(
    study: optuna.Study,
    params: Sequence[str] | None = None,
    *,
    max_bins: int = MAX_BINS,
    seed: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """Per parameter, per value: what the trials there gave.

    Values: each value of a categorical parameter or of one with at most ``max_bins`` distinct
    values; otherwise at most ``max_bins`` quantile bins of the values the trials used. Per
    value: ``label``, ``value`` (or ``low``/``high``/``center`` for a bin, ``center`` the median
    value of its trials), ``n_trials`` complete trials, the IQM with its 95% bootstrap CI
    (``iqm``, ``ci_low``, ``ci_high``, ``n``) of the per-seed values pooled over those trials,
    and ``n_pruned``: how many trials were pruned there (a value where most trials were pruned
    is one the pruner found weak). Pruned trials are kept out of the IQM (their last reports, an
    aggregate over their seeds, are at a shorter budget); their last reports are summarised
    apart: ``pruned_last_iqm`` and ``pruned_steps`` (the first and last step where they
    stopped).
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for p, cells in _cells(study, params, max_bins).items():
        rows = []
        for head, members in cells:
            done = [t for t in members if is_complete(t)]
            pruned = [t for t in members if is_pruned(t)]
            est = estimate([v for t in done for v in replicates(t)], seed=seed)
            row = dict(head)
            row["n_trials"] = len(done)
            row["iqm"] = est.value if est.n else None
            row.update({"ci_low": est.low, "ci_high": est.high, "n": est.n})
            row["n_pruned"] = len(pruned)
            lasts = [r for r in (last_report(t) for t in pruned) if r is not None]
            if lasts:
                row["pruned_last_iqm"] = aggregate([v for _, v in lasts])
                row["pruned_steps"] = [min(s for s, _ in lasts), max(s for s, _ in lasts)]
            rows.append(row)
        out[p] = rows
    return out


def effect_replicates(
    study: optuna.Study,
    params: Sequence[str] | None = None,
    *,
    max_bins: int = MAX_BINS,
    metric: str = OBJECTIVE,
) -> dict[str, dict[Any, list[float]]]:
    """The raw data behind :func:`marginal_effects`: per parameter, ``{value: [per-seed values
    of ``metric`` of the complete trials there]}`` (a bin keyed by its ``center``), the input
    of ``sweeper.figures.marginal_effects``."""
    out: dict[str, dict[Any, list[float]]] = {}
    for p, cells in _cells(study, params, max_bins).items():
        by_value = {
            head.get("value", head.get("center")): [
                v for t in members if is_complete(t) for v in replicates(t, metric)
            ]
            for head, members in cells
        }
        out[p] = {k: v for k, v in by_value.items() if v}
    return out


def _same(a: Any, b: Any) -> bool:
    return a == b and type(a) is type(b)


def _distinct(values: Sequence[Any]) -> list[Any]:
    seen: list[Any] = []
    for v in values:
        if not any(_same(v, s) for s in seen):
            seen.append(v)
    try:
        return sorted(seen)
    except TypeError:
        return seen


def _label(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# -- groups --------------------------------------------------------------------------------
def groups_table(
    study: optuna.Study, group_by: Sequence[str], metrics: Sequence[str] = (), seed: int = 0
) -> list[dict[str, Any]]:
    """Complete trials grouped by the values of ``group_by`` params (the ablation's arms, DQN
    vs Double DQN). Per group: ``n`` (the per-seed values pooled over the group's trials: one
    trial of 5 seeds, or 5 one-seed trials, give n=5), ``n_trials``, and the IQM with its 95%
    bootstrap CI of the objective (``objective_iqm``, ``objective_ci_low``,
    ``objective_ci_high``) and of each metric (``<metric>_iqm``, ...: the ``<metric>_per_seed``
    user attr pooled, or the one ``<metric>`` of an older trial; ``<metric>_iqm`` is None when
    no trial has it)."""
    rows: dict[tuple, list[FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False):
        if is_complete(t):
            rows.setdefault(tuple(t.params.get(g) for g in group_by), []).append(t)
    out = []
    for key, trials in sorted(rows.items(), key=lambda kv: str(kv[0])):
        row: dict[str, Any] = {g: k for g, k in zip(group_by, key, strict=True)}
        est = estimate([v for t in trials for v in replicates(t)], seed=seed)
        row["n"] = est.n
        row["n_trials"] = len(trials)
        row.update(_rounded(est.as_dict("objective_")))
        row.pop("objective_n", None)
        for m in metrics:
            values = [v for t in trials for v in replicates(t, m)]
            if values:
                row.update(_rounded(estimate(values, seed=seed).as_dict(f"{m}_")))
                row.pop(f"{m}_n", None)
            else:
                row[f"{m}_iqm"] = None
        out.append(row)
    return out


def _rounded(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}


# -- a run's extra metrics -----------------------------------------------------------------
def group_overrides(
    choices: Mapping[str, Any], default_choices: Mapping[str, Any], groups: Sequence[str] = ()
) -> list[str]:
    """``group=option`` for the config groups (``groups``, default: all but ``hydra/``) whose
    choice differs from the default config's."""
    names = list(groups) or [g for g in default_choices if not str(g).startswith("hydra/")]
    return [
        f"{g}={choices[g]}"
        for g in names
        if g in choices and choices[g] is not None and choices[g] != default_choices.get(g)
    ]


def diff_overrides(want: Mapping[str, Any], have: Mapping[str, Any]) -> list[str]:
    """Overrides that turn the flat config ``have`` into ``want``: changed values, ``+new``
    ones, then ``~removed`` ones (values written so Hydra parses them back the same)."""
    from sweeper.overrides import format_value

    values = []
    for key, value in want.items():
        if key not in have:
            values.append(f"+{key}={format_value(value)}")
        elif have[key] != value:
            values.append(f"{key}={format_value(value)}")
    values += [f"~{key}" for key in have if key not in want]
    return values


CONFIG_GROUPS = ("agent", "env", "buffer")


def expand_overrides(overrides: Sequence[str]) -> list[str]:
    """Overrides of the default config that give the same semantic config as ``overrides``
    (group choices first, then the values that differ), composed with Hydra's compose API on
    the sweeper's own config. Raises if the result's config hash differs from the
    original's."""
    from hydra import compose, initialize_config_dir

    from sweeper.config import CONF_DIR, register_configs
    from sweeper.config_hash import config_hash, semantic_config

    register_configs()
    with initialize_config_dir(
        version_base="1.3", config_dir=str(CONF_DIR), job_name="sweeper_report"
    ):
        want_cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
        choices = dict(want_cfg.hydra.runtime.choices)
        base_cfg = compose(
            "config", overrides=[f"{g}={choices[g]}" for g in CONFIG_GROUPS if g in choices]
        )
        values = diff_overrides(
            flatten(semantic_config(want_cfg)), flatten(semantic_config(base_cfg))
        )
        default = compose("config", overrides=[], return_hydra_config=True)
        groups = group_overrides(choices, dict(default.hydra.runtime.choices), CONFIG_GROUPS)
        result = groups + values
        check = compose("config", overrides=result)
    if config_hash(check) != config_hash(want_cfg):
        raise ValueError("expanded overrides do not reproduce the config")
    return result


def best_overrides(study: optuna.Study, best: FrozenTrial) -> list[str]:
    """The best trial's config as overrides for a plain ``python -m sweeper.train`` run.

    From the trial's recorded overrides (the sweeper stores them) when they compose here:
    expanded against the default config (a ``+sweep=...`` override would start a sweep), so
    that the command gives the trial's exact semantic config (checked by config hash). Else
    the recorded overrides, else the study's fixed overrides plus the sampled params."""
    from sweeper.overrides import format_value

    recorded = best.user_attrs.get(OVERRIDES_ATTR)
    if recorded:
        recorded = [o for o in recorded if not o.startswith(("trial.", "hydra."))]
        try:
            return expand_overrides(recorded)
        except Exception:  # noqa: BLE001 - composition failed here: show what the sweep had
            return recorded
    fixed = list(study.user_attrs.get(FIXED_ATTR, []))
    return fixed + [f"{k}={format_value(v)}" for k, v in best.params.items()]


# -- a whole study -------------------------------------------------------------------------
def study_summary(
    study: optuna.Study,
    params: Sequence[str] | None = None,
    *,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
    effects: bool = True,
) -> dict[str, Any]:
    """Counts, the best trial and the importance (with uncertainty) of a study, plain data:
    ``study_name``, ``direction``, ``trials`` (:func:`tally`, plus ``counted``), ``best``
    (:func:`best_summary`), ``importance`` (:meth:`Importance.as_dict`), ``most_important``
    (a parameter or None) and ``marginal_effects``."""
    trials = study.get_trials(deepcopy=False)
    c = tally(trials)
    single = len(study.directions) == 1
    summary: dict[str, Any] = {
        "study_name": study.study_name,
        "direction": study.direction.name.lower() if single else "multi",
        "trials": {**c, "counted": n_counted(c)},
        "best": best_summary(study),
    }
    imp = importance(study, params, n_bootstrap=n_bootstrap, seed=seed)
    summary["importance"] = imp.as_dict()
    summary["most_important"] = imp.most_important
    if effects:
        summary["marginal_effects"] = marginal_effects(
            study, imp.params or importance_params(study, params), seed=seed
        )
    return summary


__all__ = [
    "AGGREGATE_ATTR",
    "EVALUATOR",
    "Importance",
    "MIN_TRIALS_TO_RANK",
    "NOT_ENOUGH",
    "SEEDS_ATTR",
    "SEED_PARAMS",
    "TOP_SHARE_TO_RANK",
    "UNCOUNTED",
    "best_overrides",
    "best_summary",
    "best_trial",
    "counts",
    "diff_overrides",
    "expand_overrides",
    "flatten",
    "format_estimate",
    "group_overrides",
    "groups_table",
    "hyperparams",
    "importance",
    "importance_params",
    "importance_text",
    "effect_replicates",
    "marginal_effects",
    "n_counted",
    "ranked_trials",
    "replicates",
    "study_summary",
    "tally",
    "trial_estimate",
]


def _describe(e: Mapping[str, Any]) -> str:
    """``IQM 251.3 [212.0, 290.1] (n=10)``; ``-`` when nothing finished."""
    if not e or not e.get("n"):
        return "-"
    label = LABELS.get(e.get("how", "iqm"), e.get("how", ""))
    if e.get("ci_low") is None:
        return f"{label} {e['value']:.4g} (n={e['n']}, no CI)"
    return f"{label} {e['value']:.4g} [{e['ci_low']:.4g}, {e['ci_high']:.4g}] (n={e['n']})"


def retest_lines(retest: Mapping[str, Any]) -> list[str]:
    """One line per re-tested config and one naming the winners, for summaries and reports."""
    out = []
    for r in retest.get("configs", []):
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        gap = r.get("optimism_gap")
        out.append(
            f"trial {r['number']} ({params}): tuning {_describe(r['tuning'])}, "
            f"test {_describe(r['test'])}"
            + (f", optimism gap {gap:+.4g}" if gap is not None else "")
        )
    n_seeds = len(retest.get("test_seeds", []))
    tw, sw = retest.get("tuning_winner"), retest.get("test_winner")
    if sw is None:
        out.append("winner on test seeds: none (no test run finished)")
    elif sw == tw:
        out.append(f"winner on {n_seeds} test seeds: trial {sw}, also the tuning winner")
    else:
        out.append(
            f"winner on {n_seeds} test seeds: trial {sw}, not the tuning winner (trial {tw})"
        )
    return out
