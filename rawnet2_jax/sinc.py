"""Sinc filter banks (the first layer of RawNet2) and the sinc convolution module.

Two formulas exist in the RawNet2 family:

* ``official``: the eurecom / ASVspoof 2021 ``SincConv``. Band edges come from the config only
  (no stored tensors); each filter is an ideal band-pass ``hHigh - hLow`` (difference of two
  low-pass sincs) times a full Hamming window of ``K`` taps.
* ``sincnet``: Ravanelli's ``SincConv_fast``. Filters are built from four stored tensors,
  ``low_hz_``/``band_hz_`` (C, 1) in Hz, the half time axis ``n_axis`` (1, K//2) in radians per
  Hz and the half window ``window`` (K//2,); the right half is the mirror of the left half and
  the centre tap is ``2 * band``; every filter is normalised by ``2 * band``.

All filter math is jnp so that it runs inside jit (and is differentiable when the sincnet
tensors are learnable). Configuration constants (band edges, Hamming window) are computed once
in numpy float64, exactly as the official code does in its ``__init__``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rawnet2_jax.config import ModelConfig
from rawnet2_jax.pool import max_pool_1d

Array = jax.Array


def to_mel(hz):
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def to_hz(mel):
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


# --------------------------------------------------------------------------------------------
# (a) official formula
# --------------------------------------------------------------------------------------------


def official_band_edges(cfg: ModelConfig) -> np.ndarray:
    """The N + 1 band edges in Hz (float64) of the official SincConv; filter i spans
    [edges[i], edges[i + 1]] (for inverse-mel the edges decrease, so the filter changes sign,
    as in the official code)."""
    n = cfg.sinc_filters
    # The official code evaluates the scale on a 257-point FFT grid and takes min/max of it.
    f = int(cfg.sample_rate / 2) * np.linspace(0, 1, 257)
    if cfg.sinc_edges == "asvspoof2021":
        fmel = to_mel(f)
        return to_hz(np.linspace(fmel.min(), fmel.max(), n + 1))
    # eurecom: out_channels = N + 1 edges taken from an (N + 1) + 2 point grid.
    if cfg.sinc_scale in ("mel", "inverse_mel"):
        fmel = to_mel(f)
        edges = to_hz(np.linspace(fmel.min(), fmel.max(), n + 3))[: n + 1]
        if cfg.sinc_scale == "inverse_mel":
            edges = np.abs(np.flip(edges) - 1)
        return edges
    return np.linspace(f.min(), f.max(), n + 3)[: n + 1]


def _scaled_sinc(c: np.ndarray, n: Array) -> Array:
    """(len(c), len(n)) float32 ``c * sinc(c * n)`` for float64 constants c in [0, 1] and
    integer-valued float32 n with |n| < 2^11, accurate to float32 rounding of the exact value.

    The naive float32 argument ``c * n`` is off by up to ~|n| ulp, i.e. ~1e-5 rad of phase
    at the ends of a 1025-tap kernel. Instead c = c_hi + c_lo with c_hi on a 2^-12 grid, so
    c_hi * n is exact in float32 and can be reduced mod 2 exactly (sin(pi x) has period 2);
    only the small c_lo * n term is rounded.
    """
    c_hi = np.round(c * 4096.0) / 4096.0
    c_lo = jnp.asarray(c - c_hi, jnp.float32)[:, None]
    p = jnp.asarray(c_hi, jnp.float32)[:, None] * n[None, :]  # exact
    reduced = p - 2.0 * jnp.round(p / 2.0)  # exact, in [-1, 1]
    num = jnp.sin(jnp.pi * (reduced + c_lo * n[None, :]))
    den = jnp.pi * (p + c_lo * n[None, :])
    safe = jnp.where(den == 0, 1.0, den)
    sinc = jnp.where(den == 0, 1.0, num / safe)  # sinc(0) = 1
    return jnp.asarray(c, jnp.float32)[:, None] * sinc


def official_filters(cfg: ModelConfig) -> Array:
    """(N, K) float32 official filter bank, jnp:
    ``hamming(K) * (2 f_hi/sr sinc(2 f_hi t/sr) - 2 f_lo/sr sinc(2 f_lo t/sr))``.

    Accurate to float32 rounding of the float64 formula (the official code itself evaluates
    the sinc argument in float32, so it differs from both by up to ~5e-6 relative).
    """
    k = cfg.sinc_kernel_size
    if k >= 2 * 2**11:
        raise ValueError(f"sinc_kernel_size {k} too long for the exact sinc argument (< 4096)")
    edges = official_band_edges(cfg)
    t = jnp.arange(k, dtype=jnp.float32) - (k - 1) // 2  # (K,) integer taps -(K-1)/2 .. (K-1)/2
    window = jnp.asarray(np.hamming(k), jnp.float32)  # full symmetric Hamming window
    sr = cfg.sample_rate
    ideal = _scaled_sinc(2 * edges[1:] / sr, t) - _scaled_sinc(2 * edges[:-1] / sr, t)
    return window[None, :] * ideal


# --------------------------------------------------------------------------------------------
# (b) SincNet formula from stored tensors
# --------------------------------------------------------------------------------------------


def _torch_abs(x: Array) -> Array:
    # |x| whose gradient at 0 is 0, as torch.abs (jnp.abs gives 1): the seed's first filter
    # has low_hz_ == 0 exactly, so this matters when the sinc tensors are learnable.
    return x * jnp.sign(x)


def _torch_clamp(x: Array, lo: float, hi: float) -> Array:
    # torch.clamp passes the gradient on the closed interval [lo, hi]; jnp.clip halves it at
    # the bounds (the seed's last filter ends exactly at sr / 2).
    return jnp.where((x >= lo) & (x <= hi), x, jnp.clip(x, lo, hi))


def sincnet_filters(
    low_hz_: Array,  # (C, 1)
    band_hz_: Array,  # (C, 1)
    n_axis: Array,  # (1, K//2): 2*pi*(-(K-1)/2 .. -1)/sr
    window: Array,  # (K//2,)
    sample_rate: float,
    min_low_hz: float,
    min_band_hz: float,
) -> Array:
    """(C, K) SincConv_fast filter bank, jnp, differentiable in low_hz_ and band_hz_."""
    low = min_low_hz + _torch_abs(low_hz_)  # (C, 1)
    high = _torch_clamp(low + min_band_hz + _torch_abs(band_hz_), min_low_hz, sample_rate / 2)
    band = (high - low)[:, 0]  # (C,)
    # sin(2 pi f_high t) - sin(2 pi f_low t) over pi t, the band-pass in closed form. SincNet's
    # axis never holds t = 0; should stored tensors do so, take the limit 2 (f_high - f_low)
    # instead of 0/0 (a safe denominator keeps gradients finite too).
    zero = n_axis == 0
    safe_n = jnp.where(zero, 1.0, n_axis)
    left = jnp.where(zero, 2 * (high - low), (jnp.sin(high * n_axis) - jnp.sin(low * n_axis)) / (safe_n / 2))
    left = left * window  # (C, K//2)
    center = 2 * band[:, None]  # (C, 1): the limit at t = 0
    right = jnp.flip(left, axis=1)  # filters are symmetric
    return jnp.concatenate([left, center, right], axis=1) / (2 * band[:, None])


def seed_sinc_tensors(cfg: ModelConfig) -> dict[str, np.ndarray]:
    """The four stored SincNet tensors for a fresh model, float32.

    Band edges split [0, sr/2] into C equal steps on the config's scale (linear: low = 0, step,
    ..., band = step, which is what an inspection of the seed checkpoint reports; inverse_mel:
    the mel edges mirrored about sr/4). The half
    time axis and half window are made as SincConv_fast makes them, quirks included (its
    window index runs over linspace(0, K/2 - 1, K//2), not over integers).
    """
    c, k, sr = cfg.sinc_filters, cfg.sinc_kernel_size, cfg.sample_rate
    if cfg.sinc_scale == "linear":
        edges = np.linspace(0.0, sr / 2, c + 1)
    else:
        edges = to_hz(np.linspace(to_mel(0.0), to_mel(sr / 2), c + 1))
        if cfg.sinc_scale == "inverse_mel":  # mirror: fine resolution at high frequencies
            edges = sr / 2 - edges[::-1]
    n_lin = np.linspace(0, k / 2 - 1, int(k / 2))
    window = 0.54 - 0.46 * np.cos(2 * np.pi * n_lin / k)
    half = (k - 1) / 2
    n_axis = 2 * np.pi * np.arange(-half, 0).reshape(1, -1) / sr
    return {
        "low_hz_": edges[:-1, None].astype(np.float32),
        "band_hz_": np.diff(edges)[:, None].astype(np.float32),
        "n_axis": n_axis.astype(np.float32),
        "window": window.astype(np.float32),
    }


# --------------------------------------------------------------------------------------------
# FFT correlation
# --------------------------------------------------------------------------------------------


def fft_correlate(x: Array, filters: Array, pad: int, dtype: Any) -> Array:
    """waveform x (B, T), filters (C, K), zero padding ``pad`` each side -> (B, T', C),
    T' = T + 2 pad - K + 1: the cross-correlation ``lax.conv_general_dilated`` computes, as
    ``irfft(rfft(x) * conj(rfft(f)))``.

    Why: a conv with one input channel is a poor GEMM shape, and its cost grows with K; the
    FFT costs O(T log T) per filter whatever K is, ~6x less than XLA's direct conv for the
    1025-tap ASVspoof 2021 baseline on CPU (for 129 taps the direct conv or the chunked matmul win, see
    ``ModelConfig.sinc_conv_impl``). Differentiable in x and in the filters.

    The FFT length n >= T + 2 pad, so the circular correlation never wraps for the T' outputs
    kept (index t + j <= T + 2 pad - 1 < n). jnp.fft has no bfloat16: for a bf16 ``dtype``
    inputs and filters are rounded to bf16 as the direct conv sees them, the FFT runs in float32
    (as a bf16 conv accumulates), and the output is cast back to bf16.
    """
    b, t = x.shape
    k = filters.shape[1]
    length = t + 2 * pad
    t_out = length - k + 1
    n = 1 << (length - 1).bit_length()  # power of two: the fastest FFT size
    x = x.astype(dtype).astype(jnp.float32)
    filters = filters.astype(dtype).astype(jnp.float32)
    xp = jnp.pad(x, ((0, 0), (pad, pad)))  # (B, T + 2 pad)
    xf = jnp.fft.rfft(xp, n)  # (B, n // 2 + 1)
    ff = jnp.conj(jnp.fft.rfft(filters, n))  # (C, n // 2 + 1)
    y = jnp.fft.irfft(xf[:, None, :] * ff[None, :, :], n)[:, :, :t_out]  # (B, C, T')
    return jnp.swapaxes(y, 1, 2).astype(dtype)  # (B, T', C): the direct conv's layout


# --------------------------------------------------------------------------------------------
# Chunked Toeplitz matmul, pooled in the same loop
# --------------------------------------------------------------------------------------------

MATMUL_MIN_FRAMES = 12  # outputs per GEMM row: a multiple of the pool, at least this many
MATMUL_ROWS = 256  # GEMM rows per chunk: one chunk's conv output (~2 MB for 128 filters) stays in cache


def _toeplitz(filters: Array, frames: int) -> Array:
    """(C, K) filters -> (frames + K - 1, frames * C) matrix W with W[j, p * C + c] = f[c, j - p]
    (0 outside the kernel): a row of ``frames + K - 1`` samples times W is the correlation at
    ``frames`` consecutive positions."""
    c, k = filters.shape
    j = np.arange(frames + k - 1)[:, None]
    tap = j - np.arange(frames)[None, :]  # (J, P)
    inside = (tap >= 0) & (tap < k)
    w = jnp.where(inside[:, :, None], filters.T[np.clip(tap, 0, k - 1)], 0.0)  # (J, P, C)
    return w.reshape(frames + k - 1, frames * c)


def _sample_rows(x: Array, frames: int, width: int, rows: int) -> Array:
    """waveform (B, L) -> (num_rows, width) rows, row s = x[b, s P : s P + width], P = frames,
    for s < rows per utterance (zeros past the end), utterances one after another."""
    b, length = x.shape
    m = -(-width // frames)  # blocks of P samples that cover one row
    need = (rows + m - 1) * frames
    x = jnp.pad(x, ((0, 0), (0, max(0, need - length))))[:, :need]
    blocks = x.reshape(b, rows + m - 1, frames)
    # row s = blocks s .. s + m - 1 side by side, cut to its width: m slices, no gather
    r = jnp.concatenate([blocks[:, i : i + rows] for i in range(m)], axis=-1)[:, :, :width]
    return r.reshape(b * rows, width)


def matmul_correlate_pool(x: Array, filters: Array, pad: int, rectify: bool, pool: int,
                          dtype: Any) -> Array:
    """waveform x (B, T), filters (C, K), zero padding ``pad`` each side -> (B, T' // pool, C):
    the cross-correlation ``lax.conv_general_dilated`` computes (T' = T + 2 pad - K + 1), then
    ``abs`` if ``rectify``, then ``max_pool_1d(., pool)``.

    Why: a conv with one input channel is a poor GEMM shape for XLA's conv, and its full-rate
    output (B, T', C) is 3x the pooled one; written to memory and read back for abs and pool,
    it is what the stage's time goes to. Here rows of P + K - 1 samples (P = a multiple of the
    pool) times a Toeplitz matrix (``_toeplitz``) give P outputs per row as one GEMM, and a loop
    over chunks of ``MATMUL_ROWS`` rows applies abs and the pool to each chunk while it is in
    cache: 1.4-2x less CPU than the direct conv, abs and pool for tak2021 (bench/README.md).
    (K - 1) / (P + K - 1) of the multiply-adds are with zeros (8 % for 129 taps).
    Differentiable in x and the filters; the pool's gradient is ``max_pool_1d``'s (torch's).
    Same products as the direct conv, summed in another order: float32 rounding differs.
    """
    b, t = x.shape
    c, k = filters.shape
    t_pool = (t + 2 * pad - k + 1) // pool  # frames kept after the pool (floor mode)
    frames = pool * -(-MATMUL_MIN_FRAMES // pool)
    rows = -(-t_pool * pool // frames)  # GEMM rows per utterance
    xr = _sample_rows(jnp.pad(x, ((0, 0), (pad, pad))), frames, frames + k - 1, rows)
    n_chunks = -(-xr.shape[0] // MATMUL_ROWS)
    xr = jnp.pad(xr, ((0, n_chunks * MATMUL_ROWS - xr.shape[0]), (0, 0)))
    w = _toeplitz(filters, frames).astype(dtype)

    def chunk(xc: Array) -> Array:  # (MATMUL_ROWS, P + K - 1) -> (MATMUL_ROWS, P // pool, C)
        y = jnp.dot(xc.astype(dtype), w).reshape(MATMUL_ROWS, frames, c)
        if rectify:
            y = jnp.abs(y)
        return max_pool_1d(y, pool)

    y = jax.lax.map(chunk, xr.reshape(n_chunks, MATMUL_ROWS, -1))
    y = y.reshape(n_chunks * MATMUL_ROWS, frames // pool, c)[: b * rows]
    return y.reshape(b, rows * (frames // pool), c)[:, :t_pool]


# --------------------------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------------------------


class SincConv(nn.Module):
    """waveform (B, T) -> sinc features (B, T', C), channels-last.

    conv (valid or same padding; XLA's direct conv, an FFT correlation or a chunked Toeplitz
    matmul, per ``config.sinc_conv_impl``) -> optional abs -> optional max-pool. Channels-last because
    the whole model is (B, T, C) (XLA's preferred conv layout on CPU and GPU; a CPU probe found
    it ~1.5x faster than channels-first).
    """

    config: ModelConfig
    dtype: Any = None  # computation dtype; filters are built in float32 then cast

    @nn.compact
    def __call__(self, x: Array, out_scale: Array | None = None,
                 out_shift: Array | None = None) -> Array:
        """``out_scale``/``out_shift`` (C,): a per-channel affine map applied to the conv output,
        folded into the filters (only valid with no abs / pool in between)."""
        cfg = self.config
        dtype = self.dtype or x.dtype
        kernel = self._filters().T[:, None, :]  # (K, 1, C): the WIO layout
        if out_scale is not None:
            if cfg.sinc_abs or cfg.sinc_pool > 1:
                raise ValueError("an affine map can only be folded into a bare sinc conv")
            kernel = kernel * out_scale
        k = cfg.sinc_kernel_size
        pad = k // 2 if cfg.sinc_padding == "same" else 0
        if cfg.sinc_impl == "matmul":  # abs and pool inside (no out_shift: it needs neither)
            y = matmul_correlate_pool(x, kernel[:, 0, :].T, pad, cfg.sinc_abs, cfg.sinc_pool, dtype)
            return y if out_shift is None else y + out_shift.astype(dtype)
        if cfg.sinc_impl == "fft":
            y = fft_correlate(x, kernel[:, 0, :].T, pad, dtype)  # (B, T', C)
        else:
            y = jax.lax.conv_general_dilated(
                x[..., None].astype(dtype),  # (B, T, 1)
                kernel.astype(dtype),  # WIO
                window_strides=(1,),
                padding=[(pad, pad)],
                dimension_numbers=("NWC", "WIO", "NWC"),
            )  # (B, T', C)
        if out_shift is not None:
            y = y + out_shift.astype(dtype)
        if cfg.sinc_abs:
            y = jnp.abs(y)
        if cfg.sinc_pool > 1:
            y = max_pool_1d(y, cfg.sinc_pool)
        return y

    def _filters(self) -> Array:
        """The (C, K) float32 filter bank of ``config.sinc_formula`` (declaring the stored
        tensors it is built from, or carries)."""
        cfg = self.config

        def stored(name: str, trainable: bool) -> Array:
            value = lambda *_: jnp.asarray(seed_sinc_tensors(cfg)[name])  # noqa: E731
            if trainable:
                return self.param(name, value)
            return self.variable("buffers", name, value).value

        if cfg.sinc_formula == "official":
            if cfg.layout == "seed":
                # The seed layout stores the four tensors: carry them (unused) so that variables
                # and checkpoints keep one tree whichever formula a candidate config tries.
                for name in ("low_hz_", "band_hz_", "n_axis", "window"):
                    stored(name, False)
            return official_filters(cfg)  # constant under jit
        return sincnet_filters(
            stored("low_hz_", cfg.sinc_learnable),
            stored("band_hz_", cfg.sinc_learnable),
            stored("n_axis", False),
            stored("window", False),
            cfg.sample_rate,
            cfg.sinc_min_low_hz,
            cfg.sinc_min_band_hz,
        )
