"""MLflow's share of the main job: the default sweep with tracking on vs off.

Run from the repository root: ``.venv/bin/python tests/benchmarks/tracking_overhead.py``.
Not collected by pytest (no ``test_`` prefix). Options: ``--repeats 1`` (pairs of runs,
alternating which goes first), ``--sweep sensitivity`` (the README's first command),
extra overrides after ``--`` (e.g. ``-- train.episodes=100`` for a quick look).

Each run is the README's first command, ``python -m sweeper.train +sweep=<sweep>``, in a fresh
working directory (its own ``outputs/``: a new study, a new embedded MLflow store), once as is
and once with ``tracking.enabled=false``; the same config and seeds, so both train the same
trials. Printed per run: wall time, CPU time of the whole process tree (the sweeper, its worker
processes and, when tracked, MLflow's; polled from ``/proc`` every 0.2 s: trial workers are
children of the sweeper's fork server, which ``RUSAGE_CHILDREN`` misses), and the MLflow runs
the tracked store holds. The overhead is the tracked run's extra wall (and CPU) over the
untracked one's. What it includes: creating ``outputs/mlflow.db`` (once per store), importing
MLflow in each process that logs, the study's parent run, and every run's create / log_batch /
artifacts / terminate calls through MLflow's public client.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _tree_cpu(root: int, seen: dict[int, float]) -> None:
    """Record the CPU seconds (user + system) of ``root`` and every descendant now alive.
    Polled: trial workers are children of the sweeper's fork server, which the sweeper does
    not reap, so ``RUSAGE_CHILDREN`` misses them."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid = int(entry.name)
            parents[pid] = int(fields[1])
            cpu[pid] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {root}, {root}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - tree
        tree |= frontier
    for pid in tree:
        if pid in cpu:
            seen[pid] = max(seen.get(pid, 0.0), cpu[pid])


def one(sweep: str, tracked: bool, extra: list[str]) -> dict:
    cwd = Path(tempfile.mkdtemp(prefix=f"overhead-{'on' if tracked else 'off'}-"))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.pop("SWEEPER_OUTPUTS", None)
    cmd = [sys.executable, "-m", "sweeper.train", f"+sweep={sweep}", *extra]
    if not tracked:
        cmd.append("tracking.enabled=false")
    seen: dict[int, float] = {}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.2):
            _tree_cpu(proc.pid, seen)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    poller.join()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    cpu = sum(seen.values())
    runs = None
    db = cwd / "outputs" / "mlflow.db"
    if tracked and db.is_file():
        import sqlite3

        with sqlite3.connect(db) as con:
            runs = con.execute("SELECT count(*) FROM runs").fetchone()[0]
    return {"wall": wall, "cpu": cpu, "runs": runs, "verdict": _verdict(stdout)}


def _verdict(stdout: str) -> str:
    lines = [ln for ln in stdout.splitlines() if "verdict" in ln.lower()]
    return lines[0].strip() if lines else ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=1, help="tracked/untracked pairs")
    p.add_argument("--sweep", default="sensitivity")
    p.add_argument("overrides", nargs="*", help="extra overrides (after --)")
    args = p.parse_args()
    on, off = [], []
    for i in range(args.repeats):
        for tracked in (True, False) if i % 2 == 0 else (False, True):
            res = one(args.sweep, tracked, list(args.overrides))
            (on if tracked else off).append(res)
            print(
                f"{'tracked  ' if tracked else 'untracked'} wall {res['wall']:7.1f} s, "
                f"process-tree CPU {res['cpu']:7.1f} s"
                + (f", {res['runs']} MLflow runs" if res["runs"] is not None else ""),
                flush=True,
            )
    wall_on = sum(r["wall"] for r in on) / len(on)
    wall_off = sum(r["wall"] for r in off) / len(off)
    cpu_on = sum(r["cpu"] for r in on) / len(on)
    cpu_off = sum(r["cpu"] for r in off) / len(off)
    print(
        f"+sweep={args.sweep} {' '.join(args.overrides)} (mean of {args.repeats}): wall "
        f"{wall_on:.1f} s tracked vs {wall_off:.1f} s untracked: "
        f"{100 * (wall_on - wall_off) / wall_off:+.2f}%; CPU {cpu_on:.1f} s vs {cpu_off:.1f} s: "
        f"{100 * (cpu_on - cpu_off) / cpu_off:+.2f}%"
    )
    same = len({r["verdict"] for r in on + off}) == 1
    print(f"same verdict line tracked and untracked: {same}")


if __name__ == "__main__":
    main()
