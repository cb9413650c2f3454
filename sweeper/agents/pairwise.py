"""numpy's pairwise summation (``np.add.reduce`` of a contiguous row), in compiled code.

Why: the compiled updates (``member_update``'s mean loss, ``tabular_update``'s Expected SARSA
expectation) must give the numbers numpy gave bit for bit, and a float sum depends on its
order. numpy adds a row of up to 128 values with 8 interleaved accumulators combined as a tree,
halves longer rows at a multiple of 8 and adds the halves, and starts a reduction from 0. Here
that recursion is unrolled into a stack of ranges (numba's disk cache does not take recursive
functions), each range's sum added to its parent's in the order the recursion would. Works for
float32 and float64 rows (the sum has the row's dtype).
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: numpy's ``PW_BLOCKSIZE``: runs up to this long are summed with 8 accumulators
BLOCK = 128


@njit(cache=True, error_model="numpy")
def block_sum(x, start, n):
    """numpy's pairwise sum of ``x[start:start + n]`` for ``n <= BLOCK``: in order below 8,
    else 8 interleaved accumulators added as a tree, then the remainder in order."""
    res = np.zeros(1, x.dtype)[0]
    if n < 8:
        for i in range(n):
            res += x[start + i]
        return res
    r = np.empty(8, x.dtype)
    for j in range(8):
        r[j] = x[start + j]
    i = 8
    while i < n - (n % 8):
        for j in range(8):
            r[j] += x[start + i + j]
        i += 8
    res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    while i < n:
        res += x[start + i]
        i += 1
    return res


@njit(cache=True, error_model="numpy")
def pairwise_sum(x, n):
    """``np.add.reduce(x[:n])``, bit for bit."""
    zero = np.zeros(1, x.dtype)[0]
    if n <= BLOCK:
        return zero + block_sum(x, 0, n)
    starts = np.empty(64, np.int64)
    sizes = np.empty(64, np.int64)
    sums = np.zeros(64, x.dtype)
    state = np.zeros(64, np.int64)  # 0: not split yet, 1: left half done, 2: done
    top = 0
    starts[0], sizes[0] = 0, n
    while True:
        size = sizes[top]
        if state[top] == 0 and size <= BLOCK:
            sums[top] = block_sum(x, starts[top], size)
            state[top] = 2
        if state[top] == 2:
            if top == 0:
                return zero + sums[0]
            parent = top - 1
            if state[parent] == 0:  # the left half is done: keep it, do the right half
                sums[parent] = sums[top]
                state[parent] = 1
                half = sizes[parent] // 2
                half -= half % 8
                starts[top], sizes[top] = starts[parent] + half, sizes[parent] - half
                state[top] = 0
            else:  # the right half is done
                sums[parent] = sums[parent] + sums[top]
                state[parent] = 2
                top = parent
            continue
        half = size // 2
        half -= half % 8
        top += 1
        starts[top], sizes[top], state[top] = starts[top - 1], half, 0
