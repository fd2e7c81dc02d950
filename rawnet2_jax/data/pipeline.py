"""Input pipeline (grain): deterministic, resumable, fixed-shape batches.

Two entry points, both over any random-access source (``len(src)``, ``src[i]``; optional
``src.__getitems__(indices)``) whose records are dicts with ``audio`` (int16 PCM bytes as
stored by the TFDS builders, or an int16 / float numpy array), ``label`` (0 spoof /
1 bona fide) and ``utt_id`` (bytes or str) -- e.g. ``tfds.data_source(...)`` or a list::

    it = train_batches(src, cfg, batch_size=32, seed=0, start_epoch=0, start_step=0)
    for batch in it:            # {"audio": f32 (B, T), "label": i32 (B,), "mask": bool (B,),
        ...                     #  "utt_id": object (B,)}  (B = per-host batch)
        ckpt_extra = it.state   # {"epoch": e, "step": s}: the position of the NEXT batch
    # resume: train_batches(src, cfg, 32, seed=0, start_epoch=e, start_step=s)

    for batch in eval_batches(src, cfg, batch_size=64):
        ...                     # last batch padded with mask=False rows

Order: epoch ``e`` visits ``np.random.default_rng([seed, e]).permutation(len(src))``; global
batch ``k`` is ``perm[k*B_global:(k+1)*B_global]`` and host ``p`` takes its ``p``-th slice of
``B_global / process_count`` rows. Training drops the final partial batch of an epoch
(``steps_per_epoch = len // B_global``); evaluation keeps every utterance exactly once and
pads the last batch. The order depends only on (seed, epoch, step), never on the number of
workers or threads, so a restored ``{"epoch", "step"}`` replays exactly the same batches.

Each pipeline element is a whole per-host batch: records are read in one ``__getitems__``
call, decoded (int16 -> float32 / 32768) and cut / padded to ``cfg.num_samples`` with
``cfg.pad_mode`` (see :func:`rawnet2_jax.audio.fit_length`); training rows then go through
optional codec augmentation (``codec_augment=CodecAugConfig(prob=...)``, drawn per (seed,
epoch, record index); never in :func:`eval_batches`). ``num_threads`` batches are
prepared in parallel threads; ``num_workers > 0`` moves them to grain worker processes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from rawnet2_jax.audio import fit_length, pcm16_to_float

PAD_INDEX = -1


def _host(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    return int(process_index), int(process_count)


def _local_devices(local_device_count: int | None) -> int:
    if local_device_count is None:
        import jax

        return jax.local_device_count()
    return int(local_device_count)


def per_host_batch_size(
    batch_size: int, *, process_count: int | None = None, local_device_count: int | None = None
) -> int:
    """Rows per host of a global ``batch_size``; checks it divides over hosts and local devices."""
    if process_count is None:
        import jax

        process_count = jax.process_count()
    pc = int(process_count)
    ldc = _local_devices(local_device_count)
    if batch_size <= 0 or batch_size % pc:
        raise ValueError(f"batch_size {batch_size} must be a positive multiple of the {pc} processes")
    local = batch_size // pc
    if local % ldc:
        raise ValueError(
            f"per-host batch {local} (batch_size {batch_size} / {pc} processes) must divide over "
            f"{ldc} local devices; use a multiple of {pc * ldc}"
        )
    return local


def steps_per_epoch(num_records: int, batch_size: int) -> int:
    """Training steps in one epoch (global batches; the final partial batch is dropped)."""
    return num_records // batch_size


# ---------------------------------------------------------------------------------------
# Record decoding
# ---------------------------------------------------------------------------------------


def _to_str(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray) and v.shape == ():
        return _to_str(v.item())
    return str(v)


def decode_audio(audio: Any) -> np.ndarray:
    """A record's ``audio`` -> float32 1-D (bytes = int16 PCM)."""
    if isinstance(audio, (bytes, bytearray, memoryview)):
        return pcm16_to_float(audio)
    a = np.asarray(audio)
    if a.dtype == np.int16:
        return pcm16_to_float(a)
    return a.astype(np.float32, copy=False)


def _read(source: Any, indices: Sequence[int]) -> list[Any]:
    getitems = getattr(source, "__getitems__", None)
    if getitems is not None:
        return list(getitems(list(indices)))
    return [source[i] for i in indices]


@dataclasses.dataclass(frozen=True)
class _BatchLoader:
    """Reads + decodes one per-host batch from a row of record indices (PAD_INDEX = padding)."""

    source: Any
    num_samples: int
    pad_mode: str

    def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        b, t = len(indices), self.num_samples
        audio = np.zeros((b, t), dtype=np.float32)
        label = np.zeros((b,), dtype=np.int32)
        mask = indices != PAD_INDEX
        utt = np.full((b,), "", dtype=object)
        real = np.flatnonzero(mask)
        if real.size:
            records = _read(self.source, [int(indices[i]) for i in real])
            for row, rec in zip(real, records):
                x = decode_audio(rec["audio"])
                if x.shape[0] == 0:
                    raise ValueError(f"record {int(indices[row])} ({_to_str(rec.get('utt_id', '?'))}) has no audio")
                audio[row] = fit_length(x, t, self.pad_mode)
                label[row] = int(rec["label"])
                utt[row] = _to_str(rec.get("utt_id", str(int(indices[row]))))
        return {"audio": audio, "label": label, "mask": mask, "utt_id": utt}


# ---------------------------------------------------------------------------------------
# Index plans (pure functions of seed / epoch / step)
# ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def epoch_permutation(num_records: int, seed: int, epoch: int) -> np.ndarray:
    """The record order of one training epoch."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(num_records)


@dataclasses.dataclass(frozen=True)
class _TrainPlan:
    """Sequence of per-host index rows, element j = global step start + j (grain source)."""

    num_records: int
    seed: int
    global_batch: int
    local_batch: int
    process_index: int
    start: int  # absolute step (epoch * spe + step) of element 0
    length: int

    @property
    def spe(self) -> int:
        return steps_per_epoch(self.num_records, self.global_batch)

    def __len__(self) -> int:
        return self.length

    def position(self, j: int) -> tuple[int, int]:
        return divmod(self.start + j, self.spe)

    def __getitem__(self, j: int) -> tuple[int, np.ndarray]:
        """``(epoch, record indices of this host's rows)`` of element j."""
        if not 0 <= j < self.length:
            raise IndexError(j)
        epoch, step = self.position(j)
        perm = epoch_permutation(self.num_records, self.seed, epoch)
        lo = step * self.global_batch + self.process_index * self.local_batch
        return epoch, perm[lo : lo + self.local_batch]


@dataclasses.dataclass(frozen=True)
class _TrainLoader:
    """A training batch: :class:`_BatchLoader`, then codec augmentation of each fitted row.

    The codec of a row is a function of (seed, epoch, record index) only
    (:func:`rawnet2_jax.augment.codec.draw_codec`), so resume and host count keep it.
    """

    load: _BatchLoader
    codec: Any  # CodecAugConfig | None
    seed: int

    def __call__(self, element: tuple[int, np.ndarray]) -> dict[str, np.ndarray]:
        epoch, indices = element
        batch = self.load(indices)
        if self.codec is not None and self.codec.enabled:
            from rawnet2_jax.augment.codec import maybe_degrade

            audio = batch["audio"]
            for row in np.flatnonzero(batch["mask"]):
                audio[row], _ = maybe_degrade(audio[row], self.codec, self.seed, epoch, int(indices[row]))
        return batch


@dataclasses.dataclass(frozen=True)
class _EvalPlan:
    num_records: int
    global_batch: int
    local_batch: int
    process_index: int

    def __len__(self) -> int:
        return -(-self.num_records // self.global_batch)

    def __getitem__(self, k: int) -> np.ndarray:
        if not 0 <= k < len(self):
            raise IndexError(k)
        lo = k * self.global_batch + self.process_index * self.local_batch
        idx = np.arange(lo, lo + self.local_batch)
        return np.where(idx < self.num_records, idx, PAD_INDEX)


def _iterate(plan: Sequence[Any], loader: Any, num_threads: int, num_workers: int, prefetch: int):
    import grain

    ds = grain.MapDataset.source(plan).map(loader)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, num_threads), prefetch_buffer_size=max(1, prefetch)))
    mp = num_workers > 0
    if mp:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's worker code reads absl flags
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=1))
    return _closing(iter(it), copy=mp)


def _closing(it: Any, copy: bool) -> Iterator[dict[str, np.ndarray]]:
    """Yield from a grain iterator and close it (threads, worker processes) when done."""
    try:
        for b in it:
            # Copy out of grain's shared-memory blocks so they are released batch by batch.
            yield {k: np.array(v) for k, v in b.items()} if copy else b
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------


class TrainIterator:
    """Iterator of training batches; :attr:`state` is the position of the next batch."""

    def __init__(self, plan: _TrainPlan, inner: Iterator[dict[str, np.ndarray]]):
        self._plan = plan
        self._inner = inner
        self._j = 0

    @property
    def steps_per_epoch(self) -> int:
        return self._plan.spe

    @property
    def state(self) -> dict[str, int]:
        """``{"epoch": e, "step": s}``: pass to :func:`train_batches` to resume exactly here."""
        epoch, step = self._plan.position(self._j)
        return {"epoch": int(epoch), "step": int(step)}

    def close(self) -> None:
        """Stop background threads / worker processes (also done at the end of num_epochs)."""
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()

    def __iter__(self) -> "TrainIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._j >= len(self._plan):
            self.close()
            raise StopIteration
        batch = next(self._inner)
        self._j += 1
        return batch


def train_batches(
    source: Any,
    cfg: Any,
    batch_size: int,
    seed: int,
    start_epoch: int = 0,
    start_step: int = 0,
    *,
    num_epochs: int | None = None,
    num_threads: int = 2,
    num_workers: int = 0,
    prefetch: int = 4,
    process_index: int | None = None,
    process_count: int | None = None,
    local_device_count: int | None = None,
    codec_augment: Any = None,
) -> TrainIterator:
    """Shuffled training batches from (start_epoch, start_step) on.

    Args:
      source: random-access records (see module docstring).
      cfg: anything with ``num_samples`` and ``pad_mode`` (a ``ModelConfig``).
      batch_size: GLOBAL batch size (all hosts); each host yields ``batch_size / process_count``
        rows, which must divide over its local devices.
      seed: shuffling seed; epoch ``e`` uses ``default_rng([seed, e])``.
      start_epoch, start_step: where to start (``TrainIterator.state`` of a previous run).
      num_epochs: stop at the end of epoch ``start_epoch + num_epochs - 1`` (the first,
        possibly partial, epoch counts); ``None`` = never stop.
      num_threads: batches prepared in parallel threads (per process).
      num_workers: grain worker processes (0 = in this process). Results do not depend on it.
      process_index, process_count, local_device_count: default to ``jax.*``.
      codec_augment: a :class:`rawnet2_jax.augment.codec.CodecAugConfig` (``None`` or
        ``prob`` 0 = off): each row, after cutting to ``num_samples``, goes through a codec
        round trip with that probability, drawn per (seed, epoch, record index).
    """
    pi, pc = _host(process_index, process_count)
    local = per_host_batch_size(batch_size, process_count=pc, local_device_count=local_device_count)
    n = len(source)
    spe = steps_per_epoch(n, batch_size)
    if spe == 0:
        raise ValueError(f"dataset of {n} utterances is smaller than one batch of {batch_size}")
    if not 0 <= start_step < spe:
        raise ValueError(f"start_step {start_step} outside 0..{spe - 1} (steps per epoch)")
    start = start_epoch * spe + start_step
    length = (start_epoch + num_epochs) * spe - start if num_epochs is not None else (1 << 40)
    plan = _TrainPlan(n, int(seed), batch_size, local, pi, start, max(0, length))
    loader = _TrainLoader(_BatchLoader(source, int(cfg.num_samples), str(cfg.pad_mode)), codec_augment, int(seed))
    return TrainIterator(plan, _iterate(plan, loader, num_threads, num_workers, prefetch))


def eval_batches(
    source: Any,
    cfg: Any,
    batch_size: int,
    *,
    num_threads: int = 2,
    num_workers: int = 0,
    prefetch: int = 4,
    process_index: int | None = None,
    process_count: int | None = None,
    local_device_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Every utterance exactly once, in source order; the last batch padded with ``mask=False``.

    All hosts yield the same number of batches (``ceil(len / batch_size)``), so collective
    evaluation steps stay in lock-step; padding rows have zero audio, label 0, utt_id "".
    """
    pi, pc = _host(process_index, process_count)
    local = per_host_batch_size(batch_size, process_count=pc, local_device_count=local_device_count)
    plan = _EvalPlan(len(source), batch_size, local, pi)
    if len(plan) == 0:
        return iter(())
    loader = _BatchLoader(source, int(cfg.num_samples), str(cfg.pad_mode))
    return _iterate(plan, loader, num_threads, num_workers, prefetch)


def num_eval_batches(num_records: int, batch_size: int) -> int:
    return -(-num_records // batch_size)
