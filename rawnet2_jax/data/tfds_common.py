"""Shared machinery of the TFDS builders (no TensorFlow needed).

Storage: ``array_record`` shards; audio is int16 little-endian PCM at 16 kHz, stored as raw
bytes in a scalar ``tfds.features.Tensor(dtype=np.object_)`` (~6x faster to read than an
int16 tensor feature); decode with :func:`rawnet2_jax.audio.pcm16_to_float`.

Why ``tfds.core.ShardBasedBuilder`` and not ``GeneratorBasedBuilder``: the generator path
sends every example through ``tfds.core.shuffle.Shuffler``, which keeps up to
``MAX_MEM_BUFFER_SIZE`` (1 GB) in memory and past it spills to bucket files through
``tf.io.gfile`` -- without TensorFlow that raises, so any split over 1 GB (ASVspoof 2019 LA
train is ~2.8 GB of PCM) cannot be built. ``disable_shuffling=True`` does not help (it only
changes the sort key, the Shuffler is still used). ``ShardBasedBuilder`` writes each shard
straight to its file with ``ShardWriter`` (no Shuffler), so memory is bounded by one shard
(its examples are held once by an ``itertools.tee``) whatever the split size. The order on
disk is the protocol order; the training pipeline shuffles per epoch anyway.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rawnet2_jax.errors import DataError
from rawnet2_jax.fsutil import DirLock, make_temp_dir, recover_moved_aside, remove_stale_temps, replace_dir

log = logging.getLogger(__name__)

#: Utterances per array_record shard (~110 MB of LA PCM). Bounds the builder's memory.
DEFAULT_SHARD_SIZE = 1000
#: Threads decoding audio inside one shard (libsndfile/soxr release the GIL).
DECODE_THREADS = 4


def shard_chunks(items: Sequence[Any], shard_size: int) -> list[Sequence[Any]]:
    n = max(1, math.ceil(len(items) / shard_size))
    size = math.ceil(len(items) / n)
    return [items[i * size : (i + 1) * size] for i in range(n)]


class SplitProgress:
    """One tqdm bar per split, shared by its shard generators."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc = total, desc
        self._bar = None

    def update(self, n: int = 1) -> None:
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=self.desc, unit="utt", dynamic_ncols=True)
        self._bar.update(n)
        if self._bar.n >= self.total:
            self._bar.close()


def threaded_examples(
    items: Sequence[Any],
    make_example: Callable[[Any], tuple[str, dict[str, Any]]],
    progress: SplitProgress | None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield make_example(item) in order, decoding with a few threads."""
    with concurrent.futures.ThreadPoolExecutor(DECODE_THREADS) as pool:
        for key_example in pool.map(make_example, items):
            if progress is not None:
                progress.update()
            yield key_example


def shard_generators(
    items: Sequence[Any],
    make_example: Callable[[Any], tuple[str, dict[str, Any]]],
    shard_size: int,
    desc: str,
) -> list[Callable[[], Iterator[tuple[str, dict[str, Any]]]]]:
    progress = SplitProgress(len(items), desc)
    return [
        functools.partial(threaded_examples, chunk, make_example, progress)
        for chunk in shard_chunks(items, shard_size)
    ]


def remove_stale_incomplete_dirs(dataset_dir: Path) -> list[Path]:
    """Delete what killed builds left in ``data_dir/<name>/``: ``incomplete.*`` dirs, and
    version dirs without ``dataset_info.json`` (which TFDS would take as built).

    TFDS writes into ``incomplete.XXXXXX_<version>`` and renames it when done; a normal
    exception removes it, but SIGKILL / power loss leaves it. A new build never reuses it,
    so it only wastes disk; we remove it before building, holding the build's lock.
    """
    removed = []
    if dataset_dir.is_dir():
        for p in sorted(dataset_dir.iterdir()):
            unfinished = p.name.startswith("incomplete.") or (
                p.name[:1].isdigit() and not (p / "dataset_info.json").is_file())
            if p.is_dir() and unfinished:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def build(
    builder_cls: type,
    *,
    manual_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    expected_counts: dict[str, int] | None = None,
    overwrite: bool = False,
    **builder_kwargs: Any,
):
    """Build (or reuse) a dataset and check the written counts; returns the builder.

    ``overwrite`` of a finished build builds the new one beside it (in a hidden temporary data
    dir next to ``data_dir/<name>``) and swaps it in only once it is complete and counted: a
    bad file, a full disk or a kill halfway leaves the old dataset as it was.
    """
    if not os.fspath(data_dir).strip():  # Path("") is the current directory
        raise DataError("the data dir is empty (--data-dir \"\"); give the TFDS data dir to build into")
    data_dir = Path(data_dir).expanduser()
    manual_dir = Path(manual_dir).expanduser()
    if not manual_dir.is_dir():
        raise DataError(f"{manual_dir}: manual dir not found")
    builder_kwargs.setdefault("file_format", "array_record")
    probe = builder_cls(data_dir=os.fspath(data_dir), **builder_kwargs)
    name, version = probe.name, str(probe.version)
    marker = data_dir / name / version / "dataset_info.json"  # TFDS's "this version is built"
    if marker.is_file() and not overwrite:  # reused: nothing is written (read-only works)
        return _build_into(builder_cls, manual_dir, data_dir, expected_counts, builder_kwargs)
    data_dir.mkdir(parents=True, exist_ok=True)
    with DirLock(data_dir, f".{name}.lock", subject=f"data dir {data_dir} ({name})",
                 busy_fix="wait for that build to end (or stop it), or build into another --data-dir",
                 unwritable_fix="give a writable --data-dir"):
        if recover_moved_aside(data_dir / name / version, lambda p: (p / "dataset_info.json").is_file()):
            log.warning("put back %s, which a build killed while swapping it left aside", data_dir / name / version)
        leftovers = remove_stale_temps(data_dir / name, version) + remove_stale_incomplete_dirs(data_dir / name)
        for p in leftovers + remove_stale_temps(data_dir, name):  # the last: a killed --overwrite's scratch
            log.warning("removed the leftovers of an interrupted build: %s", p)
        if not (overwrite and marker.is_file()):  # a build that ended meanwhile is reused
            return _build_into(builder_cls, manual_dir, data_dir, expected_counts, builder_kwargs)
        scratch = make_temp_dir(data_dir, name)
        try:
            fresh = _build_into(builder_cls, manual_dir, scratch, expected_counts, builder_kwargs)
            replace_dir(scratch / name / str(fresh.version), data_dir / name / str(fresh.version))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return builder_cls(data_dir=os.fspath(data_dir), **builder_kwargs)


def _build_into(builder_cls: type, manual_dir: Path, data_dir: Path, expected_counts: dict[str, int] | None,
                builder_kwargs: dict[str, Any]):
    """Build into ``data_dir`` (reusing a finished build there) and check the counts."""
    import tensorflow_datasets as tfds

    builder = builder_cls(data_dir=os.fspath(data_dir), **builder_kwargs)
    # TFDS prints "Downloading and preparing dataset ..." / "... downloaded and prepared" to
    # stdout itself (before our own errors, too); our command lines say what they do.
    builder._log_download_bytes = lambda: None
    builder._log_download_done = lambda: None
    mode = tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir), download_mode=mode),
    )
    if expected_counts:
        for split, n in expected_counts.items():
            got = builder.info.splits[split].num_examples
            if got != n:
                raise DataError(
                    f"{builder.name}/{split} in {builder.data_dir} has {got} utterances but its protocol "
                    f"lists {n}; rebuild with overwrite=True (--overwrite)"
                )
    return builder


def dataset_info(builder: Any, **kwargs: Any) -> Any:
    """``builder.dataset_info_from_configs(**kwargs)``, without TFDS's lookup of published metadata.

    A builder made where no ``dataset_info.json`` exists yet (every first build) calls
    ``DatasetInfo.initialize_from_bucket``, which makes ``tempfile.mkdtemp("tfds")`` to copy
    metadata from TFDS's bucket into and never removes it: one empty ``$TMPDIR/tmp*tfds`` per
    build, hundreds after a test run. Our datasets are not on that bucket (and TFDS keeps its
    GCS access off), so there is nothing to fetch, and the lookup is skipped.
    """
    info = builder.dataset_info_from_configs(**kwargs)
    info.initialize_from_bucket = _nothing_published
    return info


def _nothing_published() -> None:
    return None


def audio_features(extra: dict[str, Any]) -> Any:
    import tensorflow_datasets as tfds

    feats = {
        "audio": tfds.features.Tensor(shape=(), dtype=np.object_, doc="int16 little-endian PCM bytes, 16 kHz mono"),
        "num_samples": tfds.features.Tensor(shape=(), dtype=np.int32, doc="length of audio in samples"),
        "label": tfds.features.ClassLabel(names=["spoof", "bonafide"], doc="0 = spoof, 1 = bona fide"),
        "utt_id": tfds.features.Text(doc="utterance id"),
        "speaker": tfds.features.Text(doc="speaker id / name"),
    }
    feats.update(extra)
    return tfds.features.FeaturesDict(feats)


def pcm_example(pcm: np.ndarray, **fields: Any) -> dict[str, Any]:
    pcm = np.ascontiguousarray(pcm, dtype="<i2")
    return {"audio": pcm.tobytes(), "num_samples": np.int32(pcm.shape[0]), **fields}
