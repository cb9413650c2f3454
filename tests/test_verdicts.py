"""``sweeper.verdicts`` on hand-made per-seed numbers: each claim of the seed notebook clearly
holding, clearly failing and unresolved, with every number in the line checked against
``sweeper.statistics.estimate`` or a direct ``scipy.stats.bootstrap`` call on the same data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from sweeper.statistics import estimate
from sweeper.verdicts import (
    Verdict,
    ablation,
    compare,
    conservative_near_trap,
    importance_ranking,
    overestimation,
)

FULL = [195.0, 200.0, 210.0, 188.0, 205.0, 199.0]
NO_REPLAY = [40.0, 55.0, 62.0, 48.0, 51.0, 45.0]
NO_TARGET = [90.0, 82.0, 101.0, 95.0, 88.0, 97.0]
BETTER_THAN_FULL = [280.0, 295.0, 301.0, 288.0, 290.0, 284.0]
# overlapping samples: neither arm is clearly better
OVERLAP_A = [1.0, 5.0, 2.0, 6.0, 3.0, 4.5]
OVERLAP_B = [2.0, 6.0, 1.0, 5.0, 4.0, 3.5]
CELLS = "(2,3), (3,2): next to the trap at (3,3)"


def _iqm_diff(x, y, axis=-1):
    return stats.trim_mean(x, 0.25, axis=axis) - stats.trim_mean(y, 0.25, axis=axis)


def _scipy_diff_ci(a, b):
    """The reference: scipy's two-sample percentile bootstrap of the IQM difference."""
    return stats.bootstrap(
        (np.array(a), np.array(b)),
        _iqm_diff,
        paired=False,
        vectorized=True,
        n_resamples=5000,
        confidence_level=0.95,
        method="percentile",
        rng=np.random.default_rng(0),
    ).confidence_interval


def _est_text(values) -> str:
    e = estimate(values)
    return f"IQM {e.value:.4g} [{e.low:.4g}, {e.high:.4g}] (n={e.n})"


def _diff_text(a, b) -> str:
    ci = _scipy_diff_ci(a, b)
    value = stats.trim_mean(a, 0.25) - stats.trim_mean(b, 0.25)
    return f"{value:+.4g} [{ci.low:.4g}, {ci.high:.4g}]"


def _well_formed(v: Verdict, status: str) -> None:
    assert isinstance(v, Verdict)
    assert v.line.startswith("verdict: ") and "\n" not in v.line
    assert f": {status}" in v.line and v.status == status
    json.dumps(v.details, allow_nan=False)  # strict JSON: no NaN sneaks in


# -- compare -----------------------------------------------------------------------------------


def test_compare_is_scipys_two_sample_bootstrap():
    got = compare(FULL, NO_TARGET)
    ci = _scipy_diff_ci(FULL, NO_TARGET)
    assert (got["low"], got["high"]) == (float(ci.low), float(ci.high))
    assert got["value"] == pytest.approx(
        stats.trim_mean(FULL, 0.25) - stats.trim_mean(NO_TARGET, 0.25), abs=1e-12
    )
    assert (got["n_a"], got["n_b"], got["how"]) == (6, 6, "iqm")
    assert compare(FULL, NO_TARGET) == got  # seeded: bit for bit
    median = compare(FULL, NO_TARGET, "median")
    assert median["value"] == np.median(FULL) - np.median(NO_TARGET)


def test_compare_edge_cases():
    one = compare([5.0], FULL)
    assert one["low"] is None and one["high"] is None and one["n_a"] == 1
    assert one["value"] == pytest.approx(5.0 - stats.trim_mean(FULL, 0.25))
    flat = compare([2.0, 2.0, 2.0], [1.0, 1.0])
    assert (flat["value"], flat["low"], flat["high"]) == (1.0, 1.0, 1.0)
    nan = compare([1.0, float("nan"), 3.0], [1.0, 2.0])
    assert nan["n_a"] == 2  # non-finite values dropped, as in statistics.estimate
    empty = compare([], [1.0, 2.0])
    assert empty["n_a"] == 0 and empty["low"] is None


# -- section 7: ablation -----------------------------------------------------------------------


def _arms(no_target=NO_TARGET, full=FULL):
    return {"full DQN": full, "no replay": NO_REPLAY, "no target network": no_target}


def test_ablation_holds_with_the_numbers_of_scipy():
    v = ablation(_arms(), full="full DQN", metric="episode length")
    _well_formed(v, "holds")
    assert v.holds is True
    assert v.claim == "experience replay and the target network are both necessary"
    for name, values in _arms().items():
        assert f"{name} {_est_text(values)}" in v.line
    for name, values in (("no replay", NO_REPLAY), ("no target network", NO_TARGET)):
        assert f"full DQN - {name} = {_diff_text(FULL, values)}" in v.line
        ci = _scipy_diff_ci(FULL, values)
        d = v.details["differences"][name]
        assert (d["low"], d["high"]) == (float(ci.low), float(ci.high))
    e = estimate(FULL)
    assert v.details["arms"]["full DQN"] == {
        "how": "iqm",
        "value": e.value,
        "low": e.low,
        "high": e.high,
        "n": 6,
    }


def test_ablation_fails_when_an_ablated_arm_is_better():
    v = ablation(_arms(no_target=BETTER_THAN_FULL), full="full DQN", metric="episode length")
    _well_formed(v, "does not hold")
    assert v.holds is False
    assert v.details["ablated_better"] == ["no target network"]
    gap = stats.trim_mean(BETTER_THAN_FULL, 0.25) - stats.trim_mean(FULL, 0.25)
    assert f"'no target network' is better than 'full DQN' by {gap:.4g}" in v.line
    assert f"full DQN - no target network = {_diff_text(FULL, BETTER_THAN_FULL)}" in v.line


def test_ablation_is_unresolved_when_the_intervals_overlap():
    v = ablation(
        {"full DQN": OVERLAP_A, "no replay": [0.0, 0.5, 0.2, 0.1], "no tn": OVERLAP_B},
        full="full DQN",
        metric="return",
    )
    _well_formed(v, "not enough evidence")
    assert v.holds is None and "includes 0 for 'no tn'" in v.line
    ci = _scipy_diff_ci(OVERLAP_A, OVERLAP_B)
    assert ci.low < 0 < ci.high  # the data really is ambiguous


def test_ablation_with_one_seed_says_n_1():
    v = ablation(_arms(full=[200.0]), full="full DQN", metric="episode length")
    _well_formed(v, "not enough evidence")
    assert v.holds is None
    assert "n=1 for full DQN" in v.line and "full DQN IQM 200 (n=1, no CI)" in v.line
    assert v.details["differences"]["no replay"]["low"] is None


def test_ablation_lower_is_better_flips_the_direction():
    losses = {"full": [1.0, 1.2, 0.9, 1.1], "no replay": [3.0, 3.3, 2.9, 3.1]}
    assert ablation(losses, full="full", metric="loss", higher_is_better=False).holds is True
    assert ablation(losses, full="full", metric="loss").holds is False


def test_ablation_rejects_bad_arms():
    with pytest.raises(ValueError, match="full arm"):
        ablation({"a": [1.0, 2.0]}, full="full", metric="x")
    with pytest.raises(ValueError, match="at least one ablated arm"):
        ablation({"full": [1.0, 2.0]}, full="full", metric="x")


# -- section 8: overestimation -----------------------------------------------------------------

GAP_DQN = [12.0, 10.5, 14.2, 11.1, 13.0]
GAP_DOUBLE = [3.1, 1.2, 4.8, 2.2, 3.9]


def test_overestimation_holds_and_says_whether_each_overestimates():
    v = overestimation(GAP_DQN, GAP_DOUBLE)
    _well_formed(v, "holds")
    assert v.holds is True and v.claim == "DQN overestimates more than Double DQN"
    assert f"DQN {_est_text(GAP_DQN)[:-1]}, overestimates)" in v.line
    assert f"Double DQN {_est_text(GAP_DOUBLE)[:-1]}, overestimates)" in v.line
    assert f"DQN - Double DQN = {_diff_text(GAP_DQN, GAP_DOUBLE)}" in v.line
    assert v.details["bias"] == {"DQN": "overestimates", "Double DQN": "overestimates"}


def test_overestimation_fails_when_double_dqns_gap_is_larger():
    unbiased = [-0.5, 0.4, 0.1, -0.2, 0.3]
    v = overestimation(unbiased, GAP_DOUBLE)
    _well_formed(v, "does not hold")
    assert v.holds is False and "Double DQN's gap is larger" in v.line
    assert v.details["bias"]["DQN"] == "no clear bias"
    under = overestimation([-3.0, -2.5, -4.0, -3.2], GAP_DOUBLE)
    assert under.holds is False and under.details["bias"]["DQN"] == "underestimates"


def test_overestimation_ambiguous_and_one_seed():
    v = overestimation(OVERLAP_A, OVERLAP_B)
    _well_formed(v, "not enough evidence")
    assert v.holds is None and "includes 0" in v.line
    one = overestimation([12.0], GAP_DOUBLE)
    _well_formed(one, "not enough evidence")
    assert one.holds is None and "n=1 for DQN" in one.line and "bias unknown" in one.line


# -- section 2: SARSA near the trap ------------------------------------------------------------

V_Q = [0.81, 0.79, 0.83, 0.80, 0.82]
V_SARSA = [0.52, 0.47, 0.55, 0.50, 0.44]


def test_sarsa_conservative_holds():
    v = conservative_near_trap(V_Q, V_SARSA, CELLS)
    _well_formed(v, "holds")
    assert v.holds is True and CELLS in v.line
    assert f"Q-learning {_est_text(V_Q)}" in v.line and f"SARSA {_est_text(V_SARSA)}" in v.line
    assert f"Q-learning - SARSA = {_diff_text(V_Q, V_SARSA)}" in v.line


def test_sarsa_higher_near_the_trap_fails():
    v = conservative_near_trap(V_SARSA, V_Q, CELLS)  # SARSA's values are the higher ones
    _well_formed(v, "does not hold")
    assert v.holds is False and "SARSA's values are higher" in v.line


def test_sarsa_ambiguous_and_one_seed():
    assert conservative_near_trap(OVERLAP_A, OVERLAP_B, CELLS).holds is None
    one = conservative_near_trap(V_Q, [0.5], CELLS)
    _well_formed(one, "not enough evidence")
    assert one.holds is None and "n=1 for SARSA" in one.line


def test_lines_follow_the_data_not_a_template():
    """A stub returning a fixed line fails here: shifting one arm shifts the printed
    difference by exactly that much, and the verdict follows the sign."""
    lines, outcomes = set(), []
    for shift in (-0.6, -0.3, 0.0, 0.3, 0.6):
        shifted = [x + shift for x in V_SARSA]
        v = conservative_near_trap(V_Q, shifted, CELLS)
        diff = stats.trim_mean(V_Q, 0.25) - stats.trim_mean(shifted, 0.25)
        assert v.details["difference"]["value"] == pytest.approx(diff)
        assert f"Q-learning - SARSA = {diff:+.4g}" in v.line
        ci = _scipy_diff_ci(V_Q, shifted)
        assert v.holds is (True if ci.low > 0 else False if ci.high < 0 else None)
        lines.add(v.line)
        outcomes.append(v.holds)
    assert len(lines) == 5
    assert outcomes == [True, True, True, None, False]


# -- Exercise 3: which hyperparameter matters most ---------------------------------------------


def _ranking(lr_share=0.97, n_trials=81, n_resamples=200):
    def entry(importance, low, high, share):
        return {
            "importance": importance,
            "low": low,
            "high": high,
            "top_share": share,
            "n_trials": n_trials,
            "n_resamples": n_resamples,
        }

    return {
        "lr": entry(0.85, 0.70, 0.95, lr_share),
        "target_update_freq": entry(0.10, 0.02, 0.20, 1 - lr_share),
        "buffer_size": entry(0.05, 0.0, 0.10, 0.0),
    }


def test_importance_ranking_holds():
    v = importance_ranking(_ranking(), n_configs=27, n_seeds=3)
    _well_formed(v, "holds")
    assert v.holds is True and v.claim == "lr matters most"
    assert "lr importance 0.85 [0.7, 0.95], ranked first in 97% of 200 resamples" in v.line
    assert "(81 trials, 27 configs x 3 seeds" in v.line
    assert v.details["order"] == ["lr", "target_update_freq", "buffer_size"]


def test_importance_ranking_not_enough_evidence():
    v = importance_ranking(_ranking(lr_share=0.6))
    _well_formed(v, "not enough evidence")
    assert ": not enough evidence to rank (" in v.line
    assert v.line.startswith("verdict: which hyperparameter matters most: not enough evidence")
    assert v.claim == "which hyperparameter matters most" and "lr matters most" not in v.line
    assert v.holds is None and "ranked first in only 60% of resamples, below 90%" in v.line
    few = importance_ranking(_ranking(n_trials=9))
    assert few.holds is None and "only 9 trials, below 20" in few.line
    thin = importance_ranking(_ranking(n_resamples=10))
    assert thin.holds is None and "only 10 resamples" in thin.line


def test_importance_ranking_expected_param_can_fail():
    v = importance_ranking(_ranking(), expected="buffer_size")
    _well_formed(v, "does not hold")
    assert v.holds is False and v.claim == "buffer_size matters most"
    assert "lr matters most, not buffer_size" in v.line
    assert importance_ranking(_ranking(), expected="lr").holds is True


def test_importance_ranking_rejects_malformed_input():
    with pytest.raises(ValueError, match="lacks"):
        importance_ranking({"lr": {"importance": 0.5}})
    bad = _ranking()
    bad["lr"] = {**bad["lr"], "n_trials": 3}
    with pytest.raises(ValueError, match="share n_trials"):
        importance_ranking(bad)
    with pytest.raises(ValueError, match="at least one"):
        importance_ranking({})
