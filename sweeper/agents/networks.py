"""MLP Q-networks (plain and dueling) for K agents at once: the parameter layout, and the
forward pass that acting and the greedy evaluations use.

Why by hand: at DQN's sizes (batch 64, 2x64 units) eager torch is almost all framework
overhead. :class:`StackedMLP` holds K networks of one architecture as one (K, P) float32
array and computes a forward for all of them at once: every parameter carries a leading
member axis and each product is one stacked ``matmul`` (one BLAS call per member, no Python
per member). Each member's slice is computed with the same shapes whatever K is, which keeps
member ``k`` of a population bit-identical to the same agent alone. Training (forward,
backward, Adam) is the compiled update of ``sweeper.agents.member_update`` on the same layout.

:class:`QNetwork` stays the differentiable reference (tests check the compiled update's
gradients and Adam steps against autograd and torch.optim.Adam), the seeded initializer, and
the saved format (a ``state_dict``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

#: Selects members: ``slice(None)`` (all of them: views, updated in place) or an int array.
Members = slice | np.ndarray
ALL: slice = slice(None)


def _init_linear(layer: nn.Linear, generator: torch.Generator) -> None:
    """PyTorch's default Linear init, drawn from an explicit generator (reproducible)."""
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    bound = 1.0 / math.sqrt(layer.in_features)
    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


class QNetwork(nn.Module):
    """Q(s, .) for all actions: ReLU hidden layers, then one linear head or a dueling pair.

    Dueling (Wang et al. 2016): Q(s,a) = V(s) + A(s,a) - mean_a' A(s,a').
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


def _sum_last(x: np.ndarray) -> np.ndarray:
    """``x.sum(axis=-1, keepdims=True)`` over the few actions, added in order: numpy's
    reduction along a short last axis costs ten times the elementwise additions."""
    out = x[..., :1].copy()
    for a in range(1, x.shape[-1]):
        out += x[..., a : a + 1]
    return out


def _mean_last(x: np.ndarray) -> np.ndarray:
    out = _sum_last(x)
    out /= np.float32(x.shape[-1])
    return out


class StackedMLP:
    """K QNetworks of one architecture as numpy arrays with a leading member axis.

    Layout: all of a member's parameters are one row of :attr:`flat` (K, P), one block per
    linear layer of shape ``(in + 1, out)``: the weight stored input-major (``W^T``, so the
    forward product ``x @ W^T`` reads it without a transpose) and the bias as its last row.
    The activations carry a trailing column of ones, so a layer is one product
    ``[x, 1] @ block`` and its gradient one product ``[x, 1]^T @ grad``: no bias adds, no
    bias-gradient sums. The dueling heads share one block (column 0 the value, then the
    advantages). ``params`` are views in ``QNetwork.parameters()`` order and torch's shapes,
    ``(K, *torch_shape)``; methods take ``members`` (:data:`ALL` or an index array; with an
    index array the members' rows are gathered, one copy, and the results are theirs).
    """

    def __init__(
        self, members: int, obs_dim: int, n_actions: int, hidden_sizes: Sequence[int], dueling: bool
    ) -> None:
        self.members, self.obs_dim, self.n_actions = members, obs_dim, n_actions
        self.hidden_sizes, self.dueling = tuple(int(h) for h in hidden_sizes), dueling
        ref = QNetwork(obs_dim, n_actions, self.hidden_sizes, dueling)
        self.shapes = [tuple(p.shape) for p in ref.parameters()]
        dims = [obs_dim, *self.hidden_sizes]
        #: (in, out) of each block: the hidden layers, then the head (both dueling heads)
        self.blocks = [*zip(dims[:-1], dims[1:]), (dims[-1], n_actions + int(dueling))]
        sizes = [(i + 1) * o for i, o in self.blocks]
        self.bounds = list(zip(np.cumsum([0, *sizes[:-1]]).tolist(), np.cumsum(sizes).tolist()))
        self.flat = np.zeros((members, sum(sizes)), np.float32)
        self.params = self.views(self.flat)
        n_hidden = len(self.hidden_sizes)
        self.hidden = [(self.params[2 * i], self.params[2 * i + 1]) for i in range(n_hidden)]
        self.heads = [
            (self.params[i], self.params[i + 1]) for i in range(2 * n_hidden, len(self.params), 2)
        ]
        self._scratch: dict[tuple[int, int], list[np.ndarray]] = {}
        self._all_blocks = self.layer_views(self.flat)

    def layer_views(self, flat: np.ndarray) -> list[np.ndarray]:
        """The (m, in + 1, out) blocks of a (m, P) array laid out like :attr:`flat`."""
        m = flat.shape[0]
        return [
            flat[:, a:b].reshape(m, i + 1, o)
            for (a, b), (i, o) in zip(self.bounds, self.blocks, strict=True)
        ]

    def views(self, flat: np.ndarray) -> list[np.ndarray]:
        """Per-parameter views of a (m, P) array, in ``QNetwork.parameters()`` order and
        torch's shapes (weights are transposed views of the blocks)."""
        blocks = self.layer_views(flat)
        out: list[np.ndarray] = []
        for (i, _), block in zip(self.blocks[:-1], blocks[:-1]):
            out += [block[:, :i, :].transpose(0, 2, 1), block[:, i, :]]
        i = self.blocks[-1][0]
        head = blocks[-1]
        if self.dueling:
            value, adv = head[:, :, :1], head[:, :, 1:]
            out += [value[:, :i].transpose(0, 2, 1), value[:, i], adv[:, :i].transpose(0, 2, 1)]
            out.append(adv[:, i])
        else:
            out += [head[:, :i, :].transpose(0, 2, 1), head[:, i, :]]
        return out

    def load(self, member: int, net: QNetwork) -> None:
        for mine, p in zip(self.params, net.parameters(), strict=True):
            mine[member] = p.detach().numpy()

    def copy_from(self, other: StackedMLP, members: Members = ALL) -> None:
        self.flat[members] = other.flat[members]

    def module(self, member: int) -> QNetwork:
        """Member ``member`` as a QNetwork (for saving)."""
        net = QNetwork(self.obs_dim, self.n_actions, self.hidden_sizes, self.dueling)
        with torch.no_grad():
            for p, mine in zip(net.parameters(), self.params, strict=True):
                p.copy_(torch.from_numpy(np.ascontiguousarray(mine[member])))
        return net

    def _blocks(self, members: Members) -> list[np.ndarray]:
        if isinstance(members, slice):
            return self._all_blocks
        return self.layer_views(self.flat[members])

    def _inputs(self, m: int, batch: int, slot: int) -> list[np.ndarray]:
        """Reused (m, batch, in + 1) input buffers per layer, last column 1: a forward's
        activations live in its ``slot`` until the next forward of that shape and slot."""
        bufs = self._scratch.get((batch, slot))
        if bufs is None:
            bufs = [np.ones((self.members, batch, i + 1), np.float32) for i, _ in self.blocks]
            self._scratch[(batch, slot)] = bufs
        return bufs if m == self.members else [b[:m] for b in bufs]

    def forward(
        self, x: np.ndarray, members: Members = ALL, slot: int = 0
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Q for a batch per member, ``x`` of shape (m, B, obs_dim) -> (m, B, n_actions),
        with the activations ``backward`` needs (valid until the next forward in ``slot``
        with the same shapes)."""
        blocks = self._blocks(members)
        m, batch = x.shape[0], x.shape[1]
        acts = self._inputs(m, batch, slot)
        acts[0][:, :, :-1] = x
        for block, a, nxt in zip(blocks[:-1], acts[:-1], acts[1:]):
            np.matmul(a, block, out=nxt[:, :, :-1])
            np.maximum(nxt, 0.0, out=nxt)  # contiguous (fast); the ones column stays 1
        out = np.matmul(acts[-1], blocks[-1])
        if not self.dueling:
            return out, acts
        value, adv = out[:, :, :1], out[:, :, 1:]
        return adv - _mean_last(adv) + value, acts

    def nonfinite(self, member: int) -> bool:
        return not np.isfinite(self.flat[member]).all()

    def nbytes(self) -> int:
        return self.flat.nbytes
