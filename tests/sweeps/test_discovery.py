"""Hydra discovers the sweeper plugin after an editable and after a normal install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from sweep_helpers import ROOT, TOY, clean_env

PROBE = """
import json
import hydra_plugins.sweeper_optuna as pkg
import sweeper
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
names = [c.__module__ + "." + c.__name__ for c in Plugins.instance().discover(Sweeper)]
print(json.dumps({"plugins": names, "plugin_file": pkg.__file__, "sweeper_file": sweeper.__file__}))
"""
NAME = "hydra_plugins.sweeper_optuna.optuna_sweeper.SweeperOptuna"


def _probe(env: dict[str, str], *python_flags: str) -> dict:
    out = subprocess.run(
        [sys.executable, *python_flags, "-c", PROBE],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_discovered_after_editable_install():
    env = clean_env()
    env.pop("PYTHONPATH", None)  # found through the editable install's finder, not a path
    found = _probe(env)
    assert NAME in found["plugins"]
    assert Path(found["plugin_file"]).is_relative_to(ROOT / "hydra_plugins")


def test_discovered_after_normal_install(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--target",
            str(target),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    assert not (target / "hydra_plugins" / "__init__.py").exists()  # a namespace package
    # -S: no .pth files, so the editable finder of .venv is off; PYTHONPATH: the normal
    # install first, then .venv's site-packages for the dependencies.
    env = clean_env(PYTHONPATH=os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]]))
    found = _probe(env, "-S")
    assert NAME in found["plugins"]
    assert Path(found["plugin_file"]).is_relative_to(target)
    assert Path(found["sweeper_file"]).is_relative_to(target)
    # and a sweep runs with it
    proc = subprocess.run(
        [
            sys.executable,
            "-S",
            str(TOY),
            "-m",
            "hydra.sweeper.n_trials=2",
            "x=interval(0,2)",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            f"hydra.sweeper.storage=journal:{tmp_path / 'j.log'}",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "sweep" / "optimization_results.yaml").exists()
