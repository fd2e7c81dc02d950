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


def official_filters(cfg: ModelConfig) -> Array:
    """(N, K) float32 official filter bank, jnp.

    The op order follows the official forward (float32 sinc argument, as there the time axis is
    a float32 torch tensor), so the two agree to float32 rounding.
    """
    k = cfg.sinc_kernel_size
    edges = official_band_edges(cfg)
    hsupp = jnp.arange(-(k - 1) / 2, (k - 1) / 2 + 1, dtype=jnp.float32)  # (K,)
    window = jnp.asarray(np.hamming(k), jnp.float32)  # full symmetric Hamming window

    def lowpass(fc: np.ndarray) -> Array:  # ideal low-pass with cut-off fc (Hz): (N, K)
        arg = jnp.asarray(2 * fc, jnp.float32)[:, None] * hsupp[None, :] / cfg.sample_rate
        y = jnp.pi * jnp.where(arg == 0, 1e-20, arg)  # np.sinc's guard against 0/0
        return jnp.asarray(2 * fc / cfg.sample_rate, jnp.float32)[:, None] * (jnp.sin(y) / y)

    return window[None, :] * (lowpass(edges[1:]) - lowpass(edges[:-1]))


# --------------------------------------------------------------------------------------------
# (b) SincNet formula from stored tensors
# --------------------------------------------------------------------------------------------


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
    low = min_low_hz + jnp.abs(low_hz_)  # (C, 1)
    high = jnp.clip(low + min_band_hz + jnp.abs(band_hz_), min_low_hz, sample_rate / 2)
    band = (high - low)[:, 0]  # (C,)
    # sin(2 pi f_high t) - sin(2 pi f_low t) over pi t, the band-pass in closed form.
    left = ((jnp.sin(high * n_axis) - jnp.sin(low * n_axis)) / (n_axis / 2)) * window  # (C, K//2)
    center = 2 * band[:, None]  # (C, 1): the limit at t = 0
    right = jnp.flip(left, axis=1)  # filters are symmetric
    return jnp.concatenate([left, center, right], axis=1) / (2 * band[:, None])


def seed_sinc_tensors(cfg: ModelConfig) -> dict[str, np.ndarray]:
    """The four stored SincNet tensors for a fresh model, float32.

    Band edges split [0, sr/2] into C equal steps on the config's scale (linear: low = 0, step,
    ..., band = step, which is what an inspection of the seed checkpoint reports). The half
    time axis and half window are made as SincConv_fast makes them, quirks included (its
    window index runs over linspace(0, K/2 - 1, K//2), not over integers).
    """
    c, k, sr = cfg.sinc_filters, cfg.sinc_kernel_size, cfg.sample_rate
    if cfg.sinc_scale == "linear":
        edges = np.linspace(0.0, sr / 2, c + 1)
    elif cfg.sinc_scale == "mel":
        edges = to_hz(np.linspace(to_mel(0.0), to_mel(sr / 2), c + 1))
    else:
        raise ValueError("seed sinc tensors can be initialised for linear or mel scale only")
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
# The module
# --------------------------------------------------------------------------------------------


class SincConv(nn.Module):
    """waveform (B, T) -> sinc features (B, T', C), channels-last.

    conv (valid or same padding) -> optional abs -> optional max-pool. Channels-last because
    the whole model is (B, T, C) (XLA's preferred conv layout on CPU and GPU; a CPU probe found
    it ~1.5x faster than channels-first).
    """

    config: ModelConfig
    dtype: Any = None  # computation dtype; filters are built in float32 then cast

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        if cfg.sinc_formula == "official":
            filters = official_filters(cfg)  # (C, K), constant under jit
        else:
            init = seed_sinc_tensors(cfg)

            def stored(name: str, trainable: bool) -> Array:
                value = lambda *_: jnp.asarray(init[name])  # noqa: E731
                if trainable:
                    return self.param(name, value)
                return self.variable("buffers", name, value).value

            filters = sincnet_filters(
                stored("low_hz_", cfg.sinc_learnable),
                stored("band_hz_", cfg.sinc_learnable),
                stored("n_axis", False),
                stored("window", False),
                cfg.sample_rate,
                cfg.sinc_min_low_hz,
                cfg.sinc_min_band_hz,
            )
        dtype = self.dtype or x.dtype
        kernel = filters.T[:, None, :].astype(dtype)  # (K, 1, C)  WIO
        k = cfg.sinc_kernel_size
        pad = [(k // 2, k // 2)] if cfg.sinc_padding == "same" else [(0, 0)]
        y = jax.lax.conv_general_dilated(
            x[..., None].astype(dtype),  # (B, T, 1)
            kernel,
            window_strides=(1,),
            padding=pad,
            dimension_numbers=("NWC", "WIO", "NWC"),
        )  # (B, T', C)
        if cfg.sinc_abs:
            y = jnp.abs(y)
        if cfg.sinc_pool > 1:
            y = nn.max_pool(y, (cfg.sinc_pool,), strides=(cfg.sinc_pool,), padding="VALID")
        return y
