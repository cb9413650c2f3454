"""Proportional prioritized experience replay (Schaul et al., 2016, "Prioritized Experience
Replay", Algorithm 1), one sum tree per member of a population.

Transition ``i`` is sampled with probability ``P(i) = p_i^alpha / sum_k p_k^alpha`` where
``p_i = |delta_i| + priority_eps`` is its last TD error magnitude. The bias this introduces
is corrected by importance-sampling weights ``w_i = (N * P(i))^(-beta)``, normalized by the
largest weight in the sampled batch (as in the paper's Algorithm 1 and Dopamine), so every
weight is <= 1 and only scales the update down. ``beta`` is annealed to 1 over training via
``set_progress``. ``alpha``, ``beta_start`` and ``priority_eps`` may differ per member.

Each member's descent, weight ratios and priority write are one compiled kernel each
(``sweeper.buffers.sum_tree_kernels``): at batch 64 numpy's per-call overhead, not the
arithmetic, set the speed. The draws and the powers stay numpy's, so results are bit-identical
to the numpy implementation (numpy's SIMD ``**`` and compiled ``pow`` differ in the last bit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from sweeper.buffers import sum_tree_kernels as kernels
from sweeper.buffers.sum_tree import SumTree
from sweeper.buffers.uniform import ReplaySamples, UniformReplayBuffer, per_member


def _check(alpha: float, beta_start: float, priority_eps: float) -> tuple[float, float, float]:
    alpha, beta_start, priority_eps = float(alpha), float(beta_start), float(priority_eps)
    if not alpha >= 0:  # also rejects NaN
        raise ValueError(f"buffer.alpha must be >= 0, got {alpha}")
    if not 0.0 <= beta_start <= 1.0:
        raise ValueError(f"buffer.beta_start must be in [0, 1], got {beta_start}")
    # Strictly positive so that no transition's sampling probability can reach zero.
    if not priority_eps > 0:
        raise ValueError(f"buffer.priority_eps must be > 0, got {priority_eps}")
    return alpha, beta_start, priority_eps


class PrioritizedReplayBuffer(UniformReplayBuffer):
    """Uniform ring storage plus, per member, a sum tree of ``p_i^alpha``."""

    def __init__(
        self,
        capacity: int | Sequence[int],
        batch_size: int,
        obs_shape: int | Sequence[int],
        rng: np.random.Generator | Sequence[np.random.Generator],
        obs_dtype: npt.DTypeLike = np.float32,
        alpha: float | Sequence[float] = 0.6,
        beta_start: float | Sequence[float] = 0.4,
        priority_eps: float | Sequence[float] = 1e-6,
    ) -> None:
        super().__init__(capacity, batch_size, obs_shape, rng, obs_dtype)
        k = self.members
        checked = [
            _check(a, b, e)
            for a, b, e in zip(
                per_member("buffer.alpha", alpha, k),
                per_member("buffer.beta_start", beta_start, k),
                per_member("buffer.priority_eps", priority_eps, k),
                strict=True,
            )
        ]
        self.alpha, self.beta_start, self.priority_eps = (list(c) for c in zip(*checked))
        self.beta = np.array(self.beta_start, dtype=np.float64)
        # Largest raw priority p = |td| + eps seen so far; new transitions get it so they are
        # replayed at least once soon. Like the reference implementations it never
        # decreases, even after that transition is overwritten.
        self.max_priority = [1.0] * k
        self.trees = [SumTree(int(c)) for c in self.capacity]
        # Scratch of the kernels (overwritten by every call, never handed out).
        self._uniforms = np.empty(self.batch_size, dtype=np.float64)
        self._ratios = np.empty(self.batch_size, dtype=np.float64)

    def set_progress(self, members: np.ndarray, fractions: np.ndarray) -> None:
        """Anneal beta linearly: ``beta_start`` at fraction 0, 1.0 at fraction 1 (clipped)."""
        fractions = np.asarray(fractions, dtype=np.float64)
        if np.isnan(fractions).any():  # NaN would slip through the clip below
            raise ValueError("set_progress fraction must not be NaN")
        start = np.array(self.beta_start)[members]
        self.beta[members] = np.clip(start + fractions * (1.0 - start), start, 1.0)

    def _on_add(self, members: np.ndarray, positions: np.ndarray) -> None:
        for k, i in zip(members.tolist(), positions.tolist()):
            self.trees[k].set(i, self.max_priority[k] ** self.alpha[k])

    def _draw_weighted(self, member: int, out_idx: np.ndarray, out_weights: np.ndarray) -> None:
        """Stratified proportional sampling: one uniform draw in each of ``batch_size``
        equal segments of the total priority mass (lower variance than i.i.d. draws)."""
        tree, uniforms, ratios = self.trees[member], self._uniforms, self._ratios
        self.rngs[member].random(out=uniforms)
        status = kernels.sample_member(
            tree._tree, tree._offsets, tree._raw, tree.branching, uniforms, out_idx, ratios
        )
        if status != kernels.SAMPLED:
            raise ValueError("SumTree.find needs a positive total")
        # w_i = (N P(i))^-beta / max_j w_j over the batch. N and the total cancel, and the
        # max weight belongs to the least mass: w_i = (m_i / min_j m_j)^-beta, m = p^alpha.
        out_weights[:] = ratios ** (-self.beta[member])

    def sample(self, members: np.ndarray) -> ReplaySamples:
        self._check_nonempty(members)
        indices = np.empty((len(members), self.batch_size), np.int64)
        weights = np.empty((len(members), self.batch_size), np.float32)
        for row, k in enumerate(members.tolist()):
            self._draw_weighted(k, indices[row], weights[row])
        return self._gather(members, indices, weights)

    def update_priorities(
        self, members: np.ndarray, indices: npt.ArrayLike, td_errors: npt.ArrayLike
    ) -> None:
        """Set ``p_i = |td_i| + priority_eps`` for each member's sampled ``indices`` (rows
        aligned with ``members``).

        Duplicated indices (sampling is with replacement) keep the last value. Non-finite
        TD errors raise: a NaN in the tree would silently break all later sampling.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(len(members), -1)
        td = np.asarray(td_errors, dtype=np.float64).reshape(len(members), -1)
        if idx.shape != td.shape:
            raise ValueError(f"{idx.size} indices but {td.size} td_errors")
        for row, k in enumerate(members.tolist()):
            self._update_member(k, idx[row], td[row])

    def _update_member(self, k: int, idx: np.ndarray, td: np.ndarray) -> None:
        if idx.size == 0:
            return
        size = int(self.size[k])
        priorities = np.empty(idx.size, dtype=np.float64)
        max_p = kernels.priorities_of(idx, td, self.priority_eps[k], size, priorities)
        if max_p < 0:
            raise IndexError(
                f"priority indices must lie in [0, {size}), got [{idx.min()}, {idx.max()}]"
            )
        non_finite = "update_priorities got non-finite TD errors (diverged loss?)"
        if not np.isfinite(max_p):
            raise ValueError(non_finite)
        mass = priorities ** self.alpha[k]
        tree = self.trees[k]
        if not kernels.write_finite(
            tree._tree, tree._offsets, tree._raw, tree.branching, tree._marks, idx, mass
        ):  # indices validated above, mass >= 0
            raise ValueError(non_finite)
        self.max_priority[k] = max(self.max_priority[k], max_p)

    def reset_member(self, member: int, rng: np.random.Generator, **params: Any) -> None:
        unknown = set(params) - {"capacity", "alpha", "beta_start", "priority_eps"}
        if unknown:
            raise TypeError(f"unexpected buffer parameters {sorted(unknown)}")
        alpha, beta_start, eps = _check(
            params.pop("alpha", self.alpha[member]),
            params.pop("beta_start", self.beta_start[member]),
            params.pop("priority_eps", self.priority_eps[member]),
        )
        super().reset_member(member, rng, **params)
        self.alpha[member], self.beta_start[member], self.priority_eps[member] = (
            alpha,
            beta_start,
            eps,
        )
        self.beta[member], self.max_priority[member] = beta_start, 1.0
        self.trees[member] = SumTree(int(self.capacity[member]))
