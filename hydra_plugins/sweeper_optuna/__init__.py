"""Hydra plugin ``hydra/sweeper=sweeper_optuna`` (the logic lives in ``sweeper.sweeps``)."""
