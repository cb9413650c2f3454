"""Every config group option composes and instantiates; bad values fail naming the key."""

import numpy as np
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from sweeper.agents.dqn import DQNAgent
from sweeper.agents.tabular import SARSA, ExpectedSARSA, QLearning
from sweeper.buffers import LatestTransitionBuffer, PrioritizedReplayBuffer, UniformReplayBuffer
from sweeper.config import CONF_DIR, ConfigError, check_overrides, compose_config, validate
from sweeper.train import build

AGENTS = sorted(p.stem for p in (CONF_DIR / "agent").glob("*.yaml"))
ENVS = sorted(p.stem for p in (CONF_DIR / "env").glob("*.yaml"))
BUFFERS = sorted(p.stem for p in (CONF_DIR / "buffer").glob("*.yaml"))
TABULAR = {"q_learning": QLearning, "sarsa": SARSA, "expected_sarsa": ExpectedSARSA}


def test_the_groups_offer_what_the_issue_names():
    assert set(AGENTS) == {
        "q_learning",
        "sarsa",
        "expected_sarsa",
        "dqn",
        "double_dqn",
        "dueling_dqn",
    }
    assert set(ENVS) == {
        "gridworld",
        "cartpole_simple",
        "cartpole_v1",
        "acrobot_v1",
        "mountaincar_v0",
        "f1_barcelona",
        "f1_singapore",
        "f1_spa",
    }
    assert set(BUFFERS) == {"uniform", "prioritized", "none"}


def test_defaults_reproduce_the_seed_dqn_run():
    cfg = compose_config()
    a, b = cfg.agent, cfg.buffer
    assert (cfg.agent.name, cfg.env.name, cfg.buffer.name) == ("dqn", "cartpole_simple", "uniform")
    assert (a.lr, a.gamma, a.target_update_freq, list(a.hidden_sizes)) == (
        1e-3,
        0.99,
        100,
        [64, 64],
    )
    assert (a.epsilon_start, a.epsilon_end, a.epsilon_decay) == (1.0, 0.01, 0.995)
    assert (a.loss, a.grad_clip, a.double, a.dueling, a.target_update) == (
        "mse",
        1.0,
        False,
        False,
        "hard",
    )
    assert (b.capacity, b.batch_size) == (10_000, 64)
    assert cfg.train.episodes == 500 and cfg.env.max_episode_steps == 500


@pytest.mark.parametrize("agent", AGENTS)
@pytest.mark.parametrize("env", ENVS)
def test_every_agent_env_pair_composes_and_instantiates(agent, env):
    overrides = [f"agent={agent}", f"env={env}"]
    discrete = env == "gridworld" or env.startswith("f1_")  # obs_mode for tabular agents
    if agent in TABULAR and not discrete:
        with pytest.raises(ConfigError, match="tabular"):
            build(compose_config(overrides))
        return
    if agent not in TABULAR and env == "gridworld":
        overrides.append("env.kwargs.obs_mode=onehot")
    if agent not in TABULAR and env.startswith("f1_"):
        overrides.append("env.kwargs.obs_mode=vector")  # the telemetry vector
    cfg = compose_config(overrides)
    validate(cfg)
    built, env_, eval_env = build(cfg)
    assert isinstance(built, TABULAR.get(agent, DQNAgent))
    members = np.array([0])
    obs = env_.reset(members, [0])
    actions, _ = built.act(obs, members)
    assert env_.single_action_space.contains(int(actions[0]))


@pytest.mark.parametrize(
    "buffer, cls",
    [
        ("uniform", UniformReplayBuffer),
        ("prioritized", PrioritizedReplayBuffer),
        ("none", LatestTransitionBuffer),
    ],
)
def test_every_buffer_instantiates(buffer, cls):
    agent, _, _ = build(compose_config([f"buffer={buffer}"]))
    assert isinstance(agent.buffer, cls)


def test_dqn_variants_set_their_switches():
    assert build(compose_config(["agent=double_dqn"]))[0].double.all()
    assert build(compose_config(["agent=dueling_dqn"]))[0].online.dueling
    assert (build(compose_config(["agent.target_update=none"]))[0].target_mode == 2).all()


@pytest.mark.parametrize(
    "override, key",
    [
        ("agent.gamma=0", "agent.gamma"),
        ("agent.gamma=1.5", "agent.gamma"),
        ("agent.lr=0", "agent.lr"),
        ("agent.lr=-1e-3", "agent.lr"),
        ("buffer.capacity=32", "buffer.capacity"),
        ("buffer.batch_size=0", "buffer.batch_size"),
        ("agent.target_update_freq=0", "agent.target_update_freq"),
        ("agent.epsilon_decay=1.5", "agent.epsilon_decay"),
        ("agent.epsilon_end=2", "agent.epsilon_start"),
        ("agent.hidden_sizes=[]", "agent.hidden_sizes"),
        ("train.episodes=0", "train.episodes"),
        ("train.train_freq=0", "train.train_freq"),
        ("eval.episodes=0", "eval.episodes"),
        ("buffer=prioritized", None),
    ],
)
def test_bad_values_fail_naming_the_key(override, key):
    cfg = compose_config([override])
    if key is None:  # a valid control case
        validate(cfg)
        return
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    message = str(err.value)
    assert key in message and "\n" not in message


def test_bad_combinations_fail_at_build():
    with pytest.raises(ConfigError, match="tabular"):
        build(compose_config(["agent=q_learning", "env=cartpole_v1"]))
    with pytest.raises(ConfigError, match="obs_mode"):
        build(compose_config(["agent=dqn", "env=gridworld"]))
    with pytest.raises(ConfigError, match="env.id"):
        build(compose_config(["env.id=NoSuchEnv-v9"]))


def test_schema_rejects_unknown_keys_wrong_types_and_unknown_options():
    with pytest.raises(ConfigCompositionException, match="agent.learning_rate"):
        compose_config(["agent.learning_rate=0.1"])
    with pytest.raises(ConfigCompositionException, match="agent.lr"):
        compose_config(["agent.lr=fast"])
    with pytest.raises(ConfigCompositionException, match="train.episodes"):
        compose_config(["train.episodes=many"])
    with pytest.raises(ConfigCompositionException, match="agent"):
        compose_config(["agent=ppo"])
    with pytest.raises((ConfigCompositionException, ConfigKeyError, ValidationError)):
        compose_config(["seed=abc"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("agent.target_update=sometimes", "agent.target_update"),
        ("agent.loss=l1", "agent.loss"),
        ("agent.epsilon_schedule=cosine", "agent.epsilon_schedule"),
        ("eval.objective=median", "eval.objective"),
        ("trial.aggregate=bogus", "trial.aggregate"),
        ("trial.phase=deploy", "trial.phase"),
    ],
)
def test_a_value_outside_a_fixed_choice_is_refused_by_the_schema(override, key):
    """The fixed choices are Enums (sweeper.choices): composing fails, naming the key, and
    ``check_overrides`` makes it the app's one-line config error."""
    with pytest.raises(ConfigCompositionException, match=key.split(".")[-1]):
        compose_config([override])
    with pytest.raises(ConfigError) as err:
        check_overrides([override])
    assert str(err.value).startswith(override) and "\n" not in str(err.value)
    assert "expected one of" in str(err.value)


def test_the_choices_read_as_plain_strings_everywhere():
    """StrEnum values: the composed config saves, hashes and compares as the strings did."""
    cfg = compose_config(["agent.target_update=soft"])
    assert cfg.agent.target_update == "soft" and str(cfg.agent.target_update) == "soft"
    assert "target_update: soft" in OmegaConf.to_yaml(cfg.agent)


@pytest.mark.parametrize(
    ("agent", "tabular"),
    [("q_learning", True), ("sarsa", True), ("dqn", False), ("dueling_dqn", False)],
)
def test_the_agent_kind_comes_from_its_schema_also_for_a_config_read_back(agent, tabular):
    """A composed node carries its schema; one read back from a run's config.yaml (reproduce,
    eval) is matched to the schema that holds all its keys."""
    from sweeper.config import is_tabular, node_schema
    from sweeper.schema import BufferConfig, PrioritizedBufferConfig

    cfg = compose_config([f"agent={agent}", "buffer=prioritized"])
    plain = OmegaConf.create(OmegaConf.to_yaml(cfg))
    assert is_tabular(cfg) is tabular and is_tabular(plain) is tabular
    schemas = (PrioritizedBufferConfig, BufferConfig)
    assert node_schema(plain.buffer, schemas, "buffer") is PrioritizedBufferConfig
    uniform = OmegaConf.create(OmegaConf.to_yaml(compose_config(["buffer=uniform"])))
    assert node_schema(uniform.buffer, schemas, "buffer") is BufferConfig
    with pytest.raises(ConfigError, match=r"^agent: its keys fit no schema"):
        is_tabular(OmegaConf.create({"agent": {"alpha": 0.1, "lr": 0.1}}))
