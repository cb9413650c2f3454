"""The compiled DQN update (``sweeper.agents.member_update``) against torch: one update of
every variant (DQN, Double, Dueling, Huber, clipped gradients, no / soft / hard target,
terminal transitions, importance weights) equals torch autograd + ``clip_grad_norm_`` +
``torch.optim.Adam`` for each member of K=1 and K=5 populations; Adam equals torch's fused
kernel bit for bit; member k of a population is bit-identical to the same agent alone; a
kernel compiled once is loaded from the disk cache by a fresh process."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sweeper.agents import member_update
from sweeper.agents.dqn import DQNAgent
from sweeper.agents.networks import QNetwork
from sweeper.buffers.uniform import ReplaySamples

OBS, ACTIONS, BATCH, HIDDEN = 4, 3, 24, (16, 8)


class FixedBatch:
    """A replay buffer that hands out one given batch per member (the test computes the same
    update in torch from it) and keeps the priorities the update gives back."""

    def __init__(self, batch: ReplaySamples) -> None:
        self.batch = batch
        self.members = batch.actions.shape[0]
        self.batch_size = batch.actions.shape[1]
        self.priorities: np.ndarray | None = None

    def can_sample(self, members: np.ndarray) -> np.ndarray:
        return np.ones(len(members), dtype=bool)

    def sample(self, members: np.ndarray) -> ReplaySamples:
        return ReplaySamples(*(np.ascontiguousarray(a[members]) for a in self.batch))

    def update_priorities(self, members, indices, td_errors) -> None:
        self.priorities = td_errors.copy()

    def reset_member(self, member, rng, **params) -> None:
        pass

    def nbytes(self) -> int:
        return 0


def make_batch(k: int, seed: int = 0) -> ReplaySamples:
    """k members' batches: random states and rewards, a quarter of them terminal, unequal
    importance weights."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    return ReplaySamples(
        rng.standard_normal((k, BATCH, OBS)).astype(f32),
        rng.integers(0, ACTIONS, (k, BATCH)),
        rng.standard_normal((k, BATCH)).astype(f32),
        rng.standard_normal((k, BATCH, OBS)).astype(f32),
        (rng.random((k, BATCH)) < 0.25).astype(f32),
        rng.uniform(0.2, 1.0, (k, BATCH)).astype(f32),
        np.zeros((k, BATCH), dtype=np.int64),
    )


def torch_update(net, target, batch, k, hp, optimizer):
    """Member ``k``'s update in torch (autograd, clip_grad_norm_, torch.optim.Adam); the loss
    and |TD|."""
    obs, actions, rewards, next_obs, term, weights, _ = (torch.from_numpy(a[k]) for a in batch)
    net.requires_grad_(True)
    q = net(obs).gather(1, actions[:, None])[:, 0]
    with torch.no_grad():
        boot = net if hp["target_update"] == "none" else target
        next_q = boot(next_obs)
        if hp["double"]:
            best = net(next_obs).argmax(dim=1, keepdim=True)
            next_v = next_q.gather(1, best)[:, 0]
        else:
            next_v = next_q.max(dim=1).values
        y = rewards + hp["gamma"] * (1.0 - term) * next_v
    if hp["loss"] == "huber":
        per = F.huber_loss(q, y, reduction="none", delta=hp["huber_delta"])
    else:
        per = (q - y) ** 2
    loss = (weights * per).mean()
    optimizer.zero_grad()
    loss.backward()
    if hp["grad_clip"]:
        torch.nn.utils.clip_grad_norm_(net.parameters(), hp["grad_clip"])
    optimizer.step()
    net.requires_grad_(False)
    return loss.item(), (q - y).abs().detach().numpy()


DEFAULTS = {
    "lr": 1e-3,
    "gamma": 0.99,
    "double": False,
    "target_update": "hard",
    "target_update_freq": 2,
    "tau": 0.3,
    "loss": "mse",
    "huber_delta": 1.0,
    "grad_clip": 0.0,
    "adam_eps": 1e-8,
}
VARIANTS = {
    "dqn": {},
    "double": {"double": True},
    "huber": {"loss": "huber", "huber_delta": 0.5},
    "clipped": {"grad_clip": 0.05},
    "no_target": {"target_update": "none"},
    "soft_target": {"target_update": "soft", "tau": 0.3},
    "lr_eps_gamma": {"lr": 3e-2, "adam_eps": 1e-4, "gamma": 0.5},
}
#: K=5: every member its own variant (lr, gamma, double, loss, clipping, target mode)
MIXED = ["double", "huber", "clipped", "no_target", "soft_target"]


def agent_and_torch(names: list[str], dueling: bool, batch: ReplaySamples, first_seed: int = 10):
    k = len(names)
    hps = [{**DEFAULTS, **VARIANTS[name]} for name in names]
    per_member = {key: [hp[key] for hp in hps] for key in DEFAULTS}
    agent = DQNAgent(
        OBS,
        ACTIONS,
        FixedBatch(batch),
        seeds=list(range(first_seed, first_seed + k)),
        rngs=[np.random.default_rng(i) for i in range(k)],
        hidden_sizes=HIDDEN,
        dueling=dueling,
        **per_member,
    )
    nets, targets, optimizers = [], [], []
    for m in range(k):
        net = QNetwork(OBS, ACTIONS, HIDDEN, dueling=dueling, seed=first_seed + m)
        target = QNetwork(OBS, ACTIONS, HIDDEN, dueling=dueling, seed=first_seed + m)
        nets.append(net)
        targets.append(target)
        opt = torch.optim.Adam(net.parameters(), lr=hps[m]["lr"], eps=hps[m]["adam_eps"])
        optimizers.append(opt)
    return agent, hps, nets, targets, optimizers


def flat(net: QNetwork) -> np.ndarray:
    return np.concatenate([p.detach().numpy().ravel() for p in net.parameters()])


def member_params(agent: DQNAgent, which, m: int) -> np.ndarray:
    return np.concatenate([p[m].ravel() for p in agent.online.views(which.flat)])


@pytest.mark.parametrize("dueling", [False, True], ids=["mlp", "dueling"])
@pytest.mark.parametrize("names", [[v] for v in VARIANTS] + [MIXED], ids=[*VARIANTS, "K5"])
def test_three_updates_match_torch_autograd_and_adam(names, dueling):
    """Three updates on the member's batch: parameters, target net, loss and |TD| (the new
    priorities) follow torch, for one member or five with their own hyperparameters."""
    batch = make_batch(len(names))
    agent, hps, nets, targets, optimizers = agent_and_torch(names, dueling, batch)
    everyone = np.arange(len(names))
    for m, net in enumerate(nets):
        assert np.array_equal(member_params(agent, agent.online, m), flat(net))
    for step in range(1, 4):
        losses, learned = agent.update(everyone)
        assert learned.all() and agent.updates.tolist() == [step] * len(names)
        for m, hp in enumerate(hps):
            loss, abs_td = torch_update(nets[m], targets[m], batch, m, hp, optimizers[m])
            assert losses[m] == pytest.approx(loss, rel=2e-5, abs=1e-7)
            np.testing.assert_allclose(agent.buffer.priorities[m], abs_td, rtol=2e-5, atol=1e-6)
            np.testing.assert_allclose(
                member_params(agent, agent.online, m), flat(nets[m]), rtol=1e-4, atol=1e-6
            )
            if hp["target_update"] == "hard" and step % hp["target_update_freq"] == 0:
                targets[m].load_state_dict(nets[m].state_dict())
            elif hp["target_update"] == "soft":
                with torch.no_grad():
                    for t, p in zip(targets[m].parameters(), nets[m].parameters(), strict=True):
                        t += (p - t) * hp["tau"]
            if hp["target_update"] != "none":
                np.testing.assert_allclose(
                    member_params(agent, agent.target, m), flat(targets[m]), rtol=1e-4, atol=1e-6
                )


def test_clipping_is_active_in_the_clipped_variant():
    """The clipped variant's threshold is below the gradient's norm (else it tests nothing)."""
    batch = make_batch(1)
    net = QNetwork(OBS, ACTIONS, HIDDEN, seed=10)
    net.requires_grad_(True)
    obs, actions, rewards = (torch.from_numpy(a[0]) for a in batch[:3])
    q = net(obs).gather(1, actions[:, None])[:, 0]
    ((q - rewards) ** 2).mean().backward()
    norm = torch.norm(torch.stack([p.grad.norm() for p in net.parameters()]))
    assert norm > 4 * VARIANTS["clipped"]["grad_clip"]


@pytest.fixture
def one_torch_thread():
    """torch on one thread, as training sets it (``sweeper.seeding``): with more, torch's
    kernel runs the vector tail in a pool thread, where ``set_flush_denormal`` (a per-thread
    setting) is off."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("size", [37, 4610, 4675, 139, *range(16, 32)])
def test_adam_is_torchs_fused_kernel_bit_for_bit(size, one_torch_thread):
    """300 steps with gradients, then 1000 at zero (the moments decay into subnormals, which
    both flush): parameters and moments equal ``torch._fused_adam_`` under
    ``set_flush_denormal``, bit for bit, for rows with tails of 0 to 15 floats after the last
    16-float vector (the default net's 4610 and the dueling net's 4675 among them)."""
    rng = np.random.default_rng(size)
    p = (rng.standard_normal(size) * 0.1).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    tp, tm, tv, step = (
        torch.from_numpy(p.copy()),
        torch.zeros(size),
        torch.zeros(size),
        torch.zeros(()),
    )
    for t in range(1, 1301):
        scale = 0.01 if t <= 300 else 0.0
        g = (rng.standard_normal(size) * scale * (rng.random(size) < 0.5)).astype(np.float32)
        step += 1
        torch.set_flush_denormal(True)
        try:
            torch._fused_adam_(
                [tp],
                [torch.from_numpy(g)],
                [tm],
                [tv],
                [],
                [step],
                lr=2e-3,
                beta1=0.9,
                beta2=0.999,
                weight_decay=0.0,
                eps=1e-8,
                amsgrad=False,
                maximize=False,
            )
        finally:
            torch.set_flush_denormal(False)
        member_update.adam(p, g, m, v, t, 2e-3, 1e-8)
        for mine, theirs in ((p, tp), (m, tm), (v, tv)):
            assert np.array_equal(mine.view(np.int32), theirs.numpy().view(np.int32)), t
    assert (m == 0).sum() > size // 4  # the decay reached the flushed range


def test_a_member_of_a_population_is_the_same_agent_alone_bit_for_bit():
    """Five members with their own hyperparameters, updated in changing subsets, against five
    agents alone on the same batches."""
    batch = make_batch(5, seed=3)
    population = agent_and_torch(MIXED, True, batch)[0]
    alone = [
        agent_and_torch([name], True, make_one(batch, m), first_seed=10 + m)[0]
        for m, name in enumerate(MIXED)
    ]
    one = np.arange(1)
    for members in ([0, 1, 2, 3, 4], [1, 3], [0, 2, 4], [4], [0, 1, 2, 3, 4]):
        members = np.array(members)
        losses, _ = population.update(members)
        for row, m in enumerate(members.tolist()):
            loss, _ = alone[m].update(one)
            assert loss[0] == losses[row]
    for m in range(5):
        assert np.array_equal(population.online.flat[m], alone[m].online.flat[0])
        assert np.array_equal(population.target.flat[m], alone[m].target.flat[0])
        assert np.array_equal(population.adam_m[m], alone[m].adam_m[0])
        assert np.array_equal(population.adam_v[m], alone[m].adam_v[0])
        assert population.adam_t[m] == alone[m].adam_t[0]


def make_one(batch: ReplaySamples, m: int) -> ReplaySamples:
    return ReplaySamples(*(a[m : m + 1].copy() for a in batch))


CACHE_PROBE = textwrap.dedent(
    """
    import json, time
    t0 = time.perf_counter()
    import numpy as np
    from sweeper.agents import member_update
    from sweeper.agents.dqn import DQNAgent
    from sweeper.buffers.uniform import UniformReplayBuffer
    rng = np.random.default_rng(0)
    buffer = UniformReplayBuffer(100, 8, (4,), [rng])
    agent = DQNAgent(4, 2, buffer, [0], [rng], hidden_sizes=[8])
    one = np.arange(1)
    for _ in range(10):
        x = rng.standard_normal((1, 4)).astype(np.float32)
        buffer.add(one, x, [1], [1.0], x, [0.0])
    t1 = time.perf_counter()
    agent.update(one)
    stats = member_update.update.stats
    print(json.dumps({"hits": sum(stats.cache_hits.values()),
                      "misses": sum(stats.cache_misses.values()),
                      "first_update_s": time.perf_counter() - t1}))
    """
)


def test_a_fresh_process_loads_the_compiled_update_from_the_disk_cache(tmp_path):
    """The first process compiles and writes the cache; the next loads it (a cache hit, no
    compilation) — what a sweep's worker processes do."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    runs = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", CACHE_PROBE], capture_output=True, text=True, env=env, check=True
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert runs[0]["misses"] == 1 and runs[0]["hits"] == 0
    assert runs[1] == {**runs[1], "misses": 0, "hits": 1}
    assert any(Path(tmp_path / "numba").rglob("*.nbc"))


@pytest.mark.parametrize(
    "m,n,p", [(64, 65, 64), (1, 5, 8), (7, 9, 1), (1, 6, 1), (3, 1, 4), (1, 1, 5)]
)
def test_products_are_numpys_matmul_bit_for_bit(m, n, p):
    """``blas.matmul`` takes numpy's road for each shape (gemm, gemv for a single row or
    column, dot, its own loop) with plain and transposed operands: the same bits as
    ``np.matmul``, which the numpy engine used (a batch of one, as ``buffer=none`` samples,
    goes through gemv)."""
    from sweeper.agents.blas import matmul

    rng = np.random.default_rng(m * 100 + n * 10 + p)
    a = rng.standard_normal((m, n)).astype(np.float32)
    b = rng.standard_normal((n, p)).astype(np.float32)
    a_t = np.ascontiguousarray(a.T).T  # the same values, column-major
    for left in (a, a_t):
        c = np.full((m, p), np.nan, np.float32)
        rs, cs = (s // 4 for s in left.strides)
        matmul(left.ctypes.data, rs, cs, b.ctypes.data, p, 1, c.ctypes.data, p, 1, m, n, p)
        assert np.array_equal(c.view(np.int32), np.matmul(left, b).view(np.int32))
