"""Scoring logic with a fake model (``.logits`` + ``.config``) and tiny audio fixtures."""

import types

import numpy as np
import pytest
import soundfile as sf

from rawnet2_jax import scoring
from rawnet2_jax.scoring import (
    expand_inputs,
    log_odds,
    score_files,
    segments,
    spoof_probability,
    window_starts,
)

SR = 16000
T = 800  # tiny model window: 50 ms


class FakeModel:
    """log-odds of a row = 100 * mean(row); records the batch shapes it was called with."""

    def __init__(self, num_samples=T, pad_mode="zero", fail_on=None):
        self.config = types.SimpleNamespace(num_samples=num_samples, pad_mode=pad_mode, sample_rate=SR)
        self.shapes = []
        self.fail_on = fail_on

    def logits(self, x):
        x = np.asarray(x)
        assert x.dtype == np.float32 and x.ndim == 2
        self.shapes.append(x.shape)
        m = 100 * x.mean(axis=1, dtype=np.float64)
        out = np.stack([-m / 2, m / 2], axis=1).astype(np.float32)
        if self.fail_on is not None:
            out[np.isclose(x[:, 0], self.fail_on)] = np.nan
        return out


def _tone(n, level, sr=SR, channels=1):
    t = np.arange(n) / sr
    x = (0.1 * np.sin(2 * np.pi * 440 * t) + level).astype(np.float32)
    return x if channels == 1 else np.stack([x] * channels, axis=1)


@pytest.fixture()
def audio_dir(tmp_path):
    d = tmp_path / "audio"
    (d / "sub" / ".hidden").mkdir(parents=True)
    sf.write(d / "pos.wav", _tone(1200, 0.2), SR, subtype="PCM_16")
    sf.write(d / "sub" / "neg.flac", _tone(900, -0.2, sr=8000, channels=2), 8000)  # 8 kHz stereo
    sf.write(d / "sub" / ".hidden" / "x.wav", _tone(1200, 0.2), SR)
    (d / "notes.txt").write_text("not audio")
    return d


def test_helpers():
    assert np.allclose(log_odds([[0.0, 2.0], [3.0, 1.0]]), [2.0, -2.0])
    z = np.array([-800.0, -2.0, 0.0, 2.0, 800.0])
    p = spoof_probability(z)
    softmax0 = [1 / (1 + np.exp(v)) if abs(v) < 50 else (1.0 if v < 0 else 0.0) for v in z]
    assert np.allclose(p, softmax0) and np.all(np.isfinite(p))
    assert spoof_probability(0.0) == 0.5
    with pytest.raises(ValueError):
        log_odds(np.zeros((2, 3)))


def test_window_starts_and_segments():
    assert window_starts(500, 800, 800) == [0]
    assert window_starts(800, 800, 800) == [0]
    assert window_starts(2000, 800, 800) == [0, 800, 1200]  # last window aligned to the end
    assert window_starts(1600, 800, 400) == [0, 400, 800]
    x = np.arange(2000, dtype=np.float32)
    seg = segments(x, 800, "zero")
    assert seg.shape == (1, 800) and seg[0, -1] == 799
    w = segments(x, 800, "zero", windows=True)
    assert w.shape == (3, 800) and w[2, -1] == 1999
    short = segments(np.ones(300, np.float32), 800, "repeat", windows=True)
    assert short.shape == (1, 800) and short.min() == 1.0
    assert segments(np.ones(300, np.float32), 800, "zero")[0, 300:].max() == 0.0


def test_expand_inputs_recursive_and_ordered(audio_dir, tmp_path):
    explicit = tmp_path / "odd.name"
    explicit.write_bytes(b"x")
    entries = expand_inputs([audio_dir, tmp_path / "missing.wav", explicit, audio_dir / "pos.wav"])
    paths = [p for p, _ in entries]
    assert paths[0].endswith("pos.wav") and paths[1].endswith("neg.flac")
    assert not any(".hidden" in p or p.endswith(".txt") for p in paths)
    assert entries[2][1] is not None and "no such file" in entries[2][1]
    assert entries[3] == (str(explicit), None)  # explicit files are tried whatever the extension
    assert len(entries) == 4  # duplicate pos.wav dropped
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    assert "no audio files" in expand_inputs([empty])[0][1]


def test_score_files_values_and_fixed_batch_shape(audio_dir):
    model = FakeModel()
    res = score_files(model, [audio_dir], batch_size=4, progress=False)
    assert [r.ok for r in res] == [True, True]
    pos, neg = res
    assert pos.log_odds > 0 > neg.log_odds
    assert pos.spoof_probability == pytest.approx(1 / (1 + np.exp(pos.log_odds)))
    assert neg.duration_s == pytest.approx(900 / 8000, rel=1e-2)  # resampled to 16 kHz
    assert all(s == (4, T) for s in model.shapes)  # padded to the batch size: one jit shape
    # The first-segment score equals the model on fit_length(audio) directly.
    from rawnet2_jax.audio import fit_length, load_audio

    x = fit_length(load_audio(audio_dir / "pos.wav"), T, "zero")[None]
    want = log_odds(FakeModel().logits(np.concatenate([x, np.zeros((3, T), np.float32)])))[0]
    assert pos.log_odds == pytest.approx(want, rel=1e-6)


def test_windows_average_log_odds(tmp_path):
    # Two halves with opposite sign: first window positive, whole-file average ~ 0.
    x = np.concatenate([np.full(T, 0.3, np.float32), np.full(T, -0.3, np.float32)])
    sf.write(tmp_path / "half.wav", x, SR, subtype="FLOAT")
    model = FakeModel()
    # Constant halves are "degenerate" audio: allowed here, where only the arithmetic matters.
    first = score_files(model, [tmp_path / "half.wav"], batch_size=3, progress=False, allow_degenerate=True)[0]
    win = score_files(model, [tmp_path / "half.wav"], windows=True, batch_size=3, progress=False)[0]
    assert first.num_windows == 1 and first.log_odds == pytest.approx(30, rel=1e-5)
    assert win.num_windows == 2 and win.log_odds == pytest.approx(0, abs=1e-4)
    hop = score_files(model, [tmp_path / "half.wav"], windows=True, hop_seconds=T / 2 / SR, progress=False,
                      allow_degenerate=True)[0]
    assert hop.num_windows == 3


def test_many_files_spanning_batches(tmp_path):
    levels = np.linspace(-0.4, 0.4, 8)  # no 0: silent files are refused
    for i, lv in enumerate(levels):
        sf.write(tmp_path / f"f{i}.wav", np.full(T * (1 + i % 3), lv, np.float32), SR, subtype="FLOAT")
    model = FakeModel()
    res = score_files(model, [tmp_path], windows=True, batch_size=4, progress=False, allow_degenerate=True)
    assert [r.num_windows for r in res] == [1 + i % 3 for i in range(8)]
    assert np.allclose([r.log_odds for r in res], 100 * levels, atol=1e-3)
    assert all(s == (4, T) for s in model.shapes) and len(model.shapes) == 4  # 15 rows -> 4 calls


def test_bad_files_reported_others_scored(audio_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    (bad / "empty.wav").write_bytes(b"")
    sf.write(bad / "nan.wav", np.array([0.1, np.nan, 0.2] * 100, np.float32), SR, subtype="FLOAT")
    sf.write(bad / "zero_len.wav", np.zeros(0, np.float32), SR)
    sf.write(bad / "silent.wav", np.zeros(SR // 10, np.float32), SR)
    errors = []
    res = score_files(
        FakeModel(),
        [bad, tmp_path / "missing.wav", audio_dir / "pos.wav"],
        progress=False,
        on_error=lambda fs: errors.append(fs.error),
    )
    by_name = {r.path.rsplit("/", 1)[-1]: r for r in res}
    assert by_name["pos.wav"].ok
    for name in ("corrupt.wav", "empty.wav", "nan.wav", "zero_len.wav", "silent.wav", "missing.wav"):
        r = by_name[name]
        assert not r.ok and name in r.error and "\n" not in r.error, (name, r.error)
        assert r.log_odds is None
    assert "NaN" in by_name["nan.wav"].error
    assert len(errors) == 6


def test_model_nan_marks_only_that_file(tmp_path):
    sf.write(tmp_path / "a.wav", np.full(T, 0.25, np.float32), SR, subtype="FLOAT")
    sf.write(tmp_path / "b.wav", np.full(T, 0.5, np.float32), SR, subtype="FLOAT")
    res = score_files(FakeModel(fail_on=0.5), [tmp_path], progress=False, allow_degenerate=True)
    assert res[0].ok and not res[1].ok and "non-finite" in res[1].error


def test_model_exception_marks_files_and_continues(tmp_path):
    sf.write(tmp_path / "a.wav", np.full(T, 0.25, np.float32), SR, subtype="FLOAT")

    class Broken(FakeModel):
        def logits(self, x):
            raise RuntimeError("device lost\nsecond line")

    res = score_files(Broken(), [tmp_path / "a.wav"], progress=False, allow_degenerate=True)
    assert not res[0].ok and "device lost" in res[0].error and "second line" not in res[0].error


def test_bad_arguments():
    with pytest.raises(scoring.UserError):
        score_files(FakeModel(), [], batch_size=0, progress=False)
    with pytest.raises(scoring.UserError):
        score_files(FakeModel(), [], windows=True, hop_seconds=0, progress=False)


def test_silent_file_fails_unless_allowed(tmp_path):
    """A silent file is a one-line failure by default and is scored with allow_silent."""
    import soundfile as sf

    from rawnet2_jax import scoring as sc

    class _Fake:
        config = type("C", (), {"num_samples": 800, "pad_mode": "zero", "sample_rate": 16000})()

        def logits(self, x):
            return np.stack([np.zeros(len(x)), np.asarray(x).mean(axis=1)], axis=1)

    sf.write(tmp_path / "silent.wav", np.zeros(1600, dtype=np.float32), 16000)
    failed = sc.score_files(_Fake(), [tmp_path / "silent.wav"], batch_size=2, progress=False)
    assert failed[0].error is not None and "silent" in failed[0].error and "--allow-silent" in failed[0].error
    allowed = sc.score_files(_Fake(), [tmp_path / "silent.wav"], batch_size=2, progress=False, allow_silent=True)
    assert allowed[0].error is None and allowed[0].log_odds == 0.0


# ----------------------------------------------------------------------------- a tiny 2019 LA split (for split tests)


def _records(n_bona=6, attacks=("A07", "A08"), n_each=5, seed=0):
    from rawnet2_jax.audio import float_to_pcm16

    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n_bona):
        x = rng.normal(0.1, 0.05, T + 100 * i)
        recs.append({"audio": float_to_pcm16(x).tobytes(), "label": 1, "attack": b"-", "utt_id": f"LA_E_b{i}".encode()})
    for a_i, attack in enumerate(attacks):
        for j in range(n_each):
            x = rng.normal(-0.05 * (a_i + 1) + 0.02 * j, 0.05, T - 50 * j)
            recs.append({"audio": float_to_pcm16(x).tobytes(), "label": 0, "attack": attack.encode(),
                         "utt_id": f"LA_E_{attack}_{j}".encode()})
    return recs
