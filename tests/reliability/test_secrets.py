"""Secrets in storage and tracking URLs are masked everywhere the project writes (issue 8,
point 8): configs, Hydra files, MLflow params/tags/artifacts, the Optuna and MLflow stores,
logs and errors. The real sweep runs against a PostgreSQL role made for the test, with a
password nothing else knows, and every byte the command leaves behind is searched for it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from reliability_helpers import clean_env, files_with, rows_with

from sweeper import secrets
from sweeper.overrides import format_value

TINY = [
    "agent=q_learning",
    "env=gridworld",
    "train.episodes=10",
    "eval.every=5",
    "eval.episodes=1",
    "train.progress=false",
]


def _env() -> dict[str, str]:
    env = clean_env()
    env.pop(secrets.ENV, None)  # the command must learn the password from its arguments
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return env


def _train(tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sweeper.train", *args],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- the real thing --------------------------------------------------------------------------
def test_sweep_on_postgresql_leaves_no_password_anywhere(tmp_path, pg_role, monkeypatch):
    """A parallel sweep (joblib, 2 slots) of the real app on a PostgreSQL storage with a
    password, MLflow on the embedded store: not one file under the working directory (run
    and trial configs, ``.hydra/``, the sweep's results, ``mlflow.db`` and its WAL, the
    artifacts), not a row of the Optuna database, nor the console holds the password; the
    places that record the storage show it masked."""
    monkeypatch.setenv("SWEEPER_OUTPUTS", str(tmp_path / "outputs"))
    proc = _train(
        tmp_path,
        "-m",
        "hydra/sweeper=sweeper_optuna",
        "hydra/launcher=joblib",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.retest.top_k=1",  # the test runs must not leak the password either
        "hydra.sweeper.retest.seeds=1",
        f"hydra.sweeper.storage={pg_role.url['optuna']}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *TINY,
        "agent.alpha=interval(0.1,0.5)",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    pw = pg_role.password
    assert pw not in proc.stdout and pw not in proc.stderr
    assert files_with(tmp_path, pw) == []
    assert rows_with(pg_role.admin_url["optuna"], pw) == []

    # it did run there, and the storage is recorded masked where it is recorded
    assert (tmp_path / "outputs" / "mlflow.db").exists()
    assert rows_with(pg_role.admin_url["optuna"], "COMPLETE")
    masked = pg_role.masked["optuna"]
    for trial in ("0", "1"):
        cfg = OmegaConf.load(tmp_path / "sweep" / trial / "config.yaml")
        assert cfg.trial.storage == masked
        hydra_cfg = OmegaConf.load(tmp_path / "sweep" / trial / ".hydra" / "hydra.yaml")
        assert hydra_cfg.hydra.sweeper.storage == masked
    results = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    assert results.storage == masked
    with sqlite3.connect(tmp_path / "outputs" / "mlflow.db") as con:
        tags = con.execute("SELECT key, value FROM tags").fetchall()
    overrides = [v for k, v in tags if k == "overrides"]
    # 2 trials, each a group run and its seed's run, and the best trial's re-test run
    with_storage = [v for v in overrides if "trial.storage=" in v]
    assert len(overrides) == 5 and len(with_storage) == 4
    assert all(f"trial.storage='{masked}'" in v for v in with_storage)
    assert ("storage", masked) in tags  # the study's parent run
    assert masked in proc.stdout + proc.stderr  # the sweeper's log line


def test_tracking_uri_with_password_is_masked_in_a_run(tmp_path, pg_role):
    """A single run whose MLflow store is PostgreSQL with a password: the run is logged
    there, and neither the run's files, MLflow's artifacts, the MLflow database's rows nor
    the console hold the password."""
    proc = _train(tmp_path, *TINY, f"tracking.tracking_uri={pg_role.url['mlflow']}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    pw = pg_role.password
    assert pw not in proc.stdout and pw not in proc.stderr
    assert files_with(tmp_path, pw) == []
    assert rows_with(pg_role.admin_url["mlflow"], pw) == []
    configs = sorted((tmp_path / "outputs" / "runs").rglob("config.yaml"))  # and .hydra/'s
    assert len(configs) == 2
    for config in configs:
        assert OmegaConf.load(config).tracking.tracking_uri == pg_role.masked["mlflow"]
    assert rows_with(pg_role.admin_url["mlflow"], "FINISHED")  # the run is in PostgreSQL


def test_storage_error_does_not_print_a_query_password(tmp_path):
    """``?password=`` in an unreachable storage URL: exit non-zero with one line that names
    the storage, masked; nothing written holds the password."""
    proc = _train(
        tmp_path,
        "-m",
        "hydra/sweeper=sweeper_optuna",
        "hydra.sweeper.storage='postgresql+psycopg://u@127.0.0.1:1/db?password=Hunter2x'",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *TINY,
        "agent.alpha=interval(0.1,0.5)",
        timeout=120,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "hydra.sweeper.storage" in lines[0]
    assert "postgresql+psycopg://u@127.0.0.1:1/db?password=***" in lines[0]
    assert "Hunter2x" not in proc.stdout + proc.stderr
    assert files_with(tmp_path, "Hunter2x") == []


def test_a_password_from_an_interpolation_is_masked_in_the_written_config(tmp_path):
    """``${oc.env:...}``: Hydra keeps the interpolation in .hydra/, and the resolved
    config.yaml the run writes masks what it resolves to."""
    env = {**_env(), "SWEEPER_TEST_URI": "postgresql://u:Env5ecretX@127.0.0.1:1/db"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sweeper.train",
            *TINY,
            "tracking.enabled=false",
            "tracking.tracking_uri=${oc.env:SWEEPER_TEST_URI}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "u:***@127.0.0.1:1/db" in (tmp_path / "run" / "config.yaml").read_text()
    assert files_with(tmp_path, "Env5ecretX") == []


# -- units -----------------------------------------------------------------------------------
@pytest.fixture
def fresh(monkeypatch):
    """No URL kept yet (the variable restored afterwards)."""
    monkeypatch.setenv(secrets.ENV, "{}")


@pytest.mark.parametrize(
    "url, masked",
    [
        (
            "postgresql+psycopg://u:p@h:5432/db?sslmode=require",
            "postgresql+psycopg://u:***@h:5432/db?sslmode=require",
        ),
        ("http://u:p@h", "http://u:***@h"),
        ("https://u:p%40ss@h:8443/x/y#frag", "https://u:***@h:8443/x/y#frag"),
        ("mysql://root:pw@db/x?charset=utf8", "mysql://root:***@db/x?charset=utf8"),
        (
            "postgresql+psycopg://u@h:1/db?password=Hunter2x&sslmode=require",
            "postgresql+psycopg://u@h:1/db?password=***&sslmode=require",
        ),
        (
            "http://h/x?Token=a&API_KEY=b&apikey=c&access_token=d&secret=e&pwd=f&passwd=g&q=1",
            "http://h/x?Token=***&API_KEY=***&apikey=***&access_token=***&secret=***&pwd=***"
            "&passwd=***&q=1",
        ),
        ("journal:/path/journal.log", "journal:/path/journal.log"),
        ("sqlite:////abs/mlflow.db", "sqlite:////abs/mlflow.db"),
        ("http://u@h/x", "http://u@h/x"),  # a user, no password
        ("http://u:@h", "http://u:@h"),  # an empty password hides nothing
        ("user:pw@host", "user:pw@host"),  # no scheme: not a URL
        ("not a url", "not a url"),
        ("", ""),
    ],
)
def test_mask(url, masked):
    assert secrets.mask(url) == masked
    assert secrets.mask(masked) == masked  # idempotent
    assert secrets.has_secret(url) == (url != masked)
    assert not secrets.has_secret(masked)


def test_an_interpolated_password_is_left_to_resolve(fresh):
    """``${oc.env:PGPASS}`` in the password slot is no secret: masking it would keep the
    unresolved text as "the real URL" and the storage could never log in."""
    for url in (
        "postgresql://u:${oc.env:PGPASS}@h/db",
        "postgresql://u@h/db?password=${oc.env:PGPASS}",
    ):
        assert secrets.mask(url) == url and secrets.keep(url) == url
        assert secrets.reveal(url) == url


def test_mask_leaves_non_strings_alone():
    assert secrets.mask(None) is None and secrets.mask(3) == 3


def test_keep_and_reveal_in_this_process_and_its_children(fresh):
    real = "postgresql+psycopg://u:Sw0rdfish-1@h:5432/db"
    masked = secrets.keep(real)
    assert masked == "postgresql+psycopg://u:***@h:5432/db"
    assert secrets.reveal(masked) == real
    assert secrets.reveal(real) == real  # an unmasked URL is used as given
    assert secrets.reveal("journal:/x.log") == "journal:/x.log"
    assert secrets.reveal(None) is None
    assert secrets.keep("journal:/x.log") == "journal:/x.log"  # nothing to keep
    assert json.loads(os.environ[secrets.ENV]) == {masked: real}
    code = f"from sweeper import secrets; print(secrets.reveal({masked!r}))"
    child = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert child.stdout.strip() == real


def test_reveal_of_an_unknown_masked_url_is_one_line(fresh):
    with pytest.raises(ValueError) as err:
        secrets.reveal("postgresql+psycopg://u:***@h/db")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("postgresql+psycopg://u:***@h/db: the password is not known")


def test_mask_text_masks_urls_and_known_secrets(fresh):
    secrets.keep("http://u:Tr0ub4dor@h/x")
    text = "failed: 'http://v:other1@h/y?token=abc' (password Tr0ub4dor rejected)"
    assert secrets.mask_text(text) == (
        "failed: 'http://v:***@h/y?token=***' (password *** rejected)"
    )


@pytest.mark.parametrize(
    "override, masked",
    [
        (
            "hydra.sweeper.storage=postgresql+psycopg://u:pw1x@127.0.0.1:5432/db",
            "hydra.sweeper.storage=postgresql+psycopg://u:***@127.0.0.1:5432/db",
        ),
        (
            "hydra.sweeper.storage='postgresql+psycopg://u@127.0.0.1:1/db?password=Hunter2x'",
            "hydra.sweeper.storage='postgresql+psycopg://u@127.0.0.1:1/db?password=***'",
        ),
        (
            "+tracking.tracking_uri=http://u:pw2x@h:5000",
            "+tracking.tracking_uri=http://u:***@h:5000",
        ),
        ("x=choice('http://u:pw3x@h','http://v:pw4x@g')", "x=choice('http://u:***@h','http://v:***@g')"),
        ("x='http://u:pw\\'5x@h'", "x='http://u:***@h'"),  # an escape: rebuilt
        ("agent.alpha=interval(0.1,0.5)", "agent.alpha=interval(0.1,0.5)"),
        ("hydra.sweeper.storage=journal:/tmp/j.log", "hydra.sweeper.storage=journal:/tmp/j.log"),
    ],
)  # fmt: skip
def test_mask_override_still_parses(fresh, override, masked):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    assert secrets.mask_override(override) == masked
    parsed = OverridesParser.create().parse_override(masked)
    assert (
        parsed.get_key_element()
        == OverridesParser.create().parse_override(override).get_key_element()
    )


_PASSWORDS = st.text(
    alphabet=st.characters(
        codec="ascii", categories=("L", "N"), include_characters="-_.~!$'()*+,=%:@ "
    ),
    min_size=1,
    max_size=30,
).filter(lambda p: p != secrets.MASK)


@settings(max_examples=150, deadline=None)
@given(password=_PASSWORDS, query=st.booleans())
def test_masked_urls_round_trip_through_overrides_and_reveal(password, query):
    """Any password (``/?#`` end a netloc and ``&;`` a query parameter, so none of them):
    exactly the secret is masked, the masked URL is a fixed point of mask, it goes through
    the override grammar (``format_value``, as the sweeper hands ``trial.storage`` to trials)
    unchanged, and reveal gives the real URL back."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    old = os.environ.pop(secrets.ENV, None)
    try:
        base = "postgresql+psycopg://u{}@h:5432/db?sslmode=require{}"
        if query:
            real, expected = (base.format("", f"&password={p}") for p in (password, "***"))
        else:
            real, expected = (base.format(f":{p}", "") for p in (password, "***"))
        if " " in password:  # whitespace: not a URL at all
            assert secrets.keep(real) == real
            return
        masked = secrets.keep(real)
        assert masked == expected and secrets.mask(masked) == masked
        parsed = OverridesParser.create().parse_override(f"trial.storage={format_value(masked)}")
        assert parsed.value() == masked
        assert secrets.reveal(masked) == real
    finally:
        if old is None:
            os.environ.pop(secrets.ENV, None)
        else:
            os.environ[secrets.ENV] = old


def test_callback_masks_a_composed_config_and_secrets_from_config_files(tmp_path, fresh):
    """MaskSecrets on a config as Hydra hands it over: values, the recorded task and hydra
    overrides and Hydra's computed override_dirname; in multirun, a secret that came from a
    config file (not an override) becomes a masked override too, since every job's config is
    composed again from the files and ``hydra.overrides.hydra``."""
    from hydra import compose, initialize_config_dir

    from sweeper.config import CONF_DIR, register_configs

    site = tmp_path / "conf" / "site"
    site.mkdir(parents=True)
    (site / "pg.yaml").write_text(
        "# @package _global_\n"
        "hydra:\n  sweeper:\n    storage: postgresql+psycopg://u:FromFile1@h:5432/db\n"
    )
    register_configs()
    overrides = [
        "+site=pg",
        "hydra/sweeper=sweeper_optuna",
        "tracking.tracking_uri=http://u:FromCli22@h:5000",
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
    ]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides, return_hydra_config=True)
        secrets.MaskSecrets().on_multirun_start(config=cfg)
        dumped = OmegaConf.to_yaml(cfg)
        assert "FromFile1" not in dumped and "FromCli22" not in dumped
        assert cfg.tracking.tracking_uri == "http://u:***@h:5000"
        assert cfg.hydra.sweeper.storage == "postgresql+psycopg://u:***@h:5432/db"
        assert "tracking.tracking_uri=http://u:***@h:5000" in cfg.hydra.overrides.task
        # a job's config, composed the way Hydra's launchers do it
        job = compose(
            "config",
            [*cfg.hydra.overrides.hydra, *cfg.hydra.overrides.task],
            return_hydra_config=True,
        )
    assert job.hydra.sweeper.storage == "postgresql+psycopg://u:***@h:5432/db"
    assert job.tracking.tracking_uri == "http://u:***@h:5000"
    assert secrets.reveal(job.hydra.sweeper.storage) == "postgresql+psycopg://u:FromFile1@h:5432/db"
    assert secrets.reveal(job.tracking.tracking_uri) == "http://u:FromCli22@h:5000"


def test_storage_and_tracking_consumers_reveal(fresh):
    from sweeper.study_storage import StorageError, canonical, open_storage
    from sweeper.tracking.store import resolve_tracking_uri

    real = "postgresql+psycopg://u:Unreach4ble@127.0.0.1:1/db"
    masked = canonical(real)
    assert masked == "postgresql+psycopg://u:***@127.0.0.1:1/db"
    assert resolve_tracking_uri(secrets.keep("http://u:Tr4cking@h:5000")) == (
        "http://u:Tr4cking@h:5000"
    )
    with pytest.raises(StorageError) as err:  # revealed (it tried to connect), shown masked
        open_storage(masked)
    assert "Connection refused" in str(err.value) and "Unreach4ble" not in str(err.value)
    assert masked in str(err.value)
    with pytest.raises(StorageError, match="password is not known"):
        open_storage("postgresql+psycopg://v:***@127.0.0.1:1/db")
    with pytest.raises(ValueError, match="password is not known"):
        resolve_tracking_uri("http://v:***@h:5000")


def test_a_password_that_is_also_a_config_value_leaves_the_config_alone(fresh):
    """Only URLs are masked in a config: a password that equals some other value (here the
    env's name) does not mask that value."""
    from hydra import compose, initialize_config_dir

    from sweeper.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", ["tracking.tracking_uri=http://u:cartpole_simple@h:5000"], True)
    secrets.MaskSecrets().on_run_start(config=cfg)
    assert cfg.tracking.tracking_uri == "http://u:***@h:5000"
    assert cfg.env.name == "cartpole_simple" and cfg.env.id == "sweeper/CartPoleSimple-v0"
    assert cfg.hydra.overrides.task == ["tracking.tracking_uri=http://u:***@h:5000"]
