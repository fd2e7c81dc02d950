"""train.prefetch.DevicePrefetcher: the same batches in the same order, one step ahead."""

from __future__ import annotations

import threading
import time

import pytest

from train.prefetch import DevicePrefetcher


def test_batches_arrive_in_order_through_put_and_the_end_stays_the_end():
    with DevicePrefetcher(iter(range(7)), lambda b: b * 10) as pf:
        assert list(pf) == [0, 10, 20, 30, 40, 50, 60]
        with pytest.raises(StopIteration):
            next(pf)


def test_the_thread_runs_at_most_depth_batches_ahead():
    produced = []

    def batches():
        for i in range(100):
            produced.append(i)
            yield i

    pf = DevicePrefetcher(batches(), lambda b: b, depth=2)
    try:
        assert next(pf) == 0
        time.sleep(0.3)
        # one taken, `depth` queued, one more put() waiting for room: never the whole stream
        assert len(produced) <= 1 + 2 + 1, produced
    finally:
        pf.close()


def test_an_error_in_the_host_iterator_or_put_reaches_the_consumer():
    def bad():
        yield 1
        raise ValueError("record 2 is corrupt")

    with DevicePrefetcher(bad(), lambda b: b) as pf:
        assert next(pf) == 1
        with pytest.raises(ValueError, match="record 2 is corrupt"):
            next(pf)

    def put(b):
        raise RuntimeError("device full")

    with DevicePrefetcher(iter([1]), put) as pf, pytest.raises(RuntimeError, match="device full"):
        next(pf)


def test_close_stops_the_thread_and_closes_the_host_iterator():
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    pf = DevicePrefetcher(endless(), lambda b: b, depth=1)
    assert next(pf) == 0
    pf.close()
    assert not pf._thread.is_alive() and closed.is_set()
    with pytest.raises(ValueError, match="depth"):
        DevicePrefetcher(iter([]), lambda b: b, depth=0)
