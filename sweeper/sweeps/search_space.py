"""Hydra override grammar -> Optuna distributions (pure functions, no I/O).

``choice(a,b)`` and ``a,b`` -> categorical; ``range(a,b[,s])`` -> int/float with step;
``interval(a,b)`` -> float; ``int(interval(a,b))`` -> int; ``tag(log, ...)`` -> log scale;
anything else is a fixed value passed to every trial unchanged.

Every problem raises :class:`SearchSpaceError` with a one-line message naming the parameter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from sweeper.messages import one_line
from sweeper.overrides import format_value


class SearchSpaceError(ValueError):
    """A bad search-space entry; the message is one line and names the parameter."""


@dataclass
class SearchSpace:
    """Parameters to sample (name -> distribution) and fixed overrides for every trial."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)  # ready override strings, e.g. "seed=3"

    def describe(self) -> dict[str, str]:
        return {name: describe_distribution(d) for name, d in self.distributions.items()}


def parse_override(text: str, source: str = "") -> Override:
    """Parse one override; a grammar error becomes a one-line SearchSpaceError."""
    key = text.split("=", 1)[0].strip() or text
    try:
        return OverridesParser.create().parse_override(text)
    except Exception as err:  # OverrideParseException, HydraException (e.g. empty choice)
        msg = one_line(err)
        where = f"{source}{key}" if source else key
        raise SearchSpaceError(f"{where}: cannot parse {text!r}: {msg}") from None


def distribution_from_override(override: Override) -> BaseDistribution | None:
    """The Optuna distribution of a sweep override, or None for a fixed value."""
    name = override.get_key_element()
    if not override.is_sweep_override():
        return None
    value = override.value()
    spelled = _spelled(override)
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        if isinstance(value, RangeSweep):
            choices = sorted(choices)
        if not choices:
            raise SearchSpaceError(f"{name}: empty choice")
        if len(set(map(repr, choices))) != len(choices):
            raise SearchSpaceError(f"{name}: duplicate values in choice {choices}")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if step is None or step == 0:
            raise SearchSpaceError(f"{name}: {spelled} needs a non-zero step")
        values = list(override.sweep_iterator())
        if not values:
            raise SearchSpaceError(f"{name}: {spelled} is empty")
        # a negative step (range(5,1,-1)) spans the same values as its ascending twin
        low, high, step = min(values), max(values), abs(step)
        if all(isinstance(x, int) for x in (start, stop, step)):
            return IntDistribution(int(low), int(high), step=int(step))
        return FloatDistribution(float(low), float(high), step=float(step))
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        log = "log" in value.tags
        unknown = set(value.tags) - {"log"}
        if unknown:
            raise SearchSpaceError(f"{name}: unknown tag(s) {sorted(unknown)} (only 'log')")
        if low is None or high is None:
            raise SearchSpaceError(f"{name}: interval needs two bounds")
        if not (math.isfinite(low) and math.isfinite(high)):
            raise SearchSpaceError(f"{name}: interval bounds must be finite, got ({low}, {high})")
        if low > high or (low == high and isinstance(low, float)):
            raise SearchSpaceError(f"{name}: {spelled} needs low < high")
        if log and low <= 0:
            raise SearchSpaceError(f"{name}: a log interval needs low > 0, got {spelled}")
        if isinstance(low, int) and isinstance(high, int):
            return IntDistribution(low, high, log=log)
        return FloatDistribution(float(low), float(high), log=log)
    raise SearchSpaceError(f"{name}: unsupported sweep {override.input_line!r}")  # pragma: no cover


def _spelled(override: Override) -> str:
    """The override's value as the user wrote it (for error messages)."""
    line = override.input_line or ""
    return line.split("=", 1)[1].strip() if "=" in line else line


def params_to_overrides(params: Mapping[str, Any] | None, prefix: str = "") -> list[str]:
    """``hydra.sweeper.params`` (key -> override value string) as override strings.

    Nested mappings are flattened to dotted keys: ``+hydra.sweeper.params.agent.lr=...`` on the
    command line nests ``{agent: {lr: ...}}`` while YAML keeps ``agent.lr`` as one key.
    """
    out = []
    for key, value in (params or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.extend(params_to_overrides(value, f"{name}."))
            continue
        if value is None:
            value = "null"
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            value = format_value(list(value))
        out.append(f"{name}={value}")
    return out


def build_search_space(
    params: Mapping[str, Any] | None, arguments: Sequence[str] = ()
) -> SearchSpace:
    """The search space of ``hydra.sweeper.params`` plus command-line ``arguments``.

    A command-line override of a key replaces the same key from ``params``.
    """
    entries: dict[str, tuple[str, str]] = {}  # key -> (override text, source)
    for text in params_to_overrides(params):
        entries[override_key(text)] = (text, "hydra.sweeper.params.")
    for text in arguments:
        key = override_key(text)
        entries.pop(key, None)
        entries[key] = (text, "")
    space = SearchSpace()
    for text, source in entries.values():
        override = parse_override(text, source)
        dist = distribution_from_override(override)
        if dist is None:
            space.fixed.append(override.input_line)
        else:
            space.distributions[override.get_key_element()] = dist
    return space


def override_key(text: str) -> str:
    """The config key an override string sets (`+a.b=1` -> `a.b`)."""
    return text.split("=", 1)[0].strip().lstrip("+~")


def grid_choices(name: str, dist: BaseDistribution) -> list[Any]:
    """All values of a discrete distribution (for the grid sampler)."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution) and not dist.log:
        return list(range(dist.low, dist.high + 1, dist.step))
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        n = int(round((dist.high - dist.low) / dist.step))
        return [round(dist.low + i * dist.step, 12) for i in range(n + 1)]
    raise SearchSpaceError(
        f"{name}: the grid sampler needs choice(...) or range(...), "
        f"got {describe_distribution(dist)}"
    )


def describe_distribution(dist: BaseDistribution) -> str:
    """A distribution in the override grammar (for logs and the study's user attrs)."""
    if isinstance(dist, CategoricalDistribution):
        return "choice(" + ",".join(format_value(c) for c in dist.choices) + ")"
    if isinstance(dist, IntDistribution):
        if dist.step != 1:
            return f"range({dist.low},{dist.high + dist.step},{dist.step})"
        text = f"int(interval({dist.low},{dist.high}))"
    else:
        assert isinstance(dist, FloatDistribution)
        if dist.step is not None:
            return f"range({dist.low!r},{dist.high + dist.step!r},{dist.step!r})"
        text = f"interval({dist.low!r},{dist.high!r})"
    return f"tag(log,{text})" if dist.log else text


def param_override(name: str, value: Any, dist: BaseDistribution) -> str:
    """``name=value`` for a sampled value. Categorical strings are already in override form."""
    if isinstance(dist, CategoricalDistribution) and isinstance(value, str):
        return f"{name}={value}"
    return f"{name}={format_value(value)}"


def param_overrides(
    distributions: Mapping[str, BaseDistribution], params: Mapping[str, Any]
) -> list[str]:
    """The overrides of sampled ``params`` (in the order of the search space)."""
    return [param_override(n, params[n], d) for n, d in distributions.items()]


def validate_space(space: SearchSpace) -> None:
    """Checks that need the whole space (names given twice)."""
    fixed_keys = {override_key(t) for t in space.fixed}
    both = fixed_keys & {override_key(n) for n in space.distributions}
    if both:
        name = sorted(both)[0]
        raise SearchSpaceError(f"{name}: given both as a fixed value and as a search range")
