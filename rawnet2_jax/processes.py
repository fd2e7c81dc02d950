"""Several JAX processes (``jax.distributed``): starting them, working through one split
together, and ending all of them in one line when one fails or goes missing.

* :func:`maybe_initialize_distributed` starts ``jax.distributed`` when asked
  (``--distributed`` / ``RAWNET2_DISTRIBUTED=1``; coordinator, process count and id from
  ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` or JAX's cluster
  detection). ``RAWNET2_DISTRIBUTED_TIMEOUT`` (seconds, default 300) bounds how long a
  process waits for its peers to arrive, how long a silent peer counts as alive, how long
  an exchange waits for a peer's text and how long the shutdown barrier waits.
* :class:`Processes` says which process this is and how many there are; a
  :class:`TextExchange` gives every process every process's text for one step, in process
  order, through the coordination service's key-value store (the client
  ``jax.distributed.initialize`` connected). Scoring uses it so that each process scores
  only its shard of a split and every process still ends with the whole score file, each
  utterance once: text crosses no device collective, and no record is read twice.
  Exchanges are matched by the order they are opened in: every process must open the same
  exchanges in the same order (they do when they run the same command).
* Failure of one process: :func:`report_failure` (the CLIs call it with their one
  ``error:`` line; an uncaught exception does it too) puts the line in the key-value store;
  every other process's watcher thread sees it within a fraction of a second and ends that
  process with ``error: process N failed: <line>`` and exit status 1. The failing process
  waits (a few seconds at most) until the others have seen it, since process 0's exit takes
  the store with it, and skips JAX's shutdown barrier, which the others never reach.
* A peer that is gone: the watcher also keeps a heartbeat of its own in the store (a
  counter per process, bumped every fraction of a second, "done" at a normal exit); a peer
  whose counter stands still for the timeout ends this process with one line naming it and
  what to check. An exchange that hears nothing for the timeout raises :class:`PeerLost`
  (a ``UserError``, one line too). JAX's own heartbeat check, which aborts with a C++ stack
  trace, is set to twice the timeout so that these come first.

JAX offers no public API for the key-value store or the preemption notifier's state: both
come from ``jax._src.distributed.global_state`` (checked with jax 0.10.2).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import itertools
import os
import re
import sys
import threading
import time
from typing import Any

from rawnet2_jax.errors import UserError, first_line

TIMEOUT_ENV = "RAWNET2_DISTRIBUTED_TIMEOUT"
DEFAULT_TIMEOUT_S = 300
FAILURE_KEY = "rawnet2_jax/failed"  # "<process index>\t<its error line>", first failure only
_SEEN_DIR = "rawnet2_jax/failure_seen/"  # one key per process that has seen the failure
_WATCH_S = 0.2  # how often the watcher looks (a few processes; slower for many)
_ACK_WAIT_S = 10.0  # how long the failing process waits (at most) for the others to see its line

_exchanges = itertools.count()  # same sequence on every process: exchanges are made in lockstep
_initialized = False
_peer_lost = False  # a peer failure has been reported: exit without the shutdown barrier
_failed_here = False  # this process published its own failure
_watcher: "_Watcher | None" = None
_cleanups: list = []  # run before the watcher ends the process (os._exit skips finally blocks)


@contextlib.contextmanager
def cleanup_on_abrupt_exit(fn):
    """Run ``fn`` even when another process's failure or a silent peer ends this process
    (the watcher exits at once, without unwinding the main thread)."""
    _cleanups.append(fn)
    try:
        yield
    finally:
        _cleanups.remove(fn)


class PeerLost(UserError):
    """Another process stopped answering (killed, crashed, its host lost)."""


def distributed_timeout() -> int:
    """Seconds from ``RAWNET2_DISTRIBUTED_TIMEOUT`` (default 300)."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise UserError(f"{TIMEOUT_ENV}={text!r} is not a positive number of seconds; set e.g. {TIMEOUT_ENV}=300")
    return value


def distributed_requested() -> bool:
    return os.environ.get("RAWNET2_DISTRIBUTED", "") not in ("", "0", "false", "False")


def maybe_initialize_distributed(force: bool = False) -> bool:
    """Initialise multi-host JAX if asked to; returns True when it did (or had)."""
    global _initialized
    if _initialized:
        return True
    if not (force or distributed_requested()):
        return False
    import jax

    kwargs: dict[str, Any] = {}
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        kwargs["coordinator_address"] = os.environ["JAX_COORDINATOR_ADDRESS"]
    if os.environ.get("JAX_NUM_PROCESSES"):
        kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
    if os.environ.get("JAX_PROCESS_ID"):
        kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
    timeout = distributed_timeout()
    me = kwargs.get("process_id", "?")
    try:
        # JAX's own heartbeat check ends a process with a C++ abort when a peer goes silent
        # (its missed-heartbeat callback cannot be given a Python function in jax 0.10.2: it
        # aborts with std::bad_cast); the watcher below notices a silent peer after
        # ``timeout`` and ends the process with one line first.
        jax.distributed.initialize(
            **kwargs, initialization_timeout=timeout, heartbeat_timeout_seconds=2 * timeout + 10,
            shutdown_timeout_seconds=timeout,
        )
    except (RuntimeError, ValueError) as e:  # jax raises JaxRuntimeError (a RuntimeError) on a timeout
        where = kwargs.get("coordinator_address", "the coordinator")
        raise UserError(
            f"process {me}: the distributed runtime did not start ({first_line(e)[:200]}); check that all "
            f"{kwargs.get('num_processes', 'N')} processes were started within {timeout} s "
            f"({TIMEOUT_ENV}) with the same JAX_COORDINATOR_ADDRESS ({where}), distinct JAX_PROCESS_ID "
            "and that process 0's port is reachable"
        ) from None
    atexit.register(_at_exit)  # runs before jax's own shutdown (LIFO)
    _initialized = True
    if jax.process_count() > 1:
        _start_watcher()
    return True


def _client() -> Any:
    from jax._src import distributed  # the client jax.distributed.initialize connected

    return distributed.global_state.client


def _me() -> int:
    import jax

    return jax.process_index()


# --------------------------------------------------------------------------- lost peers

# What gloo, the coordination service and the key-value store say when a peer is gone
# (seen here: "Gloo all-reduce failed: ... Connection reset by peer", "GetKeyValue() timed
# out", DEADLINE_EXCEEDED, UNAVAILABLE, a failed barrier, missed heartbeats).
_LOST_PEER = re.compile(
    r"connection (reset|refused|closed)|broken pipe|socket closed|end of file|deadline_exceeded|unavailable"
    r"|timed out|heartbeat|barrier|gloo|coordination service|task \d+ .*(failed|disconnected|not alive)",
    re.IGNORECASE,
)


def looks_like_lost_peer(e: BaseException) -> bool:
    """Whether a ``JaxRuntimeError`` of a collective says that another process is gone."""
    return bool(_LOST_PEER.search(str(e)))


def preemption_service_on() -> bool:
    """JAX's preemption notifier is running (it is unless jax_enable_preemption_service is off)."""
    from jax._src import distributed

    return distributed.global_state.preemption_sync_manager is not None


def peer_lost() -> bool:
    return _peer_lost


def note_peer_lost() -> None:
    """A peer failure has been reported in one line: exit without the shutdown barrier."""
    global _peer_lost
    _peer_lost = True


def _at_exit() -> None:
    if _watcher is not None:
        _watcher.stop()
        if not (_peer_lost or _failed_here):  # a normal end: the others stop counting on this one
            with contextlib.suppress(Exception):
                _client().key_value_set(f"{_DONE_DIR}{_me()}", "1")
    if _failed_here:
        _wait_until_seen()
    # jax's atexit shutdown would wait at a barrier the failed or dead peer never reaches and
    # then abort with a C++ stack trace; after the one-line report, leave at once.
    if _peer_lost or _failed_here:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


# --------------------------------------------------------------------------- one process fails


def report_failure(line: str) -> None:
    """This process is ending with the one-line error ``line``: tell the others (they stop
    with ``error: process N failed: line``) and skip the shutdown barrier. A no-op in a
    one-process run, and after a lost peer (that report is the cause's echo, not a cause)."""
    global _failed_here
    client = _client() if _initialized else None
    if client is None or _peer_lost or _failed_here:
        return
    _failed_here = True
    try:
        client.key_value_set(FAILURE_KEY, f"{_me()}\t{line}")
    except Exception:  # noqa: BLE001 - another process failed first (or the store is gone)
        pass


def _wait_until_seen() -> None:
    """Until every other process has seen the failure (or a few seconds): process 0 hosts
    the key-value store, and its exit would take the line with it."""
    import jax

    client, others = _client(), jax.process_count() - 1
    timeout = distributed_timeout()
    end = time.monotonic() + min(max(_ACK_WAIT_S, 3 * _tick(others + 1, timeout)), timeout)
    while time.monotonic() < end:
        try:
            if len(client.key_value_dir_get(_SEEN_DIR)) >= others:
                return
        except Exception:  # noqa: BLE001 - the store is gone: nobody is left to tell
            return
        time.sleep(_WATCH_S / 2)


def failure_of_another_process() -> tuple[int, str] | None:
    """``(process, line)`` of a failure another process published, else None."""
    client = _client() if _initialized else None
    if client is None:
        return None
    try:
        text = client.key_value_try_get(FAILURE_KEY)
    except Exception:  # noqa: BLE001 - NOT_FOUND (nothing failed), or the store is gone
        return None
    index, _, line = text.partition("\t")
    return None if int(index) == _me() else (int(index), line)


def _failure_line(index: int, line: str) -> str:
    return f"error: process {index} failed: {line} (process {_me()} stopped with it)"


def _tick(count: int, timeout_s: float) -> float:
    """Seconds between the watcher's looks. Each costs 3 calls to the coordinator per
    process: slower for many processes (0.2 s up to 10, 2 s for 100), well inside the timeout."""
    return min(max(_WATCH_S, count / 50), timeout_s / 10)


_ALIVE_DIR = "rawnet2_jax/alive/"  # per process: a counter its watcher bumps every tick
_DONE_DIR = "rawnet2_jax/done/"  # per process: set at a normal exit (its counter stops then)


def _lost_line(index: int, seconds: float, what: str = "") -> str:
    return (f"process {_me()}: process {index} {what or 'stopped answering'} for {seconds:g} s ({TIMEOUT_ENV}); "
            "check that process's log and its host (crash, kill, preemption, network), then re-run the same "
            "command on every process")


class _Watcher(threading.Thread):
    """Every tick: another process's published failure ends this process with its
    line; a peer whose heartbeat counter stood still for the timeout ends it with one line."""

    def __init__(self, count: int, timeout_s: float):
        super().__init__(name="rawnet2-process-watcher", daemon=True)
        self.count, self.timeout_s = count, timeout_s
        self.tick = _tick(count, timeout_s)
        self._stop_event = threading.Event()
        self._seen: dict[int, tuple[str, float]] = {}  # peer -> (counter, when it last changed)

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(2 * self.tick + 0.5)

    def run(self) -> None:
        client, me = _client(), _me()
        start = last_ok = time.monotonic()
        while not self._stop_event.wait(self.tick):
            now = time.monotonic()
            try:
                client.key_value_increment(f"{_ALIVE_DIR}{me}", 1)
                alive = dict(client.key_value_dir_get(_ALIVE_DIR))
                done = dict(client.key_value_dir_get(_DONE_DIR))
            except Exception:  # noqa: BLE001 - the store (process 0) is not answering
                if now - last_ok > self.timeout_s and me != 0:
                    self._end(_lost_line(0, self.timeout_s, "(the coordinator) stopped answering"))
                continue
            last_ok = now
            failed = failure_of_another_process()
            if failed is not None:
                with contextlib.suppress(Exception):
                    client.key_value_set(f"{_SEEN_DIR}{me}", "1")
                if _failed_here:  # this process is failing too and says so itself
                    return
                self._end(_failure_line(*failed)[len("error: "):])
            for p in range(self.count):
                if p == me or f"{_DONE_DIR}{p}" in done:
                    continue
                value = alive.get(f"{_ALIVE_DIR}{p}", "")
                before, since = self._seen.get(p, ("", start))
                if value != before:
                    self._seen[p] = (value, now)
                elif now - since > self.timeout_s:
                    self._end(_lost_line(p, self.timeout_s))

    def _end(self, line: str) -> None:
        if _peer_lost or _failed_here:  # the main thread is already saying why, and exits
            self._stop_event.set()
            return
        note_peer_lost()
        print(f"error: {line}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        for fn in list(_cleanups):
            with contextlib.suppress(Exception):
                fn()
        os._exit(1)


def _start_watcher() -> None:
    global _watcher
    if _client() is None:
        return
    import jax

    _watcher = _Watcher(jax.process_count(), float(distributed_timeout()))
    _watcher.start()
    previous = sys.excepthook

    def publish_then_print(kind, value, tb):  # a crash on one process ends the others too
        report_failure(f"{kind.__name__}: {first_line(value)[:300]}")
        previous(kind, value, tb)

    sys.excepthook = publish_then_print


# --------------------------------------------------------------------------- working together


@dataclasses.dataclass(frozen=True)
class Processes:
    index: int  # this process (0 = the primary, which writes the run's files)
    count: int
    local_devices: int
    timeout_s: float = 300.0  # how long a peer's text is waited for

    @classmethod
    def current(cls, timeout_s: float | None = None) -> "Processes | None":
        """The running ``jax.distributed`` processes; None in a one-process run."""
        import jax

        if jax.process_count() == 1:
            return None
        timeout = distributed_timeout() if timeout_s is None else timeout_s
        return cls(jax.process_index(), jax.process_count(), jax.local_device_count(), float(timeout))

    @property
    def primary(self) -> bool:
        return self.index == 0

    def exchange(self, name: str) -> "TextExchange":
        """A new exchange; every process must open the same ones in the same order."""
        return TextExchange(self, f"rawnet2_jax/{name}/{next(_exchanges)}")


class TextExchange:
    def __init__(self, procs: Processes, prefix: str):
        self.procs, self.prefix = procs, prefix
        self._client: Any = _client()
        if self._client is None:
            raise RuntimeError("several JAX processes but no jax.distributed client")
        self._mine: list[str] = []

    @property
    def _ms(self) -> int:
        return int(self.procs.timeout_s * 1000)

    def _get(self, key: str, sender: int | None, what: str) -> str:
        try:
            return self._client.blocking_key_value_get(key, self._ms)
        except Exception as e:  # noqa: BLE001 - jax raises JaxRuntimeError (DEADLINE_EXCEEDED, UNAVAILABLE)
            raise self._lost(e, sender, what) from None

    def _lost(self, e: BaseException, sender: int | None, what: str) -> Exception:
        failed = failure_of_another_process()
        if failed is not None:  # the watcher may not have looked yet
            note_peer_lost()
            return UserError(_failure_line(*failed)[len("error: "):])
        if not looks_like_lost_peer(e):
            return e if isinstance(e, Exception) else RuntimeError(str(e))
        note_peer_lost()
        who = f"process {sender}" if sender is not None else "another process"
        return PeerLost(
            f"process {self.procs.index}: {who} sent nothing {what} for {self.procs.timeout_s:g} s ({TIMEOUT_ENV}; "
            f"{first_line(e)[:200]}); check that process's log and its host (crash, kill, preemption, network), "
            "then re-run the same command on every process"
        )

    def all_texts(self, step: int, text: str) -> list[str]:
        """Every process's ``text`` of ``step``, in process order (on every process)."""
        me = self.procs.index
        key = f"{self.prefix}/{step}/{me}"
        self._client.key_value_set(key, text)
        self._mine.append(key)
        return [text if p == me else self._get(f"{self.prefix}/{step}/{p}", p, f"at step {step} of {self.prefix}")
                for p in range(self.procs.count)]

    def primary_int(self, value: int) -> int:
        """The primary's ``value`` on every process."""
        key = f"{self.prefix}/primary"
        if self.procs.primary:
            self._client.key_value_set(key, str(int(value)))
            self._mine.append(key)
            return int(value)
        return int(self._get(key, 0, f"at the start of {self.prefix}"))

    def close(self) -> None:
        """Once every process has read everything: drop this process's keys from the store."""
        try:
            self._client.wait_at_barrier(f"{self.prefix}/done", self._ms)
        except Exception as e:  # noqa: BLE001
            raise self._lost(e, None, f"at the end of {self.prefix}") from None
        for key in self._mine:
            self._client.key_value_delete(key)
        self._mine = []
