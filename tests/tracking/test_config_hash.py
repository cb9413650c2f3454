"""The config hash: stable, order-free, float-spelling-free, and blind to non-semantic keys."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tracking_helpers import tiny_cfg

from sweeper.config_hash import canonical_json, config_hash, flatten, semantic_config

# -- property-based, on plain configs -------------------------------------------------------
scalars = st.one_of(
    st.booleans(),
    st.none(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.text(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(min_size=1, max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
nodes = st.dictionaries(st.text(min_size=1, max_size=6), values, max_size=5)
configs = st.fixed_dictionaries(
    {
        "agent": nodes,
        "env": nodes,
        "buffer": nodes,
        "train": nodes,
        "eval": nodes,
        "seed": st.integers(0, 2**31),
    }
)


def shuffled(data, rnd):
    """The same mapping with every dict's key order permuted."""
    if isinstance(data, dict):
        items = list(data.items())
        rnd.shuffle(items)
        return {k: shuffled(v, rnd) for k, v in items}
    if isinstance(data, list):
        return [shuffled(v, rnd) for v in data]
    return data


@settings(max_examples=50, deadline=None)
@given(cfg=configs, rnd=st.randoms(use_true_random=False))
def test_key_order_is_irrelevant(cfg, rnd):
    assert config_hash(shuffled(cfg, rnd)) == config_hash(cfg)


@settings(max_examples=50, deadline=None)
@given(cfg=configs, extra=nodes, progress=st.booleans(), uri=st.text(max_size=10))
def test_non_semantic_keys_are_ignored(cfg, extra, progress, uri):
    noisy = copy.deepcopy(cfg)
    noisy["trial"] = {"study_name": "s", "number": 3, **extra}
    noisy["tracking"] = {"tracking_uri": uri, "enabled": True}
    noisy["hydra"] = {"run": {"dir": uri}}
    noisy["train"] = {
        **noisy["train"],
        "progress": progress,
        "plot": not progress,
        "save_model": progress,
    }
    clean = copy.deepcopy(cfg)
    for key in ("progress", "plot", "save_model"):
        clean["train"].pop(key, None)
    assert config_hash(noisy) == config_hash(clean)


@settings(max_examples=50, deadline=None)
@given(
    cfg=configs,
    node=st.sampled_from(["agent", "env", "buffer", "train", "eval"]),
    key=st.text(min_size=1, max_size=6).filter(
        lambda k: k not in ("progress", "plot", "save_model")
    ),
    value=scalars,
)
def test_any_semantic_change_changes_the_hash(cfg, node, key, value):
    changed = copy.deepcopy(cfg)
    old = changed[node].get(key, object())
    if old == value and type(old) is type(value):
        return
    changed[node][key] = value
    if canonical_json(changed) == canonical_json(cfg):  # e.g. 1 -> 1.0: same value
        assert value == old
        return
    assert config_hash(changed) != config_hash(cfg)


@settings(max_examples=30, deadline=None)
@given(cfg=configs, delta=st.integers(1, 1000))
def test_seed_changes_the_hash(cfg, delta):
    other = {**cfg, "seed": cfg["seed"] + delta}
    assert config_hash(other) != config_hash(cfg)


@settings(max_examples=100, deadline=None)
@given(x=st.floats(allow_nan=False, allow_infinity=False, width=64))
def test_float_spellings_hash_alike(x):
    """repr, scientific and fixed notations of the same double are the same config."""
    base = {"agent": {"lr": x}, "env": {}, "buffer": {}, "train": {}, "eval": {}, "seed": 0}
    for text in (repr(x), f"{x:.17e}", f"{x:.17g}"):
        other = {**base, "agent": {"lr": float(text)}}
        assert config_hash(other) == config_hash(base)


def test_hash_is_sha256_hex_and_known_value():
    cfg = {"agent": {"lr": 0.001}, "env": {}, "buffer": {}, "train": {}, "eval": {}, "seed": 1}
    digest = config_hash(cfg)
    assert len(digest) == 64 and int(digest, 16) >= 0
    # Pinned: the same config hashes the same on any machine, in any process.
    assert canonical_json(cfg) == (
        '{"config":{"agent":{"lr":0.001},"buffer":{},"env":{},"eval":{},"seed":1,"train":{}},'
        '"version":"sweeper-config-v1"}'
    )
    assert config_hash({**cfg, "agent": {"lr": 1e-3}}) == digest


def test_integral_floats_equal_ints():
    a = {"agent": {"x": 1.0}, "env": {}, "buffer": {}, "train": {}, "eval": {}, "seed": 1}
    b = {"agent": {"x": 1}, "env": {}, "buffer": {}, "train": {}, "eval": {}, "seed": 1}
    assert config_hash(a) == config_hash(b)
    assert config_hash({**a, "agent": {"x": True}}) != config_hash(a)


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {
        "a.b": 1,
        "a.c.d": [1, 2],
        "e": {},
    }


# -- composed configs (Hydra) ----------------------------------------------------------------
def test_override_order_and_float_spelling_on_composed_configs():
    a = tiny_cfg("agent.alpha=0.5", "seed=3", "agent.epsilon_decay=0.99")
    b = tiny_cfg("agent.epsilon_decay=9.9e-1", "seed=3", "agent.alpha=5e-1")
    assert config_hash(a) == config_hash(b)


@pytest.mark.parametrize(
    "override",
    [
        "train.progress=true",
        "train.plot=false",
        "train.save_model=false",
        "tracking.enabled=true",
        "tracking.experiment=x",
        "tracking.skip_existing=true",
        "trial.number=7",
        "trial.study_name=s",
        "hydra.run.dir=/elsewhere",
    ],
)
def test_non_semantic_overrides_keep_the_hash(override):
    assert config_hash(tiny_cfg(override)) == config_hash(tiny_cfg())


@pytest.mark.parametrize(
    "override",
    [
        "seed=43",
        "agent.alpha=0.2",
        "agent.gamma=0.95",
        "env.kwargs.slip=0.2",
        "train.episodes=31",
        "eval.every=5",
        "eval.episodes=3",
        "buffer=prioritized",
        "agent=sarsa",
        "eval.objective=best_eval_mean",
    ],
)
def test_semantic_overrides_change_the_hash(override):
    assert config_hash(tiny_cfg(override)) != config_hash(tiny_cfg())


def test_semantic_config_drops_ui_flags():
    sem = semantic_config(tiny_cfg())
    assert set(sem) == {"agent", "env", "buffer", "train", "eval", "seed"}
    assert "progress" not in sem["train"] and "plot" not in sem["train"]


def test_sweeper_hash_cli_matches_and_never_trains(tmp_path):
    args = ["agent=q_learning", "env=gridworld", "seed=5", "agent.alpha=1e-1"]
    proc = subprocess.run(
        [sys.executable, "-m", "sweeper.cli", "hash", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    swapped = subprocess.run(
        [sys.executable, "-m", "sweeper.cli", "hash", *reversed(args[:-1]), "agent.alpha=0.1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.strip() == swapped.stdout.strip()
    assert len(proc.stdout.strip()) == 64
    assert not (tmp_path / "outputs").exists()
    bad = subprocess.run(
        [sys.executable, "-m", "sweeper.cli", "hash", "agent.nope=1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
