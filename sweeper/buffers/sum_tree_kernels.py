"""Compiled (numba) kernels of the sum tree (``sweeper.buffers.sum_tree``) and of proportional
prioritized replay's per-member sampling and priority update (``sweeper.buffers.prioritized``).

Why compiled: at replay batch sizes (~64) the vectorized numpy tree spent its time in numpy
call overhead (a dozen calls per level, per sample and per update), which left single-run
prioritized replay slower than before the population engine. Each kernel here is one call.

Why bit-identical to the numpy tree it replaces: every row is rebuilt from its children in
the order ``np.add.accumulate`` adds them (sequentially, first child copied), the descent
takes the same ``min``/compare/subtract steps per level, and the IS-weight ratio is the same
division. What stays in Python, on purpose: the generators' draws (``Generator.random``) and
every ``**`` (numpy's float64 power uses SIMD (SVML) code on AVX-512 machines whose results
differ in the last bit from libm's ``pow`` that compiled code calls).

Tree layout (flat, so one array travels into a kernel): level ``d`` (0 = the root's row)
starts at ``offsets[d]`` of ``tree`` and holds rows of ``k + 1`` floats: ``0`` then the
inclusive prefix sums of the row's ``k`` children. The children of row ``r`` of level ``d``
are the last columns of rows ``r*k .. r*k+k-1`` of level ``d+1``, or for the deepest level
the raw leaves ``raw[r*k : r*k+k]``. ``offsets`` has ``depth + 1`` entries (the last is the
end). Kernels do not check bounds: callers validate indices first.

No recursion anywhere: numba's disk cache (``cache=True``) does not survive recursive
functions. Compiled once per machine (the cache lies next to this file or in
``NUMBA_CACHE_DIR``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: ``sample_member`` status codes
SAMPLED, EMPTY_TREE = 0, 1


@njit(cache=True, inline="always")  # a call per row, with its reference counts, costs more
def _rebuild_row(
    tree: np.ndarray, offsets: np.ndarray, raw: np.ndarray, k: int, d: int, r: int, start: int
) -> None:
    """Row ``r`` of level ``d`` from its children ``start .. k-1`` on, summed as
    ``np.add.accumulate`` sums the whole row: the first child copied, then one addition per
    child. Columns up to ``start`` are kept: they are the same additions of children that
    did not change, so they already hold what a full rebuild would write."""
    depth = offsets.size - 1
    base = offsets[d] + r * (k + 1)
    row = tree[base : base + k + 1]
    if d == depth - 1:
        children = raw[r * k : r * k + k]
    else:  # the last column of the child rows (a strided view)
        first = offsets[d + 1] + r * k * (k + 1) + k
        children = tree[first : first + k * (k + 1) : k + 1]
    if start == 0:
        acc = children[0]
        row[1] = acc
        start = 1
    else:
        acc = row[start]
    for j in range(start, k):
        acc += children[j]
        row[j + 1] = acc


@njit(cache=True)
def tree_set(
    tree: np.ndarray, offsets: np.ndarray, raw: np.ndarray, k: int, index: int, value: float
) -> None:
    """Leaf ``index`` := ``value``, then its ancestors' rows bottom-up."""
    raw[index] = value
    child = index
    for d in range(offsets.size - 2, -1, -1):
        r = child // k
        _rebuild_row(tree, offsets, raw, k, d, r, child - r * k)
        child = r


@njit(cache=True)
def tree_write(
    tree: np.ndarray,
    offsets: np.ndarray,
    raw: np.ndarray,
    k: int,
    marks: np.ndarray,
    idx: np.ndarray,
    vals: np.ndarray,
) -> None:
    """Leaves ``idx`` := ``vals`` in order (a duplicate's last write wins), then each touched
    row once, bottom-up, from its first changed child on (a row depends on its children only,
    so this is what rebuilding every touched row whole, in any order, gives).

    ``marks`` (one int64 per row of the widest level, all ``k`` between calls) holds each
    touched row's first changed child while a level is gathered (no sort of the indices).
    """
    n = idx.size
    if n == 0:
        return
    changed = np.empty(n, dtype=np.int64)  # per level: the changed children, then rows
    for j in range(n):
        raw[idx[j]] = vals[j]
        changed[j] = idx[j]
    for d in range(offsets.size - 2, -1, -1):
        m = 0
        for j in range(n):
            child = changed[j]
            r = child // k
            first = child - r * k
            if marks[r] == k:  # a row not seen yet at this level
                changed[m] = r  # m <= j: entries not yet read stay intact
                m += 1
            if first < marks[r]:
                marks[r] = first
        for j in range(m):
            r = changed[j]
            _rebuild_row(tree, offsets, raw, k, d, r, marks[r])
            marks[r] = k
        n = m


@njit(cache=True)
def _descend(
    tree: np.ndarray, offsets: np.ndarray, k: int, v: np.ndarray, nodes: np.ndarray
) -> None:
    """``nodes[q]`` := the leaf of prefix sum ``v[q]``, as the numpy tree's ``find``
    (``v`` is consumed: it ends as each query's offset inside its leaf).

    Per level: clip ``v`` to just below the node's total (``np.minimum`` with ``nextafter``),
    take the first child whose inclusive prefix sum exceeds ``v``, subtract the prefix sum
    before it. The row ascends, so that child's column is 1 + the number of columns 1..k
    with prefix sum <= v, the same child as numpy's ``argmin`` of ``row <= v``: counting is
    branch-free and vectorizes (a binary search over random queries mispredicts most of its
    branches). The node's total is positive (the caller checks the root; a child is only
    entered when its prefix sum strictly grows), so the count stays below ``k``.

    Level by level over all queries, as numpy did: the queries of a level are independent,
    so their loads overlap (one query at a time waits on each level's row).
    """
    b = v.size
    for q in range(b):
        if not v[q] >= 0.0:  # np.fmax(v, 0): NaN and negatives -> 0
            v[q] = 0.0
        nodes[q] = 0
    for d in range(offsets.size - 1):
        level = offsets[d]
        for q in range(b):
            node = nodes[q]
            base = level + node * (k + 1)
            row = tree[base : base + k + 1]  # a view: indices from 0 up need no wraparound
            x, last = v[q], row[k]
            if x >= last:  # x := min(x, nextafter(last, 0)), without the call as a rule
                x = np.nextafter(last, 0.0)
            col = 1
            for j in range(1, k + 1):
                col += row[j] <= x
            v[q] = x - row[col - 1]
            nodes[q] = node * k + col - 1


@njit(cache=True)
def tree_find(
    tree: np.ndarray, offsets: np.ndarray, k: int, queries: np.ndarray, out: np.ndarray
) -> None:
    """``out[q]`` := the leaf of prefix sum ``queries[q]`` (the root's total must be > 0)."""
    _descend(tree, offsets, k, queries.copy(), out)


@njit(cache=True)
def sample_member(
    tree: np.ndarray,
    offsets: np.ndarray,
    raw: np.ndarray,
    k: int,
    uniforms: np.ndarray,
    out_idx: np.ndarray,
    out_ratio: np.ndarray,
) -> int:
    """Stratified proportional sampling of one member, ``B = uniforms.size`` draws.

    Query ``j`` is ``(j + uniforms[j]) * (total / B)``; ``out_idx`` gets the leaves and
    ``out_ratio`` their mass over the batch's least mass (the IS weight is that ratio to the
    power ``-beta``, computed by the caller in numpy). Returns ``EMPTY_TREE`` (and writes
    nothing) when the total is not positive.
    """
    total = tree[offsets[0] + k]
    if not total > 0:
        return EMPTY_TREE
    b = uniforms.size
    segment = total / b
    for j in range(b):  # the queries, in out_ratio until the leaves are known
        out_ratio[j] = (j + uniforms[j]) * segment
    _descend(tree, offsets, k, out_ratio, out_idx)
    least = np.inf
    for j in range(b):
        mass = raw[out_idx[j]]
        out_ratio[j] = mass
        if mass < least:
            least = mass
    for j in range(b):
        out_ratio[j] = out_ratio[j] / least
    return SAMPLED


@njit(cache=True)
def priorities_of(idx: np.ndarray, td: np.ndarray, eps: float, size: int, out: np.ndarray) -> float:
    """``out`` := ``|td| + eps``; returns their maximum, ``-1.0`` if an index lies outside
    ``[0, size)`` (``out`` unwritten) or ``nan`` if a priority is not finite."""
    n = idx.size
    for j in range(n):
        if idx[j] < 0 or idx[j] >= size:
            return -1.0
    top = 0.0
    finite = True
    for j in range(n):
        p = abs(td[j]) + eps
        out[j] = p
        if not np.isfinite(p):
            finite = False
        elif p > top:
            top = p
    return top if finite else np.nan


@njit(cache=True)
def write_finite(
    tree: np.ndarray,
    offsets: np.ndarray,
    raw: np.ndarray,
    k: int,
    marks: np.ndarray,
    idx: np.ndarray,
    vals: np.ndarray,
) -> bool:
    """``tree_write`` if every value is finite (``vals >= 0`` by construction), else write
    nothing and return False."""
    for j in range(vals.size):
        if not np.isfinite(vals[j]):
            return False
    tree_write(tree, offsets, raw, k, marks, idx, vals)
    return True
