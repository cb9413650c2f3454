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
    assert out["verdict"]["holds"] is True, line
    assert "agent.lr matters most of the hyperparameters" in line, line
    assert "on the greedy evaluation return: not enough evidence" in line
    assert any(p.endswith("marginal_effects_last50_length.png") for p in out["figures"])


# -- the seed's race -----------------------------------------------------------------------------
WET = {
    "laps": 8, "weather_start": "damp", "weather_change_prob": 0.4, "compounds": ["soft", "inter"],
    "start_compound": "inter", "lap_buckets": 8, "age_buckets": 1, "position_buckets": 1,
}  # fmt: skip


def _wet_table(env, slicks_when_dry: bool) -> np.ndarray:
    """A Q-table that stays out everywhere, or pits for softs whenever the track is dry and
    the car is on inters (and for inters when it rains on softs)."""
    import itertools

    from sweeper.envs.f1 import WEATHER

    q = np.zeros((env.observation_space.n, env.action_space.n))
    if not slicks_when_dry:
        return q
    for lap, compound, sc, weather, used in itertools.product(
        range(env.laps), env.compounds, (False, True), WEATHER, ({"soft"}, set())
    ):
        obs = env.observation(lap, 0, compound, used, safety_car=sc, weather=weather)
        want = "soft" if weather == "dry" else "inter"
        if want != compound:
            q[obs, 1 + env.compounds.index(want)] = 1.0
    return q


def _f1_seed_dirs(tmp_path, name: str, table: np.ndarray, agent: str, seeds: int = 3):
    from omegaconf import OmegaConf

    trial_dir = tmp_path / name
    for seed in range(seeds):
        d = trial_dir / f"seed_{seed}"
        d.mkdir(parents=True)
        np.save(d / "model.npy", table)
        cfg = {"env": {"id": "sweeper/F1PitStrategy-v0", "kwargs": WET}, "agent": {"name": agent}}
        OmegaConf.save(OmegaConf.create(cfg), d / "config.yaml")
    return trial_dir


@pytest.mark.parametrize("sarsa_cautious", [True, False])
def test_the_wet_caution_verdict_drives_each_seeds_policy(tmp_path, sarsa_cautious):
    """Q-tables on disk as the F1 sweep leaves them: the policy that never leaves its inters
    has dry laps on them in the unseen races, the one that takes slicks when it dries has
    none; the verdict says which agent held the cautious one, with the race counts."""
    from sweeper.envs import f1_policies as pol
    from sweeper.envs.f1 import F1PitStrategy

    env = F1PitStrategy(**WET)
    cautious, bold = _wet_table(env, False), _wet_table(env, True)
    study = optuna.create_study(direction="maximize")
    tables = {"sarsa": cautious, "q_learning": bold}
    if not sarsa_cautious:
        tables = {"sarsa": bold, "q_learning": cautious}
    for agent, table in tables.items():
        trial_dir = _f1_seed_dirs(tmp_path, agent, table, agent)
        study.add_trial(arm_trial({"agent": agent}, [1.0] * 3, {}, out_dir=trial_dir))
    out = claims.answer("wet_caution", study, tmp_path, group_by=["agent"])
    verdict = out["verdict"]
    stay = pol.races(env, pol.greedy(lambda o: cautious[o.astype(int)]), claims.RACES)
    dry_on_inters = np.mean([r.dry_laps_on_wet_tyres for r in stay])
    assert dry_on_inters > 0.5  # the races do dry out
    assert verdict["holds"] is sarsa_cautious, verdict["line"]
    cautious_name = "SARSA" if sarsa_cautious else "Q-learning"
    assert f"{cautious_name} IQM {dry_on_inters:.4g}" in verdict["line"]
    assert "(n=3)" in verdict["line"] and "SARSA scores more points" in verdict["line"]


def test_the_safety_car_replay_verdict_drives_each_seeds_policy(tmp_path):
    """Two arms by buffer, as the Singapore sweep leaves them (here Q-tables on the discrete
    state): the one-stop policy (mediums, then softs from lap 10) scores points; staying out
    breaks the two-compound rule (-25). The verdict reads prioritized > uniform, on all races
    and on those with a safety car."""
    from omegaconf import OmegaConf

    from sweeper.envs.f1 import WEATHER, F1PitStrategy

    race = {"track": "singapore", "laps": 16, "lap_buckets": 16, "age_buckets": 1,
            "position_buckets": 1}  # fmt: skip
    env = F1PitStrategy(**race)
    one_stop = np.zeros((env.observation_space.n, env.action_space.n))
    soft = 1 + env.compounds.index("soft")
    for lap in range(10, env.laps):
        for sc in (False, True):
            for weather in WEATHER:
                obs = env.observation(lap, 0, "medium", {"medium"}, safety_car=sc, weather=weather)
                one_stop[obs, soft] = 1.0
    study = optuna.create_study(direction="maximize")
    for buffer, table in (("prioritized", one_stop), ("uniform", np.zeros_like(one_stop))):
        trial_dir = tmp_path / buffer
        for seed in range(3):
            d = trial_dir / f"seed_{seed}"
            d.mkdir(parents=True)
            np.save(d / "model.npy", table)
            cfg = {"env": {"id": "sweeper/F1PitStrategy-v0", "kwargs": race}, "agent": {}}
            OmegaConf.save(OmegaConf.create(cfg), d / "config.yaml")
        study.add_trial(arm_trial({"buffer": buffer}, [1.0] * 3, {}, out_dir=trial_dir))
    verdict = claims.answer("safety_car_replay", study, tmp_path, group_by=["buffer"])["verdict"]
    line = verdict["line"]
    assert verdict["holds"] is True, line
    # no stop: P1 (the whole field stops once, 28 s), minus the 25-point penalty, every race
    assert "uniform IQM 0 [0, 0] (n=3)" in line
    assert "prioritized replay scores more in safety-car races: holds" in line
