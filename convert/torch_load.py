"""Reading PyTorch checkpoint files safely: tensors only, never code, one-line errors.

* :func:`read_torch_file` -- ``torch.load(map_location="cpu", weights_only=True)``: a pickle
  that carries code is refused, never executed (and named as unsafe, even where the safe
  unpickler stops before it sees the offending global); truncated, empty and foreign files
  get one line each.
* :func:`unwrap_state_dict` -- a bare state dict, a ``{"model_state_dict": ...}`` wrapper
  (other keys are reported and ignored) or a ``module.`` (DataParallel) prefix -> the
  tensors by name.
* :func:`widen_half_precision`, :func:`nonfinite_tensors`, :func:`to_numpy` -- what the
  converter does to the tensors before it looks at them.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from rawnet2_jax.errors import CheckpointError, first_line
from rawnet2_jax.treecheck import summarize

WRAPPER_KEYS = ("model_state_dict", "state_dict")


def read_torch_file(path: str | os.PathLike) -> Any:
    """``torch.load`` with ``weights_only=True`` and one-line errors for every bad file."""
    import pickle

    import torch

    from rawnet2_jax.fsutil import missing_reason

    p = Path(path)
    if not os.path.exists(p):
        why = missing_reason(p)
        raise CheckpointError(f"{p}: no such file" if why == "does not exist" else f"{p} {why}")
    if p.is_dir():
        raise CheckpointError(f"{p} is a directory; pass the PyTorch .pt/.pth file")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: file is empty (truncated download or failed save?)")
    kind = _other_format(p)
    if kind:
        raise CheckpointError(f"{p} is {kind}, not a PyTorch checkpoint; pass the .pt/.pth file that torch.save wrote")
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4": we explain failures ourselves
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise _unpickling_error(p, e) from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, AttributeError, IndexError,
            UnicodeDecodeError, TypeError) as e:
        raise CheckpointError(
            f"{p}: truncated or corrupt checkpoint, torch cannot read it "
            f"({type(e).__name__}: {first_line(e, sentence=True)[:160]}); re-download or re-save it"
        ) from None


# Files that are sometimes passed by mistake, by their first bytes (a torch file is a zip archive
# or a pickle; anything else is left to torch.load, which also reads legacy formats).
_OTHER_FORMATS = ((b"RIFF", "a WAV (RIFF) audio file"), (b"fLaC", "a FLAC audio file"), (b"OggS", "an Ogg file"),
                  (b"ID3", "an MP3 file"), (b"\x93NUMPY", "a NumPy .npy file"), (b"\x89HDF", "an HDF5 file"))


def _other_format(p: Path) -> str | None:
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError:
        return None  # torch.load says what is wrong
    return next((kind for magic, kind in _OTHER_FORMATS if head.startswith(magic)), None)


def _unpickling_error(p: Path, e: Exception) -> CheckpointError:
    """Why ``torch.load(weights_only=True)`` refused a pickle: unsafe (code), foreign or corrupt."""
    msg = str(e)
    # weights_only refuses both code-carrying pickles (an unsupported GLOBAL) and bytes
    # that are no pickle at all ("Unsupported operand"): only the first is unsafe.
    if ("Weights only load failed" in msg or "weights_only" in msg) and "global" in msg.lower():
        what = ""
        m = re.search(r"GLOBAL ([\w.]+)", msg)
        if m:
            what = f" (it references {m.group(1)})"
        return CheckpointError(
            f"{p}: unsafe pickle: the file carries code or Python objects beyond tensors{what}; "
            "refusing to load; re-save with torch.save(model.state_dict())"
        )
    # The safe unpickler stops at the first opcode it does not know (e.g. protocol 4's
    # FRAME) before it sees any GLOBAL: look at the globals without running anything.
    foreign = _foreign_pickle_globals(p)
    if foreign:
        return CheckpointError(
            f"{p}: unsafe pickle: the file carries code or Python objects beyond tensors (it "
            f"references {foreign[0]}); refusing to load; re-save with torch.save(model.state_dict())"
        )
    if foreign is not None:
        return CheckpointError(
            f"{p}: a plain pickle that torch.load(weights_only=True) cannot read "
            f"({first_line(e, sentence=True)}); re-save it with torch.save(model.state_dict(), path)"
        )
    return CheckpointError(f"{p}: corrupt checkpoint ({first_line(e, sentence=True)}); re-download or re-save it")


# Globals a pickled state dict may reference (what torch.save writes for tensors).
_TENSOR_GLOBAL_PREFIXES = ("torch.", "collections.OrderedDict", "_codecs.encode", "numpy.core.multiarray._reconstruct",
                           "numpy.dtype", "numpy.ndarray", "builtins.set")


def _pickle_streams(p: Path) -> list[bytes]:
    import zipfile

    if zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as z:
            return [z.read(n) for n in z.namelist() if n.endswith(".pkl")]
    return [p.read_bytes()]


def _foreign_pickle_globals(p: Path) -> list[str] | None:
    """Globals (``module.name``) of the pickle in ``p`` that are not tensor machinery, found by
    reading its opcodes only (``pickletools``; nothing is imported or called). ``None``: the
    bytes are no readable pickle."""
    import pickletools

    foreign: list[str] = []
    try:
        streams = _pickle_streams(p)
        for data in streams:
            pushed: list[Any] = []  # recent string pushes (memo gets included): STACK_GLOBAL's operands
            memo: dict[int, Any] = {}
            for op, arg, _pos in pickletools.genops(data):
                if op.name in ("GLOBAL", "INST"):
                    name = str(arg).replace(" ", ".")
                elif op.name == "STACK_GLOBAL":
                    if len(pushed) < 2 or not all(isinstance(x, str) for x in pushed[-2:]):
                        raise ValueError("STACK_GLOBAL without its two names: not a pickle")  # e.g. .npy's 0x93
                    name = ".".join(pushed[-2:])
                else:
                    if isinstance(arg, str) and ("UNICODE" in op.name or "STRING" in op.name):
                        pushed.append(arg)
                    elif op.name == "MEMOIZE":
                        memo[len(memo)] = pushed[-1] if pushed else None
                    elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                        memo[int(arg)] = pushed[-1] if pushed else None
                    elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                        pushed.append(memo.get(int(arg)))
                    continue
                if not name.startswith(_TENSOR_GLOBAL_PREFIXES):
                    foreign.append(name)
    except Exception:  # not a pickle (or a truncated one): corrupt, not unsafe
        return None if not foreign else foreign
    return foreign


def unwrap_state_dict(obj: Any, source: str = "checkpoint") -> tuple[dict[str, Any], list[str]]:
    """(state dict with ``module.`` stripped, notes for the user)."""
    import torch

    notes: list[str] = []
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{source} holds a {type(obj).__name__}, not a state dict; "
            "re-save with torch.save(model.state_dict())"
        )
    sd: Mapping[str, Any] = obj
    for wk in WRAPPER_KEYS:
        if wk in obj and isinstance(obj[wk], Mapping):
            others = sorted(str(k) for k in obj if k != wk)
            notes.append(
                f"found a {wk!r} wrapper; using it"
                + (f", ignoring the other keys: {', '.join(others)}" if others else "")
            )
            sd = obj[wk]
            break
    bad = sorted(str(k) for k, v in sd.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise CheckpointError(
            f"{source}: these entries are not tensors, so this is not a model state dict: "
            f"{summarize(bad, 10)} (for a training checkpoint, the weights are usually under "
            "'model_state_dict')"
        )
    keys = [str(k) for k in sd]
    if keys and all(k.startswith("module.") for k in keys):
        notes.append("stripped the 'module.' (DataParallel) prefix")
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return {str(k): v for k, v in sd.items()}, notes


def load_state_dict(path: str | os.PathLike) -> tuple[dict[str, Any], list[str]]:
    """(torch state dict, notes) of a checkpoint file; see :func:`read_torch_file`."""
    return unwrap_state_dict(read_torch_file(path), str(path))


def widen_half_precision(sd: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """bfloat16 / float16 tensors -> float32 (exact: every half value is a float32 value)."""
    import torch

    halves = {torch.bfloat16: "bfloat16", torch.float16: "float16"}
    out, seen = {}, {}
    for k, v in sd.items():
        if v.dtype in halves:
            seen[halves[v.dtype]] = seen.get(halves[v.dtype], 0) + 1
            v = v.to(torch.float32)
        out[k] = v
    notes = [f"widened {n} {name} tensor(s) to float32 (exact)" for name, n in sorted(seen.items())]
    return out, notes


def nonfinite_tensors(np_sd: Mapping[str, np.ndarray]) -> list[str]:
    """``["fc.weight (3 NaN/Inf of 1024)", ...]`` for every tensor with non-finite values."""
    out = []
    for k, v in np_sd.items():
        if np.issubdtype(v.dtype, np.floating):
            bad = int(v.size - np.count_nonzero(np.isfinite(v)))
            if bad:
                out.append(f"{k} ({bad} NaN/Inf of {v.size})")
    return out


def to_numpy(sd: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """torch tensors -> numpy arrays (same dtypes)."""
    return {k: v.detach().cpu().numpy() for k, v in sd.items()}
