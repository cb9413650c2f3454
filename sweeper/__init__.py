"""sweeper: Hydra-driven hyperparameter sweeps for value-based reinforcement learning."""

__version__ = "0.1.0"
