"""A vectorized K-ary sum tree: O(log n) priority updates and prefix-sum search, a whole
batch per tree level with numpy (never a Python loop over queries or indices).

Why not the classic binary array tree: at replay batch sizes (~64) a numpy call costs
about a microsecond whatever its size, so speed is set by numpy calls per level times the
number of levels. A binary tree over 10,000 leaves has 14 levels; with the default
``branching=32`` it has 3. ``branching=2`` gives a binary tree with the same code.

Layout: each level is a ``(blocks, K + 1)`` array; row ``b`` holds ``0`` then the
inclusive prefix sums of the ``K`` children of node ``b`` (its last column is therefore
node ``b``'s value). The top level is a single row whose last entry is the total. Keeping
prefix sums, rather than child values, means a query descends one level by comparing
against a taken row with no cumulative sum at query time; an update recomputes one
``cumsum`` per touched row. Raw leaf values are kept in their own array, so ``get`` is
exact. Rows are always recomputed from the children (never adjusted by deltas), so sums do
not drift over millions of updates; unwritten and padding leaves are 0.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def _first_of_runs(sorted_values: np.ndarray) -> np.ndarray:
    """Distinct values of an ascending array (cheaper than np.unique for tiny inputs)."""
    if sorted_values.size < 2:
        return sorted_values
    keep = np.empty(sorted_values.size, dtype=bool)
    keep[0] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=keep[1:])
    return sorted_values[keep]


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
        self._levels = [np.zeros((n, k + 1), dtype=np.float64) for n in rows]
        self._raw = np.zeros(counts[-1] * k, dtype=np.float64)
        self._make_views()

    def _make_views(self) -> None:
        k = self.branching
        # _children[l][b] = the k child values summed by row b of level l: views into the
        # level below (its last column) or into the raw leaves, never copies.
        self._children = [lvl[:, -1].reshape(-1, k) for lvl in self._levels[1:]]
        self._children.append(self._raw.reshape(-1, k))
        self._top = self._levels[0][0]
        self._scratch: dict[int, np.ndarray] = {}

    def __getstate__(self) -> dict:
        # Pickle/deepcopy would turn the views into independent copies (silently breaking
        # every later update), so store only the owning arrays and rebuild the views.
        return {k: self.__dict__[k] for k in ("capacity", "branching", "_levels", "_raw")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._make_views()

    @property
    def depth(self) -> int:
        """Number of levels below the root."""
        return len(self._levels)

    @property
    def total(self) -> float:
        """Sum of all leaves (the root)."""
        return float(self._top[-1])

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
        self._raw[i] = value
        for level, children in zip(reversed(self._levels), reversed(self._children), strict=True):
            i //= self.branching
            np.add.accumulate(children[i], out=level[i, 1:])

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
        if idx.size > 1:
            # numpy leaves the winner of duplicate fancy assignments unspecified, so keep
            # each index's last occurrence explicitly (the result is sorted ascending).
            order = np.argsort(idx, kind="stable")
            sorted_idx = idx.take(order)
            last = np.empty(idx.size, dtype=bool)
            last[-1] = True
            np.not_equal(sorted_idx[1:], sorted_idx[:-1], out=last[:-1])
            keep = order[last]
            idx, vals = idx.take(keep), vals.take(keep)
        self._raw[idx] = vals
        k = self.branching
        rows = idx // k
        # Bottom-up; the top level (one row) is recomputed whole, below it only touched
        # rows. Duplicate rows would just recompute the same sums: deduplicating pays off
        # above the leaf rows only, where many queries share a parent.
        for d in range(self.depth - 1, 0, -1):
            level, children = self._levels[d], self._children[d]
            level[rows, 1:] = np.add.accumulate(children.take(rows, axis=0), axis=1)
            if d > 1:
                rows = _first_of_runs(rows // k)
        np.add.accumulate(self._children[0][0], out=self._top[1:])

    def find(self, prefix_sums: npt.ArrayLike) -> np.ndarray:
        """For each query ``v``, the leaf ``i`` with ``cumsum[i-1] <= v < cumsum[i]``.

        That is ``np.searchsorted(np.cumsum(leaves), v, side="right")``, except that the
        result is always a leaf with a positive value: queries are clipped into
        ``[0, total)`` at every level and the descent never enters a zero-mass child, so
        ``v >= total`` (or rounding on the way down) cannot return an empty or unwritten
        leaf; such queries get the last positive leaf (NaN is treated as 0).
        """
        if not self._top[-1] > 0:
            raise ValueError("SumTree.find needs a positive total")
        queries = np.asarray(prefix_sums, dtype=np.float64)
        v = np.fmax(queries.ravel(), 0.0)  # a new array, safe to modify; NaN -> 0
        n, k = v.size, self.branching
        offsets = self._scratch.get(n)
        if offsets is None:  # flat position of row r's column 0, minus 1 (see below)
            if len(self._scratch) >= 8:  # batch sizes rarely vary; stay bounded anyway
                self._scratch.clear()
            offsets = self._scratch[n] = np.arange(n, dtype=np.int64) * (k + 1) - 1
        mask = np.empty((n, k + 1), dtype=bool)
        nodes = np.zeros(n, dtype=np.int64)
        vcol = v[:, None]
        for level in self._levels:
            rows = level.take(nodes, axis=0)  # (n, k+1): 0, then prefix sums of children
            # Keep v strictly below the node's total: exact arithmetic guarantees it, this
            # absorbs rounding (and v == total). Then the first prefix sum > v is at most
            # the last column, and it strictly exceeds its predecessor, so the chosen
            # child has positive mass: never an empty or unwritten leaf.
            np.minimum(v, np.nextafter(rows[:, -1], 0.0), out=v)
            np.less_equal(rows, vcol, out=mask)  # column 0 (0 <= v) is always True
            first_above = mask.argmin(axis=1)  # = child index + 1
            v -= rows.reshape(-1).take(offsets + first_above)  # prefix sum before child
            nodes *= k
            nodes += first_above
            nodes -= 1
        return nodes.reshape(queries.shape)

    def __repr__(self) -> str:
        return (
            f"SumTree(capacity={self.capacity}, branching={self.branching}, total={self.total:.6g})"
        )
