"""Speech-like test signals: the one generator behind the demo corpus, ``convert --verify``
and the tests.

:func:`voiced_speech` is a small source-filter synthesiser: a glottal pulse train whose f0
follows declination, per-syllable accents, slow drift and jitter, plus aspiration noise,
through five vowel formant resonators that change per syllable, under syllable envelopes
with pauses, and band-passed noise bursts at some syllable onsets (fricatives). Each
:class:`Speaker` has its own f0, vocal-tract scale and speaking rate. Its switches produce
the demo corpus's vocoder-like attacks (``rawnet2_jax.data.demo``).

:func:`speech_like` wraps it for code that just needs realistic audio: a deterministic
float32 ``(T,)`` or ``(B, T)`` batch, a different speaker per row, peak 0.5. Unlike white
noise it has a harmonic, strongly coloured, non-stationary spectrum, which is what exercises
the sinc filters, the BatchNorm statistics and the GRU the way real speech does.

Everything is vectorised numpy/scipy (the only Python loops run over syllables).
"""

from __future__ import annotations

import dataclasses

import numpy as np

SR = 16000

# Vowel formants (Hz) of an adult male vocal tract: F1..F5.
_VOWELS = np.array(
    [
        [730, 1090, 2440, 3400, 4500],  # a
        [530, 1840, 2480, 3500, 4600],  # e
        [270, 2290, 3010, 3700, 4700],  # i
        [570, 840, 2410, 3300, 4400],  # o
        [300, 870, 2240, 3300, 4400],  # u
        [660, 1720, 2410, 3400, 4500],  # ae
        [490, 1350, 1690, 3300, 4500],  # er
    ],
    dtype=np.float64,
)
_BANDWIDTHS = np.array([80.0, 100.0, 140.0, 200.0, 300.0])


@dataclasses.dataclass(frozen=True)
class Speaker:
    f0: float  # mean f0 (Hz)
    tract: float  # formant scale (1 = adult male, ~1.2 female)
    rate: float  # syllables per second


def random_speaker(rng: np.random.Generator, female: bool) -> Speaker:
    """A speaker with a typical male or female f0 range and vocal-tract scale."""
    return Speaker(
        f0=float(rng.uniform(190, 240) if female else rng.uniform(95, 140)),
        tract=float(rng.uniform(1.12, 1.25) if female else rng.uniform(0.95, 1.05)),
        rate=float(rng.uniform(3.5, 5.5)),
    )


def resonator_sos(freqs: np.ndarray, bws: np.ndarray, sr: int = SR) -> np.ndarray:
    """Cascade of 2-pole resonators (unit gain at DC), as second-order sections."""
    r = np.exp(-np.pi * bws / sr)
    theta = 2 * np.pi * freqs / sr
    a1, a2 = -2 * r * np.cos(theta), r**2
    g = 1 + a1 + a2
    sos = np.zeros((len(freqs), 6))
    sos[:, 0], sos[:, 3], sos[:, 4], sos[:, 5] = g, 1.0, a1, a2
    return sos


def _syllables(rng: np.random.Generator, spk: Speaker, n: int, sr: int) -> list[tuple[int, int]]:
    """(start, end) samples of each syllable; mostly short gaps, some pauses."""
    bounds, pos = [], 0
    while pos < n:
        dur = int(sr * rng.uniform(0.6, 1.4) / spk.rate)
        gap = int(sr * (rng.uniform(0.08, 0.25) if rng.random() < 0.2 else rng.uniform(0.0, 0.03)))
        bounds.append((pos, min(n, pos + dur)))
        pos += dur + gap
    return bounds


def _f0_contour(rng, spk: Speaker, bounds, t: np.ndarray, *, monotone: bool, smooth: bool) -> np.ndarray:
    """Declination + per-syllable accents + slow drift + jitter (or a flat f0 if monotone)."""
    n = len(t)
    if monotone:
        return np.full(n, spk.f0)
    f0 = spk.f0 * (1.1 - 0.2 * t / max(t[-1], 1e-3))
    acc = np.zeros(n)
    for a, b in bounds:
        acc[a:b] = rng.normal(0, 0.08)
    acc = np.convolve(acc, np.hanning(801) / np.hanning(801).sum(), mode="same")
    drift = 0.03 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t + rng.uniform(0, 6.3))
    f0 = f0 * (1 + (acc if not smooth else 0.3 * acc) + drift)
    if not smooth:
        f0 = f0 * (1 + rng.normal(0, 0.004, n))
    return f0


def voiced_speech(rng: np.random.Generator, spk: Speaker, n: int, *, monotone=False, breathy=True,
                  smooth=False, buzzy=False, sr: int = SR) -> np.ndarray:
    """Synthetic speech of n samples (float64, peak about 1).

    ``monotone``: flat f0. ``breathy``: aspiration noise in the excitation. ``smooth``: wide
    formants and a flattened f0 (over-smoothed parametric TTS). ``buzzy``: a bare
    impulse-train excitation without the glottal spectral tilt, the classic artefact of simple
    pulse/noise vocoders (flat, harsh harmonics up to Nyquist).
    """
    from scipy import signal

    t = np.arange(n) / sr
    bounds = _syllables(rng, spk, n, sr)
    f0 = _f0_contour(rng, spk, bounds, t, monotone=monotone, smooth=smooth)
    phase = np.cumsum(f0 / sr)
    pulses = np.diff(np.floor(phase), prepend=0.0)  # one impulse per glottal cycle
    # Glottal flow derivative: lowpass (tilt) then differentiate (lip radiation).
    exc = pulses if buzzy else np.diff(signal.lfilter([1.0], [1.0, -1.9, 0.9025], pulses), prepend=0.0)
    exc /= np.max(np.abs(exc)) + 1e-9
    if breathy:
        exc += 0.08 * rng.standard_normal(n) * (0.5 + 0.5 * np.cos(2 * np.pi * phase))
    out = np.zeros(n)
    bw_scale = 3.0 if smooth else 1.0
    for a, b in bounds:
        v = _VOWELS[rng.integers(len(_VOWELS))] * spk.tract * rng.uniform(0.95, 1.05, 5)
        v = np.minimum(v, 0.45 * sr)
        seg = signal.sosfilt(resonator_sos(v, _BANDWIDTHS * bw_scale, sr), exc[a:b])
        m = b - a
        env = np.sin(np.pi * np.arange(m) / max(m, 1)) ** 0.7
        out[a:b] = seg * env * rng.uniform(0.6, 1.0)
    out /= np.max(np.abs(out)) + 1e-9
    _add_fricatives(rng, out, bounds, sr)
    return out


def _add_fricatives(rng: np.random.Generator, out: np.ndarray, bounds, sr: int) -> None:
    """Band-passed noise bursts at some syllable onsets, added in place."""
    from scipy import signal

    n = len(out)
    lo = rng.uniform(2500, 3500)
    sos = signal.butter(4, [lo, min(7000.0, 0.45 * sr)], btype="bandpass", fs=sr, output="sos")
    fric = signal.sosfilt(sos, rng.standard_normal(n))
    fric /= np.max(np.abs(fric)) + 1e-9
    for a, _ in bounds:
        if rng.random() < 0.6:
            m = min(n - a, int(sr * rng.uniform(0.04, 0.12)))
            out[a : a + m] += fric[a : a + m] * np.hanning(m) * rng.uniform(0.15, 0.4)


def speech_like(num_samples: int, batch: int | None = None, seed: int = 0,
                sample_rate: int = SR) -> np.ndarray:
    """Deterministic float32 speech over a faint noise floor, ``(num_samples,)`` or
    ``(batch, num_samples)``, peak 0.5.

    Row ``r`` is a function of ``(seed, r)`` only (a longer batch keeps its first rows), each
    with its own male or female speaker.
    """
    rows = 1 if batch is None else batch
    out = np.empty((rows, int(num_samples)), np.float32)
    for r in range(rows):
        rng = np.random.default_rng([seed, r])
        spk = random_speaker(rng, female=bool(rng.integers(2)))
        x = voiced_speech(rng, spk, int(num_samples), sr=sample_rate)
        # A faint noise floor (-50 dB) as every recording has: no stretch is digital silence,
        # whose exact zeros would put ties into max-pools and inputs onto the ReLU kinks.
        x = x + rng.normal(0, 10 ** (-50 / 20), x.shape)
        out[r] = 0.5 * x / (np.max(np.abs(x)) + 1e-9)
    return out[0] if batch is None else out
