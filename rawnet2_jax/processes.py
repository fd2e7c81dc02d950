"""Several JAX processes (``jax.distributed``) working through one split together.

:class:`Processes` says which process this is and how many there are; a
:class:`TextExchange` gives every process every process's text for one step, in process
order, through the coordination service's key-value store (``jax.distributed``'s client,
the one that already connects all processes). Scoring uses it so that each process scores
only its shard of a split and still every process ends with the whole score file, each
utterance once: text crosses no device collective, and no record is read twice.

A peer that is gone makes :meth:`TextExchange.all_texts` fail after ``timeout_s`` with
``jax.errors.JaxRuntimeError`` (DEADLINE_EXCEEDED), which training reports as a lost peer.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

_exchanges = itertools.count()  # same sequence on every process: exchanges are made in lockstep


@dataclasses.dataclass(frozen=True)
class Processes:
    index: int  # this process (0 = the primary, which writes the run's files)
    count: int
    local_devices: int
    timeout_s: float = 300.0  # how long a peer's text is waited for

    @classmethod
    def current(cls, timeout_s: float = 300.0) -> "Processes | None":
        """The running ``jax.distributed`` processes; None in a one-process run."""
        import jax

        if jax.process_count() == 1:
            return None
        return cls(jax.process_index(), jax.process_count(), jax.local_device_count(), float(timeout_s))

    @property
    def primary(self) -> bool:
        return self.index == 0

    def exchange(self, name: str) -> "TextExchange":
        """A new exchange; every process must open the same ones in the same order."""
        return TextExchange(self, f"rawnet2_jax/{name}/{next(_exchanges)}")


class TextExchange:
    def __init__(self, procs: Processes, prefix: str):
        from jax._src import distributed  # the client jax.distributed.initialize connected

        self.procs, self.prefix = procs, prefix
        self._client: Any = distributed.global_state.client
        if self._client is None:
            raise RuntimeError("several JAX processes but no jax.distributed client")
        self._mine: list[str] = []

    @property
    def _ms(self) -> int:
        return int(self.procs.timeout_s * 1000)

    def all_texts(self, step: int, text: str) -> list[str]:
        """Every process's ``text`` of ``step``, in process order (on every process)."""
        me = self.procs.index
        key = f"{self.prefix}/{step}/{me}"
        self._client.key_value_set(key, text)
        self._mine.append(key)
        return [text if p == me else self._client.blocking_key_value_get(f"{self.prefix}/{step}/{p}", self._ms)
                for p in range(self.procs.count)]

    def primary_int(self, value: int) -> int:
        """The primary's ``value`` on every process."""
        key = f"{self.prefix}/primary"
        if self.procs.primary:
            self._client.key_value_set(key, str(int(value)))
            self._mine.append(key)
            return int(value)
        return int(self._client.blocking_key_value_get(key, self._ms))

    def close(self) -> None:
        """Once every process has read everything: drop this process's keys from the store."""
        self._client.wait_at_barrier(f"{self.prefix}/done", self._ms)
        for key in self._mine:
            self._client.key_value_delete(key)
        self._mine = []
