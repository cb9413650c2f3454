"""Explicit seeding: one seed fixes Python, numpy, torch and the per-component RNG streams."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed the global generators; one torch thread and one BLAS thread.

    Library code takes injected generators; the globals are seeded only for third-party code.
    Torch only initializes the networks here (seeded generator, deterministic CPU ops); the
    updates run in numpy. So ``torch.use_deterministic_algorithms`` would govern no op we run,
    and it costs 1.5 s of imports per process (per trial in a sweep): it is left off, and
    the determinism tests check bit-identical metrics instead.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    single_threaded_blas()


def single_threaded_blas() -> None:
    """One BLAS thread: the matrices are tiny, and OpenBLAS threads that spin-wait on a busy
    2-core machine made a batch-128 product 100x slower. Also keeps results bit-stable."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


def component_rngs(seed: int, n: int) -> list[np.random.Generator]:
    """Independent numpy generators (agent, buffer, ...) derived from one seed."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


#: Where the seeds of each phase lie: disjoint ranges, so a test seed is never a tuning seed
#: whatever the number of either (Eimer et al. 2023: tune on some seeds, report on others).
SEED_RANGES = {"tune": (0, 1_000_000), "test": (1_000_000, 2_000_000)}


def replicate_seeds(sweep_seed: int, n: int, phase: str = "tune") -> list[int]:
    """``n`` distinct seeds for ``phase`` (``tune`` or ``test``), derived from ``sweep_seed``.

    Tuning seeds lie in [0, 1e6), test seeds in [1e6, 2e6). Deterministic, and a prefix of
    the longer list: ``seeds=5`` trains the three seeds of ``seeds=3`` and two more.
    """
    if phase not in SEED_RANGES:
        raise ValueError(f"phase must be one of {', '.join(SEED_RANGES)}, got {phase!r}")
    low, high = SEED_RANGES[phase]
    rng = np.random.default_rng([int(sweep_seed), list(SEED_RANGES).index(phase)])
    seeds: list[int] = []
    while len(seeds) < n:
        seed = int(rng.integers(low, high))
        if seed not in seeds:
            seeds.append(seed)
    return seeds
