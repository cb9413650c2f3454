"""A saved member's Q-function, read back from its model file.

Why a module: the evaluation CLI, the seed comparisons (``sweeper.claims``) and the learning
tests ask a trained agent about states after its run has ended. The files are the agents' own
(``TabularAgent.save``: the Q-table as ``model.npy``; ``DQNAgent.save``: the online network's
state dict as ``model.pt``); this reads them back without rebuilding an agent or its buffer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

QFunction = Callable[[np.ndarray], np.ndarray]


def q_network(path: Path, obs_dim: int, n_actions: int, hidden_sizes: Sequence[int], dueling: bool):
    """The :class:`~sweeper.agents.networks.QNetwork` saved at ``path`` (``model.pt``)."""
    import torch

    from sweeper.agents.networks import QNetwork

    net = QNetwork(obs_dim, n_actions, list(hidden_sizes), bool(dueling))
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state["q_net"])
    return net


def q_function(
    path: Path,
    obs_dim: int,
    n_actions: int,
    hidden_sizes: Sequence[int] = (64, 64),
    dueling: bool = False,
) -> QFunction:
    """``q(obs batch) -> (n, n_actions)`` of the model at ``path``: rows of a Q-table
    (``.npy``, integer observations) or a Q-network's outputs (``.pt``)."""
    path = Path(path)
    if path.suffix == ".npy":
        table = np.load(path)

        def tabular(obs: np.ndarray) -> np.ndarray:
            return table[np.asarray(obs, dtype=np.int64).reshape(-1)]

        return tabular
    import torch

    net = q_network(path, obs_dim, n_actions, hidden_sizes, dueling)

    def network(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(len(obs), -1))
            return net(x).numpy()

    return network
