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

import os
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
    jax.distributed.initialize(
        **kwargs, initialization_timeout=timeout, heartbeat_timeout_seconds=timeout, shutdown_timeout_seconds=timeout
    )
    _initialized = True
    return True


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


def gather_to_host(x: jax.Array) -> np.ndarray:
    """A (possibly sharded, possibly multi-host) array as a full numpy array on every host."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
