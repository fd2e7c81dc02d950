"""The run's persistent XLA compilation cache: ``WORKDIR/compile_cache``.

A restarted run (after a crash, a preemption or Ctrl-C, or to train for more epochs) builds
the same programs again: the train step and the eval step. On 2 CPU cores that is most of
the time before its first step (tak2021 on a 2-core Intel Xeon: 5.3-5.6 s to the resume
without the cache, 2.35-2.45 s with it; README "Restarts load their compiled programs").
``python -m train`` therefore points JAX's persistent compilation cache at the workdir, so a
restart loads the compiled programs. The workdir, not a cache shared by all runs: the workdir
lock keeps one run at a time writing it, it holds only this run's few programs (no eviction
needed) and goes when the run is deleted.

Whatever the user chose wins: ``JAX_COMPILATION_CACHE_DIR=DIR`` (one cache for every run),
``JAX_ENABLE_COMPILATION_CACHE=false`` (none) and ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``
(this cache's default: 0.1 s, not JAX's 1 s). Loading is safe across machines: XLA
refuses an executable built for a CPU with other features and compiles again.

An entry a killed process or a full disk left half-written would make JAX warn on every
later run and compile anyway (it never rewrites an existing entry), so such entries are
deleted before the run starts, with one line saying so.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Mapping

CACHE_DIR = "compile_cache"
_ENTRY_SUFFIX = "-cache"  # JAX's file name for an entry: <module>-<key>-cache
_FALSE = ("0", "f", "false", "n", "no", "off")  # what JAX's own boolean flags read as false
# JAX caches only programs that took 1 s or more to compile. The eval step compiles in 0.2-0.5 s
# on 2 cores and every restart's first dev evaluation needs it; JAX's little helpers (under
# 0.05 s) load no faster than they compile.
MIN_COMPILE_SECONDS = 0.1


def run_cache_dir(workdir: str | os.PathLike, environ: Mapping[str, str] = os.environ) -> Path | None:
    """The cache a run in ``workdir`` should use: None when the user chose a cache of their
    own (``JAX_COMPILATION_CACHE_DIR``) or none at all (``JAX_ENABLE_COMPILATION_CACHE``
    false), else ``WORKDIR/compile_cache``."""
    if environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None
    if environ.get("JAX_ENABLE_COMPILATION_CACHE", "").strip().lower() in _FALSE:
        return None
    return Path(workdir).absolute() / CACHE_DIR


def use_run_cache(workdir: str | os.PathLike, info: Callable[[str], None]) -> Path | None:
    """Point JAX's persistent compilation cache at ``workdir``'s (see :func:`run_cache_dir`);
    call it before anything is compiled. Returns the directory, or None when the user's
    choice stands. Creates nothing: JAX makes the directory when it first writes to it (so a
    run that fails on its data leaves no workdir). On a restart, process 0 (the one that
    writes entries) first deletes damaged ones, holding the workdir lock."""
    path = run_cache_dir(workdir)
    if path is None:
        return None
    import jax

    from train.guards import WorkdirLock

    if path.is_dir() and jax.process_index() == 0:
        with WorkdirLock(path.parent):  # never sweep under a running writer
            dropped = drop_damaged_entries(path)
        if dropped:
            info(f"compile cache: deleted {len(dropped)} damaged entr{'y' if len(dropped) == 1 else 'ies'} "
                 f"in {path} (left by a killed run or a full disk); they compile again")
    jax.config.update("jax_compilation_cache_dir", str(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    # A failed write (a full disk) only costs a compile at the next start; the run says what
    # the disk is short of where it matters (checkpoints, metrics), in one line.
    warnings.filterwarnings("ignore", message="Error writing persistent compilation cache entry")
    # JAX would also point XLA's GPU autotuning cache into it, and that puts the directory's
    # path (and whether this is process 0) into every entry's key: a moved or copied workdir
    # would never hit. The executables themselves are what a restart needs.
    jax.config.update("jax_persistent_cache_enable_xla_caches", "none")
    return path


def drop_damaged_entries(path: Path) -> list[str]:
    """Delete the entries under ``path`` that do not decompress (truncated or empty); their
    names. Reads every entry: meant for a run's own few. Without JAX's (private) decoder
    nothing is checked."""
    try:
        from jax._src.compilation_cache import decompress_executable
    except ImportError:
        return []
    dropped = []
    for entry in sorted(path.glob(f"*{_ENTRY_SUFFIX}")):
        try:
            data = entry.read_bytes()
            if not data:
                raise ValueError("empty")
            decompress_executable(data)
        except Exception:  # noqa: BLE001  (zlib.error, zstandard.ZstdError, ValueError, OSError)
            entry.unlink(missing_ok=True)
            dropped.append(entry.name)
    return dropped
