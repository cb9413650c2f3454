"""The app's config: the schemas of ``sweeper.schema`` registered in Hydra's ConfigStore, and
the value checks.

Each value is checked in one layer. The schemas make an unknown key, a wrong type, a value
outside a fixed choice (an Enum of ``sweeper.choices``) or an unknown group option fail while
Hydra composes the config; :func:`validate` checks ranges and combinations before anything runs
(:func:`check_overrides` turns a composition error on the command line into one line).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from sweeper.schema import (
    UNIT,
    BufferConfig,
    Config,
    DQNAgentConfig,
    EnvConfig,
    PrioritizedBufferConfig,
    TabularAgentConfig,
)


class ConfigError(ValueError):
    """A bad config value: the message is one line that names the key."""


#: The schemas of the group options, by the name their YAML files extend them with
#: (``defaults: [/schema_dqn_agent@_here_, _self_]``). Stored outside the groups, so that they
#: are not options a user can pick (``agent=schema_dqn_agent`` is an unknown option) and
#: ``--help`` does not list them.
SCHEMAS = {
    "schema_tabular_agent": TabularAgentConfig,
    "schema_dqn_agent": DQNAgentConfig,
    "schema_env": EnvConfig,
    "schema_buffer": BufferConfig,
    "schema_prioritized_buffer": PrioritizedBufferConfig,
}


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for name, node in SCHEMAS.items():
        cs.store(name=name, node=node)


def _check(ok: bool, key: str, requirement: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key} {requirement}, got {value!r}")


def node_schema(node: DictConfig, schemas: Sequence[type], key: str) -> type:
    """Which of ``schemas`` (most specific first) a group's node is.

    A node composed by Hydra carries its schema (its YAML option extends ``schema_*``). A node
    read back from a run's ``config.yaml`` (``sweeper reproduce``, ``sweeper eval``) has lost
    its type: it is the first schema that has all of its keys (the agent schemas' keys differ,
    ``alpha`` vs ``lr``, ``hidden_sizes``, ...; a prioritized buffer has keys a uniform one
    lacks)."""
    kind = OmegaConf.get_type(node)
    for schema in schemas:
        if isinstance(kind, type) and issubclass(kind, schema):
            return schema
    keys = set(node.keys())
    fitting = [s for s in schemas if keys <= {f.name for f in fields(s)}]
    if not fitting:
        names = " or ".join(s.__name__ for s in schemas)
        raise ConfigError(f"{key}: its keys fit no schema ({names}): {sorted(keys)}")
    return min(fitting, key=lambda s: len(fields(s)))  # the least that holds every key


def agent_schema(agent: DictConfig) -> type:
    """:class:`TabularAgentConfig` or :class:`DQNAgentConfig`."""
    return node_schema(agent, (TabularAgentConfig, DQNAgentConfig), "agent")


def is_tabular(cfg: DictConfig) -> bool:
    return agent_schema(cfg.agent) is TabularAgentConfig


def validate(cfg: DictConfig) -> None:
    """Value checks the schema cannot express. Raises ConfigError naming the first bad key."""
    a, b, t, e = cfg.agent, cfg.buffer, cfg.train, cfg.eval
    _check(a.gamma in UNIT, "agent.gamma", f"must be in {UNIT}", a.gamma)
    _check(
        0 <= a.epsilon_end <= a.epsilon_start <= 1,
        "agent.epsilon_start",
        "must satisfy 0 <= agent.epsilon_end <= agent.epsilon_start <= 1",
        a.epsilon_start,
    )
    _check(a.epsilon_decay in UNIT, "agent.epsilon_decay", f"must be in {UNIT}", a.epsilon_decay)
    _check(
        a.epsilon_decay_steps > 0, "agent.epsilon_decay_steps", "must be > 0", a.epsilon_decay_steps
    )
    if is_tabular(cfg):
        _check(a.alpha in UNIT, "agent.alpha", f"must be in {UNIT}", a.alpha)
    else:
        _check(a.lr > 0, "agent.lr", "must be > 0", a.lr)
        _check(
            a.target_update_freq >= 1,
            "agent.target_update_freq",
            "must be >= 1",
            a.target_update_freq,
        )
        _check(a.tau in UNIT, "agent.tau", f"must be in {UNIT}", a.tau)
        _check(a.grad_clip >= 0, "agent.grad_clip", "must be >= 0 (0 disables)", a.grad_clip)
        _check(
            len(a.hidden_sizes) > 0 and all(h > 0 for h in a.hidden_sizes),
            "agent.hidden_sizes",
            "must be a non-empty list of positive ints",
            list(a.hidden_sizes),
        )
        _check(b.capacity >= 1, "buffer.capacity", "must be >= 1", b.capacity)
        _check(b.batch_size >= 1, "buffer.batch_size", "must be >= 1", b.batch_size)
        if b.name != "none":
            _check(
                b.capacity >= b.batch_size,
                "buffer.capacity",
                f"must be >= buffer.batch_size ({b.batch_size})",
                b.capacity,
            )
        prioritized = PrioritizedBufferConfig
        if node_schema(b, (prioritized, BufferConfig), "buffer") is prioritized:
            _check(b.alpha >= 0, "buffer.alpha", "must be >= 0", b.alpha)
            _check(0 <= b.beta_start <= 1, "buffer.beta_start", "must be in [0, 1]", b.beta_start)
            _check(b.priority_eps > 0, "buffer.priority_eps", "must be > 0", b.priority_eps)
    _check(
        t.episodes is not None or t.total_steps is not None,
        "train.episodes",
        "or train.total_steps must be set",
        None,
    )
    if t.episodes is not None:
        _check(t.episodes >= 1, "train.episodes", "must be >= 1", t.episodes)
    if t.total_steps is not None:
        _check(t.total_steps >= 1, "train.total_steps", "must be >= 1", t.total_steps)
    _check(t.learning_starts >= 0, "train.learning_starts", "must be >= 0", t.learning_starts)
    _check(t.train_freq >= 1, "train.train_freq", "must be >= 1", t.train_freq)
    _check(t.gradient_steps >= 1, "train.gradient_steps", "must be >= 1", t.gradient_steps)
    _check(e.every >= 0, "eval.every", "must be >= 0", e.every)
    _check(e.episodes >= 1, "eval.episodes", "must be >= 1", e.episodes)
    _check(cfg.seed >= 0, "seed", "must be >= 0", cfg.seed)
    every = cfg.tracking.get("episode_metrics_every", 1)
    _check(every >= 1, "tracking.episode_metrics_every", "must be >= 1", every)
    validate_trial(cfg.trial)
    from sweeper.envs.factory import check_env_id  # registers our env ids first

    try:
        check_env_id(cfg.env.id)
    except ValueError as err:
        raise ConfigError(f"env.id: {err}") from None


def validate_trial(trial: DictConfig) -> None:
    """The replicate seeds (``trial.aggregate`` and ``trial.phase`` are Enums: the schema
    refuses another value)."""
    if trial.seeds is not None:
        seeds = list(trial.seeds)
        _check(len(seeds) > 0, "trial.seeds", "must list at least one seed (or be null)", seeds)
        _check(all(s >= 0 for s in seeds), "trial.seeds", "must be seeds >= 0", seeds)
        _check(len(set(seeds)) == len(seeds), "trial.seeds", "must not repeat a seed", seeds)


CONF_DIR = Path(__file__).resolve().parent / "conf"


def compose_config(overrides: Sequence[str] = (), mask_secrets: bool = False) -> DictConfig:
    """The app's config composed with ``overrides``, outside a Hydra run (tests, CLI tools).
    ``mask_secrets``: passwords in URLs masked, as the app's MaskSecrets callback does for a
    run (what the CLI's commands compose: nothing downstream sees a password)."""
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name="sweeper_hash"):
        cfg = compose("config", list(overrides))
    if mask_secrets:
        from sweeper.secrets import mask_config

        mask_config(cfg)
    return cfg


#: The config groups a user picks options of (``agent=dqn``, ``+sweep=ablation``).
GROUPS = ("agent", "env", "buffer", "sweep")


def group_options(group: str) -> list[str]:
    """The options of ``group``: its YAML files in ``conf/<group>/``."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_grammar(args: Sequence[str]) -> None:
    """One-line ConfigError naming the key of the first command-line override Hydra's grammar
    refuses (``agent.lr=interval(1e-2)``), before Hydra prints four lines about it."""
    from sweeper.overrides import grammar_error
    from sweeper.secrets import mask_text

    for arg in args:
        if "=" in arg and not arg.startswith("-"):
            error = grammar_error(arg)
            if error is not None:
                raise ConfigError(mask_text(error))


_NO_RUN_FLAGS = frozenset(
    {"-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "-sc", "--shell-completion"}
)


def check_output_dir(args: Sequence[str]) -> None:
    """One-line ConfigError naming the key (``hydra.run.dir``, or ``hydra.sweep.dir`` for
    ``-m``) when the run's outputs cannot be written there (a read-only filesystem, a file in
    place of a directory), before Hydra fails to create it with a traceback. Only the part
    of the directory before its first interpolation is checked; nothing is left behind."""
    import tempfile

    if any(a.split("=", 1)[0] in _NO_RUN_FLAGS for a in args):
        return  # --help, --cfg job, --info: nothing is written
    multirun = any(  # a ready-made sweep (conf/sweep/) sets hydra.mode=MULTIRUN itself
        a in ("-m", "--multirun", "hydra.mode=MULTIRUN") or a.split("=")[0].lstrip("+") == "sweep"
        for a in args
    )
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = [a.split("=", 1)[1] for a in args if a.split("=", 1)[0].lstrip("+~") == key]
    if given:
        value = given[-1].strip("'\"")  # Hydra's quotes are not part of the path
    else:
        node: Any = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml"))
        for part in key.split("."):  # unresolved: ${now:...} is Hydra's to fill in
            node = node.get(part, {}) if isinstance(node, dict) else {}
        value = node if isinstance(node, str) else ""
    literal = value.split("${", 1)[0]
    if not literal.strip():
        return
    path = Path(literal).expanduser()
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{key} {value!r}: {existing} is not a directory")
    try:  # root writes through permission bits: only trying tells (a read-only mount, /proc)
        with tempfile.TemporaryFile(dir=existing, prefix=".sweeper-write-check-"):
            pass  # unnamed where the OS can (O_TMPFILE): no other process ever lists it
    except OSError as err:
        raise ConfigError(
            f"{key} {value!r}: cannot create directories in {existing}: {err.strerror or err}"
        ) from None


def check_group_choices(args: Sequence[str]) -> None:
    """One-line ConfigError for a command-line override that picks an option a group does not
    have (``agent=base_dqn``, ``env=grid``, ``agent=dqn,sarsaa``), before Hydra composes: its
    own error is a dozen lines of search path. Anything it cannot parse is left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - Hydra reports bad grammar itself
        return
    for override in parsed:
        group = override.key_or_group
        if group not in GROUPS or override.package is not None or override.is_delete():
            continue
        try:
            picked = (
                list(override.sweep_string_iterator())
                if override.is_sweep_override()
                else [override.get_value_element_as_str()]
            )
        except Exception:  # noqa: BLE001 - e.g. an interpolation: Hydra's to resolve
            continue
        options = group_options(group)
        for name in picked:
            if name not in options:
                raise ConfigError(
                    f"{override.input_line}: {group} has no option {name!r} "
                    f"(options: {', '.join(options)})"
                )


def check_overrides(args: Sequence[str]) -> None:
    """One-line ConfigError for a command-line override the schema refuses (a wrong type, a
    value outside a fixed choice, an unknown key), before Hydra composes: Hydra's own error is
    four lines (``Error merging override ...``, the reason, ``full_key``, ``object_type``).

    Composes the app's config with the plain overrides of ``args`` (not sweeps, which the
    sweeper checks point by point, nor ``hydra.*``); anything else it cannot judge is left to
    Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import ConfigCompositionException

    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - Hydra reports bad grammar itself
        return
    plain = [
        o.input_line
        for o in parsed
        if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")
    ]
    if not plain:
        return
    try:
        compose_config(plain)
    except ConfigCompositionException as err:
        cause = err.__cause__ or err.__context__
        reason = str(cause or err).strip().splitlines()[0]
        line = str(err).strip().splitlines()[0].removeprefix("Error merging override ").rstrip(".")
        raise ConfigError(f"{line}: {reason}") from None
    except Exception:  # noqa: BLE001 - e.g. an interpolation only a run resolves: Hydra's
        return
