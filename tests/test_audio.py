import warnings

import numpy as np
import pytest
import soundfile as sf

from rawnet2_jax import audio
from rawnet2_jax.audio import SilentAudioWarning, fit_length, load_audio, read_audio
from rawnet2_jax.errors import AudioError, UserError


def _tone(sr, seconds=0.5, freq=1000.0, amp=0.5, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = amp * np.sin(2 * np.pi * freq * t)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


def _peak_freq(x, sr):
    w = np.hanning(len(x))
    spec = np.abs(np.fft.rfft(x * w))
    return np.argmax(spec) * sr / len(x)


@pytest.mark.parametrize(
    "fmt,subtype,tol",
    [
        ("WAV", "PCM_U8", 1e-2),
        ("WAV", "PCM_16", 1e-4),
        ("WAV", "PCM_24", 1e-6),
        ("WAV", "PCM_32", 1e-6),
        ("WAV", "FLOAT", 1e-7),
        ("FLAC", "PCM_16", 1e-4),
        ("FLAC", "PCM_24", 1e-6),
        ("OGG", "VORBIS", None),
        ("MP3", "MPEG_LAYER_III", None),
    ],
)
def test_formats_decode(tmp_path, fmt, subtype, tol):
    if fmt not in sf.available_formats() or subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"libsndfile here cannot write {fmt}/{subtype}")
    x = _tone(16000, 0.5, 440.0, 0.5)
    p = tmp_path / f"a.{fmt.lower()}"
    sf.write(p, x, 16000, format=fmt, subtype=subtype)
    y = load_audio(p)
    assert y.dtype == np.float32 and y.ndim == 1
    if tol is not None:
        assert y.shape == x.shape
        np.testing.assert_allclose(y, x, atol=tol)
    else:  # lossy: frequency and level survive, length within a frame
        assert abs(len(y) - len(x)) < 2000
        assert abs(_peak_freq(y, 16000) - 440) < 10
        assert abs(np.sqrt(np.mean(y**2)) - 0.5 / np.sqrt(2)) < 0.05


def test_stereo_downmix_is_mean(tmp_path):
    left, right = _tone(16000, 0.2, 300, 0.4), _tone(16000, 0.2, 700, 0.2)
    p = tmp_path / "s.wav"
    sf.write(p, np.stack([left, right], 1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(p), (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("sr", [44100, 8000, 22050, 48000])
def test_resample_keeps_frequency_and_level(tmp_path, sr):
    p = tmp_path / "t.wav"
    sf.write(p, _tone(sr, 1.0, 1000.0, 0.5), sr, subtype="FLOAT")
    y = load_audio(p, sample_rate=16000)
    assert abs(len(y) - 16000) <= 1
    assert abs(_peak_freq(y, 16000) - 1000.0) < 2.0
    mid = y[2000:-2000]
    assert abs(np.sqrt(np.mean(mid**2)) - 0.5 / np.sqrt(2)) < 0.005
    assert abs(np.max(np.abs(mid)) - 0.5) < 0.01


def test_resample_uses_soxr():
    import soxr

    x = _tone(44100, 0.1).astype(np.float32)
    np.testing.assert_array_equal(audio.resample(x, 44100, 16000), soxr.resample(x, 44100, 16000, quality="HQ"))


# ---- bad input: one line, naming the file ----------------------------------------------


def _assert_one_line(err, path):
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    assert isinstance(err.value, UserError)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match="not found") as e:
        load_audio(p)
    _assert_one_line(e, p)


def test_directory(tmp_path):
    with pytest.raises(AudioError, match="not a regular file"):
        load_audio(tmp_path)


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    with pytest.raises(AudioError, match="empty") as e:
        load_audio(p)
    _assert_one_line(e, p)


def test_corrupt_file(tmp_path):
    p = tmp_path / "junk.flac"
    p.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(AudioError, match="cannot read audio") as e:
        load_audio(p)
    _assert_one_line(e, p)


def test_truncated_flac(tmp_path):
    p = tmp_path / "cut.flac"
    sf.write(p, _tone(16000, 1.0), 16000, subtype="PCM_16")
    data = p.read_bytes()
    p.write_bytes(data[:60])  # header only, no frames
    with pytest.raises(AudioError) as e:
        load_audio(p)
    _assert_one_line(e, p)


def test_a_dataset_refuses_a_cut_off_wav(tmp_path):
    """load_pcm16 (the builders') refuses what load_audio (scoring) reads with a note."""
    from rawnet2_jax import audio

    for name, rate in (("direct.wav", 16000), ("resampled.wav", 22050)):  # both of load_pcm16's paths
        p = tmp_path / name
        sf.write(p, _tone(rate, 1.0), rate, subtype="PCM_16")
        p.write_bytes(p.read_bytes()[: 44 + rate // 2])  # half of the data chunk
        with pytest.raises(AudioError, match=r"promises 1\.00 s but the file holds 0\.2[45] s .*re-extract it") as e:
            audio.load_pcm16(p)
        _assert_one_line(e, p)
        assert load_audio(p).size > 0  # scoring reads what is there


def test_a_dataset_warns_of_a_file_under_a_tenth_of_a_second(tmp_path):
    from rawnet2_jax import audio

    p = tmp_path / "three.flac"
    sf.write(p, _tone(16000, 1.0)[:3], 16000, subtype="PCM_16")
    with pytest.warns(audio.ShortAudioWarning, match=r"three.flac: only 3 samples \(0\.2 ms\), stored as they are"):
        assert audio.load_pcm16(p).size == 3
    sf.write(p, _tone(16000, 1.0)[:1600], 16000, subtype="PCM_16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert audio.load_pcm16(p).size == 1600


def test_zero_length_wav(tmp_path):
    p = tmp_path / "zero.wav"
    sf.write(p, np.zeros((0,)), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match="zero samples") as e:
        load_audio(p)
    _assert_one_line(e, p)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf(tmp_path, bad):
    x = _tone(16000, 0.1).astype(np.float32)
    x[100] = bad
    p = tmp_path / "bad.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN/Inf") as e:
        load_audio(p)
    _assert_one_line(e, p)


def test_all_nan(tmp_path):
    p = tmp_path / "nan.wav"
    sf.write(p, np.full(800, np.nan, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="800 NaN/Inf"):
        load_audio(p)


def test_silent_error_warn_ignore(tmp_path):
    p = tmp_path / "silent.wav"
    sf.write(p, np.zeros(1600), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match="silent") as e:
        load_audio(p)
    _assert_one_line(e, p)
    with pytest.warns(SilentAudioWarning, match="silent"):
        y = load_audio(p, on_silent="warn")
    assert y.shape == (1600,) and not y.any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_audio(p, on_silent="ignore")


def test_too_long_checked_before_decoding(tmp_path, monkeypatch):
    p = tmp_path / "long.wav"
    sf.write(p, _tone(16000, 3.0), 16000, subtype="PCM_16")

    def no_decode(*a, **k):
        raise AssertionError("decoded a file whose header is over the cap")

    monkeypatch.setattr(audio.sf, "read", no_decode)
    with pytest.raises(AudioError, match="over the 2 s limit") as e:
        load_audio(p, max_seconds=2.0)
    _assert_one_line(e, p)


def test_long_ok_without_cap(tmp_path):
    p = tmp_path / "long.wav"
    sf.write(p, _tone(8000, 3.0), 8000, subtype="PCM_16")
    assert load_audio(p, max_seconds=None).shape == (48000,)


# ---- fit_length ----------------------------------------------------------------------


def _official_pad(x, max_len):
    # The eurecom recipe (main.py `pad`), restated: head cut or tile.
    if len(x) >= max_len:
        return x[:max_len]
    return np.tile(x, (1, max_len // len(x) + 1))[:, :max_len][0]


@pytest.mark.parametrize("n", [1, 7, 100, 333, 1000, 1500])
def test_repeat_matches_official(n):
    x = np.arange(n, dtype=np.float32) + 1
    np.testing.assert_array_equal(fit_length(x, 1000, "repeat"), _official_pad(x, 1000))


def test_zero_pad_and_cut():
    x = np.arange(1, 6, dtype=np.float32)
    np.testing.assert_array_equal(fit_length(x, 8, "zero"), [1, 2, 3, 4, 5, 0, 0, 0])
    np.testing.assert_array_equal(fit_length(x, 3, "zero"), [1, 2, 3])
    np.testing.assert_array_equal(fit_length(x, 3, "repeat"), [1, 2, 3])
    np.testing.assert_array_equal(fit_length(x, 12, "repeat"), [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2])
    assert fit_length(x, 8).dtype == np.float32
    with pytest.raises(ValueError):
        fit_length(x, 8, "reflect")
    with pytest.raises(AudioError):
        fit_length(np.zeros(0), 8, "repeat")


def test_pcm16_roundtrip_matches_soundfile(tmp_path):
    pcm = (np.random.default_rng(0).standard_normal(1000) * 5000).astype(np.int16)
    p = tmp_path / "x.flac"
    sf.write(p, pcm, 16000, subtype="PCM_16")
    ref, _ = sf.read(p, dtype="float32")
    np.testing.assert_array_equal(audio.pcm16_to_float(pcm.tobytes()), ref)
    np.testing.assert_array_equal(audio.float_to_pcm16(audio.pcm16_to_float(pcm)), pcm)
    np.testing.assert_array_equal(audio.load_pcm16(p), pcm)


def test_messages_say_which_samples_they_checked(tmp_path):
    """A scored part is not "all" of a file; a stereo file is judged by its channels' mean."""
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(48000, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError) as e:
        read_audio(long, head_samples=24000)
    assert "the 24000 samples read, the part scored, are zero" in str(e.value) and "all 24000" not in str(e.value)
    with pytest.raises(AudioError, match="all 48000 samples are zero"):
        read_audio(long)
    cancel = tmp_path / "cancel.wav"
    tone = np.sin(np.arange(1600) / 10).astype(np.float32)
    sf.write(cancel, np.stack([tone, -tone], 1), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="after averaging its 2 channels"):
        read_audio(cancel)
