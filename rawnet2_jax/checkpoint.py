"""Model directories: save/restore converted or trained RawNet2 variables, ``load_pretrained``.

A *model directory* holds everything needed to rebuild one model, and nothing else::

    MODEL_DIR/
      config.json      ModelConfig.to_json()
      metadata.json    {"format_version": 1, "source": ..., ...}
      variables/       orbax checkpoint of {"params", "batch_stats", "buffers"}
      manifest.json    {"algorithm": "sha256", "files": {"config.json": HEX, "variables/...": HEX}}

Writers (the converter, the trainer) call :func:`save_model`, which writes into a temporary
sibling directory and renames it into place, so a reader never sees a half-written model.
Leftover temporary siblings of writers that were killed are removed by the next write.

Readers call :func:`load_pretrained` with a model directory or a training workdir (the
trainer saves its best model with ``save_model(workdir / BEST_MODEL_DIRNAME, ...)``). The
manifest is checked at every load, so a damaged file is named instead of silently changing
the scores; directories saved before manifests existed load unchecked.

No torch here: this module is what users import to *run* a model.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from rawnet2_jax.config import ModelConfig
from rawnet2_jax.errors import CheckpointError, first_line
from rawnet2_jax.fsutil import (
    make_temp_dir,
    missing_reason,
    os_error_line,
    remove_stale_temps,
    replace_dir,
    sha256_file,
)
from rawnet2_jax.fsutil import recover_moved_aside as fs_recover_moved_aside
from rawnet2_jax.treecheck import raise_problems, shape_problems, summarize

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
VARIABLES_DIR = "variables"
MANIFEST_FILE = "manifest.json"
TRAIN_CONFIG_KEYS = ("model", "batch_size")  # a workdir's config.json (a TrainConfig) has these
BEST_MODEL_DIRNAME = "best_model"  # where the trainer puts its best model inside a workdir
COLLECTIONS = ("params", "batch_stats", "buffers")

__all__ = [
    "BEST_MODEL_DIRNAME",
    "FORMAT_VERSION",
    "Pretrained",
    "check_variables",
    "find_model_dir",
    "is_model_dir",
    "load_config",
    "load_metadata",
    "load_pretrained",
    "recover_moved_aside",
    "restore_variables",
    "save_model",
    "verify_manifest",
    "write_manifest",
]


# ----------------------------------------------------------------------------- helpers


def _to_numpy_tree(tree: Any) -> Any:
    """Nested mapping of arrays -> nested plain dict of numpy arrays (host copies)."""
    if isinstance(tree, Mapping):
        return {str(k): _to_numpy_tree(v) for k, v in tree.items()}
    return np.asarray(tree)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        path = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flatten(v, path))
        else:
            out[path] = v
    return out


def _summarize(items: list[str], limit: int = 8) -> str:
    return summarize(items, limit)


def _unfreeze(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {str(k): _unfreeze(v) for k, v in tree.items()}
    return tree


# ----------------------------------------------------------------------------- shapes


def expected_shapes(config: ModelConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{"collection/module/.../name": (shape, dtype)}`` of the variables ``config`` builds.

    Uses ``jax.eval_shape`` on ``model.init``: no computation, no memory. Traced once per
    config in a process (0.2 s even for the demo model; training checks every best model).
    """
    return dict(_expected_shapes(config.replace(name="")))


@functools.lru_cache(maxsize=32)
def _expected_shapes(config: ModelConfig) -> tuple[tuple[str, tuple[tuple[int, ...], str]], ...]:
    import jax
    import jax.numpy as jnp

    from rawnet2_jax.model import RawNet2

    model = RawNet2(config)
    x = jax.ShapeDtypeStruct((1, config.num_samples), jnp.float32)
    abstract = jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x, train=False), x
    )
    flat = _flatten(_unfreeze(abstract))
    return tuple((k, (tuple(v.shape), str(v.dtype))) for k, v in flat.items())


def check_variables(variables: Mapping[str, Any], config: ModelConfig, what: str = "variables") -> None:
    """Raise one-line :class:`CheckpointError` if ``variables`` do not fit ``config``.

    Missing, unexpected and misshapen arrays are all listed in the same message.
    """
    want = {k: shape for k, (shape, _dtype) in expected_shapes(config).items()}
    got = {k: tuple(np.shape(v)) for k, v in _flatten(_unfreeze(variables)).items()}
    raise_problems(
        shape_problems(want, got, limit=8, expects=f"config {config.name!r} expects"),
        f"{what} do not match model config {config.name!r}: ",
        " (was config.json edited, or the model code changed since this was saved?)",
    )


# ----------------------------------------------------------------------------- save


def save_model(
    directory: str | os.PathLike,
    variables: Mapping[str, Any],
    config: ModelConfig,
    metadata: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = True,
    validate: bool = True,
) -> Path:
    """Write a model directory atomically and return its path.

    ``variables``: mapping with collections ``params``, ``batch_stats``, ``buffers`` (missing
    collections are saved empty). ``metadata``: small JSON-serialisable dict (source, epoch,
    dev EER, ...); ``format_version`` and ``saved_at`` are added. The directory is first
    written as a hidden temporary sibling and renamed into place; with ``overwrite=False`` a
    non-empty existing ``directory`` raises :class:`CheckpointError`. An existing model is only
    replaced once the new one is complete.
    """
    directory = Path(directory).absolute()
    variables = _to_numpy_tree(variables)
    unknown = sorted(set(variables) - set(COLLECTIONS))
    if unknown:
        raise CheckpointError(
            f"cannot save variable collections {unknown}; expected only {list(COLLECTIONS)}"
        )
    variables = {c: variables.get(c, {}) for c in COLLECTIONS}
    if validate:
        check_variables(variables, config)

    _check_replaceable(directory, overwrite)

    meta = dict(metadata or {})
    meta["format_version"] = FORMAT_VERSION
    meta.setdefault("saved_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    meta.setdefault("model", config.name)
    try:
        meta_text = json.dumps(meta, indent=2, sort_keys=True, default=str)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"model metadata is not JSON-serialisable: {e}") from None

    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        recover_moved_aside(directory)
        remove_stale_temps(directory.parent, directory.name)
        tmp = make_temp_dir(directory.parent, directory.name)
    except OSError as e:
        raise CheckpointError(os_error_line(e, f"creating {directory}")) from None
    try:
        (tmp / CONFIG_FILE).write_text(config.to_json() + "\n")
        (tmp / METADATA_FILE).write_text(meta_text + "\n")
        _save_variables(tmp / VARIABLES_DIR, variables, directory)
        write_manifest(tmp)
        replace_dir(tmp, directory)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(os_error_line(e, f"writing model {directory}") + "; nothing was replaced") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _check_replaceable(directory: Path, overwrite: bool) -> None:
    """A model may be written at ``directory``: missing, empty, or a model dir with ``overwrite``."""
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"{directory} exists and is not a directory; choose another output path")
    if not directory.exists() or not any(directory.iterdir()):
        return
    if not overwrite:
        raise CheckpointError(f"{directory} exists and is not empty; choose another output directory or pass --force")
    if not is_model_dir(directory):  # --force replaces a model, never a folder of other files
        first = sorted(p.name for p in directory.iterdir())[0]
        raise CheckpointError(
            f"{directory} holds files that are not a model directory ({first}, ...); --force replaces only "
            "a model directory: choose another output directory"
        )


def _local_checkpointer():
    """An orbax checkpointer that involves only this process.

    A model dir holds host-side numpy arrays written by ONE process (the primary of a
    multi-process run writes ``best_model/``; every process may read a model dir on its
    own). orbax's default is a collective save/restore with barriers across all processes,
    which hangs when only one of them calls it; making this process the primary and the
    only active process skips those barriers (single-process runs are unaffected).
    """
    import jax
    import orbax.checkpoint as ocp

    me = jax.process_index()
    return ocp.StandardCheckpointer(
        multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    )


@contextlib.contextmanager
def quiet_orbax_logs():
    """absl (orbax's logger) silenced while active: orbax logs a failed write with tracebacks,
    hundreds of lines on a full disk, and the caller says it in one line."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        absl.setLevel(level)


def _save_variables(vdir: Path, variables: Mapping[str, Any], directory: Path) -> None:
    ckptr = _local_checkpointer()
    with quiet_orbax_logs():  # closing after a failed write logs too
        try:
            ckptr.save(vdir, variables)
            ckptr.wait_until_finished()
        except OSError:
            raise
        except Exception as e:  # tensorstore reports a full disk or a read-only dir in its own types
            text = str(e)
            for code, words in ((28, ("No space left", "ENOSPC")), (30, ("Read-only file system", "EROFS")),
                                (13, ("Permission denied", "EACCES"))):
                if any(w in text for w in words):
                    raise OSError(code, os.strerror(code), str(vdir)) from None
            first = (text.strip().splitlines() or [type(e).__name__])[0][:200]
            raise CheckpointError(f"writing model {directory} failed ({type(e).__name__}: {first}); "
                                  "nothing was replaced") from None
        finally:
            ckptr.close()


def recover_moved_aside(directory: str | os.PathLike) -> bool:
    """Put back a model that a writer killed between :func:`rawnet2_jax.fsutil.replace_dir`'s
    two renames left moved aside (True); see :func:`rawnet2_jax.fsutil.recover_moved_aside`."""
    return fs_recover_moved_aside(directory, is_model_dir)


# ----------------------------------------------------------------------------- manifest


def _model_files(directory: Path) -> list[str]:
    """Relative POSIX paths of every file under ``directory`` except the manifest, sorted."""
    out = []
    for root, _dirs, names in os.walk(directory):
        for name in names:
            rel = Path(root, name).relative_to(directory).as_posix()
            if rel not in (MANIFEST_FILE, f".{MANIFEST_FILE}.tmp"):
                out.append(rel)
    return sorted(out)


def write_manifest(directory: str | os.PathLike) -> Path:
    """Write ``manifest.json``: the SHA-256 and size of every other file of the directory.
    Atomically (a kill leaves no manifest, never half of one; a failed write no temporary)."""
    d = Path(directory)
    files = {rel: {"sha256": sha256_file(d / rel), "bytes": (d / rel).stat().st_size} for rel in _model_files(d)}
    path = d / MANIFEST_FILE
    tmp = d / f".{MANIFEST_FILE}.tmp"
    try:
        tmp.write_text(json.dumps({"algorithm": "sha256", "files": files}, indent=1, sort_keys=True) + "\n")
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk leaves no torn temporary either
        raise
    os.replace(tmp, path)
    return path


MODEL_DIR_FIX = "re-create the model directory (re-convert or re-train), or restore it from a backup"


def verify_manifest(directory: str | os.PathLike, fix: str = MODEL_DIR_FIX) -> bool:
    """Check every file listed in ``manifest.json`` (False: no manifest, nothing checked).

    Raises one-line :class:`CheckpointError` naming the first missing or damaged file and
    ending with ``fix`` (what to do).
    """
    d = Path(directory)
    path = d / MANIFEST_FILE
    if not path.exists():
        return False
    try:
        files = json.loads(path.read_text())["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not an object")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is damaged ({type(e).__name__}: {e}); {fix}") from None
    for rel in sorted(files):
        entry = files[rel]
        want = entry.get("sha256") if isinstance(entry, dict) else entry
        f = d / rel
        if not f.is_file():
            raise CheckpointError(f"{f} is missing (listed in {MANIFEST_FILE}); {fix}")
        if isinstance(entry, dict) and entry.get("bytes") is not None and f.stat().st_size != entry["bytes"]:
            raise CheckpointError(
                f"{f} is damaged: {f.stat().st_size} bytes instead of {entry['bytes']} "
                f"(truncated or overwritten since it was saved); {fix}"
            )
        if sha256_file(f) != want:
            raise CheckpointError(
                f"{f} is damaged: its SHA-256 differs from {MANIFEST_FILE} (changed since it was "
                f"saved); {fix}" + (" (after a deliberate edit, delete manifest.json)" if rel == CONFIG_FILE else "")
            )
    return True


# ----------------------------------------------------------------------------- load


def is_model_dir(directory: str | os.PathLike) -> bool:
    d = Path(directory)
    return (d / CONFIG_FILE).is_file() and (d / VARIABLES_DIR).is_dir()


def _read_json_object(path: Path) -> dict[str, Any] | None:
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return d if isinstance(d, dict) else None


def _is_training_workdir(d: Path) -> bool:
    """A ``python -m train`` workdir: ``checkpoints/`` or a TrainConfig ``config.json``."""
    if (d / "checkpoints").is_dir() or (d / BEST_MODEL_DIRNAME).is_dir():
        return True
    cfg = _read_json_object(d / CONFIG_FILE) if (d / CONFIG_FILE).is_file() else None
    return cfg is not None and all(k in cfg for k in TRAIN_CONFIG_KEYS) and isinstance(cfg["model"], dict)


def find_model_dir(directory: str | os.PathLike) -> Path:
    """Resolve a model directory or a training workdir to the model directory to load.

    Order: ``directory`` itself when it is a model directory; the ``best_model/`` of a
    training workdir (``checkpoints/``, ``best_model/`` and a TrainConfig ``config.json``);
    the only model directory among its children (one level down). Raises one-line
    :class:`CheckpointError` otherwise.
    """
    d = Path(directory)
    if not os.path.exists(d):
        why = missing_reason(d)
        raise CheckpointError(f"model directory {d} {why}" if why == "does not exist" else f"{d} {why}")
    if not d.is_dir():
        raise CheckpointError(
            f"{d} is a file, not a model directory; convert a PyTorch .pt first with "
            f"`python -m convert {d} OUT_DIR`"
        )
    if _is_training_workdir(d):
        best = d / BEST_MODEL_DIRNAME
        recover_moved_aside(best)
        if is_model_dir(best):
            return best
        raise CheckpointError(
            f"{d} is a training workdir without a finished {BEST_MODEL_DIRNAME}/ yet (it is written "
            "after the first epoch's dev evaluation); let the training reach an epoch end, or pass a "
            "model directory"
        )
    if (d / CONFIG_FILE).exists() or (d / VARIABLES_DIR).exists():
        return d
    children = sorted(
        c for c in d.iterdir() if c.is_dir() and not c.name.startswith(".") and is_model_dir(c)
    )
    if len(children) == 1:
        return children[0]
    if len(children) > 1:
        raise CheckpointError(
            f"{d} holds several model directories ({_summarize([c.name for c in children])}); "
            "pass one of them"
        )
    raise CheckpointError(
        f"{d} is not a model directory (no {CONFIG_FILE} / {VARIABLES_DIR}/) nor a training "
        f"workdir with a {BEST_MODEL_DIRNAME}/ inside; pass the output of `python -m convert` "
        "or of `python -m train`"
    )


def load_config(directory: str | os.PathLike) -> ModelConfig:
    """The :class:`ModelConfig` stored in a model directory (one-line errors)."""
    from rawnet2_jax.config import config_field_problems

    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; {directory} is not a complete model directory")
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is corrupt (not valid JSON: {e}); re-create the model directory") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"{path} is corrupt: expected a JSON object, got {type(d).__name__}")
    if all(k in d for k in TRAIN_CONFIG_KEYS) and isinstance(d.get("model"), dict):
        raise CheckpointError(
            f"{path} is a training config, not a model config; pass the training workdir itself "
            f"(its {BEST_MODEL_DIRNAME}/ is used) or a model directory"
        )
    problems = config_field_problems(ModelConfig, d)
    if problems:
        raise CheckpointError(f"{path} is not a valid model config: {_summarize(problems, 4)}; re-create the model directory")
    try:
        return ModelConfig.from_dict(d)
    except (TypeError, ValueError) as e:
        msg = first_line(e)
        raise CheckpointError(f"{path} is not a valid model config: {msg}") from None


def load_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """The metadata dict of a model directory ({} if the file is absent or unreadable)."""
    path = Path(directory) / METADATA_FILE
    try:
        d = json.loads(path.read_text())
        return d if isinstance(d, dict) else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}


def restore_variables(
    directory: str | os.PathLike, config: ModelConfig | None = None, *, verify: bool = True
) -> dict[str, Any]:
    """Variables (nested dicts of numpy arrays) of a model directory, checked against its config.

    ``config`` defaults to the directory's own ``config.json``. Raises one-line
    :class:`CheckpointError` on a missing directory, a file that does not match the manifest
    (``verify=False`` skips that check), a failed orbax restore, or arrays that do not fit
    the config.
    """
    d = Path(directory).absolute()
    if not d.is_dir():
        raise CheckpointError(f"model directory {d} does not exist")
    if config is None:
        config = load_config(d)
    if verify:
        verify_manifest(d)
    vdir = d / VARIABLES_DIR
    if not vdir.is_dir():
        raise CheckpointError(f"{vdir} is missing; {d} is not a complete model directory")
    ckptr = _local_checkpointer()
    try:
        restored = ckptr.restore(vdir)
    except Exception as e:  # orbax/tensorstore raise many types; all mean "unreadable"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise CheckpointError(
            f"cannot restore variables from {vdir} ({type(e).__name__}: {first}); "
            "the checkpoint is incomplete or corrupt, re-create it"
        ) from None
    finally:
        ckptr.close()
    if not isinstance(restored, Mapping):
        raise CheckpointError(f"{vdir} does not hold a variables dict; re-create the model directory")
    variables = _to_numpy_tree(restored)
    unknown = sorted(set(variables) - set(COLLECTIONS))
    if unknown:
        raise CheckpointError(f"{vdir} holds unexpected collections {unknown}")
    variables = {c: variables.get(c, {}) for c in COLLECTIONS}
    check_variables(variables, config, what=f"variables in {vdir}")
    return variables


class Pretrained:
    """A restored model ready for inference.

    ``logits(x)``: float32 numpy (B, T) audio at 16 kHz (a 1-D (T,) array is one utterance)
    -> numpy (B, 2) logits, index 0 = spoof, 1 = bona fide, before softmax, from the jitted
    model in eval mode on ``x`` exactly as given (no padding or cutting; jit compiles once per
    input shape). ``scores(x)`` = logit[1] - logit[0] (higher = more bona fide).

    ``matmul_precision``: "highest" (default) keeps float32 matmuls/convolutions exact on
    GPUs/TPUs too (no TF32/bf16 passes), so the logits match the PyTorch original; None uses
    the backend's faster default.
    """

    def __init__(
        self,
        config: ModelConfig,
        variables: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
        directory: str | os.PathLike | None = None,
        matmul_precision: str | None = "highest",
    ):
        import jax

        from rawnet2_jax.model import RawNet2

        self.config = config
        self.model = RawNet2(config)
        self.variables = jax.device_put(dict(variables))
        self.metadata = dict(metadata or {})
        self.directory = Path(directory) if directory is not None else None
        self.matmul_precision = matmul_precision

        model = self.model

        def _logits(variables, x):
            logits, _ = model.apply(variables, x, train=False)
            return logits

        self._logits = jax.jit(_logits)

    def _prepare(self, x: Any) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2:
            raise ValueError(f"audio must be (B, T) or (T,), got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"audio must be floating point in [-1, 1], got dtype {x.dtype}")
        return x.astype(np.float32, copy=False)

    def logits(self, x: Any) -> np.ndarray:
        import jax

        x = self._prepare(x)
        if self.matmul_precision is None:
            return np.asarray(self._logits(self.variables, x))
        with jax.default_matmul_precision(self.matmul_precision):  # part of jit's cache key
            return np.asarray(self._logits(self.variables, x))

    def scores(self, x: Any) -> np.ndarray:
        lg = self.logits(x)
        return lg[:, 1] - lg[:, 0]

    def __repr__(self) -> str:
        where = f" from {self.directory}" if self.directory else ""
        return f"Pretrained({self.config.name!r}{where})"


def load_pretrained(directory: str | os.PathLike, *, matmul_precision: str | None = "highest") -> Pretrained:
    """Load a model directory (or a training workdir's best model) for inference.

    >>> m = load_pretrained("models/caa_rawnet2")      # doctest: +SKIP
    >>> m.logits(audio)          # (B, T) float32 at 16 kHz -> (B, 2)
    >>> m.scores(audio)          # logit[1] - logit[0]
    """
    d = find_model_dir(directory)
    config = load_config(d)
    variables = restore_variables(d, config)  # checks the manifest first
    return Pretrained(config, variables, load_metadata(d), d, matmul_precision=matmul_precision)
