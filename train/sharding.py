"""Data parallelism: a 1-D ``jax.sharding.Mesh`` over all devices, batch axis sharded.

* Parameters, BN statistics, optimizer state and RNG are replicated
  (``NamedSharding(mesh, P())``); batches are split along axis 0 over the ``data`` axis
  (``NamedSharding(mesh, P("data"))``). Under ``jit`` the loss / BN means over the batch
  are computed on the GLOBAL batch (XLA inserts the all-reduces), so one device and N
  devices give the same numbers up to float summation order.
* Multi-host: :func:`rawnet2_jax.processes.maybe_initialize_distributed` (with the
  timeout, failure and lost-peer handling of the processes it starts) starts
  ``jax.distributed`` when asked. Each process feeds its own ``global_batch / process_count`` rows;
  :func:`shard_batch` assembles the global array with
  ``jax.make_array_from_process_local_data``. CPU processes talk through gloo (JAX's
  default CPU collectives; ``JAX_CPU_COLLECTIVES_IMPLEMENTATION`` chooses another).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rawnet2_jax.errors import UserError

DATA_AXIS = "data"


def is_primary() -> bool:
    """The process that writes host-side files (logs, plots, score files, model dirs)."""
    return jax.process_index() == 0


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

