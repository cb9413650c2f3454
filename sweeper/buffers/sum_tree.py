"""A vectorized sum tree: O(log n) priority updates and prefix-sum search, batch at a time.

Why K-ary: at replay batch sizes (~64) every numpy call costs about a microsecond whatever
its size, so speed is set by the number of calls per level times the number of levels.
A binary tree over 10,000 leaves has 14 levels; with the default ``branching=32`` it has
3, and each level handles all queries with a few (B, K) array operations. ``branching=2``
gives the classic binary tree (same code, same results).

Layout: one flat float64 array holding the root at ``[0]`` followed by each level, top to
bottom; level arrays are padded to a multiple of ``branching`` so that the children of
node ``n`` are row ``n`` of the child level viewed as ``(-1, branching)``. Unwritten and
padding leaves are 0. Parents are always recomputed from their children (never updated by
deltas), so sums do not drift over millions of updates.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


class SumTree:
    """Sum tree over ``capacity`` non-negative leaf values (initially all 0)."""

    def __init__(self, capacity: int, branching: int = 32) -> None:
        capacity, branching = int(capacity), int(branching)
        if capacity < 1:
            raise ValueError(f"SumTree capacity must be >= 1, got {capacity}")
        if branching < 2:
            raise ValueError(f"SumTree branching must be >= 2, got {branching}")
        self.capacity = capacity
        self.branching = branching
        # Padded length of each level, leaves first, until a level has a single parent.
        lengths: list[int] = []
        n = capacity
        while True:
            n = -(-n // branching)  # number of parents
            lengths.append(n * branching)
            if n == 1:
                break
        lengths.reverse()  # top level (children of the root) first
        self._flat = np.zeros(1 + sum(lengths), dtype=np.float64)
        self._levels: list[np.ndarray] = []
        start = 1
        for length in lengths:
            self._levels.append(self._flat[start : start + length])
            start += length
        self._blocks = [level.reshape(-1, branching) for level in self._levels]
        self._leaves = self._levels[-1]
        self._scratch: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def depth(self) -> int:
        """Number of levels below the root."""
        return len(self._levels)

    @property
    def total(self) -> float:
        """Sum of all leaves (the root)."""
        return float(self._flat[0])

    def __len__(self) -> int:
        return self.capacity

    def _check_indices(self, idx: np.ndarray) -> None:
        # An out-of-range write would land in a padding leaf and make it sampleable.
        if idx.size and (idx.min() < 0 or idx.max() >= self.capacity):
            raise IndexError(
                f"SumTree indices must lie in [0, {self.capacity}), "
                f"got min {idx.min()}, max {idx.max()}"
            )

    def get(self, indices: npt.ArrayLike) -> np.ndarray:
        """Leaf values at ``indices`` (a new array)."""
        idx = np.asarray(indices, dtype=np.int64)
        self._check_indices(idx)
        return self._leaves.take(idx)

    def __getitem__(self, indices: npt.ArrayLike) -> np.ndarray | float:
        if np.ndim(indices) == 0:
            i = int(indices)  # type: ignore[arg-type]
            if not 0 <= i < self.capacity:
                raise IndexError(f"SumTree index {i} out of range [0, {self.capacity})")
            return float(self._leaves[i])
        return self.get(indices)

    def values(self) -> np.ndarray:
        """A copy of all ``capacity`` leaf values."""
        return self._leaves[: self.capacity].copy()

    def set(self, index: int, value: float) -> None:
        """Set one leaf; scalar fast path (used once per environment step by replay)."""
        i, value = int(index), float(value)
        if not 0 <= i < self.capacity:
            raise IndexError(f"SumTree index {i} out of range [0, {self.capacity})")
        if not (value >= 0 and np.isfinite(value)):
            raise ValueError(f"SumTree values must be finite and >= 0, got {value}")
        self._leaves[i] = value
        for d in range(self.depth - 1, 0, -1):
            i //= self.branching
            self._levels[d - 1][i] = self._blocks[d][i].sum()
        self._flat[0] = self._levels[0].sum()

    def update(self, indices: npt.ArrayLike, values: npt.ArrayLike) -> None:
        """Set leaves ``indices`` to ``values`` (scalar broadcasts) and fix all sums.

        Duplicate indices in one call: the last write wins. Values must be finite, >= 0.
        """
        idx = np.asarray(indices, dtype=np.int64).ravel()
        if idx.size == 0:
            return
        vals = np.broadcast_to(np.asarray(values, dtype=np.float64).ravel(), idx.shape)
        self._check_indices(idx)
        lo, hi = vals.min(), vals.max()
        if not (lo >= 0 and hi < np.inf):  # NaN fails both comparisons
            raise ValueError("SumTree values must be finite and >= 0")
        if idx.size > 1:
            # numpy leaves the winner of duplicate fancy assignments unspecified, so keep
            # only each index's last occurrence explicitly.
            order = np.argsort(idx, kind="stable")
            sorted_idx = idx.take(order)
            last = np.empty(idx.size, dtype=bool)
            np.not_equal(sorted_idx[1:], sorted_idx[:-1], out=last[:-1])
            last[-1] = True
            if not last.all():
                keep = order[last]
                idx, vals = idx.take(keep), vals.take(keep)
        self._leaves[idx] = vals
        nodes = idx // self.branching if self.depth > 1 else idx
        for d in range(self.depth - 1, 0, -1):
            # Parents of level d live in level d-1; duplicates just rewrite the same sum.
            self._levels[d - 1][nodes] = self._blocks[d].take(nodes, axis=0).sum(axis=1)
            nodes //= self.branching
        self._flat[0] = self._levels[0].sum()

    def _scratch_for(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Reusable (n, K+1) cumsum buffer (column 0 stays 0) and its flat row offsets."""
        buf = self._scratch.get(n)
        if buf is None:
            k = self.branching
            buf = (np.zeros((n, k + 1)), np.arange(n, dtype=np.int64) * (k + 1))
            self._scratch[n] = buf
        return buf

    def find(self, prefix_sums: npt.ArrayLike) -> np.ndarray:
        """For each query ``v``, the leaf ``i`` with ``cumsum[i-1] <= v < cumsum[i]``.

        That is ``np.searchsorted(np.cumsum(leaves), v, side="right")``, except that the
        result is always a leaf with a positive value: queries are clipped into
        ``[0, total]`` and the descent never enters a zero-mass child, so ``v == total``
        (or rounding on the way down) cannot return an empty or unwritten leaf; such
        queries get the last positive leaf.
        """
        total = self._flat[0]
        if not total > 0:
            raise ValueError("SumTree.find needs a positive total")
        queries = np.asarray(prefix_sums, dtype=np.float64)
        v = np.clip(queries.ravel(), 0.0, total)  # a new array, safe to modify
        if np.isnan(v).any():
            raise ValueError("SumTree.find got NaN queries")
        n = v.size
        ext, row_offsets = self._scratch_for(n)
        cs = ext[:, 1:]  # cs[:, k] = sum of children 0..k; ext[:, 0] = 0
        flat_ext = ext.reshape(-1)
        mask = np.empty(cs.shape, dtype=bool)
        below_total = np.empty(cs.shape, dtype=bool)
        nodes = np.zeros(n, dtype=np.int64)
        for blocks in self._blocks:
            np.cumsum(blocks.take(nodes, axis=0), axis=1, out=cs)
            # Child j = #children whose cumulative sum is <= v, excluding those whose
            # cumulative sum already equals the node's total (trailing zero-mass ones).
            # The chosen child then always has positive mass (strictly increasing cs).
            np.less_equal(cs, v[:, None], out=mask)
            np.less(cs, cs[:, -1:], out=below_total)
            mask &= below_total
            j = np.count_nonzero(mask, axis=1)
            v -= flat_ext.take(row_offsets + j)  # cs[j-1] (0 when j == 0); stays >= 0
            nodes *= self.branching
            nodes += j
        return nodes.reshape(queries.shape)

    def __repr__(self) -> str:
        return (
            f"SumTree(capacity={self.capacity}, branching={self.branching}, "
            f"total={self.total:.6g})"
        )
