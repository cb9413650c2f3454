"""``sweeper.figures`` on hand-made per-seed data: real matplotlib, real PNG files, and the
numbers drawn (lines, CI bands, error bars, cell texts) checked against ``sweeper.statistics``
called directly on the same values."""

from __future__ import annotations

import math

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.patches import FancyArrow

from sweeper import figures
from sweeper.plotting import moving_average as plotting_moving_average
from sweeper.statistics import aggregate, estimate


@pytest.fixture
def drawn(monkeypatch):
    """The figures the functions draw, kept open (their ``plt.close`` is deferred) so a test can
    read the artists back; closed at teardown."""
    figs = []
    real_close = plt.close
    monkeypatch.setattr(figures.plt, "close", figs.append)
    yield figs
    for fig in figs:
        real_close(fig)


def _png_ok(path, shape=(500, 1000)):
    """The file is a readable PNG of the expected pixel size with more than one colour."""
    assert path.is_file() and path.stat().st_size > 0
    image = mpimg.imread(path)
    assert image.shape[:2] == shape
    assert np.ptp(image[..., :3]) > 0.5  # something was drawn, not a blank canvas


def _seed_curves(n_seeds=5, n_points=30, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    x = np.arange(1, n_points + 1)
    return [(x, np.log(x) + shift + rng.normal(0, 0.5, n_points)) for _ in range(n_seeds)]


def _band_ys_at(ax, x0):
    """The y values of the fill_between polygons' vertices at x == x0."""
    ys = []
    for coll in ax.collections:
        if isinstance(coll, PolyCollection):
            for path in coll.get_paths():
                v = path.vertices
                ys.extend(v[np.isclose(v[:, 0], x0), 1])
    return np.array(ys)


def _errorbar_segments(ax):
    segs = []
    for coll in ax.collections:
        if isinstance(coll, LineCollection):
            segs.extend(np.asarray(s) for s in coll.get_segments())
    return segs


# ---- learning curves ----------------------------------------------------------------------


def test_curve_band_is_statistics_estimate_at_each_x():
    curves = _seed_curves()
    band = figures.curve_band(curves)
    values = np.array([y for _, y in curves])
    np.testing.assert_array_equal(band.x, np.arange(1, 31))
    np.testing.assert_array_equal(band.n, np.full(30, 5))
    for i in (0, 7, 29):
        est = estimate(values[:, i])
        j = int(np.flatnonzero(band.ci_x == band.x[i])[0])
        assert (band.ci_value[j], band.low[j], band.high[j]) == (est.value, est.low, est.high)
        assert band.value[i] == aggregate(values[:, i]) == est.value
    assert np.all(band.low < band.value) and np.all(band.value < band.high)
    med = figures.curve_band(curves, "median")
    assert med.value[7] == np.median(values[:, 7]) != band.value[7]


def test_learning_curves_draws_the_band_and_labels_n_iqm_ci(tmp_path, drawn):
    groups = {"buffer=uniform": _seed_curves(), "buffer=per": _seed_curves(shift=1.0, seed=1)}
    path = figures.learning_curves(
        groups, tmp_path / "sub" / "curves.png", ylabel="return", title="t"
    )
    assert path == tmp_path / "sub" / "curves.png"
    _png_ok(path)
    (fig,) = drawn
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [
        "buffer=uniform (n=5)",
        "buffer=per (n=5)",
    ]
    assert "IQM" in legend.get_title().get_text() and "95% CI" in legend.get_title().get_text()
    assert "IQM" in ax.get_ylabel() and "95% CI" in ax.get_ylabel()
    # the drawn lines and bands are the estimates at x = 12
    for line, curves in zip(ax.get_lines(), groups.values()):
        est = estimate([y[11] for _, y in curves])
        x, y = line.get_data()
        assert y[list(x).index(12)] == est.value
    ys = _band_ys_at(ax, 12.0)
    for curves in groups.values():
        est = estimate([y[11] for _, y in curves])
        assert np.isclose(ys, est.low).any() and np.isclose(ys, est.high).any()


def test_unequal_lengths_are_cut_at_the_shortest_seed():
    rng = np.random.default_rng(2)
    curves = [(np.arange(1, n + 1), rng.normal(size=n)) for n in (30, 25, 20)]
    band = figures.curve_band(curves)
    np.testing.assert_array_equal(band.x, np.arange(1, 21))
    assert band.value[-1] == aggregate([y[19] for _, y in curves])


def test_different_x_grids_are_interpolated_onto_their_union():
    a = (np.array([0.0, 10.0, 20.0]), np.array([0.0, 1.0, 2.0]))
    b = (np.array([0.0, 5.0, 10.0, 15.0, 20.0, 25.0]), np.array([4.0, 3.0, 2.0, 1.0, 0.0, 9.0]))
    grid, values = figures.align_curves([a, b])
    np.testing.assert_array_equal(grid, [0.0, 5.0, 10.0, 15.0, 20.0])  # 25: only b reaches it
    np.testing.assert_array_equal(values[0], [0.0, 0.5, 1.0, 1.5, 2.0])
    np.testing.assert_array_equal(values[1], [4.0, 3.0, 2.0, 1.0, 0.0])
    band = figures.curve_band([a, b], "mean")
    assert band.value[1] == 1.75


def test_one_seed_draws_a_line_without_a_band(tmp_path, drawn):
    groups = {"solo": _seed_curves(n_seeds=1), "pair": _seed_curves(n_seeds=2, seed=3)}
    path = figures.learning_curves(groups, tmp_path / "one.png", ylabel="r", title="t")
    _png_ok(path)
    band = figures.curve_band(groups["solo"])
    assert np.isnan(band.low).all() and np.isnan(band.high).all()
    np.testing.assert_array_equal(band.value, groups["solo"][0][1])
    ax = drawn[0].axes[0]
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 1  # the pair's only
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["solo (n=1)", "pair (n=2)"]


def test_nans_are_ignored(tmp_path, drawn):
    curves = _seed_curves()
    x, y = curves[0]
    y = y.copy()
    y[4] = math.nan  # seed 0 missing at x = 5
    curves[0] = (x, y)
    curves.append((x, np.full(x.size, math.nan)))  # a seed that diverged from the start
    band = figures.curve_band(curves)
    assert band.n_curves == 5
    assert band.n[4] == 4 and band.n[3] == band.n[5] == 5
    est = estimate([c[1][4] for c in curves[1:5]])
    assert band.value[4] == est.value
    assert band.low[4] == est.low and band.high[4] == est.high
    figures.learning_curves({"g": curves}, tmp_path / "nan.png", ylabel="r", title="t")
    _png_ok(tmp_path / "nan.png")
    assert drawn[0].axes[0].get_legend().get_texts()[0].get_text() == "g (n=4\u20135)"


def test_smoothing_is_a_per_seed_moving_average_before_aggregating(tmp_path):
    curves = _seed_curves(n_points=40)
    band = figures.curve_band(curves, smooth=20)
    np.testing.assert_array_equal(band.x, np.arange(20, 41))
    smoothed = [plotting_moving_average(y, 20) for _, y in curves]
    for i in (0, 10, 20):
        assert band.value[i] == pytest.approx(aggregate([s[i] for s in smoothed]), rel=1e-12)
    # NaN-aware: a NaN inside a window is skipped, not spread over it
    x, m = figures.smooth_curve([1, 2, 3, 4], [1.0, math.nan, 3.0, 5.0], 2)
    np.testing.assert_array_equal(x, [2, 3, 4])
    np.testing.assert_array_equal(m, [1.0, 3.0, 4.0])
    figures.learning_curves(
        {"g": curves}, tmp_path / "s.png", ylabel="episode length", title="t", smooth=20
    )
    _png_ok(tmp_path / "s.png")


def test_long_curves_get_at_most_60_bootstrap_points(monkeypatch, tmp_path):
    calls = []

    def counting(values, how="iqm"):
        calls.append(1)
        return estimate(values, how)

    monkeypatch.setattr(figures, "estimate", counting)
    groups = {f"g{k}": _seed_curves(n_seeds=10, n_points=500, seed=k) for k in range(4)}
    band = figures.curve_band(groups["g0"])
    assert band.x.size == 500 and band.value.size == 500
    assert band.ci_x.size == 60 and band.ci_x[0] == 1 and band.ci_x[-1] == 500
    calls.clear()
    figures.learning_curves(groups, tmp_path / "long.png", ylabel="r", title="t")
    assert len(calls) == 4 * 60
    _png_ok(tmp_path / "long.png")


def test_unknown_aggregate_is_refused(tmp_path):
    with pytest.raises(ValueError, match="aggregate must be one of"):
        figures.learning_curves(
            {"g": _seed_curves()}, tmp_path / "x.png", ylabel="r", title="t", how="max"
        )


# ---- marginal effects ---------------------------------------------------------------------

EFFECTS = {
    "agent.lr": {1e-3: [0.5, 0.7, 0.6, 0.9, 0.2], 1e-4: [0.1, 0.3, 0.2], 1e-2: [0.4, math.nan]},
    "buffer": {"uniform": [1.0, 2.0, 3.0, 4.0], "per": [2.5]},
}


def test_effect_estimates_sorted_and_from_statistics():
    table = figures.effect_estimates(EFFECTS)
    assert [v for v, _ in table["agent.lr"]] == [1e-4, 1e-3, 1e-2]
    assert [v for v, _ in table["buffer"]] == ["per", "uniform"]
    assert table["agent.lr"][1][1] == estimate(EFFECTS["agent.lr"][1e-3])
    assert table["agent.lr"][2][1].n == 1  # the NaN replicate is dropped


def test_marginal_effects_draws_estimates_with_ci_and_n(tmp_path, drawn):
    path = figures.marginal_effects(
        EFFECTS, tmp_path / "m.png", ylabel="final return", title="t", log_params=("agent.lr",)
    )
    _png_ok(path)
    lr_ax, buf_ax = (ax for ax in drawn[0].axes if ax.get_visible())
    assert lr_ax.get_xscale() == "log" and buf_ax.get_xscale() == "linear"
    assert "IQM" in lr_ax.get_ylabel() and "95% CI" in lr_ax.get_ylabel()
    est = estimate(EFFECTS["agent.lr"][1e-3])
    segs = _errorbar_segments(lr_ax)
    assert any(np.allclose(s, [[1e-3, est.low], [1e-3, est.high]]) for s in segs)
    assert len(segs) == 2  # 1e-2 has n=1: a point, no bar
    assert sorted(t.get_text() for t in lr_ax.texts) == ["n=1", "n=3", "n=5"]
    est = estimate(EFFECTS["buffer"]["uniform"])
    segs = _errorbar_segments(buf_ax)
    assert len(segs) == 1 and np.allclose(segs[0], [[1, est.low], [1, est.high]])
    assert [t.get_text() for t in buf_ax.get_xticklabels()] == ["per", "uniform"]


# ---- tuning vs test -----------------------------------------------------------------------


def test_tuning_vs_test(tmp_path, drawn):
    rows = [
        {"label": "a", "tuning": [10.0, 12.0, 11.0, 15.0], "test": [8.0, 9.0, 7.5, 30.0]},
        {"label": "b", "tuning": [5.0, 6.0, 5.5], "test": [4.0]},
    ]
    path = figures.tuning_vs_test(rows, tmp_path / "tt.png", title="t")
    _png_ok(path)
    ax = drawn[0].axes[0]
    segs = _errorbar_segments(ax)
    assert len(segs) == 3  # b's test has n=1: no bar
    tun = estimate(rows[0]["tuning"])
    tst = estimate(rows[0]["test"])
    assert any(np.allclose(s, [[-0.15, tun.low], [-0.15, tun.high]]) for s in segs)
    assert any(np.allclose(s, [[0.15, tst.low], [0.15, tst.high]]) for s in segs)
    assert sorted(t.get_text() for t in ax.texts) == ["n=1", "n=3", "n=4", "n=4"]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["tuning seeds: IQM, 95% CI", "test seeds: IQM, 95% CI"]


# ---- Q heatmaps ---------------------------------------------------------------------------


def test_gridworld_layout_from_env_or_kwargs():
    from sweeper.envs.gridworld import ACTION_DELTAS, GridWorld

    expected = {"size": 4, "walls": [(1, 1)], "goals": [(0, 3)], "traps": [(2, 3)], "start": (3, 0)}
    assert figures.gridworld_layout(GridWorld()) == expected
    assert figures.gridworld_layout() == expected
    assert figures.gridworld_layout(size=5, goal=(4, 4), walls=[], traps=[[0, 4]])["traps"] == [
        (0, 4)
    ]
    assert figures.ACTION_DELTAS == ACTION_DELTAS


def _q_tables(n_seeds=3):
    rng = np.random.default_rng(4)
    tables = []
    for _ in range(n_seeds):
        q = rng.uniform(-0.5, 0.5, (16, 4))
        q[12, 3] = 0.9  # start (3, 0): right is clearly best
        q[[3, 11, 5]] = 0.0  # goal, trap, wall: never updated
        tables.append(q)
    return tables


def test_q_panel_stats():
    tables = _q_tables()
    tables[0][0, 2] = math.nan  # seed 0 is missing at state 0
    stats = figures.q_panel_stats(tables)
    est = estimate([q[12].max() for q in tables])
    assert (stats["value"][12], stats["low"][12], stats["high"][12]) == (
        est.value,
        est.low,
        est.high,
    )
    assert stats["greedy"][12] == 3
    assert stats["n"][0] == 2 and stats["n"][1] == 3
    assert stats["value"][0] == estimate([q[0].max() for q in tables[1:]]).value
    mean_q = np.nanmean(np.stack(tables), axis=0)  # the NaN drops one seed of Q(0, 2) only
    np.testing.assert_array_equal(
        stats["greedy"][[0, 1, 7, 12]], np.argmax(mean_q[[0, 1, 7, 12]], 1)
    )
    assert stats["greedy"][3] == -1  # all-equal Q: no greedy action


def test_q_heatmaps(tmp_path, drawn):
    layout = figures.gridworld_layout()
    panels = {
        "q_learning": {"q_tables": _q_tables(), "layout": layout},
        "sarsa": {"q_tables": _q_tables(1), "layout": layout},
    }
    path = figures.q_heatmaps(panels, tmp_path / "q.png", title="Learned Q-values")
    _png_ok(path)
    fig = drawn[0]
    q_ax, sarsa_ax = fig.axes[:2]
    texts = [t.get_text() for t in q_ax.texts]
    assert texts.count("W") == 1 and texts.count("G") == 1 and texts.count("T") == 1
    assert "S" in texts
    stats = figures.q_panel_stats(panels["q_learning"]["q_tables"])
    assert f"{stats['value'][12]:.2f}" in texts
    assert f"[{stats['low'][12]:.2f}, {stats['high'][12]:.2f}]" in texts
    # an arrow in each of the 13 cells that are neither wall nor terminal
    assert sum(isinstance(p, FancyArrow) for p in q_ax.patches) == 13
    assert q_ax.get_title() == "q_learning (n=3 seeds)"
    assert sarsa_ax.get_title() == "sarsa (n=1 seeds)"
    assert not any(t.get_text().startswith("[") for t in sarsa_ax.texts)  # n=1: no CI
    image = q_ax.get_images()[0]
    assert image.get_cmap().name.startswith("RdYlGn") and image.get_clim() == (-1.0, 1.0)
    assert np.ma.is_masked(image.get_array()[1, 1])  # the wall
    assert image.get_array()[3, 0] == stats["value"][12]
    assert "IQM" in fig.axes[-1].get_ylabel()  # colorbar
    assert "95% CI" in fig.get_suptitle()


def test_q_heatmaps_rejects_mismatched_layout(tmp_path):
    panels = {"q": {"q_tables": [np.zeros((9, 4))], "layout": figures.gridworld_layout()}}
    with pytest.raises(ValueError, match="9 states"):
        figures.q_heatmaps(panels, tmp_path / "bad.png", title="t")


# ---- overestimation -----------------------------------------------------------------------


def _over_group(bias, n_seeds=4, seed=0):
    rng = np.random.default_rng(seed)
    x = np.arange(0, 200, 10)
    ret = [(x, 0.5 + rng.normal(0, 0.05, x.size)) for _ in range(n_seeds)]
    mq = [(x, y + bias + rng.normal(0, 0.05, x.size)) for x, y in ret]
    return {"max_q": mq, "return": ret}


def test_overestimation_gap_is_per_seed_then_aggregated(tmp_path, drawn):
    groups = {"DQN": _over_group(0.8), "Double DQN": _over_group(0.1, seed=1)}
    gaps = figures.overestimation_gaps(groups["DQN"]["max_q"], groups["DQN"]["return"])
    assert len(gaps) == 4
    np.testing.assert_allclose(
        gaps[2][1], groups["DQN"]["max_q"][2][1] - groups["DQN"]["return"][2][1]
    )
    path = figures.overestimation(groups, tmp_path / "over.png", title="t")
    _png_ok(path)
    left, right = drawn[0].axes
    assert len(left.get_lines()) == 4
    assert [ln.get_linestyle() for ln in left.get_lines()] == ["-", "--", "-", "--"]
    assert left.get_lines()[0].get_color() == left.get_lines()[1].get_color()
    est = estimate([g[1][5] for g in gaps])
    ys = _band_ys_at(right, 50.0)
    assert np.isclose(ys, est.low).any() and np.isclose(ys, est.high).any()
    x, y = right.get_lines()[0].get_data()
    assert y[list(x).index(50)] == est.value
    assert est.low > 0.5  # DQN overestimates clearly
    assert [t.get_text() for t in right.get_legend().get_texts()] == [
        "DQN (n=4)",
        "Double DQN (n=4)",
    ]


def test_overestimation_with_one_seed_and_mismatched_lists(tmp_path):
    one = _over_group(0.3, n_seeds=1)
    figures.overestimation({"DQN": one}, tmp_path / "o1.png", title="t")
    _png_ok(tmp_path / "o1.png")
    with pytest.raises(ValueError, match="1 max-Q curves but 4"):
        figures.overestimation_gaps(one["max_q"], _over_group(0.3)["return"])
