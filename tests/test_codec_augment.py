"""Codec / channel augmentation (rawnet2_jax.augment.codec) and its wiring into the pipeline,
the training config, the demo corpus's --eval-channel variant and metrics --conditions."""

from __future__ import annotations

import types

import numpy as np
import pytest

from rawnet2_jax.augment import codec as C
from rawnet2_jax.data.pipeline import train_batches

SR = 16000


def _voice(n: int = 8000, seed: int = 0) -> np.ndarray:
    """Harmonics of 150 Hz up to 7.5 kHz under a 4 Hz envelope, plus faint noise (peak 0.8)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    x = sum(0.1 / k * np.sin(2 * np.pi * 150 * k * t + rng.uniform(0, 6.3)) for k in range(1, 50))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return (x / np.abs(x).max() * 0.8 + 0.01 * rng.standard_normal(n)).astype(np.float32)


def _band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.shape[0]))) ** 2  # windowed: no leakage across 4 kHz
    f = np.fft.rfftfreq(x.shape[0], 1 / SR)
    return float(spec[(f >= lo) & (f < hi)].sum())


def _snr_db(x: np.ndarray, y: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum((y - x).astype(np.float64) ** 2)))


X = _voice(4000)


@pytest.fixture(scope="module")
def outputs() -> dict[str, np.ndarray]:
    return {name: C.apply_codec(X, name) for name in C.available_codecs()}


def test_every_codec_round_trip_keeps_length_rate_and_changes_the_signal(outputs):
    assert set(C.available_codecs()) >= {"vorbis", "opus", "gsm", "mulaw", "alaw", "g721", "telephone"}
    for name, y in outputs.items():
        assert y.dtype == np.float32 and y.shape == X.shape, (name, y.dtype, y.shape)
        assert np.all(np.isfinite(y)), name
        snr = _snr_db(X, y)
        # Changed measurably, yet still the same (aligned) signal: no codec delay left in
        # (codec delays are hundreds of samples; +-2 allows a 10 kbit/s codec's phase error).
        assert 3.0 < snr < 60.0, f"{name}: SNR {snr:.2f} dB"
        lag = int(np.argmax(np.correlate(y, X, "full"))) - (X.shape[0] - 1)
        assert abs(lag) <= 2, f"{name}: output shifted by {lag} samples"


def test_odd_lengths_are_kept():
    for name in C.available_codecs():
        for n in (1, 1601):
            assert C.apply_codec(_voice(n), name).shape == (n,), (name, n)


@pytest.mark.parametrize("name", ["telephone", "gsm"])
def test_8khz_channels_remove_the_band_above_4khz(outputs, name):
    y = outputs[name]
    above = _band_energy(y, 4100, 8000) / _band_energy(X, 4100, 8000)
    below = _band_energy(y, 200, 3400) / _band_energy(X, 200, 3400)
    assert above < 1e-3, f"{name}: {above:.2e} of the energy above 4.1 kHz left"
    assert 0.5 < below < 1.5, f"{name}: energy below 3.4 kHz scaled by {below:.3f}"


def test_telephone_band_is_otherwise_transparent(outputs):
    # soxr's HQ low-pass passes the 0..3.4 kHz band almost untouched: compare with an ideal
    # brick-wall low-pass of the same signal at 4 kHz.
    spec = np.fft.rfft(X.astype(np.float64))
    spec[np.fft.rfftfreq(X.shape[0], 1 / SR) >= 3400] = 0
    ref_lo = np.fft.irfft(spec, n=X.shape[0])
    spec_y = np.fft.rfft(outputs["telephone"].astype(np.float64))
    spec_y[np.fft.rfftfreq(X.shape[0], 1 / SR) >= 3400] = 0
    got_lo = np.fft.irfft(spec_y, n=X.shape[0])
    err = np.max(np.abs(got_lo - ref_lo)[200:-200])
    assert err < 1e-2, f"telephone band 0..3.4 kHz changed by up to {err:.2e}"


@pytest.mark.parametrize("name", ["mulaw", "alaw"])
def test_g711_quantisation_error_is_bounded(outputs, name):
    # G.711 has 16 steps per doubling of the magnitude: half a step is |x| / 32 in the
    # companded range; near zero the steps are uniform, A-law's 2 / 4096 of full scale.
    err = np.abs(outputs[name] - X)
    bound = np.abs(X) / 32 + 1 / 2048
    worst = float(np.max(err / bound))
    assert worst <= 1.0, f"{name}: error up to {worst:.3f} x the half-step bound"
    assert float(np.max(err)) > 1e-4, f"{name}: no quantisation at all"


@pytest.mark.parametrize("law", ["mulaw", "alaw"])
def test_numpy_g711_is_bit_exact_with_libsndfile(law):
    # Every quantiser index, both sides of each rounding boundary (ties go to even), both
    # signs, -0.0, full scale, beyond full scale and a random sweep, against libsndfile's own
    # WAV ULAW / ALAW round trip of the same floats.
    scale = float(C._G711_INDEX_SCALE[law])
    k = np.arange(int(scale) + 2)
    tie = ((k + 0.5) / scale).astype(np.float32)
    x = np.concatenate([k / scale, tie, np.nextafter(tie, 0), np.nextafter(tie, 2)]).astype(np.float32)
    rand = np.random.default_rng(0).uniform(-1.2, 1.2, 50000).astype(np.float32)
    x = np.concatenate([x, -x, rand, X, np.float32([-0.0, 0.0, 1.0, -1.0, 1.5, -1.5])])
    ref = C._sndfile_round_trip(x, C._SNDFILE_CODECS[law])
    got = C.g711_round_trip(x, law)
    assert got.dtype == np.float32
    bad = np.flatnonzero(got != ref)
    assert bad.size == 0, (f"{law}: {bad.size} of {x.size} samples differ from libsndfile, first at "
                           f"x={x[bad[0]]!r}: {got[bad[0]] * 32768} vs {ref[bad[0]] * 32768} (x 32768)")
    assert np.array_equal(C.apply_codec(X, law), C.g711_round_trip(X, law))


def test_low_bitrate_codecs_lose_more_than_high(outputs):
    if "mp3_low" in outputs:
        assert _snr_db(X, outputs["mp3_low"]) + 3 < _snr_db(X, outputs["mp3_high"])
    assert _snr_db(X, outputs["g721"]) < _snr_db(X, outputs["mulaw"])  # 4 bits vs 8 bits per sample


def test_round_trips_are_deterministic(outputs):
    for name, y in outputs.items():
        assert np.array_equal(C.apply_codec(X, name), y), name


def test_unknown_and_bad_config_are_one_line_errors():
    with pytest.raises(C.CodecError, match="unknown codec 'aac'"):
        C.CodecAugConfig(prob=0.5, codecs=("aac",))
    with pytest.raises(C.CodecError, match=r"\[0, 1\]"):
        C.CodecAugConfig(prob=1.5)
    with pytest.raises(C.CodecError, match="at least one"):
        C.CodecAugConfig(prob=0.5, codecs=())
    with pytest.raises(C.CodecError, match="unknown codec"):
        C.apply_codec(X, "g722")


@pytest.mark.slow
def test_draw_is_a_function_of_seed_epoch_utterance_and_respects_prob():
    cfg = C.CodecAugConfig(prob=0.5)
    draws = [C.draw_codec(cfg, 3, 1, u) for u in range(3000)]
    assert draws == [C.draw_codec(cfg, 3, 1, u) for u in range(3000)]
    hit = np.mean([d != "" for d in draws])
    assert abs(hit - 0.5) < 4 * np.sqrt(0.25 / 3000), hit  # 4 sigma
    counts = np.array([draws.count(c) for c in cfg.codecs])
    expect = 1500 / len(cfg.codecs)
    assert np.all(np.abs(counts - expect) < 5 * np.sqrt(expect)), dict(zip(cfg.codecs, counts))
    other_epoch = [C.draw_codec(cfg, 3, 2, u) for u in range(3000)]
    other_seed = [C.draw_codec(cfg, 4, 1, u) for u in range(3000)]
    assert np.mean(np.array(draws) == np.array(other_epoch)) < 0.7
    assert np.mean(np.array(draws) == np.array(other_seed)) < 0.7
    for p in (0.0, 0.1, 1.0):
        c = C.CodecAugConfig(prob=p)
        rate = np.mean([C.draw_codec(c, 0, 0, u) != "" for u in range(2000)])
        assert abs(rate - p) < 4 * np.sqrt(max(p * (1 - p), 1e-9) / 2000) + 1e-12, (p, rate)


def test_maybe_degrade_returns_input_untouched_when_clean():
    cfg = C.CodecAugConfig(prob=0.5, codecs=("mulaw",))
    for u in range(20):
        y, name = C.maybe_degrade(X, cfg, 0, 0, u)
        if name:
            assert name == "mulaw" and np.array_equal(y, C.apply_codec(X, "mulaw"))
        else:
            assert y is X


# ---------------------------------------------------------------------------------------
# Pipeline
# ---------------------------------------------------------------------------------------

N_REC, T = 24, 2000
MODEL = types.SimpleNamespace(num_samples=T, pad_mode="repeat")
FAST = C.CodecAugConfig(prob=0.5, codecs=("mulaw", "alaw", "telephone", "mp3_high" if "mp3_high" in C.available_codecs() else "vorbis"))


def _records() -> list[dict]:
    # int16 PCM, as the TFDS builders store it; lengths vary so fit_length cuts and repeats.
    out = []
    for i in range(N_REC):
        x = _voice(1500 + 97 * i, seed=i)
        out.append({"audio": (x * 32767).astype(np.int16), "label": i % 2, "utt_id": f"U{i}"})
    return out


def _batches(src, **kw) -> list[dict]:
    return list(train_batches(src, MODEL, 8, seed=5, num_epochs=kw.pop("num_epochs", 2), process_index=0,
                              process_count=1, local_device_count=1, **kw))


@pytest.mark.slow
def test_pipeline_rows_are_the_codec_of_seed_epoch_record():
    src = _records()
    aug = _batches(src, codec_augment=FAST)
    clean = _batches(src)
    spe = N_REC // 8
    n_changed = 0
    for k, (a, c) in enumerate(zip(aug, clean)):
        epoch = k // spe
        assert list(a["utt_id"]) == list(c["utt_id"])
        for row, utt in enumerate(a["utt_id"]):
            name = C.draw_codec(FAST, 5, epoch, int(utt[1:]))
            want = C.apply_codec(c["audio"][row], name) if name else c["audio"][row]
            np.testing.assert_array_equal(a["audio"][row], want, err_msg=f"batch {k} {utt} {name!r}")
            n_changed += bool(name)
    assert 0.25 * len(aug) * 8 < n_changed < 0.75 * len(aug) * 8, n_changed
    off = _batches(src, codec_augment=C.CodecAugConfig(prob=0.0))
    assert all(np.array_equal(o["audio"], c["audio"]) for o, c in zip(off, clean))


@pytest.mark.slow
def test_pipeline_resume_mid_epoch_and_two_hosts_give_the_same_rows():
    src = _records()
    full = _batches(src, codec_augment=FAST)
    resumed = list(train_batches(src, MODEL, 8, seed=5, start_epoch=1, start_step=2, num_epochs=1,
                                 process_index=0, process_count=1, local_device_count=1, codec_augment=FAST))
    spe = N_REC // 8
    for got, want in zip(resumed, full[spe + 2 :]):
        np.testing.assert_array_equal(got["audio"], want["audio"])
    halves = [
        list(train_batches(src, MODEL, 8, seed=5, num_epochs=1, process_index=p, process_count=2,
                           local_device_count=1, codec_augment=FAST, num_threads=1))
        for p in (0, 1)
    ]
    for k in range(spe):
        joined = np.concatenate([halves[0][k]["audio"], halves[1][k]["audio"]])
        np.testing.assert_array_equal(joined, full[k]["audio"], err_msg=f"batch {k}")


def test_cache_gives_the_same_output_and_skips_the_encoder_when_warm(outputs, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    for name, want in outputs.items():
        np.testing.assert_array_equal(C.apply_codec(X, name, cache), want, err_msg=f"{name}, cold cache")
    cached = sorted(n for n in outputs if n in C._SNDFILE_CODECS and C._SNDFILE_CODECS[n].cache != "none")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == cached
    # Another input is another entry; a torn or foreign entry is recomputed, not decoded.
    C.apply_codec(X * 0.5, "opus", cache)
    assert len([p for p in (tmp_path / "cache" / "opus").rglob("*") if p.is_file()]) == 2
    for name in ("opus", "g721"):
        for entry in (p for p in (tmp_path / "cache" / name).rglob("*") if p.is_file()):
            entry.write_bytes(b"not a stream!")
    np.testing.assert_array_equal(C.apply_codec(X, "opus", cache), outputs["opus"])
    np.testing.assert_array_equal(C.apply_codec(X, "g721", cache), outputs["g721"])

    def no_encoder(*a, **k):
        raise AssertionError("the encoder ran on a warm cache")

    monkeypatch.setattr(C, "_sndfile_encode", no_encoder)
    for name, want in outputs.items():
        np.testing.assert_array_equal(C.apply_codec(X, name, cache), want, err_msg=f"{name}, warm cache")


def test_pipeline_rows_are_the_same_through_the_cache(tmp_path):
    src = _records()
    cached = C.CodecAugConfig(prob=FAST.prob, codecs=FAST.codecs, cache_dir=str(tmp_path))
    for a, b in zip(_batches(src, codec_augment=cached, num_epochs=1), _batches(src, codec_augment=FAST, num_epochs=1)):
        np.testing.assert_array_equal(a["audio"], b["audio"])
    assert any(tmp_path.rglob("*")) == any(C._SNDFILE_CODECS[n].cache != "none" for n in FAST.codecs if n in C._SNDFILE_CODECS)


@pytest.mark.slow  # two compiles of a tiny model: 57 s on the busy 2-core machine
def test_training_loop_degrades_train_batches_only(tmp_path, monkeypatch):
    # A tiny model trained one epoch with every training utterance through mu-law: each row
    # the train step receives must be a mu-law reconstruction (G.711 round trips are
    # idempotent, so mulaw(row) == row), and no row scored for dev or eval may be one
    # (int16 PCM / 32768 is not on the mu-law grid).
    import train.loop as loop
    from train import sharding
    from train.evaluation import StateModel
    from train.testing import synthetic_sources, tiny_train_config

    seen: dict[str, list[np.ndarray]] = {"train": [], "scored": []}
    shard_batch, logits = sharding.shard_batch, StateModel.logits

    def spy_shard(batch, mesh):
        seen["train"] += [r for r, m in zip(np.array(batch["audio"]), batch["mask"]) if m]
        return shard_batch(batch, mesh)

    def spy_logits(self, audio):
        seen["scored"] += [r for r in np.array(audio) if np.any(r)]  # all-zero rows: batch padding
        return logits(self, audio)

    monkeypatch.setattr(sharding, "shard_batch", spy_shard)
    monkeypatch.setattr(StateModel, "logits", spy_logits)
    cfg = tiny_train_config(epochs=1, codec_augment=C.CodecAugConfig(prob=1.0, codecs=("mulaw",)))
    src = synthetic_sources(n_train=8, n_dev=4, n_eval=4)
    loop.train(cfg, tmp_path, sources=src, quiet=True)
    assert len(seen["train"]) == 8, len(seen["train"])
    assert len(seen["scored"]) == 8, len(seen["scored"])  # dev after the epoch + the final eval
    for r in seen["train"]:
        np.testing.assert_array_equal(C.apply_codec(r, "mulaw"), r, err_msg="a training row was not degraded")
    for r in seen["scored"]:
        assert not np.array_equal(C.apply_codec(r, "mulaw"), r), "a dev/eval row went through the codec"


# ---------------------------------------------------------------------------------------
# Training config and flag
# ---------------------------------------------------------------------------------------


def test_train_config_field_and_flag():
    import train.__main__ as train_cli
    from train.configs import PRESETS, TrainConfig

    assert all(not c.codec_augment.enabled for c in PRESETS.values())
    args = train_cli.build_parser().parse_args(["--config", "demo", "--codec-prob", "0.5"])
    cfg = train_cli.config_from_args(args)
    assert cfg.codec_augment == C.CodecAugConfig(prob=0.5)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    cfg2 = cfg.with_overrides(["codec_augment.codecs=mulaw,gsm"])
    assert cfg2.codec_augment.codecs == ("mulaw", "gsm")


def test_codec_cache_flag(tmp_path, capsys):
    import train.__main__ as train_cli
    from train.configs import TrainConfig

    args = train_cli.build_parser().parse_args(["--config", "demo", "--codec-prob", "0.5", "--codec-cache",
                                                str(tmp_path / "new" / "cache")])
    cfg = train_cli.config_from_args(args)
    assert cfg.codec_augment == C.CodecAugConfig(prob=0.5, cache_dir=str(tmp_path / "new" / "cache"))
    assert (tmp_path / "new" / "cache").is_dir()
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    (tmp_path / "file").write_text("")
    assert train_cli.main(["--config", "demo", "--codec-prob", "0.5", "--codec-cache", str(tmp_path / "file" / "c")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --codec-cache") and "\n" not in err, err


def test_codec_prob_flag_out_of_range_is_one_line(capsys):
    import train.__main__ as train_cli

    with pytest.raises(SystemExit) as e:
        train_cli.build_parser().parse_args(["--config", "demo", "--codec-prob", "2"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--codec-prob" in err and "\n" not in err


# ---------------------------------------------------------------------------------------
# Demo corpus with a channel-degraded eval split; EER per condition
# ---------------------------------------------------------------------------------------


def test_demo_eval_channel_codecs(tmp_path):
    from rawnet2_jax.data import demo
    from rawnet2_jax.data import protocols as P

    channels = demo.eval_channels()
    tiny = dict(num_train=2, num_dev=2, num_eval=len(channels) + 1, seconds=0.3, speakers_per_split=2, seed=3)
    clean = demo.make_demo_corpus(tmp_path / "clean", demo.DemoConfig(**tiny), progress=False)
    coded = demo.make_demo_corpus(tmp_path / "coded", demo.DemoConfig(**tiny, eval_channel="codecs"), progress=False)
    for split in ("train", "dev"):
        for f in sorted(P.la_audio_dir(clean, split).iterdir()):
            assert f.read_bytes() == (P.la_audio_dir(coded, split) / f.name).read_bytes(), f.name
    assert not demo.channel_path(clean).exists()
    lines = [ln.split() for ln in demo.channel_path(coded).read_text().splitlines()]
    assert [c for _, c in lines] == [*channels, channels[0]]  # utterance i gets channel i mod K
    for utt, channel in lines:
        a = (P.la_audio_dir(clean, "eval") / f"{utt}.flac").read_bytes()
        b = (P.la_audio_dir(coded, "eval") / f"{utt}.flac").read_bytes()
        assert (a == b) == (channel == "clean"), (utt, channel)
    with pytest.raises(ValueError, match="eval_channel"):
        demo.DemoConfig(eval_channel="radio")


def test_metrics_conditions(tmp_path):
    from rawnet2_jax.metrics import parse_cm_scores
    from rawnet2_jax.metrics.__main__ import main as metrics_main
    from rawnet2_jax.metrics.conditions import condition_eers, parse_conditions

    # Condition "a" separates perfectly; in "b" one bona fide scores below its spoof.
    rows = [("u1", "-", "bonafide", 2.0, "a"), ("u2", "A1", "spoof", -1.0, "a"), ("u3", "A2", "spoof", -2.0, "a"),
            ("u4", "-", "bonafide", 3.0, "b"), ("u5", "-", "bonafide", -5.0, "b"), ("u6", "A1", "spoof", 0.0, "b")]
    cm = parse_cm_scores([f"{u} {a} {k} {s}" for u, a, k, s, _ in rows])
    res = condition_eers(cm, parse_conditions([f"{u} {c}" for u, *_, c in rows]))
    assert list(res) == ["a", "b"]
    assert res["a"].eer == 0.0 and res["a"].n_bonafide == 1 and res["a"].n_spoof == 2
    from rawnet2_jax.metrics import compute_eer

    want_b = compute_eer(np.array([3.0, -5.0]), np.array([0.0]))[0]  # the official EER on b's trials alone
    assert 0 < want_b < 1 and res["b"].eer == want_b and res["b"].per_attack["A1"] == want_b
    assert res["b"].per_attack["A2"] is None  # no A2 spoofs in b
    scores, conds = tmp_path / "s.txt", tmp_path / "c.txt"
    scores.write_text("\n".join(f"{u} {a} {k} {s}" for u, a, k, s, _ in rows) + "\n")
    conds.write_text("\n".join(f"{u} {c}" for u, *_, c in rows[:-1]) + "\n")
    assert metrics_main([str(scores), "--conditions", str(conds)]) == 1  # u6 has no condition
    conds.write_text("\n".join(f"{u} {c}" for u, *_, c in rows) + "\n")
    assert metrics_main([str(scores), "--conditions", str(conds), "--json"]) == 0
