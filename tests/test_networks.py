"""The hand-batched kernel against torch: forward, autograd gradients, Adam, clipping."""

import numpy as np
import pytest
import torch

from sweeper.agents.networks import Adam, MLPKernel, QNetwork, clip_grad_norm


@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize("hidden", [(16,), (16, 8), (32, 32, 8)])
def test_kernel_forward_and_backward_match_autograd(dueling, hidden):
    net = QNetwork(5, 3, hidden, dueling=dueling, seed=3)
    kernel = MLPKernel(net)
    x = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
    g = torch.randn(12, 3, generator=torch.Generator().manual_seed(1))
    q, acts = kernel.forward(x.numpy().copy())
    np.testing.assert_allclose(q, net(x).numpy(), rtol=1e-5, atol=1e-6)
    grads = kernel.backward(acts, g.numpy().copy())
    net.requires_grad_(True)
    (net(x) * g).sum().backward()
    params = list(net.parameters())
    assert len(grads) == len(params)
    for mine, p in zip(grads, params, strict=True):
        assert mine.shape == tuple(p.shape)
        np.testing.assert_allclose(mine, p.grad.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dueling", [False, True])
def test_single_state_q_values_match_batch_forward(dueling):
    net = QNetwork(4, 2, (64, 64), dueling=dueling, seed=0)
    kernel = MLPKernel(net)
    obs = np.random.default_rng(0).standard_normal(4).astype(np.float32)
    np.testing.assert_allclose(
        kernel.q_values(obs), net(torch.from_numpy(obs)[None]).numpy()[0], rtol=1e-5, atol=1e-6
    )


def test_kernel_views_share_memory_with_module():
    net = QNetwork(4, 2, (8,), seed=0)
    kernel = MLPKernel(net)
    kernel.params[0][0, 0] = 123.0
    assert net.hidden[0].weight[0, 0].item() == 123.0


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
    np.testing.assert_allclose(MLPKernel(net).forward(x)[0], expected)
    np.testing.assert_allclose(net(torch.from_numpy(x)).numpy(), expected)


def test_adam_matches_torch_adam():
    rng = np.random.default_rng(0)
    shapes = [(6, 4), (6,), (2, 6), (2,)]
    init = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    mine = [a.copy() for a in init]
    theirs = [torch.tensor(a.copy()) for a in init]
    opt_mine = Adam(mine, lr=3e-3, eps=1e-8)
    opt_torch = torch.optim.Adam(theirs, lr=3e-3, eps=1e-8, foreach=False)
    for _ in range(50):
        grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        opt_mine.step([g.copy() for g in grads])
        for t, g in zip(theirs, grads, strict=True):
            t.grad = torch.from_numpy(g.copy())
        opt_torch.step()
    for a, t in zip(mine, theirs, strict=True):
        np.testing.assert_allclose(a, t.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("max_norm", [0.1, 1.0, 100.0])
def test_clip_grad_norm_matches_torch(max_norm):
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(s).astype(np.float32) for s in [(5, 3), (5,)]]
    tensors = [torch.zeros(g.shape) for g in grads]
    for t, g in zip(tensors, grads, strict=True):
        t.grad = torch.from_numpy(g.copy())
    norm_torch = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    norm = clip_grad_norm(grads, max_norm)
    assert norm == pytest.approx(float(norm_torch), rel=1e-5)
    for g, t in zip(grads, tensors, strict=True):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_init_is_seeded():
    a, b, c = QNetwork(4, 2, seed=1), QNetwork(4, 2, seed=1), QNetwork(4, 2, seed=2)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))
