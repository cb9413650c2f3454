"""Micro-benchmark of the replay buffers: microseconds per add / sample / update_priorities.

Run from the repository root: ``PYTHONPATH=. python tests/benchmarks/bench_buffers.py``
(options: ``--capacity 10000 --batch-size 64 --obs-dim 4``).
Not collected by pytest (no ``test_`` prefix); figures are machine-dependent.
"""

from __future__ import annotations

import argparse
import time
import timeit

import numpy as np

from sweeper.buffers import (
    LatestTransitionBuffer,
    PrioritizedReplayBuffer,
    SumTree,
    UniformReplayBuffer,
)


def _per_call_us(fn, number: int, repeat: int = 15) -> float:
    """Best-of-``repeat`` mean CPU time per call, in microseconds.

    Process CPU time rather than wall time, so other jobs on a shared machine inflate the
    figures less.
    """
    times = timeit.repeat(fn, number=number, repeat=repeat, timer=time.process_time)
    return min(times) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--capacity", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--obs-dim", type=int, default=4)
    parser.add_argument("--number", type=int, default=500)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    obs_shape = (args.obs_dim,)
    obs = rng.standard_normal(obs_shape).astype(np.float32)
    kwargs = dict(capacity=args.capacity, batch_size=args.batch_size, obs_shape=obs_shape)
    td = rng.standard_normal(args.batch_size)

    print(f"capacity={args.capacity} batch_size={args.batch_size} obs_shape={obs_shape}")
    buffers = {
        "uniform": UniformReplayBuffer(rng=np.random.default_rng(1), **kwargs),
        "prioritized": PrioritizedReplayBuffer(rng=np.random.default_rng(1), **kwargs),
        "latest": LatestTransitionBuffer(rng=np.random.default_rng(1), **kwargs),
    }
    for name, buf in buffers.items():
        add_us = _per_call_us(lambda b=buf: b.add(obs, 1, 1.0, obs, False), args.number)
        while len(buf) < buf.capacity:
            buf.add(obs, 1, 1.0, obs, False)
        sample_us = _per_call_us(buf.sample, args.number)
        idx = buf.sample().indices
        td_b = td[: idx.size]
        upd_us = _per_call_us(lambda b=buf, i=idx, t=td_b: b.update_priorities(i, t), args.number)
        print(
            f"{name:>12}: add {add_us:7.2f} us   sample {sample_us:7.2f} us   "
            f"update_priorities {upd_us:7.2f} us"
        )

    tree = SumTree(args.capacity)
    tree.update(np.arange(args.capacity), rng.random(args.capacity))
    q = rng.random(args.batch_size) * tree.total
    i = rng.integers(0, args.capacity, args.batch_size)
    v = rng.random(args.batch_size)
    find_us = _per_call_us(lambda: tree.find(q), args.number)
    upd_us = _per_call_us(lambda: tree.update(i, v), args.number)
    print(f"{'sum_tree':>12}: find {find_us:7.2f} us   update {upd_us:7.2f} us  (batch)")


if __name__ == "__main__":
    main()
