"""Datasets for RawNet2: protocols, TFDS builders (no TensorFlow), grain pipeline, demo corpus.

Modules (imported lazily: ``import rawnet2_jax.data`` stays cheap):

* :mod:`~rawnet2_jax.data.protocols`   parsers for CM protocols, ASV scores, meta.csv; LA layout
* :mod:`~rawnet2_jax.data.asvspoof2019_la`, :mod:`~rawnet2_jax.data.in_the_wild`,
  :mod:`~rawnet2_jax.data.asvspoof2021_la`, :mod:`~rawnet2_jax.data.asvspoof2021_df`   TFDS builders
* :mod:`~rawnet2_jax.data.keys2021`    the ASVspoof 2021 key files
* :mod:`~rawnet2_jax.data.pipeline`    ``train_batches`` / ``eval_batches`` (grain)
* :mod:`~rawnet2_jax.data.demo`        synthetic corpus in the ASVspoof 2019 LA layout

Typical use::

    from rawnet2_jax.data import data_source, train_batches, eval_batches
    src = data_source("asvspoof2019_la", "train", data_dir)
    for batch in train_batches(src, cfg, batch_size=32, seed=0): ...
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["DATASETS", "build_dataset", "is_built", "data_source", "train_batches", "eval_batches", "steps_per_epoch", "make_demo_corpus"]

#: Every TFDS dataset of the project: name -> its one split that evaluation uses. Each is
#: built by ``rawnet2_jax.data.<name>.build(manual_dir, data_dir, overwrite=...)``.
DATASETS = ("asvspoof2019_la", "in_the_wild", "asvspoof2021_la", "asvspoof2021_df")
EVAL_SPLITS = {name: "eval" for name in DATASETS}


def build_dataset(name: str, manual_dir: str | os.PathLike, data_dir: str | os.PathLike, *, overwrite: bool = False):
    """Build (or reuse) dataset ``name``; returns the TFDS builder."""
    import importlib

    from rawnet2_jax.errors import DataError

    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return importlib.import_module(f"rawnet2_jax.data.{name}").build(manual_dir, data_dir, overwrite=overwrite)


def is_built(name: str, data_dir: str | os.PathLike) -> bool:
    """Whether ``data_dir/<name>/<version>/dataset_info.json`` exists (no TFDS import)."""
    root = os.path.join(os.fspath(data_dir), name)
    return os.path.isdir(root) and any(
        os.path.isfile(os.path.join(root, v, "dataset_info.json")) for v in os.listdir(root)
    )


def data_source(name: str, split: str, data_dir: str | os.PathLike) -> Any:
    """Random-access source of a built dataset (``tfds.data_source``, array_record, no TF).

    Raises DataError with the build command when the dataset is not there.
    """
    import tensorflow_datasets as tfds

    from rawnet2_jax.errors import DataError

    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if not is_built(name, data_dir):
        raise DataError(
            f"{name} is not built in {data_dir}; run: python -m rawnet2_jax.data build {name} "
            f"--manual-dir DIR --data-dir {data_dir}"
        )
    try:
        return tfds.data_source(name, split=split, data_dir=os.fspath(data_dir))
    except ValueError as e:
        raise DataError(f"{name} in {data_dir}: {str(e).splitlines()[0]}") from e


def __getattr__(name: str) -> Any:
    if name in ("train_batches", "eval_batches", "steps_per_epoch"):
        from rawnet2_jax.data import pipeline

        return getattr(pipeline, name)
    if name == "make_demo_corpus":
        from rawnet2_jax.data.demo import make_demo_corpus

        return make_demo_corpus
    raise AttributeError(name)
