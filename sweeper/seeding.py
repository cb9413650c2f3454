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
