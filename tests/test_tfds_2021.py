"""ASVspoof 2021 LA / DF TFDS builders on small trees in the organisers' layouts."""

from __future__ import annotations

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from rawnet2_jax.data import DATASETS, asvspoof2021_df, asvspoof2021_la, build_dataset, is_built  # noqa: E402
from rawnet2_jax.data.__main__ import main as data_main  # noqa: E402
from rawnet2_jax.data.asvspoof2021_common import built_keys_dir  # noqa: E402
from rawnet2_jax.data.keys2021 import DF, LA  # noqa: E402
from rawnet2_jax.errors import AudioError, DataError  # noqa: E402
from tests.data_fixtures import (  # noqa: E402
    df21_key_lines,
    la21_asv_lines,
    la21_key_lines,
    write_2021_audio,
    write_2021_keys,
)


def la_corpus(root, n=12):
    lines = la21_key_lines(n, seed=4)
    write_2021_keys(root, "LA", lines, la21_asv_lines(40, seed=4))
    pcm = write_2021_audio(root, "LA", [ln.split()[1] for ln in lines])
    return lines, pcm


def check_examples(src, lines, pcm, columns):
    assert len(src) == len(lines)
    for ex, line in zip(src, lines):  # key-file order is kept
        row = dict(zip(columns, line.split()))
        assert ex["utt_id"].decode() == row["trial"] and ex["speaker"].decode() == row["speaker"]
        assert ex["label"] == (row["label"] == "bonafide")
        for c in columns:
            if c not in ("trial", "speaker", "label"):
                assert ex[c].decode() == row[c], c
        assert ex["audio"] == pcm[row["trial"]].astype("<i2").tobytes()
        assert ex["num_samples"] == len(pcm[row["trial"]])


def test_registry():
    assert {"asvspoof2021_la", "asvspoof2021_df"} <= set(DATASETS)


def test_la_roundtrip_and_keys_copied(tmp_path):
    lines, pcm = la_corpus(tmp_path / "c")
    b = asvspoof2021_la.build(tmp_path / "c", tmp_path / "data")
    assert b.info.file_format.value == "array_record" and list(b.info.splits) == ["eval"]
    assert set(b.info.features) == {"audio", "num_samples", "label", "utt_id", "speaker", "codec", "transmission",
                                    "attack", "trim", "subset"}
    check_examples(tfds.data_source("asvspoof2021_la", split="eval", data_dir=str(tmp_path / "data")), lines, pcm,
                   LA.cm_columns)
    keys = built_keys_dir(tmp_path / "data", "asvspoof2021_la")
    for rel in ("LA/CM/trial_metadata.txt", "LA/ASV/trial_metadata.txt", "LA/ASV/ASVTorch_Kaldi/score.txt"):
        assert (keys / rel).read_bytes() == (tmp_path / "c" / "keys" / rel).read_bytes()
    assert is_built("asvspoof2021_la", tmp_path / "data") and not is_built("asvspoof2021_df", tmp_path / "data")


def test_df_four_parts_via_cli(tmp_path, capsys):
    lines = df21_key_lines(10, seed=6)
    write_2021_keys(tmp_path / "c", "DF", lines)
    pcm = write_2021_audio(tmp_path / "c", "DF", [ln.split()[1] for ln in lines], parts=4)
    assert (tmp_path / "c" / "ASVspoof2021_DF_eval_part03" / "ASVspoof2021_DF_eval" / "flac").is_dir()
    assert data_main(["build", "asvspoof2021_df", "--manual-dir", str(tmp_path / "c"),
                      "--data-dir", str(tmp_path / "data")]) == 0
    assert "asvspoof2021_df/eval: 10 utterances" in capsys.readouterr().out
    src = tfds.data_source("asvspoof2021_df", split="eval", data_dir=str(tmp_path / "data"))
    check_examples(src, lines, pcm, DF.cm_columns)
    assert (built_keys_dir(tmp_path / "data", "asvspoof2021_df") / "DF/CM/trial_metadata.txt").is_file()


def test_missing_audio_named(tmp_path):
    lines, _ = la_corpus(tmp_path / "c")
    victim = tmp_path / "c" / "ASVspoof2021_LA_eval" / "flac" / (lines[4].split()[1] + ".flac")
    victim.unlink()
    with pytest.raises(DataError, match=f"missing audio file .*{victim.name}") as e:
        asvspoof2021_la.build(tmp_path / "c", tmp_path / "data")
    assert "\n" not in str(e.value) and not is_built("asvspoof2021_la", tmp_path / "data")


def test_count_mismatch(tmp_path):
    lines, _ = la_corpus(tmp_path / "c")
    meta = tmp_path / "c" / "keys" / "LA" / "CM" / "trial_metadata.txt"
    meta.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match=r"12 flac files in .* but .*trial_metadata.txt lists 11 trials \(LA_E_"):
        asvspoof2021_la.build(tmp_path / "c", tmp_path / "data")


def test_malformed_and_missing_keys(tmp_path, capsys):
    lines, _ = la_corpus(tmp_path / "c")
    meta = tmp_path / "c" / "keys" / "LA" / "CM" / "trial_metadata.txt"
    meta.write_text("\n".join(lines[:3] + [lines[3].replace(" spoof ", " spoofed ").replace(" bonafide notrim", " bonafied notrim")]
                              + lines[4:]) + "\n")
    with pytest.raises(DataError, match=r"CM/trial_metadata.txt:4: label must be one of bonafide, spoof"):
        asvspoof2021_la.build(tmp_path / "c", tmp_path / "data")
    meta.write_text("\n".join(lines) + "\n")
    (tmp_path / "c" / "keys" / "LA" / "ASV" / "trial_metadata.txt").unlink()
    args = ["build", "asvspoof2021_la", "--manual-dir", str(tmp_path / "c"), "--data-dir", str(tmp_path / "data")]
    assert data_main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "ASV/trial_metadata.txt: LA ASV key file not found" in err and "\n" not in err
    assert not (tmp_path / "data" / "asvspoof2021_la").exists()


def test_no_audio_folder(tmp_path):
    write_2021_keys(tmp_path / "c", "DF", df21_key_lines(3))
    with pytest.raises(DataError, match="no ASVspoof2021_DF_eval/flac/"):
        build_dataset("asvspoof2021_df", tmp_path / "c", tmp_path / "data")


def test_corrupt_audio_leaves_nothing_half_built(tmp_path):
    lines, _ = la_corpus(tmp_path / "c")
    bad = tmp_path / "c" / "ASVspoof2021_LA_eval" / "flac" / (lines[7].split()[1] + ".flac")
    good = bad.read_bytes()
    bad.write_bytes(b"not audio" * 20)
    with pytest.raises(AudioError, match=bad.name):
        asvspoof2021_la.build(tmp_path / "c", tmp_path / "data")
    ds = tmp_path / "data" / "asvspoof2021_la"
    assert not is_built("asvspoof2021_la", tmp_path / "data") and not list(ds.glob("incomplete.*"))
    with pytest.raises(DataError, match="run: python -m rawnet2_jax.data build asvspoof2021_la"):
        built_keys_dir(tmp_path / "data", "asvspoof2021_la")
    bad.write_bytes(good)
    b = asvspoof2021_la.build(tmp_path / "c", tmp_path / "data")
    assert b.info.splits["eval"].num_examples == len(lines)
    assert np.array_equal(sorted(p.name for p in ds.iterdir()), ["1.0.0"])


def test_df_trial_in_two_parts(tmp_path):
    lines = df21_key_lines(4, seed=1)
    write_2021_keys(tmp_path / "c", "DF", lines)
    write_2021_audio(tmp_path / "c", "DF", [ln.split()[1] for ln in lines], parts=2)
    trial = lines[0].split()[1]
    src = tmp_path / "c" / "ASVspoof2021_DF_eval_part00" / "ASVspoof2021_DF_eval" / "flac" / f"{trial}.flac"
    (tmp_path / "c" / "ASVspoof2021_DF_eval" / "flac").mkdir(parents=True)
    (tmp_path / "c" / "ASVspoof2021_DF_eval" / "flac" / f"{trial}.flac").write_bytes(src.read_bytes())
    with pytest.raises(DataError, match=f"trial {trial} is also in .*extract each archive once"):
        asvspoof2021_df.build(tmp_path / "c", tmp_path / "data")
