"""PROTOTYPE: the RawNet2 train step with the cheaper formulations found by the probes, to
measure their combined effect against ``train/step.py`` on the same weights and batch.

Same math as the model in train mode (BN batch statistics + running-stat update, FMS, weighted
CE, the recipe's optax chain), with:

* max-pools as reshape + max (gradient: an elementwise mask instead of select-and-scatter);
* the GRU from ``fast_gru.py`` (recurrent weight gradient as one GEMM after the reverse scan);
* optionally the FFT sinc conv (``--sinc fft``; the filters are fixed in every preset).

    .venv/bin/python bench/fast_train.py [--preset caa_rawnet2] [--batch 2] [--threads 1] [--quick]

prints loss / grad-norm agreement with ``train.step.make_train_step`` and CPU / wall time and
compile time of both. Only presets whose sinc tensors are not learnable (all three).
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


def make_train_step(cfg, tcfg, variables, sinc: str = "xla", pool_impl: str = "reshape",
                    gru_impl: str = "fast"):
    """(params, extra, step): ``step(params, opt_state, stats, x, y) -> (params, opt_state,
    stats, loss, grad_norm)``; ``extra`` holds the fixed sinc filters."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import fast_gru
    from fast_forward import sinc_fft, xla_conv
    from rawnet2_jax.sinc import official_filters, sincnet_filters
    from train.optim import make_optimizer

    assert not cfg.sinc_learnable, "prototype: fixed sinc filters only"
    P, S, buf = variables["params"], variables["batch_stats"], variables.get("buffers", {})
    if cfg.sinc_formula == "official":
        filt = official_filters(cfg)
    else:
        b = buf["sinc"]
        filt = sincnet_filters(b["low_hz_"], b["band_hz_"], b["n_axis"], b["window"], cfg.sample_rate,
                               cfg.sinc_min_low_hz, cfg.sinc_min_band_hz)
    filt = jnp.asarray(np.asarray(filt, np.float32))
    k = cfg.sinc_kernel_size
    same = cfg.sinc_padding == "same"
    eps, mom, slope = cfg.bn_eps, cfg.bn_momentum, cfg.leaky_relu_slope
    weights = jnp.asarray(tcfg.class_weights, jnp.float32)
    tx = make_optimizer(tcfg)
    lrelu = lambda v: jnp.where(v >= 0, v, slope * v)  # noqa: E731

    def act(v, name):
        return {"selu": jax.nn.selu, "leaky_relu": lrelu, "relu": jax.nn.relu}.get(name, lambda u: u)(v)

    def bn(v, p, st, new):
        axes = tuple(range(v.ndim - 1))
        n = v.size // v.shape[-1]
        mean = jnp.mean(v, axis=axes)
        var = jnp.mean(jnp.square(v - mean), axis=axes)
        new.append({"mean": (1 - mom) * st["mean"] + mom * jax.lax.stop_gradient(mean),
                    "var": (1 - mom) * st["var"] + mom * jax.lax.stop_gradient(var) * (n / max(n - 1, 1))})
        return (v - mean) * (p["scale"] * jax.lax.rsqrt(var + eps)) + p["bias"]

    def pool(v, size):
        if pool_impl == "reduce_window":
            import flax.linen as nn

            return nn.max_pool(v, (size,), strides=(size,), padding="VALID")
        t = v.shape[1] // size * size
        return v[:, :t].reshape(v.shape[0], -1, size, v.shape[2]).max(axis=2)

    def conv(v, p, pad):
        return xla_conv(v, p["kernel"], pad) + p["bias"]

    def forward(params, stats, x):
        new = []  # running stats, in this order: front, blocks (bn1?, bn2), pre_gru
        if sinc == "fft":
            h = sinc_fft(x, filt, k, same)
        else:
            h = xla_conv(x[..., None], filt.T[:, None, :], k // 2 if same else 0)
        if cfg.sinc_abs:
            h = jnp.abs(h)
        if cfg.sinc_pool > 1:
            h = pool(h, cfg.sinc_pool)
        h = act(bn(h, params["front_bn"], stats["front_bn"], new), cfg.front_activation)
        for i, _ in enumerate(cfg.block_channels):
            p, st = params[f"block{i}"], stats[f"block{i}"]
            out = h
            if "bn1" in p:
                normed = lrelu(bn(h, p["bn1"], st["bn1"], new))
                out = h if cfg.bn1_bypassed else normed
            out = conv(out, p["conv1"], 1)
            out = conv(lrelu(bn(out, p["bn2"], st["bn2"], new)), p["conv2"], 1)
            ident = h @ p["shortcut"]["kernel"][0] + p["shortcut"]["bias"] if "shortcut" in p else h

            def fms(v, p=p):
                s = jax.nn.sigmoid(jnp.mean(v, axis=1) @ p["fms"]["fc"]["kernel"] + p["fms"]["fc"]["bias"])
                s = s[:, None, :]
                return v * s + s if cfg.fms_mode == "add" else v * s

            if cfg.fms_position == "before_add":
                out = fms(out)
            out = pool(out + ident, cfg.block_pool)
            if cfg.fms_position == "after_pool":
                out = fms(out)
            h = out
        h = act(bn(h, params["pre_gru_bn"], stats["pre_gru_bn"], new), cfg.pre_gru_activation)
        if gru_impl == "scan":
            from rawnet2_jax.gru import GRU

            h = GRU(cfg.gru_hidden, cfg.gru_layers).apply({"params": params["gru"]}, h)
        else:
            h = fast_gru.gru(h, [params["gru"][f"l{j}"] for j in range(cfg.gru_layers)])
        h = act(h @ params["fc"]["kernel"] + params["fc"]["bias"], cfg.head_activation)
        logits = h @ params["classifier"]["kernel"] + params["classifier"]["bias"]
        if cfg.output_log_softmax:
            logits = jax.nn.log_softmax(logits, axis=-1)
        return logits, new

    def restack(stats, new):
        it = iter(new)
        out = {"front_bn": next(it)}
        for i, _ in enumerate(cfg.block_channels):
            blk = {}
            if "bn1" in stats[f"block{i}"]:
                blk["bn1"] = next(it)
            blk["bn2"] = next(it)
            out[f"block{i}"] = blk
        out["pre_gru_bn"] = next(it)
        return out

    def step(params, opt_state, stats, x, y):
        def loss_fn(p):
            logits, new = forward(p, stats, x)
            logp = jax.nn.log_softmax(logits, axis=-1)
            nll = -jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]
            w = weights[y]
            return jnp.sum(w * nll) / jnp.sum(w), new

        (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        gnorm = optax.global_norm(grads)
        upd, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, upd), opt_state, restack(stats, new), loss, gnorm

    # only the params the model trains (the sinc tensors are buffers here)
    params = jax.tree.map(jnp.asarray, P)
    return params, tx, step


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="caa_rawnet2")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--num-samples", type=int, default=None)
    ap.add_argument("--sinc", default="auto", choices=("auto", "xla", "fft"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ablate", action="store_true",
                    help="also time each change alone (pool / GRU) to see what each buys")
    a = ap.parse_args(argv)
    if a.threads:
        common.pin_threads(a.threads)
    import jax
    import jax.numpy as jnp

    from rawnet2_jax.model import init_variables
    from train.state import HostState, create_train_state
    from train.step import build_model
    from train.step import make_train_step as model_train_step

    cfg = common.bench_config(a.preset, a.quick, a.num_samples)
    tcfg = common.train_config(cfg)
    sinc = a.sinc if a.sinc != "auto" else ("fft" if cfg.sinc_kernel_size >= 257 else "xla")
    variables = init_variables(cfg, 0)
    x = jnp.asarray(common.bench_inputs(a.batch, cfg.num_samples, seed=5))
    y = jnp.asarray(common.bench_labels(a.batch))
    jnp.zeros(1).block_until_ready()

    state = create_train_state(variables, tcfg).replace(host=HostState())
    core = model_train_step(build_model(tcfg), tcfg).core
    batch = {"audio": x, "label": y}
    t0 = time.perf_counter()
    ref_c = core.lower(state, batch, None).compile()
    ref_compile = time.perf_counter() - t0
    s1, m1 = ref_c(state, batch, None)

    variants = {"fast": dict(sinc=sinc)}
    if a.ablate:
        variants.update({"pool only": dict(sinc="xla", gru_impl="scan"),
                         "gru only": dict(sinc="xla", pool_impl="reduce_window"),
                         "neither": dict(sinc="xla", pool_impl="reduce_window", gru_impl="scan")})
    runs = {"model": (lambda: jax.block_until_ready(ref_c(state, batch, None)), ref_compile)}
    for name, opts in variants.items():
        params, tx, step = make_train_step(cfg, tcfg, variables, **opts)
        opt_state = tx.init(params)
        stats = variables["batch_stats"]
        t0 = time.perf_counter()
        fast_c = jax.jit(step).lower(params, opt_state, stats, x, y).compile()
        fast_compile = time.perf_counter() - t0
        p2, o2, st2, loss2, gn2 = fast_c(params, opt_state, stats, x, y)
        d_loss = common.rel_diff(float(loss2), float(m1["loss"]))[1]
        d_gn = common.rel_diff(float(gn2), float(m1["grad_norm"]))[1]
        d_st = max(common.rel_diff(u, v)[1] for u, v in zip(jax.tree.leaves(st2), jax.tree.leaves(s1.batch_stats)))
        print(f"{cfg.name} T={cfg.num_samples} b{a.batch} {name} {opts}: rel diff loss {d_loss:.1e}, "
              f"grad norm {d_gn:.1e}, running stats {d_st:.1e}", flush=True)
        runs[name] = ((lambda c=fast_c, p=params, o=opt_state, st=stats:
                       jax.block_until_ready(c(p, o, st, x, y))), fast_compile)

    best = {k: [9e9, 9e9] for k in runs}
    for _ in range(a.rounds):
        for k, (f, _) in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            f()
            best[k][0] = min(best[k][0], time.perf_counter() - t0)
            best[k][1] = min(best[k][1], time.process_time() - c0)
    for k, (wt, ct) in best.items():
        print(f"  {k:9} step wall {wt * 1e3:9.1f} ms  cpu {ct * 1e3:9.1f} ms  x{best['model'][1] / ct:.2f}  "
              f"(compile {runs[k][1]:.2f} s)", flush=True)

if __name__ == "__main__":
    main()
