"""argparse helpers shared by every command line: range-checked number types and a parser
whose errors are one line.

``ap.add_argument("--lr", type=positive_float)`` refuses ``--lr -1`` (and ``nan``, ``inf``)
with ``error: argument --lr: must be > 0, got -1 (see PROG --help)``, before anything runs.

Types: :func:`positive_int` (>= 1), :func:`nonneg_int` (>= 0), :func:`positive_float` (> 0),
:func:`nonneg_float` (>= 0), :func:`fraction` (0 < x < 1), :func:`unit_interval` (0 <= x <= 1),
and the factories :func:`int_range` / :func:`float_range` for other bounds. Floats must be
finite.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import signal
import sys
import threading
from typing import Callable

__all__ = [
    "OneLineParser",
    "Terminated",
    "interrupt_status",
    "one_line_warnings",
    "sigterm_as_interrupt",
    "quiet_broken_pipe",
    "quiet_store_shutdown",
    "float_range",
    "fraction",
    "int_range",
    "nonneg_float",
    "nonneg_int",
    "positive_float",
    "positive_int",
    "unit_interval",
]


def quiet_broken_pipe(main: Callable[..., int]) -> Callable[..., int]:
    """A command's ``main`` whose output may go into a reader that stops early (``| head``):
    it then ends quietly with 141 (what a shell reports for SIGPIPE), not a BrokenPipeError
    traceback."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            rc = main(*args, **kwargs)
            sys.stdout.flush()
            return rc
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
            return 141

    return wrapped


def quiet_store_shutdown() -> None:
    """Drop the "Event loop is closed" errors that tensorstore's callbacks raise, hundreds of
    tracebacks, after orbax gave up a write (a full disk): the command says that in one line.
    Every other unraisable error is reported as before. For commands that write with orbax."""
    default = sys.unraisablehook

    def hook(u):
        if isinstance(u.exc_value, RuntimeError) and str(u.exc_value) == "Event loop is closed":
            return
        default(u)

    sys.unraisablehook = hook


@contextlib.contextmanager
def one_line_warnings():
    """While active, a warning is printed as one ``warning: ...`` line above any progress bar
    (not Python's ``file:line: Category: ...`` with the source line, which garbles the bar)."""
    import warnings

    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        from tqdm.auto import tqdm

        tqdm.write(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


class Terminated(KeyboardInterrupt):
    """SIGTERM (what schedulers and ``kill`` send), raised in the main thread like Ctrl-C, so the
    same handlers save what is done and say so; the exit status is then 143, not 130."""


def _raise_terminated(signum, frame):
    raise Terminated


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While active (main thread only), SIGTERM raises :class:`Terminated`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupt_status(e: KeyboardInterrupt) -> tuple[int, str]:
    """(exit status, what happened) of a Ctrl-C or a :class:`Terminated`."""
    return (143, "terminated (SIGTERM)") if isinstance(e, Terminated) else (130, "interrupted")


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one ``error: ...`` line (exit status 2)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _bounds_text(lo, hi, lo_open: bool, hi_open: bool) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    return "must be " + " and ".join(parts)


def int_range(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer with ``lo <= value <= hi`` (None: unbounded)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{_bounds_text(lo, hi, False, False)}, got {text}")
        return value

    parse.__name__ = "int"  # argparse names the type in some messages
    return parse


def float_range(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False
) -> Callable[[str], float]:
    """An argparse type: a finite float within ``[lo, hi]`` (``lo_open``/``hi_open``: exclusive)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        below = lo is not None and (value <= lo if lo_open else value < lo)
        above = hi is not None and (value >= hi if hi_open else value > hi)
        if below or above:
            raise argparse.ArgumentTypeError(f"{_bounds_text(lo, hi, lo_open, hi_open)}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


positive_int = int_range(1)
nonneg_int = int_range(0)
positive_float = float_range(0.0, lo_open=True)
nonneg_float = float_range(0.0)
fraction = float_range(0.0, 1.0, lo_open=True, hi_open=True)
unit_interval = float_range(0.0, 1.0)
