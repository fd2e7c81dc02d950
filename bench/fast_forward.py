"""PROTOTYPE: the RawNet2 eval forward computing the same logits with less work.

Not part of the library: a place to measure ideas before the model owner adopts them.
``make_forward(cfg, variables, **options) -> (params, fn)`` with ``fn(params, x) -> logits``
(jit it). Options:

* ``fold_bn`` (True): eval-mode BatchNorm folded into the adjacent linear op: ``bn2`` into
  ``conv1`` (conv1 -> bn2 directly), ``front_bn`` into the sinc filters when nothing sits in
  between (seed: no abs / pool). The other BNs (bn1, pre_gru_bn: an activation or a pool in
  between) become one multiply-add that XLA fuses with their neighbours.
* ``sinc`` ("auto" = "fft" for kernels >= 257 taps, else "xla"): how the 1-input-channel sinc
  conv runs.
  ``"xla"``: ``lax.conv_general_dilated`` as the model does (a conv with C_in = 1 is a poor
  GEMM shape); ``"toeplitz"``: polyphase frames ``(B, T/P, L*P)`` times a banded Toeplitz
  matrix ``(L*P, P*C)`` -- one well-shaped GEMM doing ``L*P/K`` (~1.1x) the MACs;
  ``"fft"``: ``irfft(rfft(x) * conj(rfft(f)))`` per filter, O(T log T) per channel.
* ``conv`` ("auto" = "wino4" where C_in >= 512 and T <= 3000, else "xla"): the kernel-3 convs
  of the residual blocks (>90% of the FLOPs).
  ``"xla"``: ``lax.conv_general_dilated``; ``"wino2"`` / ``"wino4"``: Winograd minimal
  filtering F(2,3) / F(4,3) (Lavin & Gray 2016): per tile of m outputs, m+2 transformed
  inputs, one batched GEMM per transform point -> 2 / 1.5 GEMM rows per output instead of 3
  (1.5x / 2x fewer MACs); the transforms are elementwise (fused by XLA).
  F(4,3) rounds differently from a direct conv (~1e-6 relative per layer).
* ``sinc_phases`` (16): P of the Toeplitz sinc.

``python bench/fast_forward.py [--quick] [--preset P] [--batch 8]`` checks every option
against ``rawnet2_jax.model.RawNet2`` (max logit difference) and times them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from rawnet2_jax.config import ModelConfig  # noqa: E402
from rawnet2_jax.sinc import official_filters, sincnet_filters  # noqa: E402

# ------------------------------------------------------------------------- Winograd matrices
# F(m, 3) correlation: y[i] = sum_k d[i + k] g[k], i < m  ==  A^T [(G g) * (B^T d)].
_WINO = {
    2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
        np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)),
    4: (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                  [0, 1, -1, 8, -8, 1]], np.float64)),
}


def _lin(coefs, terms):
    """sum_j coefs[j] * terms[j] with the zero coefficients skipped (pure elementwise)."""
    acc = None
    for c, t in zip(coefs, terms):
        if c == 0:
            continue
        v = t if c == 1 else (-t if c == -1 else t * np.float32(c))
        acc = v if acc is None else acc + v
    return acc


def wino_kernel(w: np.ndarray, m: int) -> np.ndarray:
    """(3, Cin, Cout) kernel -> (m + 2, Cin, Cout) transformed kernel G w (float64 math)."""
    _, g, _ = _WINO[m]
    return np.einsum("ak,kio->aio", g, np.asarray(w, np.float64)).astype(np.float32)


def wino_conv3(x, u, m: int):
    """'same' kernel-3 correlation of x (B, T, Cin) with a transformed kernel u (m+2, Cin, Cout)."""
    bt, _, at = _WINO[m]
    b, t, c = x.shape
    n = -(-t // m)
    xp = jnp.pad(x, ((0, 0), (1, n * m + 2 - t - 1), (0, 0)))
    # tile element j of every tile: a stride-m slice (XLA fuses pad + slices + transform)
    d = [jax.lax.slice(xp, (0, j, 0), (b, j + (n - 1) * m + 1, c), (1, m, 1)) for j in range(m + 2)]
    v = jnp.stack([_lin(bt[i], d) for i in range(m + 2)])  # (m+2, B, n, Cin)
    mm = jnp.einsum("abnc,acd->abnd", v, u)  # m+2 GEMMs of (B n, Cin) x (Cin, Cout)
    y = jnp.stack([_lin(at[j], [mm[i] for i in range(m + 2)]) for j in range(m)], axis=2)
    return y.reshape(b, n * m, -1)[:, :t]


def xla_conv(x, w, pad):
    return jax.lax.conv_general_dilated(x, w, (1,), [(pad, pad)], dimension_numbers=("NWC", "WIO", "NWC"))


AUTO_FFT_MIN_TAPS = 257  # sinc="auto": FFT for kernels at least this long
AUTO_WINO_MIN_CIN = 512  # conv="auto": F(4,3) for C_in >= 512 ...
AUTO_WINO_MAX_T = 3000  # ... and at most this many frames (blocks 3-5 of the 4 s presets)


def _wino_m(conv: str, c_in: int, t: int, k: int) -> int:
    """Winograd tile size for one conv (0 = XLA's direct conv)."""
    if k != 3:
        return 0
    if conv == "auto":
        return 4 if c_in >= AUTO_WINO_MIN_CIN and t <= AUTO_WINO_MAX_T else 0
    return int(conv[-1]) if conv.startswith("wino") else 0


# ------------------------------------------------------------------------- sinc
def toeplitz_matrix(filters: np.ndarray, p: int) -> tuple[np.ndarray, int]:
    """(C, K) filters -> (L*P, P*C) banded matrix W[j, p*C + c] = f_c[j - p]; and L."""
    c, k = filters.shape
    l_ = -(-(p + k - 1) // p)
    w = np.zeros((l_ * p, p, c), np.float32)
    for q in range(p):
        w[q: q + k, q, :] = filters.T
    return w.reshape(l_ * p, p * c), l_


def sinc_toeplitz(x, w, k: int, p: int, l_: int, same: bool):
    """x (B, T) -> (B, T', C) via one GEMM on polyphase frames."""
    b, t = x.shape
    pad = k // 2 if same else 0
    t_out = t + 2 * pad - k + 1
    n = -(-t_out // p)
    total = (n + l_ - 1) * p
    xp = jnp.pad(x, ((0, 0), (pad, total - t - pad)))
    rows = xp.reshape(b, n + l_ - 1, p)
    frames = jnp.concatenate([rows[:, i: i + n] for i in range(l_)], axis=-1)  # (B, n, L*P)
    y = jnp.einsum("bnj,jq->bnq", frames, w)  # (B, n, P*C)
    return y.reshape(b, n * p, -1)[:, :t_out]


def sinc_fft(x, filters_t, k: int, same: bool):
    """x (B, T) -> (B, T', C) by FFT correlation; filters_t (C, K)."""
    b, t = x.shape
    pad = k // 2 if same else 0
    t_out = t + 2 * pad - k + 1
    length = t + 2 * pad
    nfft = 1 << (length - 1).bit_length()
    xp = jnp.pad(x, ((0, 0), (pad, pad)))
    xf = jnp.fft.rfft(xp, nfft)  # (B, F)
    ff = jnp.conj(jnp.fft.rfft(filters_t, nfft))  # (C, F)
    y = jnp.fft.irfft(xf[:, None, :] * ff[None], nfft)[:, :, :t_out]  # (B, C, T')
    return jnp.swapaxes(y, 1, 2)


# ------------------------------------------------------------------------- forward
def _act(x, name, slope):
    if name == "selu":
        return jax.nn.selu(x)
    if name == "leaky_relu":
        return jnp.where(x >= 0, x, slope * x)
    if name == "relu":
        return jax.nn.relu(x)
    return x


def _bn_affine(params, stats, eps):
    a = np.asarray(params["scale"], np.float64) / np.sqrt(np.asarray(stats["var"], np.float64) + eps)
    c = np.asarray(params["bias"], np.float64) - np.asarray(stats["mean"], np.float64) * a
    return a, c


def make_forward(cfg: ModelConfig, variables: dict, fold_bn: bool = True, sinc: str = "auto",
                 conv: str = "auto", sinc_phases: int = 16):
    """(params, fn): ``fn(params, x (B, T)) -> logits`` equal to RawNet2 eval mode."""
    P = jax.tree.map(np.asarray, variables["params"])
    S = jax.tree.map(np.asarray, variables.get("batch_stats", {}))
    buf = jax.tree.map(np.asarray, variables.get("buffers", {}))
    eps, slope = cfg.bn_eps, cfg.leaky_relu_slope
    f32 = lambda v: jnp.asarray(np.asarray(v, np.float32))  # noqa: E731

    # sinc filters (constant in eval), optionally with front_bn folded in
    if cfg.sinc_formula == "official":
        filt = np.asarray(official_filters(cfg), np.float64)
    else:
        src = P["sinc"] if cfg.sinc_learnable else buf["sinc"]
        filt = np.asarray(sincnet_filters(jnp.asarray(src["low_hz_"]), jnp.asarray(src["band_hz_"]),
                                          jnp.asarray(buf["sinc"]["n_axis"]), jnp.asarray(buf["sinc"]["window"]),
                                          cfg.sample_rate, cfg.sinc_min_low_hz, cfg.sinc_min_band_hz), np.float64)
    fa, fc = _bn_affine(P["front_bn"], S["front_bn"], eps)
    fold_front = fold_bn and not cfg.sinc_abs and cfg.sinc_pool == 1
    sinc_bias = np.zeros(filt.shape[0])
    if fold_front:
        filt = filt * fa[:, None]
        sinc_bias = fc
    params: dict[str, Any] = {"sinc_bias": f32(sinc_bias), "front": (f32(fa), f32(fc))}
    k = cfg.sinc_kernel_size
    same = cfg.sinc_padding == "same"
    if sinc == "auto":  # what the per-layer A/B found: FFT only pays for long kernels
        sinc = "fft" if k >= AUTO_FFT_MIN_TAPS else "xla"
    if sinc == "toeplitz":
        w, l_ = toeplitz_matrix(filt.astype(np.float32), sinc_phases)
        params["sinc_w"] = f32(w)
    elif sinc == "fft":
        params["sinc_w"] = f32(filt)
    else:
        params["sinc_w"] = f32(filt.T[:, None, :])

    t_blk = cfg.num_samples + (0 if same else 1 - k)  # frames entering block 0 (nominal length)
    t_blk //= cfg.sinc_pool
    blocks = []
    for i, (ci, co) in enumerate(cfg.block_channels):
        bp, bs = P[f"block{i}"], S[f"block{i}"]
        has_bn1 = cfg.first_block_bn1 or i > 0
        blk: dict[str, Any] = {}
        if has_bn1 and not cfg.bn1_bypassed:
            blk["bn1"] = tuple(f32(v) for v in _bn_affine(bp["bn1"], bs["bn1"], eps))
        w1 = np.asarray(bp["conv1"]["kernel"], np.float64)
        b1 = np.asarray(bp["conv1"]["bias"], np.float64)
        a2, c2 = _bn_affine(bp["bn2"], bs["bn2"], eps)
        if fold_bn:
            w1, b1 = w1 * a2[None, None, :], b1 * a2 + c2
        else:
            blk["bn2"] = (f32(a2), f32(c2))
        w2 = np.asarray(bp["conv2"]["kernel"], np.float64)
        for name, w in (("conv1", w1), ("conv2", w2)):
            c_in = w.shape[1]
            blk[name + "_wino"] = m = _wino_m(conv, c_in, t_blk, w.shape[0])
            blk[name] = f32(wino_kernel(w, m) if m else w)
        blk["b1"], blk["b2"] = f32(b1), f32(bp["conv2"]["bias"])
        if "shortcut" in bp:
            blk["sc_w"] = f32(bp["shortcut"]["kernel"][0])
            blk["sc_b"] = f32(bp["shortcut"]["bias"])
        blk["fms_w"], blk["fms_b"] = f32(bp["fms"]["fc"]["kernel"]), f32(bp["fms"]["fc"]["bias"])
        blocks.append(blk)
        t_blk //= cfg.block_pool
    params["blocks"] = blocks
    params["pre_gru"] = tuple(f32(v) for v in _bn_affine(P["pre_gru_bn"], S["pre_gru_bn"], eps))
    params["gru"] = [{k2: f32(v) for k2, v in P["gru"][f"l{j}"].items()} for j in range(cfg.gru_layers)]
    params["fc"] = (f32(P["fc"]["kernel"]), f32(P["fc"]["bias"]))
    params["cls"] = (f32(P["classifier"]["kernel"]), f32(P["classifier"]["bias"]))
    kb = cfg.block_kernel_size

    # static per-conv choices (ints, not traced): kept out of the params pytree
    wino_m = [(blk.pop("conv1_wino"), blk.pop("conv2_wino")) for blk in blocks]

    def conv3(h, w, b, m):
        if m:
            return wino_conv3(h, w, m) + b
        return xla_conv(h, w, (kb - 1) // 2) + b

    def fms(h, blk):
        s = jax.nn.sigmoid(jnp.mean(h, axis=1) @ blk["fms_w"] + blk["fms_b"])[:, None, :]
        return h * s + s if cfg.fms_mode == "add" else h * s

    def fn(p, x):
        x = x.astype(jnp.float32)
        if sinc == "toeplitz":
            h = sinc_toeplitz(x, p["sinc_w"], k, sinc_phases, l_, same)
        elif sinc == "fft":
            h = sinc_fft(x, p["sinc_w"], k, same)
        else:
            h = xla_conv(x[..., None], p["sinc_w"], k // 2 if same else 0)
        if cfg.sinc_abs:
            h = jnp.abs(h)
        if cfg.sinc_pool > 1:
            t = h.shape[1] // cfg.sinc_pool * cfg.sinc_pool
            h = h[:, :t].reshape(h.shape[0], -1, cfg.sinc_pool, h.shape[2]).max(axis=2)
        if fold_front:
            h = h + p["sinc_bias"]
        else:
            h = h * p["front"][0] + p["front"][1]
        h = _act(h, cfg.front_activation, slope)
        for blk, (m1, m2) in zip(p["blocks"], wino_m):
            out = h
            if "bn1" in blk:
                out = _act(h * blk["bn1"][0] + blk["bn1"][1], "leaky_relu", slope)
            out = conv3(out, blk["conv1"], blk["b1"], m1)
            if "bn2" in blk:
                out = out * blk["bn2"][0] + blk["bn2"][1]
            out = conv3(_act(out, "leaky_relu", slope), blk["conv2"], blk["b2"], m2)
            ident = h @ blk["sc_w"] + blk["sc_b"] if "sc_w" in blk else h
            if cfg.fms_position == "before_add":
                out = fms(out, blk)
            out = out + ident
            t = out.shape[1] // cfg.block_pool * cfg.block_pool
            out = out[:, :t].reshape(out.shape[0], -1, cfg.block_pool, out.shape[2]).max(axis=2)
            if cfg.fms_position == "after_pool":
                out = fms(out, blk)
            h = out
        h = _act(h * p["pre_gru"][0] + p["pre_gru"][1], cfg.pre_gru_activation, slope)
        for j, g in enumerate(p["gru"]):
            hd = g["w_hh"].shape[0]
            xi = jnp.swapaxes(h @ g["w_ih"] + g["b_ih"], 0, 1)

            def step(hs, xt, g=g):
                gh = hs @ g["w_hh"] + g["b_hh"]
                xr, xz, xn = jnp.split(xt, 3, axis=-1)
                hr, hz, hn = jnp.split(gh, 3, axis=-1)
                r = jax.nn.sigmoid(xr + hr)
                z = jax.nn.sigmoid(xz + hz)
                n = jnp.tanh(xn + r * hn)
                hs = (1.0 - z) * n + z * hs
                return hs, hs

            last, seq = jax.lax.scan(step, jnp.zeros((h.shape[0], hd), jnp.float32), xi)
            h = last if j == len(p["gru"]) - 1 else jnp.swapaxes(seq, 0, 1)
        h = _act(h @ p["fc"][0] + p["fc"][1], cfg.head_activation, slope)
        logits = h @ p["cls"][0] + p["cls"][1]
        if cfg.output_log_softmax:
            logits = jax.nn.log_softmax(logits, axis=-1)
        return logits

    return params, fn


# ------------------------------------------------------------------------- CLI
OPTION_SETS = {
    "model": None,
    "auto": dict(fold_bn=True, sinc="auto", conv="auto"),
    "fold": dict(fold_bn=True, sinc="xla", conv="xla"),
    "fold+toeplitz": dict(fold_bn=True, sinc="toeplitz", conv="xla"),
    "fold+fft": dict(fold_bn=True, sinc="fft", conv="xla"),
    "fold+wino2": dict(fold_bn=True, sinc="xla", conv="wino2"),
    "fold+wino4": dict(fold_bn=True, sinc="xla", conv="wino4"),
    "fold+toeplitz+wino4": dict(fold_bn=True, sinc="toeplitz", conv="wino4"),
    "fold+fft+wino4": dict(fold_bn=True, sinc="fft", conv="wino4"),
    "nofold+fft+wino2": dict(fold_bn=False, sinc="fft", conv="wino2"),
}


def main(argv=None) -> None:
    import common

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="caa_rawnet2")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--num-samples", type=int, default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--options", default=",".join(OPTION_SETS))
    ap.add_argument("--max-seconds", type=float, default=10.0)
    ap.add_argument("--min-reps", type=int, default=3)
    ap.add_argument("--layers", action="store_true", help="per-layer interleaved timings instead")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None,
                    help="pin to this many CPUs (1 + the cpu column: an A/B that survives a busy machine)")
    a = ap.parse_args(argv)
    if a.threads:
        common.pin_threads(a.threads)
    if a.layers:
        rows = layer_bench(a.batch, a.rounds, a.quick)
        common.write_json(common.RESULTS / f"fast_forward_layers{'_quick' if a.quick else ''}.json",
                          {"machine": common.machine_info(), "batch": a.batch, "rows": rows})
        return

    from rawnet2_jax.model import RawNet2, init_variables

    cfg = common.bench_config(a.preset, a.quick, a.num_samples)
    variables = init_variables(cfg, 0)
    # non-trivial BN statistics
    rng = np.random.default_rng(0)
    variables = jax.tree_util.tree_map_with_path(
        lambda path, v: (jnp.asarray(rng.uniform(0.5, 1.5, v.shape), v.dtype)
                         if any(getattr(q, "key", None) in ("var", "scale") for q in path)
                         else jnp.asarray(v + 0.1 * rng.standard_normal(v.shape), v.dtype)
                         if any(getattr(q, "key", None) in ("mean", "bias") for q in path) else v),
        variables)
    x = jnp.asarray(common.bench_inputs(a.batch, cfg.num_samples, seed=3))
    model = RawNet2(cfg)
    ref_fn = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])
    with jax.default_matmul_precision("highest"):
        want = np.asarray(ref_fn(variables, x))
    print(f"{cfg.name} T={cfg.num_samples} batch {a.batch}; GFLOP/utt {common.analytic_flops(cfg)['forward'] / 1e9:.2f}")
    print(f"{'option':24} {'max|diff|':>10} {'rel':>9} {'compile s':>9} {'median ms':>10} {'vs model':>8}")
    base = None
    for name in a.options.split(","):
        opts = OPTION_SETS[name]
        if opts is None:
            params, fn = variables, ref_fn
            jitted = ref_fn
        else:
            params, fn = make_forward(cfg, variables, **opts)
            jitted = jax.jit(fn)
        t0 = time.perf_counter()
        compiled = jitted.lower(params, x).compile()
        tc = time.perf_counter() - t0
        got = np.asarray(compiled(params, x))
        d, r = common.rel_diff(got, want)
        t = common.time_fn(lambda: compiled(params, x).block_until_ready(), 1, a.min_reps, a.max_seconds)
        base = base or t["median_s"]
        print(f"{name:24} {d:10.2e} {r:9.2e} {tc:9.2f} {t['median_s'] * 1e3:10.2f} {base / t['median_s']:7.2f}x",
              flush=True)


def layer_bench(batch: int = 8, rounds: int = 5, quick: bool = False) -> list[dict]:
    """Interleaved (round-robin) timings of single layers at the seed model's sizes: each
    conv variant against XLA's conv on the same input. Minimum over rounds (robust to a busy
    machine). Returns rows with the speed-up of every variant over XLA's direct conv."""
    import common

    rng = np.random.default_rng(0)
    shrink = 8 if quick else 1
    cases = []
    # (name, T, Cin, Cout): the kernel-3 convs of caa_rawnet2 / tak2021 (T at 64000 samples)
    for name, t, ci, co in (("block0 128->128", 64000, 128, 128), ("block2 conv1 128->512", 7111, 128, 512),
                            ("block2 conv2 512->512", 7111, 512, 512), ("block3 512->512", 2370, 512, 512)):
        t //= shrink
        x = jnp.asarray(rng.standard_normal((batch, t, ci)), jnp.float32)
        w = rng.standard_normal((3, ci, co)) / np.sqrt(3 * ci)
        fns = {"xla": (jax.jit(lambda x, w: xla_conv(x, w, 1)), jnp.asarray(w, jnp.float32))}
        for m in (2, 4):
            fns[f"wino{m}"] = (jax.jit(lambda x, u, m=m: wino_conv3(x, u, m)), jnp.asarray(wino_kernel(w, m)))
        cases.append((name, 2 * t * ci * co * 3 * batch, x, fns))
    # sinc convs (C_in = 1)
    for name, t, c, k, same in (("sinc seed 128x129 same", 64000, 128, 129, True),
                                ("sinc baseline 20x1025 valid", 64600, 20, 1025, False)):
        t //= shrink
        x = jnp.asarray(rng.standard_normal((batch, t)), jnp.float32)
        f = rng.standard_normal((c, k)).astype(np.float32)
        pad = k // 2 if same else 0
        fns = {"xla": (jax.jit(lambda x, w, pad=pad: xla_conv(x[..., None], w, pad)), jnp.asarray(f.T[:, None, :]))}
        for p in (8, 16, 32, 64):
            wt, l_ = toeplitz_matrix(f, p)
            fns[f"toeplitz{p}"] = (jax.jit(lambda x, w, k=k, p=p, l_=l_, same=same: sinc_toeplitz(x, w, k, p, l_, same)),
                                   jnp.asarray(wt))
        fns["fft"] = (jax.jit(lambda x, w, k=k, same=same: sinc_fft(x, w, k, same)), jnp.asarray(f))
        cases.append((name, 2 * (t + 2 * pad - k + 1) * c * k * batch, x, fns))
    rows = []
    for name, flops, x, fns in cases:
        ref = None
        best = {}
        for v, (fn, w) in fns.items():
            out = np.asarray(fn(x, w))
            if ref is None:
                ref = out
            d, r = common.rel_diff(out, ref)
            best[v] = [float("inf"), float("inf"), r]
        for _ in range(rounds):
            for v, (fn, w) in fns.items():
                t0, c0 = time.perf_counter(), time.process_time()
                fn(x, w).block_until_ready()
                best[v][0] = min(best[v][0], time.perf_counter() - t0)
                best[v][1] = min(best[v][1], time.process_time() - c0)
        for v, (tm, cpu, r) in best.items():
            rows.append({"layer": name, "variant": v, "ms": tm * 1e3, "cpu_ms": cpu * 1e3,
                         "gflops_equiv": flops / tm / 1e9, "speedup_vs_xla": best["xla"][0] / tm,
                         "cpu_speedup_vs_xla": best["xla"][1] / cpu, "rel_diff_vs_xla": r})
            print(f"{name:28} {v:10} {tm * 1e3:9.2f} ms {flops / tm / 1e9:7.1f} GFLOP/s(direct-equiv) "
                  f"{best['xla'][0] / tm:5.2f}x  cpu {cpu * 1e3:9.2f} ms {best['xla'][1] / cpu:5.2f}x  "
                  f"rel diff {r:.1e}", flush=True)
    return rows


if __name__ == "__main__":
    main()
