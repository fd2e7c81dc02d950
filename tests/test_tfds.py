"""TFDS builders without TensorFlow: round trip, errors, interrupted builds, splits > 1 GB."""

import importlib.util
import os
import resource
import subprocess
import tempfile

import numpy as np
import pytest
import soundfile as sf

tfds = pytest.importorskip("tensorflow_datasets")

from rawnet2_jax.data import asvspoof2019_la, asvspoof2021_la, data_source, in_the_wild  # noqa: E402
from rawnet2_jax.data import tfds_common as C  # noqa: E402
from rawnet2_jax.errors import AudioError, DataError  # noqa: E402
from rawnet2_jax.fsutil import temp_prefix  # noqa: E402
from tensorflow_datasets.core import shuffle as tfds_shuffle  # noqa: E402
from tests.data_fixtures import (  # noqa: E402
    la21_asv_lines,
    la21_key_lines,
    write_2021_audio,
    write_2021_keys,
    write_la_tree,
    write_wild_tree,
)

HAS_TF = importlib.util.find_spec("tensorflow") is not None


def _check_split(src, recs):
    assert len(src) == len(recs)
    for ex, r in zip(src, recs):  # protocol order is kept
        assert ex["utt_id"].decode() == r["utt_id"]
        assert ex["speaker"].decode() == r["speaker"]
        assert ex["attack"].decode() == r["attack"]
        assert ex["label"] == r["label"]
        assert ex["num_samples"] == len(r["pcm"])
        assert ex["audio"] == r["pcm"].astype("<i2").tobytes()


def test_la_roundtrip(tmp_path):
    exp = write_la_tree(tmp_path / "corpus")
    b = asvspoof2019_la.build(tmp_path / "corpus", tmp_path / "data")
    assert b.info.file_format.value == "array_record"
    assert b.info.features["label"].names == ["spoof", "bonafide"]
    for split, recs in exp.items():
        assert b.info.splits[split].num_examples == len(recs)
        _check_split(tfds.data_source("asvspoof2019_la", split=split, data_dir=str(tmp_path / "data")), recs)
        _check_split(b.as_data_source(split=split), recs)
    # a second build reuses the dataset
    b2 = asvspoof2019_la.build(tmp_path / "corpus", tmp_path / "data")
    assert b2.info.splits["train"].num_examples == len(exp["train"])


def test_la_missing_file_named(tmp_path):
    write_la_tree(tmp_path / "c")
    victim = next((tmp_path / "c/LA/ASVspoof2019_LA_dev/flac").glob("*.flac"))
    victim.unlink()
    with pytest.raises(DataError, match=f"asvspoof2019_la/dev: missing audio file .*{victim.name}") as e:
        asvspoof2019_la.build(tmp_path / "c", tmp_path / "data")
    assert "\n" not in str(e.value)


def test_an_utterance_in_two_splits_is_refused(tmp_path):
    write_la_tree(tmp_path / "c")
    protos = tmp_path / "c/LA/ASVspoof2019_LA_cm_protocols"
    train = protos / "ASVspoof2019.LA.cm.train.trn.txt"
    dev = protos / "ASVspoof2019.LA.cm.dev.trl.txt"
    utt = dev.read_text().splitlines()[0].split()[1]
    train.write_text(train.read_text() + dev.read_text().splitlines()[0] + "\n")  # a dev line in train
    with pytest.raises(DataError, match=rf"utterance {utt} is in both the train and the dev protocol"):
        asvspoof2019_la.build(tmp_path / "c", tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_la_count_mismatch(tmp_path):
    write_la_tree(tmp_path / "c")
    asvspoof2019_la.build(tmp_path / "c", tmp_path / "data")
    proto = tmp_path / "c/LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.eval.trl.txt"
    proto.write_text("\n".join(proto.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(DataError, match=r"asvspoof2019_la/eval .* has 5 utterances but its protocol lists 4"):
        asvspoof2019_la.build(tmp_path / "c", tmp_path / "data")
    b = asvspoof2019_la.build(tmp_path / "c", tmp_path / "data", overwrite=True)
    assert b.info.splits["eval"].num_examples == 4


def test_interrupted_build_restarts_cleanly(tmp_path):
    write_la_tree(tmp_path / "c")
    bad = sorted((tmp_path / "c/LA/ASVspoof2019_LA_eval/flac").glob("*.flac"))[2]
    good = bad.read_bytes()
    bad.write_bytes(b"not audio at all" * 10)  # fails mid-build (after train and dev)
    with pytest.raises(AudioError, match=bad.name):
        asvspoof2019_la.build(tmp_path / "c", tmp_path / "data")
    ds_dir = tmp_path / "data" / "asvspoof2019_la"
    assert not (ds_dir / "1.0.0").exists()
    # A killed build (SIGKILL) leaves an incomplete.* dir behind: it is removed.
    (ds_dir / "incomplete.ABC123_1.0.0").mkdir(parents=True)
    (ds_dir / "incomplete.ABC123_1.0.0" / "junk").write_text("x")
    bad.write_bytes(good)
    b = asvspoof2019_la.build(tmp_path / "c", tmp_path / "data")
    assert b.info.splits["eval"].num_examples == 5
    assert sorted(p.name for p in ds_dir.iterdir()) == ["1.0.0"]


def test_a_failed_overwrite_keeps_the_old_dataset(tmp_path):
    """--overwrite builds beside the finished dataset and swaps it in only when complete."""
    write_la_tree(tmp_path / "c")
    asvspoof2019_la.build(tmp_path / "c", tmp_path / "data")
    ds_dir = tmp_path / "data" / "asvspoof2019_la"
    before = {p.relative_to(ds_dir): p.read_bytes() for p in ds_dir.rglob("*") if p.is_file()}
    bad = sorted((tmp_path / "c/LA/ASVspoof2019_LA_eval/flac").glob("*.flac"))[2]
    good = bad.read_bytes()
    bad.write_bytes(b"not audio at all" * 10)
    with pytest.raises(AudioError, match=bad.name):
        asvspoof2019_la.build(tmp_path / "c", tmp_path / "data", overwrite=True)
    assert {p.relative_to(ds_dir): p.read_bytes() for p in ds_dir.rglob("*") if p.is_file()} == before
    hidden = lambda: [p.name for p in (tmp_path / "data").iterdir()  # noqa: E731
                      if p.name.startswith(".") and p.name != ".asvspoof2019_la.lock"]
    assert hidden() == []  # no scratch data dir left
    # Killed mid-overwrite (-9): its scratch data dir is removed by the next build.
    gone = subprocess.Popen(["true"])
    gone.wait()  # a PID no process has now
    (tmp_path / "data" / f"{temp_prefix('asvspoof2019_la').rsplit('-', 2)[0]}-{gone.pid}-x").mkdir()
    bad.write_bytes(good)
    proto = tmp_path / "c/LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.eval.trl.txt"
    proto.write_text("\n".join(proto.read_text().splitlines()[:-1]) + "\n")
    b = asvspoof2019_la.build(tmp_path / "c", tmp_path / "data", overwrite=True)
    assert b.info.splits["eval"].num_examples == 4 and b.data_dir == str(ds_dir / "1.0.0")
    assert len(data_source("asvspoof2019_la", "eval", tmp_path / "data")) == 4
    assert hidden() == []
    assert sorted(p.name for p in ds_dir.iterdir()) == ["1.0.0"]
    # Killed between the swap's two renames: the old build waits aside and is put back.
    aside = ds_dir / f"{temp_prefix('1.0.0', 'old').rsplit('-', 2)[0]}-{gone.pid}-x"
    (ds_dir / "1.0.0").rename(aside)
    assert asvspoof2019_la.build(tmp_path / "c", tmp_path / "data").info.splits["eval"].num_examples == 4  # reused
    assert sorted(p.name for p in ds_dir.iterdir()) == ["1.0.0"]
    with pytest.raises(DataError, match="the data dir is empty"):
        asvspoof2019_la.build(tmp_path / "c", "")
    # A second build of the same dataset into the same data dir while one runs: refused, nothing touched.
    from rawnet2_jax.errors import UserError
    from rawnet2_jax.fsutil import DirLock

    with DirLock(tmp_path / "data", ".asvspoof2019_la.lock", subject="x", busy_fix="", unwritable_fix=""):
        with pytest.raises(UserError, match=r"data dir .* \(asvspoof2019_la\) is in use by PID \d+ .* another --data-dir"):
            asvspoof2019_la.build(tmp_path / "c", tmp_path / "data", overwrite=True)
        assert len(data_source("asvspoof2019_la", "eval", tmp_path / "data")) == 4  # reuse needs no lock
        assert asvspoof2019_la.build(tmp_path / "c", tmp_path / "data").info.splits["eval"].num_examples == 4


def test_a_damaged_or_missing_shard_is_one_line_that_says_to_rebuild(tmp_path):
    write_la_tree(tmp_path / "c")
    asvspoof2019_la.build(tmp_path / "c", tmp_path / "data")
    shard = next((tmp_path / "data" / "asvspoof2019_la" / "1.0.0").glob("*-train.array_record-*"))
    src = data_source("asvspoof2019_la", "train", tmp_path / "data")
    assert src[0]["utt_id"] and len(src.__getitems__([0, 1])) == 2  # reads as before
    shard.write_bytes(shard.read_bytes()[:200])  # truncated
    src = data_source("asvspoof2019_la", "train", tmp_path / "data")
    for read in (lambda: src[len(src) - 1], lambda: src.__getitems__(list(range(len(src))))):
        with pytest.raises(DataError) as e:
            read()
        msg = str(e.value)
        assert "\n" not in msg and "asvspoof2019_la split 'train'" in msg and "damaged" in msg, msg
        assert msg.endswith("--overwrite`"), msg
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DataError, match=r"afile is a file, not a directory; give the TFDS data dir"):
        data_source("asvspoof2019_la", "train", tmp_path / "afile")
    with pytest.raises(DataError, match=r"nowhere does not exist; build the dataset there first"):
        data_source("asvspoof2019_la", "train", tmp_path / "nowhere")
    version = tmp_path / "data" / "asvspoof2019_la" / "1.0.0"
    version.rename(version.with_name("2.0.0"))  # a build of another version of the builder
    with pytest.raises(DataError, match=r"holds no build of version 1\.0\.0 \(found: 2\.0\.0\); build it with `python -m rawnet2_jax"):
        data_source("asvspoof2019_la", "train", tmp_path / "data")
    version.with_name("2.0.0").rename(version)
    shard.unlink()
    with pytest.raises(DataError, match=r"misses 1 of its files \(asvspoof2019_la-train\.array_record.*--overwrite`$"):
        data_source("asvspoof2019_la", "train", tmp_path / "data")


def test_in_the_wild_roundtrip(tmp_path):
    recs = write_wild_tree(tmp_path / "w")
    b = in_the_wild.build(tmp_path / "w", tmp_path / "data")
    src = b.as_data_source(split="eval")
    assert len(src) == len(recs)
    for ex, r in zip(src, recs):
        assert ex["utt_id"].decode() == r["utt_id"]
        assert ex["speaker"].decode() == r["speaker"]
        assert ex["label"] == r["label"]
        n = ex["num_samples"]
        assert abs(n - round(r["frames"] * 16000 / r["sr"])) <= 1  # resampled to 16 kHz
        x = np.frombuffer(ex["audio"], "<i2") / 32768.0
        spec = np.abs(np.fft.rfft(x * np.hanning(n)))
        assert abs(np.argmax(spec) * 16000 / n - 440) < 16000 / n + 1


# ---- splits over the Shuffler's 1 GB in-memory buffer ---------------------------------


class _SpillProbe(tfds.core.GeneratorBasedBuilder):
    """The TFDS default path (GeneratorBasedBuilder -> Shuffler), to show the limit."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return C.dataset_info(self, features=C.audio_features({}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(30):
            pcm = np.full(2000, i, np.int16)
            yield i, C.pcm_example(pcm, label=0, utt_id=str(i), speaker="s")


@pytest.mark.skipif(HAS_TF, reason="with TensorFlow installed the Shuffler can spill to disk")
def test_generator_builder_fails_past_buffer_without_tf(tmp_path, monkeypatch):
    # Control experiment: with the buffer lowered to 10 kB, 30 x 4 kB examples spill through
    # tf.io.gfile, which needs TensorFlow -> the default TFDS path cannot build the split.
    monkeypatch.setattr(tfds_shuffle, "MAX_MEM_BUFFER_SIZE", 10_000)
    with pytest.raises(ModuleNotFoundError, match="tensorflow"):
        _SpillProbe(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()


def test_shard_builder_never_uses_shuffler(tmp_path, monkeypatch):
    # Our builders write shard by shard (ShardBasedBuilder -> ShardWriter): no Shuffler, so no
    # 1 GB buffer and no tf.io.gfile spill, whatever the split size.
    monkeypatch.setattr(tfds_shuffle, "MAX_MEM_BUFFER_SIZE", 1_000)

    def boom(*a, **k):
        raise AssertionError("Shuffler used")

    monkeypatch.setattr(tfds_shuffle.Shuffler, "__init__", boom)
    monkeypatch.setattr(asvspoof2019_la.Asvspoof2019La, "SHARD_SIZE", 2)
    exp = write_la_tree(tmp_path / "c", {"train": 7, "dev": 2, "eval": 3})
    b = asvspoof2019_la.build(tmp_path / "c", tmp_path / "data")
    assert b.info.splits["train"].num_shards == 4  # 7 utterances, 2 per shard
    assert b.info.splits["train"].num_bytes > 1_000
    _check_split(b.as_data_source(split="train"), exp["train"])


def test_building_leaves_no_temp_dir_behind(tmp_path, monkeypatch):
    # TFDS's DatasetInfo.initialize_from_bucket, run by every builder made before its
    # dataset_info.json exists, makes tempfile.mkdtemp("tfds") and never removes it; our
    # builders skip that lookup (tfds_common.dataset_info): TMPDIR holds no tmp*tfds after.
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    assert tempfile.gettempdir() == str(tmp)
    write_la_tree(tmp_path / "la")
    write_wild_tree(tmp_path / "wild")
    trials = la21_key_lines(4, seed=1)
    write_2021_keys(tmp_path / "la21", "LA", trials, la21_asv_lines(8, seed=1))
    write_2021_audio(tmp_path / "la21", "LA", [ln.split()[1] for ln in trials])
    assert list(tmp.glob("tmp*tfds")) == []
    asvspoof2019_la.build(tmp_path / "la", tmp_path / "data")
    in_the_wild.build(tmp_path / "wild", tmp_path / "data")
    asvspoof2021_la.build(tmp_path / "la21", tmp_path / "data")
    asvspoof2019_la.build(tmp_path / "la", tmp_path / "data", overwrite=True)
    assert list(tmp.glob("tmp*tfds")) == []


@pytest.mark.slow
def test_split_over_1gb(tmp_path, request):
    """A real > 1 GB train split (8,600 x 4 s FLAC noise) builds and reads back, memory bounded.

    ~1-2 min and ~2.2 GB of disk: runs only with ``-m slow`` or RAWNET2_SLOW=1.
    """
    if "slow" not in (request.config.getoption("markexpr") or "") and not os.environ.get("RAWNET2_SLOW"):
        pytest.skip("slow: run with -m slow or RAWNET2_SLOW=1")
    n, t = 8600, 64000  # 8600 * 128000 B = 1.10 GB of int16 PCM
    la = tmp_path / "c" / "LA"
    (la / "ASVspoof2019_LA_cm_protocols").mkdir(parents=True)
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(t + n) * 8000).astype(np.int16)
    for split, count, pre in (("train", n, "T"), ("dev", 3, "D"), ("eval", 3, "E")):
        d = la / f"ASVspoof2019_LA_{split}" / "flac"
        d.mkdir(parents=True)
        lines = []
        for i in range(count):
            utt = f"LA_{pre}_{1000000 + i}"
            sf.write(d / f"{utt}.flac", noise[i : i + t], 16000, subtype="PCM_16")
            lines.append(f"LA_0001 {utt} - {'-' if i % 10 == 0 else 'A01'} {'bonafide' if i % 10 == 0 else 'spoof'}")
        suffix = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}[split]
        (la / "ASVspoof2019_LA_cm_protocols" / f"ASVspoof2019.LA.cm.{suffix}.txt").write_text("\n".join(lines) + "\n")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB
    b = asvspoof2019_la.build(tmp_path / "c", tmp_path / "data")
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info = b.info.splits["train"]
    print(f"train: {info.num_examples} utts, {info.num_bytes / 1e9:.2f} GB, {info.num_shards} shards; "
          f"peak RSS {rss0:.0f} -> {rss1:.0f} MiB")
    assert info.num_examples == n and info.num_bytes > 1.0e9
    assert rss1 - rss0 < 800, "memory grew with the split size"
    src = b.as_data_source(split="train")
    for i in (0, 4321, n - 1):
        assert src[i]["audio"] == noise[i : i + t].astype("<i2").tobytes()


def test_data_source_helper(tmp_path):
    from rawnet2_jax.data import data_source

    exp = write_la_tree(tmp_path / "c", {"train": 3, "dev": 2, "eval": 2})
    with pytest.raises(DataError, match="data directory .* does not exist"):
        data_source("asvspoof2019_la", "train", tmp_path / "data")
    (tmp_path / "data").mkdir()
    with pytest.raises(DataError, match="not built .*python -m rawnet2_jax.data build asvspoof2019_la"):
        data_source("asvspoof2019_la", "train", tmp_path / "data")
    asvspoof2019_la.build(tmp_path / "c", tmp_path / "data")
    _check_split(data_source("asvspoof2019_la", "train", tmp_path / "data"), exp["train"])
    with pytest.raises(DataError, match="has no split .test.; its splits are: "):
        data_source("asvspoof2019_la", "test", tmp_path / "data")
