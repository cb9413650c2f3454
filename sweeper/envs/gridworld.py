"""The seed notebook's slippery 4x4 GridWorld as a Gymnasium environment.

Small enough to solve exactly (value iteration), so tabular agents can be checked against
the true optimum, and stochastic enough (``slip``) to separate on- from off-policy learning.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

Coord = tuple[int, int]

#: (row, col) displacement of each action: 0 up, 1 down, 2 left, 3 right.
ACTION_DELTAS: tuple[Coord, ...] = ((-1, 0), (1, 0), (0, -1), (0, 1))
#: The two moves perpendicular to each action, which a slip picks from uniformly.
PERPENDICULAR: tuple[Coord, ...] = ((2, 3), (2, 3), (0, 1), (0, 1))
OBS_MODES = ("index", "onehot", "coords")


def _coord(value: Sequence[int], name: str, size: int) -> Coord:
    """Normalise one (row, col) given as tuple or list (Hydra passes lists) and bound-check it."""
    try:
        row, col = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (row, col) pair, got {value!r}") from None
    if not (0 <= row < size and 0 <= col < size):
        raise ValueError(f"{name} {(row, col)} lies outside the {size}x{size} grid")
    return row, col


class GridWorld(gymnasium.Env):
    """Slippery grid: walk from ``start`` to ``goal`` while avoiding ``traps``.

    Default layout (the seed's; S start, G goal, W wall, T trap)::

        . . . G
        . W . .
        . . . T
        S . . .

    ## Action space
    ``Discrete(4)``: 0 up, 1 down, 2 left, 3 right. With probability ``slip`` the action is
    replaced by one of its two perpendicular moves, chosen uniformly. A move into a wall or
    off the grid leaves the agent in place.

    ## Observation space
    - ``"index"``: ``Discrete(size*size)``, the int ``row * size + col``.
    - ``"onehot"``: ``Box(0, 1, (size*size,), float32)``, one-hot of the index.
    - ``"coords"``: ``Box(0, 1, (2,), float32)``, ``(row, col) / (size - 1)``.

    ## Rewards
    ``goal_reward`` (+1) on entering the goal, ``trap_reward`` (-1) on entering a trap,
    ``step_reward`` (-0.04) otherwise, which makes shorter paths better.

    ## Starting state
    ``start``, or ``reset(options={"start": (row, col)})`` for that episode only.

    ## Episode end
    Terminated on entering the goal or a trap. No step limit here: the registered id adds a
    ``TimeLimit`` (200 steps, the seed's per-episode cap), reported as truncation.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        size: int = 4,
        goal: Sequence[int] = (0, 3),
        walls: Iterable[Sequence[int]] = ((1, 1),),
        traps: Iterable[Sequence[int]] = ((2, 3),),
        start: Sequence[int] = (3, 0),
        step_reward: float = -0.04,
        goal_reward: float = 1.0,
        trap_reward: float = -1.0,
        slip: float = 0.1,
        obs_mode: str = "index",
        render_mode: str | None = None,
    ) -> None:
        size = int(size)
        if size < 2:
            raise ValueError(f"size must be >= 2, got {size}")
        if not 0.0 <= float(slip) <= 1.0:
            raise ValueError(f"slip must lie in [0, 1], got {slip}")
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.size = size
        self.goal = _coord(goal, "goal", size)
        self.walls = frozenset(_coord(w, "walls", size) for w in walls)
        self.traps = frozenset(_coord(t, "traps", size) for t in traps)
        self.start = _coord(start, "start", size)
        if self.goal in self.walls or self.goal in self.traps:
            raise ValueError(f"goal {self.goal} must not be a wall or a trap")
        if self.walls & self.traps:
            raise ValueError(f"walls and traps overlap at {sorted(self.walls & self.traps)}")
        self._check_start(self.start)
        self.step_reward = float(step_reward)
        self.goal_reward = float(goal_reward)
        self.trap_reward = float(trap_reward)
        self.slip = float(slip)
        self.obs_mode = obs_mode
        self.render_mode = render_mode

        self.action_space = spaces.Discrete(4)
        n = size * size
        if obs_mode == "index":
            self.observation_space: spaces.Space = spaces.Discrete(n)
        elif obs_mode == "onehot":
            self.observation_space = spaces.Box(0.0, 1.0, (n,), np.float32)
        else:
            self.observation_space = spaces.Box(0.0, 1.0, (2,), np.float32)
        self._pos: Coord = self.start

    # ---- read-only layout helpers (tests, plots, oracles) ----
    def state_index(self, row: int, col: int) -> int:
        """Index of a cell in the ``"index"`` observation (row-major)."""
        return row * self.size + col

    @property
    def n_states(self) -> int:
        """Number of cells, walls included (the size of the index observation space)."""
        return self.size * self.size

    @property
    def terminal_states(self) -> frozenset[int]:
        """Indices of the goal and the traps."""
        return frozenset(self.state_index(*c) for c in (self.goal, *self.traps))

    @property
    def wall_states(self) -> frozenset[int]:
        """Indices of wall cells (never occupied)."""
        return frozenset(self.state_index(*c) for c in self.walls)

    @property
    def position(self) -> Coord:
        """The agent's current (row, col)."""
        return self._pos

    # ---- Gymnasium API ----
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Back to ``start``, or to ``options["start"]`` (exploring starts)."""
        super().reset(seed=seed)
        self._pos = self.start
        if options and options.get("start") is not None:
            self._pos = self._check_start(_coord(options["start"], "start", self.size))
        return self._obs(), {}

    def step(self, action: int) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if not 0 <= action < 4:
            raise ValueError(f"action must be in 0..3, got {action!r}")
        if self.slip > 0.0 and self.np_random.random() < self.slip:
            action = PERPENDICULAR[action][int(self.np_random.integers(2))]
        dr, dc = ACTION_DELTAS[action]
        row, col = self._pos[0] + dr, self._pos[1] + dc
        if 0 <= row < self.size and 0 <= col < self.size and (row, col) not in self.walls:
            self._pos = (row, col)
        if self._pos == self.goal:
            return self._obs(), self.goal_reward, True, False, {}
        if self._pos in self.traps:
            return self._obs(), self.trap_reward, True, False, {}
        return self._obs(), self.step_reward, False, False, {}

    def render(self) -> str | None:
        """``"ansi"``: the grid as text (A agent, S start, G goal, T trap, W wall)."""
        if self.render_mode != "ansi":
            return None
        rows = []
        for r in range(self.size):
            cells = []
            for c in range(self.size):
                cell = (r, c)
                if cell == self._pos:
                    cells.append("A")
                elif cell == self.goal:
                    cells.append("G")
                elif cell in self.traps:
                    cells.append("T")
                elif cell in self.walls:
                    cells.append("W")
                elif cell == self.start:
                    cells.append("S")
                else:
                    cells.append(".")
            rows.append(" ".join(cells))
        return "\n".join(rows) + "\n"

    def _check_start(self, start: Coord) -> Coord:
        if start in self.walls or start == self.goal or start in self.traps:
            raise ValueError(f"start {start} must not be a wall, the goal or a trap")
        return start

    def _obs(self) -> Any:
        row, col = self._pos
        if self.obs_mode == "index":
            return row * self.size + col
        if self.obs_mode == "onehot":
            onehot = np.zeros(self.size * self.size, dtype=np.float32)
            onehot[row * self.size + col] = 1.0
            return onehot
        scale = self.size - 1
        return np.array((row / scale, col / scale), dtype=np.float32)
