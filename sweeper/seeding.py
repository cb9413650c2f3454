"""Explicit seeding: one seed fixes Python, numpy, torch and the per-component RNG streams."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed the global generators and make torch single-threaded and deterministic.

    Library code takes injected generators; the globals are seeded only for third-party code.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    single_threaded_blas()


def single_threaded_blas() -> None:
    """One BLAS thread: the matrices are tiny, and OpenBLAS threads that spin-wait on a busy
    2-core machine made a batch-128 product 100x slower. Also keeps results bit-stable."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


def component_rngs(seed: int, n: int) -> list[np.random.Generator]:
    """Independent numpy generators (agent, buffer, ...) derived from one seed."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]
