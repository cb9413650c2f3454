"""Idle fraction of the sweeper's parallel slots on trials of different lengths.

    .venv/bin/python tests/benchmarks/idle_fraction.py [--trials 16] [--slots 2]

Runs a real sweep of the test-only toy app (tests/sweeps/apps/toy.py; each trial sleeps a sampled
``duration`` in 0.2..3 s) with ``hydra/launcher=joblib`` and N slots, then reads the trials'
start (ask) and end (tell) times from the study and prints:

* slot idle fraction: 1 - sum(ask->tell spans) / (slots * wall), wall = first ask -> last tell;
  this counts the gaps between a tell and the next ask and the unavoidable tail at the end;
* useful fraction: sum(sleep durations) / (slots * wall) (the rest is launcher overhead:
  job composition, pickling to the loky worker, the app's own setup);
* the same figures for a batch-barrier sweeper (the official hydra-optuna-sweeper's behaviour:
  ask N, launch N, wait for all N) simulated on the very same measured ask->tell spans.

Not a test: it prints numbers for the report and the README.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "tests" / "sweeps" / "apps" / "toy.py"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--low", type=float, default=0.2)
    ap.add_argument("--high", type=float, default=3.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"journal:{tmp}/journal.log"
        cmd = [
            sys.executable,
            str(TOY),
            "-m",
            "hydra/launcher=joblib",
            f"hydra.launcher.n_jobs={args.slots}",
            f"hydra.sweeper.n_jobs={args.slots}",
            f"hydra.sweeper.n_trials={args.trials}",
            "hydra.sweeper.sampler.name=random",
            "hydra.sweeper.pruner.name=none",
            f"duration=interval({args.low},{args.high})",
            "evals=1",
            f"hydra.sweep.dir={tmp}/sweep",
            f"hydra.sweeper.storage={storage}",
        ]
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(proc.stderr[-3000:])
        from sweeper.study_storage import open_storage

        st = open_storage(storage)
        study = optuna.load_study(study_name=optuna.get_all_study_names(st)[0], storage=st)
        trials = sorted(study.get_trials(), key=lambda t: t.number)
    spans = [(t.datetime_start.timestamp(), t.datetime_complete.timestamp()) for t in trials]
    durations = [float(t.params["duration"]) for t in trials]
    t0 = min(s for s, _ in spans)
    wall = max(e for _, e in spans) - t0
    # the first trials of each slot include starting the loky worker (imports): report both
    busy = sum(e - s for s, e in spans)
    slots = args.slots
    idle = 1 - busy / (slots * wall)
    useful = sum(durations) / (slots * wall)
    # batch barrier on the same spans: batches of `slots` in trial order, each as long as its
    # longest member
    lengths = [e - s for s, e in spans]
    batch_wall = sum(max(lengths[i : i + slots]) for i in range(0, len(lengths), slots))
    batch_idle = 1 - sum(lengths) / (slots * batch_wall)
    batch_useful = sum(durations) / (slots * batch_wall)
    # steady state: leave out each slot's first trial (worker start-up)
    first_end = sorted(e for _, e in spans)[slots - 1]
    steady = [(max(s, first_end), e) for s, e in spans if e > first_end]
    steady_wall = max(e for _, e in steady) - first_end
    steady_idle = 1 - sum(e - s for s, e in steady) / (slots * steady_wall)
    print(
        f"trials {len(trials)}, slots {slots}, trial sleep {args.low}..{args.high} s "
        f"(sum {sum(durations):.1f} s)"
    )
    print(
        f"no barrier (this sweeper): wall {wall:.1f} s, slot idle {idle:.1%}, "
        f"useful {useful:.1%}, steady-state slot idle {steady_idle:.1%}"
    )
    print(
        f"batch barrier (simulated on the same spans): wall {batch_wall:.1f} s, "
        f"slot idle {batch_idle:.1%}, useful {batch_useful:.1%}"
    )
    overhead = [lengths[i] - durations[i] for i in range(len(trials))]
    print(
        f"per-trial overhead (ask->tell minus sleep): median "
        f"{sorted(overhead)[len(overhead) // 2]:.2f} s, first trials {overhead[:slots]}"
    )


if __name__ == "__main__":
    main()
