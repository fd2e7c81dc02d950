"""TFDS builder ``asvspoof2021_df``: ASVspoof 2021 DeepFake evaluation data (no TensorFlow).

One split, ``eval``: all 611,829 trials of ``keys/DF/CM/trial_metadata.txt`` (subsets eval,
progress, hidden), 16 kHz int16 PCM at native length, with features ``utt_id`` (trial),
``speaker``, ``label`` and ``compression``, ``source``, ``attack``, ``trim``, ``subset``,
``vocoder``, ``task``, ``team``, ``gender_pair``, ``language``. The audio may be one
``ASVspoof2021_DF_eval/flac/`` or the four shipped parts. Shared code:
:mod:`rawnet2_jax.data.asvspoof2021_common`.

    python -m rawnet2_jax.data build asvspoof2021_df --manual-dir DIR --data-dir DATA_DIR
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from rawnet2_jax.data import asvspoof2021_common as A
from rawnet2_jax.data import keys2021 as K


class Asvspoof2021Df(A.Asvspoof2021Mixin, tfds.core.ShardBasedBuilder):
    """ASVspoof 2021 DF eval (keys + 16 kHz int16 PCM)."""

    TRACK = K.DF
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Extract ASVspoof2021_DF_eval_part00..03.tar.gz (https://zenodo.org/record/4835108) and
    DF-keys-full.tar.gz (https://www.asvspoof.org/asvspoof2021/DF-keys-full.tar.gz) into one folder
    and pass it as manual_dir:
      ASVspoof2021_DF_eval/flac/<trial>.flac  (or ASVspoof2021_DF_eval_part0N/ASVspoof2021_DF_eval/flac/)
      keys/DF/CM/trial_metadata.txt
    """


def build(manual_dir: str | os.PathLike, data_dir: str | os.PathLike, *, overwrite: bool = False):
    """Build (or reuse) ``asvspoof2021_df``; count checked against the keys, keys copied next to it."""
    return A.build(Asvspoof2021Df, manual_dir, data_dir, overwrite=overwrite)
