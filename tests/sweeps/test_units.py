"""Samplers, pruners, storage, trial outcomes and the pruning callback against real studies."""

from __future__ import annotations

import json
import math
import pickle
import re
import sys

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from sweeper.analysis import counts, tally
from sweeper.pruning import (
    PRUNER_ATTR,
    PrunerError,
    PruningCallback,
    make_pruner,
    pruner_spec,
    pruning_callback,
)
from sweeper.study_attrs import OUTPUT_DIR
from sweeper.study_storage import StorageError, canonical, is_journal, open_storage, redact
from sweeper.sweeps.errors import TrialExit
from sweeper.sweeps.factories import FactoryError, make_sampler
from sweeper.sweeps.hooks import HookError
from sweeper.sweeps.outcome import ATTRS, GuardedTask, JobResult, outcome_of, result_attrs
from sweeper.sweeps.plan import load_validator
from sweeper.sweeps.search_space import build_search_space
from sweeper.sweeps.study_name import default_study_name, derive_seed

SPACE = {"x": FloatDistribution(0, 1), "c": CategoricalDistribution(["a", "b"])}


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
        ("grid", optuna.samplers.GridSampler),
        ("qmc", optuna.samplers.QMCSampler),
        ("cmaes", optuna.samplers.CmaEsSampler),
        ("gp", optuna.samplers.GPSampler),
    ],
)
def test_make_sampler(name, cls):
    space = {"c": CategoricalDistribution(["a", "b"])} if name == "grid" else SPACE
    assert isinstance(make_sampler(name, {}, 0, space), cls)


def test_sampler_is_seeded():
    def sample(seed):
        study = optuna.create_study(sampler=make_sampler("random", {}, seed, SPACE))
        return [study.ask(fixed_distributions=SPACE).params for _ in range(3)]

    assert sample(1) == sample(1) != sample(2)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("nope", {}, "unknown sampler 'nope'"),
        ("tpe", {"bogus": 1}, "hydra.sweeper.sampler: tpe:"),
    ],
)
def test_bad_sampler(name, kwargs, message):
    with pytest.raises(FactoryError, match=message):
        make_sampler(name, kwargs, 0, SPACE)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("median", optuna.pruners.MedianPruner),
        ("percentile", optuna.pruners.PercentilePruner),
        ("successive_halving", optuna.pruners.SuccessiveHalvingPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
        ("none", optuna.pruners.NopPruner),
    ],
)
def test_make_pruner(name, cls):
    assert isinstance(make_pruner(pruner_spec(name, {})), cls)


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("median", {}, {"n_warmup_steps": 40}),
        ("percentile", {"percentile": 30.0}, {"percentile": 30.0, "n_warmup_steps": 40}),
        ("successive_halving", {}, {"min_resource": 40}),
        ("hyperband", {}, {"min_resource": 40}),
        ("none", {}, {}),
        ("median", {"n_warmup_steps": 5}, {"n_warmup_steps": 5}),  # an explicit keyword wins
    ],
)
def test_warmup_steps_works_with_every_pruner(name, kwargs, expected):
    spec = pruner_spec(name, kwargs, 40)
    assert spec == {"name": name, "kwargs": expected}
    make_pruner(spec)


@pytest.mark.parametrize("pruner", ["median", "percentile", "successive_halving", "hyperband"])
def test_a_pruned_sweep_composes_with_every_pruner(pruner):
    from hydra import compose, initialize_config_dir

    from sweeper.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["+sweep=cartpole_v1", f"hydra/sweeper/pruner={pruner}"],
            return_hydra_config=True,
        )
    node = cfg.hydra.sweeper.pruner
    spec = pruner_spec(node.name, dict(node.kwargs), node.warmup_steps)
    assert spec["name"] == pruner and 40 in spec["kwargs"].values()


def test_derived_seeds_differ_and_are_deterministic():
    assert derive_seed(0, 3, "h", 1) == derive_seed(0, 3, "h", 1)
    seeds = {derive_seed(0, n, "h", pid) for n in (0, 3) for pid in (1, 2)}
    assert len(seeds) == 4 and 0 not in seeds


def test_tally_and_counts():
    def trial(state, **attrs):
        return optuna.trial.FrozenTrial(
            number=0, state=state, value=1.0 if state == TrialState.COMPLETE else None,
            datetime_start=None, datetime_complete=None, params={}, distributions={},
            user_attrs=attrs, system_attrs={}, intermediate_values={}, trial_id=0,
        )  # fmt: skip

    trials = [
        trial(TrialState.COMPLETE),
        trial(TrialState.PRUNED),
        trial(TrialState.FAIL),
        trial(TrialState.FAIL, **{"sweeper:uncounted": "surplus"}),
        trial(TrialState.RUNNING),
        trial(TrialState.WAITING),
    ]
    assert tally(trials) == {
        "complete": 1, "pruned": 1, "failed": 1, "running": 1, "waiting": 1, "uncounted": 1
    }  # fmt: skip
    assert [counts(t) for t in trials] == [True, True, True, False, True, False]


def test_the_default_validator_is_optional_but_a_set_one_must_import(monkeypatch):
    default = "sweeper.config:validate"
    assert load_validator(default) is not None
    monkeypatch.setitem(sys.modules, "sweeper.config", None)  # an app without sweeper.config
    assert load_validator(default) is None
    with pytest.raises(HookError, match=r"^hydra.sweeper.validator: cannot import 'nope_x:f'"):
        load_validator("nope_x:f")


def test_bad_pruner():
    with pytest.raises(PrunerError, match="unknown pruner 'nah'"):
        pruner_spec("nah", {})
    with pytest.raises(PrunerError, match="hydra.sweeper.pruner: median:"):
        pruner_spec("median", {"n_startup_trials": "x", "bogus": 2})


def test_storage_strings(tmp_path):
    assert canonical(f"journal:{tmp_path}/a/j.log") == f"journal:{tmp_path}/a/j.log"
    assert canonical("rel.log").startswith("journal:/")
    assert redact("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    st = open_storage(f"journal:{tmp_path}/a/j.log")
    assert isinstance(st, optuna.storages.JournalStorage)
    assert open_storage(f"journal:{tmp_path}/a/j.log") is st


@pytest.mark.parametrize(
    ("spec", "journal", "expected"),
    [
        ("journal:/a/j.log", True, "journal:/a/j.log"),
        ("journal:/a/j.db", True, "journal:/a/j.db"),
        ("/a/j.log", True, "journal:/a/j.log"),
        ("/a/j.journal", True, "journal:/a/j.journal"),
        ("sqlite:////a/optuna.log", False, "sqlite:////a/optuna.log"),
        ("sqlite:///runs.journal", False, "sqlite:///runs.journal"),
        # the password is masked: the sweeper hands this string to every trial
        ("postgresql+psycopg://u:pw@h/db.log", False, "postgresql+psycopg://u:***@h/db.log"),
        ("sqlite:////a/optuna.db", False, "sqlite:////a/optuna.db"),
    ],
)
def test_storage_kind(spec, journal, expected):
    assert is_journal(spec) is journal
    assert canonical(spec) == expected


def test_sqlite_url_ending_in_log_opens_an_rdb_storage(tmp_path):
    st = open_storage(f"sqlite:///{tmp_path}/optuna.log")
    assert isinstance(st, optuna.storages.RDBStorage)


@pytest.mark.parametrize(
    "url",
    ["postgresql+psycopg://u:pw@127.0.0.1:1/nodb", "notadialect://x/y", "plainword"],
)
def test_unreachable_storage_is_one_line(url):
    with pytest.raises(StorageError) as err:
        open_storage(url)
    text = str(err.value)
    assert text.startswith("hydra.sweeper.storage:") and "\n" not in text
    assert "pw" not in text


def _ret(status, value, hydra_cfg=None) -> JobReturn:
    ret = JobReturn()
    ret.status = status
    ret.return_value = value
    ret.hydra_cfg = hydra_cfg
    return ret


@pytest.mark.parametrize(
    ("status", "value", "state", "error"),
    [
        (JobStatus.COMPLETED, 1.5, TrialState.COMPLETE, None),
        (JobStatus.COMPLETED, 3, TrialState.COMPLETE, None),
        (JobStatus.COMPLETED, math.nan, TrialState.FAIL, "the objective is nan"),
        (JobStatus.COMPLETED, math.inf, TrialState.FAIL, "the objective is inf"),
        (JobStatus.COMPLETED, None, TrialState.FAIL, "the objective is not a number: None"),
        (JobStatus.COMPLETED, "abc", TrialState.FAIL, "the objective is not a number: 'abc'"),
        (JobStatus.FAILED, optuna.TrialPruned("at 3"), TrialState.PRUNED, None),
        (
            JobStatus.FAILED,
            RuntimeError("boom\nsecond line"),
            TrialState.FAIL,
            "RuntimeError: boom second line",
        ),
        (
            JobStatus.FAILED,
            TrialExit("the job exited with code 2"),
            TrialState.FAIL,
            "TrialExit: the job exited with code 2",
        ),
    ],
)
@pytest.mark.parametrize("pickled", [False, True])
def test_outcome_of(status, value, state, error, pickled):
    ret = _ret(status, value)
    if pickled:  # as it comes back from a joblib (loky) worker
        ret = pickle.loads(pickle.dumps(ret))
    out = outcome_of(ret)
    assert out.state == state
    assert out.error == error
    if state == TrialState.COMPLETE:
        assert out.value == float(value)


def test_result_attrs_of_a_run_record(tmp_path):
    """A single run's metrics, or a replicate group's per-seed values and aggregates."""
    single = {"objective": 2.0, "status": "FINISHED", "metrics": {"mean_max_q": 2.0, "x": None}}
    (tmp_path / "result.json").write_text(json.dumps(single))
    assert result_attrs(tmp_path) == {"mean_max_q": 2.0}
    group = {
        "objective": 2.0,
        "status": "FINISHED",
        "seeds": [5, 7],
        "sweeper:seeds": [5, 7],
        "objective_per_seed": [1.0, 3.0],
        "objective_ci_low": 1.0,
    }
    (tmp_path / "result.json").write_text(json.dumps(group))
    attrs = result_attrs(tmp_path)
    assert attrs["sweeper:seeds"] == [5, 7] and attrs["objective_per_seed"] == [1.0, 3.0]
    assert "status" not in attrs and "objective" not in attrs


def test_outcome_comes_from_the_job_return_not_its_files(tmp_path):
    """The job may have run on another machine: the sweeper keeps what its return carries
    (JobResult, or a failed job's exception), never what a file at its output dir says."""
    cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(tmp_path)}}})
    decoy = {"objective": 9.0, "status": "FINISHED", "metrics": {"mean_max_q": 9.0}}
    (tmp_path / "result.json").write_text(json.dumps(decoy))
    ret = pickle.loads(
        pickle.dumps(_ret(JobStatus.COMPLETED, JobResult(2.0, {"mean_max_q": 2.0}), cfg))
    )
    out = outcome_of(ret)
    assert out.state == TrialState.COMPLETE and out.value == 2.0
    assert out.attrs == {OUTPUT_DIR: str(tmp_path), "mean_max_q": 2.0}
    err = RuntimeError("diverged")
    setattr(err, ATTRS, {"mean_max_q": 3.0})
    out = outcome_of(pickle.loads(pickle.dumps(_ret(JobStatus.FAILED, err, cfg))))
    assert out.state == TrialState.FAIL and out.attrs["mean_max_q"] == 3.0
    (tmp_path / "result.json").unlink()
    out = outcome_of(_ret(JobStatus.COMPLETED, JobResult(1.0, {"x": 1}), cfg))
    assert out.attrs["x"] == 1  # no file needed at all


def test_guarded_task_turns_system_exit_into_an_exception():
    def task(cfg):
        try:
            raise ValueError("agent.lr must be > 0")
        except ValueError:
            raise SystemExit(2) from None

    with pytest.raises(TrialExit, match="exited with code 2: ValueError: agent.lr must be > 0"):
        GuardedTask(task)(None)
    assert GuardedTask(lambda cfg: 4.0)(None) == JobResult(4.0, {})
    with pytest.raises(KeyboardInterrupt):
        GuardedTask(lambda cfg: (_ for _ in ()).throw(KeyboardInterrupt()))(None)
    pickle.dumps(GuardedTask(abs))


def test_pruning_callback_prunes_a_bad_trial(tmp_path):
    spec = f"journal:{tmp_path}/j.log"
    storage = open_storage(spec)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.set_user_attr(PRUNER_ATTR, pruner_spec("median", {"n_startup_trials": 2}))
    for value in (10.0, 12.0):  # two good finished trials with intermediate values
        t = study.ask()
        t.report(value, step=10)
        study.tell(t, value)
    good, bad = study.ask(), study.ask()
    trial_cfg = OmegaConf.create({"study_name": "s", "storage": spec, "number": good.number})
    callback = pruning_callback(trial_cfg)
    assert isinstance(callback, PruningCallback)
    callback.on_eval(0, 10, 200, {"eval_return_mean": 50.0})  # better than the median: goes on
    trial_cfg.number = bad.number
    with pytest.raises(optuna.TrialPruned):
        pruning_callback(trial_cfg).on_eval(0, 10, 200, {"eval_return_mean": 1.0})
    frozen = study.get_trials()
    assert frozen[good.number].intermediate_values == {10: 50.0}  # step = episode
    assert frozen[bad.number].intermediate_values == {10: 1.0}


def test_pruning_callback_uses_the_study_pruner(tmp_path):
    spec = f"journal:{tmp_path}/j.log"
    study = optuna.create_study(study_name="s", storage=open_storage(spec), direction="maximize")
    study.set_user_attr(PRUNER_ATTR, pruner_spec("none", {}))
    for value in (10.0, 12.0, 11.0):
        t = study.ask()
        t.report(value, step=10)
        study.tell(t, value)
    t = study.ask()
    cfg = OmegaConf.create({"study_name": "s", "storage": spec, "number": t.number})
    pruning_callback(cfg).on_eval(0, 10, 200, {"eval_return_mean": -100.0})  # NopPruner


def test_an_uncounted_grid_trial_is_queued_again_once(tmp_path):
    from sweeper.sweeps.ledger import TrialLedger
    from sweeper.sweeps.plan import Plan
    from sweeper.sweeps.search_space import build_search_space

    space = build_search_space({}, ["x=choice(0,1,2)"])
    spec = f"journal:{tmp_path}/j.log"
    st = open_storage(spec)
    sampler = make_sampler("grid", {}, 0, space.distributions)
    study = optuna.create_study(study_name="g", storage=st, sampler=sampler)
    plan = Plan(
        space=space,
        study=study,
        storage=st,
        storage_spec=spec,
        n_trials=3,
        sweep_dir=tmp_path,
        base_cfg=OmegaConf.create(),
        sampler_name="grid",
        pruner={},
        study_id=st.get_study_id_from_name("g"),
    )
    lost = study.ask(fixed_distributions=space.distributions)  # e.g. a surplus trial
    for _ in range(2):  # failing it twice (two workers) queues it once (one ledger each)
        TrialLedger(plan).finish_uncounted(lost.number, "surplus", dict(lost.params))
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1
    xs = []
    for _ in range(3):
        t = study.ask(fixed_distributions=space.distributions)
        xs.append(t.params["x"])
        study.tell(t, 1.0)
    assert sorted(xs) == [0, 1, 2]  # the grid lost no point


def _grid_plan(tmp_path, n_trials: int, *space_args: str):
    from sweeper.sweeps.plan import Plan
    from sweeper.sweeps.search_space import build_search_space

    space = build_search_space({}, list(space_args))
    spec = f"journal:{tmp_path}/j.log"
    st = open_storage(spec)
    sampler = make_sampler("grid", {}, 0, space.distributions)
    study = optuna.create_study(study_name="g", storage=st, sampler=sampler)
    return Plan(
        space=space,
        study=study,
        storage=st,
        storage_spec=spec,
        n_trials=n_trials,
        sweep_dir=tmp_path,
        base_cfg=OmegaConf.create(),
        sampler_name="grid",
        pruner={},
        study_id=st.get_study_id_from_name("g"),
    )


def test_a_trial_left_with_part_of_its_params_queues_its_whole_grid_point(tmp_path):
    """A full disk (or a kill) between two param writes leaves a RUNNING trial with 1 of its
    2 params: failing it queues the whole grid point (from its ``grid_id``), never the part
    (the grid sampler refuses an incomplete point: every later run used to fail on it)."""
    from sweeper.sweeps.ledger import TrialLedger

    plan = _grid_plan(tmp_path, 4, "x=choice(0,1)", "y=choice(5,6)")
    study = plan.study
    torn = study.ask()  # the sampler picked a grid point; only x was written
    x = torn.suggest_categorical("x", [0, 1])
    TrialLedger(plan).finish_uncounted(
        torn.number, "stale: its sweeper process 1 is gone", {"x": x}
    )
    (queued,) = study.get_trials(states=(TrialState.WAITING,))
    point = queued.system_attrs["fixed_params"]  # (a queued trial's params, until asked)
    assert set(point) == {"x", "y"} and point["x"] == x
    seen = []
    for _ in range(4):
        t = study.ask(fixed_distributions=plan.space.distributions)
        seen.append((t.params["x"], t.params["y"]))
        study.tell(t, 1.0)
    assert sorted(seen) == [(0, 5), (0, 6), (1, 5), (1, 6)]  # the grid lost no point


def test_a_trial_whose_worker_died_is_retried_twice_then_fails_and_counts(tmp_path):
    """Optuna's retry convention: each attempt stays FAIL and uncounted, its params queued
    with the attempt count; the third death of the same point fails it for good (counted)."""
    from sweeper.analysis import counts
    from sweeper.sweeps.ledger import MAX_RETRIES, TrialLedger

    plan = _grid_plan(tmp_path, 2, "x=choice(0,1)")
    ledger = TrialLedger(plan)
    trial, _, _ = ledger.next_trial()
    point = dict(trial.params)
    for attempt in range(MAX_RETRIES):
        assert ledger.retry(trial, "WorkerDied: killed by SIGKILL") is None
        frozen = plan.study.get_trials()[trial.number]
        assert frozen.state == TrialState.FAIL and not counts(frozen)
        assert (
            frozen.user_attrs["sweeper:uncounted"] == "worker died: WorkerDied: killed by SIGKILL"
        )
        trial, _, _ = ledger.next_trial()  # the queued retry comes first
        assert trial.params == point and trial.user_attrs["sweeper:retries"] == attempt + 1
    failed = ledger.retry(trial, "WorkerDied: killed by SIGKILL")
    assert failed is not None and "retried 2 times" in failed.error
    frozen = plan.study.get_trials()[trial.number]
    assert frozen.state == TrialState.FAIL and counts(frozen)


def test_a_packed_worker_reads_every_answer_of_its_slot(tmp_path):
    """The worker's side of the pipe reads the slot's answer to every ``end``, also once the
    sweep stopped: an unread answer let the worker exit while its slot still wrote, and the
    slot failed the trials whose ends were still queued ("died (exited with code 0)")."""
    import multiprocessing

    from sweeper.sweeps.packed_workers import PipeSource

    here, there = multiprocessing.Pipe(duplex=True)
    source = PipeSource(there)
    for number, stop in ((1, True), (2, False), (3, False)):
        here.send(stop)  # the slot's answer, sent ahead of the question
        source.end(number, None)
        assert here.recv() == ("end", number, None)
    assert source.stopped()
    assert not there.poll(0.2), "an answer was left unread in the pipe"


def _study_name(*arguments: str, settings=None) -> str:
    from sweeper.cli import compose

    fixed = [a for a in arguments if "interval" not in a and "choice" not in a]
    task = compose(fixed)
    config = OmegaConf.create({"hydra": {"runtime": {"choices": {"sweep": "s"}}}})
    return default_study_name(config, build_search_space({}, list(arguments)), task, settings)


def test_default_study_name_changes_with_what_changes_the_asked_trials():
    space = ("agent.lr=interval(1e-4,1e-2)", "seed=3")
    settings = {
        "direction": "maximize",
        "sampler": {"name": "tpe", "seed": 0, "kwargs": {}},
        "pruner": {"name": "median", "kwargs": {}},
        "seeds": 3,
        "aggregate": "iqm",
    }
    base = _study_name(*space, settings=settings)
    assert re.fullmatch(r"s-tpe-[0-9a-f]{10}", base)
    assert base == _study_name(*space, settings=dict(settings))
    for key, value in [
        ("sampler", {"name": "tpe", "seed": 1, "kwargs": {}}),
        ("sampler", {"name": "tpe", "seed": 0, "kwargs": {"n_startup_trials": 5}}),
        ("pruner", {"name": "none", "kwargs": {}}),
        ("seeds", 5),
        ("aggregate", "mean"),
        ("direction", "minimize"),
    ]:
        assert base != _study_name(*space, settings={**settings, key: value}), key


def test_default_study_name_ignores_tracking_but_not_semantics():
    base = _study_name("agent.lr=interval(1e-4,1e-2)", "seed=3")
    assert base.startswith("s-")
    assert base == _study_name("agent.lr=interval(1e-4,1e-2)", "seed=3")
    # tracking on/off or elsewhere resumes the same study
    assert base == _study_name("agent.lr=interval(1e-4,1e-2)", "seed=3", "tracking.enabled=false")
    assert base == _study_name(
        "agent.lr=interval(1e-4,1e-2)", "seed=3", "tracking.experiment=other"
    )
    # what changes the trials starts a new one
    assert base != _study_name("agent.lr=interval(1e-4,1e-2)", "seed=4")
    assert base != _study_name("agent.lr=interval(1e-4,1e-3)", "seed=3")
    assert base != _study_name("agent.lr=interval(1e-4,1e-2)", "seed=3", "train.episodes=7")


def test_root_cause_skips_links_of_the_chain_that_say_nothing():
    """SQLAlchemy re-raises a lost connection through an InvalidatePoolError with no text:
    the one line names the driver's error beneath it, or the last link that says something."""
    from sweeper.sweeps.errors import root_cause

    class InvalidatePoolError(Exception):
        pass

    def chain(*links: BaseException) -> BaseException:
        err = None
        for link in links:
            try:
                raise link from err
            except BaseException as caught:  # noqa: BLE001
                err = caught
        return err

    err = chain(ConnectionError("administrator command"), InvalidatePoolError(), RuntimeError("x"))
    assert root_cause(err) == "ConnectionError: administrator command"
    err = chain(InvalidatePoolError(), RuntimeError("OperationalError: gone"))
    assert root_cause(err) == "RuntimeError: OperationalError: gone"


def test_retest_shares_are_even_in_cost_and_run_cost_reads_the_tuning_runs(tmp_path):
    """Packed re-tests give each slot an even share of the work: the 5 runs of a config that
    learned (long episodes) are not all on one slot."""
    from sweeper.sweeps.packed_workers import balanced_shares
    from sweeper.sweeps.retest import run_cost

    jobs = [f"trial{t}-seed{s}" for t in range(3) for s in range(5)]
    costs = [120_000.0] * 5 + [60_000.0] * 5 + [30_000.0] * 5
    shares = balanced_shares(jobs, costs, 2)
    assert sorted(j for share in shares for j in share) == sorted(jobs)
    totals = [sum(costs[jobs.index(j)] for j in share) for share in shares]
    assert abs(totals[0] - totals[1]) <= max(costs)
    assert all(0 < sum(j.startswith("trial0") for j in share) < 5 for share in shares)
    # run_cost: the mean of the tuning runs' last env step; 1.0 when there is nothing to read
    for seed, last in ((1, 300), (2, 500)):
        run = tmp_path / f"seed_{seed}"
        run.mkdir()
        (run / "episodes.csv").write_text(f"episode,step,return\n1,10,10\n2,{last},290\n")
    assert run_cost(tmp_path) == 400.0
    assert run_cost(tmp_path / "missing") == 1.0 and run_cost(None) == 1.0


def test_the_reproduce_line_keeps_swept_parameters_that_equal_their_defaults():
    from sweeper.sweeps.results import with_swept

    # the diff against the defaults dropped agent.gamma=0.9 (q_learning's default) and the
    # agent group choice (dqn is the default agent)
    diff = ["env=gridworld", "agent.alpha=0.3"]
    params = {"agent": "dqn", "agent.alpha": 0.3, "agent.gamma": 0.9, "seed": 4}
    assert with_swept(diff, params) == [
        "agent=dqn",
        "env=gridworld",
        "agent.alpha=0.3",
        "agent.gamma=0.9",
    ]
    assert with_swept(diff, {"agent.alpha": 0.3}) == diff
