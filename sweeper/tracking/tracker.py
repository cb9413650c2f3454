"""The MLflow tracking callback: one MLflow run per training run (single run or trial).

What a run gets:

* params: the flattened resolved semantic config (``agent.lr``, ``env.kwargs.slip``, ...);
* metrics, step = episode: ``return``, ``length``, ``epsilon``, ``loss``, ``max_q`` per
  episode; ``eval_return_mean``, ``eval_return_std`` and ``env_steps`` per evaluation;
  ``objective`` (and the same value under its name, e.g. ``final_eval_mean``) at the end.
  Non-finite values (no loss before learning starts) are not logged;
* tags: ``config_hash`` (+ ``config_hash_short``), ``study_name``/``trial_number`` for sweeper
  trials, ``sweep_dir``/``hydra_job_num`` in multirun, ``git_commit`` (+ ``git_dirty``) when
  the code is in a git checkout, ``seed``, ``agent``, ``env``, ``buffer``, ``overrides``,
  ``output_dir``, ``outcome`` and MLflow's ``mlflow.parentRunId`` under a study's parent;
* artifacts: every file the run left in its output dir (config.yaml, episodes.csv,
  evals.csv, result.json, learning_curve.png, model.pt or q_table.npy) and Hydra's
  ``.hydra/{config,overrides,hydra}.yaml`` under ``hydra/``;
* status: FINISHED, FAILED or KILLED. MLflow has no PRUNED status: a pruned trial ends
  KILLED with tag ``outcome=pruned`` (``outcome`` is finished | failed | pruned | killed |
  reused).

Cheap: an episode appends five numbers to a list. Metrics go out with ``log_batch`` (at most
1000 per call) at each evaluation and at the end, never per episode or per step.
"""

from __future__ import annotations

import getpass
import math
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sweeper.callbacks import Callback
from sweeper.config_hash import SHORT, config_hash, flatten, semantic_config
from sweeper.tracking import store

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 5000
OUTCOMES = {"FINISHED": "finished", "FAILED": "failed", "PRUNED": "pruned", "KILLED": "killed"}
MLFLOW_STATUS = {"FINISHED": "FINISHED", "FAILED": "FAILED", "PRUNED": "KILLED",
                 "KILLED": "KILLED"}


def git_info(path: Path | None = None) -> dict[str, str]:
    """``git_commit``/``git_dirty`` of the checkout holding the sweeper code, if any."""
    where = str(path or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True,
            timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    if not commit:
        return {}
    return {"git_commit": commit, "mlflow.source.git.commit": commit,
            "git_dirty": str(bool(dirty)).lower()}


def hydra_info() -> dict[str, str]:
    """Sweep dir, job number and overrides when running under Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return {}
        hc = HydraConfig.get()
        tags = {"overrides": " ".join(hc.overrides.task)}
        if hc.mode == RunMode.MULTIRUN:
            tags["sweep_dir"] = str(Path(hc.sweep.dir).resolve())
            if hc.job.get("num") is not None:
                tags["hydra_job_num"] = str(hc.job.num)
        return tags
    except Exception:  # noqa: BLE001 - tags are best effort
        return {}


def experiment_name(cfg) -> str:
    """``tracking.experiment``, else the study name, else ``<agent>_<env>``."""
    if cfg.tracking.get("experiment"):
        return str(cfg.tracking.experiment)
    if cfg.trial.get("study_name"):
        return str(cfg.trial.study_name)
    return f"{cfg.agent.name}_{cfg.env.name}"


def run_name(cfg) -> str:
    if cfg.trial.get("number") is not None:
        return f"trial-{cfg.trial.number}"
    return f"{cfg.agent.name}_{cfg.env.name}_seed{cfg.seed}"


def run_tags(cfg, output_dir: Path | None, digest: str) -> dict[str, str]:
    tags = {
        "config_hash": digest,
        "config_hash_short": digest[:SHORT],
        "seed": str(cfg.seed),
        "agent": str(cfg.agent.name),
        "env": str(cfg.env.name),
        "buffer": str(cfg.buffer.name),
        "objective_name": str(cfg.eval.objective),
        "mlflow.runName": run_name(cfg),
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": "sweeper.train",
    }
    with _quiet():
        tags["mlflow.user"] = getpass.getuser()
    if output_dir is not None:
        tags["output_dir"] = str(Path(output_dir).resolve())
    trial = cfg.trial
    if trial.get("study_name"):
        tags["study_name"] = str(trial.study_name)
    if trial.get("number") is not None:
        tags["trial_number"] = str(trial.number)
    if trial.get("parent_run_id"):
        tags["mlflow.parentRunId"] = str(trial.parent_run_id)
    tags.update(hydra_info())
    tags.update(git_info())
    return {k: v[:MAX_TAG_LENGTH] for k, v in tags.items()}


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return exc[0] is not None and issubclass(exc[0], Exception)


def _param_value(value: Any) -> str:
    return ("None" if value is None else str(value))[:MAX_PARAM_LENGTH]


class MlflowTracker(Callback):
    """Logs one training run to MLflow; see the module docstring for what it logs."""

    def __init__(self, cfg, output_dir: Path | str | None, *,
                 extra_tags: Mapping[str, str] | None = None, experiment_id: str | None = None,
                 log_artifacts: bool = True) -> None:
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.config_hash = config_hash(cfg)
        self.client = store.client(cfg.tracking.get("tracking_uri"))
        self.tracking_uri = self.client.tracking_uri
        self.objective_name = str(cfg.eval.objective)
        self._log_artifacts = log_artifacts
        parent = cfg.trial.get("parent_run_id")
        if experiment_id is not None:
            self.experiment_id = experiment_id
        elif parent:  # nest beside the parent, whatever the experiment name says
            self.experiment_id = store.retry(self.client.get_run, parent).info.experiment_id
        else:
            self.experiment_id = store.get_or_create_experiment(self.client, experiment_name(cfg))
        tags = run_tags(cfg, self.output_dir, self.config_hash)
        tags.update(extra_tags or {})
        run = store.retry(self.client.create_run, self.experiment_id, tags=tags)
        self.run_id: str = run.info.run_id
        self.artifact_uri: str = run.info.artifact_uri
        self._pending: list[tuple[str, float, int, int]] = []
        self._episode = 0
        self.status: str | None = None  # the training status once on_train_end ran
        self.closed = False
        self._log_params(flatten(semantic_config(cfg)))

    # -- logging ----------------------------------------------------------------------------
    def _log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k[:250], _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            store.retry(self.client.log_batch, self.run_id, params=items[i:i + MAX_PARAMS_PER_BATCH])

    def _add(self, metrics: Mapping[str, float], step: int) -> None:
        ts = int(time.time() * 1000)
        for key, value in metrics.items():
            value = float(value)
            if math.isfinite(value):
                self._pending.append((key, value, ts, step))

    def flush(self) -> None:
        """Send the buffered metrics, at most 1000 per log_batch call."""
        if not self._pending:
            return
        from mlflow.entities import Metric

        pending, self._pending = self._pending, []
        metrics = [Metric(k, v, ts, step) for k, v, ts, step in pending]
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            store.retry(self.client.log_batch, self.run_id,
                        metrics=metrics[i:i + MAX_METRICS_PER_BATCH])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:MAX_TAG_LENGTH]) for k, v in tags.items()]
        for i in range(0, len(items), 100):
            store.retry(self.client.log_batch, self.run_id, tags=items[i:i + 100])

    def log_output_files(self) -> None:
        """Every file of the output dir; ``.hydra/`` goes to ``hydra/``."""
        if not self._log_artifacts or self.output_dir is None or not self.output_dir.is_dir():
            return
        for path in sorted(self.output_dir.iterdir()):
            if path.name == ".hydra" and path.is_dir():
                store.retry(self.client.log_artifacts, self.run_id, str(path), "hydra")
            elif path.is_dir():
                store.retry(self.client.log_artifacts, self.run_id, str(path), path.name)
            elif path.is_file():
                store.retry(self.client.log_artifact, self.run_id, str(path))

    def terminate(self, status: str) -> None:
        store.retry(self.client.set_terminated, self.run_id, MLFLOW_STATUS.get(status, status))

    # -- the callback -----------------------------------------------------------------------
    def on_episode_end(self, episode: int, step: int, metrics) -> None:
        self._episode = episode
        ts = int(time.time() * 1000)
        append = self._pending.append
        for key, value in metrics.items():
            if value == value and value not in (math.inf, -math.inf):  # finite, fast
                append((key, float(value), ts, episode))

    def on_eval(self, index: int, episode: int, step: int, metrics) -> None:
        self._add({**metrics, "env_steps": step}, episode)
        self.flush()

    def on_train_end(self, objective: float, status: str) -> None:
        self.status = status
        self._add({"objective": objective, self.objective_name: objective}, self._episode)
        try:
            self.flush()
            self.set_tags({"outcome": OUTCOMES.get(status, status.lower())})
            self.log_output_files()
        finally:
            self.terminate(status)

    def close(self, error: BaseException | None = None) -> None:
        """After ``run`` returned or raised: finish what on_train_end could not.

        On failure ``run`` writes the model, plot and result.json after on_train_end, so
        they are logged here. A run that raised before training started (the env or agent
        could not be built) ends FAILED; one that raised a config error is deleted (it never
        ran, and the message is on stderr).
        """
        if self.closed:
            return
        self.closed = True
        from sweeper.config import ConfigError

        try:
            if self.status is None:
                if isinstance(error, ConfigError):
                    store.retry(self.client.delete_run, self.run_id)
                    return
                self.flush()
                status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
                self.set_tags({"outcome": OUTCOMES[status], **_error_tag(error)})
                self.log_output_files()
                self.terminate(status)
            elif self.status != "FINISHED":
                self.set_tags(_error_tag(error))
                self.log_output_files()
        except Exception as err:  # noqa: BLE001 - never hide the run's own error
            print(f"sweeper: tracking: could not finish run {self.run_id}: {err}",
                  file=sys.stderr)


def _error_tag(error: BaseException | None) -> dict[str, str]:
    if error is None:
        return {}
    return {"error": f"{type(error).__name__}: {error}"}


def tracking_callback(cfg, output_dir: Path | str) -> MlflowTracker:
    """The callback ``sweeper.train.integrations`` adds when ``tracking.enabled``."""
    return MlflowTracker(cfg, output_dir)


def reuse_existing(cfg, output_dir: Path | str) -> float | None:
    """``tracking.skip_existing``: if a FINISHED run of the same config hash exists, log a
    short run tagged ``reused_from`` with its objective (status FINISHED, ``outcome=reused``),
    write result.json, and return that objective; else None (train as usual)."""
    import json

    digest = config_hash(cfg)
    client = store.client(cfg.tracking.get("tracking_uri"))
    runs = store.search_all_runs(
        client,
        f"tags.config_hash = '{digest}' and tags.outcome = 'finished' "
        "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=20,
    )
    runs = [r for r in runs if "objective" in r.data.metrics]
    if not runs:
        return None
    source = runs[0]
    objective = float(source.data.metrics["objective"])
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    result = {"objective": objective, "objective_name": str(cfg.eval.objective),
              "status": "FINISHED", "reused_from": source.info.run_id,
              "config_hash": digest}
    (output_dir / "result.json").write_text(json.dumps(result, indent=2))
    tracker = MlflowTracker(cfg, output_dir, extra_tags={"reused_from": source.info.run_id})
    tracker._add({"objective": objective, tracker.objective_name: objective}, 0)
    tracker.flush()
    tracker.set_tags({"outcome": "reused"})
    tracker.log_output_files()
    tracker.terminate("FINISHED")
    tracker.closed = True
    print(f"sweeper: config {digest[:SHORT]} already ran (run {source.info.run_id}, "
          f"objective {objective:g}): reusing its result", file=sys.stderr)
    return objective


os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
