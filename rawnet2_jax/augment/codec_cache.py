"""A content-addressed disk cache for codec round trips (``CodecAugConfig.cache_dir``).

The expensive part of a codec round trip is the encoder (LAME, libopus, libvorbis: 15-130 ms
for 4 s of speech on this 2-core CPU, README); decoding the same stream again costs 2-5 ms.
Training cuts every utterance the same way each epoch, so the encoder's input for a given
(utterance, codec) repeats, and its output can be kept on disk and decoded on later draws.

Keys are a hash of the encoder's input samples and the codec's full settings (and the
libsndfile version), so a changed corpus, cut, codec setting or library never reads a stale
entry. Entries are written to a temporary name and renamed, so concurrent writers (grain
threads, several hosts on one shared disk) never leave a torn file; an entry that no longer
decodes is recomputed by the caller (:func:`forget`).

    data = cached_bytes(cache_dir, "mp3_low|MP3|...", x, lambda: encode(x))
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np


def entry_path(cache_dir: str | os.PathLike, spec: str, x: np.ndarray) -> Path:
    """``cache_dir/<first word of spec>/<2 hex>/<32 hex>`` for the float32 samples x."""
    h = hashlib.blake2b(np.ascontiguousarray(x, np.float32).tobytes(), digest_size=16)
    h.update(f"|{x.shape[0]}|{spec}".encode())
    hexd = h.hexdigest()
    return Path(cache_dir) / spec.split("|", 1)[0] / hexd[:2] / hexd


def cached_bytes(cache_dir: str | os.PathLike, spec: str, x: np.ndarray, make: Callable[[], bytes]) -> bytes:
    """The entry for (spec, x), made by ``make()`` and stored when it is not there yet."""
    path = entry_path(cache_dir, spec, x)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    data = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return data


def forget(cache_dir: str | os.PathLike, spec: str, x: np.ndarray) -> None:
    """Drop the entry for (spec, x), e.g. one that no longer decodes."""
    entry_path(cache_dir, spec, x).unlink(missing_ok=True)
