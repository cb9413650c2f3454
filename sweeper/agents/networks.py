"""MLP Q-networks (plain and dueling) for K agents at once, and the batched math that
trains them.

Why by hand: at DQN's sizes (batch 64, 2x64 units) an eager-autograd update is almost all
framework overhead. The forward and backward passes of a ReLU MLP are a dozen small matrix
products, so :class:`StackedMLP` computes them in numpy for K networks of one architecture
at once: every parameter carries a leading member axis and each product is one stacked
``matmul`` (one BLAS call per member, no Python per member). The per-step overhead is thus
paid once for the whole population; a single agent is K=1. Each member's slice is computed
with the same shapes whatever K is, which is what keeps member ``k`` of a population
bit-identical to the same agent trained alone.

:class:`QNetwork` stays the differentiable reference (tests check the kernel's gradients
against autograd), the seeded initializer, and the saved format (a ``state_dict``).
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


def _t(w: np.ndarray) -> np.ndarray:
    """Each member's matrix transposed (a view)."""
    return w.transpose(0, 2, 1)


class StackedMLP:
    """K QNetworks of one architecture as numpy arrays with a leading member axis.

    ``params`` is in ``QNetwork.parameters()`` order, each of shape ``(K, *torch_shape)``.
    Methods take ``members`` (:data:`ALL` or an index array); with an index array the
    parameters of those members are gathered (copies) and the results are theirs.
    """

    def __init__(
        self, members: int, obs_dim: int, n_actions: int, hidden_sizes: Sequence[int], dueling: bool
    ) -> None:
        self.members, self.obs_dim, self.n_actions = members, obs_dim, n_actions
        self.hidden_sizes, self.dueling = tuple(int(h) for h in hidden_sizes), dueling
        ref = QNetwork(obs_dim, n_actions, self.hidden_sizes, dueling)
        self.shapes = [tuple(p.shape) for p in ref.parameters()]
        sizes = [int(np.prod(s)) for s in self.shapes]
        self.bounds = list(zip(np.cumsum([0, *sizes[:-1]]).tolist(), np.cumsum(sizes).tolist()))
        #: All of a member's parameters in one row: the optimizer and the gradient clipping
        #: are then a few operations on one (K, P) array, whatever the number of layers.
        self.flat = np.zeros((members, sizes and sum(sizes)), np.float32)
        self.params = self.views(self.flat)
        n_hidden = len(self.hidden_sizes)
        self.hidden = [(self.params[2 * i], self.params[2 * i + 1]) for i in range(n_hidden)]
        self.heads = [
            (self.params[i], self.params[i + 1]) for i in range(2 * n_hidden, len(self.params), 2)
        ]
        self._all_layers: list[tuple[np.ndarray, np.ndarray]] | None = None

    def views(self, flat: np.ndarray) -> list[np.ndarray]:
        """Per-parameter views (m, *shape) of a (m, P) array laid out like :attr:`flat`."""
        m = flat.shape[0]
        return [flat[:, a:b].reshape(m, *s) for (a, b), s in zip(self.bounds, self.shapes)]

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
                p.copy_(torch.from_numpy(mine[member]))
        return net

    def _layers(self, members: Members) -> list[tuple[np.ndarray, np.ndarray]]:
        """(W^T, b) per layer for ``members``, shaped for (m, B, in) @ (m, in, out) + b;
        for all members these are views of :attr:`flat`, made once."""
        if isinstance(members, slice):
            if self._all_layers is None:
                self._all_layers = [(_t(w), b[:, None, :]) for w, b in (*self.hidden, *self.heads)]
            return self._all_layers
        return [(_t(w[members]), b[members][:, None, :]) for w, b in (*self.hidden, *self.heads)]

    def forward(self, x: np.ndarray, members: Members = ALL) -> tuple[np.ndarray, list[np.ndarray]]:
        """Q for a batch per member, ``x`` of shape (m, B, obs_dim) -> (m, B, n_actions),
        with the activations ``backward`` needs."""
        layers = self._layers(members)
        acts = [x]
        for w_t, b in layers[: len(self.hidden)]:
            x = np.matmul(x, w_t)
            x += b
            np.maximum(x, 0.0, out=x)
            acts.append(x)
        if self.dueling:
            (wv_t, bv), (wa_t, ba) = layers[len(self.hidden) :]
            adv = np.matmul(x, wa_t)
            adv += ba
            value = np.matmul(x, wv_t)
            value += bv
            q = adv - adv.mean(axis=2, keepdims=True) + value
        else:
            w_t, b = layers[-1]
            q = np.matmul(x, w_t)
            q += b
        return q, acts

    def backward(
        self, acts: list[np.ndarray], grad_q: np.ndarray, members: Members = ALL
    ) -> np.ndarray:
        """d(loss)/d(param) per member, as an (m, P) array laid out like :attr:`flat`
        (:meth:`views` gives the per-parameter gradients), given d(loss)/dQ (m, B, n_actions).
        """
        grads = np.empty((grad_q.shape[0], self.flat.shape[1]), np.float32)
        g = self.views(grads)
        h = acts[-1]
        n = len(self.hidden)
        if self.dueling:
            (wv, _), (wa, _) = self.heads
            grad_adv = grad_q - grad_q.mean(axis=2, keepdims=True)
            grad_val = grad_q.sum(axis=2, keepdims=True)
            np.matmul(_t(grad_val), h, out=g[2 * n])
            np.sum(grad_val, axis=1, out=g[2 * n + 1])
            np.matmul(_t(grad_adv), h, out=g[2 * n + 2])
            np.sum(grad_adv, axis=1, out=g[2 * n + 3])
            grad_h = np.matmul(grad_adv, wa[members]) + np.matmul(grad_val, wv[members])
        else:
            w, _ = self.heads[0]
            np.matmul(_t(grad_q), h, out=g[2 * n])
            np.sum(grad_q, axis=1, out=g[2 * n + 1])
            grad_h = np.matmul(grad_q, w[members])
        for i in range(n - 1, -1, -1):
            grad_h *= acts[i + 1] > 0
            np.sum(grad_h, axis=1, out=g[2 * i + 1])
            np.matmul(_t(grad_h), acts[i], out=g[2 * i])
            if i:
                grad_h = np.matmul(grad_h, self.hidden[i][0][members])
        return grads

    def nonfinite(self, member: int) -> bool:
        return not np.isfinite(self.flat[member]).all()

    def nbytes(self) -> int:
        return self.flat.nbytes


class Adam:
    """torch.optim.Adam's update (no weight decay, no amsgrad) for K members, in place on
    the (K, P) parameter array.

    Same formula and operation order as torch's single-tensor implementation (a test checks
    both give the same parameters); ``lr``, ``eps`` and the step count are per member, so a
    member that starts learning later, or takes a new trial's slot, has its own bias
    correction.
    """

    def __init__(
        self,
        flat: np.ndarray,
        lr: np.ndarray,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: np.ndarray | None = None,
    ) -> None:
        k = flat.shape[0]
        self.flat = flat
        self.lr = np.asarray(lr, dtype=np.float64).reshape(k).copy()
        self.eps = (
            np.full(k, 1e-8) if eps is None else np.asarray(eps, np.float64).reshape(k).copy()
        )
        self.beta1, self.beta2 = betas
        self.m = np.zeros_like(flat)
        self.v = np.zeros_like(flat)
        self.t = np.zeros(k, dtype=np.int64)
        # scratch rows: the step allocates nothing (a dozen (K, P) temporaries otherwise)
        self._tmp = np.empty_like(flat)
        self._den = np.empty_like(flat)

    def reset_member(self, member: int, lr: float, eps: float) -> None:
        self.lr[member], self.eps[member], self.t[member] = lr, eps, 0
        self.m[member] = 0.0
        self.v[member] = 0.0

    def step(self, grads: np.ndarray, members: Members = ALL) -> None:
        """One step for ``members``, given their (m, P) ``grads``."""
        self.t[members] += 1
        t = self.t[members]
        b1, b2 = self.beta1, self.beta2
        step_size = (self.lr[members] / (1 - b1**t)).astype(np.float32)[:, None]
        bc2_sqrt = np.sqrt(1 - b2**t).astype(np.float32)[:, None]
        eps = self.eps[members].astype(np.float32)[:, None]
        p, m, v = self.flat[members], self.m[members], self.v[members]
        tmp, denom = self._tmp[: len(p)], self._den[: len(p)]
        # Subnormals flush to zero during the step (this thread's FTZ/DAZ bits, which numpy
        # obeys): the first moments of units whose gradient stays 0 decay into subnormals and
        # stay there (rounding keeps them a few ulp above 0), and arithmetic on subnormals
        # is slow in hardware: after 3000 updates a quarter of the moments were subnormal
        # and the step took 2.6x as long. Deterministic; only values below 1e-38 change.
        torch.set_flush_denormal(True)
        # m += (g - m) * (1 - b1); v = v * b2 + g * g * (1 - b2); p -= step * m / denom
        np.subtract(grads, m, out=tmp)
        tmp *= np.float32(1 - b1)
        m += tmp
        v *= np.float32(b2)
        np.multiply(grads, grads, out=tmp)
        tmp *= np.float32(1 - b2)
        v += tmp
        np.sqrt(v, out=denom)
        denom /= bc2_sqrt
        denom += eps
        np.multiply(step_size, m, out=tmp)
        tmp /= denom
        p -= tmp
        torch.set_flush_denormal(False)
        if not isinstance(members, slice):  # fancy indexing gave copies: write them back
            self.flat[members], self.m[members], self.v[members] = p, m, v


def clip_grad_norm(grads: np.ndarray, max_norm: np.ndarray) -> np.ndarray:
    """Scale each member's gradient row (m, P) in place so its L2 norm is at most its
    ``max_norm`` (as ``torch.nn.utils.clip_grad_norm_``; ``inf`` disables); return the
    norms. The squares are summed in float64."""
    total = np.sqrt(np.square(grads).sum(axis=1, dtype=np.float64))
    coef = max_norm / (total + 1e-6)
    if (coef < 1.0).any():
        grads *= np.minimum(coef, 1.0).astype(np.float32)[:, None]
    return total
