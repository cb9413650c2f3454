"""The compiled DQN update: one gradient step of each member, in one pass per member.

Why compiled: at DQN's sizes (batch 64, 4-64-64-2) the arithmetic of an update is 2.26
MFLOP of matrix products, and a numpy engine spent as long again on dispatch (ReLU masks, the
TD target, loss, clipping, Adam: a dozen calls over stacked arrays). Here one numba function
takes every learning member in turn: the online net on s, the target net (or the online net)
on s', the TD target (:func:`td_target`, its only definition), the loss and its gradient,
backward, gradient clipping, Adam and the target sync, on data that stays in cache. The
products are numpy's own BLAS, called as ``np.matmul`` calls it (``sweeper.agents.blas.matmul``:
gemm, or gemv for a batch of one, with numpy's transposes),
each member's with the same shapes whatever the population size, so member ``k`` of a
population is bit-identical to the same agent trained alone, and to the numpy engine before it.

Exactness is kept in the small phases too: float32 throughout, operations in numpy's order,
numpy's pairwise sum for the mean loss, the gradient norm as ``cblas_sdot``, and Adam as
torch's fused CPU kernel computes it (its FMA-contracted lerp and second moment, the scalar
tail after the last full 16-float vector, subnormals flushed). ``tests/test_member_update.py``
checks every variant against torch autograd and this module against itself member by member.

Parameter layout (``sweeper.agents.networks.StackedMLP``): member ``k``'s parameters are row
``k`` of a (K, P) float32 array, one ``(in + 1, out)`` block per layer (``W^T`` with the bias
as its last row), the dueling heads one block (value column first). ``layout`` rows are
``(offset, in, out)``. Compiled once per machine (``cache=True``: numba's cache next to this
file or in ``NUMBA_CACHE_DIR``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from sweeper.agents.blas import (
    FTZ_DAZ,
    fma32,
    get_mxcsr,
    matmul,
    sdot,
    set_mxcsr,
    sqrt32,
)
from sweeper.agents.pairwise import pairwise_sum

#: target_mode values (``sweeper.agents.dqn.TARGET_UPDATES`` order)
HARD, SOFT, NO_TARGET = 0, 1, 2
BETA1, BETA2 = 0.9, 0.999
#: torch's fused Adam kernel computes all but the last ``n % ADAM_VECTOR`` floats of a row
#: in vector code (16-float vectors, then its compiled tail 8 floats at a time)
ADAM_VECTOR = 8
_F4 = 4  # bytes per float32


@njit(cache=True, inline="always", error_model="numpy")
def td_target(reward, terminated, gamma, next_value):
    """r + gamma * (1 - terminated) * V(s'), float32: only termination cuts the bootstrap;
    a time-limit truncation is stored as not terminated. ``next_value`` is
    max_a Q_target(s', a) (DQN) or Q_target(s', argmax_a Q_online(s', a)) (Double DQN,
    :func:`next_value`)."""
    return reward + gamma * (np.float32(1.0) - terminated) * next_value


@njit(cache=True, inline="always", error_model="numpy")
def next_value(q_target, q_online, b, double):
    """V(s') of batch row ``b``: the target net's max (numpy's NaN-propagating maximum), or
    with ``double`` the target net's value of the online net's first argmax."""
    n = q_target.shape[1]
    if double:
        best = 0
        for a in range(1, n):
            if q_online[b, a] > q_online[b, best] or (
                q_online[b, a] != q_online[b, a] and q_online[b, best] == q_online[b, best]
            ):
                best = a
        return q_target[b, best]
    v = q_target[b, 0]
    for a in range(1, n):
        x = q_target[b, a]
        if x > v or x != x:
            v = x
    return v


@njit(cache=True, error_model="numpy")
def forward(row, layout, acts, width, out, dueling, q):
    """Q of a batch under the parameters ``row`` (P,): ``acts[0][:, :in0]`` holds the inputs
    (column ``in`` of each layer's input buffer is 1), the hidden activations go to
    ``acts[n]``, the head's outputs to ``out`` (B, n_out) and the Q-values to ``q``
    (B, n_actions). The products are the ones ``np.matmul`` made (same calls, same shapes)."""
    batch = acts.shape[1]
    layers = layout.shape[0]
    base = row.ctypes.data
    for n in range(layers):
        off, fan_in, fan_out = layout[n, 0], layout[n, 1], layout[n, 2]
        w = base + off * _F4
        if n + 1 < layers:
            nxt = acts[n + 1]
            matmul(
                acts[n].ctypes.data,
                width,
                1,
                w,
                fan_out,
                1,
                nxt.ctypes.data,
                width,
                1,
                batch,
                fan_in + 1,
                fan_out,
            )
            for b in range(batch):
                for j in range(fan_out):
                    if nxt[b, j] < 0.0:  # ReLU (numpy's maximum(x, 0): NaN stays NaN)
                        nxt[b, j] = 0.0
                nxt[b, fan_out] = 1.0
        else:
            matmul(
                acts[n].ctypes.data,
                width,
                1,
                w,
                fan_out,
                1,
                out.ctypes.data,
                out.shape[1],
                1,
                batch,
                fan_in + 1,
                fan_out,
            )
    n_actions = q.shape[1]
    for b in range(batch):
        if dueling:  # Q = (A - mean A) + V, the mean summed in action order
            total = out[b, 1]
            for a in range(1, n_actions):
                total += out[b, 1 + a]
            mean = total / np.float32(n_actions)
            for a in range(n_actions):
                q[b, a] = (out[b, 1 + a] - mean) + out[b, 0]
        else:
            for a in range(n_actions):
                q[b, a] = out[b, a]


@njit(cache=True, error_model="numpy")
def backward(row, layout, acts, width, grad_out, grad, g_a, g_b, w_t):
    """d(loss)/d(params) into ``grad`` (P,), from d(loss)/d(head outputs) ``grad_out``
    (B, n_out) and the activations of the forward on s under ``row``; ``g_a``/``g_b`` (B, H)
    and ``w_t`` are scratch."""
    batch = acts.shape[1]
    g = grad_out
    for n in range(layout.shape[0] - 1, -1, -1):
        off, fan_in, fan_out = layout[n, 0], layout[n, 1], layout[n, 2]
        a_n = acts[n]
        matmul(
            a_n.ctypes.data,
            1,
            width,
            g.ctypes.data,
            g.shape[1],
            1,
            grad.ctypes.data + off * _F4,
            fan_out,
            1,
            fan_in + 1,
            batch,
            fan_out,
        )
        if n:
            # d/d(input): the weights copied to (out, in) first (BLAS multiplies by a
            # transposed operand of these shapes at about half speed), then ReLU's gate
            for i in range(fan_in):
                for o in range(fan_out):
                    w_t[o * fan_in + i] = row[off + i * fan_out + o]
            nxt = g_b if g is g_a else g_a
            matmul(
                g.ctypes.data,
                g.shape[1],
                1,
                w_t.ctypes.data,
                fan_in,
                1,
                nxt.ctypes.data,
                nxt.shape[1],
                1,
                batch,
                fan_out,
                fan_in,
            )
            for b in range(batch):
                for i in range(fan_in):
                    nxt[b, i] *= np.float32(1.0) if a_n[b, i] > 0 else np.float32(0.0)
            g = nxt


@njit(cache=True, error_model="numpy")
def adam(p, g, m, v, step, lr, eps):
    """One Adam step of a (P,) row in place, as torch's fused CPU kernel (``torch._fused_adam_``,
    no weight decay, no amsgrad) computes it with FTZ/DAZ set: the bias corrections in double
    from the float32 step count, the first moment as an FMA lerp and the second moment
    FMA-contracted. The contraction depends on where an element falls: torch's kernel runs
    16-float vectors, then a scalar tail that its compiler vectorized 8 floats at a time; in
    both vector parts ``v * b2`` is the FMA's addend, in the last ``n % ADAM_VECTOR`` elements
    (scalar code) the product is. Checked bit for bit against torch in
    ``tests/test_member_update.py`` (tails of 0 to 15 floats)."""
    stepf = np.float64(np.float32(step))
    bias1 = 1.0 - BETA1**stepf
    bias2 = 1.0 - BETA2**stepf
    step_size = lr / bias1
    c1, c2 = np.float32(1.0 - BETA1), np.float32(1.0 - BETA2)
    b2 = np.float32(BETA2)
    bias2_sqrt = np.float32(math.sqrt(bias2))
    e = np.float32(eps)
    neg_step, pos_step = np.float32(-step_size), np.float32(step_size)
    n = p.shape[0]
    vectors = n - n % ADAM_VECTOR
    old = get_mxcsr()
    set_mxcsr(old | np.uint32(FTZ_DAZ))
    for d in range(vectors):
        gd = g[d]
        md = fma32(c1, gd - m[d], m[d])
        vd = fma32(c2 * gd, gd, v[d] * b2)
        m[d] = md
        v[d] = vd
        p[d] = p[d] + neg_step * md / (sqrt32(vd) / bias2_sqrt + e)
    for d in range(vectors, n):
        gd = g[d]
        md = fma32(c1, gd - m[d], m[d])
        vd = fma32(v[d], b2, (c2 * gd) * gd)
        m[d] = md
        v[d] = vd
        p[d] = p[d] - pos_step * md / (sqrt32(vd) / bias2_sqrt + e)
    set_mxcsr(old)


@njit(cache=True, error_model="numpy")
def update(
    members,
    online,
    target,
    adam_m,
    adam_v,
    adam_t,
    lr,
    eps,
    layout,
    dueling,
    gamma,
    double,
    target_mode,
    target_update_freq,
    tau,
    huber,
    huber_delta,
    grad_clip,
    updates,
    obs,
    actions,
    rewards,
    next_obs,
    terminated,
    weights,
    acts,
    acts_next,
    heads,
    qs,
    grad_out,
    g_a,
    g_b,
    w_t,
    grad,
    td_row,
    loss,
    abs_td,
):
    """One gradient step of each of ``members`` (rows of the batch arrays: row ``r`` is member
    ``members[r]``), in place on the (K, P) ``online`` / ``target`` / Adam arrays and the
    per-member ``adam_t`` and ``updates`` counts; writes each row's mean loss to ``loss`` and
    its |TD errors| to ``abs_td`` (prioritized replay's new priorities).

    Per member: Q(s) (online), Q(s') of the target net ("none": of the online net) and, for
    Double DQN or "none", of the online net; y = :func:`td_target`; TD = Q(s, a) - y; the
    importance-weighted loss (mse, or Huber with the member's delta) and d loss / d Q(s, a);
    backward; the gradient's L2 norm clipped to ``grad_clip`` (inf: off) as
    ``torch.nn.utils.clip_grad_norm_``; Adam; then the hard copy every
    ``target_update_freq`` updates or the soft move by ``tau``. Scratch arrays (``acts``...)
    are the caller's, sized for the batch.
    """
    batch = obs.shape[1]
    obs_dim = obs.shape[2]
    width = acts.shape[2]
    n_actions = qs.shape[2]
    p = online.shape[1]
    for layer in range(layout.shape[0]):  # the ones columns of each layer's input
        fan_in = layout[layer, 1]
        for b in range(batch):
            acts[layer, b, fan_in] = 1.0
            acts_next[layer, b, fan_in] = 1.0
    inv_n = np.float32(2.0 / batch)
    for r in range(members.shape[0]):
        k = members[r]
        row = online[k]
        mode = target_mode[k]
        for b in range(batch):
            for i in range(obs_dim):
                acts[0, b, i] = obs[r, b, i]
                acts_next[0, b, i] = next_obs[r, b, i]
        q, q_online, q_target = qs[0], qs[1], qs[2]
        forward(row, layout, acts, width, heads[0], dueling, q)
        if mode == NO_TARGET or double[k]:
            forward(row, layout, acts_next, width, heads[1], dueling, q_online)
        if mode == NO_TARGET:
            q_target = q_online
        else:
            forward(target[k], layout, acts_next, width, heads[2], dueling, q_target)
        g_k = gamma[k]
        hub, delta, w_r = huber[k], huber_delta[k], weights[r]
        for b in range(batch):
            v = next_value(q_target, q_online, b, double[k])
            y = td_target(rewards[r, b], terminated[r, b], g_k, v)
            td = q[b, actions[r, b]] - y
            abs_td[r, b] = abs(td)
            if hub:
                a = abs(td)
                quad = min(a, delta)
                td_row[b] = w_r[b] * (np.float32(0.5) * quad * quad + delta * (a - quad))
                clipped = min(max(td, -delta), delta)
                d_q = w_r[b] * clipped / np.float32(batch)
            else:
                td_row[b] = w_r[b] * td * td
                d_q = w_r[b] * td * inv_n
            for j in range(grad_out.shape[1]):
                grad_out[b, j] = 0.0
            if dueling:  # d/dV = sum over actions, d/dA_a = g_a - (that sum) / n_actions
                share = d_q / np.float32(n_actions)
                grad_out[b, 0] = d_q
                for a in range(n_actions):
                    grad_out[b, 1 + a] = (d_q if a == actions[r, b] else np.float32(0.0)) - share
            else:
                grad_out[b, actions[r, b]] = d_q
        loss[r] = np.float32(np.float64(pairwise_sum(td_row, batch)) / batch)
        backward(row, layout, acts, width, grad_out, grad, g_a, g_b, w_t)
        if grad_clip[k] < np.inf:
            norm = np.sqrt(sdot(p, grad.ctypes.data, 1, grad.ctypes.data, 1))
            coef = grad_clip[k] / np.float64(norm + np.float32(1e-6))
            if not coef >= 1.0:
                scale = np.float32(coef)
                for d in range(p):
                    grad[d] *= scale
        adam_t[k] += 1
        adam(row, grad, adam_m[k], adam_v[k], adam_t[k], lr[k], eps[k])
        updates[k] += 1
        if mode == HARD and updates[k] % target_update_freq[k] == 0:
            target[k, :] = row
        elif mode == SOFT:
            t_row, rate = target[k], tau[k]
            for d in range(p):
                t_row[d] = t_row[d] + (row[d] - t_row[d]) * rate
