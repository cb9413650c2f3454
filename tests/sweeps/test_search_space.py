"""Override grammar -> Optuna distributions: parametrized tables of the pure functions."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from sweeper.sweeps.search_space import (
    SearchSpaceError,
    build_search_space,
    describe_distribution,
    distribution_from_override,
    format_value,
    grid_choices,
    param_override,
    parse_override,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a=choice(1,2,3)", CategoricalDistribution([1, 2, 3])),
        ("a=1,2,3", CategoricalDistribution([1, 2, 3])),
        ("a=choice(hard,none)", CategoricalDistribution(["hard", "none"])),
        ("a=choice(true,false)", CategoricalDistribution([True, False])),
        ("buffer=choice(uniform,none)", CategoricalDistribution(["uniform", "none"])),
        ("a=choice([64,64],[128])", CategoricalDistribution(["[64,64]", "[128]"])),
        ("a=range(1,5)", IntDistribution(1, 4, step=1)),
        ("a=range(0,10,5)", IntDistribution(0, 5, step=5)),
        ("a=range(0.0,1.0,0.25)", FloatDistribution(0.0, 0.75, step=0.25)),
        ("a=range(5,1,-1)", IntDistribution(2, 5, step=1)),
        ("a=range(5,1,-2)", IntDistribution(3, 5, step=2)),
        ("a=range(1.0,0.0,-0.25)", FloatDistribution(0.25, 1.0, step=0.25)),
        ("a=shuffle(range(1,4))", CategoricalDistribution([1, 2, 3])),
        ("a=interval(0,1)", FloatDistribution(0.0, 1.0)),
        ("a=interval(1e-4,1e-2)", FloatDistribution(1e-4, 1e-2)),
        ("a=tag(log,interval(1e-4,1e-2))", FloatDistribution(1e-4, 1e-2, log=True)),
        ("a=int(interval(10,500))", IntDistribution(10, 500)),
        ("a=tag(log,int(interval(1000,50000)))", IntDistribution(1000, 50000, log=True)),
        ("a=0.5", None),
        ("a=[1,2]", None),
        ("+a=foo", None),
    ],
)
def test_distribution_from_override(text, expected):
    assert distribution_from_override(parse_override(text)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lr=interval(5,1)", "lr: interval(5,1) needs low < high"),
        ("lr=interval(1,1)", "lr: interval(1,1) needs low < high"),
        ("lr=interval(1.0, 1e-1)", "lr: interval(1.0, 1e-1) needs low < high"),
        (
            "lr=tag(log,interval(0,1))",
            "lr: a log interval needs low > 0, got tag(log,interval(0,1))",
        ),
        ("lr=tag(log,interval(-1,1))", "lr: a log interval needs low > 0"),
        ("lr=tag(log,int(interval(0,10)))", "lr: a log interval needs low > 0"),
        ("lr=choice()", "lr: cannot parse"),
        ("lr=interval(1,", "lr: cannot parse"),
        ("lr=choice(1,1)", "lr: duplicate values"),
        ("lr=tag(foo,interval(0,1))", "lr: unknown tag"),
        ("lr=range(5,1)", "lr: range(5,1) is empty"),
        ("lr=range(1,5,-1)", "lr: range(1,5,-1) is empty"),
    ],
)
def test_bad_overrides_name_the_parameter_in_one_line(text, message):
    with pytest.raises(SearchSpaceError) as err:
        distribution_from_override(parse_override(text))
    assert message in str(err.value)
    assert str(err.value).startswith("lr")
    assert "\n" not in str(err.value)


def test_build_search_space_merges_params_and_arguments():
    space = build_search_space(
        {"agent.lr": "tag(log,interval(1e-4,1e-2))", "seed": 3, "agent.double": True},
        ["agent.lr=interval(0.1,0.2)", "env=gridworld", "buffer=choice(uniform,none)"],
    )
    assert space.distributions == {
        "agent.lr": FloatDistribution(0.1, 0.2),  # the command line wins
        "buffer": CategoricalDistribution(["uniform", "none"]),
    }
    assert space.fixed == ["seed=3", "agent.double=true", "env=gridworld"]


def test_params_errors_say_where_they_come_from():
    with pytest.raises(SearchSpaceError, match=r"^hydra.sweeper.params.agent.lr: cannot parse"):
        build_search_space({"agent.lr": "choice()"})


@pytest.mark.parametrize(
    ("dist", "values"),
    [
        (CategoricalDistribution(["a", "b"]), ["a", "b"]),
        (IntDistribution(1, 4), [1, 2, 3, 4]),
        (IntDistribution(0, 10, step=5), [0, 5, 10]),
        (FloatDistribution(0.0, 0.5, step=0.25), [0.0, 0.25, 0.5]),
    ],
)
def test_grid_choices(dist, values):
    assert grid_choices("p", dist) == values


@pytest.mark.parametrize(
    "dist",
    [
        FloatDistribution(0, 1),
        FloatDistribution(1e-3, 1, log=True),
        IntDistribution(1, 100, log=True),
    ],
)
def test_grid_refuses_continuous(dist):
    with pytest.raises(SearchSpaceError, match="^p: the grid sampler needs choice"):
        grid_choices("p", dist)


@pytest.mark.parametrize(
    "text",
    [
        "a=choice(1,2,3)",
        "a=tag(log,interval(0.0001,0.01))",
        "a=int(interval(10,500))",
        "a=tag(log,int(interval(1000,50000)))",
        "a=range(0,10,5)",
        "a=interval(0.0,1.0)",
    ],
)
def test_describe_round_trips(text):
    dist = distribution_from_override(parse_override(text))
    again = distribution_from_override(parse_override("a=" + describe_distribution(dist)))
    assert again == dist


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "null"),
        (True, "true"),
        (3, "3"),
        (0.001, "0.001"),
        ("uniform", "uniform"),
        ("has space", "'has space'"),
        ("it's", "'it\\'s'"),
        ("postgresql+psycopg://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("true", "'true'"),
        ("1e3", "'1e3'"),
        ([64, 64], "[64,64]"),
        ({"a": 1}, "{a:1}"),
    ],
)
def test_format_value(value, text):
    assert format_value(value) == text


@given(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**9), 10**9),
        st.floats(allow_nan=False, allow_infinity=False, width=64),
        st.text(st.characters(codec="ascii", exclude_categories=("Cc",)), max_size=20),
    )
)
def test_format_value_parses_back(value):
    parsed = parse_override("k=" + format_value(value)).value()
    if isinstance(value, float):
        assert isinstance(parsed, float) and (parsed == value or math.isclose(parsed, value))
    else:
        assert parsed == value and type(parsed) is type(value)


def test_param_override_keeps_encoded_choices():
    dist = CategoricalDistribution(["[64,64]", "uniform"])
    assert param_override("agent.hidden_sizes", "[64,64]", dist) == "agent.hidden_sizes=[64,64]"
    assert param_override("agent.lr", 0.5, FloatDistribution(0, 1)) == "agent.lr=0.5"


def test_nested_params_are_flattened():
    space = build_search_space({"agent": {"lr": "interval(0.1,0.2)", "hidden_sizes": [8, 8]}})
    assert space.distributions == {"agent.lr": FloatDistribution(0.1, 0.2)}
    assert space.fixed == ["agent.hidden_sizes=[8,8]"]
