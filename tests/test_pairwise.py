"""``sweeper.agents.pairwise``: numpy's pairwise sum in compiled code, bit for bit, for the
float32 rows of the DQN loss and the float64 rows of the tabular expectation."""

import numpy as np
import pytest

from sweeper.agents.pairwise import pairwise_sum


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [*range(1, 20), 64, 127, 128, 129, 136, 255, 256, 257, 1000, 4099])
def test_pairwise_sum_is_numpys_sum_and_mean(n, dtype):
    rng = np.random.default_rng(n)
    for _ in range(20):
        row = (rng.standard_normal(n) * 10.0 ** rng.integers(-4, 5, n)).astype(dtype)
        total = np.asarray(pairwise_sum(row, n), dtype)
        assert total.tobytes() == np.add.reduce(row).tobytes()
        # np.mean divides the float32 sum in double: the DQN loss does the same
        mean = np.asarray(np.float64(total) / n, dtype)
        assert mean.tobytes() == row[None].mean(axis=1)[0].tobytes()
    zeros = -np.zeros(n, dtype)  # numpy's sum of negative zeros is +0.0
    assert np.signbit(pairwise_sum(zeros, n)) == np.signbit(np.add.reduce(zeros))


def test_only_the_first_n_values_count():
    row = np.arange(10, dtype=np.float32)
    assert pairwise_sum(row, 4) == 6.0
