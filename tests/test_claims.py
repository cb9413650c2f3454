"""The verdict lines of the ready-made sweeps come from the study's data (``sweeper.claims``).

Each test builds a real Optuna study whose trials carry per-seed values, as the sweeper
stores them, once where the seed's claim holds and once where it fails, and checks that
the verdict says so, with the numbers of the data.
"""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution

from sweeper import claims
from sweeper.statistics import estimate
from sweeper.train import History

optuna.logging.set_verbosity(optuna.logging.WARNING)


def arm_trial(
    params: dict, values: list[float], metrics: dict[str, list[float]], out_dir=None, grid=None
):
    seeds = list(range(len(values)))
    attrs = {
        "sweeper:seeds": seeds,
        "sweeper:aggregate": "iqm",
        "objective_per_seed": values,
    }
    for name, per_seed in metrics.items():
        attrs[f"{name}_per_seed"] = per_seed
    if out_dir is not None:
        attrs["sweeper:output_dir"] = str(out_dir)
    return optuna.trial.create_trial(
        params=params,
        distributions={
            k: CategoricalDistribution((grid or {}).get(k, [v])) for k, v in params.items()
        },
        value=float(np.mean(values)),
        user_attrs=attrs,
    )


def ablation_study(full: list[float], no_target: list[float]) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    arms = {
        ("uniform", "hard"): full,
        ("none", "hard"): [20.0, 22.0, 21.0, 19.0, 23.0],
        ("uniform", "none"): no_target,
    }
    for (buffer, target), lengths in arms.items():
        params = {"buffer": buffer, "agent.target_update": target}
        study.add_trial(arm_trial(params, lengths, {"last50_length": lengths}))
    return study


GROUP = ["buffer", "agent.target_update"]


def test_the_ablation_verdict_holds_when_full_dqn_wins(tmp_path):
    full = [180.0, 190.0, 200.0, 185.0, 195.0]
    out = claims.answer(
        "ablation", ablation_study(full, [60.0, 70.0, 65.0, 75.0, 80.0]), tmp_path, group_by=GROUP
    )
    verdict = out["verdict"]
    assert verdict["holds"] is True and ": holds;" in verdict["line"]
    assert f"full DQN IQM {estimate(full).value:.4g}" in verdict["line"]


def test_the_ablation_verdict_says_when_the_claim_fails(tmp_path):
    full = [60.0, 70.0, 65.0, 75.0, 80.0]
    no_target = [180.0, 190.0, 200.0, 185.0, 195.0]  # no target network does better
    verdict = claims.answer("ablation", ablation_study(full, no_target), tmp_path, group_by=GROUP)[
        "verdict"
    ]
    assert verdict["holds"] is False and "does not hold" in verdict["line"]
    assert "no target network" in verdict["line"]
    assert f"{estimate(no_target).value:.4g}" in verdict["line"]


@pytest.mark.parametrize(
    ("dqn_gap", "double_gap", "holds"), [(12.0, 2.0, True), (2.0, 12.0, False)]
)
def test_the_overestimation_verdict_follows_the_measured_gaps(tmp_path, dqn_gap, double_gap, holds):
    study = optuna.create_study(direction="maximize")
    rng = np.random.default_rng(0)
    for double, gap in ((False, dqn_gap), (True, double_gap)):
        gaps = list(gap + rng.normal(0, 0.5, 6))
        study.add_trial(arm_trial({"agent.double": double}, [100.0] * 6, {"overestimation": gaps}))
    verdict = claims.answer("overestimation", study, tmp_path, group_by=["agent.double"])["verdict"]
    assert verdict["holds"] is holds, verdict["line"]


def test_the_sarsa_verdict_reads_the_q_tables_next_to_the_trap(tmp_path):
    """Q-tables on disk as the sweep leaves them: SARSA lower next to the trap holds at one
    exploration floor and fails at the other; the seed's setting is reported first."""
    study = optuna.create_study(direction="maximize")
    layout = {"size": 4, "goal": [0, 3], "walls": [[1, 1]], "traps": [[2, 3]], "start": [3, 0]}
    near = [(1, 3), (2, 2), (3, 3)]
    for eps, sarsa_value in ((0.01, 0.2), (0.2, 0.9)):
        for agent, value in (("q_learning", 0.6), ("sarsa", sarsa_value)):
            trial_dir = tmp_path / f"{agent}_{eps}"
            for seed in range(5):
                q = np.full((16, 4), 0.5)
                for r, c in near:
                    q[r * 4 + c] = value + 0.01 * seed
                (trial_dir / f"seed_{seed}").mkdir(parents=True)
                np.save(trial_dir / f"seed_{seed}" / "model.npy", q)
            study.add_trial(
                arm_trial(
                    {"agent": agent, "agent.epsilon_end": eps}, [0.5] * 5, {}, out_dir=trial_dir
                )
            )
    out = claims.answer(
        "conservative",
        study,
        tmp_path,
        group_by=["agent", "agent.epsilon_end"],
        env_kwargs=layout,
    )
    line = out["verdict"]["line"]
    assert out["verdict"]["holds"] is True, line  # epsilon_end 0.01 first: SARSA 0.22 < 0.62
    assert "agent.epsilon_end=0.01" in line and "agent.epsilon_end=0.2: does not hold" in line
    assert any(p.endswith("q_values_agent_epsilon_end_0_01.png") for p in out["figures"])


def test_sensitivity_says_not_enough_evidence_on_noise(tmp_path):
    """A grid where no hyperparameter matters (pure seed noise): no winner is named."""
    study = optuna.create_study(direction="maximize")
    rng = np.random.default_rng(1)
    for lr in (1e-4, 1e-3, 1e-2):
        for freq in (10, 100, 500):
            values = list(rng.normal(100, 30, 3))
            study.add_trial(
                arm_trial(
                    {"agent.lr": lr, "agent.target_update_freq": freq},
                    values,
                    {"last50_length": values},
                    grid={
                        "agent.lr": (1e-4, 1e-3, 1e-2),
                        "agent.target_update_freq": (10, 100, 500),
                    },
                )
            )
    out = claims.answer(
        "sensitivity", study, tmp_path, params=["agent.lr", "agent.target_update_freq"]
    )
    assert out["verdict"]["holds"] is None and "not enough evidence" in out["verdict"]["line"]


def test_history_summary_is_the_seeds_measure():
    h = History()
    for i in range(60):
        h.on_episode_end(i + 1, 0, {"return": 1.0, "length": float(i), "max_q": 2.0})
    assert h.summary()["last50_length"] == pytest.approx(np.mean(np.arange(10, 60)))
    assert json.dumps(h.summary())


def test_sensitivity_names_the_hyperparameter_that_drives_the_seed_measure(tmp_path):
    study = optuna.create_study(direction="maximize")
    rng = np.random.default_rng(2)
    grid = {"agent.lr": (1e-4, 1e-3, 1e-2), "agent.target_update_freq": (10, 100, 500)}
    for i, lr in enumerate(grid["agent.lr"]):
        for freq in grid["agent.target_update_freq"]:
            lengths = list(100 * i + rng.normal(0, 3, 3))
            study.add_trial(
                arm_trial(
                    {"agent.lr": lr, "agent.target_update_freq": freq},
                    list(rng.normal(100, 30, 3)),  # the greedy return: noise
                    {"last50_length": lengths},
                    grid=grid,
                )
            )
    out = claims.answer("sensitivity", study, tmp_path, params=list(grid))
    line = out["verdict"]["line"]
    assert out["verdict"]["holds"] is True and "agent.lr matters most: holds" in line, line
    assert "on the greedy evaluation return: not enough evidence" in line
    assert any(p.endswith("marginal_effects_last50_length.png") for p in out["figures"])
