"""Non-overlapping 1-D max-pool over time, channels-last, with torch's gradient.

``max_pool_1d(x, size)``: (B, T, C) -> (B, T // size, C), the trailing ``T % size`` frames
dropped (``torch.nn.functional.max_pool1d`` floor mode). The same values as
``flax.linen.max_pool(x, (size,), strides=(size,), padding="VALID")``, computed as a
reshape to (B, T', size, C) and a max over the window axis.

Why not ``max_pool``: its gradient is XLA's select-and-scatter, a scatter that XLA does not
fuse. Here the backward pass is elementwise: each window's gradient goes to the FIRST frame
that holds its maximum (what torch's ``max_pool1d`` and XLA's select-and-scatter pick),
whose index the forward pass keeps (int8). On 2 CPU threads this made the pool's
value-and-gradient at the seed's block-0 shape (batch 8, 64000 x 128) about 1.4x cheaper in
CPU time and its process 30 % smaller (see bench/README.md). The gradient is bit-identical to
``max_pool``'s, ties included (``jnp.max``'s own gradient would split a tie between the tied
frames; RawNet2 sees ties on the constant, zero-padded tail of short utterances).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array


def _windows(x: Array, size: int) -> Array:
    """(B, T, C) -> (B, T // size, size, C), the tail dropped."""
    b, t, c = x.shape
    t_out = t // size
    return x[:, : t_out * size].reshape(b, t_out, size, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool_1d(x: Array, size: int) -> Array:
    if size == 1:
        return x
    return jnp.max(_windows(x, size), axis=2)


def _fwd(x: Array, size: int) -> tuple[Array, tuple[Array, tuple[int, ...]]]:
    if size == 1:
        return x, (jnp.zeros((), jnp.int8), x.shape)
    w = _windows(x, size)
    # The winner of every window, chosen once here: jnp.argmax takes the first maximum, as
    # torch does. (Comparing x with y again in the backward pass fails where XLA recomputes x
    # there with another rounding, e.g. a BatchNorm fused with an FMA in one kernel and not in
    # the other: a 1e-7 difference then drops or moves whole windows' gradients.) int8: a
    # quarter of the memory of keeping x.
    return jnp.max(w, axis=2), (jnp.argmax(w, axis=2).astype(jnp.int8), x.shape)


def _bwd(size: int, res: tuple[Array, tuple[int, ...]], g: Array) -> tuple[Array]:
    winner, (b, t, c) = res
    if size == 1:
        return (g,)
    frame = jnp.arange(size, dtype=jnp.int8)[None, None, :, None]
    gw = jnp.where(winner[:, :, None, :] == frame, g[:, :, None, :], jnp.zeros((), g.dtype))  # (B, T', size, C)
    gx = gw.reshape(b, -1, c)
    if gx.shape[1] < t:  # frames dropped by the floor get no gradient
        gx = jnp.pad(gx, ((0, 0), (0, t - gx.shape[1]), (0, 0)))
    return (gx,)


max_pool_1d.defvjp(_fwd, _bwd)
