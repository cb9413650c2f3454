"""``sweeper.analysis`` on real in-memory Optuna studies: per-seed trials (the sweeper's data
contract), older one-run trials, pruned trials; fANOVA importances with their bootstrap, the
verdict, marginal effects, grouped arms, and the end-of-sweep summary built from them."""

from __future__ import annotations

import itertools
import math
import re
import time

import numpy as np
import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from scipy import stats

from sweeper import analysis
from sweeper.statistics import aggregate, estimate

LRS = [1e-4, 1e-3, 1e-2]
FREQS = [10, 100, 500]
CAPS = [1000, 10000, 50000]
GRID = {
    "agent.lr": CategoricalDistribution(LRS),
    "agent.target_update_freq": CategoricalDistribution(FREQS),
    "buffer.capacity": CategoricalDistribution(CAPS),
}


def add(
    study,
    params,
    dists,
    per_seed=None,
    *,
    value=None,
    how="iqm",
    seeds=None,
    metrics=None,
    state=TrialState.COMPLETE,
    intermediate=None,
    attrs=None,
):
    """A trial as the sweeper stores it: with ``per_seed`` the per-seed contract (value = the
    aggregate, ``objective_per_seed``, ``<metric>_per_seed``...), else an older one-run trial."""
    user_attrs = dict(attrs or {})
    if per_seed is not None:
        seeds = list(range(len(per_seed))) if seeds is None else seeds
        finite = [v for v in per_seed if v is not None]  # a seed that gave no value: None
        est = estimate(finite, how)
        user_attrs.update(
            {
                "sweeper:seeds": seeds,
                "sweeper:aggregate": how,
                "objective_per_seed": list(per_seed),
                "objective_iqm": aggregate(finite, "iqm"),
                "objective_ci_low": est.low,
                "objective_ci_high": est.high,
                "objective_n": est.n,
            }
        )
        value = aggregate(finite, how)
        for name, values in (metrics or {}).items():
            user_attrs[f"{name}_per_seed"] = list(values)
            user_attrs[name] = aggregate(values, how)
    elif metrics:
        user_attrs.update(metrics)
    study.add_trial(
        optuna.trial.create_trial(
            params=params,
            distributions={k: dists[k] for k in params},
            value=value if state == TrialState.COMPLETE else None,
            state=state,
            intermediate_values=intermediate,
            user_attrs=user_attrs,
        )
    )
    return study.trials[-1]


def driven_study(n_seeds=3, noise=5.0, seed=1, full=True):
    """27 configs (lr x target_update_freq x capacity), each the IQM of ``n_seeds`` seeds;
    the value is 100 * lr index plus per-seed noise: lr drives it, nothing else does. Not
    ``full``: the last config left out, so the trials are not a grid (fANOVA's case)."""
    rng = np.random.default_rng(seed)
    study = optuna.create_study(direction="maximize")
    configs = list(itertools.product(LRS, FREQS, CAPS))
    for lr, freq, cap in configs if full else configs[:-1]:
        per_seed = [100.0 * LRS.index(lr) + rng.normal(0, noise) for _ in range(n_seeds)]
        params = {"agent.lr": lr, "agent.target_update_freq": freq, "buffer.capacity": cap}
        add(study, params, GRID, per_seed)
    return study


# -- counting ------------------------------------------------------------------------------
def test_tally_counts_what_counts():
    study = optuna.create_study()
    d = {"x": FloatDistribution(0, 1)}
    add(study, {"x": 0.1}, d, value=1.0)
    add(study, {"x": 0.2}, d, state=TrialState.PRUNED, intermediate={10: 0.5})
    add(study, {"x": 0.3}, d, state=TrialState.FAIL)
    add(study, {"x": 0.4}, d, state=TrialState.FAIL, attrs={analysis.UNCOUNTED: "stale"})
    study.enqueue_trial({"x": 0.5})
    c = analysis.tally(study.get_trials(deepcopy=False))
    assert c == {
        "complete": 1,
        "pruned": 1,
        "failed": 1,
        "running": 0,
        "waiting": 1,
        "uncounted": 1,
    }
    assert analysis.n_counted(c) == 3
    assert analysis.UNCOUNTED == "sweeper:uncounted"


# -- importance ----------------------------------------------------------------------------
def test_importance_names_the_parameter_that_drives_the_value():
    study = driven_study(full=False)
    start = time.perf_counter()
    imp = analysis.importance(study, list(GRID))
    elapsed = time.perf_counter() - start
    assert elapsed < 60  # ~5 s on the 2-core machine (100 refits of a 16-tree forest)
    assert imp.evaluator == "fANOVA" and imp.settings["n_trees"] == analysis.N_TREES
    assert imp.n_trials == 26 and imp.n_pruned == 0
    assert imp.resampled == "trials and seeds"
    assert imp.n_bootstrap == 100 and imp.n_refits == 100
    assert imp.most_important == "agent.lr"
    assert imp.top_share["agent.lr"] >= 0.9
    assert imp.verdict.startswith("agent.lr (ranked first in ")
    assert "of 100 resamples" in imp.verdict
    assert list(imp.values)[0] == "agent.lr" and sum(imp.values.values()) == pytest.approx(1)
    for name, value in imp.values.items():  # each point value inside its bootstrap interval
        low, high = imp.ci[name]
        assert low <= value <= high, (name, low, value, high)
    assert sum(imp.top_share.values()) <= 1.0
    d = imp.as_dict()
    assert d["evaluator"] == "fANOVA" and d["n_trials"] == 26 and d["n_pruned"] == 0
    assert set(d["ci"]) == set(d["values"]) == set(d["top_share"]) == set(GRID)
    assert d["verdict"] == imp.verdict and d["most_important"] == "agent.lr"
    ranking = imp.ranking()["agent.lr"]
    assert ranking["n_resamples"] == 100 and ranking["low"] <= ranking["importance"]
    yaml.safe_dump(d)  # plain data


def test_importance_is_fitted_once_per_data_and_can_be_prefetched(monkeypatch):
    """The end of a sweep starts the bootstrap in a background thread while its re-test
    trains; the summary's call then takes that result. A result is reused only for the same
    data: a new trial, or one changed per-seed value, refits."""
    study = driven_study(n_seeds=3, seed=5, full=False)
    fits = []
    fit = analysis._importance
    monkeypatch.setattr(analysis, "_importance", lambda *a: fits.append(a) or fit(*a))
    monkeypatch.setattr(analysis, "_FITTED", type(analysis._FITTED)())
    thread = analysis.prefetch_importance(study, [(list(GRID), analysis.OBJECTIVE)])
    first = analysis.importance(study, list(GRID), n_bootstrap=20)  # other settings: its own
    thread.join()
    prefetched = analysis.importance(study, list(GRID))
    assert len(fits) == 2
    again = analysis.importance(study, list(GRID))
    assert len(fits) == 2 and again == prefetched and again is not prefetched
    again.values.clear()  # a caller's copy: the stored result is untouched
    assert analysis.importance(study, list(GRID)) == prefetched
    analysis._FITTED.clear()
    assert analysis.importance(study, list(GRID)) == prefetched  # as computed afresh
    assert first != prefetched and first.n_bootstrap == 20
    assert len(fits) == 3
    add(
        study,
        {"agent.lr": 1e-2, "agent.target_update_freq": 10, "buffer.capacity": 1000},
        GRID,
        [250.0, 240.0, 260.0],
    )
    assert analysis.importance(study, list(GRID)).n_trials == 27 and len(fits) == 4
    changed = optuna.create_study(direction="maximize")
    for i, t in enumerate(driven_study(n_seeds=3, seed=5, full=False).trials):
        per_seed = list(t.user_attrs["objective_per_seed"])
        per_seed[0] += 1.0 if i == 0 else 0.0  # one seed's value of one trial differs
        add(changed, t.params, GRID, per_seed)
    analysis.importance(changed, list(GRID))
    assert len(fits) == 5


def test_four_trials_are_not_enough_to_rank():
    study = optuna.create_study(direction="maximize")
    for lr, freq in [(1e-4, 10), (1e-3, 100), (1e-2, 500), (1e-2, 10)]:
        add(
            study,
            {"agent.lr": lr, "agent.target_update_freq": freq},
            GRID,
            [100.0 * LRS.index(lr) + s for s in range(3)],
            seeds=[7, 8, 9],
        )
    imp = analysis.importance(study, n_bootstrap=30)
    assert imp.n_trials == 4 and imp.most_important is None
    assert imp.verdict.startswith(analysis.NOT_ENOUGH)
    assert imp.verdict == (
        "not enough evidence to rank (only 4 complete trials, needs at least "
        f"{analysis.MIN_TRIALS_TO_RANK})"
    )
    assert imp.values and set(imp.ci) == set(imp.values)  # the numbers are still given
    # one parameter (the other fixed): nothing to rank
    one = optuna.create_study()
    for i in range(10):
        add(
            one,
            {"x": i / 10, "seed": i % 2},
            {"x": FloatDistribution(0, 1), "seed": CategoricalDistribution([0, 1])},
            value=float(i),
        )
    imp = analysis.importance(one)
    assert imp.params == ["x"] and not imp.available  # the seed is no hyperparameter
    assert imp.verdict.startswith(analysis.NOT_ENOUGH) and "only one parameter" in imp.verdict


def test_an_unstable_ranking_is_not_a_ranking():
    """Two parameters that move the value alike: neither ranks first in 90% of resamples."""
    rng = np.random.default_rng(0)
    study = optuna.create_study(direction="maximize")
    d = {"a": FloatDistribution(0, 1), "b": FloatDistribution(0, 1)}
    for _ in range(16):
        a, b = rng.uniform(0, 1, 2)
        add(study, {"a": a, "b": b}, d, [a + b + rng.normal(0, 0.05) for _ in range(3)])
    imp = analysis.importance(study, n_bootstrap=40)
    assert imp.n_trials == 16 and imp.most_important is None
    assert max(imp.top_share.values()) < analysis.TOP_SHARE_TO_RANK
    assert re.fullmatch(
        r"not enough evidence to rank \(the ranking is not stable: [ab] ranked first in only "
        r"\d+% of 40 resamples, needs 90%\)",
        imp.verdict,
    ), imp.verdict


def test_pruned_trials_are_left_out_of_importance_and_counted_in_marginal_effects():
    study = driven_study()
    for lr in LRS[:2]:  # the pruner stopped low-lr configs early
        for freq in FREQS:
            add(
                study,
                {"agent.lr": lr, "agent.target_update_freq": freq, "buffer.capacity": 1000},
                GRID,
                state=TrialState.PRUNED,
                intermediate={20: 1.0 + FREQS.index(freq), 40: 2.0 + FREQS.index(freq)},
            )
    imp = analysis.importance(study, n_bootstrap=10)
    assert imp.n_trials == 27 and imp.n_pruned == 6
    assert imp.header == "importance (fANOVA, 27 trials, pruned left out: 6)"
    assert imp.pruned_note.startswith("6 pruned trial(s) left out of the importance")
    effects = analysis.marginal_effects(study, ["agent.lr", "agent.target_update_freq"])
    by_lr = {row["value"]: row for row in effects["agent.lr"]}
    assert [by_lr[lr]["n_pruned"] for lr in LRS] == [3, 3, 0]
    assert by_lr[1e-4]["pruned_steps"] == [40, 40]  # their last reports
    assert by_lr[1e-4]["pruned_last_iqm"] == pytest.approx(aggregate([2.0, 3.0, 4.0]))
    assert "pruned_last_iqm" not in by_lr[1e-2]
    for lr in LRS:  # complete trials only, seeds pooled: 9 configs x 3 seeds
        row = by_lr[lr]
        pooled = [
            v
            for t in study.trials
            if t.state == TrialState.COMPLETE and t.params["agent.lr"] == lr
            for v in t.user_attrs["objective_per_seed"]
        ]
        assert row["n_trials"] == 9 and row["n"] == 27 == len(pooled)
        est = estimate(pooled)
        assert (row["iqm"], row["ci_low"], row["ci_high"]) == (est.value, est.low, est.high)


def test_continuous_parameters_are_binned_by_quantiles():
    rng = np.random.default_rng(3)
    study = optuna.create_study()
    d = {"lr": FloatDistribution(1e-4, 1e-2, log=True), "k": IntDistribution(1, 3)}
    for _ in range(23):
        add(
            study,
            {"lr": float(rng.uniform(1e-4, 1e-2)), "k": int(rng.integers(1, 4))},
            d,
            list(rng.normal(0, 1, 2)),
        )
    effects = analysis.marginal_effects(study)
    assert set(effects) == {"lr", "k"}
    assert 2 <= len(effects["lr"]) <= 5
    assert sum(row["n_trials"] for row in effects["lr"]) == 23
    assert sum(row["n"] for row in effects["lr"]) == 46  # two seeds per trial
    lows = [row["low"] for row in effects["lr"]]
    assert lows == sorted(lows) and all(r["low"] <= r["center"] <= r["high"] for r in effects["lr"])
    assert [row["value"] for row in effects["k"]] == [1, 2, 3]  # few values: each its own
    raw = analysis.effect_replicates(study)
    assert sorted(raw["k"]) == [1, 2, 3]
    assert sum(len(v) for v in raw["lr"].values()) == 46


# -- groups --------------------------------------------------------------------------------
def test_groups_pool_the_seeds_of_their_trials():
    study = optuna.create_study(direction="maximize")
    d = {"agent.double": CategoricalDistribution([False, True])}
    rng = np.random.default_rng(2)
    pooled: dict[bool, dict[str, list[float]]] = {}
    for double, n_trials in ((False, 1), (True, 2)):
        for _ in range(n_trials):
            per_seed = list(rng.normal(200 if double else 150, 20, 5))
            max_q = list(rng.normal(10 if double else 14, 1, 5))
            add(study, {"agent.double": double}, d, per_seed, metrics={"mean_max_q": max_q})
            pooled.setdefault(double, {"objective": [], "mean_max_q": []})
            pooled[double]["objective"] += per_seed
            pooled[double]["mean_max_q"] += max_q
    rows = {
        r["agent.double"]: r
        for r in analysis.groups_table(study, ["agent.double"], ["mean_max_q", "missing"])
    }
    assert rows[False]["n"] == 5 and rows[False]["n_trials"] == 1  # one trial of 5 seeds
    assert rows[True]["n"] == 10 and rows[True]["n_trials"] == 2
    for arm, row in rows.items():
        for m in ("objective", "mean_max_q"):
            est = estimate(pooled[arm][m])
            assert row[f"{m}_iqm"] == round(est.value, 4)
            assert row[f"{m}_ci_low"] == round(est.low, 4)
            assert row[f"{m}_ci_high"] == round(est.high, 4)
        assert row["missing_iqm"] is None


# -- older trials, best trial --------------------------------------------------------------
def test_old_style_trials_without_per_seed_attrs_still_work():
    study = optuna.create_study(direction="maximize")
    d = {**GRID, "seed": CategoricalDistribution([0, 1, 2])}
    rng = np.random.default_rng(4)
    for lr, freq, seed in itertools.product(LRS, FREQS, (0, 1, 2)):
        add(
            study,
            {"agent.lr": lr, "agent.target_update_freq": freq, "seed": seed},
            d,
            value=100.0 * LRS.index(lr) + rng.normal(0, 1),
            metrics={"mean_max_q": 3.0},
        )
    best = study.best_trial
    assert analysis.replicates(best) == [best.value]
    est = analysis.trial_estimate(best)
    assert (est.value, est.low, est.high, est.n) == (best.value, None, None, 1)
    summary = analysis.best_summary(study)
    assert summary["value"] == best.value and summary["n"] == 1
    assert summary["aggregate"] is None and summary["ci_low"] is None
    assert "seed" not in summary["params"] and summary["seeds"] == [best.params["seed"]]
    assert "per_seed" not in summary
    assert analysis.format_estimate(summary["value"], None, None, 1, None) == (f"{best.value:.4g}")
    imp = analysis.importance(study, n_bootstrap=20)
    assert imp.params == ["agent.lr", "agent.target_update_freq"]  # never the seed
    assert imp.resampled == "trials" and imp.n_trials == 27
    rows = {r["agent.lr"]: r for r in analysis.groups_table(study, ["agent.lr"], ["mean_max_q"])}
    assert rows[1e-2]["n"] == 9 and rows[1e-2]["mean_max_q_iqm"] == 3.0
    values = [t.value for t in study.trials if t.params["agent.lr"] == 1e-2]
    assert rows[1e-2]["objective_iqm"] == round(stats.trim_mean(values, 0.25), 4)
    s = analysis.study_summary(study, n_bootstrap=5)
    assert s["trials"]["complete"] == 27 and s["best"]["number"] == best.number
    assert "seed" not in s["marginal_effects"]


def test_best_summary_is_the_aggregate_with_its_ci_over_seeds():
    study = optuna.create_study(direction="minimize")
    d = {"x": FloatDistribution(0, 1)}
    add(
        study,
        {"x": 0.5},
        d,
        [3.0, 1.0, 2.0, 9.0, None, 2.5],
        how="median",
        seeds=[5, 6, 7, 8, 9, 10],
    )
    add(study, {"x": 0.6}, d, [30.0, 31.0])
    best = analysis.best_summary(study)
    finite = [3.0, 1.0, 2.0, 9.0, 2.5]
    est = estimate(finite, "median")
    assert best["number"] == 0 and best["value"] == study.best_value == np.median(finite)
    assert (best["ci_low"], best["ci_high"], best["n"]) == (est.low, est.high, 5)
    assert best["aggregate"] == "median" and best["seeds"] == [5, 6, 7, 8, 9, 10]
    assert best["per_seed"] == [3.0, 1.0, 2.0, 9.0, None, 2.5]
    text = analysis.format_estimate(
        best["value"], best["ci_low"], best["ci_high"], best["n"], best["aggregate"]
    )
    assert text == f"median 2.5, 95% CI [{est.low:.4g}, {est.high:.4g}] (n=5 seeds)"
    ranked = analysis.ranked_trials(study)
    assert [t.number for t in ranked] == [0, 1]


def test_diff_overrides():
    want = {"a": 1, "b": 0.5, "c": [1, 2], "e": "x y"}
    have = {"a": 1, "b": 0.25, "d": 0, "e": "x y"}
    assert analysis.diff_overrides(want, have) == ["b=0.5", "+c=[1,2]", "~d"]
    assert analysis.flatten({"agent": {"lr": 1e-3, "kw": {}}, "seed": 1}) == {
        "agent.lr": 1e-3,
        "agent.kw": {},
        "seed": 1,
    }
    assert analysis.group_overrides(
        {"agent": "sarsa", "env": "gridworld", "hydra/launcher": "x"},
        {"agent": "dqn", "env": "gridworld", "hydra/launcher": "basic"},
    ) == ["agent=sarsa"]


# -- the end-of-sweep summary --------------------------------------------------------------
def test_sweep_summary_shows_iqm_ci_importance_and_never_the_seed(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # one table row per line
    from sweeper.sweeps._impl import OptunaSweeperImpl
    from sweeper.sweeps.hooks import StudyInfo
    from sweeper.sweeps.plan import Plan
    from sweeper.sweeps.results import finish
    from sweeper.sweeps.search_space import SearchSpace

    study = optuna.create_study(direction="maximize", study_name="summary")
    d = {**GRID, "seed": CategoricalDistribution([0, 1])}
    rng = np.random.default_rng(5)
    for lr, freq, seed in itertools.product(LRS, FREQS, (0, 1)):
        per_seed = [100.0 * LRS.index(lr) + rng.normal(0, 3) for _ in range(4)]
        add(
            study,
            {"agent.lr": lr, "agent.target_update_freq": freq, "seed": seed},
            d,
            per_seed,
            seeds=[11, 12, 13, 14],
            metrics={"mean_max_q": list(rng.normal(5, 1, 4))},
        )
    add(
        study,
        {"agent.lr": 1e-4, "agent.target_update_freq": 10, "seed": 0},
        d,
        state=TrialState.PRUNED,
        intermediate={40: -3.0},
    )
    space = SearchSpace({k: d[k] for k in ("agent.lr", "agent.target_update_freq", "seed")})
    sweeper = OptunaSweeperImpl(
        direction="maximize", summary={"group_by": ["agent.lr"], "metrics": ["mean_max_q"]}
    )
    plan = Plan(
        space=space,
        study=study,
        storage=None,
        storage_spec="memory",
        n_trials=19,
        sweep_dir=tmp_path / "sweep",
        base_cfg=None,
        sampler_name="grid",
        pruner={"name": "median"},
    )
    info = StudyInfo("summary", "memory", "maximize", 19, space.describe(), [], "", None)
    summary = finish(sweeper, plan, [], info)
    out = capsys.readouterr().out
    best = study.best_trial
    res = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    b = res["best"]
    est = estimate(best.user_attrs["objective_per_seed"])
    assert b["value"] == best.value and b["number"] == best.number
    assert (b["ci_low"], b["ci_high"], b["n"], b["aggregate"]) == (est.low, est.high, 4, "iqm")
    assert b["seeds"] == [11, 12, 13, 14]
    assert "seed" not in b["params"] and set(b["params"]) == {
        "agent.lr",
        "agent.target_update_freq",
    }
    imp = res["importance"]
    assert imp["evaluator"] == "fANOVA" and imp["n_trials"] == 18 and imp["n_pruned"] == 1
    assert (
        set(imp["values"])
        == set(imp["ci"])
        == set(imp["top_share"])
        == {
            "agent.lr",
            "agent.target_update_freq",
        }
    )
    assert imp["verdict"].startswith("agent.lr (ranked first in ")
    assert res["most_important"] == "agent.lr"
    assert res["groups"][0]["n"] == 6 * 4  # 6 trials per lr, 4 seeds each
    assert "seed" not in res["marginal_effects"]
    flat = " ".join(out.split())
    assert "best value" in flat and "IQM" in flat and "95% CI" in flat and "(n=4 seeds)" in flat
    assert "importance (fANOVA, 18 trials, pruned left out: 1)" in flat
    lines = {
        line.split("│")[1].strip(): line.split("│")[2]
        for line in out.splitlines()
        if line.count("│") == 3
    }
    assert lines["matters most"].strip().startswith("agent.lr (ranked first in ")
    assert lines["best value"].strip().startswith(f"IQM {best.value:.4g}, 95% CI [")
    assert "seed" not in lines["best params"] and "agent.lr=0.01" in lines["best params"]
    assert summary["best"]["params"] == b["params"]
    assert math.isfinite(summary["importance"]["values"]["agent.lr"])
