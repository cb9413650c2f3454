"""The trial side: a training callback that reports evaluations to the Optuna trial and prunes.

The sweeper injects ``trial.study_name``, ``trial.storage`` and ``trial.number`` overrides into
every job; this works the same in the sweeper's own process (basic launcher) and in worker
processes (joblib), since the trial is rebuilt from the storage with public API
(``optuna.load_study`` + ``optuna.trial.Trial``). The pruner is rebuilt from the description the
sweeper stored in the study's user attrs (``sweeper:pruner``).

Intermediate values are reported with ``step = episode`` (training episodes so far), so pruners
compare trials at equal training progress.
"""

from __future__ import annotations

import math
from typing import Any

import optuna

from sweeper import study_attrs
from sweeper.callbacks import Callback, Metrics
from sweeper.sweeps.factories import make_pruner
from sweeper.sweeps.storage import open_storage

PRUNER_ATTR = study_attrs.PRUNER
REPORT_KEY = "eval_return_mean"


def load_trial(study_name: str, storage_spec: str, number: int) -> optuna.trial.Trial:
    """The running trial ``number`` of a stored study, with the study's pruner."""
    storage = open_storage(storage_spec)
    pruner_desc = storage.get_study_user_attrs(storage.get_study_id_from_name(study_name)).get(
        PRUNER_ATTR
    )
    study = optuna.load_study(
        study_name=study_name,
        storage=storage,
        sampler=optuna.samplers.RandomSampler(),  # a trial never samples: params come as overrides
        pruner=make_pruner(pruner_desc),
    )
    study_id = storage.get_study_id_from_name(study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    return optuna.trial.Trial(study, trial_id)


class PruningCallback(Callback):
    """Reports ``eval_return_mean`` at each evaluation; raises ``optuna.TrialPruned`` when the
    study's pruner says so (``train.run`` then ends the run with status PRUNED)."""

    def __init__(self, trial: optuna.trial.Trial, key: str = REPORT_KEY) -> None:
        self.trial = trial
        self.key = key

    def on_eval(self, index: int, episode: int, step: int, metrics: Metrics) -> None:
        value = float(metrics[self.key])
        if not math.isfinite(value):
            return
        self.trial.report(value, step=episode)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at episode {episode} ({self.key}={value:.4g})")


def pruning_callback(trial_cfg: Any) -> PruningCallback:
    """The callback for the ``trial`` config node (``sweeper.config.TrialConfig``)."""
    trial = load_trial(trial_cfg.study_name, trial_cfg.storage, int(trial_cfg.number))
    return PruningCallback(trial)
