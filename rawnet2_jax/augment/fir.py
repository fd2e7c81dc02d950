"""Random multi-band notch FIR filters of RawBoost, in jnp (inside jit, vmap-able).

The reference (``RawBoost.py`` of TakHemlata/SSL_Anti-spoofing) builds each filter as the
cascade of ``n_bands`` filters ``scipy.signal.firwin(c, [f1, f2], window='hamming', fs=fs)``.
That call leaves ``pass_zero`` at its default ``True``, so every stage is a **band-stop**
(notch) filter, not a band-pass one: the reference's function is called ``genNotchCoeffs``
and its help says "number of notch filters". A band-stop FIR passes Nyquist and must have an
odd number of taps, which is why the reference turns every even order into the next odd one.

Every stage has a different, traced number of taps, so taps live in fixed-size arrays
(``max_taps`` per stage, ``n_bands * (max_taps - 1) + 1`` for the cascade), left-aligned and
zero-padded: the zeros change neither the cascade nor the frequency response nor the
filtering, and one compiled program serves every draw.

Filtering reproduces the reference's ``filterFIR``: ``scipy.signal.lfilter(b, 1, x)`` on
``x`` followed by ``len(b) + 1`` zeros, then the slice ``[int(N / 2) : int(len - N / 2)]``
with ``N = len(b) + 1``. Because the cascade length ``L`` is always odd (a sum of
``n_bands`` odd lengths minus ``n_bands - 1``), the slice starts at ``(L + 1) / 2``: one
sample past the filter's group delay ``(L - 1) / 2``, so the reference's output leads the
zero-phase alignment by one sample. We keep that one-sample advance. Here the convolution
is done with real FFTs (one per signal; for the linear + non-linear sum one inverse FFT),
the trim being a linear phase on the filter's spectrum.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp

Array = jax.Array

# scipy.signal.freqz(b, 1) default: worN=512 points on [0, pi), i.e. bins of a 1024-point DFT.
FREQZ_POINTS = 512
# The reference clips band edges to (EDGE_HZ, fs / 2 - EDGE_HZ): firwin needs 0 < f < fs / 2.
EDGE_HZ = 1e-3


def fast_fft_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (a length every FFT library handles without padding up)."""
    n = max(int(n), 1)
    best = None
    p5 = 1
    while True:
        p35 = p5
        while True:
            m = p35
            while m < n:
                m *= 2
            best = m if best is None else min(best, m)
            if p35 >= n:
                break
            p35 *= 3
        if p5 >= n:
            break
        p5 *= 5
    return best


def band_edges_hz(centre_hz: Array, bandwidth_hz: Array, fs: float) -> tuple[Array, Array]:
    """(f1, f2) = centre -+ bandwidth / 2, clipped like the reference: an edge at or below 0 Hz
    becomes 1e-3 Hz, one at or above fs / 2 becomes fs / 2 - 1e-3 Hz."""
    f1 = centre_hz - bandwidth_hz / 2
    f2 = centre_hz + bandwidth_hz / 2
    f1 = jnp.where(f1 <= 0, EDGE_HZ, f1)
    f2 = jnp.where(f2 >= fs / 2, fs / 2 - EDGE_HZ, f2)
    return f1, f2


def firwin_bandstop(numtaps: Array, f1: Array, f2: Array, fs: float, max_taps: int) -> Array:
    """``scipy.signal.firwin(numtaps, [f1, f2], window='hamming', fs=fs)`` (pass_zero=True,
    scale=True) for an odd traced ``numtaps <= max_taps``: (max_taps,) taps, zeros after
    ``numtaps``.

    firwin sums ideal pass bands [0, c1] and [c2, 1] (c = f / (fs / 2)): ``c1 sinc(c1 m) +
    sinc(m) - c2 sinc(c2 m)`` with ``m = n - (numtaps - 1) / 2``, times a symmetric Hamming
    window, then scales to unit gain at DC (its first pass band starts at 0 Hz).
    """
    nyq = fs / 2
    c1, c2 = f1 / nyq, f2 / nyq
    n = jnp.arange(max_taps, dtype=jnp.float32)
    valid = n < numtaps
    alpha = (numtaps.astype(jnp.float32) - 1) / 2
    m = n - alpha  # integers for odd numtaps
    # sinc(m) of integer m is exactly the unit impulse (sin(pi m) in float32 is not exactly 0).
    h = c1 * jnp.sinc(c1 * m) + jnp.where(m == 0, 1.0, 0.0) - c2 * jnp.sinc(c2 * m)
    span = jnp.maximum(numtaps.astype(jnp.float32) - 1, 1.0)  # a 1-tap window is [1.0]
    window = jnp.where(numtaps > 1, 0.54 - 0.46 * jnp.cos(2 * jnp.pi * n / span), 1.0)
    h = jnp.where(valid, h * window, 0.0)
    return h / jnp.sum(h)


def cascade(stages: Array) -> Array:
    """(n_bands, max_taps) left-aligned stages -> (n_bands * (max_taps - 1) + 1,) their
    convolution, left-aligned (the reference's ``b = np.convolve(firwin(...), b)`` loop).

    As a product of spectra: an FFT at least as long as the result makes the circular
    convolution the linear one (a chain of small vmapped direct convolutions was ~10x slower
    on CPU: XLA lowers them as grouped convolutions).
    """
    n_bands, max_taps = stages.shape
    length = n_bands * (max_taps - 1) + 1
    nfft = fast_fft_length(length)
    spectrum = jnp.prod(jnp.fft.rfft(stages, n=nfft), axis=0)
    return jnp.fft.irfft(spectrum, n=nfft)[:length]


def freqz_peak(b: Array) -> Array:
    """max |H| of ``scipy.signal.freqz(b, 1)`` (512 points on [0, pi)), any length of ``b``.

    The points are bins 0..511 of a 1024-point DFT, so folding ``b`` modulo 1024 first gives
    the same values for taps longer than 1024 (where freqz evaluates the polynomial instead).
    """
    n = 2 * FREQZ_POINTS
    b = jnp.pad(b, (0, (-b.shape[0]) % n)).reshape(-1, n).sum(axis=0)
    return jnp.max(jnp.abs(jnp.fft.rfft(b, n=n)[:FREQZ_POINTS]))


def notch_filter(centre_hz: Array, bandwidth_hz: Array, numtaps: Array, gain_db: Array,
                 fs: float, max_taps: int) -> tuple[Array, Array]:
    """The reference's ``genNotchCoeffs`` for drawn parameters.

    Args:
      centre_hz, bandwidth_hz: (n_bands,) float32; numtaps: (n_bands,) odd int32 <= max_taps;
      gain_db: () float32.

    Returns:
      taps (n_bands * (max_taps - 1) + 1,) float32, zero after the first ``length``, scaled to
      a peak gain of 10^(gain_db / 20); length () int32 = sum(numtaps) - n_bands + 1.
    """
    f1, f2 = band_edges_hz(centre_hz, bandwidth_hz, fs)
    stages = jax.vmap(lambda c, a, b: firwin_bandstop(c, a, b, fs, max_taps))(numtaps, f1, f2)
    length = (jnp.sum(numtaps) - numtaps.shape[0] + 1).astype(jnp.int32)
    b = cascade(stages)
    b = jnp.where(jnp.arange(b.shape[0]) < length, b, 0.0)  # FFT round-off (~1e-8) past the end
    return 10.0 ** (gain_db / 20) * b / freqz_peak(b), length


def filter_spectrum(taps: Array, length: Array, nfft: int) -> Array:
    """rfft (nfft // 2 + 1,) complex64 of the taps advanced by the reference's trim
    ``(length + 1) // 2`` samples: multiplying a signal's spectrum by it and taking the first
    T samples of the inverse is ``filterFIR`` (needs ``nfft >= T + len(taps) - 1``)."""
    shift = (length + 1) // 2
    k = jnp.arange(nfft // 2 + 1, dtype=jnp.int32)
    # Exact integer phase index: (k * shift) mod nfft, then one float multiply.
    phase = (2 * jnp.pi / nfft) * ((k * shift) % nfft).astype(jnp.float32)
    return jnp.fft.rfft(taps, n=nfft) * jax.lax.complex(jnp.cos(phase), jnp.sin(phase))


def fir_filter(x: Array, taps: Array, length: Array) -> Array:
    """The reference's ``filterFIR(x, b)`` for (T,) ``x`` and padded taps of true ``length``:
    y[n] = sum_k b[k] x[n + (length + 1) // 2 - k], x = 0 outside [0, T). Returns (T,)."""
    t = x.shape[0]
    nfft = fast_fft_length(t + taps.shape[0] - 1)
    spec = jnp.fft.rfft(x, n=nfft) * filter_spectrum(taps, length, nfft)
    return jnp.fft.irfft(spec, n=nfft)[:t]
