"""Replay buffers for the DQN agent: uniform, proportional prioritized, and latest-only.

All share one interface (``add``/``sample``/``update_priorities``/``set_progress``) and
return :class:`ReplaySamples`, so the agent never branches on the buffer type.
"""

from sweeper.buffers.latest import LatestTransitionBuffer
from sweeper.buffers.prioritized import PrioritizedReplayBuffer
from sweeper.buffers.sum_tree import SumTree
from sweeper.buffers.uniform import ReplaySamples, UniformReplayBuffer

__all__ = [
    "LatestTransitionBuffer",
    "PrioritizedReplayBuffer",
    "ReplaySamples",
    "SumTree",
    "UniformReplayBuffer",
]
