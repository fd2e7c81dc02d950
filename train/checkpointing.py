"""Training checkpoints: orbax CheckpointManager keeping the latest and the best step.

A checkpoint holds the arrays of a :class:`train.state.TrainState` (``state``) and the
loop's :class:`train.state.HostState` as JSON (``host``). Saves are synchronous (a save
is complete when :func:`save_checkpoint` returns) and atomic (orbax writes a temporary
folder and renames it), so a kill at any moment leaves every earlier checkpoint intact.
Failures become one-line :class:`CheckpointError` s: a save that fails (disk full,
read-only file system) keeps the earlier checkpoints; a checkpoint that cannot be read
back (truncated or damaged files) is moved aside by :func:`restore_newest_valid`, which
falls back to the next older one with a warning.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import jax

from rawnet2_jax.checkpoint import quiet_orbax_logs, verify_manifest, write_manifest
from rawnet2_jax.errors import TrainingError, UserError
from train.state import HostState, TrainState

BROKEN_DIR = "broken_checkpoints"  # beside checkpoints/: damaged ones moved out of orbax's way


class CheckpointError(TrainingError):
    """A checkpoint could not be written or read (one line: what, where, what to do)."""


class LatestAndBest:
    """Orbax preservation policy: keep the latest checkpoint and the best one.

    Every save carries ``metrics={"best_step": s}`` (the step of the best end-of-epoch
    checkpoint so far, -1 if none). The latest checkpoint is never deleted; the step named
    by the newest checkpoint's ``best_step`` is kept too. Ties and ordering are therefore
    decided by the training loop (strict improvement of dev EER), not by orbax sorting.
    """

    def should_preserve(self, checkpoints, *, context=None):
        if not checkpoints:
            return []
        latest = max(range(len(checkpoints)), key=lambda i: checkpoints[i].step)
        m = checkpoints[latest].metrics or {}
        best = int(m.get("best_step", -1))
        return [i == latest or c.step == best for i, c in enumerate(checkpoints)]


def make_checkpoint_manager(directory: str | os.PathLike):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        preservation_policy=LatestAndBest(),
        enable_async_checkpointing=False,  # a save is complete when save() returns
        create=True,
        cleanup_tmp_directories=True,  # leftovers of a run killed mid-save
    )
    return ocp.CheckpointManager(
        Path(directory).absolute(), options=options, item_names=("state", "host")
    )


# What tensorstore says instead of an OSError, and the errno text it stands for.
_STORE_ERRORS = {"RESOURCE_EXHAUSTED": errno.ENOSPC, "PERMISSION_DENIED": errno.EACCES}


def _reason(e: BaseException) -> str:
    """The innermost OS-level cause of an orbax / tensorstore failure, on one line (our own
    one-line errors as they are)."""
    if isinstance(e, UserError):
        return str(e)
    seen = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    text = " ".join(str(e).split())
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
        if os.strerror(code) in text:
            return os.strerror(code)
    for status, code in _STORE_ERRORS.items():
        if status in text:
            return os.strerror(code)
    return f"{type(e).__name__}: {text[:160]}" if text else type(e).__name__


def save_checkpoint(mngr, state: TrainState, host: HostState, step: int) -> int:
    """Write checkpoint ``step`` (= ``state.step``, passed so that no device value is read)."""
    import orbax.checkpoint as ocp

    best_step = host.early_stop.best_step
    try:
        with quiet_orbax_logs():  # a failed write is said below, once
            mngr.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state.arrays()),
                    host=ocp.args.JsonSave(host.to_json()),
                ),
                metrics={"best_step": -1 if best_step is None else int(best_step)},
                force=True,
            )
            mngr.wait_until_finished()
    except Exception as e:  # orbax wraps OS errors in assorted types
        previous = [s for s in mngr.all_steps() if s != step]
        kept = f"checkpoint {max(previous)} is kept" if previous else "no earlier checkpoint exists"
        raise CheckpointError(
            f"could not write checkpoint {step} in {mngr.directory} ({_reason(e)}); {kept}: fix that "
            "(free disk space, permissions) and re-run the same command to resume"
        ) from None
    if jax.process_index() == 0:  # after the commit: a kill before it leaves no manifest, not a wrong one
        _write_manifest_of(Path(mngr.directory) / str(step), step)
    return step


def _write_manifest_of(directory: Path, step: int) -> None:
    """The committed checkpoint's manifest; failing, the checkpoint is kept, unchecked."""
    try:
        write_manifest(directory)
    except OSError as e:
        raise CheckpointError(
            f"checkpoint {step} in {directory.parent} is written but its manifest (the SHA-256 of its files) "
            f"could not be ({_reason(e)}); the checkpoint restores without that check: fix that (free disk "
            "space, permissions) and re-run the same command to resume"
        ) from None


def restore_checkpoint(mngr, state: TrainState, step: int) -> tuple[TrainState, HostState]:
    """Arrays (placed like ``state``'s) and host state of checkpoint ``step``."""
    import orbax.checkpoint as ocp

    # orbax reads flipped bytes back as numbers (the audit's NaN losses blamed on the learning
    # rate): the SHA-256 manifest written after the save says they changed. Checkpoints
    # saved without one (before manifests, or killed before it) restore unchecked.
    verify_manifest(Path(mngr.directory) / str(step), fix="the checkpoint cannot be used")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state.arrays())
    restored = mngr.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), host=ocp.args.JsonRestore()),
    )
    arrays = restored["state"]
    # Keep the optimizer-state pytree classes (NamedTuples) of the live state.
    arrays["opt_state"] = jax.tree.unflatten(
        jax.tree.structure(state.opt_state), jax.tree.leaves(arrays["opt_state"])
    )
    return state.with_arrays(arrays), HostState.from_json(restored["host"])


def restore_newest_valid(
    mngr, state: TrainState, warn: Callable[[str], None]
) -> tuple[Any, TrainState, HostState | None, int | None]:
    """Restore the newest checkpoint that reads back; damaged newer ones are moved aside.

    Returns ``(manager, state, host, step)``; the manager is a fresh one when a damaged
    checkpoint was moved (orbax caches its step list); ``host``/``step`` are ``None`` when
    there is no checkpoint at all. Raises :class:`CheckpointError` when checkpoints exist
    but none reads back.
    """
    directory = Path(mngr.directory)
    moved = []
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            restored, host = restore_checkpoint(mngr, state, step)
        except Exception as e:  # truncated / damaged files: tensorstore, JSON, orbax errors
            dest = directory.parent / BROKEN_DIR / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(directory / str(step)), dest)
            moved.append(step)
            warn(f"warning: checkpoint {step} in {directory} cannot be read ({_reason(e)}); moved to {dest}")
            continue
        if moved:
            mngr.close()
            mngr = make_checkpoint_manager(directory)
            warn(f"warning: resuming from the newest valid checkpoint, step {step}")
        return mngr, restored, host, step
    if moved:
        raise CheckpointError(
            f"no checkpoint in {directory} can be read (damaged ones moved to {directory.parent / BROKEN_DIR}); "
            "remove the workdir's checkpoints to start afresh"
        )
    return mngr, state, None, None
