"""The pieces of a multi-process stop that need no second process: which runtime errors count
as a lost peer, Ctrl-C passed on to JAX's preemption notifier as a SIGTERM, and the one line
an exchange gives when a peer is silent or has published its failure (the real two-process
runs are tests/test_multihost.py)."""

import os
import signal
import time

import pytest

from rawnet2_jax import processes
from rawnet2_jax.errors import UserError
from train.guards import StopRequest
from rawnet2_jax.processes import looks_like_lost_peer

# Seen on this machine (2 gloo processes, tests/test_multihost.py and by hand).
LOST_PEER = [
    "UNKNOWN: Gloo all-reduce failed: [external/gloo/gloo/transport/tcp/pair.cc:538] Read error "
    "[127.0.0.1]:41877: Connection reset by peer",
    "UNKNOWN: Gloo context initialization failed: DEADLINE_EXCEEDED: GetKeyValue() timed out with key: "
    "cpu:gloo/0,2048/1 and duration: 29.99999994s",
    "INTERNAL: Shutdown barrier has failed.",
]
NOT_A_PEER = [
    "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 19.50GiB.",
    "INVALID_ARGUMENT: Executable expected parameter 0 of size 128 but got buffer with incompatible size 64",
]


@pytest.mark.parametrize("text", LOST_PEER)
def test_lost_peer_messages(text):
    assert looks_like_lost_peer(RuntimeError(text))


@pytest.mark.parametrize("text", NOT_A_PEER)
def test_other_runtime_errors_are_not_blamed_on_a_peer(text):
    assert not looks_like_lost_peer(RuntimeError(text))


def _wait_for(cond, seconds=5.0):
    end = time.time() + seconds
    while not cond() and time.time() < end:
        time.sleep(0.01)  # Python runs signal handlers between bytecodes of the main thread
    return cond()


def test_ctrl_c_is_passed_on_as_sigterm_and_waits_for_the_agreed_step():
    terms = []
    before = signal.signal(signal.SIGTERM, lambda s, f: terms.append(s))  # stands in for JAX's notifier
    try:
        with StopRequest((), forward=True) as stop:
            os.kill(os.getpid(), signal.SIGINT)
            assert _wait_for(lambda: terms == [signal.SIGTERM]), terms
            assert stop.forwarded == signal.SIGINT
            assert not stop.requested  # nothing stops before all processes reach the sync point
            stop.note(stop.forwarded)  # what train.loop does at that point
            assert stop.requested and stop.name() == "SIGINT"
            with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C stops at once
                os.kill(os.getpid(), signal.SIGINT)
                _wait_for(lambda: False, 2.0)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, before)


class _Store:
    """The key-value client of a process whose peer never sends (or published a failure)."""

    def __init__(self, get_error="DEADLINE_EXCEEDED: GetKeyValue() timed out with key: k and duration: 5s",
                 failure=None):
        self.get_error, self.failure, self.values = get_error, failure, {}

    def key_value_set(self, key, value, allow_overwrite=False):
        self.values[key] = value

    def blocking_key_value_get(self, key, timeout_ms):
        raise RuntimeError(self.get_error)

    def key_value_try_get(self, key):
        if key == processes.FAILURE_KEY and self.failure:
            return self.failure
        raise RuntimeError(f"NOT_FOUND: {key}")


@pytest.fixture()
def process_0(monkeypatch):
    """This test's process stands in for process 0 of two (no jax.distributed started)."""
    def use(store):
        monkeypatch.setattr(processes, "_client", lambda: store)
        monkeypatch.setattr(processes, "_initialized", True)
        monkeypatch.setattr(processes, "_me", lambda: 0)
        monkeypatch.setattr(processes, "_peer_lost", False)  # restored afterwards
        return processes.Processes(0, 2, 1, 5.0).exchange("test")

    return use


def test_a_silent_peer_during_an_exchange_is_one_line(process_0):
    exchange = process_0(_Store())
    with pytest.raises(processes.PeerLost) as info:
        exchange.all_texts(3, "my lines\n")
    line = str(info.value)
    assert "\n" not in line and line.startswith("process 0: process 1 sent nothing at step 3 of rawnet2_jax/test/"), line
    assert "for 5 s (RAWNET2_DISTRIBUTED_TIMEOUT; DEADLINE_EXCEEDED" in line and "check that process's log" in line
    assert processes.peer_lost()  # the process leaves without JAX's shutdown barrier


def test_a_peer_that_published_its_failure_is_named_with_its_line(process_0):
    exchange = process_0(_Store(failure="1\tin_the_wild: unusable record (ValueError: bad); rebuild the dataset"))
    with pytest.raises(UserError) as info:
        exchange.all_texts(0, "")
    assert str(info.value) == ("process 1 failed: in_the_wild: unusable record (ValueError: bad); rebuild the "
                               "dataset (process 0 stopped with it)")


def test_other_errors_of_an_exchange_stay_what_they_are(process_0):
    exchange = process_0(_Store(get_error="INVALID_ARGUMENT: key must not be empty"))
    with pytest.raises(RuntimeError, match="INVALID_ARGUMENT"):
        exchange.all_texts(0, "")
    assert not processes.peer_lost()


def test_report_failure_is_a_no_op_in_one_process(monkeypatch):
    monkeypatch.setattr(processes, "_initialized", False)
    processes.report_failure("error text")
    assert not processes._failed_here


class _LiveStore:
    """Key-value store of three processes as process 0's watcher sees it: process 1's counter
    moves while ``beating``, process 2 stopped counting because it ended normally ("done")."""

    def __init__(self):
        self.counters = {1: 0, 2: 7}
        self.beating = True
        self.values = {"rawnet2_jax/done/2": "1"}

    def key_value_increment(self, key, n):
        return 0

    def key_value_dir_get(self, prefix):
        if prefix == processes._ALIVE_DIR:
            if self.beating:
                self.counters[1] += 1
            return [(f"{prefix}{p}", str(c)) for p, c in self.counters.items()]
        return [(k, v) for k, v in self.values.items() if k.startswith(prefix)]

    def key_value_try_get(self, key):
        raise RuntimeError("NOT_FOUND")

    def key_value_set(self, key, value, allow_overwrite=False):
        self.values[key] = value


@pytest.mark.slow
def test_the_watcher_names_a_silent_peer_and_spares_one_that_ended(monkeypatch, capsys):
    store, exits = _LiveStore(), []

    def fake_exit(code):  # ends the watcher's loop instead of the test's process
        exits.append(code)
        watcher.stop()

    monkeypatch.setattr(processes, "_client", lambda: store)
    monkeypatch.setattr(processes, "_initialized", True)
    monkeypatch.setattr(processes, "_me", lambda: 0)
    monkeypatch.setattr(processes, "_peer_lost", False)
    monkeypatch.setattr(processes.os, "_exit", fake_exit)
    watcher = processes._Watcher(3, 0.6)  # a 0.6 s timeout: looks every 0.06 s
    watcher.start()
    time.sleep(1.5)  # process 2 silent but done, process 1 beating: nobody is blamed
    assert exits == [] and watcher.is_alive()
    store.beating = False
    watcher.join(3)
    assert exits == [1] and processes.peer_lost()
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: process 0: process 1 stopped answering for 0.6 s (RAWNET2_DISTRIBUTED_TIMEOUT)"), line
