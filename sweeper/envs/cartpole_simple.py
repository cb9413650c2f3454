"""The seed notebook's dependency-free CartPole, as a Gymnasium environment.

Same physics and Euler update as the seed, written with plain Python floats because
``step`` sits in the hot loop of the DQN benchmarks.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

State = tuple[float, float, float, float]


class CartPoleSimple(gymnasium.Env):
    """Balance a pole on a cart by pushing the cart left or right.

    ## Action space
    ``Discrete(2)``: 0 pushes the cart left, 1 pushes it right (force 10 N).

    ## Observation space
    ``Box((4,), float32)``: cart position, cart velocity, pole angle (rad), pole angular
    velocity. Bounds as gymnasium's CartPole: position +-4.8, angle +-24 degrees (twice the
    failure thresholds, so the failing observation is in the space), velocities unbounded.

    ## Rewards
    1.0 for every step that keeps the pole up, 0.0 on the failing step (the seed's
    convention; gymnasium's CartPole-v1 pays 1.0 there too).

    ## Starting state
    Every state variable uniform in [-0.05, 0.05], drawn from ``self.np_random``.

    ## Episode end
    Terminated when ``|x| > 2.4`` or ``|theta| > 12 degrees``. No step limit here: the
    registered id adds a ``TimeLimit`` (500 steps by default), reported as truncation.
    """

    metadata = {"render_modes": []}

    gravity = 9.8
    masscart = 1.0
    masspole = 0.1
    total_mass = masscart + masspole
    length = 0.5  # half the pole length
    polemass_length = masspole * length
    force_mag = 10.0
    tau = 0.02  # seconds per step
    x_threshold = 2.4
    theta_threshold = 12 * math.pi / 180

    def __init__(self, render_mode: str | None = None) -> None:
        if render_mode is not None:
            raise ValueError(f"CartPoleSimple has no render modes, got render_mode={render_mode!r}")
        self.render_mode = render_mode
        high = np.array(
            [self.x_threshold * 2, np.inf, self.theta_threshold * 2, np.inf], dtype=np.float32
        )
        self.action_space = spaces.Discrete(2)
        self.observation_space = spaces.Box(-high, high, dtype=np.float32)
        #: (x, x_dot, theta, theta_dot) in float64; settable for tests.
        self.state: State = (0.0, 0.0, 0.0, 0.0)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        x, x_dot, theta, theta_dot = self.np_random.uniform(-0.05, 0.05, size=4).tolist()
        self.state = (x, x_dot, theta, theta_dot)
        return np.array(self.state, dtype=np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if action == 1:
            force = self.force_mag
        elif action == 0:
            force = -self.force_mag
        else:
            raise ValueError(f"action must be 0 or 1, got {action!r}")
        x, x_dot, theta, theta_dot = self.state
        cos_theta = math.cos(theta)
        sin_theta = math.sin(theta)

        temp = (force + self.polemass_length * theta_dot**2 * sin_theta) / self.total_mass
        theta_acc = (self.gravity * sin_theta - cos_theta * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * cos_theta**2 / self.total_mass)
        )
        x_acc = temp - self.polemass_length * theta_acc * cos_theta / self.total_mass

        # Euler integration, positions first with the old velocities (as the seed).
        x += self.tau * x_dot
        x_dot += self.tau * x_acc
        theta += self.tau * theta_dot
        theta_dot += self.tau * theta_acc
        self.state = (x, x_dot, theta, theta_dot)

        terminated = abs(x) > self.x_threshold or abs(theta) > self.theta_threshold
        reward = 0.0 if terminated else 1.0
        return np.array(self.state, dtype=np.float32), reward, terminated, False, {}
