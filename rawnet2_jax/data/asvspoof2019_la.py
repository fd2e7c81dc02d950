"""TFDS builder ``asvspoof2019_la``: ASVspoof 2019 Logical Access, built without TensorFlow.

Splits ``train`` / ``dev`` / ``eval`` follow the CM protocol files; every example holds
the whole utterance at its native length (int16 PCM bytes, 16 kHz) plus label
(0 spoof / 1 bona fide), attack id (``-`` for bona fide, ``A01``..``A19``), speaker and
utterance id. Stored as ``array_record``; read with random access and no TensorFlow::

    import tensorflow_datasets as tfds
    import rawnet2_jax.data.asvspoof2019_la  # registers the builder
    src = tfds.data_source("asvspoof2019_la", split="train", data_dir=DATA_DIR)
    ex = src[0]   # {"audio": b"...", "label": 1, "attack": b"-", ...}

Build (once) from the extracted corpus::

    python -m rawnet2_jax.data build asvspoof2019_la --manual-dir DIR --data-dir DATA_DIR
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

DOWNLOAD_URL = "https://datashare.ed.ac.uk/handle/10283/3336"

_DESCRIPTION = """ASVspoof 2019 Logical Access (LA): bona fide speech (VCTK) and spoofed speech
from 19 TTS / VC systems (A01-A06 in train/dev, A07-A19 in eval). Audio is 16 kHz mono,
stored as int16 PCM bytes at native length."""

_CITATION = """@article{wang2020asvspoof,
  title={ASVspoof 2019: A large-scale public database of synthesized, converted and replayed speech},
  author={Wang, Xin and Yamagishi, Junichi and Todisco, Massimiliano and others},
  journal={Computer Speech \\& Language}, volume={64}, pages={101114}, year={2020}}"""


def _make_example(entry: P.CmEntry, *, la_root: Path, split: str):
    pcm = load_pcm16(P.la_audio_path(la_root, split, entry.utt_id), max_seconds=None, on_silent="warn")
    return entry.utt_id, C.pcm_example(
        pcm, label=entry.label, utt_id=entry.utt_id, speaker=entry.speaker, attack=entry.attack
    )


class Asvspoof2019La(tfds.core.ShardBasedBuilder):
    """ASVspoof 2019 LA (CM protocols, 16 kHz int16 PCM, native length)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: array_record, audio as int16 PCM bytes."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Download LA.zip of ASVspoof 2019 from {DOWNLOAD_URL} (Edinburgh DataShare,
    ODC-By licence), extract it, and pass the directory that contains the extracted `LA/`
    folder (or `LA/` itself) as manual_dir. Expected layout:
      LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.{{train.trn,dev.trl,eval.trl}}.txt
      LA/ASVspoof2019_LA_{{train,dev,eval}}/flac/<utt_id>.flac
    """
    #: Utterances per array_record shard; bounds the builder's memory (~110 MB per shard).
    SHARD_SIZE = C.DEFAULT_SHARD_SIZE

    def _info(self) -> tfds.core.DatasetInfo:
        return C.dataset_info(
            self,
            description=_DESCRIPTION,
            features=C.audio_features({"attack": tfds.features.Text(doc="'-' for bona fide, else A01..A19")}),
            homepage="https://www.asvspoof.org/index2019.html",
            citation=_CITATION,
        )

    def _shard_iterators_per_split(self, dl_manager):
        la_root = P.find_la_root(dl_manager.manual_dir)
        out = {}
        for split in P.LA_SPLITS:
            entries = P.parse_cm_protocol(P.la_protocol_path(la_root, split))
            P.check_files_exist(
                [P.la_audio_path(la_root, split, e.utt_id) for e in entries],
                f"asvspoof2019_la/{split}",
            )
            make = functools.partial(_make_example, la_root=la_root, split=split)
            out[split] = C.shard_generators(entries, make, self.SHARD_SIZE, f"asvspoof2019_la/{split}")
        return out


def protocol_counts(manual_dir: str | os.PathLike) -> dict[str, int]:
    """Utterances per split; an utterance listed in two splits' protocols (train in dev: a
    leak that would make the dev EER meaningless) is a DataError."""
    la_root = P.find_la_root(manual_dir)
    entries = {s: P.parse_cm_protocol(P.la_protocol_path(la_root, s)) for s in P.LA_SPLITS}
    first: dict[str, str] = {}
    for split, es in entries.items():
        for e in es:
            if first.setdefault(e.utt_id, split) != split:
                raise DataError(f"utterance {e.utt_id} is in both the {first[e.utt_id]} and the {split} protocol "
                                f"of {la_root}; each utterance belongs to one split (check the protocol files)")
    return {s: len(es) for s, es in entries.items()}


def build(manual_dir: str | os.PathLike, data_dir: str | os.PathLike, *, overwrite: bool = False):
    """Build (or reuse) ``asvspoof2019_la`` under ``data_dir``; counts checked against the protocols."""
    counts = protocol_counts(manual_dir)
    official = {s: n for s, (n, _) in P.LA_OFFICIAL_COUNTS.items()}
    if counts != official:
        C.log.info("asvspoof2019_la: protocol counts %s differ from the official %s (subset or demo corpus)",
                   counts, official)
    return C.build(Asvspoof2019La, manual_dir=manual_dir, data_dir=data_dir, expected_counts=counts, overwrite=overwrite)
