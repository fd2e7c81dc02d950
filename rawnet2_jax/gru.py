"""Multi-layer GRU with exact ``torch.nn.GRU`` (batch_first) semantics, scanned over time.

Per layer, with gates stacked in torch's order r, z, n along the 3H axis:

    r = sigmoid(x W_ir + b_ir + h W_hr + b_hr)
    z = sigmoid(x W_iz + b_iz + h W_hz + b_hz)
    n = tanh(x W_in + b_in + r * (h W_hn + b_hn))      # b_hn sits inside r * (...)
    h = (1 - z) * n + z * h

The input projection of all time steps is ONE matmul before the scan (it does not depend on
h), so the sequential part only does the (B, H) x (H, 3H) recurrent matmul.

Params per layer ``l{k}``: ``w_ih`` (in, 3H), ``w_hh`` (H, 3H), ``b_ih`` (3H,), ``b_hh`` (3H,)
-- torch's ``weight_ih_l{k}`` transposed, etc.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def _uniform(bound: float):
    # torch.nn.GRU init: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)).
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class GRULayer(nn.Module):
    hidden: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, return_sequence: bool) -> Array:
        """x (B, T, D) -> (B, T, H) if return_sequence else the last state (B, H)."""
        h_dim = self.hidden
        init = _uniform(1.0 / h_dim**0.5)
        w_ih = self.param("w_ih", init, (x.shape[-1], 3 * h_dim))
        w_hh = self.param("w_hh", init, (h_dim, 3 * h_dim))
        b_ih = self.param("b_ih", init, (3 * h_dim,))
        b_hh = self.param("b_hh", init, (3 * h_dim,))
        dtype = self.dtype or x.dtype
        w_hh_c = w_hh.astype(dtype)

        # (B, T, 3H) input projections for every step at once; gate math in float32.
        xi = jnp.einsum("btd,dg->btg", x.astype(dtype), w_ih.astype(dtype),
                        preferred_element_type=jnp.float32) + b_ih
        xi = jnp.swapaxes(xi, 0, 1)  # (T, B, 3H): scan runs over the leading axis

        def step(h, xi_t):  # h (B, H) float32
            gh = jnp.dot(h.astype(dtype), w_hh_c, preferred_element_type=jnp.float32) + b_hh
            xr, xz, xn = jnp.split(xi_t, 3, axis=-1)
            hr, hz, hn = jnp.split(gh, 3, axis=-1)
            r = jax.nn.sigmoid(xr + hr)
            z = jax.nn.sigmoid(xz + hz)
            n = jnp.tanh(xn + r * hn)
            h = (1.0 - z) * n + z * h
            return h, (h if return_sequence else None)

        h0 = jnp.zeros((x.shape[0], h_dim), jnp.float32)
        h_last, ys = jax.lax.scan(step, h0, xi)
        if return_sequence:
            return jnp.swapaxes(ys, 0, 1).astype(dtype)  # (B, T, H)
        return h_last.astype(dtype)


class GRU(nn.Module):
    """(B, T, D) -> last time step of the top layer (B, H). Layers named ``l0``, ``l1``, ..."""

    hidden: int
    num_layers: int = 1
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for k in range(self.num_layers):
            last = k == self.num_layers - 1
            # Only the top layer can stop at the last state; lower layers feed whole sequences.
            x = GRULayer(self.hidden, dtype=self.dtype, name=f"l{k}")(x, return_sequence=not last)
        return x
