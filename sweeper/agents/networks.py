"""MLP Q-networks (plain and dueling) with a hand-written backward pass.

Why by hand: at DQN's sizes (batch 64, 2x64 units) an eager autograd update is almost all
framework overhead (about 1.1 ms here). The forward and backward of a ReLU MLP are a dozen
matrix products, so computing the gradients directly, without building a graph, halves the
update's cost. ``forward`` stays an ordinary differentiable module call: tests check the manual
gradients against autograd, and saving/loading is the usual ``state_dict``.
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
    Parameters never require grad: ``backward`` fills ``.grad`` directly.
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

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Forward that keeps the activations ``backward`` needs."""
        acts = [x]
        for layer in self.hidden:
            x = torch.addmm(layer.bias, x, layer.weight.t()).relu_()
            acts.append(x)
        if self.dueling:
            adv = torch.addmm(self.advantage.bias, x, self.advantage.weight.t())
            val = torch.addmm(self.value.bias, x, self.value.weight.t())
            q = adv - adv.mean(dim=1, keepdim=True) + val
        else:
            q = torch.addmm(self.head.bias, x, self.head.weight.t())
        return q, acts

    def backward(self, acts: list[torch.Tensor], grad_q: torch.Tensor) -> None:
        """Set ``.grad`` of every parameter to d(loss)/d(param), given d(loss)/dQ."""
        h = acts[-1]
        if self.dueling:
            grad_adv = grad_q - grad_q.mean(dim=1, keepdim=True)
            grad_val = grad_q.sum(dim=1, keepdim=True)
            self.advantage.weight.grad = grad_adv.t() @ h
            self.advantage.bias.grad = grad_adv.sum(0)
            self.value.weight.grad = grad_val.t() @ h
            self.value.bias.grad = grad_val.sum(0)
            grad_h = torch.addmm(grad_adv @ self.advantage.weight, grad_val, self.value.weight)
        else:
            self.head.weight.grad = grad_q.t() @ h
            self.head.bias.grad = grad_q.sum(0)
            grad_h = grad_q @ self.head.weight
        for i in range(len(self.hidden) - 1, -1, -1):
            layer = self.hidden[i]
            grad_h = grad_h.mul_(acts[i + 1] > 0)
            layer.weight.grad = grad_h.t() @ acts[i]
            layer.bias.grad = grad_h.sum(0)
            if i:
                grad_h = grad_h @ layer.weight


class NumpyPolicy:
    """Q-values of one observation in numpy, through zero-copy views of a QNetwork's weights.

    Acting calls the network once per env step; a torch call costs ~100 us of overhead,
    these three small mat-vecs ~15 us. The views follow in-place optimizer updates.
    """

    def __init__(self, net: QNetwork) -> None:
        self.hidden = [(layer.weight.numpy(), layer.bias.numpy()) for layer in net.hidden]
        self.dueling = net.dueling
        self.heads = [(layer.weight.numpy(), layer.bias.numpy()) for layer in net.heads()]

    def __call__(self, obs: np.ndarray) -> np.ndarray:
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
