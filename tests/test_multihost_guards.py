"""The pieces of a multi-process stop that need no second process: which runtime errors count
as a lost peer, and Ctrl-C passed on to JAX's preemption notifier as a SIGTERM."""

import os
import signal
import time

import pytest

from train.guards import StopRequest
from train.sharding import looks_like_lost_peer

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


@pytest.mark.parametrize("argv", [
    ["benchmark", "--checkpoint", "m", "--data-dir", "d", "--out", "o"],
    ["evaluate", "--checkpoint", "m", "--dataset", "asvspoof2021_la", "--data-dir", "d", "--out", "o"],
])
def test_commands_that_do_not_split_refuse_several_processes(argv, monkeypatch, capsys, tmp_path):
    from rawnet2_jax import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAWNET2_DISTRIBUTED", "1")
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "runs in one process" in err[0], err
    assert not (tmp_path / "o").exists()
