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
  reused; a run whose process died is ended by others with interrupted | stale |
  worker died | store full: ``sweeper.tracking.run_ends``).

Cheap: an episode appends five numbers to a list. Metrics go out in batches at each
evaluation and at the end, never per episode or per step, to a logging child process
(``sweeper.tracking.worker``), so the training process does not even import mlflow. The child
calls MLflow's public client only (``create_run``, ``log_batch`` within MLflow's batch limits,
``log_artifacts``, ``set_terminated``). ``tests/benchmarks/tracking_overhead.py`` measures the
cost per trial.

Tracking never fails or holds up training. A single run checks its tracking URI before
anything is written (``sweeper.tracking.preflight``: a bad scheme, an unreachable server or
an unwritable store is a config error, exit 2; a sweep checks once when planning). A store
that fails later (a server that dies mid-run) stops that run's logging within seconds, with
one line on stderr, and the run's own result stands: a FINISHED run stays FINISHED (exit 0,
result.json; a trial stays COMPLETE). Why: the run's files are the record of what trained,
MLflow a copy of it; failing a finished run would throw away its result (and, in a sweep, tell
Optuna the configuration failed) because of an outage of the copy. The MLflow run is then
incomplete (metrics or artifacts missing; RUNNING when the server never came back).
"""

from __future__ import annotations

import functools
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
from sweeper.tracking.limits import MAX_KEY, MAX_PARAM, MAX_TAG
from sweeper.tracking.run_ends import OWNER_ENV, OWNER_TAG, why

OUTCOMES = {"FINISHED": "finished", "FAILED": "failed", "PRUNED": "pruned", "KILLED": "killed"}
SYNC_BATCH = 1000  # metrics a run logging in-process keeps before one log_batch (MLflow's max)
MLFLOW_STATUS = {"FINISHED": "FINISHED", "FAILED": "FAILED", "PRUNED": "KILLED", "KILLED": "KILLED"}


def git_info(path: Path | None = None) -> dict[str, str]:
    """``git_commit``/``git_dirty`` of the checkout holding the sweeper code, if any."""
    return dict(_git_info(path))


@functools.lru_cache(maxsize=8)
def _git_info(path: Path | None) -> dict[str, str]:
    """Once per process: two git subprocesses forked from a process holding torch cost tens
    of ms, paid per trial otherwise; the code a process runs does not change under it."""
    where = str(path or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "-C", where, "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    if not commit:
        return {}
    return {
        "git_commit": commit,
        "mlflow.source.git.commit": commit,
        "git_dirty": str(bool(dirty)).lower(),
    }


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
    if cfg.trial.get("test_of") is not None:
        return f"test-of-trial-{cfg.trial.test_of}/seed-{cfg.seed}"
    if cfg.trial.get("seeds"):
        return f"{cfg.agent.name}_{cfg.env.name}_{len(cfg.trial.seeds)}seeds"
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
    if trial.get("seeds"):
        tags["seeds"] = ",".join(str(s) for s in trial.seeds)
        tags["aggregate"] = str(trial.aggregate)
        del tags["seed"]
    if trial.get("phase"):
        tags["phase"] = str(trial.phase)
    if trial.get("test_of") is not None:
        tags["test_of_trial"] = str(trial.test_of)
    if os.environ.get(OWNER_ENV) and trial.get("study_name"):
        tags[OWNER_TAG] = os.environ[OWNER_ENV]  # whose run it is (sweeper.tracking.run_ends)
    tags.update(hydra_info())
    tags.update(git_info())
    return {k: v[:MAX_TAG] for k, v in tags.items()}


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return exc[0] is not None and issubclass(exc[0], Exception)


def _param_value(value: Any) -> str:
    return ("None" if value is None else str(value))[:MAX_PARAM]


class MlflowTracker(Callback):
    """Logs one training run to MLflow; see the module docstring for what it logs.

    The MLflow calls run in a logging child process (``sweeper.tracking.worker``, the
    default, ``mode="process"``): importing mlflow and opening the store (~2.5 s of CPU) and
    each evaluation's ``log_batch`` never hold up the training loop. ``mode="sync"`` makes
    the calls in this process: for a local store only (a packed sweep's many runs share the
    sweeper's process, ``sweeper.sweeps.packing``; a child per run would be a hundred
    processes), since nothing there can hang on a network. The child is joined at
    ``on_train_end`` (or ``close``); an MLflow error is printed once on stderr (by the child
    when it hit it, else here) and kept in :attr:`tracking_error`, never raised: see the
    module docstring.
    """

    def __init__(
        self,
        cfg,
        output_dir: Path | str | None,
        *,
        extra_tags: Mapping[str, str] | None = None,
        experiment_id: str | None = None,
        log_artifacts: bool = True,
        mode: str = "process",
    ) -> None:
        from sweeper.tracking.worker import Executor, ProcessExecutor

        self.output_dir = Path(output_dir) if output_dir is not None else None
        semantic = semantic_config(cfg)  # resolved once: the hash and the params share it
        self.config_hash = config_hash(semantic)
        self.objective_name = str(cfg.eval.objective)
        self._log_artifacts = log_artifacts
        # a group's replicates log their own folders to their own runs: never twice
        seeds = cfg.trial.get("seeds") or []
        self._skip = [f"seed_{s}" for s in seeds]
        tags = run_tags(cfg, self.output_dir, self.config_hash)
        tags.update(extra_tags or {})
        spec = {
            "uri": store.resolve_tracking_uri(cfg.tracking.get("tracking_uri")),
            "parent": cfg.trial.get("parent_run_id"),
            "experiment_id": experiment_id,
            "experiment_name": experiment_name(cfg),
            "tags": tags,
            "params": {k[:MAX_KEY]: _param_value(v) for k, v in flatten(semantic).items()},
        }
        self._pending: list[tuple[str, float, int, int]] = []
        self._episode = 0
        self._every = max(1, int(cfg.tracking.get("episode_metrics_every", 1) or 1))
        self._unlogged: tuple[int, Mapping[str, float]] | None = None  # the last episode's
        self.status: str | None = None  # the training status once on_train_end ran
        self.closed = False
        self._ended = False
        self._error: str | None = None
        self._info: dict[str, Any] | None = None
        self._uri = spec["uri"]
        self.mode = mode
        self.tracking_error: str | None = None  # why this run's MLflow record is incomplete
        if mode == "process":
            self._proc = ProcessExecutor.acquire()
            self._exec = None
            self._proc.send("start", spec=spec)
        elif mode == "sync":
            self._proc = None
            self._exec = Executor()
            self._info = {}
            self._sync("start", spec=spec)
        else:
            raise ValueError(f"MlflowTracker mode must be process or sync, got {mode!r}")

    # -- plumbing ---------------------------------------------------------------------------
    def _do(self, op: str, **kw: Any) -> None:
        if self._ended:
            raise RuntimeError(f"MLflow tracking: op {op!r} after the end")
        if self._proc is not None:
            self._proc.send(op, **kw)
        else:
            self._sync(op, **kw)

    def _sync(self, op: str, **kw: Any) -> None:
        """One op in this process; after a failure none more (as the logging child does)."""
        if self._error is not None:
            return
        try:
            answer = self._exec.apply(op, **kw)
        except Exception as err:  # noqa: BLE001 - tracking never fails training
            from sweeper.secrets import mask_text
            from sweeper.tracking.worker import failure_line, say_failure

            self._error = mask_text(f"{type(err).__name__}: {err}")
            say_failure(failure_line(self._uri, self._error))
            return
        if op == "start":
            self._info = answer or {}

    def _started(self) -> dict[str, Any]:
        """The run's ids (waits for the logging process to have created the run)."""
        if self._info is None:
            answer = self._proc.reply()
            if answer.get("error"):
                self._error = answer["error"]
                self._info = {}
            else:
                self._info = answer
        return self._info

    def _join(self) -> None:
        """Wait until every op is done (bounded: the logging child is killed when it makes
        no progress, see ``worker.stall_limit``). A failure is said once, never raised."""
        if self._ended:
            return
        self._ended = True
        if self._proc is None:
            self.tracking_error = self._error  # already said, in _sync
            return
        self._started()
        answer = self._proc.end()
        error = answer.get("error") or self._error
        if error is None:
            return
        self.tracking_error = error
        if not answer.get("reported"):  # the child did not get to say it (gone, stalled)
            from sweeper.tracking.preflight import mask

            print(
                f"sweeper: tracking: {mask(self._uri)}: {error}: MLflow logging stopped for "
                "this run; training continues",
                file=sys.stderr,
                flush=True,
            )

    @property
    def run_id(self) -> str:
        info = self._started()
        if not info.get("run_id"):
            raise RuntimeError(f"MLflow tracking: the run was not created ({self._error})")
        return info["run_id"]

    @property
    def tracking_uri(self) -> str | None:
        return self._started().get("tracking_uri")

    # -- logging ----------------------------------------------------------------------------
    def _add(self, metrics: Mapping[str, float], step: int) -> None:
        ts = int(time.time() * 1000)
        for key, value in metrics.items():
            value = float(value)
            if math.isfinite(value):
                self._pending.append((key, value, ts, step))

    def flush(self) -> None:
        """Send the buffered metrics (the logger sends at most 1000 per log_batch call)."""
        if self._pending:
            pending, self._pending = self._pending, []
            self._do("metrics", items=pending)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._do("tags", tags={k: str(v)[:MAX_TAG] for k, v in tags.items()})

    def log_output_files(self) -> None:
        """Every file of the output dir; ``.hydra/`` goes to ``hydra/``."""
        if self._log_artifacts and self.output_dir is not None:
            self._do("artifacts", directory=str(self.output_dir.resolve()), skip=self._skip)

    def terminate(self, status: str) -> None:
        self._do("terminate", status=MLFLOW_STATUS.get(status, status))

    # -- the callback -----------------------------------------------------------------------
    def on_episode_end(self, episode: int, step: int, metrics) -> None:
        self._episode = episode
        if episode % self._every:  # tracking.episode_metrics_every; the last one at the end
            self._unlogged = (episode, dict(metrics))
            return
        self._unlogged = None
        self._episode_row(episode, metrics)

    def _episode_row(self, episode: int, metrics: Mapping[str, float]) -> None:
        ts = int(time.time() * 1000)
        append = self._pending.append
        for key, value in metrics.items():
            if value == value and value not in (math.inf, -math.inf):  # finite, fast
                append((key, float(value), ts, episode))

    def on_eval(self, index: int, episode: int, step: int, metrics) -> None:
        self._add({**metrics, "env_steps": step}, episode)
        # the logging child sends them while training goes on (the run's curve grows live in
        # the UI); in this process (mode="sync": a packed population's runs) a store call
        # holds up every member, so they wait for the end or a full batch
        if self._proc is not None or len(self._pending) >= SYNC_BATCH:
            self.flush()

    def on_result(self, result: Mapping[str, Any]) -> None:
        """A group's aggregate with n and CI (``objective_iqm``, ``objective_ci_low``, ...)
        and per-metric aggregates, as metrics of the group's run."""
        numbers = {
            k: v
            for k, v in result.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "objective"
        }
        self._add(numbers, self._episode)

    def on_train_end(self, objective: float, status: str) -> None:
        self._end(objective, status, OUTCOMES.get(status, status.lower()))

    def reused(self, objective: float) -> None:
        """End this run as one that did not train (``tracking.skip_existing``): the finished
        run's objective, ``outcome=reused``, the output files, FINISHED; nothing is left
        for :meth:`close`."""
        self._end(objective, "FINISHED", "reused")
        self.closed = True

    def _end(self, objective: float, status: str, outcome: str) -> None:
        self.status = status
        if self._unlogged is not None:  # the run's last episode is always in MLflow
            self._episode_row(*self._unlogged)
            self._unlogged = None
        self._add({"objective": objective, self.objective_name: objective}, self._episode)
        self.flush()
        self.set_tags({"outcome": outcome})
        self.log_output_files()
        self.terminate(status)
        if status == "FINISHED":
            # The run is complete in MLflow when this returns (a sweep's parent run reads it);
            # a tracking failure is reported, not raised: the finished run's result stands.
            self._join()
        # else: run() writes result.json, the model and the plot next; close() logs them

    def close(self, error: BaseException | None = None) -> None:
        """After ``run`` returned or raised: finish what on_train_end could not.

        On failure ``run`` writes the model, plot and result.json after on_train_end, so
        they are logged here. A run that raised before training started (the env or agent
        could not be built) ends FAILED; one that raised a config error is deleted (it never
        ran, and the message is on stderr). Tracking errors are printed, never raised.
        """
        if self.closed:
            return
        self.closed = True
        from sweeper.config import ConfigError

        try:
            if not self._ended:
                if self.status is None and isinstance(error, ConfigError):
                    self._do("delete")
                elif self.status is None:
                    self.flush()
                    status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
                    tags = _error_tag(error)
                    outcome = why(tags.get("error")) or OUTCOMES[status]  # e.g. "store full"
                    self.set_tags({"outcome": outcome, **tags})
                    self.log_output_files()
                    self.terminate(status)
                elif self.status != "FINISHED":
                    self.set_tags(_error_tag(error))
                    self.log_output_files()
            self._join()
        except Exception as err:  # noqa: BLE001 - never hide the run's own error
            print(f"sweeper: tracking: could not finish the MLflow run: {err}", file=sys.stderr)


def _error_tag(error: BaseException | None) -> dict[str, str]:
    if error is None:
        return {}
    from sweeper.secrets import mask_text

    return {"error": mask_text(f"{type(error).__name__}: {error}")}


def tracking_callback(cfg, output_dir: Path | str, mode: str = "process") -> MlflowTracker:
    """The callback ``sweeper.train.integrations`` adds when ``tracking.enabled``.

    Outside a sweep the tracking URI is checked first (:func:`check_uri`, ConfigError), before
    the logging child starts and anything is written. A sweep's trials and re-test runs skip
    it: the sweeper checked the URI when planning, and a server lost since then must not fail
    them (they train untracked, said once: ``worker.say_failure``).
    """
    if cfg.trial.get("number") is None and not cfg.trial.get("study_name"):
        check_uri(cfg)
    return MlflowTracker(cfg, output_dir, mode=mode)


def replicate_tracker(cfg, output_dir: Path | str, group: MlflowTracker) -> MlflowTracker | None:
    """The MLflow run of one replicate (``cfg``: its seed's config), nested under the
    group's run ``<group>/seed-<s>``; None when the group's run could not be created."""
    from omegaconf import open_dict, read_write

    try:
        parent = group.run_id
    except RuntimeError:
        return None
    one = cfg.copy()
    with read_write(one), open_dict(one):
        one.trial.parent_run_id = parent
    name = f"{run_name(cfg)}/seed-{cfg.seed}"
    return MlflowTracker(
        one,
        output_dir,
        extra_tags={"mlflow.runName": name, "replicate": "true"},
        mode=group.mode,
    )


def check_uri(cfg, timeout: float = 5.0) -> None:
    """ConfigError (one line naming the URI) unless the run's tracking URI is usable."""
    from sweeper.config import ConfigError
    from sweeper.tracking.preflight import TrackingUriError, check_tracking_uri

    configured = cfg.tracking.get("tracking_uri")
    from_env = not configured and bool(os.environ.get("MLFLOW_TRACKING_URI"))
    key = "MLFLOW_TRACKING_URI" if from_env else "tracking.tracking_uri"
    try:
        check_tracking_uri(store.resolve_tracking_uri(configured), timeout, key=key)
    except TrackingUriError as err:
        raise ConfigError(str(err)) from None


def reuse_existing(cfg, output_dir: Path | str) -> float | None:
    """``tracking.skip_existing``: if a FINISHED run of the same config hash exists, log a
    short run tagged ``reused_from`` with its objective (status FINISHED, ``outcome=reused``),
    write result.json, and return that objective; else None (train as usual)."""
    import json

    if cfg.trial.get("number") is None:
        check_uri(cfg)  # before MlflowClient retries a dead server for minutes
    digest = config_hash(cfg)
    client = store.client(cfg.tracking.get("tracking_uri"))
    runs = store.search_all_runs(
        client,
        f"tags.config_hash = '{digest}' and tags.outcome = 'finished' "
        "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=20,
    )
    runs = [r for r in runs if "objective" in r.data.metrics]
    if not runs:
        return None
    source = runs[0]
    objective = float(source.data.metrics["objective"])
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "objective": objective,
        "objective_name": str(cfg.eval.objective),
        "status": "FINISHED",
        "reused_from": source.info.run_id,
        "config_hash": digest,
    }
    (output_dir / "result.json").write_text(json.dumps(result, indent=2))
    tracker = MlflowTracker(
        cfg, output_dir, extra_tags={"reused_from": source.info.run_id}, mode="sync"
    )
    tracker.reused(objective)
    print(
        f"sweeper: config {digest[:SHORT]} already ran (run {source.info.run_id}, "
        f"objective {objective:g}): reusing its result",
        file=sys.stderr,
    )
    return objective


os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
