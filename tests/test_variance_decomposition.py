"""The exact variance decomposition of a grid (``sweeper.variance_decomposition``): its sums
of squares against statsmodels' ANOVA, the bias correction, the coverage of its intervals on
simulated experiments with known components, the verdict line (a tie, nothing decided, one
winner), and the study side (``analysis.importance`` on in-memory Optuna studies)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from optuna.distributions import CategoricalDistribution
from statsmodels.stats.anova import anova_lm

from sweeper import analysis, claims, decomposition_figure
from sweeper import decomposition_verdict as dv
from sweeper import variance_decomposition as vd
from sweeper.tracking.parent import parent_metrics

PARAMS = ["a", "b", "c"]
LEVELS = {"a": [1, 2, 3], "b": [10, 20, 30], "c": ["x", "y", "z"]}


def factorial(effects, noise, n_seeds, seed=0, interaction=0.0):
    """``y[i, j, k, s]``: the sum of each factor's effect at its level, an a x b interaction
    of size ``interaction`` and normal noise per seed."""
    rng = np.random.default_rng(seed)
    shape = [len(e) for e in effects]
    mu = np.zeros(shape)
    for axis, e in enumerate(effects):
        view = [1] * len(effects)
        view[axis] = len(e)
        mu = mu + np.asarray(e, dtype=float).reshape(view)
    mu[0, 0] += interaction
    mu[0, 1] -= interaction
    return mu[..., None] + rng.normal(0, noise, (*shape, n_seeds))


def anova_table(y):
    rows = [
        {"p": i, "q": j, "r": k, "y": y[i, j, k, s]}
        for i, j, k, s in itertools.product(*(range(n) for n in y.shape))
    ]
    model = smf.ols("y ~ C(p) * C(q) * C(r)", pd.DataFrame(rows)).fit()
    return anova_lm(model, typ=2)


def test_sums_of_squares_and_omega_squared_match_statsmodels():
    y = factorial([[0, 5, 10], [0, 2, 8], [0, 0, 0]], noise=6.0, n_seeds=6, interaction=4.0)
    table = anova_table(y)
    ss, ss_error, ss_total = vd.sums_of_squares(y)
    names = {
        (0,): "C(p)",
        (1,): "C(q)",
        (2,): "C(r)",
        (0, 1): "C(p):C(q)",
        (0, 2): "C(p):C(r)",
        (1, 2): "C(q):C(r)",
        (0, 1, 2): "C(p):C(q):C(r)",
    }
    for term, name in names.items():
        assert ss[term] == pytest.approx(table.loc[name, "sum_sq"], rel=1e-9)
    assert ss_error == pytest.approx(table.loc["Residual", "sum_sq"], rel=1e-9)
    assert ss_total == pytest.approx(table["sum_sq"].sum(), rel=1e-9)
    # omega squared from statsmodels' table, the textbook formula for fixed effects
    ms_error = table.loc["Residual", "sum_sq"] / table.loc["Residual", "df"]
    denom = table["sum_sq"].sum() + ms_error
    expected = [
        (table.loc[n, "sum_sq"] - table.loc[n, "df"] * ms_error) / denom
        for n in ("C(p)", "C(q)", "C(r)")
    ]
    inter = sum(
        (table.loc[n, "sum_sq"] - table.loc[n, "df"] * ms_error) / denom
        for n in ("C(p):C(q)", "C(p):C(r)", "C(q):C(r)", "C(p):C(q):C(r)")
    )
    seed = y.size * ms_error / denom
    got = vd.omega_squared(y[None])[0]
    assert got == pytest.approx([*expected, inter, seed], rel=1e-9)
    assert got.sum() == pytest.approx(1.0)


def test_the_bias_correction_takes_the_seed_noise_out_of_a_null_effect():
    """No effect at all: the raw share of a factor (its marginal means' variance over the total)
    is the noise its means carry, about df / N; omega squared is about 0."""
    raw, corrected = [], []
    for seed in range(200):
        y = factorial([[0, 0, 0], [0, 0, 0], [0, 0, 0]], noise=1.0, n_seeds=5, seed=seed)
        ss, _, ss_total = vd.sums_of_squares(y)
        raw.append(ss[(0,)] / ss_total)
        corrected.append(vd.omega_squared(y[None])[0, 0])
    assert np.mean(raw) == pytest.approx(2 / (y.size - 1), rel=0.2)  # the noise's share
    assert abs(np.mean(corrected)) < 0.002


def test_the_intervals_cover_known_shares():
    """Simulated grids with known components (a strong, a weak and a null factor, seed noise
    that is bimodal as RL returns are): each share's 95% CI covers the true share in at least
    85% of 40 experiments of 10 seeds (the plain percentile interval covered the seed's share
    in about 60%: the bias that ``decompose`` takes out)."""
    rng = np.random.default_rng(7)
    mu = 150 + np.array([0, 20, -40.0])[:, None, None] + np.array([30, 0, -10.0])[None, :, None]
    mu = mu + np.array([0, 0, 0.0])[None, None, :]

    def draw(n):
        u = rng.random((3, 3, 3, n))
        return mu[..., None] + np.where(
            u < 0.5, rng.normal(60, 40, u.shape), rng.normal(-60, 40, u.shape)
        )

    truth = vd.omega_squared(draw(4000)[None])[0]
    names = [*PARAMS, vd.INTERACTIONS, vd.SEED]
    hits = np.zeros(len(names))
    for i in range(40):
        d = vd.decompose(draw(10), PARAMS, LEVELS, n_resamples=600, seed=i)
        hits += [d.shares[k].low <= truth[j] <= d.shares[k].high for j, k in enumerate(names)]
    assert (hits / 40 >= 0.85).all(), dict(zip(names, hits / 40))


def test_no_effect_every_share_includes_zero_and_nothing_is_named():
    y = factorial([[0, 0, 0], [0, 0, 0], [0, 0, 0]], noise=10.0, n_seeds=10, seed=3)
    d = vd.decompose(y, PARAMS, LEVELS)
    for p in [*PARAMS, vd.INTERACTIONS]:
        assert d.shares[p].low <= 0 <= d.shares[p].high, (p, d.shares[p])
    v = dv.answer(d)
    assert v.holds is None and v.details["answer"] == dv.UNKNOWN
    assert v.details["most_important"] is None
    assert "not enough evidence to rank the hyperparameters" in v.line
    assert "matters most of the hyperparameters" not in v.line
    assert "the seed matters most" in v.line  # the seed is decided above each of them


def test_two_equal_effects_tie_and_the_third_is_named_least():
    y = factorial([[-10, 0, 10], [10, 0, -10], [0, 0, 0]], noise=15.0, n_seeds=10, seed=5)
    d = vd.decompose(y, PARAMS, LEVELS)
    v = dv.answer(d)
    assert v.holds is None and v.details["answer"] == "tie"
    assert sorted(v.details["contenders"]) == ["a", "b"]
    assert not d.separated("a", "b") and d.separated("a", "c") and d.separated("b", "c")
    assert "tie for the most important hyperparameter" in v.line
    assert "c least (" in v.line, v.line
    assert "matters most of the hyperparameters" not in v.line
    diff = d.difference("a", "b")
    assert diff.low < 0 < diff.high
    assert d.difference("b", "a") == vd.Interval(-diff.value, -diff.high, -diff.low)


def test_one_dominant_effect_is_named_with_its_size_in_the_metrics_units():
    y = factorial([[0, 30, 60], [0, 3, 0], [0, 0, 0]], noise=5.0, n_seeds=8, seed=5)
    d = vd.decompose(y, PARAMS, LEVELS)
    v = dv.answer(d, "the score")
    assert v.holds is True and v.details["most_important"] == "a"
    assert v.line.startswith("verdict (on the score): a matters most of the hyperparameters")
    e = d.effects["a"]
    assert (e.low_level, e.high_level) == (1, 3)
    margins = y.mean(axis=(1, 2, 3))
    assert e.size.value == pytest.approx(margins[2] - margins[0])
    assert e.size.low < e.size.value < e.size.high
    assert [m.value for m in d.marginal_means["a"]] == pytest.approx(margins)
    assert d.first["a"] > 0.99


def test_the_decomposition_is_deterministic_and_a_shared_seed_offset_is_the_seeds_share():
    y = factorial([[0, 5, 10], [0, 0, 0], [0, 0, 0]], noise=5.0, n_seeds=6, seed=6)
    assert vd.decompose(y, PARAMS, LEVELS).as_dict() == vd.decompose(y, PARAMS, LEVELS).as_dict()
    # a seed that adds the same offset to every config is variance between seeds of one config
    shifted = y + np.arange(6) * 3.0
    a, b = vd.decompose(y, PARAMS, LEVELS), vd.decompose(shifted, PARAMS, LEVELS)
    assert b.shares[vd.SEED].value > a.shares[vd.SEED].value


def test_full_grid_needs_every_config_on_the_same_seeds():
    rows = [
        ({"a": a, "b": b}, [3, 1, 2], [3.0 * a, 1.0 * a, 2.0 * a]) for a in (1, 2) for b in "xy"
    ]
    y, levels = vd.full_grid(rows, ["a", "b"])
    assert levels == {"a": [1, 2], "b": ["x", "y"]} and y.shape == (2, 2, 3)
    assert list(y[1, 0]) == [2.0, 4.0, 6.0]  # seeds put in order 1, 2, 3
    assert "3 complete trials" in vd.full_grid(rows[:3], ["a", "b"])
    assert "same tuning seeds" in vd.full_grid(
        [*rows[:3], (rows[3][0], [1, 2, 4], [0, 0, 0])], ["a", "b"]
    )
    assert "trained twice" in vd.full_grid([*rows[:3], rows[0]], ["a", "b"])
    assert "without a value" in vd.full_grid(
        [*rows[:3], (rows[3][0], [1, 2, 3], [0, None, 0])], ["a", "b"]
    )
    assert "needs at least 3" in vd.full_grid([(p, s[:2], v[:2]) for p, s, v in rows], ["a", "b"])


def test_percent_is_for_people():
    assert [dv.percent(x) for x in (0.0714, 0.63, -0.0004, 0.0996, 1.0)] == [
        "7.1",
        "63",
        "0.0",
        "10",
        "100",
    ]
    assert vd.expanded_alpha(0.05, 10) == pytest.approx(0.0171, abs=1e-3)
    assert vd.expanded_alpha(0.05, 1000) == pytest.approx(0.05, abs=1e-3)


# -- a study --------------------------------------------------------------------------------------


def grid_study(effects, noise, n_seeds, seed=0, drop=0):
    """A real in-memory Optuna study of a 3 x 3 x 3 grid, the sweeper's per-seed contract on
    each trial (objective and ``last50_length``), its first ``drop`` configs left out."""
    y = factorial(effects, noise, n_seeds, seed)
    dists = {p: CategoricalDistribution(LEVELS[p]) for p in PARAMS}
    study = optuna.create_study(direction="maximize")
    seeds = list(range(100, 100 + n_seeds))
    cells = list(itertools.product(range(3), repeat=3))[drop:]
    for cell in cells:
        values = [float(v) for v in y[cell]]
        params = {p: LEVELS[p][i] for p, i in zip(PARAMS, cell)}
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=dists,
                value=float(np.mean(values)),
                user_attrs={
                    "sweeper:seeds": seeds,
                    "sweeper:aggregate": "mean",
                    "objective_per_seed": values,
                    "last50_length_per_seed": values,
                },
            )
        )
    return study, y


def test_importance_of_a_full_grid_is_its_exact_decomposition(tmp_path):
    study, y = grid_study([[0, 30, 60], [0, 3, 0], [0, 0, 0]], noise=5.0, n_seeds=8)
    imp = analysis.importance(study, PARAMS)
    assert imp.evaluator == analysis.EXACT and imp.decomposition is not None
    expected = vd.omega_squared(y[None])[0]
    assert [imp.values[p] for p in PARAMS] == pytest.approx(expected[:3])
    assert imp.seed_share.value == pytest.approx(expected[4])
    assert imp.most_important == "a" and imp.verdict.startswith("a matters most")
    head, text = imp.header, imp.describe()
    assert "exact ANOVA" in head and "27 configs x 8 seeds" in head
    assert "the seed " in text and "interactions" in text
    d = imp.as_dict()
    assert d["decomposition"]["n_seeds"] == 8 and d["answer"].startswith("verdict: a matters")
    out = claims.answer("sensitivity", study, tmp_path, params=PARAMS, importance=imp)
    assert out["verdict"]["holds"] is True
    assert out["verdict"]["line"].startswith("verdict (on the seed's measure")
    assert "; on the greedy evaluation return: a matters most" in out["verdict"]["line"]
    figs = [Path(p) for p in out["figures"] if "variance_decomposition" in str(p)]
    assert len(figs) == 2 and all(p.stat().st_size > 0 for p in figs)
    metrics = parent_metrics({"importance": d})  # the MLflow parent run's
    assert metrics["importance.seed"] == pytest.approx(expected[4], abs=1e-4)
    assert metrics["importance.interactions"] == pytest.approx(expected[3], abs=1e-4)
    assert metrics["importance_ci_low.seed"] <= metrics["importance.seed"]
    bars = decomposition_figure.bars(imp.decomposition)
    assert [name for name, _ in bars] == [*PARAMS, vd.INTERACTIONS, vd.SEED]


def test_importance_not_on_a_grid_is_fanova_and_says_the_seeds_share():
    study, y = grid_study([[0, 30, 60], [0, 3, 0], [0, 0, 0]], noise=5.0, n_seeds=5, drop=1)
    imp = analysis.importance(study, PARAMS, n_bootstrap=10)
    assert imp.evaluator == analysis.EVALUATOR and imp.decomposition is None
    assert sum(imp.values.values()) == pytest.approx(1)  # fANOVA's normalized shares
    rest = y.reshape(27, 5)[1:]
    one_way = vd.omega_squared(rest[None])[0]
    assert imp.seed_share.value == pytest.approx(one_way[-1])
    assert 0 < imp.seed_share.value < 0.2
    text = imp.describe()
    assert "the hyperparameters' part only: the seed " in text
    assert math.isfinite(imp.seed_share.low) and imp.seed_share.low <= imp.seed_share.value
