"""``python -m sweeper.bench``: env-steps/s and updates/s of DQN training, one thread.

Also times the seed notebook's DQN loop (transcribed below: deque replay, autograd update,
torch action selection) on the same machine, so the speed-up is measured, not quoted.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import deque

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sweeper.callbacks import Callback
from sweeper.config import compose_config
from sweeper.train import budget_of, build
from sweeper.training import train


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
    return steps / dt, agent.updates / dt


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--skip-seed", action="store_true", help="do not time the seed loop")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.steps} env steps")
    rows = []
    if not args.skip_seed:
        seed_sps = bench_seed_notebook(args.steps)
        rows.append(("seed notebook DQN loop", "cartpole_simple", seed_sps, seed_sps))
    for env in ("cartpole_simple", "cartpole_v1"):
        for name, overrides in (
            ("dqn (default)", []),
            ("double_dqn", ["agent=double_dqn"]),
            ("dueling_dqn", ["agent=dueling_dqn"]),
            ("dqn + prioritized", ["buffer=prioritized"]),
        ):
            sps, ups = bench_sweeper(env, args.steps, overrides)
            rows.append((name, env, sps, ups))
    print(f"{'config':24s} {'env':16s} {'steps/s':>9s} {'updates/s':>10s} {'vs seed':>8s}")
    base = rows[0][2] if not args.skip_seed else None
    for name, env, sps, ups in rows:
        ratio = f"{sps / base:7.2f}x" if base else ""
        print(f"{name:24s} {env:16s} {sps:9.0f} {ups:10.0f} {ratio:>8s}")


if __name__ == "__main__":
    main()
