"""PROTOTYPE: a torch-semantics GRU layer whose backward computes the recurrent weight
gradient with ONE GEMM after the reverse scan (as torch / cuDNN do), instead of JAX's default
scan transpose, which adds a (H, 3H) outer product into a loop-carried accumulator at every
time step (a 12.6 MB read-modify-write per step for H = 1024: memory-bound).

``gru_layer(x, w_ih, w_hh, b_ih, b_hh, return_sequence)`` has the same math and parameter
layout as ``rawnet2_jax.gru.GRULayer`` (gates r, z, n along 3H; b_hn inside r * (...)).

``python bench/fast_gru.py [--threads 1]`` checks values and gradients against
``rawnet2_jax.gru.GRU`` and times forward + backward (CPU time and wall) at the seed's shape.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))


def _forward(xi, w_hh, b_hh):
    """xi (T, B, 3H) input projections -> all states (T, B, H) and the residuals."""
    h_dim = w_hh.shape[0]

    def step(h, xi_t):
        gh = h @ w_hh + b_hh
        xr, xz, xn = jnp.split(xi_t, 3, axis=-1)
        hr, hz, hn = jnp.split(gh, 3, axis=-1)
        r = jax.nn.sigmoid(xr + hr)
        z = jax.nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)
        h_new = (1.0 - z) * n + z * h
        return h_new, (h_new, h, r, z, n, hn)

    h0 = jnp.zeros((xi.shape[1], h_dim), xi.dtype)
    _, (hs, h_prev, r, z, n, hn) = jax.lax.scan(step, h0, xi)
    return hs, (h_prev, r, z, n, hn)


@jax.custom_vjp
def gru_states(xi, w_hh, b_hh):
    return _forward(xi, w_hh, b_hh)[0]


def _fwd(xi, w_hh, b_hh):
    hs, res = _forward(xi, w_hh, b_hh)
    return hs, (res, w_hh)


def _bwd(saved, d_hs):
    (h_prev, r, z, n, hn), w_hh = saved
    w_t = w_hh.T  # (3H, H)

    def step(dh_next, inp):
        d_out, hp, r_t, z_t, n_t, hn_t = inp
        dh = d_out + dh_next
        dn = dh * (1.0 - z_t)
        dz = dh * (hp - n_t)
        dpre_n = dn * (1.0 - n_t * n_t)
        dpre_r = dpre_n * hn_t * r_t * (1.0 - r_t)
        dpre_z = dz * z_t * (1.0 - z_t)
        dgh = jnp.concatenate([dpre_r, dpre_z, dpre_n * r_t], axis=-1)  # d(h W_hh + b_hh)
        dxi = jnp.concatenate([dpre_r, dpre_z, dpre_n], axis=-1)
        dh_prev = dh * z_t + dgh @ w_t
        return dh_prev, (dxi, dgh)

    h0_grad, (dxi, dgh) = jax.lax.scan(step, jnp.zeros_like(d_hs[0]), (d_hs, h_prev, r, z, n, hn),
                                       reverse=True)
    del h0_grad  # h0 is a constant zero state
    t, b, h3 = dgh.shape
    # the weight gradient over all steps at once: (H, T B) x (T B, 3H)
    dw_hh = h_prev.reshape(t * b, -1).T @ dgh.reshape(t * b, h3)
    db_hh = jnp.sum(dgh, axis=(0, 1))
    return dxi, dw_hh, db_hh


gru_states.defvjp(_fwd, _bwd)


def gru_layer(x, w_ih, w_hh, b_ih, b_hh, return_sequence: bool):
    """x (B, T, D) -> (B, T, H) or the last state (B, H); float32."""
    xi = jnp.swapaxes(jnp.einsum("btd,dg->btg", x, w_ih) + b_ih, 0, 1)  # (T, B, 3H)
    hs = gru_states(xi, w_hh, b_hh)
    return jnp.swapaxes(hs, 0, 1) if return_sequence else hs[-1]


def gru(x, layers: list[dict]):
    """Multi-layer GRU, params as ``rawnet2_jax.gru.GRU``'s ``l{k}`` dicts, last state."""
    for k, p in enumerate(layers):
        last = k == len(layers) - 1
        x = gru_layer(x, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], return_sequence=not last)
    return x


def main(argv=None) -> None:
    import common

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batches", default="2,8")
    ap.add_argument("--frames", type=int, default=87, help="GRU steps (87: the seed at 4 s)")
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--input", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=4)
    a = ap.parse_args(argv)
    if a.threads:
        common.pin_threads(a.threads)
    from rawnet2_jax.gru import GRU

    for b in [int(v) for v in a.batches.split(",")]:
        x = jnp.asarray(np.random.default_rng(0).standard_normal((b, a.frames, a.input)), jnp.float32)
        m = GRU(a.hidden, a.layers)
        v = m.init(jax.random.key(0), x)
        layers = \
            [v["params"][f"l{k}"] for k in range(a.layers)]

        def loss_ref(layers, x):
            return jnp.sum(m.apply({"params": {f"l{k}": p for k, p in enumerate(layers)}}, x) ** 2)

        def loss_fast(layers, x):
            return jnp.sum(gru(x, layers) ** 2)

        fns = {"scan (model)": jax.jit(jax.value_and_grad(loss_ref, argnums=(0, 1))),
               "custom_vjp": jax.jit(jax.value_and_grad(loss_fast, argnums=(0, 1)))}
        with jax.default_matmul_precision("highest"):
            outs = {k: f(layers, x) for k, f in fns.items()}
        ref_leaves = jax.tree.leaves(outs["scan (model)"])
        worst = max(common.rel_diff(g, w)[1] for g, w in zip(jax.tree.leaves(outs["custom_vjp"]), ref_leaves))
        best = {k: [9e9, 9e9] for k in fns}
        for _ in range(a.rounds):
            for k, f in fns.items():
                t0, c0 = time.perf_counter(), time.process_time()
                jax.block_until_ready(f(layers, x))
                best[k][0] = min(best[k][0], time.perf_counter() - t0)
                best[k][1] = min(best[k][1], time.process_time() - c0)
        base = best["scan (model)"][1]
        for k, (wt, ct) in best.items():
            print(f"GRU H={a.hidden} T={a.frames} L={a.layers} b{b} value+grad {k:13} wall {wt * 1e3:8.1f} ms "
                  f"cpu {ct * 1e3:8.1f} ms  x{base / ct:.2f}  (max rel grad diff {worst:.1e})", flush=True)


if __name__ == "__main__":
    main()
