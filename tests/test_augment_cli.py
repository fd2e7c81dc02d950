"""`rawnet2-jax augment`: files, determinism, the PNG, reference flag names, one-line errors.

Algorithm 2 (ISD) throughout: the plumbing does not depend on the algorithm, and it compiles
fastest (the families themselves are tested in test_rawboost.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

import jax

from rawnet2_jax import cli
from rawnet2_jax import augment_cli
from rawnet2_jax.augment import RawBoostConfig
from tests.conftest import speech_like

T = 8000


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    x = speech_like(T, seed=2)
    sf.write(d / "clip.wav", x, 16000, subtype="PCM_16")
    sf.write(d / "stereo.flac", np.stack([x, 0.5 * x], axis=1), 16000)  # any format the scorer reads
    sf.write(d / "silent.wav", np.zeros(T, np.float32), 16000)
    sf.write(d / "short.wav", x[:100], 16000, subtype="PCM_16")
    return d


def _run(args, capsys):
    rc = cli.main(["augment", *map(str, args)])
    return rc, capsys.readouterr()


@pytest.mark.slow
def test_writes_k_float_wavs_deterministically_and_a_png(inputs, tmp_path, capsys):
    runs = {}
    for name, seed, plots in (("a", 1, 3), ("b", 1, 0), ("c", 2, 0)):  # a PNG takes ~1.5 s CPU
        rc, out = _run([inputs / "clip.wav", "--rawboost", 2, "--count", 3, "--seed", seed, "--plot-count", plots,
                        "-o", tmp_path / name], capsys)
        assert rc == 0, out.err
        runs[name] = sorted((tmp_path / name).glob("*.wav"))
        assert [p.name for p in runs[name]] == [f"clip_rawboost2_{i:03d}.wav" for i in range(3)]
    for p in runs["a"]:
        info = sf.info(p)
        assert (info.samplerate, info.frames, info.channels, info.subtype) == (16000, T, 1, "FLOAT")
    same = [p.read_bytes() == q.read_bytes() for p, q in zip(runs["a"], runs["b"])]
    assert all(same), "the same seed must write the same files"
    data = [sf.read(p, dtype="float32")[0] for p in runs["a"] + runs["c"]]
    assert not any(np.array_equal(data[i], data[j]) for i in range(6) for j in range(i)), "outputs must differ"
    # Output i is rawboost with key i of split(key(seed), count), like rawboost_batch's rows.
    x = sf.read(inputs / "clip.wav", dtype="float32")[0]
    want = augment_cli._rawboost_fn()(jax.random.split(jax.random.key(1), 3)[1], x, 2, RawBoostConfig())
    np.testing.assert_array_equal(data[1], np.asarray(want))
    png = tmp_path / "a" / "clip_rawboost2_spectrograms.png"
    head = png.read_bytes()[:24]
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and width >= 600 and height >= 4 * 150, (width, height)
    assert "wrote 3 file(s)" in out.out and not list((tmp_path / "b").glob("*.png"))


@pytest.mark.slow
def test_other_formats_and_reference_flag_names(inputs, tmp_path, capsys):
    rc, out = _run([inputs / "stereo.flac", "--rawboost", 2, "--count", 1, "--plot-count", 0, "--nBands", 5,
                    "--N_f", 5, "-o", tmp_path], capsys)
    assert rc == 0, out.err
    assert sf.info(tmp_path / "stereo_rawboost2_000.wav").frames == T
    assert not list(tmp_path.glob("*.png"))
    args = augment_cli.build_parser().parse_args(["x.wav", "-o", "d", "--nBands", "3", "--SNRmin", "0", "--maxCoeff", "50"])
    cfg = augment_cli.config_from_args(args)
    assert (cfg.n_bands, cfg.snr_min, cfg.max_coeff, cfg.p) == (3, 0.0, 50, 10.0)
    assert augment_cli.config_from_args(augment_cli.build_parser().parse_args(["x.wav", "-o", "d"])) == RawBoostConfig()


@pytest.mark.parametrize("extra,needle", [
    (["--min-f", "900", "--max-f", "100"], "min_f"),
    (["--maxF", "9000"], "fs/2"),
])
def test_bad_parameters_one_line(inputs, tmp_path, capsys, extra, needle):
    rc, out = _run([inputs / "clip.wav", "-o", tmp_path, *extra], capsys)
    assert rc == 1 and out.err.startswith("error: ") and needle in out.err and out.err.count("\n") == 1, out.err


def test_bad_inputs_one_line(inputs, tmp_path, capsys):
    for path, needle in ((tmp_path / "missing.wav", "not found"), (inputs / "silent.wav", "silent"),
                         (inputs / "short.wav", "audio has 100 samples, under the 1024 (64 ms) that augmenting needs")):
        rc, out = _run([path, "-o", tmp_path / "o"], capsys)
        assert rc == 1 and needle in out.err and out.err.count("\n") == 1, out.err
    assert not (tmp_path / "o").exists()  # nothing written for an input that cannot be used
    with pytest.raises(SystemExit) as e:
        cli.main(["augment", str(inputs / "clip.wav"), "-o", str(tmp_path), "--rawboost", "9"])
    assert e.value.code == 2 and "--rawboost" in capsys.readouterr().err


def test_help_teaches(capsys):
    with pytest.raises(SystemExit):
        cli.main(["augment", "--help"])
    text = capsys.readouterr().out
    for needle in ("LnL", "ISD", "SSI", "--nBands", "--snr-min", "--seed", "default 5", "8  LnL(x) + ISD(x)"):
        assert needle in text, needle
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "augment" in capsys.readouterr().out


def test_a_full_disk_is_one_line_and_leaves_no_cut_off_wav(inputs, tmp_path, capsys, monkeypatch):
    import builtins
    import errno
    import os

    real_open = builtins.open

    def full(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        if "w" in mode and str(path).endswith("_001.wav"):
            f.close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return f

    monkeypatch.setattr(builtins, "open", full)
    rc, out = _run([inputs / "clip.wav", "-o", tmp_path / "o", "--count", "3"], capsys)
    assert rc == 1 and out.err.count("\n") == 1, out.err
    assert out.err.startswith(f"error: writing {tmp_path / 'o'} failed: no space left on the device"), out.err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["clip_rawboost5_000.wav"]  # the finished one

