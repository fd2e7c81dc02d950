"""``ModelConfig.remat = "auto"``: the fastest train step that fits in memory.

Rematerialisation (``remat="blocks"``) roughly halves the train step's memory for about one
more forward pass of compute, so it is worth paying only when the step would not fit
otherwise. ``"auto"`` compiles the step without it, reads XLA's own estimate of one step's
memory (``compiled.memory_analysis()``: arguments + outputs + temporaries - donated aliases,
per device) and compares it with what the device has: ``memory_stats()["bytes_limit"]`` on
accelerators, the available host memory shared by the local devices on CPU. The step
compiled for the check is the one the loop then runs (JAX keeps the executable of a lowered
and compiled jitted function for the call with the same signature), so a step that fits
costs no second compile.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import numpy as np

# XLA's estimate leaves out the runtime, the input pipeline and allocator slack (on CPU the
# measured peak RSS was 0.9 GiB above it at batch 32): keep that share of memory free.
FIT_FRACTION = 0.85


@dataclasses.dataclass(frozen=True)
class RematChoice:
    remat: str  # "none" or "blocks"
    need_bytes: int  # XLA's estimate of one step without remat, per device
    budget_bytes: int  # what one device has
    budget_what: str  # where budget_bytes comes from
    blocks_bytes: int = 0  # XLA's estimate of the remat="blocks" step (0: not measured)

    @property
    def blocks_too_big(self) -> bool:
        """Even the rematerialised step is over the budget: the run will likely run out of memory."""
        return self.remat == "blocks" and self.blocks_bytes > FIT_FRACTION * self.budget_bytes

    def message(self) -> str:
        need, budget = _size(self.need_bytes), _size(self.budget_bytes)
        if self.need_bytes == 0:
            return "remat auto: no memory estimate for this train step (backend or wrapped step): remat=none"
        if self.remat == "none":
            return (f"remat auto: one train step needs {need} per device, within {FIT_FRACTION:.0%} of the "
                    f"{budget} of {self.budget_what}: remat=none (the fastest step)")
        if self.blocks_too_big:
            return (f"remat auto: one train step needs {need} per device without remat and "
                    f"{_size(self.blocks_bytes)} with remat=blocks, both more than {FIT_FRACTION:.0%} of the "
                    f"{budget} of {self.budget_what}: expect an out-of-memory error; lower batch_size "
                    f"or spread the batch over more devices")
        return (f"remat auto: one train step would need {need} per device, more than {FIT_FRACTION:.0%} of "
                f"the {budget} of {self.budget_what}: remat=blocks (about half the memory, ~1.4x the time)")


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def device_memory_budget(device: Any) -> tuple[int, str]:
    """(bytes, what) one device can hold: the allocator's limit, or host memory on CPU."""
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # backends without memory statistics
        pass
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{device.platform} memory"
    return _available_host_bytes() // max(jax.local_device_count(), 1), "available host memory"


def _available_host_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def step_bytes(compiled: Any) -> int:
    """XLA's per-device estimate of one call of a compiled step."""
    m = compiled.memory_analysis()
    if m is None:  # a backend without the analysis: nothing says the step does not fit
        return 0
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


def batch_spec(global_batch: int, num_samples: int, sharding: Any) -> dict[str, jax.ShapeDtypeStruct]:
    """The abstract training batch, as ``train.sharding.shard_batch`` places it."""
    def spec(shape, dtype):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)

    return {"audio": spec((global_batch, num_samples), np.float32),
            "label": spec((global_batch,), np.int32),
            "mask": spec((global_batch,), np.bool_)}


def with_blocks_estimate(choice: RematChoice, step_blocks: Callable, state: Any,
                         batch: dict[str, Any]) -> RematChoice:
    """``choice`` with XLA's estimate of the rematerialised step, compiled here once (the loop
    then runs that executable), so a batch that fits in neither way is said before it fails."""
    return dataclasses.replace(choice, blocks_bytes=_estimate_bytes(step_blocks, state, batch))


def _estimate_bytes(step: Callable, state: Any, batch: dict[str, Any]) -> int:
    """``step_bytes`` of ``step`` compiled for ``(state, batch)``; 0 for a step without ``.core``
    (wrapped by a caller, e.g. a test's fault injection), which cannot be lowered."""
    core = getattr(step, "core", None)  # the jitted function
    return step_bytes(core.lower(state, batch, None).compile()) if core is not None else 0


def choose_remat(step_without: Callable, state: Any, batch: dict[str, Any], device: Any) -> RematChoice:
    """Compile ``step_without`` (a train step without remat) for ``(state, batch)`` and decide.

    With several processes every one must run the same program, so the step is rematerialised
    if it does not fit on any of them. A step without ``.core`` (wrapped by a caller, e.g. a
    test's fault injection) cannot be lowered: it is kept as it is.
    """
    budget, what = device_memory_budget(device)
    need = _estimate_bytes(step_without, state, batch)
    too_big = need > FIT_FRACTION * budget
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        too_big = bool(np.any(multihost_utils.process_allgather(np.asarray(too_big))))
    return RematChoice("blocks" if too_big else "none", need, budget, what)
