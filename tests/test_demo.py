import hashlib

import numpy as np
import soundfile as sf

from rawnet2_jax.data import demo, synth
from rawnet2_jax.data import protocols as P

TINY = demo.DemoConfig(num_train=16, num_dev=8, num_eval=14, seconds=0.5, speakers_per_split=2, seed=7)


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_demo_layout_parses(tmp_path):
    la = demo.make_demo_corpus(tmp_path, TINY, progress=False)
    assert P.find_la_root(tmp_path) == la
    attacks, speakers = {}, {}
    for split in P.LA_SPLITS:
        entries = P.parse_cm_protocol(P.la_protocol_path(la, split))
        assert len(entries) == TINY.count(split)
        assert all(e.utt_id.startswith(f"LA_{split[0].upper()}_") and len(e.utt_id) == 12 for e in entries)
        n, nb = P.count_summary(entries)
        assert nb == round(TINY.count(split) * TINY.bonafide_fraction)
        attacks[split] = {e.attack for e in entries} - {"-"}
        speakers[split] = {e.speaker for e in entries}
        for e in entries[:3]:
            info = sf.info(P.la_audio_path(la, split, e.utt_id))
            assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
            assert 0.3 < info.duration < 0.7
        assert len(list(P.la_audio_dir(la, split).glob("*.flac"))) == len(entries)
    assert attacks["train"] == attacks["dev"] == set(demo.TRAIN_ATTACKS)
    assert attacks["eval"] == set(demo.EVAL_ATTACKS) and not attacks["eval"] & attacks["train"]
    assert not speakers["train"] & speakers["eval"] and not speakers["train"] & speakers["dev"]
    for split in ("dev", "eval"):
        s = P.parse_asv_scores(P.la_asv_scores_path(la, split))
        assert len(s.target) > 0 and len(s.nontarget) > 0 and len(s.spoof) == TINY.count(split) - len(s.target)
        assert s.target.mean() > s.nontarget.mean()


def test_demo_deterministic(tmp_path):
    cfg = demo.DemoConfig(num_train=4, num_dev=3, num_eval=3, seconds=0.3, seed=1)
    demo.make_demo_corpus(tmp_path / "a", cfg, progress=False)
    demo.make_demo_corpus(tmp_path / "b", cfg, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def test_attacks_differ_from_bonafide():
    # Each attack leaves a measurable trace relative to bona fide from the same generator.
    spk = synth.Speaker(f0=120.0, tract=1.0, rate=4.5)
    n = 16000

    def hf_ratio(x):
        s = np.abs(np.fft.rfft(x)) ** 2
        return s[len(s) // 2 :].sum() / s.sum()  # energy above 4 kHz

    bona = demo.synthesize(np.random.default_rng(0), spk, n, "-")
    band = demo.synthesize(np.random.default_rng(0), spk, n, "A02")
    assert hf_ratio(band) < 0.2 * hf_ratio(bona)
    for a in demo.TRAIN_ATTACKS + demo.EVAL_ATTACKS + ("-",):
        x = demo.synthesize(np.random.default_rng(1), spk, n, a)
        assert x.shape == (n,) and np.isfinite(x).all() and 0.2 < np.abs(x).max() <= 0.8


def test_cli_demo_and_build(tmp_path, capsys):
    from rawnet2_jax.data.__main__ import main

    argv = ["demo", str(tmp_path / "c"), "--num-train", "6", "--num-dev", "4", "--num-eval", "4", "--seconds", "0.3"]
    assert main(argv) == 0
    assert main(["build", "asvspoof2019_la", "--manual-dir", str(tmp_path / "c"), "--data-dir", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "asvspoof2019_la/train: 6 utterances" in out
    assert main(["build", "asvspoof2019_la", "--manual-dir", str(tmp_path / "none"), "--data-dir", str(tmp_path / "d")]) == 1
    assert capsys.readouterr().err.startswith("error: ")


def test_demo_never_overwrites_a_real_corpus_and_leaves_no_half_one(tmp_path, monkeypatch, capsys):
    import errno
    import os

    import pytest

    from rawnet2_jax.data.__main__ import main
    from rawnet2_jax.errors import DataError

    real = tmp_path / "real" / "LA"
    (real / "ASVspoof2019_LA_cm_protocols").mkdir(parents=True)
    (real / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.train.trn.txt").write_text("LA_0079 LA_T_1 - - bonafide\n")
    with pytest.raises(DataError, match=r"exists and is not a demo corpus .* remove .* to write the demo corpus"):
        demo.make_demo_corpus(tmp_path / "real", TINY, progress=False)
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["LA"]
    assert sorted(p.name for p in real.rglob("*")) == ["ASVspoof2019.LA.cm.train.trn.txt", "ASVspoof2019_LA_cm_protocols"]

    calls = {"n": 0}
    write = sf.write

    def full_disk(*a, **k):
        calls["n"] += 1
        if calls["n"] == 20:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(*a, **k)

    monkeypatch.setattr(demo.sf, "write", full_disk)
    out = tmp_path / "out"
    args = ["demo", str(out), "--num-train", "16", "--num-dev", "8", "--num-eval", "8", "--seconds", "0.5"]
    assert main(args) == 1
    assert "no space left on the device" in capsys.readouterr().err
    assert list(out.iterdir()) == []  # neither LA nor the scratch folder it was written in
    monkeypatch.setattr(demo.sf, "write", write)
    la = demo.make_demo_corpus(out, TINY, progress=False)
    first = _digest(la)
    assert demo.make_demo_corpus(out, TINY, progress=False) == la and _digest(la) == first  # its own: rewritten
    assert sorted(p.name for p in out.iterdir()) == ["LA"]


def test_build_failures_and_interrupts_are_one_line(tmp_path, monkeypatch, capsys):
    import signal

    import rawnet2_jax.data.__main__ as cli
    from rawnet2_jax.cliutil import Terminated, _raise_terminated

    def fails_with(exc):
        def build(*a, **k):
            raise exc
        return build

    argv = ["build", "asvspoof2019_la", "--manual-dir", str(tmp_path), "--data-dir", str(tmp_path / "t")]
    cases = [  # what array_record, libsndfile and the signals raise
        (RuntimeError("write() failed: No space left on device; writing /t/x.array_record; Failed to close"), 1,
         f"error: writing {tmp_path / 't'} failed: no space left on the device; free space or choose another location"),
        (RuntimeError("Error : flac encoder\nfailed"), 1,
         f"error: writing {tmp_path / 't'} failed (RuntimeError: Error : flac encoder failed)"),
        (KeyboardInterrupt(), 130, "error: interrupted: nothing finished was changed; re-run the same command"),
        (Terminated(), 143, "error: terminated (SIGTERM): nothing finished was changed"),
    ]
    for exc, rc, line in cases:
        monkeypatch.setattr(cli, "build_dataset", fails_with(exc))
        assert cli.main(argv) == rc
        err = capsys.readouterr().err
        assert err.startswith(line) and err.count("\n") == 1, err
    assert signal.getsignal(signal.SIGTERM) is not _raise_terminated  # the caller's handler is back


def test_demo_refuses_clips_longer_than_ten_minutes(tmp_path, capsys):
    import pytest

    from rawnet2_jax.data.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["demo", str(tmp_path / "c"), "--seconds", "1e6"])  # 105 GiB of audio per split
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: argument --seconds:") and err.count("\n") == 1, err
    assert not (tmp_path / "c").exists()


def test_a_warning_during_a_build_is_one_line(tmp_path, monkeypatch, capsys):
    import warnings

    import rawnet2_jax.data.__main__ as cli
    from rawnet2_jax.audio import SilentAudioWarning

    class Info:
        splits = {}

    class Builder:
        info = Info()

    def build(*a, **k):
        warnings.warn("x.flac: audio is silent (all 16000 samples are zero)", SilentAudioWarning)
        return Builder()

    monkeypatch.setattr(cli, "build_dataset", build)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli.main(["build", "asvspoof2019_la", "--manual-dir", str(tmp_path), "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().err == "warning: x.flac: audio is silent (all 16000 samples are zero)\n"

