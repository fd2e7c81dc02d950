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
        os.path.isfile(os.path.join(root, v, "dataset_info.json")) for v in os.listdir(root) if not v.startswith(".")
    )


def data_source(name: str, split: str, data_dir: str | os.PathLike) -> Any:
    """Random-access source of a built split (array_record, no TF), or a one-line DataError.

    The one way to open a TFDS split (training, evaluation, benchmark). Never builds or
    downloads anything (so TFDS prints nothing): a dataset that is not built gets the build
    command, a split it does not have gets the list of its splits.
    """
    from rawnet2_jax.errors import DataError, first_line

    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; use one of {', '.join(DATASETS)}")
    data_dir = os.fspath(data_dir)
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise DataError(f"data directory {data_dir} is a file, not a directory; give the TFDS data dir the "
                        "dataset was built into")
    if not os.path.isdir(data_dir):
        raise DataError(f"data directory {data_dir} does not exist; build the dataset there first")
    build_cmd = f"python -m rawnet2_jax.data build {name} --manual-dir CORPUS --data-dir {data_dir}"
    if not is_built(name, data_dir):
        raise DataError(f"{name} is not built in {data_dir} (no finished build there); build it with `{build_cmd}`")
    import importlib

    import tensorflow_datasets as tfds

    importlib.import_module(f"rawnet2_jax.data.{name}")  # registers the builder
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        splits = list(builder.info.splits)
    except Exception as e:
        raise DataError(
            f"cannot read {name} under {data_dir} ({type(e).__name__}: {first_line(e)[:200]}); "
            f"rebuild it with `{build_cmd} --overwrite`"
        ) from None
    if not splits:  # built, but as another version than this code's builder reads
        found = sorted(v for v in os.listdir(os.path.join(data_dir, name)) if not v.startswith("."))
        raise DataError(f"{name} in {data_dir} holds no build of version {builder.version} (found: "
                        f"{', '.join(found)}); build it with `{build_cmd}`")
    if split not in splits:
        raise DataError(f"{name} in {data_dir} has no split {split!r}; its splits are: {', '.join(splits)}")
    rebuild = f"rebuild it with `{build_cmd} --overwrite`"
    missing = [f for f in builder.info.splits[split].filenames if not os.path.isfile(os.path.join(builder.data_dir, f))]
    if missing:
        raise DataError(f"{name} split {split!r} under {data_dir} misses {len(missing)} of its files "
                        f"({missing[0]}...); {rebuild}")
    try:
        return CheckedSource(builder.as_data_source(split=split), f"{name} split {split!r} under {data_dir}", rebuild)
    except Exception as e:
        raise DataError(
            f"cannot open {name} split {split!r} under {data_dir} ({type(e).__name__}: {first_line(e)[:200]}); "
            f"{rebuild}"
        ) from None


class CheckedSource:
    """A TFDS data source whose read failures (array_record's ``RuntimeError`` for a truncated
    or overwritten shard: "Corrupted Riegeli/records file", "open() failed") are one-line
    :class:`~rawnet2_jax.errors.DataError` s that name the split and say to rebuild it."""

    def __init__(self, source: Any, what: str, fix: str):
        self.source, self.what, self.fix = source, what, fix

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i):
        return self._read(self.source.__getitem__, i)

    def __getitems__(self, indices):
        getitems = getattr(self.source, "__getitems__", None)
        if getitems is None:
            return [self[i] for i in indices]
        return self._read(getitems, indices)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"CheckedSource({self.what}, {len(self)} records)"

    def _read(self, read, arg):
        from rawnet2_jax.errors import DataError, first_line

        try:
            return read(arg)
        except (RuntimeError, OSError) as e:
            raise DataError(f"{self.what} cannot be read, its files are damaged ({first_line(e)[:200]}); "
                            f"{self.fix}") from None


def __getattr__(name: str) -> Any:
    if name in ("train_batches", "eval_batches", "steps_per_epoch"):
        from rawnet2_jax.data import pipeline

        return getattr(pipeline, name)
    if name == "make_demo_corpus":
        from rawnet2_jax.data.demo import make_demo_corpus

        return make_demo_corpus
    raise AttributeError(name)
