"""rawnet2_jax.data.synth: the one speech-like generator (demo corpus, convert --verify, tests)."""

import numpy as np

from rawnet2_jax.data import synth


def test_speech_like_shape_level_and_determinism():
    x = synth.speech_like(8000, batch=3, seed=4)
    assert x.shape == (3, 8000) and x.dtype == np.float32
    np.testing.assert_allclose(np.abs(x).max(axis=1), 0.5, rtol=1e-6)
    assert np.array_equal(x, synth.speech_like(8000, batch=3, seed=4))
    # a row depends on (seed, row) only: a single signal is row 0, a larger batch keeps its first rows
    assert np.array_equal(synth.speech_like(8000, seed=4), x[0])
    assert np.array_equal(synth.speech_like(8000, batch=5, seed=4)[:3], x)
    assert not np.allclose(x[0], x[1]) and not np.allclose(x[0], synth.speech_like(8000, seed=5))


def test_speech_like_has_the_structure_of_speech():
    x = synth.speech_like(32000, batch=4, seed=0).astype(np.float64)
    spec = np.abs(np.fft.rfft(x, axis=1)) ** 2
    freqs = np.fft.rfftfreq(x.shape[1], 1 / synth.SR)
    # coloured, not white: most energy below 4 kHz, but fricatives keep some above it
    low = spec[:, freqs < 4000].sum(1) / spec.sum(1)
    assert np.all(low > 0.7) and np.all(low < 0.999), low
    # harmonic: a sharp spectral peak in the f0 range (power far above the median in the band)
    band = (freqs > 80) & (freqs < 300)
    assert np.all(spec[:, band].max(1) > 50 * np.median(spec[:, band], axis=1))
    # non-stationary: 20 ms frame energies vary by more than 20 dB (syllables and pauses)
    frames = x[:, : 32000 // 320 * 320].reshape(4, -1, 320)
    energy_db = 10 * np.log10((frames**2).mean(-1) + 1e-12)
    assert np.all(np.percentile(energy_db, 95, axis=1) - np.percentile(energy_db, 5, axis=1) > 20)
    assert np.all(np.abs(x.mean(1)) < 0.01)  # no DC offset


def test_other_sample_rates():
    # the fricative band is capped below Nyquist (scipy's butter refuses an edge at or above it)
    x = synth.speech_like(4000, batch=2, seed=1, sample_rate=8000)
    assert x.shape == (2, 4000) and np.isfinite(x).all()
    np.testing.assert_allclose(np.abs(x).max(axis=1), 0.5, rtol=1e-6)
