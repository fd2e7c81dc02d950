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

Backward (``backward``, the config's ``gru_impl``): "scan" is JAX's transpose of the scan,
which adds an (H, 3H) outer product into a loop-carried dW_hh at every step (a 12.6 MB
read-modify-write per step for H = 1024: memory-bound on a CPU); "gemm" is a custom VJP that
runs the reverse scan for the state gradients only and then computes dW_hh as ONE
(H, T B) x (T B, 3H) GEMM, as torch and cuDNN do. Same forward; the gradients differ by
float32 rounding (summation order).
"""

from __future__ import annotations

from typing import Any

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Backward = Literal["scan", "gemm"]


def _uniform(bound: float):
    # torch.nn.GRU init: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)).
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _step(h: Array, xi_t: Array, w_hh: Array, b_hh: Array) -> tuple[Array, tuple]:
    """One time step: h (B, H) float32, xi_t (B, 3H) -> (new h, (r, z, n, h W_hn + b_hn))."""
    gh = jnp.dot(h.astype(w_hh.dtype), w_hh, preferred_element_type=jnp.float32) + b_hh
    xr, xz, xn = jnp.split(xi_t, 3, axis=-1)
    hr, hz, hn = jnp.split(gh, 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    return (1.0 - z) * n + z * h, (r, z, n, hn)


def _states_scan(xi: Array, w_hh: Array, b_hh: Array) -> Array:
    """xi (T, B, 3H) float32 input projections -> every state (T, B, H) float32."""
    def step(h, xi_t):
        h, _ = _step(h, xi_t, w_hh, b_hh)
        return h, h

    h0 = jnp.zeros((xi.shape[1], w_hh.shape[0]), jnp.float32)
    return jax.lax.scan(step, h0, xi)[1]


@jax.custom_vjp
def _states_gemm(xi: Array, w_hh: Array, b_hh: Array) -> Array:
    """``_states_scan`` with the one-GEMM dW_hh backward (``_gemm_bwd``)."""
    return _states_scan(xi, w_hh, b_hh)


def _gemm_fwd(xi: Array, w_hh: Array, b_hh: Array) -> tuple[Array, tuple]:
    def step(h, xi_t):
        h_new, gates = _step(h, xi_t, w_hh, b_hh)
        return h_new, (h_new, h, *gates)

    h0 = jnp.zeros((xi.shape[1], w_hh.shape[0]), jnp.float32)
    hs, *res = jax.lax.scan(step, h0, xi)[1]
    return hs, (tuple(res), w_hh, b_hh)


def _gemm_bwd(saved: tuple, d_hs: Array) -> tuple[Array, Array, Array]:
    (h_prev, r, z, n, hn), w_hh, b_hh = saved
    # dgh (B, 3H) x w_hh (H, 3H) contracted over 3H: w_hh as stored, no (3H, H) transposed copy
    back = (((1,), (1,)), ((), ()))

    def step(dh_next, inp):  # the chain rule of _step, one step back
        d_out, hp, r_t, z_t, n_t, hn_t = inp
        dh = d_out + dh_next
        dpre_n = dh * (1.0 - z_t) * (1.0 - n_t * n_t)
        dpre_r = dpre_n * hn_t * r_t * (1.0 - r_t)
        dpre_z = dh * (hp - n_t) * z_t * (1.0 - z_t)
        dgh = jnp.concatenate([dpre_r, dpre_z, dpre_n * r_t], axis=-1)  # d(h W_hh + b_hh)
        dh_prev = dh * z_t + jax.lax.dot_general(dgh.astype(w_hh.dtype), w_hh, back,
                                                 preferred_element_type=jnp.float32)
        return dh_prev, (jnp.concatenate([dpre_r, dpre_z, dpre_n], axis=-1), dgh)

    _, (dxi, dgh) = jax.lax.scan(step, jnp.zeros_like(d_hs[0]), (d_hs, h_prev, r, z, n, hn), reverse=True)
    # dW_hh over all steps at once: (T, B, H) x (T, B, 3H) contracted over T and B. Not as a
    # reshape to (T B, .): merging T with a batch sharded over devices made XLA all-gather both
    # operands; contracted in place, each device sums its own rows and the gradient is reduced.
    over_steps_and_batch = (((0, 1), (0, 1)), ((), ()))
    dw = jax.lax.dot_general(h_prev.astype(w_hh.dtype), dgh.astype(w_hh.dtype), over_steps_and_batch,
                             preferred_element_type=jnp.float32)
    return dxi, dw.astype(w_hh.dtype), jnp.sum(dgh, axis=(0, 1)).astype(b_hh.dtype)


_states_gemm.defvjp(_gemm_fwd, _gemm_bwd)


class GRULayer(nn.Module):
    hidden: int
    dtype: Any = None
    backward: Backward = "scan"

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

        # (B, T, 3H) input projections for every step at once; gate math in float32.
        xi = jnp.einsum("btd,dg->btg", x.astype(dtype), w_ih.astype(dtype),
                        preferred_element_type=jnp.float32) + b_ih
        xi = jnp.swapaxes(xi, 0, 1)  # (T, B, 3H): scan runs over the leading axis
        states = _states_gemm if self.backward == "gemm" else _states_scan
        hs = states(xi, w_hh.astype(dtype), b_hh.astype(jnp.float32))  # (T, B, H) float32
        if return_sequence:
            return jnp.swapaxes(hs, 0, 1).astype(dtype)  # (B, T, H)
        return hs[-1].astype(dtype)


class GRU(nn.Module):
    """(B, T, D) -> last time step of the top layer (B, H). Layers named ``l0``, ``l1``, ..."""

    hidden: int
    num_layers: int = 1
    dtype: Any = None
    backward: Backward = "scan"  # see the module docstring

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for k in range(self.num_layers):
            last = k == self.num_layers - 1
            # Only the top layer can stop at the last state; lower layers feed whole sequences.
            x = GRULayer(self.hidden, dtype=self.dtype, backward=self.backward,
                         name=f"l{k}")(x, return_sequence=not last)
        return x
