"""Double buffering: host batches become device batches on a background thread.

The training loop asks :class:`DevicePrefetcher` for the next batch; while the device
runs step ``n``, the thread has already decoded batch ``n + 1`` and placed it on the
devices (``put``: :func:`train.sharding.shard_batch`, an explicit transfer), so the host's
data work overlaps the device's compute. ``depth`` bounds how many batches wait on the
device (2 = the one in use + the next). The order of batches is unchanged, so results do
not depend on the prefetching.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator

_END = object()


class DevicePrefetcher:
    def __init__(self, batches: Iterator[dict[str, Any]], put: Callable[[dict[str, Any]], Any], depth: int = 2):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._batches = batches
        self._put = put
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="device-prefetch", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            for batch in self._batches:
                item = self._put(batch)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._queue.put(_END)
        except BaseException as e:  # handed to the consumer, raised there
            self._queue.put(e)

    def __iter__(self) -> "DevicePrefetcher":
        return self

    def __next__(self) -> Any:
        item = self._queue.get()
        if item is _END:
            self._queue.put(_END)  # stay exhausted
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop the thread (drops what it prepared) and close the host iterator."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        close = getattr(self._batches, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "DevicePrefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
