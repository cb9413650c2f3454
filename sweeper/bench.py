"""``python -m sweeper.bench``: env-steps/s and updates/s of DQN training, one thread.

Also times the seed notebook's DQN loop (transcribed below: deque replay, autograd update,
torch action selection) on the same machine, so the speed-up is measured, not quoted.

``--main-job`` runs the README's main job end to end and compares it with the seed loop on
the same env steps. ``--population`` times the population engine instead: K default DQN members on
CartPoleSimple in lockstep (K = 1, 4, 8, 16, 32), with the arithmetic it achieves, the
time per member-update, and the memory of a K=32 population with 50k-transition rings.
Every figure is measured in the same run as the seed loop, so the ratios hold on a loaded
machine even when the absolute rates do not. The compiled update (``sweeper.agents.
member_update``) is loaded before any timing; ``--population`` also measures what compiling
it costs a machine once (an empty numba cache) and what loading it costs each process.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import pstats
import random
import resource
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from sweeper.agents.dqn import load_compiled_update
from sweeper.agents.networks import StackedMLP
from sweeper.callbacks import Callback
from sweeper.config import compose_config
from sweeper.seeding import single_threaded_blas
from sweeper.train import budget_of, build, seed_config
from sweeper.training import Member, Population, train


class _Counter(Callback):
    def __init__(self) -> None:
        self.steps = 0

    def on_episode_end(self, episode, step, metrics) -> None:
        self.steps = step


def bench_sweeper(env: str, steps: int, overrides: list[str]) -> tuple[float, float]:
    """Steps/s and updates/s of our loop (evaluation off) on ``steps`` env steps."""
    cfg = compose_config(
        [
            f"env={env}",
            f"train.total_steps={steps}",
            "train.episodes=null",
            "eval.every=0",
            "eval.episodes=1",
            *overrides,
        ]
    )
    agent, env_, eval_env = build(cfg)
    t0 = time.perf_counter()
    train(agent, env_, eval_env, budget_of(cfg), cfg.seed, _Counter(), cfg.train.probe_max_q)
    dt = time.perf_counter() - t0
    # ``updates`` is per member (an array of one here); tabular agents learn every step
    updates = getattr(agent, "updates", agent.steps)
    return steps / dt, float(np.sum(updates)) / dt


def bench_seed_notebook(steps: int, seed: int = 42) -> float:
    """The seed notebook's DQN (section 6) on its CartPoleSimple, transcribed; steps/s."""
    from sweeper.envs import make_env

    torch.manual_seed(seed)
    random.seed(seed)
    net = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    target = nn.Sequential(
        nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2)
    )
    target.load_state_dict(net.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    buffer: deque = deque(maxlen=10_000)
    env = make_env("sweeper/CartPoleSimple-v0")
    rng = np.random.default_rng(seed)
    state, _ = env.reset(seed=seed)
    eps, updates = 1.0, 0
    t0 = time.perf_counter()
    for _ in range(steps):
        if rng.random() < eps:
            action = int(rng.integers(2))
        else:
            with torch.no_grad():
                action = net(torch.FloatTensor(state).unsqueeze(0)).argmax(dim=1).item()
        next_state, reward, term, trunc, _ = env.step(action)
        buffer.append((state, action, reward, next_state, float(term)))
        if len(buffer) >= 64:
            s, a, r, s2, d = zip(*random.sample(buffer, 64))
            s, s2 = torch.FloatTensor(np.array(s)), torch.FloatTensor(np.array(s2))
            a, r, d = torch.LongTensor(a), torch.FloatTensor(r), torch.FloatTensor(d)
            q = net(s).gather(1, a.unsqueeze(1)).squeeze(1)
            with torch.no_grad():
                y = r + 0.99 * target(s2).max(dim=1)[0] * (1 - d)
            loss = F.mse_loss(q, y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            updates += 1
            if updates % 100 == 0:
                target.load_state_dict(net.state_dict())
        state = next_state
        if term or trunc:
            state, _ = env.reset()
            eps = max(0.01, eps * 0.995)
    return steps / (time.perf_counter() - t0)


# --- the population engine ----------------------------------------------------------------
#: Population sizes timed by ``--population`` (1, 16 and 32 are the ones the issue asks for).
POPULATION_SIZES = (1, 4, 8, 16, 32)
#: Env steps per member in ``--population``: the whole run stays near a minute on 2 loaded cores.
POPULATION_STEPS = 3_000
#: The seed loop learns once its deque holds a batch: from its 64th step on.
SEED_BATCH = 64


def one_thread() -> None:
    """One torch thread and one BLAS thread, as ``seed_everything`` sets them, before any
    timing: the seed loop runs before :func:`build` would set them."""
    torch.set_num_threads(1)
    single_threaded_blas()


def blas_threads() -> str:
    """The BLAS thread counts in effect, as threadpoolctl sees them (``-`` when none)."""
    from threadpoolctl import threadpool_info

    counts = sorted({int(i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"})
    return ",".join(map(str, counts)) or "-"


def load_average() -> str:
    """The 1/5/15-minute load: the rates below mean little without it on a shared machine."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # not every platform has one
        return "n/a"


def population_configs(
    size: int, steps: int, overrides: Sequence[str] = (), first_seed: int = 42
) -> list[DictConfig]:
    """``size`` member configs: the default DQN on CartPoleSimple, evaluation off, ``steps``
    env steps each, seeds ``first_seed, first_seed + 1, ...``. Composed once and copied per
    seed (``seed_config``), since composing costs ~0.1 s a config."""
    base = compose_config(
        [
            "env=cartpole_simple",
            f"train.total_steps={steps}",
            "train.episodes=null",
            "eval.every=0",
            "eval.episodes=1",
            *overrides,
        ]
    )
    return [seed_config(base, first_seed + k) for k in range(size)]


def update_flops(net: StackedMLP, batch: int) -> int:
    """Floating-point operations of one member's gradient step, counted from the weight
    shapes (so any ``hidden_sizes`` or dueling heads), 2*m*n*k per (m x n) @ (n x k) product:

    * forward of the online net on the batch of s and of the target net on s' (one product
      per weight matrix each);
    * backward: the weight gradient of every layer and the input gradient of every layer but
      the first (nothing needs d loss / d s).

    Not counted: bias adds, ReLUs and their masks, bias gradients, the TD target and loss,
    gradient clipping and Adam (~15 flops a parameter), the one-row forward that picks each
    action (0.4% of the above at 4-64-64-2), and Double DQN's extra online forward on s'.
    Default DQN (B=64, 4-64-64-2): forward 573,440 each, backward 1,114,112, total 2,260,992.
    """
    weights = [s for s in net.shapes if len(s) == 2]  # (out, in) per linear layer
    first = weights[0]
    products = sum(2 * batch * o * i for o, i in weights)
    return 2 * products + products + (products - 2 * batch * first[0] * first[1])


def matmul_seconds(net: StackedMLP, batch: int, repeats: int = 100) -> float:
    """Seconds per member-update of the products :func:`update_flops` counts and nothing
    else, in the shapes and layouts :class:`StackedMLP` uses (x @ W.T on (out, in) weight
    views, g.T @ x, g @ W), over ``net.members`` members: the ceiling the update's
    arithmetic allows on this machine, measured next to what it achieves."""
    rng = np.random.default_rng(0)
    k = net.members
    weights = [rng.standard_normal((k, *s), dtype=np.float32) for s in net.shapes if len(s) == 2]
    inputs = [rng.standard_normal((k, batch, w.shape[2]), dtype=np.float32) for w in weights]
    grads = [rng.standard_normal((k, batch, w.shape[1]), dtype=np.float32) for w in weights]

    def update() -> None:
        for _ in range(2):  # online net on s, target net on s'
            for x, w in zip(inputs, weights, strict=True):
                np.matmul(x, w.transpose(0, 2, 1))
        for i, (x, w, g) in enumerate(zip(inputs, weights, grads, strict=True)):
            np.matmul(g.transpose(0, 2, 1), x)
            if i:
                np.matmul(g, w)

    update()
    best = math.inf
    for _ in range(3):  # best of three: the machine may be busy
        t0 = time.perf_counter()
        for _ in range(repeats):
            update()
        best = min(best, (time.perf_counter() - t0) / repeats)
    return best / k


def sgemm_peak(n: int = 1024, repeats: int = 5) -> float:
    """GFLOP/s of one float32 (n x n) @ (n x n) product on one thread, best of ``repeats``:
    the core's practical peak, against which an update's products are measured."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    out = np.empty_like(a)
    np.matmul(a, b, out=out)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


_FIRST_UPDATE = """
import json, time
t0 = time.perf_counter()
from sweeper.bench import one_thread, population_configs
from sweeper.train import build
from sweeper.training import Member, Population
from sweeper.callbacks import Callback
from sweeper.train import budget_of
one_thread()
cfgs = population_configs(1, 80)
agent, env, eval_env = build(cfgs)
population = Population(agent, env, eval_env, [Member(budget_of(cfgs[0]), 42, Callback())])
t1 = time.perf_counter()
for _ in population.events():
    pass
print(json.dumps({"imports_s": t1 - t0, "run_s": time.perf_counter() - t1}))
"""


def compile_seconds() -> tuple[float, float, float]:
    """Seconds of a fresh process's first 80-step run (16 updates) with an empty numba cache
    (it compiles the update and writes the cache), of the same run in a second fresh process
    with that cache (it loads the compiled code; the 80 steps themselves take ~0.02 s), and
    that second process's imports."""
    import tempfile

    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="sweeper-numba-cache-") as cache:
        env = {**os.environ, "PYTHONPATH": path, "NUMBA_CACHE_DIR": cache}
        runs = []
        for _ in range(2):
            done = subprocess.run(
                [sys.executable, "-c", _FIRST_UPDATE],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return runs[0]["run_s"], runs[1]["run_s"], runs[1]["imports_s"]


def warm_up() -> None:
    """Load (or compile) the compiled update before anything is timed."""
    load_compiled_update()


@dataclass(frozen=True)
class PopulationTiming:
    """One timed population run: K members, ``steps`` env steps each, evaluation off."""

    size: int
    steps: int
    wall_s: float
    updates: int
    update_s: float  # wall time inside agent.update (all members' batched steps)
    flops_per_update: int

    @property
    def steps_per_s(self) -> float:
        return self.size * self.steps / self.wall_s

    @property
    def updates_per_s(self) -> float:
        return self.updates / self.wall_s

    @property
    def gflops(self) -> float:
        """Achieved GFLOP/s of the counted arithmetic over the whole run's wall time."""
        return self.flops_per_update * self.updates / self.wall_s / 1e9

    @property
    def us_per_update(self) -> float:
        """Time inside ``agent.update`` per member-update (sampling, both forwards,
        backward, clipping, Adam, target sync)."""
        return self.update_s / max(self.updates, 1) * 1e6


def _timed_population(
    size: int, steps: int, overrides: Sequence[str] = ()
) -> tuple[Population, list[float]]:
    """A ready-to-run population and a one-item list accumulating the seconds spent in
    ``agent.update`` (the instance attribute shadows the method, so the loop calls it)."""
    cfgs = population_configs(size, steps, overrides)
    agent, env, eval_env = build(cfgs)
    members = [Member(budget_of(c), int(c.seed), Callback()) for c in cfgs]
    population = Population(agent, env, eval_env, members, probe_max_q=True)
    inner, spent = agent.update, [0.0]

    def update(members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        out = inner(members)
        spent[0] += time.perf_counter() - t0
        return out

    agent.update = update
    return population, spent


def bench_population(size: int, steps: int, overrides: Sequence[str] = ()) -> PopulationTiming:
    """Build a ``size``-member population and run its events to the end; times the run only
    (not composing, building or seeding)."""
    population, spent = _timed_population(size, steps, overrides)
    t0 = time.perf_counter()
    for _ in population.events():
        pass
    wall = time.perf_counter() - t0
    agent = population.agent
    return PopulationTiming(
        size,
        steps,
        wall,
        int(agent.updates.sum()),
        spent[0],
        update_flops(agent.online, agent.buffer.batch_size),
    )


def population_net(size: int, steps: int) -> StackedMLP:
    """The online network of a ``size``-member default population (shapes only)."""
    return build(population_configs(size, steps)).agent.online


def profile_population(size: int, steps: int, top: int = 15) -> str:
    """cProfile of one population run, the ``top`` functions by own time. Numpy ufuncs
    (``matmul``, ``add``, ...) have no entry of their own: their time is their caller's."""
    population, _ = _timed_population(size, steps)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in population.events():
        pass
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def _maxrss_bytes() -> int:
    """``getrusage`` peak resident set size (Linux reports KiB, macOS bytes). On Linux a
    child keeps its parent's peak across fork and exec, so in :func:`bench_memory`'s child it
    is at least this bench's own peak; :func:`_peak_rss_bytes` is the child's own."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _peak_rss_bytes() -> int:
    """Peak RSS of this process image: ``VmHWM`` (reset by exec), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return _maxrss_bytes()


def _touch(array: np.ndarray) -> None:
    """Write one element per page of ``array``: ``np.zeros`` memory is mapped lazily, so a
    ring counts in RSS only once written, as it is when full."""
    flat = array.reshape(-1)
    flat[:: max(1, 4096 // array.itemsize)] += 0


def memory_probe(size: int, capacity: int, steps: int) -> dict[str, int]:
    """Peak RSS of this process after imports, after building and a short run of a
    ``size``-member population with ``capacity``-transition rings, and once every page of
    the rings is written (what a run that fills them reaches); plus ``agent.nbytes()`` and
    ``ru_maxrss``. Meant for a fresh process (:func:`bench_memory`).

    The short run already makes the rings resident: numpy asks for transparent huge pages
    on arrays of 4 MiB and more, so the first transition of each member faults in 2 MiB.
    """
    one_thread()
    imported = _peak_rss_bytes()
    population, _ = _timed_population(size, steps, [f"buffer.capacity={capacity}"])
    for _ in population.events():
        pass
    ran = _peak_rss_bytes()
    agent = population.agent
    buffer = agent.buffer
    for name in ("observations", "next_observations", "actions", "rewards", "terminated"):
        _touch(getattr(buffer, name))
    return {
        "imported": imported,
        "ran": ran,
        "full": _peak_rss_bytes(),
        "ru_maxrss": _maxrss_bytes(),
        "nbytes": int(agent.nbytes()),
        "buffer_nbytes": int(buffer.nbytes()),
    }


def bench_memory(size: int = 32, capacity: int = 50_000, steps: int = 200) -> dict[str, int]:
    """:func:`memory_probe` in a fresh interpreter: ``ru_maxrss`` is a lifetime peak, so in
    this process it would include the seed loop and every population timed before."""
    code = (
        "import json; from sweeper.bench import memory_probe; "
        f"print(json.dumps(memory_probe({size}, {capacity}, {steps})))"
    )
    # The child imports this package from where this file lies, installed or not.
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": path},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main_population(steps: int, sizes: Sequence[int], profile: bool) -> None:
    """``--population``: the seed loop, then each population size, then memory."""
    t_start = time.perf_counter()
    mib = 2**20
    print(
        f"torch {torch.__version__}, numpy {np.__version__}; threads: torch "
        f"{torch.get_num_threads()}, BLAS {blas_threads()}; load average {load_average()} "
        f"on {os.cpu_count()} CPUs"
    )
    # The seed loop is timed before and after the populations, and the ratios use the mean:
    # a shared VM's speed drifts by 10-20% within a minute, which a single timing puts
    # entirely into the ratios.
    warm_up()
    peak = sgemm_peak()
    seed_before = bench_seed_notebook(steps)
    timings = [bench_population(size, steps) for size in sizes]
    seed_after = bench_seed_notebook(steps)
    seed_sps = (seed_before + seed_after) / 2
    seed_ups = seed_sps * max(0, steps - SEED_BATCH + 1) / steps  # it learns from step 64
    probe = population_configs(1, steps)
    agent = build(probe).agent
    flops = update_flops(agent.online, agent.buffer.batch_size)
    dims = [agent.online.obs_dim, *agent.online.hidden_sizes, agent.online.n_actions]
    batch = agent.buffer.batch_size
    print(
        f"seed notebook DQN loop: {seed_sps:.0f} env-steps/s, {seed_ups:.0f} updates/s, "
        f"{seed_ups * flops / 1e9:.2f} GFLOP/s ({steps} steps; the mean of {seed_before:.0f} "
        f"before and {seed_after:.0f} after the populations)"
    )
    print(
        f"one member-update: {flops / 1e6:.3f} MFLOP (B={batch}, "
        f"{'-'.join(map(str, dims))}: online forward on s, target forward on s', "
        "backward; matmuls only, 2*m*n*k each)"
    )
    print(
        f"population: default DQN on cartpole_simple, {steps} env steps per member, "
        "evaluation off, max-Q probe on"
    )
    limit_us = flops / (peak * 1e9) * 1e6
    print(
        f"sgemm peak on one thread (1024^3, best of 5): {peak:.1f} GFLOP/s, so one "
        f"member-update's products take at least {limit_us:.1f} us ('of limit' below: that "
        "over the measured us/update)"
    )
    header = (
        f"{'K':>3s} {'env-steps/s':>12s} {'vs seed':>8s} {'updates/s':>10s} "
        f"{'GFLOP/s':>8s} {'us/update':>10s} {'of limit':>9s} {'in update':>10s} {'wall s':>7s}"
    )
    print(header)
    ceiling = {}
    for size, r in zip(sizes, timings, strict=True):
        print(
            f"{size:3d} {r.steps_per_s:12.0f} {r.steps_per_s / seed_sps:7.2f}x "
            f"{r.updates_per_s:10.0f} {r.gflops:8.2f} {r.us_per_update:10.1f} "
            f"{limit_us / r.us_per_update:8.0%} {r.update_s / r.wall_s:9.0%} {r.wall_s:7.2f}"
        )
        if size in (1, 16):
            ceiling[size] = matmul_seconds(population_net(size, steps), batch)
    for size, seconds in ceiling.items():
        print(
            f"the counted matmuls alone, K={size}: {seconds * 1e6:.1f} us per member-update, "
            f"{flops / seconds / 1e9:.1f} GFLOP/s (the ceiling for the columns above)"
        )
    first, warm, imports = compile_seconds()
    print(
        f"compiled update: a fresh process's first 80-step run takes {first:.2f} s with an "
        f"empty numba cache (compiling, once per machine) and {warm:.2f} s with the cache "
        f"(loading it: every new process; its imports {imports:.2f} s)"
    )
    mem = bench_memory()
    print(
        f"memory, K=32, buffer.capacity=50000, fresh process: engine arrays (agent.nbytes) "
        f"{mem['nbytes'] / mib:.1f} MiB, of which rings {mem['buffer_nbytes'] / mib:.1f}"
    )
    print(
        f"  peak RSS {mem['imported'] / mib:.0f} MiB after imports, {mem['ran'] / mib:.0f} "
        f"after build + 200 steps a member, {mem['full'] / mib:.0f} with every ring page "
        f"written (+{(mem['full'] - mem['imported']) / mib:.0f}; ru_maxrss "
        f"{mem['ru_maxrss'] / mib:.0f}, includes this bench's peak); target: well under 1024 MiB"
    )
    print(f"this bench's own peak RSS (ru_maxrss): {_maxrss_bytes() / mib:.0f} MiB")
    if profile:
        print(f"\ncProfile, K=16, {steps} steps a member (top 15 by own time):")
        print(profile_population(16, steps))
    print(
        f"total {time.perf_counter() - t_start:.0f} s; load average now {load_average()} "
        "(compare ratios, measured in this run, across machines)"
    )


MAIN_JOB = ("+sweep=sensitivity",)


def run_env_steps(sweep_dir: Path) -> list[int]:
    """The env steps of every run a sweep left (the last ``step`` of each ``episodes.csv``)."""
    import csv

    steps = []
    for path in sorted(sweep_dir.rglob("episodes.csv")):
        with path.open() as f:
            rows = list(csv.DictReader(f))
        steps.append(int(rows[-1]["step"]) if rows else 0)
    return steps


def main_job(overrides: Sequence[str], seed_steps: int) -> None:
    """The README's main job end to end in a fresh directory, against the seed notebook's loop
    on the same total of env steps.

    The seed's loop is timed here on ``seed_steps`` steps (before and after the job, the mean
    taken) and its time for the job is its rate times the job's env steps, summed over every
    run the job trained (tuning and test runs). That is what running the same runs one after
    another would cost it, without the greedy evaluations our runs also do.
    """
    import tempfile

    seed_before = bench_seed_notebook(seed_steps)
    with tempfile.TemporaryDirectory(prefix="sweeper-main-job-") as tmp:
        cmd = [sys.executable, "-m", "sweeper.train", *MAIN_JOB, *overrides]
        print("main job:", " ".join(cmd[1:]), flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"the main job failed ({proc.returncode}): {proc.stderr[-2000:]}")
        # the sweep's own run folders (outputs/mlartifacts holds MLflow's copies of them)
        steps = run_env_steps(Path(tmp) / "outputs" / "multirun")
    # timed before and after the job, the mean taken: a shared VM's speed drifts by 10-20%
    # over minutes, which one timing would put entirely into the ratio
    seed_after = bench_seed_notebook(seed_steps)
    seed_sps = (seed_before + seed_after) / 2
    total = sum(steps)
    seed_seconds = total / seed_sps
    print(f"{len(steps)} runs, {total} env steps in {wall:.0f} s: {total / wall:.0f} env-steps/s")
    print(
        f"seed notebook loop: {seed_sps:.0f} env-steps/s ({seed_steps} steps timed before the "
        f"job, {seed_before:.0f}, and after it, {seed_after:.0f})"
    )
    print(
        f"the seed loop on the same runs, one after another: {seed_seconds:.0f} s; "
        f"the main job is {seed_seconds / wall:.1f}x faster ({load_average()})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"env steps (default 20000; with --population, per member: {POPULATION_STEPS})",
    )
    parser.add_argument("--skip-seed", action="store_true", help="do not time the seed loop")
    parser.add_argument(
        "--population", action="store_true", help="time K-member populations of default DQN"
    )
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(k) for k in s.split(",")],
        default=list(POPULATION_SIZES),
        help="population sizes for --population, comma-separated (default 1,4,8,16,32)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="with --population: also cProfile K=16"
    )
    parser.add_argument(
        "--main-job",
        nargs="*",
        metavar="OVERRIDE",
        default=None,
        help="time the README's main job (+sweep=sensitivity, plus these overrides) end to end "
        "against the seed loop",
    )
    args = parser.parse_args(argv)
    one_thread()
    if args.main_job is not None:
        main_job(args.main_job, args.steps or 20_000)
        return
    if args.population:
        main_population(args.steps or POPULATION_STEPS, args.sizes, args.profile)
        return
    steps = args.steps or 20_000
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()} (BLAS {blas_threads()}), "
        f"{steps} env steps"
    )
    warm_up()
    rows = []
    if not args.skip_seed:
        seed_sps = bench_seed_notebook(steps)
        seed_ups = seed_sps * max(0, steps - SEED_BATCH + 1) / steps
        rows.append(("seed notebook DQN loop", "cartpole_simple", seed_sps, seed_ups))
    for env in ("cartpole_simple", "cartpole_v1"):
        for name, overrides in (
            ("dqn (default)", []),
            ("double_dqn", ["agent=double_dqn"]),
            ("dueling_dqn", ["agent=dueling_dqn"]),
            ("dqn + prioritized", ["buffer=prioritized"]),
        ):
            sps, ups = bench_sweeper(env, steps, overrides)
            rows.append((name, env, sps, ups))
    for agent in ("q_learning", "sarsa", "expected_sarsa"):  # tabular: one update per step
        sps, ups = bench_sweeper("gridworld", steps, [f"agent={agent}"])
        rows.append((agent, "gridworld", sps, ups))
    print(f"{'config':24s} {'env':16s} {'steps/s':>9s} {'updates/s':>10s} {'vs seed':>8s}")
    base = rows[0][2] if not args.skip_seed else None
    for name, env, sps, ups in rows:
        ratio = f"{sps / base:7.2f}x" if base else ""
        print(f"{name:24s} {env:16s} {sps:9.0f} {ups:10.0f} {ratio:>8s}")


if __name__ == "__main__":
    main()
