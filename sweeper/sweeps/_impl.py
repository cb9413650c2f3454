"""The Optuna sweeper: ask/tell over Hydra launchers, N slots with no batch barrier.

Flow of ``sweep(arguments)``:

1. **Plan** (:mod:`sweeper.sweeps.plan`; nothing runs yet, any problem exits with a one-line
   message naming the parameter).
2. **Slots**: ``n_jobs`` threads, each looping *ask -> launch one job -> tell* through the
   trial ledger (:mod:`sweeper.sweeps.ledger`: counting, stale trials, failures; liveness in
   :mod:`sweeper.sweeps.liveness`). A slot that finishes starts the next trial at once (no batch
   barrier). The basic launcher mutates process-global state (``HydraConfig``, logging, cwd), so
   with it the sweep runs one slot in the main thread; process launchers (isolated, joblib) run
   slots concurrently. With ``population=K`` each slot trains a population of up to K trials
   instead of one job (``sweeper.sweeps.packing``; in this process with one slot, else one
   worker process per slot: ``sweeper.sweeps.packed_workers``, which needs
   ``hydra/launcher=isolated``).
3. **Re-test** the best configs on fresh seeds (``sweeper.sweeps.retest``).
4. **Results**: summary table, ``optimization_results.yaml``, study hooks
   (``sweeper.sweeps.results``).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from sweeper import study_attrs
from sweeper.messages import one_line
from sweeper.overrides import format_value
from sweeper.pruning import PrunerError
from sweeper.seeding import replicate_seeds
from sweeper.study_storage import StorageError, redact
from sweeper.sweeps import remote, stops, sweep_log, workers
from sweeper.sweeps import results as results_mod
from sweeper.sweeps.errors import SweepError, error_text, root_cause
from sweeper.sweeps.factories import FactoryError
from sweeper.sweeps.hooks import HookError, StudyInfo
from sweeper.sweeps.ledger import TrialLedger
from sweeper.sweeps.outcome import GuardedTask, Outcome, outcome_of
from sweeper.sweeps.plan import DEFAULT_VALIDATOR, Plan, launcher_kind, make_plan
from sweeper.sweeps.progress import SweepProgress
from sweeper.sweeps.search_space import SearchSpaceError

log = logging.getLogger("sweeper.sweeps")

OUTPUT_DIR = study_attrs.OUTPUT_DIR
OVERRIDES = study_attrs.OVERRIDES


class OptunaSweeperImpl(Sweeper):
    def __init__(
        self,
        direction: str = "maximize",
        study_name: str | None = None,
        storage: str | None = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        max_failures: int | None = None,
        sampler: Any = None,
        pruner: Any = None,
        params: Any = None,
        heartbeat_interval: float = 5.0,
        grace_period: float = 60.0,
        progress: bool = True,
        study_hooks: Sequence[str] = (),
        summary: Any = None,
        validator: str | None = DEFAULT_VALIDATOR,
        seeds: int = 1,
        aggregate: str = "iqm",
        retest: Any = None,
        population: int = 1,
    ) -> None:
        self.direction = str(direction).lower()
        self.population = population
        self.seeds = seeds
        self.aggregate = str(aggregate)
        self.retest_cfg = {"enabled": True, "top_k": 3, "seeds": 10, **(_plain(retest) or {})}
        self.study_name = study_name
        self.storage_spec = storage
        self.n_trials = int(n_trials)
        self.n_jobs = int(n_jobs)
        self.max_failures = max_failures
        self.sampler_cfg = _plain(sampler) or {}
        self.pruner_cfg = _plain(pruner) or {}
        self.params = _plain(params) or {}
        self.heartbeat_interval = float(heartbeat_interval)
        self.grace_period = float(grace_period)
        self.progress_enabled = bool(progress)
        self.study_hooks = list(study_hooks or ())
        self.summary_cfg = _plain(summary) or {}
        self.validator_path = validator
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher = None
        self.ledger: TrialLedger | None = None  # this run's trials, made by _run

    # -- Hydra API -------------------------------------------------------------------------
    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from sweeper.secrets import mask_config

        # Before the launcher writes multirun.yaml or a job's .hydra/ files: a password in the
        # storage or tracking URL is masked (the real URL stays in this process's environment;
        # idempotent where the app's MaskSecrets callback already did it).
        mask_config(config, as_overrides=True)
        self.config = config
        self.hydra_context = hydra_context
        self.task = GuardedTask(task_function)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=self.task, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        try:
            plan = make_plan(self, arguments)
        except (
            SearchSpaceError,
            StorageError,
            FactoryError,
            PrunerError,
            HookError,
            SweepError,
        ) as err:
            raise SystemExit(f"sweeper: {one_line(err, 2000)}") from None
        try:
            return self._run(plan)
        except KeyboardInterrupt:
            self._interrupted(plan)
            raise  # (never reached: _interrupted exits)

    def _interrupted(self, plan: Plan) -> None:
        stops.interrupted(plan, self.ledger, self._close_launcher)

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        """A job's config (with its ``hydra`` node) as the launcher composes it."""
        assert self.hydra_context is not None and self.config is not None
        return self.hydra_context.config_loader.load_sweep_config(
            master_config=self.config, sweep_overrides=list(overrides)
        )

    # -- running -------------------------------------------------------------------------------
    def _slots(self) -> int:
        kind = launcher_kind(self.launcher)
        if self.n_jobs > 1 and kind == "basic":
            log.warning(
                "hydra.sweeper.n_jobs=%d with the basic launcher: it runs jobs in this process "
                "and changes process-global state, so trials (or populations) run one at a "
                "time; use hydra/launcher=isolated for parallel slots",
                self.n_jobs,
            )
            return 1
        if self.n_jobs > 1 and kind == "joblib":
            log.warning(
                "hydra/launcher=joblib: if one of loky's worker processes dies, loky fails every "
                "trial in flight; hydra/launcher=isolated fails only the trial that died"
            )
        launcher_jobs = OmegaConf.select(self.config, "hydra.launcher.n_jobs")
        if self.population > 1:  # packed slots own their workers, not the launcher's
            return self.n_jobs
        if isinstance(launcher_jobs, int) and 0 < launcher_jobs < self.n_jobs:
            log.warning(
                "hydra.launcher.n_jobs=%d < hydra.sweeper.n_jobs=%d: slots will wait for workers",
                launcher_jobs,
                self.n_jobs,
            )
        return self.n_jobs

    def _run(self, plan: Plan) -> dict[str, Any]:
        study = plan.study
        ledger = self.ledger = TrialLedger(
            plan,
            max_failures=self.max_failures,
            grace_period=self.grace_period,
            heartbeat_interval=self.heartbeat_interval,
        )
        info = StudyInfo(
            study_name=study.study_name,
            storage=redact(plan.storage_spec),
            direction=self.direction,
            n_trials=plan.n_trials,
            search_space=plan.space.describe(),
            fixed_overrides=list(plan.space.fixed),
            sweep_dir=str(plan.sweep_dir),
            task_config=plan.base_cfg,
        )
        hooks = plan.hooks
        plan.info = info
        sweep_log.install(plan.sweep_dir)  # tracebacks to <sweep dir>/sweep.log, not the console
        for hook in hooks:  # before the first trial process starts
            workers.preload(getattr(hook, "preload", ()))
        kind = remote.remote_kind(self.launcher)
        if kind is not None:
            remote.prepare(kind, self.launcher, self.config, plan.sweep_dir, self.task)
        parent_run_id = None
        for hook in hooks:
            try:
                rid = hook.on_study_start(info)
            except Exception as err:
                raise SystemExit(
                    f"sweeper: study hook {type(hook).__name__}: {root_cause(err)}"
                ) from None
            parent_run_id = parent_run_id or rid
        sweep_log.quiet_consoles()  # MLflow configures its own loggers when first imported
        plan.trial_overrides = [
            f"trial.study_name={format_value(study.study_name)}",
            f"trial.storage={format_value(plan.storage_spec)}",
            f"hydra.sweep.dir={format_value(str(plan.sweep_dir))}",
        ]
        if parent_run_id:
            plan.trial_overrides.append(f"trial.parent_run_id={format_value(parent_run_id)}")
        plan.parent_run_id = parent_run_id
        if plan.tuning_seeds:
            plan.trial_overrides += [
                f"trial.seeds=[{','.join(str(s) for s in plan.tuning_seeds)}]",
                f"trial.aggregate={self.aggregate}",
                "trial.phase=tune",
            ]

        done_before = ledger.done_before()
        slots = self._slots()
        # one launch per trial: the launchers' per-launch banners would bury the progress lines
        for name in _LAUNCHER_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        log.info(
            "%s %s (%s, %s sampler, seed %s, %s pruner): %d/%d trials done, %d slot(s); "
            "search space %s",
            "resuming study" if done_before else "study",
            study.study_name,
            redact(plan.storage_spec),
            plan.sampler_name,
            plan.seed,
            plan.pruner["name"],
            done_before,
            plan.n_trials,
            slots,
            plan.space.describe(),
        )
        if done_before:
            log.info(
                "(the same command resumes its study; a fresh one: another "
                "hydra.sweeper.study_name=NAME or hydra.sweeper.sampler.seed, or remove the study "
                "from %s)",
                redact(plan.storage_spec),
            )
        progress = SweepProgress(plan.n_trials, self.direction, self.progress_enabled)
        progress.start(study)
        beat = threading.Thread(target=ledger.heartbeat, daemon=True)
        beat.start()
        errors: list[BaseException] = []

        def slot() -> None:
            try:
                self._slot(ledger, progress)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
                ledger.stop.set()

        def packed() -> None:
            from sweeper.sweeps.packed_workers import run_packed
            from sweeper.sweeps.packing import TuningFeed

            # J slots: at most an equal share of the trials left each, so that no population
            # takes them all while another slot idles
            share = -(-max(1, plan.n_trials - done_before) // slots)
            capacity = self.population if slots == 1 else min(self.population, share)
            width = max(1, len(plan.tuning_seeds))  # members per trial
            try:
                run_packed(
                    TuningFeed(self, ledger, progress),
                    capacity,
                    width,
                    slots,
                    ledger.stop,
                    runner=self._population_runner(),
                )
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
                ledger.stop.set()

        try:
            if self.population > 1:
                packed()
            elif slots == 1:
                slot()
            else:
                threads = [
                    threading.Thread(target=slot, name=f"sweeper-slot-{i}", daemon=True)
                    for i in range(slots)
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    while t.is_alive():
                        t.join(0.5)
        except KeyboardInterrupt:
            ledger.stop.set()
            progress.stop()
            raise  # sweep() ends it (_interrupted), also from the re-test and the summary
        except BaseException:
            self._close_launcher()
            raise
        ledger.stop.set()
        progress.stop()
        if errors:
            self._close_launcher()
            self._abort(plan, errors[0])
        ledger.run_due_hooks()
        prefetch = None
        if self._retest_due(plan):  # its runs train elsewhere: this process is free meanwhile
            prefetch = results_mod.prefetch(self, plan)
        try:
            self._retest(plan)
        except Exception as err:
            self._abort(plan, err)
        finally:
            self._close_launcher()
        if prefetch is not None:
            prefetch.join()
        try:
            summary = results_mod.finish(self, plan, hooks, info, ledger.stop_message())
        except Exception as err:
            self._abort(plan, err)
        stop_reason = summary.get("stopped")
        if stop_reason:
            raise SystemExit(f"sweeper: {stop_reason}")
        if summary.get("tracking_lost"):  # trained and kept, but MLflow lacks part of it
            sys.stderr.write(
                f"sweeper: the sweep finished (results: {summary.get('results_file')}), but "
                f"{summary['tracking_lost']}: its MLflow runs are incomplete\n"
            )
            raise SystemExit(TRACKING_LOST)
        if summary.get("best") is None:
            raise SystemExit(f"sweeper: {summary['message']}")
        return summary

    def _close_launcher(self) -> None:
        close = getattr(self.launcher, "close", None)
        if callable(close):
            close()  # the isolated launcher's worker processes

    def _retest(self, plan: Plan) -> None:
        """Re-train the best ``retest.top_k`` configs on ``retest.seeds`` test seeds, disjoint
        from the tuning seeds (``sweeper.sweeps.retest``); one job per (config, seed) on the
        launcher, so every slot stays busy; with ``population`` > 1 the jobs train packed,
        spread evenly over the slots' populations (one population per slot)."""
        from sweeper.sweeps import retest, retest_claim

        cfg = self.retest_cfg
        if not self._retest_due(plan):
            return
        trials = retest.top_trials(plan.study, int(cfg["top_k"]))
        if not trials:
            return
        seeds = replicate_seeds(plan.sweep_seed, int(cfg["seeds"]), "test")
        held = retest_claim.claim(
            plan.study,
            [t.number for t in trials],
            seeds,
            grace_period=self.grace_period,
            heartbeat_interval=self.heartbeat_interval,
        )
        if held is None:  # done already, running elsewhere, or left to a process still tuning
            return
        try:
            self._retest_runs(plan, trials, seeds)
        except BaseException:
            held.release(done=False)
            raise
        held.release(done=True)

    def _retest_runs(self, plan: Plan, trials: list, seeds: list[int]) -> None:
        from sweeper.sweeps import retest

        extra = [o for o in plan.trial_overrides if o.startswith("trial.study_name=")]
        if plan.parent_run_id:
            extra.append(f"trial.parent_run_id={format_value(plan.parent_run_id)}")
        extra.append(f"hydra.sweep.dir={format_value(str(plan.sweep_dir))}")
        jobs, where = [], []
        for t in trials:
            for s in seeds:
                subdir = retest.run_dir(Path(), t.number, s)
                jobs.append(
                    retest.job_overrides(
                        t.user_attrs.get(OVERRIDES, []),
                        t.number,
                        s,
                        [*extra, f"hydra.sweep.subdir={subdir}"],
                    )
                )
                where.append((t.number, plan.sweep_dir / subdir))
        log.info(
            "re-testing the best %d config(s) on %d test seeds (%d runs)",
            len(trials),
            len(seeds),
            len(jobs),
        )
        first = 1 + max(t.number for t in plan.study.get_trials(deepcopy=False))
        if self.population > 1:  # packed too: the runs of one population share its shapes
            from sweeper.sweeps.packed_workers import run_tests

            capacity = self.population * max(1, len(plan.tuning_seeds))  # same member count
            cost = {t.number: retest.run_cost(t.user_attrs.get(OUTPUT_DIR)) for t in trials}
            done = run_tests(
                self,
                [(first + i, j) for i, j in enumerate(jobs)],
                capacity,
                self._slots(),
                [cost[number] for number, _ in where],
                runner=self._population_runner(),
            )
            failed = Outcome(TrialState.FAIL, error="not run")
            outcomes = [done.get(first + i, failed) for i in range(len(jobs))]
        else:
            rets = self.launcher.launch(jobs, initial_job_idx=first)
            outcomes = [outcome_of(ret) for ret in rets]
        values: dict[int, list[float | None]] = {}
        for (number, out_dir), outcome in zip(where, outcomes, strict=True):
            if outcome.state != TrialState.COMPLETE:
                log.warning("test run %s of trial %d: %s", out_dir.name, number, outcome.error)
            values.setdefault(number, []).append(  # the job's return: it may have run elsewhere
                outcome.value if outcome.state == TrialState.COMPLETE else None
            )
        retest.summarize(plan.study, trials, seeds, values, self.aggregate)

    def _population_runner(self) -> Any:
        """Populations as Ray tasks / submitit jobs on a remote launcher; else None (this
        process, or this machine's worker processes)."""
        kind = remote.remote_kind(self.launcher)
        return None if kind is None else remote.population_runner(kind, self.launcher)

    def _retest_due(self, plan: Plan) -> bool:
        # (no tuning seeds: an app without replicates, see plan.supports_replicates)
        return bool(
            self.retest_cfg.get("enabled")
            and not (self.ledger is not None and self.ledger.gave_up())
            and plan.tuning_seeds
        )

    def _abort(self, plan: Plan, err: BaseException) -> None:
        stops.abort(plan, err)

    def _slot(self, ledger: TrialLedger, progress: SweepProgress) -> None:
        study = ledger.plan.study
        while not ledger.stop.is_set():
            asked = ledger.next_trial()
            if asked is None:
                return
            trial, overrides, shown = asked
            progress.trial_started(trial.number, " ".join(shown))
            try:
                ret: JobReturn | BaseException = self.launcher.launch(
                    [overrides], initial_job_idx=trial.number
                )[0]
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - a broken job must not end the sweep
                ret = exc
            died = getattr(ret, "_return_value", ret)
            if isinstance(died, workers.WorkerDied):  # not the trial's own failure
                if ledger.stop.is_set():  # its process was ended by the sweep's stop
                    ledger.finish_uncounted(
                        trial.number, "interrupted: the sweep stopped", dict(trial.params)
                    )
                    return
                failed = ledger.retry(trial, error_text(died))
                ledger.run_due_hooks()
                if failed is not None:
                    progress.trial_finished(study, trial.number, failed)
                continue
            outcome = outcome_of(ret)
            ledger.tell(trial, outcome)
            progress.trial_finished(study, trial.number, outcome)


TRACKING_LOST = 3  # exit code: the sweep finished, MLflow lost part of it

_LAUNCHER_LOGGERS = (
    "hydra._internal.core_plugins.basic_launcher",
    "hydra_plugins.hydra_joblib_launcher._core",
    "sweeper.sweeps.launcher",
)


def _plain(node: Any) -> Any:
    if node is None:
        return None
    if isinstance(node, DictConfig) or OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


__all__ = ["OptunaSweeperImpl"]
