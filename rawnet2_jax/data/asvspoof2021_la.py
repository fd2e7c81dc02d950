"""TFDS builder ``asvspoof2021_la``: ASVspoof 2021 Logical Access evaluation data (no TensorFlow).

One split, ``eval``: all 181,566 trials of ``keys/LA/CM/trial_metadata.txt`` (subsets eval,
progress, hidden), 16 kHz int16 PCM at native length, with features ``utt_id`` (trial),
``speaker``, ``label`` and ``codec``, ``transmission``, ``attack``, ``trim``, ``subset``.
Layout and shared code: :mod:`rawnet2_jax.data.asvspoof2021_common`.

    python -m rawnet2_jax.data build asvspoof2021_la --manual-dir DIR --data-dir DATA_DIR
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from rawnet2_jax.data import asvspoof2021_common as A
from rawnet2_jax.data import keys2021 as K


class Asvspoof2021La(A.Asvspoof2021Mixin, tfds.core.ShardBasedBuilder):
    """ASVspoof 2021 LA eval (keys + 16 kHz int16 PCM)."""

    TRACK = K.LA
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Extract ASVspoof2021_LA_eval.tar.gz (https://zenodo.org/record/4837263) and LA-keys-full.tar.gz
    (https://www.asvspoof.org/asvspoof2021/LA-keys-full.tar.gz) into one folder and pass it as manual_dir:
      ASVspoof2021_LA_eval/flac/<trial>.flac
      keys/LA/CM/trial_metadata.txt, keys/LA/ASV/trial_metadata.txt, keys/LA/ASV/ASVTorch_Kaldi/score.txt
    """


def build(manual_dir: str | os.PathLike, data_dir: str | os.PathLike, *, overwrite: bool = False):
    """Build (or reuse) ``asvspoof2021_la``; count checked against the keys, keys copied next to it."""
    return A.build(Asvspoof2021La, manual_dir, data_dir, overwrite=overwrite)
