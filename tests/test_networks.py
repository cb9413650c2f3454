"""The stacked forward against torch, the parameter layout, and the population property:
member ``k`` of K computes exactly what it computes alone (K=1). Gradients, clipping and Adam
are the compiled update's: ``tests/test_member_update.py``."""

import numpy as np
import pytest
import torch

from sweeper.agents.networks import QNetwork, StackedMLP


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
def test_kernel_forward_matches_torch(dueling, hidden):
    net = QNetwork(5, 3, hidden, dueling=dueling, seed=3)
    kernel = stacked(net)
    x = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
    q, _ = kernel.forward(x.numpy().copy()[None])
    assert q.shape == (1, 12, 3)
    np.testing.assert_allclose(q[0], net(x).numpy(), rtol=1e-5, atol=1e-6)


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
    x = np.random.default_rng(0).standard_normal((3, 12, 5)).astype(np.float32)
    q, _ = population.forward(x)
    assert q.shape == (3, 12, 3)
    for k in range(3):
        assert np.array_equal(q[k], alone[k].forward(x[k : k + 1])[0][0])
    members = np.array([0, 2])
    q, _ = population.forward(x[members], members)
    assert q.shape == (2, 12, 3)
    for row, k in enumerate(members.tolist()):
        assert np.array_equal(q[row], alone[k].forward(x[k : k + 1])[0][0])


def test_init_is_seeded():
    a, b, c = QNetwork(4, 2, seed=1), QNetwork(4, 2, seed=1), QNetwork(4, 2, seed=2)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))
    kernel = stacked(a, c, b)
    assert np.array_equal(kernel.flat[0], kernel.flat[2])
    assert not np.array_equal(kernel.flat[0], kernel.flat[1])
