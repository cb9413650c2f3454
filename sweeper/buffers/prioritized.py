"""Proportional prioritized experience replay (Schaul et al., 2016, "Prioritized Experience
Replay", Algorithm 1).

Transition ``i`` is sampled with probability ``P(i) = p_i^alpha / sum_k p_k^alpha`` where
``p_i = |delta_i| + priority_eps`` is its last TD error magnitude. The bias this introduces
is corrected by importance-sampling weights ``w_i = (N * P(i))^(-beta)``, normalized by the
largest weight in the sampled batch (as in the paper's Algorithm 1 and Dopamine), so every
weight is <= 1 and only scales the update down. ``beta`` is annealed to 1 over training via
``set_progress``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from sweeper.buffers.sum_tree import SumTree
from sweeper.buffers.uniform import ReplaySamples, UniformReplayBuffer


class PrioritizedReplayBuffer(UniformReplayBuffer):
    """Uniform ring storage plus a sum tree of ``p_i^alpha`` for proportional sampling."""

    def __init__(
        self,
        capacity: int,
        batch_size: int,
        obs_shape: tuple[int, ...],
        rng: np.random.Generator,
        obs_dtype: npt.DTypeLike = np.float32,
        alpha: float = 0.6,
        beta_start: float = 0.4,
        priority_eps: float = 1e-6,
    ) -> None:
        super().__init__(capacity, batch_size, obs_shape, rng, obs_dtype)
        alpha, beta_start, priority_eps = float(alpha), float(beta_start), float(priority_eps)
        if not alpha >= 0:  # also rejects NaN
            raise ValueError(f"buffer.alpha must be >= 0, got {alpha}")
        if not 0.0 <= beta_start <= 1.0:
            raise ValueError(f"buffer.beta_start must be in [0, 1], got {beta_start}")
        # Strictly positive so that no transition's sampling probability can reach zero.
        if not priority_eps > 0:
            raise ValueError(f"buffer.priority_eps must be > 0, got {priority_eps}")
        self.alpha = alpha
        self.beta_start = beta_start
        self.priority_eps = priority_eps
        self._beta = beta_start
        # Largest raw priority p = |td| + eps seen so far; new transitions get it so they are
        # replayed at least once soon. Like the reference implementations it never
        # decreases, even after that transition is overwritten.
        self.max_priority = 1.0
        self.tree = SumTree(self.capacity)
        self._strata = np.arange(self.batch_size, dtype=np.float64)

    @property
    def beta(self) -> float:
        """Current importance-sampling exponent (beta_start annealed towards 1)."""
        return self._beta

    def set_progress(self, fraction: float) -> None:
        """Anneal beta linearly: ``beta_start`` at fraction 0, 1.0 at fraction 1 (clipped)."""
        fraction = float(fraction)
        if fraction != fraction:  # NaN would slip through min/max below
            raise ValueError("set_progress fraction must not be NaN")
        beta = self.beta_start + fraction * (1.0 - self.beta_start)
        self._beta = min(max(beta, self.beta_start), 1.0)

    def _on_add(self, index: int) -> None:
        self.tree.set(index, self.max_priority**self.alpha)

    def sample(self) -> ReplaySamples:
        """Stratified proportional sampling: one uniform draw in each of ``batch_size``
        equal segments of the total priority mass (lower variance than i.i.d. draws)."""
        self._check_nonempty()
        total = self.tree.total
        segment = total / self.batch_size
        points = (self._strata + self.rng.random(self.batch_size)) * segment
        indices = self.tree.find(points)
        # w_i = (N P(i))^-beta / max_j w_j over the batch. N and the total cancel, and the
        # max weight belongs to the least mass: w_i = (m_i / min_j m_j)^-beta, m = p^alpha.
        mass = self.tree.leaf_values(indices)
        weights = (mass / mass.min()) ** (-self._beta)
        return self._gather(indices, weights.astype(np.float32))

    def update_priorities(self, indices: npt.ArrayLike, td_errors: npt.ArrayLike) -> None:
        """Set ``p_i = |td_i| + priority_eps`` for the sampled ``indices``.

        Duplicated indices (sampling is with replacement) keep the last value. Non-finite
        TD errors raise: a NaN in the tree would silently break all later sampling.
        Pass numpy (e.g. ``loss_per_sample.detach().cpu().numpy()``), not a grad tensor.
        """
        idx = np.asarray(indices, dtype=np.int64).ravel()
        td = np.asarray(td_errors, dtype=np.float64).ravel()
        if idx.shape != td.shape:
            raise ValueError(f"{idx.size} indices but {td.size} td_errors")
        if idx.size == 0:
            return
        if idx.min() < 0 or idx.max() >= len(self):
            raise IndexError(
                f"priority indices must lie in [0, {len(self)}), got [{idx.min()}, {idx.max()}]"
            )
        priorities = np.abs(td) + self.priority_eps
        mass = priorities**self.alpha
        max_p = priorities.max()
        if not (np.isfinite(max_p) and np.isfinite(mass.max())):
            raise ValueError("update_priorities got non-finite TD errors (diverged loss?)")
        self.max_priority = max(self.max_priority, float(max_p))
        self.tree._write(idx, mass)  # validated above
