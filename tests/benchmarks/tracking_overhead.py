"""Logging overhead of MLflow tracking on a default trial: tracking on vs off.

Run from the repository root: ``.venv/bin/python tests/benchmarks/tracking_overhead.py``
(options: ``--episodes 500`` — the default trial, DQN on CartPoleSimple; fewer for a quick
proxy — ``--repeats 1``, ``--store DIR``). Not collected by pytest (no ``test_`` prefix).

Each measurement is a fresh process (so mlflow's import, ~2 s, is paid as a real trial pays
it) running ``sweeper.train.run`` on the composed default config:

* ``off``: no tracking callback;
* ``on``: ``tracking_callback``, the run, and ``close``. The tracker does its MLflow work
  (import mlflow, open the store, create the run, params, each evaluation's log_batch,
  artifacts) in a logging child process; measured directly are the time the training
  process is blocked by tracking (constructor, every callback call, the final join, close)
  and the logging process's CPU time.

Reported: the blocked time as a share of the run's wall time; an upper bound that adds all
of the logging process's CPU time (what tracking would cost with no spare core); and
the end-to-end difference on / off (noisy when other jobs share the machine). The embedded
store is created before timing: schema creation is a one-time cost per store.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _measure(variant: str, episodes: int, out: Path) -> dict:
    from sweeper.cli import compose
    from sweeper.train import run

    overrides = [
        f"train.episodes={episodes}",
        "train.progress=false",
        f"tracking.enabled={'true' if variant == 'on' else 'false'}",
        "tracking.experiment=overhead-benchmark",
    ]
    cfg = compose(overrides)
    t0, c0 = time.perf_counter(), time.process_time()
    callbacks = []
    own = {"wall": 0.0, "cpu": 0.0}
    if variant == "on":
        from sweeper.tracking import tracking_callback

        w, c = time.perf_counter(), time.process_time()
        tracker = tracking_callback(cfg, out)
        own["wall"] += time.perf_counter() - w
        own["cpu"] += time.process_time() - c
        callbacks.append(_Timed(tracker, own))
    objective = run(cfg, out, callbacks)
    if variant == "on":
        w, c = time.perf_counter(), time.process_time()
        tracker.close(None)
        own["wall"] += time.perf_counter() - w
        own["cpu"] += time.process_time() - c
    return {
        "worker_cpu": _children_cpu(),
        "variant": variant,
        "wall": time.perf_counter() - t0,
        "cpu": time.process_time() - c0,
        "own_wall": own["wall"],
        "own_cpu": own["cpu"],
        "objective": objective,
    }


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (the MLflow logging process)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class _Timed:
    """Forwards callback events to the tracker, adding up the time they take."""

    def __init__(self, inner, own: dict) -> None:
        self.inner, self.own = inner, own

    def _call(self, name, *args):
        w, c = time.perf_counter(), time.process_time()
        try:
            return getattr(self.inner, name)(*args)
        finally:
            self.own["wall"] += time.perf_counter() - w
            self.own["cpu"] += time.process_time() - c

    def on_train_start(self, info):
        return self._call("on_train_start", info)

    def on_episode_end(self, episode, step, metrics):
        return self._call("on_episode_end", episode, step, metrics)

    def on_eval(self, index, episode, step, metrics):
        return self._call("on_eval", index, episode, step, metrics)

    def on_train_end(self, objective, status):
        return self._call("on_train_end", objective, status)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=500)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--store", default=None, help="outputs dir of the store (default: a temp dir)")
    p.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child, args.episodes, Path(args.out))))
        return

    store_dir = Path(args.store or tempfile.mkdtemp(prefix="tracking-overhead-"))
    env = {**os.environ, "SWEEPER_OUTPUTS": str(store_dir)}
    env.pop("MLFLOW_TRACKING_URI", None)
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from sweeper.tracking import store; store.prepare_store(store.default_tracking_uri())",
        ],
        env=env,
        check=True,
    )
    results = []
    for r in range(args.repeats):
        for variant in ("off", "on") if r % 2 == 0 else ("on", "off"):
            out = store_dir / "runs" / f"{variant}-{r}"
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    variant,
                    "--episodes",
                    str(args.episodes),
                    "--out",
                    str(out),
                ],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(res)
            print(
                f"{variant:>3}: wall {res['wall']:7.2f} s  cpu {res['cpu']:7.2f} s"
                + (
                    f"  tracker: main thread blocked {res['own_wall']:.2f} s, "
                    f"logging process cpu {res['worker_cpu']:.2f} s"
                    if variant == "on"
                    else ""
                ),
                flush=True,
            )
    on = [r for r in results if r["variant"] == "on"]
    off = [r for r in results if r["variant"] == "off"]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    own_share = mean([r["own_wall"] / r["wall"] for r in on])
    bound = mean([(r["own_wall"] + r["worker_cpu"]) / r["wall"] for r in on])
    e2e = (mean([r["wall"] for r in on]) - mean([r["wall"] for r in off])) / mean(
        [r["wall"] for r in off]
    )
    cpu = (mean([r["cpu"] for r in on]) - mean([r["cpu"] for r in off])) / mean(
        [r["cpu"] for r in off]
    )
    same = {r["objective"] for r in results}
    print(f"episodes={args.episodes} repeats={args.repeats} store={store_dir}")
    print(f"main thread blocked by tracking: {100 * own_share:.2f}% of the run's wall time")
    print(
        f"upper bound (blocked + all logging-process CPU, as if on one core): "
        f"{100 * bound:.2f}% of the run's wall time"
    )
    print(f"end-to-end: wall {100 * e2e:+.2f}%, cpu {100 * cpu:+.2f}% (on vs off; noisy)")
    print(f"objective identical on and off: {len(same) == 1}")


if __name__ == "__main__":
    main()
