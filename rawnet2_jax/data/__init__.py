"""Datasets for RawNet2: protocols, TFDS builders (no TensorFlow), grain pipeline, demo corpus.

Modules (imported lazily: ``import rawnet2_jax.data`` stays cheap):

* :mod:`~rawnet2_jax.data.protocols`   parsers for CM protocols, ASV scores, meta.csv; LA layout
* :mod:`~rawnet2_jax.data.asvspoof2019_la`, :mod:`~rawnet2_jax.data.in_the_wild`   TFDS builders
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

__all__ = ["data_source", "train_batches", "eval_batches", "steps_per_epoch", "make_demo_corpus"]

DATASETS = ("asvspoof2019_la", "in_the_wild")


def data_source(name: str, split: str, data_dir: str | os.PathLike) -> Any:
    """Random-access source of a built dataset (``tfds.data_source``, array_record, no TF).

    Raises DataError with the build command when the dataset is not there.
    """
    import tensorflow_datasets as tfds

    from rawnet2_jax.errors import DataError

    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    root = os.path.join(os.fspath(data_dir), name)
    if not os.path.isdir(root) or not any(
        os.path.isfile(os.path.join(root, v, "dataset_info.json")) for v in os.listdir(root)
    ):
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
