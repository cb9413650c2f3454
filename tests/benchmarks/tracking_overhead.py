"""Logging overhead of MLflow tracking on a default trial: tracking on vs off.

Run from the repository root: ``.venv/bin/python tests/benchmarks/tracking_overhead.py``.
Not collected by pytest (no ``test_`` prefix). Options: ``--episodes 80`` (the default
sweep's trial, ``+sweep=sensitivity``; 500 is the default single run), ``--pairs 8``,
``--store DIR``.

One process trains trial after trial, as a sweep worker does, alternating tracking on and
off on the same config (same seed, so the same training work), on the embedded SQLite store
of a fresh outputs dir whose experiment exists (as a sweep's does: the sweeper creates it
with the study's parent run). The first tracked trial pays once per worker process for
starting the logging process; it is reported on its own.
Then, per trial:

* ``blocked``: time the training process spends in the tracker (constructor, callbacks, the
  final join, close);
* ``logger cpu``: CPU time the logging process spent on this trial (from /proc);
* ``bound``: (blocked + logger cpu) / trial wall: what tracking costs a trial even with no
  spare core (the default sweep runs 2 trials on the 2 cores);
* ``end-to-end``: median wall of tracked trials vs untracked ones (noisy on a busy machine),
  and the same for CPU time (training process, plus the logging process when tracked).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXPERIMENT = "overhead-benchmark"


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Timed:
    """Forwards callback events to the tracker, adding up the wall time they take."""

    def __init__(self, inner, own: dict) -> None:
        self.inner, self.own = inner, own

    def _call(self, name, *args):
        w = time.perf_counter()
        try:
            return getattr(self.inner, name)(*args)
        finally:
            self.own["wall"] += time.perf_counter() - w

    def on_train_start(self, info):
        return self._call("on_train_start", info)

    def on_episode_end(self, episode, step, metrics):
        return self._call("on_episode_end", episode, step, metrics)

    def on_eval(self, index, episode, step, metrics):
        return self._call("on_eval", index, episode, step, metrics)

    def on_train_end(self, objective, status):
        return self._call("on_train_end", objective, status)


def trial(cfg, out: Path, tracked: bool) -> dict:
    """One training run as a trial runs it; its wall time and tracking's share."""
    from sweeper.tracking import tracking_callback
    from sweeper.train import run

    own = {"wall": 0.0}
    t0, c0 = time.perf_counter(), time.process_time()
    callbacks, tracker, pid, cpu0 = [], None, None, 0.0
    if tracked:
        w = time.perf_counter()
        tracker = tracking_callback(cfg, out)
        own["wall"] += time.perf_counter() - w
        pid = tracker._proc.proc.pid
        cpu0 = _proc_cpu(pid)
        callbacks.append(_Timed(tracker, own))
    objective = run(cfg, out, callbacks)
    if tracker is not None:
        w = time.perf_counter()
        tracker.close(None)
        own["wall"] += time.perf_counter() - w
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    logger_cpu = _proc_cpu(pid) - cpu0 if pid is not None else 0.0
    return {
        "wall": wall,
        "cpu": cpu,
        "blocked": own["wall"],
        "logger_cpu": logger_cpu,
        "objective": objective,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=80)
    p.add_argument("--pairs", type=int, default=8, help="tracked/untracked trial pairs")
    p.add_argument("--store", default=None, help="outputs dir of the store (default: a temp dir)")
    args = p.parse_args()

    store_dir = Path(args.store or tempfile.mkdtemp(prefix="tracking-overhead-"))
    os.environ["SWEEPER_OUTPUTS"] = str(store_dir)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from sweeper.cli import compose

    # Done once per store and sweep before any trial (the sweeper creates the study's parent
    # run and experiment): the schema and the experiment, in a separate process.
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from sweeper.tracking import store; "
            f"store.get_or_create_experiment(store.client(), {EXPERIMENT!r})",
        ],
        check=True,
    )
    # the trial of conf/sweep/sensitivity.yaml (at its default hyperparameters)
    sweep = ["eval.every=20", "eval.episodes=5", "train.plot=false", "train.save_model=false"]
    cfg = compose(
        [
            *(sweep if args.episodes == 80 else []),
            f"train.episodes={args.episodes}",
            "train.progress=false",
            f"tracking.experiment={EXPERIMENT}",
        ]
    )
    first = trial(cfg, store_dir / "runs" / "first", True)
    print(
        f"first tracked trial of a worker process: wall {first['wall']:.2f} s, blocked "
        f"{first['blocked']:.3f} s, logging process start + run {first['logger_cpu']:.2f} s CPU"
    )
    on, off = [], []
    for i in range(args.pairs):
        for tracked in (True, False) if i % 2 == 0 else (False, True):
            res = trial(cfg, store_dir / "runs" / f"{'on' if tracked else 'off'}-{i}", tracked)
            (on if tracked else off).append(res)
    med = statistics.median
    wall_on, wall_off = med(r["wall"] for r in on), med(r["wall"] for r in off)
    blocked = med(r["blocked"] for r in on)
    logger = med(r["logger_cpu"] for r in on)
    bound = med((r["blocked"] + r["logger_cpu"]) / r["wall"] for r in on)
    same = len({r["objective"] for r in on + off}) == 1
    print(f"episodes={args.episodes} pairs={args.pairs} store={store_dir} (medians per trial)")
    print(f"trial wall: tracked {wall_on:.3f} s, untracked {wall_off:.3f} s")
    print(f"blocked in the tracker: {1000 * blocked:.1f} ms ({100 * blocked / wall_on:.2f}%)")
    print(f"logging process CPU: {1000 * logger:.1f} ms ({100 * logger / wall_on:.2f}%)")
    print(f"bound (blocked + logging CPU, no spare core): {100 * bound:.2f}% of the trial's wall")
    cpu_on, cpu_off = med(r["cpu"] for r in on), med(r["cpu"] for r in off)
    print(f"end-to-end wall: {100 * (wall_on - wall_off) / wall_off:+.2f}% (noisy)")
    print(
        f"end-to-end CPU (training process + logging process): tracked "
        f"{cpu_on + logger:.3f} s, untracked {cpu_off:.3f} s, "
        f"{100 * (cpu_on + logger - cpu_off) / cpu_off:+.2f}%"
    )
    print("walls on: " + " ".join(f"{r['wall']:.3f}" for r in on))
    print("walls off: " + " ".join(f"{r['wall']:.3f}" for r in off))
    print(f"objective identical on and off: {same}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
