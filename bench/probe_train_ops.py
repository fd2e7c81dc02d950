"""PROTOTYPE probes of train-step pieces (value + grad), CPU time on pinned threads.

    .venv/bin/python bench/probe_train_ops.py [--threads 1] [--batch 2]

* max-pool (window = stride = 3): ``flax.linen.max_pool`` (reduce_window, whose gradient is
  XLA's select-and-scatter) against reshape (B, T/3, 3, C) + max (gradient: an elementwise
  equality mask, fused by XLA);
* kernel-3 conv gradients: XLA's conv against im2col GEMM and three shifted GEMMs.

Minimum over rounds of process CPU time (robust on a busy machine with --threads 1).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import common  # noqa: E402


def _best(fns: dict, args: tuple, rounds: int) -> dict:
    import jax

    for f in fns.values():
        jax.block_until_ready(f(*args))
    best = {k: [9e9, 9e9] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(f(*args))
            best[k][0] = min(best[k][0], time.perf_counter() - t0)
            best[k][1] = min(best[k][1], time.process_time() - c0)
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="1/8 of the time axis")
    a = ap.parse_args(argv)
    common.pin_threads(a.threads)
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np

    from fast_forward import xla_conv

    s = 8 if a.quick else 1
    rng = np.random.default_rng(0)
    rows = []

    def pool_rw(x):
        return nn.max_pool(x, (3,), strides=(3,), padding="VALID")

    def pool_rs(x):
        t = x.shape[1] // 3 * 3
        return x[:, :t].reshape(x.shape[0], -1, 3, x.shape[2]).max(axis=2)

    for name, t, c in (("pool block0", 64000 // s, 128), ("pool block2", 7111 // s, 512)):
        x = jnp.asarray(rng.standard_normal((a.batch, t, c)), jnp.float32)
        g = jnp.asarray(rng.standard_normal((a.batch, t // 3, c)), jnp.float32)
        fns = {k: jax.jit(lambda x, g, f=f: jax.vjp(f, x)[1](g)[0])
               for k, f in (("reduce_window", pool_rw), ("reshape_max", pool_rs))}
        for k, (wt, ct) in _best(fns, (x, g), a.rounds).items():
            rows.append({"op": name, "variant": k, "wall_ms": wt * 1e3, "cpu_ms": ct * 1e3})

    def conv_im2col(x, w):
        t = x.shape[1]
        xp = jnp.pad(x, ((0, 0), (1, 1), (0, 0)))
        return jnp.concatenate([xp[:, k:k + t] for k in range(3)], axis=-1) @ w.reshape(-1, w.shape[-1])

    def conv_shift(x, w):
        t = x.shape[1]
        xp = jnp.pad(x, ((0, 0), (1, 1), (0, 0)))
        return sum(xp[:, k:k + t] @ w[k] for k in range(3))

    for name, t, ci, co in (("conv grad block0", 64000 // s, 128, 128), ("conv grad block3", 2370 // s, 512, 512)):
        x = jnp.asarray(rng.standard_normal((a.batch, t, ci)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((3, ci, co)) / np.sqrt(3 * ci), jnp.float32)
        g = jnp.asarray(rng.standard_normal((a.batch, t, co)), jnp.float32)
        fns = {k: jax.jit(lambda x, w, g, f=f: jax.vjp(f, x, w)[1](g))
               for k, f in (("xla", lambda x, w: xla_conv(x, w, 1)), ("im2col", conv_im2col),
                            ("shift3", conv_shift))}
        for k, (wt, ct) in _best(fns, (x, w, g), a.rounds).items():
            rows.append({"op": name, "variant": k, "wall_ms": wt * 1e3, "cpu_ms": ct * 1e3})
    for r in rows:
        print(f"{r['op']:18} {r['variant']:14} wall {r['wall_ms']:8.1f} ms  cpu {r['cpu_ms']:8.1f} ms")
    common.write_json(common.RESULTS / f"probe_train_ops{'_quick' if a.quick else ''}.json",
                      {"machine": common.machine_info(), "threads": a.threads, "batch": a.batch, "rows": rows})


if __name__ == "__main__":
    main()
