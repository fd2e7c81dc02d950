"""Data parallelism: a 1-D ``jax.sharding.Mesh`` over all devices, batch axis sharded.

* Parameters, BN statistics, optimizer state and RNG are replicated
  (``NamedSharding(mesh, P())``); batches are split along axis 0 over the ``data`` axis
  (``NamedSharding(mesh, P("data"))``). Under ``jit`` the loss / BN means over the batch
  are computed on the GLOBAL batch (XLA inserts the all-reduces), so one device and N
  devices give the same numbers up to float summation order.
* Multi-host: :func:`maybe_initialize_distributed` calls ``jax.distributed.initialize``
  when asked (``--distributed`` or ``RAWNET2_DISTRIBUTED=1``; coordinator / process count /
  process id come from ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
  ``JAX_PROCESS_ID`` or the cluster auto-detection of JAX). Each process feeds its own
  ``global_batch / process_count`` rows; :func:`shard_batch` assembles the global array
  with ``jax.make_array_from_process_local_data``. ``RAWNET2_DISTRIBUTED_TIMEOUT`` (seconds,
  default 300) bounds how long a process waits for its peers to arrive
  (``initialization_timeout``), how long a silent peer counts as alive
  (``heartbeat_timeout_seconds``) and how long the shutdown barrier waits. CPU processes
  talk through gloo (JAX's default CPU collectives; ``JAX_CPU_COLLECTIVES_IMPLEMENTATION``
  chooses another).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import sys
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rawnet2_jax.errors import UserError

DATA_AXIS = "data"
TIMEOUT_ENV = "RAWNET2_DISTRIBUTED_TIMEOUT"
DEFAULT_TIMEOUT_S = 300
_initialized = False


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


def is_primary() -> bool:
    """The process that writes host-side files (logs, plots, score files, model dirs)."""
    return jax.process_index() == 0


def maybe_initialize_distributed(force: bool = False) -> bool:
    """Initialise multi-host JAX if asked to; returns True when it did (or had)."""
    global _initialized
    if _initialized:
        return True
    want = force or os.environ.get("RAWNET2_DISTRIBUTED", "") not in ("", "0", "false", "False")
    if not want:
        return False
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
        with _peer_failures_as_one_line():
            jax.distributed.initialize(
                **kwargs, initialization_timeout=timeout, heartbeat_timeout_seconds=timeout,
                shutdown_timeout_seconds=timeout,
            )
    except (RuntimeError, ValueError) as e:  # jax raises JaxRuntimeError (a RuntimeError) on a timeout
        where = kwargs.get("coordinator_address", "the coordinator")
        raise UserError(
            f"process {me}: the distributed runtime did not start ({first_line(e)}); check that all "
            f"{kwargs.get('num_processes', 'N')} processes were started within {timeout} s "
            f"({TIMEOUT_ENV}) with the same JAX_COORDINATOR_ADDRESS ({where}), distinct JAX_PROCESS_ID "
            "and that process 0's port is reachable"
        ) from None
    atexit.register(_skip_shutdown_after_peer_loss)  # runs before jax's own shutdown (LIFO)
    _initialized = True
    return True


# --------------------------------------------------------------------------- peer failures

_peer_lost = False


def first_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:200] or type(e).__name__


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


def _skip_shutdown_after_peer_loss() -> None:
    # jax's atexit shutdown would wait at a barrier the dead peer never reaches and then
    # abort with a C++ stack trace; after the one-line report, leave at once.
    if _peer_lost:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


def _on_missed_heartbeat(status, *rest) -> None:
    """Called by the JAX distributed client (its own thread) when a peer or the coordinator
    stops answering; the default is a C++ LOG(FATAL) with a stack trace."""
    text = " ".join(str(status).split())
    m = re.search(r"[Tt]ask (\d+)|heartbeats\):\s*(\d+)", text)
    who = f"process {m.group(1) or m.group(2)}" if m else "a peer process (or the coordinator, process 0)"
    if not _peer_lost:
        print(f"error: process {jax.process_index()}: {who} stopped answering within {distributed_timeout()} s "
              f"({TIMEOUT_ENV}); check that process's log and its host (crash, kill, preemption, network), "
              "then re-run the same command on every process to resume from the latest checkpoint",
              file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)


@contextlib.contextmanager
def _peer_failures_as_one_line():
    """Give jax.distributed.initialize's client a missed-heartbeat callback (one line, exit 1)
    instead of its default abort. jax does not expose the argument, so the client factory
    is wrapped for the duration of the call."""
    from jax._src import distributed

    lib = distributed._jax
    original = getattr(lib, "get_distributed_runtime_client", None)
    if original is None:  # another jax layout: keep its default behaviour
        yield
        return

    def with_callback(*args, **kwargs):
        kwargs.setdefault("missed_heartbeat_callback", _on_missed_heartbeat)
        return original(*args, **kwargs)

    lib.get_distributed_runtime_client = with_callback
    try:
        yield
    finally:
        lib.get_distributed_runtime_client = original


def make_mesh(devices: list | None = None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch: int, mesh: Mesh, what: str = "batch size") -> None:
    n = mesh.devices.size
    if global_batch % n:
        raise UserError(f"{what} {global_batch} is not divisible by the {n} devices; choose a multiple of {n}")
    if global_batch % jax.process_count():
        raise UserError(f"{what} {global_batch} is not divisible by the {jax.process_count()} processes")


def local_batch_size(global_batch: int) -> int:
    """Rows this process must supply."""
    return global_batch // jax.process_count()


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Put every array leaf on all devices of the mesh (replicated)."""
    sh = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sh)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(sh, x, x.shape)

    return jax.tree.map(put, tree)


def shard_batch(batch: dict[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
    """Assemble the global batch from this process's rows (host-only keys dropped)."""
    sh = batch_sharding(mesh)
    out = {}
    for k in ("audio", "label", "mask"):
        if k not in batch:
            continue
        local = np.asarray(batch[k])
        global_shape = (local.shape[0] * jax.process_count(),) + local.shape[1:]
        out[k] = jax.make_array_from_process_local_data(sh, local, global_shape)
    return out

