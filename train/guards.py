"""What keeps one run safe from others and from its scheduler: the workdir lock, stop signals.

* :class:`WorkdirLock`: an exclusive ``flock`` on ``WORKDIR/.lock`` (released by the
  kernel when the process dies, even by kill -9), holding the holder's PID, host and start
  time, so a second run on the same workdir stops with one line naming the first.
* :class:`StopRequest`: SIGTERM (what schedulers send before they kill) and SIGINT
  (Ctrl-C) set a flag that the loop checks after each step: it saves a checkpoint and
  stops with :class:`Stopped`. A second SIGINT interrupts at once. In a multi-process run
  the handlers are left alone (``signals=()``): JAX's preemption notifier owns SIGTERM
  there and the loop asks ``multihost_utils.reached_preemption_sync_point`` every step, so
  that every process saves the same step (:meth:`StopRequest.note` records it). SIGINT
  is then passed on (``forward=True``): the first Ctrl-C sends this process a SIGTERM,
  for JAX's notifier, and is remembered in :attr:`StopRequest.forwarded`; a second one
  interrupts at once.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from rawnet2_jax.errors import TrainingError
from rawnet2_jax.fsutil import DirLock

LOCK_FILE = ".lock"


class WorkdirLock(DirLock):
    def __init__(self, workdir: Path, enabled: bool = True):
        super().__init__(workdir, LOCK_FILE, subject=f"workdir {Path(workdir)}", enabled=enabled,
                         busy_fix="wait for that run to end (or stop it) or choose another --workdir",
                         unwritable_fix="give a writable --workdir")


class Stopped(TrainingError):
    """The run was asked to stop (SIGTERM / SIGINT) and saved a checkpoint first."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class StopRequest:
    """Turns SIGTERM / SIGINT into a flag while active (main thread only; else a no-op)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, signals: tuple[int, ...] | None = None, forward: bool = False):
        self.signals = self.SIGNALS if signals is None else tuple(signals)
        if forward:
            self.signals += (signal.SIGINT,)
        self.forward = forward
        self.signum: int | None = None
        self.forwarded: int | None = None  # a SIGINT passed on as SIGTERM, not yet agreed on
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        if (self.signum is not None or self.forwarded is not None) and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now, without saving
        if self.forward:  # the stop waits for the step all processes agree on
            self.forwarded = signum
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self.signum = signum

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}

    def note(self, signum: int) -> None:
        """Record a stop that arrived another way (a preemption sync point of all processes)."""
        self.signum = signum

    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""
