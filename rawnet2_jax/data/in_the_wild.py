"""TFDS builder ``in_the_wild``: the In-the-Wild deepfake corpus (Mueller et al., 2022).

One split, ``eval`` (the corpus is evaluation-only; 31,779 files). Each file is decoded,
downmixed and resampled to 16 kHz with soxr at build time and stored as int16 PCM bytes at
native length, with label (0 spoof / 1 bona fide), speaker and utterance id (file stem).

    python -m rawnet2_jax.data build in_the_wild --manual-dir DIR --data-dir DATA_DIR

where DIR contains ``release_in_the_wild/`` (``meta.csv`` + ``0.wav`` .. ``31778.wav``) or is
that folder.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import tensorflow_datasets as tfds

from rawnet2_jax.audio import load_pcm16
from rawnet2_jax.data import protocols as P
from rawnet2_jax.data import tfds_common as C
from rawnet2_jax.errors import DataError

DOWNLOAD_URL = "https://deepfake-total.com/in_the_wild"

_CITATION = """@inproceedings{mueller2022does,
  title={Does Audio Deepfake Detection Generalize?},
  author={M{\\"u}ller, Nicolas M. and Czempin, Pavel and Dieckmann, Franziska and Froghyar, Adam and B{\\"o}ttinger, Konstantin},
  booktitle={Interspeech}, year={2022}}"""


def find_wild_root(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    for cand in (p, p / "release_in_the_wild"):
        if (cand / "meta.csv").is_file():
            return cand
    raise DataError(f"{p}: no In-the-Wild tree here (expected release_in_the_wild/meta.csv)")


def _make_example(entry: P.WildEntry, *, root: Path):
    pcm = load_pcm16(root / entry.file, max_seconds=None, on_silent="warn")
    return entry.utt_id, C.pcm_example(pcm, label=entry.label, utt_id=entry.utt_id, speaker=entry.speaker)


class InTheWild(tfds.core.ShardBasedBuilder):
    """In-the-Wild audio deepfakes (16 kHz int16 PCM, native length)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: resampled to 16 kHz, array_record."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Download release_in_the_wild.zip from {DOWNLOAD_URL}, extract it and pass the directory
    containing `release_in_the_wild/` (or that folder itself) as manual_dir. It must hold
    `meta.csv` (columns file,speaker,label) and the wav files it lists.
    """
    SHARD_SIZE = C.DEFAULT_SHARD_SIZE

    def _info(self) -> tfds.core.DatasetInfo:
        return C.dataset_info(
            self,
            description="In-the-Wild: real and deepfake speech of 58 public figures, resampled to 16 kHz.",
            features=C.audio_features({}),
            homepage=DOWNLOAD_URL,
            citation=_CITATION,
        )

    def _shard_iterators_per_split(self, dl_manager):
        root = find_wild_root(dl_manager.manual_dir)
        entries = P.parse_in_the_wild_meta(root / "meta.csv")
        P.check_files_exist([root / e.file for e in entries], "in_the_wild/eval")
        make = functools.partial(_make_example, root=root)
        return {"eval": C.shard_generators(entries, make, self.SHARD_SIZE, "in_the_wild/eval")}


def build(manual_dir: str | os.PathLike, data_dir: str | os.PathLike, *, overwrite: bool = False):
    """Build (or reuse) ``in_the_wild`` under ``data_dir``; the count is checked against meta.csv."""
    n = len(P.parse_in_the_wild_meta(find_wild_root(manual_dir) / "meta.csv"))
    return C.build(InTheWild, manual_dir=manual_dir, data_dir=data_dir, expected_counts={"eval": n}, overwrite=overwrite)
