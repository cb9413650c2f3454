"""The stacked kernel against torch: forward, autograd gradients, Adam, clipping; and the
population property: member ``k`` of K computes exactly what it computes alone (K=1)."""

import numpy as np
import pytest
import torch

from sweeper.agents.networks import Adam, QNetwork, StackedMLP, clip_grad_norm


def stacked(*nets: QNetwork) -> StackedMLP:
    """A StackedMLP holding ``nets`` as its members, in order."""
    first = nets[0]
    hidden = [layer.out_features for layer in first.hidden]
    kernel = StackedMLP(len(nets), first.obs_dim, first.n_actions, hidden, first.dueling)
    for k, net in enumerate(nets):
        kernel.load(k, net)
    return kernel


@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize("hidden", [(16,), (16, 8), (32, 32, 8)])
def test_kernel_forward_and_backward_match_autograd(dueling, hidden):
    net = QNetwork(5, 3, hidden, dueling=dueling, seed=3)
    kernel = stacked(net)
    x = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
    g = torch.randn(12, 3, generator=torch.Generator().manual_seed(1))
    q, acts = kernel.forward(x.numpy().copy()[None])
    assert q.shape == (1, 12, 3)
    np.testing.assert_allclose(q[0], net(x).numpy(), rtol=1e-5, atol=1e-6)
    flat_grads = kernel.backward(acts, g.numpy().copy()[None])
    assert flat_grads.shape == kernel.flat.shape and flat_grads.dtype == np.float32
    grads = kernel.views(flat_grads)
    net.requires_grad_(True)
    (net(x) * g).sum().backward()
    params = list(net.parameters())
    assert len(grads) == len(params)
    for mine, p in zip(grads, params, strict=True):
        assert mine.shape == (1, *p.shape)
        np.testing.assert_allclose(mine[0], p.grad.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dueling", [False, True])
def test_single_state_q_values_match_batch_forward(dueling):
    """Acting evaluates one state per member, a (m, 1, obs_dim) batch."""
    net = QNetwork(4, 2, (64, 64), dueling=dueling, seed=0)
    kernel = stacked(net)
    batch = np.random.default_rng(0).standard_normal((1, 6, 4)).astype(np.float32)
    q_batch = kernel.forward(batch)[0]
    for i in range(6):
        q_one = kernel.forward(batch[:, i : i + 1])[0]
        assert q_one.shape == (1, 1, 2)
        np.testing.assert_allclose(q_one[0, 0], q_batch[0, i], rtol=1e-5, atol=1e-6)
        expected = net(torch.from_numpy(batch[0, i])[None]).numpy()[0]
        np.testing.assert_allclose(q_one[0, 0], expected, rtol=1e-5, atol=1e-6)


def test_params_are_views_of_flat():
    kernel = stacked(QNetwork(4, 2, (8,), seed=0), QNetwork(4, 2, (8,), seed=1))
    n_params = sum(int(np.prod(s)) for s in kernel.shapes)
    assert kernel.flat.shape == (2, n_params) and kernel.flat.dtype == np.float32
    assert [p.shape[1:] for p in kernel.params] == kernel.shapes
    for p in kernel.params:
        assert p.shape[0] == 2 and np.shares_memory(p, kernel.flat)
    # A write through a view lands in flat, and the other way round.
    kernel.params[0][1, 0, 0] = 123.0
    assert kernel.flat[1, 0] == 123.0 and kernel.flat[0, 0] != 123.0
    kernel.flat[0, -1] = -7.0
    assert kernel.params[-1][0, -1] == -7.0
    # hidden/heads are the same views (forward reads them).
    assert kernel.hidden[0][0] is kernel.params[0] and kernel.heads[0][1] is kernel.params[-1]
    # module(k) is member k; load(k, module(k)) round-trips.
    net = kernel.module(1)
    assert net.hidden[0].weight[0, 0].item() == 123.0
    before = kernel.flat.copy()
    kernel.load(0, kernel.module(0))
    assert np.array_equal(kernel.flat, before)
    views = kernel.views(np.arange(2 * n_params, dtype=np.float32).reshape(2, n_params))
    assert views[0][1, 0, 0] == n_params and views[-1][0, -1] == n_params - 1


def test_dueling_aggregation_by_hand():
    """Q = V + A - mean(A), on hand-set weights: V = 2, A = (1, 3, 5) -> Q = (-1, 1, 3) + 2."""
    net = QNetwork(1, 3, (1,), dueling=True, seed=0)
    with torch.no_grad():
        net.hidden[0].weight.fill_(1.0)
        net.hidden[0].bias.fill_(0.0)
        net.value.weight.fill_(2.0)
        net.value.bias.fill_(0.0)
        net.advantage.weight.copy_(torch.tensor([[1.0], [3.0], [5.0]]))
        net.advantage.bias.fill_(0.0)
    x = np.ones((1, 1), np.float32)
    expected = np.array([[1.0, 3.0, 5.0]]) - 3.0 + 2.0
    np.testing.assert_allclose(stacked(net).forward(x[None])[0][0], expected)
    np.testing.assert_allclose(net(torch.from_numpy(x)).numpy(), expected)


# ---------------------------------------------------------------- population kernel
@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize("hidden", [(16,), (32, 32, 8)])
def test_member_of_a_stack_computes_what_it_computes_alone(dueling, hidden):
    """Bitwise: the whole point of the stacked layout (member k of a population reproduces
    the same agent trained alone), for all members and for an index subset."""
    nets = [QNetwork(5, 3, hidden, dueling=dueling, seed=s) for s in (0, 1, 2)]
    population = stacked(*nets)
    alone = [stacked(net) for net in nets]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 12, 5)).astype(np.float32)
    g = rng.standard_normal((3, 12, 3)).astype(np.float32)
    q, acts = population.forward(x)
    grads = population.backward(acts, g)
    assert q.shape == (3, 12, 3) and grads.shape == population.flat.shape
    for k in range(3):
        q1, acts1 = alone[k].forward(x[k : k + 1])
        assert np.array_equal(q[k], q1[0])
        assert np.array_equal(grads[k], alone[k].backward(acts1, g[k : k + 1])[0])
    members = np.array([0, 2])
    q, acts = population.forward(x[members], members)
    grads = population.backward(acts, g[members], members)
    assert q.shape == (2, 12, 3) and grads.shape == (2, population.flat.shape[1])
    for row, k in enumerate(members.tolist()):
        q1, acts1 = alone[k].forward(x[k : k + 1])
        assert np.array_equal(q[row], q1[0])
        assert np.array_equal(grads[row], alone[k].backward(acts1, g[k : k + 1])[0])


# ---------------------------------------------------------------- Adam and clipping
SHAPES = [(6, 4), (6,), (2, 6), (2,)]
P = sum(int(np.prod(s)) for s in SHAPES)


def split(row: np.ndarray) -> list[np.ndarray]:
    """One (P,) row as arrays of SHAPES (torch's view of the same parameters)."""
    out, start = [], 0
    for s in SHAPES:
        n = int(np.prod(s))
        out.append(row[start : start + n].reshape(s))
        start += n
    return out


def torch_adam(init: np.ndarray, grads: list[np.ndarray], lr: float, eps: float) -> np.ndarray:
    """torch.optim.Adam from ``init`` (P,) over the (P,) ``grads``; the final row."""
    tensors = [torch.tensor(a.copy()) for a in split(init)]
    opt = torch.optim.Adam(tensors, lr=lr, eps=eps, foreach=False)
    for grad in grads:
        for t, g in zip(tensors, split(grad), strict=True):
            t.grad = torch.from_numpy(g.copy())
        opt.step()
    return np.concatenate([t.numpy().ravel() for t in tensors])


def test_adam_matches_torch_adam_per_member():
    """Three members with their own lr and eps (one lr is 0) over 50 steps: each row follows
    torch.optim.Adam with that member's settings; the lr-0 row never moves."""
    rng = np.random.default_rng(0)
    lrs, epss = [3e-3, 0.0, 1e-3], [1e-8, 1e-8, 1e-4]
    init = rng.standard_normal((3, P)).astype(np.float32)
    flat = init.copy()
    opt = Adam(flat, lr=np.array(lrs), eps=np.array(epss))
    grads = [rng.standard_normal((3, P)).astype(np.float32) for _ in range(50)]
    for g in grads:
        opt.step(g.copy())
    assert opt.t.tolist() == [50, 50, 50]
    for k in range(3):
        expected = torch_adam(init[k], [g[k] for g in grads], lrs[k], epss[k])
        np.testing.assert_allclose(flat[k], expected, rtol=1e-5, atol=1e-6)
    assert np.array_equal(flat[1], init[1])
    assert not np.array_equal(flat[0], init[0]) and not np.array_equal(flat[2], init[2])


def test_adam_default_eps_and_single_member():
    rng = np.random.default_rng(3)
    init = rng.standard_normal((1, P)).astype(np.float32)
    flat = init.copy()
    opt = Adam(flat, lr=np.array([3e-3]))
    grads = [rng.standard_normal((1, P)).astype(np.float32) for _ in range(50)]
    for g in grads:
        opt.step(g.copy())
    expected = torch_adam(init[0], [g[0] for g in grads], 3e-3, 1e-8)
    np.testing.assert_allclose(flat[0], expected, rtol=1e-5, atol=1e-6)


def test_adam_steps_only_the_given_members():
    """Stepping an index subset equals stepping those members alone, bitwise; the others
    (parameters, moments, step count) are untouched. Each member keeps its own bias
    correction, so one that starts late is stepped like a fresh optimizer."""
    rng = np.random.default_rng(1)
    init = rng.standard_normal((3, P)).astype(np.float32)
    flat = init.copy()
    opt = Adam(flat, lr=np.array([1e-2, 2e-2, 3e-2]))
    alone = [init[k : k + 1].copy() for k in range(3)]
    opts = [Adam(alone[k], lr=np.array([opt.lr[k]])) for k in range(3)]
    schedule = [np.array([0, 2]), np.array([0, 1, 2]), np.array([1]), np.array([0, 2])]
    for members in schedule:
        g = rng.standard_normal((len(members), P)).astype(np.float32)
        before = flat.copy()
        opt.step(g.copy(), members)
        others = np.setdiff1d(np.arange(3), members)
        assert np.array_equal(flat[others], before[others])
        for row, k in enumerate(members.tolist()):
            opts[k].step(g[row : row + 1].copy())
    assert opt.t.tolist() == [3, 2, 3]
    for k in range(3):
        assert np.array_equal(flat[k], alone[k][0])
        assert np.array_equal(opt.m[k], opts[k].m[0]) and np.array_equal(opt.v[k], opts[k].v[0])


def test_adam_reset_member_restarts_its_bias_correction():
    rng = np.random.default_rng(2)
    flat = rng.standard_normal((2, P)).astype(np.float32)
    opt = Adam(flat, lr=np.array([1e-2, 1e-2]))
    for _ in range(3):
        opt.step(rng.standard_normal((2, P)).astype(np.float32))
    opt.reset_member(1, lr=5e-3, eps=1e-6)
    assert opt.t.tolist() == [3, 0] and not opt.m[1].any() and not opt.v[1].any()
    start = flat[1].copy()
    fresh = flat[1:2].copy()
    fresh_opt = Adam(fresh, lr=np.array([5e-3]), eps=np.array([1e-6]))
    g = rng.standard_normal((2, P)).astype(np.float32)
    opt.step(g.copy())
    fresh_opt.step(g[1:2].copy())
    assert np.array_equal(flat[1], fresh[0]) and not np.array_equal(flat[1], start)


def torch_clip(row: np.ndarray, max_norm: float) -> tuple[float, np.ndarray]:
    tensors = [torch.zeros(s) for s in SHAPES]
    for t, g in zip(tensors, split(row), strict=True):
        t.grad = torch.from_numpy(g.copy())
    norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    return float(norm), np.concatenate([t.grad.numpy().ravel() for t in tensors])


@pytest.mark.parametrize("max_norm", [0.1, 1.0, 100.0])
def test_clip_grad_norm_matches_torch(max_norm):
    grads = np.random.default_rng(1).standard_normal((1, P)).astype(np.float32)
    norm_torch, clipped = torch_clip(grads[0], max_norm)
    norms = clip_grad_norm(grads, np.array([max_norm]))
    assert norms.shape == (1,) and norms[0] == pytest.approx(norm_torch, rel=1e-5)
    np.testing.assert_allclose(grads[0], clipped, rtol=1e-5, atol=1e-7)


def test_clip_grad_norm_per_member():
    """Each row is clipped to its own max_norm (inf disables it) and reports its own norm."""
    max_norms = np.array([0.1, np.inf, 100.0, 1.0])
    grads = np.random.default_rng(2).standard_normal((4, P)).astype(np.float32)
    grads[3] *= 1e-3  # below its max_norm: unchanged
    original = grads.copy()
    norms = clip_grad_norm(grads, max_norms)
    for k in range(4):
        norm_torch, clipped = torch_clip(original[k], float(max_norms[k]))
        assert norms[k] == pytest.approx(norm_torch, rel=1e-5)
        np.testing.assert_allclose(grads[k], clipped, rtol=1e-5, atol=1e-7)
        assert norms[k] == pytest.approx(np.linalg.norm(original[k].astype(np.float64)))
    assert np.array_equal(grads[[1, 2, 3]], original[[1, 2, 3]])
    assert np.linalg.norm(grads[0]) == pytest.approx(0.1, rel=1e-4)


def test_init_is_seeded():
    a, b, c = QNetwork(4, 2, seed=1), QNetwork(4, 2, seed=1), QNetwork(4, 2, seed=2)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))
    kernel = stacked(a, c, b)
    assert np.array_equal(kernel.flat[0], kernel.flat[2])
    assert not np.array_equal(kernel.flat[0], kernel.flat[1])
