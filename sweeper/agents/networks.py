"""MLP Q-networks (plain and dueling) and the hand-batched math that trains them.

Why by hand: at DQN's sizes (batch 64, 2x64 units) an eager-autograd update is almost all
framework overhead (about 1.1 ms here, three times the env step, action and replay put
together). The forward and backward passes of a ReLU MLP are a dozen small matrix products, so
:class:`MLPKernel` computes them in numpy directly on zero-copy views of the torch parameters.
The :class:`QNetwork` module stays the source of truth: its ``forward`` is the ordinary
differentiable reference (tests check the kernel's gradients against autograd) and saving is
the usual ``state_dict``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def _init_linear(layer: nn.Linear, generator: torch.Generator) -> None:
    """PyTorch's default Linear init, drawn from an explicit generator (reproducible)."""
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    bound = 1.0 / math.sqrt(layer.in_features)
    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


class QNetwork(nn.Module):
    """Q(s, .) for all actions: ReLU hidden layers, then one linear head or a dueling pair.

    Dueling (Wang et al. 2016): Q(s,a) = V(s) + A(s,a) - mean_a' A(s,a').
    Parameters do not require grad: :class:`MLPKernel` updates them in place.
    """

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        hidden_sizes: Sequence[int] = (64, 64),
        dueling: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.obs_dim, self.n_actions, self.dueling = obs_dim, n_actions, dueling
        dims = [obs_dim, *hidden_sizes]
        self.hidden = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:]))
        if dueling:
            self.value = nn.Linear(dims[-1], 1)
            self.advantage = nn.Linear(dims[-1], n_actions)
        else:
            self.head = nn.Linear(dims[-1], n_actions)
        gen = torch.Generator().manual_seed(seed)
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                _init_linear(layer, gen)
        self.requires_grad_(False)

    def heads(self) -> list[nn.Linear]:
        return [self.value, self.advantage] if self.dueling else [self.head]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable reference forward (autograd works when parameters require grad)."""
        for layer in self.hidden:
            x = torch.relu(layer(x))
        if self.dueling:
            adv = self.advantage(x)
            return self.value(x) + adv - adv.mean(dim=1, keepdim=True)
        return self.head(x)


class MLPKernel:
    """Forward, backward and single-state Q-values of a QNetwork, in numpy.

    Holds views that share memory with the module's parameters, in ``parameters()`` order
    (``params``), so in-place updates of the views are updates of the module.
    """

    def __init__(self, net: QNetwork) -> None:
        self.dueling = net.dueling
        self.hidden = [(layer.weight.numpy(), layer.bias.numpy()) for layer in net.hidden]
        self.heads = [(layer.weight.numpy(), layer.bias.numpy()) for layer in net.heads()]
        self.params = [a for pair in self.hidden + self.heads for a in pair]

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Q(obs, .) for one observation: three small mat-vecs, ~15 us (a torch call: ~100)."""
        x = obs
        for w, b in self.hidden:
            x = w @ x + b
            np.maximum(x, 0.0, out=x)
        if self.dueling:
            (wv, bv), (wa, ba) = self.heads
            adv = wa @ x + ba
            return adv - adv.mean() + (wv @ x + bv)
        w, b = self.heads[0]
        return w @ x + b

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Q for a batch, with the activations ``backward`` needs."""
        acts = [x]
        for w, b in self.hidden:
            x = x @ w.T
            x += b
            np.maximum(x, 0.0, out=x)
            acts.append(x)
        if self.dueling:
            (wv, bv), (wa, ba) = self.heads
            adv = x @ wa.T + ba
            q = adv - adv.mean(axis=1, keepdims=True) + (x @ wv.T + bv)
        else:
            w, b = self.heads[0]
            q = x @ w.T
            q += b
        return q, acts

    def backward(self, acts: list[np.ndarray], grad_q: np.ndarray) -> list[np.ndarray]:
        """d(loss)/d(param) for every parameter (``params`` order), given d(loss)/dQ."""
        h = acts[-1]
        if self.dueling:
            (wv, _), (wa, _) = self.heads
            grad_adv = grad_q - grad_q.mean(axis=1, keepdims=True)
            grad_val = grad_q.sum(axis=1, keepdims=True)
            head_grads = [grad_val.T @ h, grad_val.sum(0), grad_adv.T @ h, grad_adv.sum(0)]
            grad_h = grad_adv @ wa + grad_val @ wv
        else:
            w, _ = self.heads[0]
            head_grads = [grad_q.T @ h, grad_q.sum(0)]
            grad_h = grad_q @ w
        grads: list[np.ndarray] = []
        for i in range(len(self.hidden) - 1, -1, -1):
            grad_h *= acts[i + 1] > 0
            grads += [grad_h.sum(0), grad_h.T @ acts[i]]
            if i:
                grad_h = grad_h @ self.hidden[i][0]
        return grads[::-1] + head_grads


class Adam:
    """torch.optim.Adam's update (no weight decay, no amsgrad), in place on numpy views.

    Same formula and operation order as torch's single-tensor implementation; a test checks
    that both produce the same parameters.
    """

    def __init__(
        self,
        params: list[np.ndarray],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params, self.lr, self.eps = params, lr, eps
        self.beta1, self.beta2 = betas
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads: list[np.ndarray]) -> None:
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        step_size = self.lr / (1 - b1**self.t)
        bc2_sqrt = math.sqrt(1 - b2**self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m += (g - m) * np.float32(1 - b1)
            v *= np.float32(b2)
            v += g * g * np.float32(1 - b2)
            denom = np.sqrt(v)
            denom /= np.float32(bc2_sqrt)
            denom += np.float32(self.eps)
            p -= np.float32(step_size) * m / denom


def clip_grad_norm(grads: list[np.ndarray], max_norm: float) -> float:
    """Scale ``grads`` in place so their global L2 norm is at most ``max_norm`` (as torch)."""
    total = math.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in grads))
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads:
            g *= np.float32(coef)
    return total
