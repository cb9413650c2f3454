"""The seed notebook's own problem: when to pit, and for which tyres, in a Formula 1 race.

The seed frames every idea as race strategy ("Q-learning is how a race strategist would learn
optimal pit stop timing"); no RL library ships such an environment. :class:`F1PitStrategy` is
a race of ``laps`` laps against a field of rivals on fixed strategies. One step is one lap.

**Lap time** (seconds) of a car on ``compound`` with tyres ``age`` laps old, on lap ``lap``
(0-based) of ``laps``, in ``weather``: :func:`lap_time`, the one formula the env, the rivals
and the dynamic-programming oracle (``sweeper.envs.f1_oracle``) share::

    base_lap_time + pace[weather][compound]          # compound offset for the conditions
    + deg_scale * deg[compound] * age                # degradation, linear in tyre age
    + cliff_slope * max(0, age - cliff[compound])**2 / 2   # ... and the cliff past its life
    + fuel_effect * (laps - 1 - lap)                 # fuel still on board (the car lightens)
    + N(0, noise_std)                                # driver and traffic noise

Under a safety car every car laps in ``base_lap_time * sc_lap_factor`` (gaps are kept, tyres
still age) and a pit stop costs ``sc_pit_loss`` instead of ``pit_loss``.

**Actions** ``Discrete(1 + len(compounds))``: 0 stay out, ``1 + i`` pit for ``compounds[i]``
(the stop's time is added to that lap; the new set starts at age 0).

**Observations** (``obs_mode``):

* ``discrete`` (tabular agents): ``Discrete(n)``, the index of (lap bucket, tyre-age bucket,
  compound, position bucket, safety car, weather, the set of dry compounds used) with
  ``lap_buckets``, ``age_buckets``, ``position_buckets`` equal-width buckets (set each to the
  number of laps and cars for an exact state);
* ``vector`` (DQN): ``Box`` of lap fraction, position, gaps to the cars ahead and behind (s /
  30, clipped to [-1, 1]), tyre age / laps, compound one-hot, fuel (laps left / laps), safety
  car, weather one-hot (dry, damp, wet), dry compounds used (one bit each).

**Reward**: at the end, ``points_scale`` times the championship points of the finishing
position (``points``: 25, 18, 15, ... for P1, P2, ...), minus ``rule_penalty`` if the race
stayed dry and the car used fewer than two different dry compounds (F1's rule). Optional
shaping: every lap ``-time_shaping * (lap seconds - base_lap_time)`` (off by default, 0.0); with
``time_shaping=1`` and ``points_scale=0`` the return is minus the race time lost, in seconds.

``pace``, ``deg`` and ``cliff`` (the tables :data:`PACE`, :data:`DEG`, :data:`CLIFF`) take
partial tables: ``deg={"soft": 0.2}`` changes the softs' degradation only.

**Episode end**: terminated after the last lap (no truncation: a race has a fixed length).

**Positions** come from cumulative race time; the car starts ``start_position`` (1-based) on
a grid ``grid_gap`` seconds apart. Passing a car on track costs ``pass_cost`` seconds per car.

**Randomness** (lap noise, safety cars with probability ``sc_prob`` per lap for ``sc_laps``
laps, weather changing one step dry <-> damp <-> wet with ``weather_change_prob`` per lap) comes
from ``self.np_random`` only. Rivals (``rivals``: pace delta s/lap, start compound, pit laps as
fractions of the race with their compounds) keep their plan, but start on, and switch to,
intermediates (damp) or wets (wet) the lap the weather changes, and back to their planned dry
compound when it dries (:func:`planned_stop`).
``track``: a preset (:data:`TRACKS`); a keyword given explicitly wins over the preset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

COMPOUNDS = ("soft", "medium", "hard", "inter", "wet")
DRY = ("soft", "medium", "hard")
WEATHER = ("dry", "damp", "wet")
#: ``obs_mode``: the index of a discretized state (tabular agents), or a vector (DQN).
OBS_MODES = ("discrete", "vector")
POINTS = (25, 18, 15, 12, 10, 8, 6, 4, 2, 1)

#: s/lap relative to base_lap_time, by weather then compound
PACE: dict[str, dict[str, float]] = {
    "dry": {"soft": 0.0, "medium": 0.6, "hard": 1.2, "inter": 6.0, "wet": 10.0},
    "damp": {"soft": 5.0, "medium": 5.5, "hard": 6.0, "inter": 1.0, "wet": 3.0},
    "wet": {"soft": 14.0, "medium": 14.5, "hard": 15.0, "inter": 3.0, "wet": 1.5},
}
DEG = {"soft": 0.12, "medium": 0.07, "hard": 0.04, "inter": 0.10, "wet": 0.08}  # s/lap of age
CLIFF = {"soft": 12, "medium": 22, "hard": 32, "inter": 18, "wet": 22}  # laps of useful life

#: (pace delta s/lap, start compound, ((race fraction, compound), ...)): a 9-car field
DEFAULT_RIVALS: tuple[tuple[float, str, tuple[tuple[float, str], ...]], ...] = (
    (-0.5, "medium", ((0.5, "hard"),)),
    (-0.3, "soft", ((0.3, "hard"),)),
    (-0.2, "medium", ((0.45, "hard"),)),
    (0.0, "soft", ((0.25, "medium"), (0.6, "soft"))),
    (0.1, "hard", ((0.6, "medium"),)),
    (0.3, "medium", ((0.5, "hard"),)),
    (0.5, "soft", ((0.35, "hard"),)),
    (0.7, "medium", ((0.55, "soft"),)),
    (1.0, "hard", ((0.5, "medium"),)),
)

#: presets: high degradation; street circuit (big pit loss, frequent safety cars); wet-prone
TRACKS: dict[str, dict[str, Any]] = {
    "barcelona": {"laps": 30, "pit_loss": 21.0, "deg_scale": 1.6, "sc_prob": 0.02},
    "singapore": {"laps": 30, "pit_loss": 28.0, "sc_pit_loss": 12.0, "sc_prob": 0.08},
    "spa": {"laps": 22, "base_lap_time": 106.0, "pit_loss": 19.0, "weather_change_prob": 0.12},
}


def lap_time(
    compound: str,
    age: int,
    lap: int,
    laps: int,
    weather: str = "dry",
    *,
    base_lap_time: float = 90.0,
    deg_scale: float = 1.0,
    cliff_slope: float = 0.5,
    fuel_effect: float = 0.035,
    pace: Mapping[str, Mapping[str, float]] = PACE,
    deg: Mapping[str, float] = DEG,
    cliff: Mapping[str, int] = CLIFF,
) -> float:
    """The noise-free lap time of the module docstring."""
    past = max(0, age - cliff[compound])
    return (
        base_lap_time
        + pace[weather][compound]
        + deg_scale * deg[compound] * age
        + cliff_slope * past * past / 2.0
        + fuel_effect * (laps - 1 - lap)
    )


def weather_tyre(weather: str, dry_choice: str) -> str:
    """The tyre a fixed strategy runs in ``weather``: its dry compound, inters when damp,
    wets when wet."""
    return {"dry": dry_choice, "damp": "inter", "wet": "wet"}[weather]


def planned_stop(
    plan: Sequence[tuple[float, str]],
    lap: int,
    laps: int,
    planned: str,
    compound: str,
    weather: str,
) -> tuple[str, str | None]:
    """A fixed strategy's choice on ``lap``: ``(the dry compound it now plans, the compound it
    pits for or None)``. ``plan`` holds (race fraction, compound) stops; the car is on
    ``compound`` and planned ``planned``; rain overrides the plan (:func:`weather_tyre`)."""
    for fraction, new in plan:
        if lap == int(round(fraction * laps)) and lap > 0:
            planned = new
    want = weather_tyre(weather, planned)
    return planned, (want if want != compound else None)


class F1PitStrategy(gymnasium.Env):
    """See the module docstring: every constant is a keyword."""

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        track: str | None = None,
        *,
        laps: int | None = None,
        base_lap_time: float | None = None,
        pit_loss: float | None = None,
        sc_pit_loss: float | None = None,
        sc_prob: float | None = None,
        sc_laps: int = 3,
        sc_lap_factor: float = 1.35,
        deg_scale: float | None = None,
        cliff_slope: float = 0.5,
        fuel_effect: float = 0.035,
        pace: Mapping[str, Mapping[str, float]] | None = None,
        deg: Mapping[str, float] | None = None,
        cliff: Mapping[str, int] | None = None,
        noise_std: float = 0.3,
        weather_start: str = "dry",
        weather_change_prob: float | None = None,
        compounds: Sequence[str] = COMPOUNDS,
        start_compound: str = "medium",
        start_position: int = 5,
        grid_gap: float = 0.3,
        pass_cost: float = 0.4,
        rivals: Sequence[Sequence[Any]] | None = None,
        points: Sequence[float] = POINTS,
        points_scale: float = 1.0,
        rule_penalty: float = 25.0,
        time_shaping: float = 0.0,
        obs_mode: str = "discrete",
        lap_buckets: int = 6,
        age_buckets: int = 6,
        position_buckets: int = 4,
        render_mode: str | None = None,
    ) -> None:
        if track is not None and track not in TRACKS:
            raise ValueError(f"track: {track!r} is not one of {sorted(TRACKS)}")
        preset = dict(TRACKS[track]) if track is not None else {}

        def pick(name: str, value: Any, default: Any) -> Any:
            return value if value is not None else preset.get(name, default)

        self.laps = int(pick("laps", laps, 20))
        self.base_lap_time = float(pick("base_lap_time", base_lap_time, 90.0))
        self.pit_loss = float(pick("pit_loss", pit_loss, 22.0))
        self.sc_pit_loss = float(pick("sc_pit_loss", sc_pit_loss, 11.0))
        self.sc_prob = float(pick("sc_prob", sc_prob, 0.04))
        self.deg_scale = float(pick("deg_scale", deg_scale, 1.0))
        self.weather_change_prob = float(pick("weather_change_prob", weather_change_prob, 0.0))
        self.sc_laps, self.sc_lap_factor = int(sc_laps), float(sc_lap_factor)
        self.cliff_slope, self.fuel_effect = float(cliff_slope), float(fuel_effect)
        # per compound (and weather) tables: a partial table overrides the defaults it names
        for name, table in (("pace", pace), ("deg", deg), ("cliff", cliff)):
            keys = [k for k in (table or {}) if k not in (WEATHER if name == "pace" else COMPOUNDS)]
            keys += [f"{w}.{c}" for w, row in (pace or {}).items() if name == "pace"
                     for c in row if c not in COMPOUNDS]  # fmt: skip
            if keys:
                raise ValueError(f"{name}: unknown key {keys[0]!r}")
        self.pace = {w: {**PACE[w], **dict((pace or {}).get(w, {}))} for w in WEATHER}
        self.deg = {**DEG, **dict(deg or {})}
        self.cliff = {**CLIFF, **dict(cliff or {})}
        self.noise_std, self.grid_gap, self.pass_cost = float(noise_std), grid_gap, pass_cost
        self.compounds = tuple(compounds)
        unknown = [c for c in (*self.compounds, start_compound) if c not in COMPOUNDS]
        if unknown:
            raise ValueError(f"compounds: {unknown[0]!r} is not one of {list(COMPOUNDS)}")
        if weather_start not in WEATHER:
            raise ValueError(f"weather_start: {weather_start!r} is not one of {list(WEATHER)}")
        if self.laps < 1:
            raise ValueError(f"laps: must be >= 1, got {self.laps}")
        self.weather_start, self.start_compound = weather_start, start_compound
        self.rivals = [
            (float(d), str(c), tuple((float(f), str(rc)) for f, rc in plan))
            for d, c, plan in (DEFAULT_RIVALS if rivals is None else rivals)
        ]
        self.n_cars = 1 + len(self.rivals)
        if not 1 <= start_position <= self.n_cars:
            raise ValueError(f"start_position: must be in [1, {self.n_cars}], got {start_position}")
        self.start_position = int(start_position)
        self.points, self.points_scale = tuple(points), float(points_scale)
        self.rule_penalty, self.time_shaping = float(rule_penalty), float(time_shaping)
        self.obs_mode = obs_mode
        self.lap_buckets = max(1, min(int(lap_buckets), self.laps))
        self.age_buckets = max(1, int(age_buckets))
        self.position_buckets = max(1, min(int(position_buckets), self.n_cars))
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(1 + len(self.compounds))
        n_c = len(self.compounds)
        if obs_mode == "discrete":
            self.observation_space = spaces.Discrete(
                self.lap_buckets * self.age_buckets * n_c * self.position_buckets * 2 * 3 * 8
            )
        elif obs_mode == "vector":
            size = 5 + n_c + 2 + len(WEATHER) + len(DRY)
            self.observation_space = spaces.Box(-1.0, 1.0, shape=(size,), dtype=np.float32)
        else:
            raise ValueError(f"obs_mode: {obs_mode!r} is not one of {list(OBS_MODES)}")
        self._state: dict[str, Any] | None = None

    # -- the model ---------------------------------------------------------------------------
    def lap_seconds(self, compound: str, age: int, lap: int, weather: str) -> float:
        """:func:`lap_time` with this race's constants (no noise, no safety car)."""
        return lap_time(
            compound,
            age,
            lap,
            self.laps,
            weather,
            base_lap_time=self.base_lap_time,
            deg_scale=self.deg_scale,
            cliff_slope=self.cliff_slope,
            fuel_effect=self.fuel_effect,
            pace=self.pace,
            deg=self.deg,
            cliff=self.cliff,
        )

    def pit_seconds(self, safety_car: bool) -> float:
        return self.sc_pit_loss if safety_car else self.pit_loss

    def points_for(self, position: int) -> float:
        return float(self.points[position - 1]) if position <= len(self.points) else 0.0

    # -- Gymnasium API -----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        cars = []
        order = [i for i in range(self.n_cars) if i != self.start_position - 1]
        grid = {0: (self.start_position - 1) * self.grid_gap}
        for slot, car in zip(order, range(1, self.n_cars), strict=True):
            grid[car] = slot * self.grid_gap
        for car in range(self.n_cars):
            planned = self.start_compound if car == 0 else self.rivals[car - 1][1]
            compound = planned if car == 0 else weather_tyre(self.weather_start, planned)
            cars.append({"time": grid[car], "compound": compound, "age": 0, "planned": planned})
        self._state = {
            "lap": 0,
            "cars": cars,
            "used": {self.start_compound},
            "sc": 0,  # safety-car laps left, this lap included
            "weather": self.weather_start,
            "wet_race": self.weather_start != "dry",
            "pits": [],
            "trace": [],
        }
        return self._obs(), self._info()

    def step(self, action: int):
        if self._state is None:
            raise gymnasium.error.ResetNeeded("call reset() before step()")
        st = self._state
        if st["lap"] >= self.laps:
            raise gymnasium.error.ResetNeeded("the race is over: call reset()")
        action = int(action)
        if not self.action_space.contains(action):
            raise ValueError(f"action {action} not in {self.action_space}")
        lap, weather, sc = st["lap"], st["weather"], st["sc"] > 0
        ahead_before = {c for c in range(1, self.n_cars) if self._ahead(c)}
        lap_s, stopped = [], set()
        for car, state in enumerate(st["cars"]):
            stop = self._pit_choice(car, action, lap, weather)
            seconds = 0.0
            if stop is not None:
                stopped.add(car)
                seconds += self.pit_seconds(sc)
                state["compound"], state["age"] = stop, 0
                if car == 0:
                    st["used"].add(stop)
                    st["pits"].append((lap, stop))
            if sc:
                seconds += self.base_lap_time * self.sc_lap_factor
            else:
                seconds += self.lap_seconds(state["compound"], state["age"], lap, weather)
                if self.noise_std:
                    seconds += float(self.np_random.normal(0.0, self.noise_std))
                if car > 0:
                    seconds += self.rivals[car - 1][0]
            state["age"] += 1
            state["time"] += seconds
            lap_s.append(seconds)
        if not sc and 0 not in stopped and self.pass_cost:  # overtakes on track cost time
            passed = [c for c in ahead_before if not self._ahead(c) and c not in stopped]
            st["cars"][0]["time"] += self.pass_cost * len(passed)
            lap_s[0] += self.pass_cost * len(passed)
        reward = -self.time_shaping * (lap_s[0] - self.base_lap_time) if self.time_shaping else 0.0
        order = sorted(range(self.n_cars), key=lambda c: st["cars"][c]["time"])
        st["trace"].append(
            {"lap": lap + 1, "position": self.position(), "compound": st["cars"][0]["compound"],
             "pit": action != 0, "safety_car": sc, "weather": weather,
             "rivals": [order.index(c) + 1 for c in range(1, self.n_cars)]}
        )  # fmt: skip
        st["lap"] = lap + 1
        self._advance_conditions()
        terminated = st["lap"] >= self.laps
        if terminated:
            reward += self.points_scale * self.points_for(self.position())
            if self.rule_broken():
                reward -= self.rule_penalty
        return self._obs(), float(reward), terminated, False, self._info()

    def _pit_choice(self, car: int, action: int, lap: int, weather: str) -> str | None:
        """The compound ``car`` pits for on this lap, or None."""
        state = self._state["cars"][car]
        if car == 0:
            return self.compounds[action - 1] if action else None
        state["planned"], stop = planned_stop(
            self.rivals[car - 1][2], lap, self.laps, state["planned"], state["compound"], weather
        )
        return stop

    def _advance_conditions(self) -> None:
        st, rng = self._state, self.np_random
        if st["sc"] > 0:
            st["sc"] -= 1
        elif self.sc_prob and rng.random() < self.sc_prob:
            st["sc"] = self.sc_laps
        if self.weather_change_prob and rng.random() < self.weather_change_prob:
            i = WEATHER.index(st["weather"])
            step = 1 if i == 0 else -1 if i == 2 else (1 if rng.random() < 0.5 else -1)
            st["weather"] = WEATHER[i + step]
            st["wet_race"] = st["wet_race"] or st["weather"] != "dry"

    def _ahead(self, car: int) -> bool:
        cars = self._state["cars"]
        return cars[car]["time"] < cars[0]["time"]

    def position(self) -> int:
        """The car's place (1-based) by cumulative race time."""
        cars = self._state["cars"]
        return 1 + sum(1 for other in cars[1:] if other["time"] < cars[0]["time"])

    def result_points(self) -> float:
        """The race's result as the championship counts it: the points of the car's place,
        minus ``rule_penalty`` if it broke the two-compound rule (no scaling, no shaping)."""
        return self.points_for(self.position()) - (self.rule_penalty if self.rule_broken() else 0)

    def rule_broken(self) -> bool:
        """A dry race finished on fewer than two different dry compounds."""
        st = self._state
        return not st["wet_race"] and len(st["used"] & set(DRY)) < 2

    def _gaps(self) -> tuple[float, float]:
        cars = self._state["cars"]
        me = cars[0]["time"]
        ahead = [me - c["time"] for c in cars[1:] if c["time"] < me]
        behind = [c["time"] - me for c in cars[1:] if c["time"] >= me]
        return (min(ahead) if ahead else 0.0), (min(behind) if behind else 0.0)

    def _obs(self) -> Any:
        st = self._state
        me = st["cars"][0]
        return self.observation(
            st["lap"],
            me["age"],
            me["compound"],
            st["used"],
            position=self.position(),
            safety_car=st["sc"] > 0,
            weather=st["weather"],
            gaps=self._gaps(),
        )

    def observation(
        self,
        lap: int,
        age: int,
        compound: str,
        used: set[str] | frozenset[str],
        *,
        position: int = 1,
        safety_car: bool = False,
        weather: str = "dry",
        gaps: tuple[float, float] = (0.0, 0.0),
    ) -> Any:
        """The observation of a car in that state (the race's own, or any other: the pit
        decision map asks a policy about states it never saw)."""
        used_mask = sum(1 << i for i, c in enumerate(DRY) if c in used)
        if self.obs_mode == "discrete":
            lap_b = min(self.lap_buckets - 1, lap * self.lap_buckets // self.laps)
            age_b = min(self.age_buckets - 1, age * self.age_buckets // self.laps)
            pos_b = (position - 1) * self.position_buckets // self.n_cars
            comp = self.compounds.index(compound) if compound in self.compounds else 0
            index = lap_b
            for value, size in (
                (age_b, self.age_buckets),
                (comp, len(self.compounds)),
                (pos_b, self.position_buckets),
                (int(safety_car), 2),
                (WEATHER.index(weather), len(WEATHER)),
                (used_mask, 8),
            ):
                index = index * size + value
            return int(index)
        ahead, behind = gaps
        vec = [
            lap / self.laps,
            (position - 1) / max(1, self.n_cars - 1),
            min(ahead / 30.0, 1.0),
            min(behind / 30.0, 1.0),
            min(age / self.laps, 1.0),
            *(float(compound == c) for c in self.compounds),
            (self.laps - lap) / self.laps,
            float(safety_car),
            *(float(weather == w) for w in WEATHER),
            *(float(c in used) for c in DRY),
        ]
        return np.asarray(vec, dtype=np.float32)

    def _info(self) -> dict[str, Any]:
        st = self._state
        return {
            "lap": st["lap"],
            "position": self.position(),
            "compound": st["cars"][0]["compound"],
            "tyre_age": st["cars"][0]["age"],
            "race_time": st["cars"][0]["time"],
            "safety_car": st["sc"] > 0,
            "weather": st["weather"],
            "pits": list(st["pits"]),
        }

    def trace(self) -> list[dict[str, Any]]:
        """Per lap so far: position, compound, pit, safety car, weather and the rivals'
        positions (the race trace)."""
        return list(self._state["trace"]) if self._state else []

    def render(self) -> str | None:
        if self.render_mode != "ansi" or self._state is None:
            return None
        i = self._info()
        return (
            f"lap {i['lap']}/{self.laps} P{i['position']} {i['compound']} age {i['tyre_age']}"
            f"{' SC' if i['safety_car'] else ''} {i['weather']}"
        )
