"""XLA flags the installed jaxlib knows: the one place that says which flags a jaxlib dropped.

XLA aborts the whole process on a flag in ``XLA_FLAGS`` it does not know ("Unknown flag in
XLA_FLAGS"), and XLA drops flags between jaxlib releases (0.11's XLA has no
``--xla_cpu_use_fusion_emitters``). Code that puts XLA flags into a process it starts (the test
suite's cheap compile flags, the benchmarks' compile probe) keeps only the known ones with
``known_flags`` and says which it dropped. Nothing here imports JAX or starts a backend, so it
can run before ``XLA_FLAGS`` is set.
"""

from __future__ import annotations

from typing import Iterable

# flag -> the first jaxlib (major, minor) whose XLA no longer has it
FLAGS_UNTIL: dict[str, tuple[int, int]] = {"--xla_cpu_use_fusion_emitters": (0, 11)}


def jaxlib_version() -> tuple[int, int]:
    """(major, minor) of the installed jaxlib, read without starting a backend."""
    from jaxlib import version

    major, minor = version.__version__.split(".")[:2]
    return int(major), int(minor)


def flag_name(flag: str) -> str:
    """``--xla_foo=1`` -> ``--xla_foo``."""
    return flag.split("=", 1)[0]


def known_flags(flags: Iterable[str], jaxlib: tuple[int, int] | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(kept, dropped): ``flags`` split into those the jaxlib (default: the installed one) knows
    and those its XLA dropped, each in the given order."""
    have = jaxlib_version() if jaxlib is None else jaxlib
    kept, dropped = [], []
    for f in flags:
        gone = FLAGS_UNTIL.get(flag_name(f))
        (dropped if gone is not None and have >= gone else kept).append(f)
    return tuple(kept), tuple(dropped)
