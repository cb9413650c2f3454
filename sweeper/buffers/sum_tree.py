"""A K-ary sum tree: O(log n) priority updates and prefix-sum search, each call one compiled
kernel (``sweeper.buffers.sum_tree_kernels``).

Why K-ary, not the classic binary array tree: fewer levels (a binary tree over 10,000 leaves
has 14, with the default ``branching=32`` it has 3), so a descent reads a few short rows that
sit in cache. ``branching=2`` gives a binary tree with the same code.

Why compiled: the tree was vectorized numpy (a whole batch per level), whose speed was set
by numpy's per-call overhead at replay batch sizes (~64): single-run prioritized replay had
fallen below its speed before the population engine. One numba call per operation removes
that overhead (find and update of 64 leaves 4-9x faster at 10,000 leaves). The kernels
reproduce the numpy tree bit for bit (same sums in the same order, same descent): see their
module.

Layout: each level is a block of rows of ``K + 1`` floats, all levels in one flat array (top
first; ``_levels`` holds ``(rows, K + 1)`` views of it). Row ``b`` holds ``0`` then the
inclusive prefix sums of the ``K`` children of node ``b`` (its last column is therefore node
``b``'s value). The top level is a single row whose last entry is the total. Keeping prefix
sums, rather than child values, means a query descends one level by searching one row with
no cumulative sum at query time; an update rebuilds one row per touched node. Raw leaf values
are kept in their own array, so ``get`` is exact. Rows are always rebuilt from the children
(never adjusted by deltas), so sums do not drift over millions of updates; unwritten and
padding leaves are 0.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from sweeper.buffers import sum_tree_kernels as kernels


class SumTree:
    """Sum tree over ``capacity`` non-negative leaf values (initially all 0)."""

    def __init__(self, capacity: int, branching: int = 32) -> None:
        capacity, branching = int(capacity), int(branching)
        if capacity < 1:
            raise ValueError(f"SumTree capacity must be >= 1, got {capacity}")
        if branching < 2:
            raise ValueError(f"SumTree branching must be >= 2, got {branching}")
        self.capacity = capacity
        self.branching = k = branching
        # Real number of rows per level, bottom-up, until one row (the root's children).
        counts = [-(-capacity // k)]
        while counts[-1] > 1:
            counts.append(-(-counts[-1] // k))
        counts.reverse()  # top first
        # A level's rows must come in whole groups of k under their parent row: pad it.
        rows = [1] + [counts[i - 1] * k for i in range(1, len(counts))]
        self._offsets = np.concatenate([[0], np.cumsum(rows) * (k + 1)]).astype(np.int64)
        self._tree = np.zeros(int(self._offsets[-1]), dtype=np.float64)
        self._raw = np.zeros(counts[-1] * k, dtype=np.float64)
        self._make_views()

    def _make_views(self) -> None:
        # _levels[l] = level l as a (rows, k + 1) view of the flat array, never a copy.
        k, bounds = self.branching, self._offsets.tolist()
        self._levels = [
            self._tree[a:b].reshape(-1, k + 1) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        self._total_at = k  # the root row's last column
        # Scratch of the batch write: one entry per row of the widest level, k when unused.
        self._marks = np.full(max(lvl.shape[0] for lvl in self._levels), k, dtype=np.int64)

    def __getstate__(self) -> dict:
        # Pickle/deepcopy would turn the views into independent copies (silently detaching
        # them from the tree), so store only the owning arrays and rebuild the views.
        return {k: self.__dict__[k] for k in ("capacity", "branching", "_offsets", "_tree", "_raw")}

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        if "_tree" not in state:  # pickled by the numpy tree: a list of (rows, k + 1) levels
            levels = state.pop("_levels")
            sizes = [lvl.size for lvl in levels]
            state["_offsets"] = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            state["_tree"] = np.concatenate([lvl.ravel() for lvl in levels]).astype(np.float64)
        self.__dict__.update(state)
        self._make_views()

    @property
    def depth(self) -> int:
        """Number of levels below the root."""
        return len(self._offsets) - 1

    @property
    def total(self) -> float:
        """Sum of all leaves (the root)."""
        return float(self._tree[self._total_at])

    def __len__(self) -> int:
        return self.capacity

    def _check_indices(self, idx: np.ndarray) -> None:
        # An out-of-range write would land in a padding leaf and make it sampleable (or, in
        # compiled code without bounds checks, outside the arrays).
        if idx.size and (idx.min() < 0 or idx.max() >= self.capacity):
            raise IndexError(
                f"SumTree indices must lie in [0, {self.capacity}), "
                f"got min {idx.min()}, max {idx.max()}"
            )

    def get(self, indices: npt.ArrayLike) -> np.ndarray:
        """Leaf values at ``indices`` (a new array)."""
        idx = np.asarray(indices, dtype=np.int64)
        self._check_indices(idx)
        return self._raw.take(idx)

    def leaf_values(self, indices: np.ndarray) -> np.ndarray:
        """``get`` without the range check, for indices ``find`` just returned."""
        return self._raw.take(indices)

    def __getitem__(self, indices: npt.ArrayLike) -> np.ndarray | float:
        if np.ndim(indices) == 0:
            i = int(indices)  # type: ignore[arg-type]
            if not 0 <= i < self.capacity:
                raise IndexError(f"SumTree index {i} out of range [0, {self.capacity})")
            return float(self._raw[i])
        return self.get(indices)

    def values(self) -> np.ndarray:
        """A copy of all ``capacity`` leaf values."""
        return self._raw[: self.capacity].copy()

    def set(self, index: int, value: float) -> None:
        """Set one leaf: scalar fast path (replay calls it once per environment step)."""
        i, value = int(index), float(value)
        if not 0 <= i < self.capacity:
            raise IndexError(f"SumTree index {i} out of range [0, {self.capacity})")
        if not (value >= 0 and value < np.inf):  # NaN fails both
            raise ValueError(f"SumTree values must be finite and >= 0, got {value}")
        kernels.tree_set(self._tree, self._offsets, self._raw, self.branching, i, value)

    def update(self, indices: npt.ArrayLike, values: npt.ArrayLike) -> None:
        """Set leaves ``indices`` to ``values`` (scalar broadcasts) and fix all sums.

        Duplicate indices in one call: the last write wins. Values must be finite, >= 0.
        """
        idx = np.asarray(indices, dtype=np.int64).ravel()
        if idx.size == 0:
            return
        vals = np.asarray(values, dtype=np.float64).ravel()
        if vals.shape != idx.shape:
            vals = np.broadcast_to(vals, idx.shape)  # a scalar (or raises)
        self._check_indices(idx)
        if not (vals.min() >= 0 and vals.max() < np.inf):  # NaN fails both
            raise ValueError("SumTree values must be finite and >= 0")
        self._write(idx, vals)

    def _write(self, idx: np.ndarray, vals: np.ndarray) -> None:
        """``update`` without validation: int64 ``idx`` in range, ``vals`` finite >= 0."""
        kernels.tree_write(
            self._tree, self._offsets, self._raw, self.branching, self._marks, idx, vals
        )

    def find(self, prefix_sums: npt.ArrayLike) -> np.ndarray:
        """For each query ``v``, the leaf ``i`` with ``cumsum[i-1] <= v < cumsum[i]``.

        That is ``np.searchsorted(np.cumsum(leaves), v, side="right")``, except that the
        result is always a leaf with a positive value: queries are clipped into
        ``[0, total)`` at every level and the descent never enters a zero-mass child, so
        ``v >= total`` (or rounding on the way down) cannot return an empty or unwritten
        leaf; such queries get the last positive leaf (NaN is treated as 0).
        """
        if not self._tree[self._total_at] > 0:
            raise ValueError("SumTree.find needs a positive total")
        queries = np.asarray(prefix_sums, dtype=np.float64)
        found = np.empty(queries.shape, dtype=np.int64)
        kernels.tree_find(
            self._tree, self._offsets, self.branching, queries.ravel(), found.reshape(-1)
        )
        return found

    def __repr__(self) -> str:
        return (
            f"SumTree(capacity={self.capacity}, branching={self.branching}, total={self.total:.6g})"
        )
