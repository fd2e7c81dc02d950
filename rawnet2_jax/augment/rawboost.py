"""RawBoost (Tak et al., ICASSP 2022) in JAX: per example, jittable, vmap over the batch.

Three noise families, as in the reference ``RawBoost.py`` / ``data_utils_SSL.py`` of
TakHemlata/SSL_Anti-spoofing (defaults from its ``main_SSL_LA.py``):

* **LnL**, linear and non-linear convolutive noise: ``sum_i filter_i(x ** i)``, i = 1..N_f,
  each filter a random multi-band notch FIR (:mod:`rawnet2_jax.augment.fir`), then the mean
  removed and the peak brought down to 1 if it exceeds 1;
* **ISD**, impulsive signal-dependent noise: ``x[p] += g_sd * x[p] * f`` at beta % of the
  samples (beta ~ U(0, P)), f the product of two U(-1, 1); peak brought down to 1 if over;
* **SSI**, stationary signal-independent noise: white Gaussian noise through a random notch
  FIR, scaled to an SNR ~ U(SNRmin, SNRmax) dB against x, added (no renormalisation after,
  as in the reference).

Algorithms (the reference's ``--algo``): 0 none, 1 LnL, 2 ISD, 3 SSI, 4 = 1 -> 2 -> 3,
5 = 1 -> 2, 6 = 1 -> 3, 7 = 2 -> 3 (in series), 8 = LnL(x) + ISD(x), then peak-normalised
if over 1.

Randomness is JAX's, so a key gives the same output on every backend and for any batch
sharding, but not numpy's numbers: the *distributions* are the reference's. Every draw is a
separate pure function (``draw_*_params``) and every family an apply function on drawn
parameters (``*_apply``), so tests feed identical parameters to a scipy transcription.
The key of one call is split into (LnL, ISD, SSI) keys the same way for every algorithm, so
for one key algorithm 5 applies exactly the LnL of algorithm 1 followed by the ISD of
algorithm 2.

Reference quirks kept on purpose (each marked "quirk" below): filter orders drawn as
``int(U(minCoeff, maxCoeff))`` then made odd; the non-linear gain range is
``(minG - minBiasLinNonLin, maxG - maxBiasLinNonLin)`` = (-5, -20) dB with low > high, drawn
with numpy's ``low + (high - low) * u``; band edges clipped to (1e-3, fs/2 - 1e-3) Hz; the
filters are band-stop (see fir.py); the one-sample advance of ``filterFIR``'s trim; SSI's
noise peak-normalised before the SNR scaling (a no-op on the result) and the sum not
renormalised. The reference applies RawBoost to the whole decoded file before cutting /
padding to 64600 samples; applied to a training batch here, it sees the cut example.
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rawnet2_jax.augment import fir
from rawnet2_jax.augment.config import ALGORITHMS, REFERENCE_NAMES, RawBoostConfig, RawBoostError

__all__ = [
    "ALGORITHMS", "REFERENCE_NAMES", "FirParams", "ISDParams", "RawBoostConfig", "RawBoostError", "SSIParams",
    "design_fir", "draw_fir_params", "draw_isd_params", "draw_lnl_params", "draw_ssi_params", "isd_apply",
    "lnl_apply", "random_subset_mask", "rawboost", "rawboost_batch", "ssi_apply",
]

Array = jax.Array

class FirParams(NamedTuple):
    """One multi-band notch filter (leading axes allowed: LnL stacks N_f of them)."""

    centre_hz: Array     # (n_bands,) float32
    bandwidth_hz: Array  # (n_bands,) float32
    numtaps: Array       # (n_bands,) int32, odd
    gain_db: Array       # () float32


class ISDParams(NamedTuple):
    beta_percent: Array  # () float32, ~ U(0, p)
    mask: Array          # (T,) bool, exactly int(T * beta / 100) True, uniformly placed
    factor: Array        # (T,) float32, (2 u1 - 1)(2 u2 - 1); used where mask


class SSIParams(NamedTuple):
    noise: Array         # (T,) float32 N(0, 1)
    fir: FirParams
    snr_db: Array        # () float32


# Each jax.random call site is its own threefry program, slow to compile on CPU (~3 s each
# on the busy 2-core machine), so every family makes one uniform draw and slices it.
_FIR_UNIFORMS_PER_BAND = 3  # centre, bandwidth, taps


def _scale(u: Array, low, high) -> Array:
    # numpy's low + (high - low) * u. jax.random.uniform(minval, maxval) would clamp to >= low,
    # which breaks the reference's non-linear gain range, drawn with low (-5) > high (-20).
    return low + (high - low) * u


def _fir_from_uniforms(u: Array, cfg: RawBoostConfig, gain_low, gain_high) -> FirParams:
    """(..., 3 n_bands + 1) U[0, 1) -> FirParams with the same leading axes."""
    nb = cfg.n_bands
    # quirk: taps = int(U(minCoeff, maxCoeff)) (uniform over the integers min..max-1), and an
    # even count becomes the next odd one, so each odd count in range gets two integers' share.
    raw = jnp.floor(_scale(u[..., 2 * nb:3 * nb], cfg.min_coeff, cfg.max_coeff)).astype(jnp.int32)
    raw = jnp.minimum(raw, max(cfg.max_coeff - 1, cfg.min_coeff))  # float32 rounding up to max
    return FirParams(
        centre_hz=_scale(u[..., :nb], cfg.min_f, cfg.max_f),
        bandwidth_hz=_scale(u[..., nb:2 * nb], cfg.min_bw, cfg.max_bw),
        numtaps=raw + 1 - raw % 2,
        gain_db=_scale(u[..., 3 * nb], gain_low, gain_high),
    )


def draw_fir_params(key: Array, cfg: RawBoostConfig, gain_db_range: tuple[float, float] | None = None) -> FirParams:
    """Parameters of one ``genNotchCoeffs`` call; gain range defaults to (min_g, max_g)."""
    low, high = (cfg.min_g, cfg.max_g) if gain_db_range is None else gain_db_range
    u = jax.random.uniform(key, (_FIR_UNIFORMS_PER_BAND * cfg.n_bands + 1,), jnp.float32)
    return _fir_from_uniforms(u, cfg, low, high)


def design_fir(params: FirParams, cfg: RawBoostConfig) -> tuple[Array, Array]:
    """(taps (cfg.max_filter_length,), length ()) of one drawn filter."""
    return fir.notch_filter(params.centre_hz, params.bandwidth_hz, params.numtaps, params.gain_db,
                            float(cfg.fs), cfg.max_taps)


def draw_lnl_params(key: Array, cfg: RawBoostConfig) -> FirParams:
    """N_f filters stacked on a leading axis: row 0 for x, row i for x ** (i + 1)."""
    u = jax.random.uniform(key, (cfg.n_f, _FIR_UNIFORMS_PER_BAND * cfg.n_bands + 1), jnp.float32)
    # quirk: the reference subtracts the biases from (minG, maxG) once, at i == 1, so every
    # non-linear term draws from (minG - minBias, maxG - maxBias) = (-5, -20) dB by default.
    nonlinear = jnp.arange(cfg.n_f) > 0
    low = jnp.where(nonlinear, cfg.min_g - cfg.min_bias_lin_nonlin, cfg.min_g)
    high = jnp.where(nonlinear, cfg.max_g - cfg.max_bias_lin_nonlin, cfg.max_g)
    return _fir_from_uniforms(u, cfg, low, high)


def draw_isd_params(key: Array, cfg: RawBoostConfig, num_samples: int) -> ISDParams:
    k_pick, k_u = jax.random.split(key)
    u = jax.random.uniform(k_u, (2 * num_samples + 1,), jnp.float32)
    beta = _scale(u[0], 0.0, cfg.p)
    count = jnp.floor(num_samples * (beta / 100)).astype(jnp.int32)  # int(x_len * (beta / 100))
    u1, u2 = u[1:num_samples + 1], u[num_samples + 1:]
    return ISDParams(beta_percent=beta, mask=random_subset_mask(k_pick, num_samples, count),
                     factor=(2 * u1 - 1) * (2 * u2 - 1))


def random_subset_mask(key: Array, num_samples: int, count: Array) -> Array:
    """(num_samples,) bool with exactly ``count`` True at uniformly random positions (the
    reference's ``np.random.permutation(T)[:n]``).

    The positions holding the ``count`` smallest of num_samples random uint32 values, the
    count-th smallest found by a 32-step bisection on its bits (XLA's CPU sort of 64600
    values took ~70 ms per row, this ~3 ms). Equal values (probability ~T^2 / 2^33, 5e-4 at
    T = 64600) are taken in index order, which keeps the count exact.
    """
    v = jax.random.bits(key, (num_samples,), jnp.uint32)
    one = jnp.uint32(1)

    def settle_bit(i, t):  # t: the bits of the count-th smallest value above bit 31 - i
        bit = (31 - i).astype(jnp.uint32)
        below_or_at = jnp.sum(v <= (t | ((one << bit) - one)))
        return jnp.where(below_or_at >= count, t, t | (one << bit))

    kth = jax.lax.fori_loop(0, 32, settle_bit, jnp.uint32(0))
    below, tie = v < kth, v == kth
    mask = below | (tie & (jnp.cumsum(tie) <= count - jnp.sum(below)))
    return mask & (count > 0)


def draw_ssi_params(key: Array, cfg: RawBoostConfig, num_samples: int) -> SSIParams:
    k_noise, k_u = jax.random.split(key)
    u = jax.random.uniform(k_u, (_FIR_UNIFORMS_PER_BAND * cfg.n_bands + 2,), jnp.float32)
    return SSIParams(
        noise=jax.random.normal(k_noise, (num_samples,), jnp.float32),
        fir=_fir_from_uniforms(u[:-1], cfg, cfg.min_g, cfg.max_g),
        snr_db=_scale(u[-1], cfg.snr_min, cfg.snr_max),
    )


def _peak_normalise(y: Array, always: bool) -> Array:
    """The reference's ``normWav``: divide by max|y| always, or only when it exceeds 1.
    An all-zero y stays zero (the reference would divide by 0 with always=True)."""
    peak = jnp.max(jnp.abs(y))
    divide = peak > 0 if always else peak > 1
    return jnp.where(divide, y / jnp.where(divide, peak, 1.0), y)


def lnl_apply(x: Array, params: FirParams, cfg: RawBoostConfig) -> Array:
    """Linear and non-linear convolutive noise with drawn filters; (T,) -> (T,)."""
    t = x.shape[0]
    nfft = fir.fast_fft_length(t + cfg.max_filter_length - 1)
    taps, lengths = jax.vmap(lambda p: design_fir(p, cfg))(params)
    powers = jnp.stack([x ** (i + 1) for i in range(cfg.n_f)])  # (N_f, T)
    spectra = jnp.fft.rfft(powers, n=nfft) * jax.vmap(lambda b, n: fir.filter_spectrum(b, n, nfft))(taps, lengths)
    # The sum of the filtered terms: one inverse FFT of the summed spectra.
    y = jnp.fft.irfft(jnp.sum(spectra, axis=0), n=nfft)[:t]
    return _peak_normalise(y - jnp.mean(y), always=False)


def isd_apply(x: Array, params: ISDParams, cfg: RawBoostConfig) -> Array:
    """Impulsive signal-dependent noise at the drawn positions; (T,) -> (T,)."""
    y = jnp.where(params.mask, x + cfg.g_sd * x * params.factor, x)
    return _peak_normalise(y, always=False)


def ssi_apply(x: Array, params: SSIParams, cfg: RawBoostConfig) -> Array:
    """Coloured stationary noise at the drawn SNR; (T,) -> (T,)."""
    taps, length = design_fir(params.fir, cfg)
    noise = fir.fir_filter(params.noise, taps, length)
    noise = _peak_normalise(noise, always=True)  # quirk: undone by the scaling below
    scale = jnp.linalg.norm(x) / (jnp.linalg.norm(noise) * 10.0 ** (0.05 * params.snr_db))
    return x + noise * jnp.where(jnp.isfinite(scale), scale, 0.0)


def check_algo(algo: int) -> int:
    if isinstance(algo, bool) or not isinstance(algo, numbers.Integral) or int(algo) not in ALGORITHMS:
        raise RawBoostError(f"RawBoost algorithm must be an integer 0..8 (0 = none), got {algo!r}")
    return int(algo)


def rawboost(key: Array, x: Array, algo: int, cfg: RawBoostConfig = RawBoostConfig()) -> Array:
    """One waveform (T,) float32 -> (T,) float32 with RawBoost algorithm ``algo`` (static)."""
    algo = check_algo(algo)
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 1:
        raise RawBoostError(f"rawboost takes one waveform of shape (T,), got shape {x.shape}; use rawboost_batch")
    if algo == 0:
        return x
    t = x.shape[0]
    k_lnl, k_isd, k_ssi = jax.random.split(key, 3)
    lnl = lambda v: lnl_apply(v, draw_lnl_params(k_lnl, cfg), cfg)
    isd = lambda v: isd_apply(v, draw_isd_params(k_isd, cfg, t), cfg)
    ssi = lambda v: ssi_apply(v, draw_ssi_params(k_ssi, cfg, t), cfg)
    if algo == 8:
        return _peak_normalise(lnl(x) + isd(x), always=False)
    chain = {1: (lnl,), 2: (isd,), 3: (ssi,), 4: (lnl, isd, ssi), 5: (lnl, isd), 6: (lnl, ssi), 7: (isd, ssi)}[algo]
    for stage in chain:
        x = stage(x)
    return x


def rawboost_batch(key: Array, audio: Array, algo: int, cfg: RawBoostConfig = RawBoostConfig(),
                   mesh: Any = None) -> Array:
    """(B, T) -> (B, T): row b gets ``rawboost(jax.random.split(key, B)[b], audio[b], ...)``.

    ``mesh``: the ``jax.sharding.Mesh`` the batch is split over (axis 0 over all its axes), if
    any. XLA's SPMD partitioner does not split an FFT along its batch dimensions: without
    ``mesh`` a sharded batch is all-gathered around every ``jnp.fft`` of the filters (every
    device filters the whole batch; jaxlib 0.11's CPU collectives even deadlocked on it). With
    ``mesh`` each device runs its own rows under ``shard_map``, with the same per-row keys, so
    the result does not depend on the number of devices.
    """
    algo = check_algo(algo)
    if audio.ndim != 2:
        raise RawBoostError(f"rawboost_batch takes a (B, T) batch, got shape {audio.shape}")
    if algo == 0:
        return audio
    keys = jax.random.split(key, audio.shape[0])

    def rows(k: Array, v: Array) -> Array:  # (b,) keys, (b, T) audio -> (b, T)
        return jax.vmap(lambda kk, vv: rawboost(kk, vv, algo, cfg))(k, v)

    if mesh is None or mesh.size == 1:
        return rows(keys, audio)
    spec = jax.sharding.PartitionSpec(tuple(mesh.axis_names))
    # check_vma off: the filters' scans start from unsharded carries (every row independent anyway)
    return jax.shard_map(rows, mesh=mesh, in_specs=(spec, spec), out_specs=spec, check_vma=False)(keys, audio)
