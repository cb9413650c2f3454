"""The F1 pit-strategy environment (issue 14): spaces, determinism, Gymnasium's checker, the
stated lap-time formula on hand-made cases, the two-compound rule, the safety car's cheaper
stop, and the dynamic-programming oracle against brute force."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sweeper.envs  # noqa: F401 - registers the ids
from sweeper.envs.f1 import F1PitStrategy
from sweeper.envs.f1_oracle import brute_force, optimal_strategy, race_return

CALM = {"noise_std": 0.0, "sc_prob": 0.0, "weather_change_prob": 0.0}
SOLO = {**CALM, "rivals": (), "start_position": 1, "time_shaping": 1.0, "points_scale": 0.0}


@pytest.mark.parametrize("env_id", ["sweeper/F1PitStrategy-v0", "sweeper/F1-Barcelona-v0",
                                    "sweeper/F1-Singapore-v0", "sweeper/F1-Spa-v0"])  # fmt: skip
@pytest.mark.parametrize("obs_mode", ["discrete", "vector"])
def test_gymnasium_check_env_and_spaces(env_id: str, obs_mode: str) -> None:
    env = gymnasium.make(env_id, obs_mode=obs_mode).unwrapped
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    assert env.action_space.n == 1 + len(env.compounds)
    steps, terminated = 0, False
    while not terminated:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and not truncated
        steps += 1
    assert steps == env.laps and 1 <= info["position"] <= env.n_cars


def test_same_seed_same_race_other_seed_another() -> None:
    def race(seed: int) -> list:
        env = F1PitStrategy(track="spa", obs_mode="vector")
        env.reset(seed=seed)
        env.action_space.seed(seed)
        out = []
        for lap in range(env.laps):
            obs, reward, *_, info = env.step(2 if lap == 8 else 0)
            out.append((obs.tobytes(), reward, info["race_time"], info["weather"]))
        return out

    assert race(7) == race(7)
    assert race(7) != race(8)


def test_lap_times_follow_the_stated_formula() -> None:
    env = F1PitStrategy(laps=3, start_compound="medium", **SOLO)
    env.reset(seed=0)
    _, reward, *_, info = env.step(0)  # lap 0 on new mediums: 90 + 0.6 + 0 + fuel 0.035 * 2
    assert info["race_time"] == pytest.approx(90.6 + 0.07)
    assert reward == pytest.approx(-(0.6 + 0.07))
    _, reward, *_, info = env.step(1)  # pit for softs on lap 1: 22 s + 90 + 0 + 0.035
    assert info["race_time"] == pytest.approx(90.67 + 22.0 + 90.035)
    # age 20 softs on lap 5 of 30 at Barcelona (deg x1.6): 90 + 0 + 1.6 * 0.12 * 20 + the
    # cliff 0.5 * (20 - 12)**2 / 2 + fuel 0.035 * 24
    bcn = F1PitStrategy(track="barcelona", **SOLO)
    assert bcn.lap_seconds("soft", 20, 5, "dry") == pytest.approx(
        90 + 1.6 * 0.12 * 20 + 0.5 * 64 / 2 + 0.035 * 24
    )
    assert bcn.lap_seconds("inter", 0, 29, "damp") == pytest.approx(91.0)


def test_two_dry_compounds_or_the_penalty() -> None:
    env = F1PitStrategy(laps=4, **{**SOLO, "time_shaping": 0.0, "points_scale": 1.0})
    assert race_return(env, (0, 0, 0, 0)) == 25 - 25  # P1 on mediums only: disqualified
    assert race_return(env, (0, 0, 3, 0)) == 25  # a stop for hards: two dry compounds
    wet = F1PitStrategy(laps=4, weather_start="wet", **{**SOLO, "time_shaping": 0.0,
                                                         "points_scale": 1.0})  # fmt: skip
    assert race_return(wet, (0, 0, 0, 0)) == 25  # the rule is for dry races


def test_a_safety_car_lowers_the_pit_loss() -> None:
    kw = {**SOLO, "sc_prob": 1.0, "sc_laps": 2, "laps": 4}  # a safety car from lap 1

    def time_after_lap_1(action: int) -> float:
        env = F1PitStrategy(**kw)
        env.reset(seed=0)
        env.step(0)
        _, _, _, _, info = env.step(action)
        assert info["safety_car"] or env.trace()[-1]["safety_car"]
        return info["race_time"]

    assert time_after_lap_1(3) - time_after_lap_1(0) == pytest.approx(11.0)  # sc_pit_loss
    green = F1PitStrategy(**{**SOLO, "laps": 4})
    green.reset(seed=0)
    green.step(0)
    t_stay = green.step(0)[4]["race_time"]
    green.reset(seed=0)
    green.step(0)
    t_pit = green.step(3)[4]["race_time"]
    # 22 s in the pit lane, then new hards (1.2 s/lap slower than mediums of age 1: 0.07)
    assert t_pit - t_stay == pytest.approx(22.0 + (1.2 + 0) - (0.6 + 0.07 * 1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"laps": 4, "compounds": ("soft", "medium", "hard")},
        {"laps": 5, "compounds": ("soft", "medium", "hard"), "pit_loss": 1.0},  # stops are cheap
        {"laps": 5, "compounds": ("soft", "hard"), "deg_scale": 4.0, "start_compound": "soft"},
        {"laps": 4, "weather_start": "wet", "start_compound": "medium"},  # inters or wets
    ],
)
def test_the_dp_oracle_matches_brute_force(kwargs: dict) -> None:
    env = F1PitStrategy(**{**SOLO, **kwargs})
    dp = optimal_strategy(env)
    bf = brute_force(env)
    assert dp.value == pytest.approx(bf.value, abs=1e-9)
    assert race_return(env, dp.actions) == pytest.approx(dp.value, abs=1e-9)


def test_the_oracle_refuses_a_random_race() -> None:
    with pytest.raises(ValueError, match="noise_std=0"):
        optimal_strategy(F1PitStrategy(laps=3))


def test_discrete_observation_tells_the_state_apart() -> None:
    env = F1PitStrategy(laps=6, lap_buckets=6, age_buckets=6, **SOLO)
    seen = set()
    env.reset(seed=0)
    for action in (0, 1, 0, 3, 0, 0):
        obs, *_ = env.step(action)
        seen.add(obs)
    assert len(seen) == 6
    assert np.all(np.isfinite(F1PitStrategy(obs_mode="vector").reset(seed=0)[0]))


# -- learning against the oracle (slow) --------------------------------------------------------
ORACLE_RACE = {
    "track": "barcelona",
    "laps": 6,
    "compounds": ["soft", "medium", "hard"],
    "lap_buckets": 6,  # one bucket per lap and per lap of tyre age: the state is exact
    "age_buckets": 6,
    **SOLO,
}


def _override(key: str, value) -> str:
    if isinstance(value, list | tuple):
        return f"+env.kwargs.{key}=[{','.join(map(str, value))}]"
    return f"+env.kwargs.{key}={value}"


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_q_learning_finds_the_oracles_strategy(tmp_path, seed: int) -> None:
    """Tabular Q-learning (the app, 3000 races, gamma 1: the return is minus the seconds lost)
    ends with a greedy race exactly as fast as the DP optimum on the deterministic race."""
    import json
    import subprocess
    import sys

    env = F1PitStrategy(**ORACLE_RACE)
    best = optimal_strategy(env)
    assert best.pits(env)  # a stop is needed (the two-compound rule)
    kwargs = {k: v for k, v in ORACLE_RACE.items() if k != "track"}
    cmd = [
        sys.executable, "-m", "sweeper.train", "agent=q_learning", "env=f1_barcelona",
        *(_override(k, v) for k, v in kwargs.items()), "agent.gamma=1.0", f"seed={seed}",
        "train.episodes=3000", "eval.every=1000", "eval.episodes=1", "train.progress=false",
        "tracking.enabled=false", f"hydra.run.dir={tmp_path / 'run'}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["eval_means"][-1] == pytest.approx(best.value, abs=0.1), (result, best)
    assert {"pit_strategy", "race_trace"} <= set(result["files"])  # the strategist's figures
    assert (tmp_path / "run" / "pit_strategy.png").stat().st_size > 0


def test_pit_map_and_race_trace_read_the_policy(tmp_path) -> None:
    """A hand-made policy (pit for hards once mediums are 4 laps old): the map shows exactly
    that, the greedy race stops once on lap 4, and both figures are written."""
    from sweeper import strategy_figures as sf

    env = F1PitStrategy(laps=8, obs_mode="vector", **{**CALM, "start_position": 3})
    hard = 1 + env.compounds.index("hard")
    age_col = 5 + env.compounds.index("medium")  # the compound one-hot's medium entry

    def greedy_q(obs):
        q = np.zeros((len(obs), env.action_space.n))
        worn_mediums = (obs[:, age_col] == 1.0) & (obs[:, 4] * env.laps >= 4 - 1e-9)
        q[worn_mediums, hard] = 1.0
        return q

    maps = sf.pit_map(greedy_q, env)
    for lap in range(env.laps):
        for age in range(lap + 1):
            assert maps["medium"][lap, age] == (hard if age >= 4 else 0)
            assert maps["soft"][lap, age] == 0 and maps["hard"][lap, age] == 0
    assert (maps["medium"][0, 1:] == -1).all()  # no 1-lap-old tyres on lap 0
    trace = sf.greedy_race(greedy_q, env, seed=0)
    assert [t["lap"] for t in trace if t["pit"]] == [5]  # lap index 4, shown 1-based
    assert len(trace) == env.laps and len(trace[0]["rivals"]) == env.n_cars - 1
    assert sf.plot_pit_map(maps, env, tmp_path / "map.png", "t").stat().st_size > 0
    assert sf.plot_race_trace(trace, tmp_path / "trace.png", "t").stat().st_size > 0


# -- DQN against the field's fixed strategies (slow) -------------------------------------------
DQN_SEEDS = (0, 1, 2)
RACES = 200  # unseen races per policy (f1_policies.RACE_SEED_OFFSET on): the same for all


@pytest.mark.slow
def test_dqn_beats_every_fixed_rival_strategy(tmp_path) -> None:
    """``+experiment=f1_dqn`` (DQN on the telemetry vector, stochastic Singapore: noise, safety
    cars) trained on 3 seeds through the app; each seed's greedy policy, on 200 races none of
    them trained or evaluated on, scores more mean points than the car driving any rival's
    fixed plan on the same 200 races. Measured on 2026-12-07 (this 2-core VM): DQN 15.9, 15.6,
    16.2 points per race vs the best plan (medium -> soft at 55%) 14.7 (the others 4.3-11.9)."""
    import subprocess
    import sys

    from omegaconf import OmegaConf

    from sweeper.agents.saved import q_function
    from sweeper.envs import f1_policies as pol

    procs = {
        seed: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sweeper.train",
                "+experiment=f1_dqn",
                f"seed={seed}",
                "train.progress=false",
                "tracking.enabled=false",
                f"hydra.run.dir={tmp_path / f'seed_{seed}'}",
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for seed in DQN_SEEDS
    }
    logs = {seed: p.communicate(timeout=600)[0] for seed, p in procs.items()}
    for seed, p in procs.items():
        assert p.returncode == 0, logs[seed][-3000:]
    kwargs = OmegaConf.to_container(
        OmegaConf.load(tmp_path / "seed_0" / "config.yaml").env.kwargs, resolve=True
    )
    fixed = {
        plan: float(np.mean([r.points for r in rs]))
        for plan, rs in pol.rival_strategies({"track": "singapore", **kwargs}, RACES).items()
    }
    learned = {}
    for seed in DQN_SEEDS:
        env = F1PitStrategy(track="singapore", **kwargs)
        q = q_function(tmp_path / f"seed_{seed}" / "model.pt", env.observation_space.shape[0],
                       env.action_space.n)  # fmt: skip
        learned[seed] = float(np.mean([r.points for r in pol.races(env, pol.greedy(q), RACES)]))
    best = max(fixed, key=fixed.get)
    print(f"DQN points per race by seed {learned}; fixed plans {fixed}")
    assert all(points > fixed[best] for points in learned.values()), (learned, best, fixed)
    assert (tmp_path / "seed_0" / "race_trace.png").stat().st_size > 0


def test_the_compound_tables_are_keywords_too() -> None:
    """deg / cliff / pace: partial tables override the defaults they name, and the oracle
    (which reads the env's own formula) follows them; a key that is no compound is refused."""
    soft_deg = F1PitStrategy(laps=10, deg={"soft": 0.5}, **SOLO)
    assert soft_deg.lap_seconds("soft", 4, 9, "dry") == pytest.approx(90 + 0.5 * 4)
    assert soft_deg.lap_seconds("medium", 4, 9, "dry") == pytest.approx(90.6 + 0.07 * 4)
    cliffy = F1PitStrategy(laps=10, cliff={"medium": 2}, pace={"dry": {"hard": 0.0}}, **SOLO)
    assert cliffy.lap_seconds("medium", 4, 9, "dry") == pytest.approx(90.6 + 0.28 + 0.5 * 4 / 2)
    assert cliffy.lap_seconds("hard", 0, 9, "dry") == pytest.approx(90.0)
    small = F1PitStrategy(laps=4, cliff={"medium": 1}, pace={"dry": {"hard": 0.0}},
                          compounds=("soft", "medium", "hard"), **SOLO)  # fmt: skip
    assert optimal_strategy(small).value == pytest.approx(brute_force(small).value, abs=1e-9)
    for kwargs, key in (({"deg": {"supersoft": 1.0}}, "deg"), ({"pace": {"dry": {"x": 1}}}, "pace"),
                        ({"pace": {"monsoon": {}}}, "pace")):  # fmt: skip
        with pytest.raises(ValueError, match=f"^{key}: unknown key"):
            F1PitStrategy(**kwargs)
