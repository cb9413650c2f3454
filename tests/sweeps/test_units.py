"""Samplers, pruners, storage, trial outcomes and the pruning callback against real studies."""

from __future__ import annotations

import math
import pickle

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from sweeper.sweeps._impl import GuardedTask, TrialExit, outcome_of
from sweeper.sweeps.factories import FactoryError, make_pruner, make_sampler, pruner_spec
from sweeper.sweeps.storage import StorageError, canonical, open_storage, redact
from sweeper.sweeps.trial import PRUNER_ATTR, PruningCallback, pruning_callback

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


def test_bad_pruner():
    with pytest.raises(FactoryError, match="unknown pruner 'nah'"):
        pruner_spec("nah", {})
    with pytest.raises(FactoryError, match="hydra.sweeper.pruner: median:"):
        pruner_spec("median", {"n_startup_trials": "x", "bogus": 2})


def test_storage_strings(tmp_path):
    assert canonical(f"journal:{tmp_path}/a/j.log") == f"journal:{tmp_path}/a/j.log"
    assert canonical("rel.log").startswith("journal:/")
    assert redact("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    st = open_storage(f"journal:{tmp_path}/a/j.log")
    assert isinstance(st, optuna.storages.JournalStorage)
    assert open_storage(f"journal:{tmp_path}/a/j.log") is st


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


def test_outcome_reads_run_metrics(tmp_path):
    (tmp_path / "episodes.csv").write_text("episode,max_q\n1,1.0\n2,3.0\n")
    cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(tmp_path)}}})
    out = outcome_of(_ret(JobStatus.COMPLETED, 2.0, cfg))
    assert out.attrs["mean_max_q"] == 2.0 and out.attrs["final_max_q"] == 3.0


def test_guarded_task_turns_system_exit_into_an_exception():
    def task(cfg):
        try:
            raise ValueError("agent.lr must be > 0")
        except ValueError:
            raise SystemExit(2) from None

    with pytest.raises(TrialExit, match="exited with code 2: ValueError: agent.lr must be > 0"):
        GuardedTask(task)(None)
    assert GuardedTask(lambda cfg: 4.0)(None) == 4.0
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
