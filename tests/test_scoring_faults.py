"""`rawnet2-jax score` under injected faults: a bad --output path, Ctrl-C (in process and a
real SIGINT to a subprocess), huge files, degenerate audio, symlink loops; `evaluate` with a
split the dataset does not have; TFDS chatter."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rawnet2_jax import audio, cli
from rawnet2_jax.scoring import score_files
from tests.test_scoring import SR, T, FakeModel

REPO = Path(__file__).resolve().parents[1]


def _speechy(n, seed=0, sr=SR):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    return (0.2 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture()
def files(tmp_path):
    d = tmp_path / "wavs"
    d.mkdir()
    for i in range(5):
        sf.write(d / f"f{i}.wav", _speechy(T * 2, seed=i), SR, subtype="FLOAT")
    return sorted(d.glob("*.wav"))


class _Model(FakeModel):
    def __init__(self, on_call=None, **kw):
        super().__init__(**kw)
        self.config.min_num_samples = 100
        self.on_call = on_call
        self.calls = 0

    def logits(self, x):
        self.calls += 1
        if self.on_call is not None:
            self.on_call(self.calls)
        return super().logits(x)


def _one_error_line(err: str, *needles: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- output


def test_bad_output_path_fails_before_loading_or_scoring(files, tmp_path, monkeypatch, capsys):
    def never(_):
        raise AssertionError("the model was loaded before --output was opened")

    monkeypatch.setattr(cli, "_load_model", never)
    rc = cli.main(["score", "--checkpoint", "m", *map(str, files), "-o", str(tmp_path / "no" / "dir" / "s.csv")])
    assert rc == 1
    _one_error_line(capsys.readouterr().err, "opening --output", "s.csv")


def test_failed_model_load_leaves_no_empty_output(files, tmp_path, capsys):
    out = tmp_path / "s.csv"
    rc = cli.main(["score", "--checkpoint", str(tmp_path / "nope"), str(files[0]), "--csv", "-o", str(out)])
    assert rc == 1 and not out.exists()
    _one_error_line(capsys.readouterr().err, "does not exist")


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json", "table"])
def test_rows_are_flushed_as_files_are_scored(files, tmp_path, monkeypatch, capsys, fmt):
    out = tmp_path / f"s.{fmt}"
    seen = []

    def look(call):  # called before batch `call`: the rows of every earlier batch are on disk, beside --output
        assert not out.exists()  # it appears when the run ends, renamed from there
        (scratch,) = tmp_path.glob(f".{out.name}.tmp-*")
        seen.append(scratch.read_text())

    monkeypatch.setattr(cli, "_load_model", lambda d: _Model(on_call=look))
    argv = ["score", "--checkpoint", "m", *map(str, files), "--batch-size", "1", "-o", str(out), "--no-progress"]
    assert cli.main(argv + ([f"--{fmt}"] if fmt != "table" else [])) == 0
    for k, text in enumerate(seen):  # k files were done before batch k + 1
        assert sum(f"f{i}.wav" in text for i in range(5)) == k, (k, text)
    final = out.read_text()
    if fmt == "json":
        doc = json.loads(final)
        assert doc["num_scored"] == 5 and "interrupted" not in doc
    elif fmt == "jsonl":
        assert [json.loads(line)["path"] for line in final.splitlines()] == list(map(str, files))
    elif fmt == "csv":
        assert final.splitlines()[0].endswith(",error,warning") and len(final.splitlines()) == 6
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(f".{out.name}")) == []


def test_an_existing_output_is_replaced_only_by_a_run_that_scores(files, tmp_path, monkeypatch, capsys):
    out = tmp_path / "s.csv"
    out.write_text("earlier,results\n")
    rc = cli.main(["score", "--checkpoint", str(tmp_path / "nomodel"), "--csv", "-o", str(out), str(files[0])])
    assert rc == 1 and out.read_text() == "earlier,results\n"
    _one_error_line(capsys.readouterr().err, "does not exist")
    monkeypatch.setattr(cli, "_load_model", lambda d: _Model())
    before = files[1].read_bytes()
    assert cli.main(["score", "--checkpoint", "m", "--csv", "-o", str(files[1]), str(files[0]), str(files[1])]) == 1
    _one_error_line(capsys.readouterr().err, "is also an input file; write the scores to another file")
    assert files[1].read_bytes() == before
    assert cli.main(["score", "--checkpoint", "m", "--csv", "-o", str(out), "--no-progress", str(files[0])]) == 0
    assert len(out.read_text().splitlines()) == 2 and "earlier" not in out.read_text()


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_ctrl_c_keeps_the_finished_rows(files, tmp_path, monkeypatch, capsys, fmt):
    def interrupt(call):
        if call == 3:
            raise KeyboardInterrupt

    out = tmp_path / f"s.{fmt}"
    monkeypatch.setattr(cli, "_load_model", lambda d: _Model(on_call=interrupt))
    rc = cli.main(["score", "--checkpoint", "m", *map(str, files), "--batch-size", "1", f"--{fmt}", "-o", str(out),
                   "--no-progress"])
    assert rc == 130
    _one_error_line(capsys.readouterr().err, "interrupted after 2 of 5 files (2 scored)", str(out))
    if fmt == "json":
        doc = json.loads(out.read_text())  # still one valid document
        assert doc["interrupted"] is True and [f["path"] for f in doc["files"]] == list(map(str, files[:2]))
    else:
        rows = out.read_text().splitlines()
        assert len(rows) == 3 and rows[1].startswith(str(files[0])) and rows[2].startswith(str(files[1]))


SLOW_SCORER = textwrap.dedent("""
    import sys, time, types
    import numpy as np
    from rawnet2_jax import cli

    class Slow:
        config = types.SimpleNamespace(num_samples=800, pad_mode="zero", sample_rate=16000, min_num_samples=100)

        def logits(self, x):
            time.sleep(0.3)
            m = np.asarray(x).mean(axis=1)
            return np.stack([-m, m], axis=1).astype(np.float32)

    cli._load_model = lambda d: Slow()
    sys.exit(cli.main(sys.argv[1:]))
""")


@pytest.mark.slow
@pytest.mark.parametrize("sig, rc, what", [(signal.SIGINT, 130, "interrupted"),
                                          (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_sigint_or_sigterm_to_a_scoring_process_keeps_its_rows(tmp_path, sig, rc, what):
    d = tmp_path / "many"
    d.mkdir()
    for i in range(40):
        sf.write(d / f"u{i:02d}.wav", _speechy(T, seed=i), SR, subtype="PCM_16")
    out = tmp_path / "scores.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen([sys.executable, "-c", SLOW_SCORER, "score", "--checkpoint", "m", str(d), "--jsonl",
                          "--batch-size", "1", "-o", str(out), "--no-progress"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def rows_so_far() -> int:  # in the file beside --output until the run ends
        scratch = list(tmp_path.glob(".scores.jsonl.tmp-*"))
        return len(scratch[0].read_text().splitlines()) if scratch else 0

    try:
        deadline = time.time() + 120
        while time.time() < deadline and rows_so_far() < 3:
            assert p.poll() is None, p.communicate()
            time.sleep(0.05)
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == rc, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]  # every line complete
    assert 3 <= len(rows) < 40
    assert [r["path"] for r in rows] == [str(d / f"u{i:02d}.wav") for i in range(len(rows))]
    line = _one_error_line(err, f"{what} after {len(rows)} of 40 files")
    assert "Traceback" not in err, line
    assert not list(tmp_path.glob(".scores.jsonl.tmp-*"))


# ----------------------------------------------------------------------------- decoding


def test_without_windows_only_the_needed_frames_are_decoded(tmp_path, monkeypatch):
    sr = 48000
    long = np.tile(_speechy(sr, sr=sr), 120)  # 2 minutes
    path = tmp_path / "long.flac"
    sf.write(path, long, sr, subtype="PCM_16")
    asked = []
    real_read = audio.sf.read

    def spy(p, frames=-1, **k):
        asked.append(frames)
        return real_read(p, frames=frames, **k)

    monkeypatch.setattr(audio.sf, "read", spy)
    model = _Model(num_samples=4 * SR)
    res = score_files(model, [path], max_seconds=None, progress=False, load_workers=1)[0]
    assert res.ok and res.duration_s == pytest.approx(120.0)
    assert asked and 0 < asked[0] <= 4 * sr + audio._resampler_margin(sr), asked
    assert score_files(model, [path], max_seconds=60, progress=False)[0].error.count("--max-seconds") == 1
    monkeypatch.setattr(audio.sf, "read", real_read)
    # The head read gives exactly what decoding the whole file and cutting it gives.
    for sr_in in (48000, 44100, 22050):
        p = tmp_path / f"h{sr_in}.wav"
        sf.write(p, _speechy(3 * sr_in, sr=sr_in), sr_in, subtype="FLOAT")
        head, _, _ = audio.read_audio(p, head_samples=SR)
        full = audio.load_audio(p)[:SR]
        diff = float(np.max(np.abs(head.astype(np.float64) - full)))
        assert head.shape == full.shape and diff == 0.0, f"{sr_in} Hz: max abs diff {diff:.3e}"


def test_length_error_names_the_flag(tmp_path, capsys, monkeypatch):
    p = tmp_path / "a.wav"
    sf.write(p, _speechy(3 * SR), SR, subtype="PCM_16")
    monkeypatch.setattr(cli, "_load_model", lambda d: _Model())
    assert cli.main(["score", "--checkpoint", "m", str(p), "--max-seconds", "2", "--no-progress"]) == 1
    _one_error_line(capsys.readouterr().err, "--max-seconds", "0 = no limit")


# ----------------------------------------------------------------------------- degenerate audio


def _truncated_wav(path, seconds_declared=3, seconds_held=1):
    sf.write(path, _speechy(seconds_declared * SR), SR, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: 44 + seconds_held * SR * 2])


DEGENERATE = {
    "one_sample.wav": (lambda p: sf.write(p, np.array([0.3], np.float32), SR, subtype="FLOAT"), "only 1 sample"),
    "tiny_constant.wav": (lambda p: sf.write(p, np.full(SR, 1e-30, np.float32), SR, subtype="FLOAT"), "constant"),
    "dc.wav": (lambda p: sf.write(p, np.full(SR, 0.5, np.float32), SR, subtype="FLOAT"), "constant"),
    "dc_hum.wav": (lambda p: sf.write(p, (0.5 + 1e-6 * np.sin(np.arange(SR))).astype(np.float32), SR,
                                      subtype="FLOAT"), "DC only"),
    "quiet.wav": (lambda p: sf.write(p, (1e-6 * _speechy(SR)).astype(np.float32), SR, subtype="FLOAT"),
                  "below -90 dBFS"),
    "truncated.wav": (_truncated_wav, "promises 3.00 s but the file holds 1.00 s"),
    "int16_in_float.wav": (lambda p: sf.write(p, (32767 * _speechy(SR) / np.max(np.abs(_speechy(SR)))).astype(
        np.float32), SR, subtype="FLOAT"), "audio is at a peak of 2.9"),
    "loud.wav": (lambda p: sf.write(p, (5 * _speechy(SR) / np.max(np.abs(_speechy(SR)))).astype(np.float32), SR,
                                    subtype="FLOAT"), "far beyond full scale (1.0);"),
}


@pytest.mark.parametrize("name", sorted(DEGENERATE))
def test_degenerate_audio_is_refused_unless_forced(tmp_path, capsys, monkeypatch, name):
    make, needle = DEGENERATE[name]
    p = tmp_path / name
    make(p)
    monkeypatch.setattr(cli, "_load_model", lambda d: _Model())
    assert cli.main(["score", "--checkpoint", "m", str(p), "--no-progress"]) == 1
    _one_error_line(capsys.readouterr().err, name, needle, "--allow-degenerate")
    out = tmp_path / "s.csv"
    assert cli.main(["score", "--checkpoint", "m", str(p), "--allow-degenerate", "--csv", "-o", str(out),
                     "--no-progress"]) == 0
    row = out.read_text().splitlines()[1].split(",")
    assert row[0] == str(p) and row[2] != "" and row[-1] != "", row  # scored, with a warning


def test_normal_speech_is_not_degenerate():
    assert audio.degenerate_reason(_speechy(SR), 729) is None
    hot = 1.5 * _speechy(SR) / np.max(np.abs(_speechy(SR)))  # a float file with headroom over full scale
    assert audio.degenerate_reason(hot, 729) is None
    assert audio.degenerate_reason(_speechy(800), 729) is None
    assert "728 sample" in audio.degenerate_reason(_speechy(728), 729)


def test_symlink_loop_is_not_not_found(tmp_path, capsys, monkeypatch):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    a.symlink_to(b)
    b.symlink_to(a)
    monkeypatch.setattr(cli, "_load_model", lambda d: _Model())
    assert cli.main(["score", "--checkpoint", "m", str(a), "--no-progress"]) == 1
    line = _one_error_line(capsys.readouterr().err, "symbolic link loop")
    assert "no such file" not in line and "not found" not in line


# ----------------------------------------------------------------------------- evaluate / TFDS


def test_unknown_split_lists_the_splits_and_tfds_stays_quiet(tmp_path, capsys, monkeypatch):
    from rawnet2_jax.data.__main__ import main as data_main
    from tests.data_fixtures import write_la_tree

    write_la_tree(tmp_path / "corpus")
    assert data_main(["build", "asvspoof2019_la", "--manual-dir", str(tmp_path / "corpus"),
                      "--data-dir", str(tmp_path / "tfds")]) == 0
    cap = capsys.readouterr()
    assert "Downloading and preparing" not in cap.out + cap.err and "downloaded and prepared" not in cap.out
    monkeypatch.setattr(cli, "_load_model", lambda d: _Model())
    rc = cli.main(["evaluate", "--checkpoint", "m", "--split", "nosuch", "--data-dir", str(tmp_path / "tfds"),
                   "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 1
    cap = capsys.readouterr()
    line = _one_error_line(cap.err, "no split 'nosuch'", "train", "dev", "eval")
    assert "build" not in line and "Downloading" not in cap.out


def test_evaluate_on_an_unbuilt_dataset_builds_nothing(tmp_path, capsys, monkeypatch):
    (tmp_path / "tfds" / "asvspoof2019_la" / "incomplete.x_1.0.0").mkdir(parents=True)
    monkeypatch.setattr(cli, "_load_model", lambda d: _Model())
    rc = cli.main(["evaluate", "--checkpoint", "m", "--split", "eval", "--data-dir", str(tmp_path / "tfds"),
                   "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 1
    cap = capsys.readouterr()
    _one_error_line(cap.err, "not built", "python -m rawnet2_jax.data build asvspoof2019_la")
    assert "Downloading" not in cap.out + cap.err


def test_out_of_memory_and_broken_weights_say_what_to_do(files, tmp_path, monkeypatch, capsys):
    def oom(call):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 256441601200 bytes.")

    monkeypatch.setattr(cli, "_load_model", lambda d: _Model(on_call=oom))
    assert cli.main(["score", "--checkpoint", "m", str(files[0]), "--batch-size", "4096", "--no-progress"]) == 1
    _one_error_line(capsys.readouterr().err, "model failed (RuntimeError: RESOURCE_EXHAUSTED",
                    "out of memory at --batch-size 4096: lower --batch-size")

    class Broken(_Model):
        def logits(self, x):
            return np.full((x.shape[0], 2), np.nan, np.float32)

    monkeypatch.setattr(cli, "_load_model", lambda d: Broken())
    assert cli.main(["score", "--checkpoint", "m", str(files[0]), "--no-progress"]) == 1
    _one_error_line(capsys.readouterr().err, "non-finite logits", "the model's weights are damaged")
