"""Sinc filter banks against independent numpy float64 computations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rawnet2_jax.config import get_config
from rawnet2_jax.sinc import (
    SincConv,
    official_band_edges,
    official_filters,
    seed_sinc_tensors,
    sincnet_filters,
)
from tests.conftest import assert_close, speech_like

pytestmark = pytest.mark.parity


def _mel(f):
    return 2595 * np.log10(1 + f / 700)


def _imel(m):
    return 700 * (10 ** (m / 2595) - 1)


def official_np(n_filt: int, k: int, scale: str, edges_kind: str, sr: int = 16000) -> np.ndarray:
    """Filter by filter, as the papers describe it, in float64."""
    if edges_kind == "asvspoof2021":
        freq = _imel(np.linspace(0, _mel(8000.0), n_filt + 1))
    elif scale == "linear":
        freq = np.linspace(0, 8000.0, n_filt + 3)[: n_filt + 1]
    else:
        freq = _imel(np.linspace(0, _mel(8000.0), n_filt + 3))[: n_filt + 1]
        if scale == "inverse_mel":
            freq = np.abs(freq[::-1] - 1)
    t = np.arange(-(k - 1) // 2, (k - 1) // 2 + 1, dtype=np.float64)
    win = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(k) / (k - 1))
    out = np.zeros((n_filt, k))
    for i in range(n_filt):
        lo, hi = freq[i], freq[i + 1]
        out[i] = win * (2 * hi / sr * np.sinc(2 * hi * t / sr) - 2 * lo / sr * np.sinc(2 * lo * t / sr))
    return out


@pytest.mark.parametrize(
    "preset,overrides",
    [
        ("tak2021", {}),
        ("tak2021", {"sinc_scale": "inverse_mel"}),
        ("tak2021", {"sinc_scale": "linear"}),
        ("asvspoof2021_baseline", {}),
    ],
)
def test_official_filters_match_float64(preset, overrides):
    cfg = get_config(preset, **overrides)
    got = np.asarray(jax.jit(lambda: official_filters(cfg))())
    want = official_np(cfg.sinc_filters, cfg.sinc_kernel_size, cfg.sinc_scale, cfg.sinc_edges)
    assert got.shape == (cfg.sinc_filters, cfg.sinc_kernel_size)
    # Float32 rounding of the two low-pass terms (each up to ~1 near the centre tap; their
    # difference cancels), nothing more: the range-reduced argument keeps long kernels exact.
    assert_close(got, want, rtol=1e-5, atol=2e-7, name=f"{preset} {overrides}")


def test_official_band_edges():
    tak = official_band_edges(get_config("tak2021"))
    assert tak.shape == (129,) and tak[0] == 0.0 and tak[-1] < 8000.0
    # eurecom: N + 3 grid points on the mel scale, the first N + 1 used
    assert np.isclose(_mel(tak[1]), _mel(8000.0) / 130)
    base = official_band_edges(get_config("asvspoof2021_baseline"))
    assert base.shape == (21,) and base[0] == 0.0 and np.isclose(base[-1], 8000.0)
    inv = official_band_edges(get_config("tak2021", sinc_scale="inverse_mel"))
    assert np.all(np.diff(inv) < 0)  # decreasing: as the official code makes them


def sincnet_np(low, band, n_axis, window, sr, min_low, min_band):
    low = min_low + np.abs(low.astype(np.float64))
    high = np.clip(low + min_band + np.abs(band.astype(np.float64)), min_low, sr / 2)
    bw = (high - low)[:, 0]
    n = n_axis.astype(np.float64)
    left = (np.sin(high * n) - np.sin(low * n)) / (n / 2) * window.astype(np.float64)
    full = np.concatenate([left, 2 * bw[:, None], left[:, ::-1]], axis=1)
    return full / (2 * bw[:, None])


@pytest.mark.parametrize("min_low,min_band,perturb", [(0.0, 0.0, False), (50.0, 50.0, True)])
def test_sincnet_filters_match_float64(min_low, min_band, perturb):
    cfg = get_config("caa_rawnet2")
    st = seed_sinc_tensors(cfg)
    if perturb:
        rng = np.random.default_rng(0)
        st["low_hz_"] = (st["low_hz_"] + rng.uniform(-40, 40, st["low_hz_"].shape)).astype(np.float32)
        st["band_hz_"] = (st["band_hz_"] * rng.uniform(0.5, 3, st["band_hz_"].shape)).astype(np.float32)
    args = (st["low_hz_"], st["band_hz_"], st["n_axis"], st["window"])
    got = np.asarray(jax.jit(lambda *a: sincnet_filters(*a, 16000, min_low, min_band))(*args))
    want = sincnet_np(*args, 16000, min_low, min_band)
    assert got.shape == (128, 129)
    # The SincNet formula itself takes sin() of float32 phases up to ~200 rad (the stored n_axis
    # is float32), i.e. ~1e-5 absolute; torch's float32 SincConv_fast has the same error.
    assert_close(got, want, rtol=1e-5, atol=3e-5, name="sincnet filters")


def test_seed_sinc_tensors_linear():
    st = seed_sinc_tensors(get_config("caa_rawnet2"))
    assert st["low_hz_"].shape == (128, 1) and st["band_hz_"].shape == (128, 1)
    assert st["n_axis"].shape == (1, 64) and st["window"].shape == (64,)
    np.testing.assert_allclose(st["low_hz_"][:, 0], np.arange(128) * 62.5)
    np.testing.assert_allclose(st["band_hz_"][:, 0], 62.5)
    np.testing.assert_allclose(st["n_axis"][0], 2 * np.pi * np.arange(-64, 0) / 16000, rtol=1e-6)
    # SincNet's half window: 0.54 - 0.46 cos(2 pi n / K) over n = linspace(0, K/2 - 1, K // 2)
    n = np.linspace(0, 129 / 2 - 1, 64)
    np.testing.assert_allclose(st["window"], 0.54 - 0.46 * np.cos(2 * np.pi * n / 129), rtol=1e-6)


def _np_front(x, filt, padding, use_abs, pool):
    k = filt.shape[1]
    if padding == "same":
        x = np.pad(x, ((0, 0), (k // 2, k // 2)))
    # cross-correlation, as torch/XLA convs compute it
    out = np.stack([[np.correlate(row, f, mode="valid") for f in filt] for row in x])  # (B, C, T')
    if use_abs:
        out = np.abs(out)
    if pool > 1:
        t = out.shape[2] // pool
        out = out[:, :, : t * pool].reshape(out.shape[0], out.shape[1], t, pool).max(-1)
    return out.transpose(0, 2, 1)


@pytest.mark.parametrize(
    "preset,overrides",
    [
        ("caa_rawnet2", {"sinc_filters": 8}),
        ("caa_rawnet2", {"sinc_filters": 8, "sinc_padding": "valid", "sinc_abs": True, "sinc_pool": 3}),
        ("tak2021", {"sinc_filters": 8}),
    ],
)
def test_sinc_conv_module(preset, overrides):
    cfg = get_config(preset, **overrides)
    x = speech_like(1000, batch=2, seed=3)
    mod = SincConv(cfg)
    variables = mod.init(jax.random.PRNGKey(0), jnp.asarray(x))
    with jax.default_matmul_precision("highest"):
        got = np.asarray(mod.apply(variables, jnp.asarray(x)))
    if cfg.sinc_formula == "official":
        filt = official_np(cfg.sinc_filters, cfg.sinc_kernel_size, cfg.sinc_scale, cfg.sinc_edges)
    else:
        st = seed_sinc_tensors(cfg)
        filt = sincnet_np(st["low_hz_"], st["band_hz_"], st["n_axis"], st["window"], 16000, 0.0, 0.0)
    want = _np_front(x.astype(np.float64), filt, cfg.sinc_padding, cfg.sinc_abs, cfg.sinc_pool)
    assert_close(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max(), name="sinc conv")


def test_sinc_variable_collections():
    fixed = get_config("caa_rawnet2", sinc_filters=4)
    v = SincConv(fixed).init(jax.random.PRNGKey(0), jnp.zeros((1, 300)))
    assert set(v) == {"buffers"} and set(v["buffers"]) == {"low_hz_", "band_hz_", "n_axis", "window"}
    learn = fixed.replace(sinc_learnable=True)
    v = SincConv(learn).init(jax.random.PRNGKey(0), jnp.zeros((1, 300)))
    assert set(v["params"]) == {"low_hz_", "band_hz_"} and set(v["buffers"]) == {"n_axis", "window"}
    official = SincConv(get_config("tak2021")).init(jax.random.PRNGKey(0), jnp.zeros((1, 300)))
    assert not official  # no variables: the filters are config constants
    # seed layout with the official formula: the stored tensors are still carried
    seed_official = fixed.replace(sinc_formula="official")
    v = SincConv(seed_official).init(jax.random.PRNGKey(0), jnp.zeros((1, 300)))
    assert set(v["buffers"]) == {"low_hz_", "band_hz_", "n_axis", "window"}


def test_sincnet_filters_finite_with_zero_on_axis():
    cfg = get_config("caa_rawnet2")
    st = seed_sinc_tensors(cfg)
    n_axis = (np.arange(64) * np.pi / 16000).reshape(1, 64).astype(np.float32)
    f = lambda low: sincnet_filters(low, st["band_hz_"], n_axis, st["window"], 16000, 0.0, 0.0)  # noqa: E731
    out = np.asarray(f(jnp.asarray(st["low_hz_"])))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[:, 0], st["window"][0], rtol=1e-6)  # limit 2*band / (2*band) * w
    g = jax.grad(lambda low: jnp.sum(f(low)))(jnp.asarray(st["low_hz_"]) + 10.0)
    assert np.all(np.isfinite(np.asarray(g)))


@pytest.mark.slow
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("kernel_size", [129, 1025])
def test_sinc_conv_fft_matches_direct(kernel_size, padding):
    # learnable sincnet filters, so that the gradient also reaches low_hz_ / band_hz_
    cfg = get_config("caa_rawnet2", sinc_filters=6, sinc_kernel_size=kernel_size, sinc_padding=padding,
                     sinc_learnable=True, sinc_min_low_hz=50.0, sinc_min_band_hz=50.0)
    x = jnp.asarray(speech_like(kernel_size + 700, batch=2, seed=5))
    direct, fft = SincConv(cfg.replace(sinc_conv_impl="direct")), SincConv(cfg.replace(sinc_conv_impl="fft"))
    variables = direct.init(jax.random.PRNGKey(0), x)
    # a fixed random cotangent: the gradient of <y, w> is the full vector-Jacobian product
    t_out = x.shape[1] - (kernel_size - 1 if padding == "valid" else 0)
    w = jax.random.normal(jax.random.PRNGKey(1), (2, t_out, cfg.sinc_filters))

    def loss(mod, params, xx):
        return jnp.sum(mod.apply({**variables, "params": params}, xx) * w)

    with jax.default_matmul_precision("highest"):
        outs = {}
        for name, mod in (("direct", direct), ("fft", fft)):
            y = mod.apply(variables, x)
            gp, gx = jax.grad(lambda p, xx: loss(mod, p, xx), argnums=(0, 1))(variables["params"], x)
            outs[name] = (y, gx, gp["low_hz_"], gp["band_hz_"])
    assert outs["fft"][0].shape == (2, t_out, cfg.sinc_filters)
    _assert_like_direct(outs["fft"], outs["direct"])


def _assert_like_direct(got_all, want_all):
    """(output, d/dx, d/dlow_hz_, d/dband_hz_) within 1e-5 of the direct conv's, scaled by its max."""
    for what, got, want in zip(("output", "d/dx", "d/dlow_hz_", "d/dband_hz_"), got_all, want_all):
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        scale = np.abs(want).max()
        assert scale > 0, what
        diff = np.abs(got - want).max()
        assert diff <= 1e-5 * scale, f"{what}: max diff {diff:.3g} > 1e-5 * max |direct| {scale:.3g}"


@pytest.mark.parametrize("padding,use_abs,pool", [("same", True, 3)])
def test_sinc_conv_matmul_matches_direct(padding, use_abs, pool, monkeypatch):
    # Small chunks (MATMUL_ROWS), so that a short input runs over several and pads the last;
    # learnable sincnet filters, so that the gradient also reaches low_hz_ / band_hz_ through
    # the Toeplitz matrix.
    import rawnet2_jax.sinc as sinc

    monkeypatch.setattr(sinc, "MATMUL_ROWS", 8)
    cfg = get_config("caa_rawnet2", sinc_filters=6, sinc_padding=padding, sinc_abs=use_abs, sinc_pool=pool,
                     sinc_learnable=True, sinc_min_low_hz=50.0, sinc_min_band_hz=50.0)
    x = jnp.asarray(speech_like(129 + 700, batch=2, seed=7))
    direct, mm = SincConv(cfg.replace(sinc_conv_impl="direct")), SincConv(cfg.replace(sinc_conv_impl="matmul"))
    variables = direct.init(jax.random.PRNGKey(0), x)
    t_out = (x.shape[1] - (128 if padding == "valid" else 0)) // pool
    w = jax.random.normal(jax.random.PRNGKey(1), (2, t_out, cfg.sinc_filters))

    def outputs(mod):
        def loss(params, xx):
            return jnp.sum(mod.apply({**variables, "params": params}, xx) * w)

        gp, gx = jax.grad(loss, argnums=(0, 1))(variables["params"], x)
        return mod.apply(variables, x), gx, gp["low_hz_"], gp["band_hz_"]

    with jax.default_matmul_precision("highest"):
        outs = {name: jax.jit(lambda m=mod: outputs(m))() for name, mod in (("direct", direct), ("matmul", mm))}
    assert outs["matmul"][0].shape == (2, t_out, cfg.sinc_filters)
    assert 2 * t_out * pool // 12 > 3 * 8  # several chunks
    _assert_like_direct(outs["matmul"], outs["direct"])


def test_sinc_conv_impl_auto_and_bf16():
    assert get_config("asvspoof2021_baseline").sinc_uses_fft
    assert not get_config("tak2021").sinc_uses_fft
    assert get_config("tak2021").sinc_impl == "matmul"  # a pool follows: the chunked matmul
    assert get_config("caa_rawnet2").sinc_impl == "direct"  # no pool: XLA's conv
    assert get_config("asvspoof2021_baseline", sinc_conv_impl="matmul").sinc_impl == "matmul"
    assert not get_config("asvspoof2021_baseline", sinc_conv_impl="direct").sinc_uses_fft
    assert get_config("tak2021", sinc_conv_impl="fft").sinc_uses_fft
    with pytest.raises(ValueError, match="sinc_conv_impl"):
        get_config("tak2021", sinc_conv_impl="winograd")
    # bf16 compute: same dtype and layout as the direct path, equal to bf16 rounding
    cfg = get_config("tak2021", sinc_filters=6, sinc_kernel_size=257, sinc_abs=False, sinc_pool=1)
    x = jnp.asarray(speech_like(900, batch=2, seed=2))
    impls = ("direct", "fft", "matmul")
    ys = [SincConv(cfg.replace(sinc_conv_impl=i), dtype=jnp.bfloat16).apply({}, x) for i in impls]
    assert [y.dtype for y in ys] == [jnp.bfloat16] * 3
    d, *others = (np.asarray(y, np.float64) for y in ys)
    for name, f in zip(impls[1:], others):
        assert d.shape == f.shape == (2, 900 - 256, 6)
        diff = np.abs(d - f).max()
        assert diff <= 2e-2 * np.abs(d).max(), f"bf16 {name}: max diff {diff:.3g}, max |direct| {np.abs(d).max():.3g}"
