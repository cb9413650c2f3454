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
        #: backward's output, reused: (K, P), the first m rows for m members
        self.grad = np.zeros_like(self.flat)
        self._grad_blocks = self.layer_views(self.grad)

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

    def backward(
        self, acts: list[np.ndarray], grad_q: np.ndarray, members: Members = ALL
    ) -> np.ndarray:
        """d(loss)/d(param) per member, as an (m, P) array laid out like :attr:`flat`
        (:meth:`views` gives the per-parameter gradients), given d(loss)/dQ (m, B, n_actions).
        The array is the first m rows of :attr:`grad`, overwritten by the next backward.
        """
        m = grad_q.shape[0]
        grads = self.grad[:m]
        g_blocks = self._grad_blocks if m == self.members else self.layer_views(grads)
        blocks = self._blocks(members)
        if self.dueling:
            grad = np.empty((*grad_q.shape[:2], self.n_actions + 1), np.float32)
            total = _sum_last(grad_q)
            grad[:, :, :1] = total
            total /= np.float32(self.n_actions)
            np.subtract(grad_q, total, out=grad[:, :, 1:])
        else:
            grad = grad_q
        for n in range(len(blocks) - 1, -1, -1):
            a = acts[n]
            np.matmul(a.transpose(0, 2, 1), grad, out=g_blocks[n])
            if n:
                # d/d(input), then ReLU's gate. The weights are copied to (out, in) first:
                # BLAS multiplies by a transposed operand of these shapes at about half speed.
                w_t = np.ascontiguousarray(blocks[n][:, :-1, :].transpose(0, 2, 1))
                grad = np.matmul(grad, w_t)
                grad *= a[:, :, :-1] > 0
        return grads

    def nonfinite(self, member: int) -> bool:
        return not np.isfinite(self.flat[member]).all()

    def nbytes(self) -> int:
        return self.flat.nbytes


class Adam:
    """torch.optim.Adam (no weight decay, no amsgrad) for K members, in place on the (K, P)
    parameter array: torch's fused CPU kernel (``fused=True``), one call per distinct
    (lr, eps) among the members stepped, each member's row its own tensor.

    ``lr``, ``eps`` and the step count are per member, so a member that starts learning
    later, or takes a new trial's slot, has its own bias correction. The kernel is
    elementwise within a row, so a member's update never depends on the other rows.
    Why fused: at DQN's sizes the eleven numpy passes of the textbook formula cost 2-3x the
    single pass (measured 22 vs 7 us at K=1, 9.5 vs 4.7 us per member at K=16).
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
        self._steps = np.zeros(k, dtype=np.float32)  # torch's step tensors: views of this
        self._rows = [
            list(torch.from_numpy(a).unbind(0)) for a in (self.flat, self.m, self.v, self._steps)
        ]
        self._all_groups: list[tuple[float, float, list[int]]] | None = None
        self._g_base: np.ndarray | None = None
        self._g_rows: Sequence[torch.Tensor] | None = None
        self._all_calls: tuple[Sequence[torch.Tensor], list] | None = None

    def _grad_rows(self, grads: np.ndarray) -> Sequence[torch.Tensor]:
        """``grads`` as row tensors; made once for a reused gradient buffer (a network's
        :attr:`StackedMLP.grad` or its first rows)."""
        base = grads if grads.base is None else grads.base
        if self._g_base is not base:
            self._g_base = base
            self._g_rows = torch.from_numpy(base).unbind(0) if base.ndim == 2 else None
        if (
            self._g_rows is None
            or grads.ctypes.data != base.ctypes.data
            or grads.shape[1:] != base.shape[1:]
        ):
            return torch.from_numpy(grads).unbind(0)
        return self._g_rows

    def reset_member(self, member: int, lr: float, eps: float) -> None:
        self.lr[member], self.eps[member], self.t[member] = lr, eps, 0
        self._steps[member] = 0.0
        self.m[member] = 0.0
        self.v[member] = 0.0
        self._all_groups = self._all_calls = None

    def _groups(self, members: Members) -> list[tuple[float, float, list[int]]]:
        """(lr, eps, rows) per distinct setting among ``members``; rows index ``members``."""
        if isinstance(members, slice) and self._all_groups is not None:
            return self._all_groups
        lr, eps = self.lr[members], self.eps[members]
        if (lr == lr[0]).all() and (eps == eps[0]).all():
            groups = [(float(lr[0]), float(eps[0]), list(range(len(lr))))]
        else:
            rows: dict[tuple[float, float], list[int]] = {}
            for row, key in enumerate(zip(lr.tolist(), eps.tolist())):
                rows.setdefault(key, []).append(row)
            groups = [(a, e, r) for (a, e), r in rows.items()]
        if isinstance(members, slice):
            self._all_groups = groups
        return groups

    def _calls(
        self, grads: np.ndarray, members: Members
    ) -> list[tuple[float, float, tuple[list[torch.Tensor], ...]]]:
        """The fused kernel's (lr, eps, tensor lists) per group of ``members``; for all
        members and a reused gradient buffer, made once."""
        g_rows = self._grad_rows(grads)
        if isinstance(members, slice) and self._all_calls and self._all_calls[0] is g_rows:
            return self._all_calls[1]
        index = range(len(self.t)) if isinstance(members, slice) else members.tolist()
        p_rows, m_rows, v_rows, s_rows = self._rows
        calls = []
        for lr, eps, rows in self._groups(members):
            ks = [index[r] for r in rows]
            lists = (
                [p_rows[k] for k in ks],
                [g_rows[r] for r in rows],
                [m_rows[k] for k in ks],
                [v_rows[k] for k in ks],
                [],
                [s_rows[k] for k in ks],
            )
            calls.append((lr, eps, lists))
        if isinstance(members, slice):
            self._all_calls = (g_rows, calls)
        return calls

    def step(self, grads: np.ndarray, members: Members = ALL) -> None:
        """One step for ``members``, given their (m, P) ``grads``."""
        self.t[members] += 1
        self._steps[members] = self.t[members]
        calls = self._calls(grads, members)
        # Subnormals flush to zero during the step (this thread's FTZ/DAZ bits): the first
        # moments of units whose gradient stays 0 decay into subnormals, and arithmetic on
        # subnormals is slow in hardware (after 3000 updates a quarter of the moments were
        # subnormal and the step took 2.6x as long). Deterministic; only values below 1e-38
        # change.
        torch.set_flush_denormal(True)
        try:
            for lr, eps, lists in calls:
                torch._fused_adam_(
                    *lists,
                    lr=lr,
                    beta1=self.beta1,
                    beta2=self.beta2,
                    weight_decay=0.0,
                    eps=eps,
                    amsgrad=False,
                    maximize=False,
                )
        finally:
            torch.set_flush_denormal(False)


def clip_grad_norm(grads: np.ndarray, max_norm: np.ndarray) -> np.ndarray:
    """Scale each member's gradient row (m, P) in place so its L2 norm is at most its
    ``max_norm`` (as ``torch.nn.utils.clip_grad_norm_``: coefficient max_norm / (norm + 1e-6),
    at most 1; ``inf`` disables); return the norms (float32, as torch computes them)."""
    total = np.sqrt(np.matmul(grads[:, None, :], grads[:, :, None])[:, 0, 0])
    coef = max_norm / (total + 1e-6)
    if (coef < 1.0).any():
        grads *= np.minimum(coef, 1.0).astype(np.float32)[:, None]
    return total
