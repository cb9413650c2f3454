"""How many workers one PostgreSQL study serves, and how fast an MLflow server takes runs.

Run from the repository root (PostgreSQL up, ``$SWEEPER_TEST_PG_URL`` or ``--pg URL``)::

    .venv/bin/python tests/benchmarks/storage_scaling.py             # both parts
    .venv/bin/python tests/benchmarks/storage_scaling.py --part optuna --seconds 20

Not collected by pytest (no ``test_`` prefix).

**optuna**: N driver processes (N = 1, 2, 4, 8, 16) share one new study in the RDB storage,
each looping ``study.ask()`` / ``study.tell()`` of a trivial objective (one float parameter,
RandomSampler, so the sampler costs nothing and the storage is what is measured) for
``--seconds``. Printed per N: trials/s over all drivers, p50/p99 latency of ask and of tell.
Where the trials/s stop growing with N, the storage is the bottleneck (on a small machine the
drivers and the database also share its cores: say so with the figures).

**mlflow**: a real ``mlflow server`` (SQLite backend, one gunicorn worker, as ``sweeper ui``
would run it; ``--mlflow-backend`` for PostgreSQL) and M threads (M = 1, 2, 4, 8) each logging
runs with the sweeper's pattern (``sweeper.tracking.worker.Executor``: create_run with the
tags, one params batch, 6 metric batches of a 500-episode run logged every 10th episode, the
outcome tag, 3 small artifacts, set_terminated). Printed: runs/s and p50/p99 seconds per run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np


# -- Optuna on PostgreSQL -------------------------------------------------------------------
def _driver(url: str, study_name: str, seconds: float, start_at: float, out) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"pool_size": 1})
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=None)
    study.sampler = optuna.samplers.RandomSampler()
    dist = optuna.distributions.FloatDistribution(0.0, 1.0)
    asks, tells = [], []
    while time.time() < start_at:
        time.sleep(0.01)
    end = start_at + seconds
    while time.time() < end:
        t0 = time.perf_counter()
        trial = study.ask({"x": dist})
        t1 = time.perf_counter()
        study.tell(trial, trial.params["x"] ** 2)
        t2 = time.perf_counter()
        asks.append(t1 - t0)
        tells.append(t2 - t1)
    out.put((asks, tells))


def optuna_part(url: str, ns: list[int], seconds: float) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ctx = multiprocessing.get_context("spawn")
    print(f"optuna {optuna.__version__}, RDB storage {url.split('@')[-1]}, {seconds:g} s per N, "
          f"{os.cpu_count()} cores")  # fmt: skip
    print(f"{'N':>3} {'trials':>7} {'trials/s':>9} {'ask p50':>9} {'ask p99':>9} "
          f"{'tell p50':>9} {'tell p99':>9}  (ms)")  # fmt: skip
    for n in ns:
        name = f"scaling-{n}-{uuid.uuid4().hex[:8]}"
        optuna.create_study(study_name=name, storage=url)
        out = ctx.Queue()
        start_at = time.time() + 3.0 + 0.3 * n  # every driver connected before the clock
        procs = [
            ctx.Process(target=_driver, args=(url, name, seconds, start_at, out)) for _ in range(n)
        ]
        for p in procs:
            p.start()
        asks, tells = [], []
        for _ in procs:
            a, t = out.get()
            asks += a
            tells += t
        for p in procs:
            p.join()
        a50, a99, t50, t99 = (
            1000 * float(np.percentile(xs, p)) for xs in (asks, tells) for p in (50, 99)
        )
        rate = len(asks) / seconds
        print(f"{n:>3} {len(asks):>7} {rate:>9.1f} {a50:>9.2f} {a99:>9.2f} {t50:>9.2f} {t99:>9.2f}",
              flush=True)  # fmt: skip
        optuna.delete_study(study_name=name, storage=url)


# -- MLflow server --------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_run(uri: str, experiment: str, files: Path) -> float:
    from sweeper.tracking.worker import Executor

    t0 = time.perf_counter()
    ex = Executor()
    tags = {f"tag_{i}": "x" * 20 for i in range(18)}
    params = {f"agent.p{i}": str(i) for i in range(40)}
    ex.apply("start", spec={"uri": uri, "experiment_name": experiment, "tags": tags,
                            "params": params})  # fmt: skip
    ts = int(time.time() * 1000)
    for chunk in range(6):  # 5 evaluations and the end, every 10th of 500 episodes
        items = [[k, 1.0, ts, e] for e in range(chunk * 80, chunk * 80 + 80, 10)
                 for k in ("return", "length", "epsilon", "loss", "max_q")]  # fmt: skip
        items += [["eval_return_mean", 1.0, ts, chunk], ["env_steps", 100.0, ts, chunk]]
        ex.apply("metrics", items=items)
    ex.apply("tags", tags={"outcome": "finished"})
    ex.apply("artifacts", directory=str(files))
    ex.apply("terminate", status="FINISHED")
    return time.perf_counter() - t0


def mlflow_part(threads: list[int], seconds: float, backend: str | None) -> None:
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # as in the logging child
    import mlflow

    root = Path(tempfile.mkdtemp(prefix="mlflow-scaling-"))
    port = _free_port()
    backend = backend or f"sqlite:///{root / 'server.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", backend,
         "--default-artifact-root", (root / "artifacts").as_uri()],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 150
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    sys.exit("mlflow server did not start")
                time.sleep(0.5)
        files = root / "run-files"
        files.mkdir()
        for name, size in (("config.yaml", 2000), ("episodes.csv", 20000), ("result.json", 800)):
            (files / name).write_text("x" * size)
        for _ in range(5):  # the server's first requests load its handlers
            _one_run(uri, "warmup", files)
        print(f"mlflow {mlflow.__version__} server, backend {backend.split('://')[0]}, "
              f"1 worker, {seconds:g} s per M")  # fmt: skip
        print(f"{'M':>3} {'runs':>6} {'runs/s':>8} {'s/run p50':>10} {'s/run p99':>10}")
        for m in threads:
            durations: list[float] = []
            lock = threading.Lock()
            end = time.monotonic() + seconds

            def loop(durations=durations, lock=lock, end=end, m=m) -> None:
                while time.monotonic() < end:
                    d = _one_run(uri, f"scaling-{m}", files)
                    with lock:
                        durations.append(d)

            t0 = time.monotonic()
            workers = [threading.Thread(target=loop) for _ in range(m)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            wall = time.monotonic() - t0
            print(f"{m:>3} {len(durations):>6} {len(durations) / wall:>8.2f} "
                  f"{statistics.median(durations):>10.3f} "
                  f"{float(np.percentile(durations, 99)):>10.3f}", flush=True)  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=["optuna", "mlflow", "both"], default="both")
    p.add_argument("--pg", default=os.environ.get("SWEEPER_TEST_PG_URL"))
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--drivers", default="1,2,4,8,16")
    p.add_argument("--threads", default="1,2,4,8")
    p.add_argument("--mlflow-backend", default=None, help="default: SQLite in a temp dir")
    args = p.parse_args()
    if args.part in ("optuna", "both"):
        if not args.pg:
            sys.exit("--pg URL (or $SWEEPER_TEST_PG_URL) is needed for the optuna part")
        optuna_part(args.pg, [int(n) for n in args.drivers.split(",")], args.seconds)
    if args.part in ("mlflow", "both"):
        mlflow_part([int(n) for n in args.threads.split(",")], args.seconds, args.mlflow_backend)


if __name__ == "__main__":
    main()
