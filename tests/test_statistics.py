"""``sweeper.statistics`` against scipy on hand-made per-seed values, and the sweep summary's
grouped table built from a real Optuna study."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from scipy import stats

from sweeper.analysis import groups_table
from sweeper.statistics import aggregate, estimate

RETURNS = [206.0, 180.5, 234.0, 12.0, 199.0, 221.5, 500.0]  # one collapsed, one lucky seed


def test_aggregates_are_scipy_and_numpy():
    x = np.array(RETURNS)
    assert aggregate(RETURNS, "iqm") == pytest.approx(stats.trim_mean(x, 0.25), abs=0)
    assert aggregate(RETURNS, "mean") == np.mean(x)
    assert aggregate(RETURNS, "median") == np.median(x)
    assert aggregate(RETURNS, "min") == 12.0
    # the IQM is what the middle half says: the two outliers barely move it
    assert abs(aggregate(RETURNS, "iqm") - np.median(x)) < abs(np.mean(x) - np.median(x))
    with pytest.raises(ValueError, match="aggregate must be one of"):
        aggregate(RETURNS, "max")


def test_the_interval_is_scipys_percentile_bootstrap_and_deterministic():
    est = estimate(RETURNS, seed=3)
    ref = stats.bootstrap(
        (np.array(RETURNS),),
        lambda s, axis=-1: stats.trim_mean(s, 0.25, axis=axis),
        vectorized=True,
        n_resamples=5000,
        confidence_level=0.95,
        method="percentile",
        rng=np.random.default_rng(3),
    ).confidence_interval
    assert (est.low, est.high) == (ref.low, ref.high)
    assert est.low <= est.value <= est.high and est.n == len(RETURNS)
    assert estimate(RETURNS, seed=3) == est  # bit for bit
    assert str(est).startswith("IQM ") and "95% CI" in str(est) and "n=7" in str(est)


def test_edge_cases_say_what_they_know():
    one = estimate([5.0])
    assert (one.value, one.low, one.high, one.n) == (5.0, None, None, 1)
    assert "no CI" in str(one)
    tied = estimate([2.0, 2.0, 2.0])
    assert (tied.low, tied.high) == (2.0, 2.0)
    with_nan = estimate([1.0, math.nan, 3.0, math.inf], how="mean")
    assert with_nan.n == 2 and with_nan.value == 2.0
    assert estimate([]).n == 0 and math.isnan(estimate([]).value)


def test_groups_table_gives_each_arm_n_iqm_and_ci():
    study = optuna.create_study(direction="maximize")
    values = {"full": [200.0, 210.0, 190.0, 230.0], "no_target": [120.0, 260.0, 90.0, 150.0]}
    for arm, vals in values.items():
        for v in vals:
            study.enqueue_trial({"arm": arm})
            t = study.ask({"arm": optuna.distributions.CategoricalDistribution(list(values))})
            t.set_user_attr("mean_max_q", v / 10)
            study.tell(t, v)
    rows = {r["arm"]: r for r in groups_table(study, ["arm"], ["mean_max_q"])}
    for arm, vals in values.items():
        row = rows[arm]
        assert row["n"] == 4
        assert row["objective_iqm"] == pytest.approx(stats.trim_mean(vals, 0.25))
        assert row["objective_ci_low"] <= row["objective_iqm"] <= row["objective_ci_high"]
        assert row["mean_max_q_iqm"] == pytest.approx(stats.trim_mean(vals, 0.25) / 10)
    # the noisier arm has the wider interval
    width = {a: r["objective_ci_high"] - r["objective_ci_low"] for a, r in rows.items()}
    assert width["no_target"] > width["full"]
