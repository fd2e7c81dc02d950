"""PyTorch RawNet2 checkpoint -> Flax model directory.

Steps (each failure is one line, a non-zero exit, and nothing written):

1. :func:`load_state_dict` -- ``torch.load(map_location="cpu", weights_only=True)``: a pickle
   that carries code is refused, never executed. Accepts a bare state dict, a
   ``{"model_state_dict": ...}`` wrapper (other keys are reported and ignored) and a
   ``module.`` (DataParallel) prefix.
2. :func:`choose_config` -- the layout (``seed`` / ``official``) from the key names, then the
   preset of that layout whose expected shapes fit (``--preset`` overrides; ``--set`` changes
   single fields).
3. :func:`check_state_dict` -- missing, unexpected and misshapen tensors, all in ONE message.
4. ``convert.tables.torch_to_flax`` -- the tensors become Flax variables.
5. optional :func:`verify` -- torch reference module vs Flax model on the same audio.
6. optional bn-stats ranking (:mod:`convert.bn_stats`).
7. :func:`rawnet2_jax.checkpoint.save_model` -- written to a temporary sibling and renamed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from rawnet2_jax.config import PRESETS, ModelConfig
from rawnet2_jax.errors import CheckpointError
from rawnet2_jax.treecheck import raise_problems, shape_problems, summarize

WRAPPER_KEYS = ("model_state_dict", "state_dict")
DEFAULT_TOLERANCE = 1e-4

__all__ = [
    "ConversionResult",
    "DEFAULT_TOLERANCE",
    "apply_overrides",
    "check_state_dict",
    "choose_config",
    "convert_checkpoint",
    "load_state_dict",
    "read_torch_file",
    "unwrap_state_dict",
    "verify",
]


# ----------------------------------------------------------------------------- loading


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
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4": we explain failures ourselves
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        # weights_only refuses both code-carrying pickles (an unsupported GLOBAL) and bytes
        # that are no pickle at all ("Unsupported operand"): only the first is unsafe.
        if ("Weights only load failed" in msg or "weights_only" in msg) and "global" in msg.lower():
            what = ""
            m = re.search(r"GLOBAL ([\w.]+)", msg)
            if m:
                what = f" (it references {m.group(1)})"
            raise CheckpointError(
                f"{p}: unsafe pickle: the file carries code or Python objects beyond tensors{what}; "
                "refusing to load; re-save with torch.save(model.state_dict())"
            ) from None
        # The safe unpickler stops at the first opcode it does not know (e.g. protocol 4's
        # FRAME) before it sees any GLOBAL: look at the globals without running anything.
        foreign = _foreign_pickle_globals(p)
        if foreign:
            raise CheckpointError(
                f"{p}: unsafe pickle: the file carries code or Python objects beyond tensors (it "
                f"references {foreign[0]}); refusing to load; re-save with torch.save(model.state_dict())"
            ) from None
        if foreign is not None:
            raise CheckpointError(
                f"{p}: a plain pickle that torch.load(weights_only=True) cannot read "
                f"({_first_line(e)}); re-save it with torch.save(model.state_dict(), path)"
            ) from None
        raise CheckpointError(f"{p}: corrupt checkpoint ({_first_line(e)}); re-download or re-save it") from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, AttributeError, IndexError,
            UnicodeDecodeError, TypeError) as e:
        raise CheckpointError(
            f"{p}: truncated or corrupt checkpoint, torch cannot read it "
            f"({type(e).__name__}: {_first_line(e)[:160]}); re-download or re-save it"
        ) from None


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
                    name = ".".join(str(x) for x in pushed[-2:])
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


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    if not s:
        return type(e).__name__
    s = s.splitlines()[0]
    if len(s) > 120 and ". " in s:
        s = s.split(". ")[0]  # first sentence of a long explanation
    return s


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
            f"{_summarize(bad)} (for a training checkpoint, the weights are usually under "
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


def _to_numpy(sd: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in sd.items()}


# ----------------------------------------------------------------------------- config


def _summarize(items: Sequence[str], limit: int = 10) -> str:
    return summarize(items, limit)


def state_dict_problems(shapes: Mapping[str, tuple], config: ModelConfig) -> list[str]:
    """Human-readable problems of a ``{key: shape}`` against ``config`` ([] when it fits)."""
    from convert.tables import expected_torch_shapes

    return shape_problems(expected_torch_shapes(config), shapes, limit=10)


def check_state_dict(shapes: Mapping[str, tuple], config: ModelConfig, source: str = "checkpoint") -> None:
    """One :class:`CheckpointError` listing every missing, unexpected and misshapen tensor."""
    raise_problems(
        state_dict_problems(shapes, config),
        f"{source} does not match preset {config.name!r} ({config.layout} layout): ",
    )


def apply_overrides(config: ModelConfig, overrides: Sequence[str] | Mapping[str, Any]) -> ModelConfig:
    """``config`` with ``["field=value", ...]`` (read by ``ConfigMixin.with_overrides``) or a
    mapping of typed values applied; one-line errors."""
    if not isinstance(overrides, Mapping):
        return config.with_overrides(overrides)
    if not overrides:
        return config
    try:
        return config.replace(**overrides)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"invalid config override: {_first_line(e)}") from None


def choose_config(
    shapes: Mapping[str, tuple], preset: str | None = None, source: str = "checkpoint"
) -> tuple[ModelConfig, list[str]]:
    """The preset for a state dict: ``preset`` if given, else by layout and shapes.

    Returns (config, notes). Raises one-line :class:`CheckpointError` for an unknown preset
    or a layout that cannot be recognised.
    """
    from convert.tables import detect_layout

    notes: list[str] = []
    if preset is not None:
        if preset not in PRESETS:
            raise CheckpointError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
        return PRESETS[preset], notes
    try:
        layout = detect_layout(list(shapes))
    except (CheckpointError, ValueError, KeyError) as e:
        raise CheckpointError(
            f"{source}: unknown layout, not a RawNet2 checkpoint this converter knows "
            f"({_first_line(e)}); keys start with: {_summarize(sorted(shapes), 6)}"
        ) from None
    if layout not in ("seed", "official"):
        raise CheckpointError(f"{source}: unknown layout {layout!r}")
    candidates = [c for c in PRESETS.values() if c.layout == layout]
    scored = sorted(
        ((len(state_dict_problems(shapes, c)), i, c) for i, c in enumerate(candidates)),
        key=lambda t: (t[0], t[1]),
    )
    best = scored[0][2]
    if scored[0][0] == 0:
        notes.append(f"detected the {layout} layout; preset {best.name!r} fits every tensor shape")
    else:
        notes.append(
            f"detected the {layout} layout; no preset fits exactly, closest is {best.name!r} "
            "(pass --preset to choose)"
        )
    return best, notes


def sync_class_weights(
    config: ModelConfig, state_dict: Mapping[str, Any], overrides: Sequence[str] | Mapping[str, Any] = ()
) -> tuple[ModelConfig, list[str]]:
    """Make ``stored_class_weights`` describe the checkpoint's own ``class_weights`` tensor
    (seed layout): its values when present, None when absent. An explicit ``--set`` wins."""
    named = set(overrides) if isinstance(overrides, Mapping) else {
        o.split("=", 1)[0].strip() for o in overrides
    }
    if config.layout != "seed" or "stored_class_weights" in named:
        return config, []
    cw = state_dict.get("class_weights")
    if cw is None:
        if config.stored_class_weights is None:
            return config, []
        return config.replace(stored_class_weights=None), [
            "the checkpoint has no class_weights tensor; the converted model stores none"
        ]
    arr = np.asarray(cw.detach().cpu().numpy() if hasattr(cw, "detach") else cw, np.float32).ravel()
    values = tuple(float(str(v)) for v in arr)  # shortest decimal of each float32: 8.837, not 8.83699989
    if len(values) != config.num_classes or values == config.stored_class_weights:
        return config, []  # a wrong shape is reported by check_state_dict
    return config.replace(stored_class_weights=values), [
        f"class_weights stored in the checkpoint: {list(values)}"
    ]


# ----------------------------------------------------------------------------- audio


def load_audio_batch(paths: Sequence[str | os.PathLike], config: ModelConfig, num_samples: int) -> np.ndarray:
    """(len(paths), num_samples) float32: each file decoded at 16 kHz, cut/padded with the
    config's pad policy."""
    from rawnet2_jax.audio import fit_length, load_audio

    xs = [
        fit_length(load_audio(p, sample_rate=config.sample_rate), num_samples, config.pad_mode)
        for p in paths
    ]
    return np.stack(xs).astype(np.float32)


# ----------------------------------------------------------------------------- verify


@dataclasses.dataclass
class VerifyRow:
    name: str
    shape: tuple[int, ...]
    max_ref: float
    max_abs: float
    rel: float
    ok: bool


def _compare(name: str, ref: np.ndarray, got: np.ndarray, tol: float) -> VerifyRow:
    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    if ref.ndim == 3:
        ref = ref.transpose(0, 2, 1)  # torch conv features (B, C, T) -> Flax channels-last (B, T, C)
    if ref.shape != got.shape:
        return VerifyRow(name, tuple(got.shape), float("nan"), float("inf"), float("inf"), False)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    diff = float(np.max(np.abs(ref - got))) if ref.size else 0.0
    rel = diff / max(scale, 1e-12)
    ok = bool(np.all(np.isfinite(got))) and (rel <= tol or diff <= tol * 1e-3)
    return VerifyRow(name, tuple(got.shape), scale, diff, rel, ok)


def verify(
    state_dict: Mapping[str, Any],
    variables: Mapping[str, Any],
    config: ModelConfig,
    audio: np.ndarray,
    tolerance: float = DEFAULT_TOLERANCE,
) -> list[VerifyRow]:
    """Run the torch reference module (from ``state_dict``) and the Flax model (from
    ``variables``) on ``audio`` (B, T); one row per compared tensor (logits first).

    ``rel`` = max |torch - flax| / max |torch| per tensor; a row is ok when rel <= tolerance.
    """
    import jax
    import torch

    from convert import reference
    from rawnet2_jax.model import RawNet2

    cls = reference.SeedRawNet2 if config.layout == "seed" else reference.OfficialRawNet2
    ref = cls(config)
    try:
        ref.load_state_dict(dict(state_dict), strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"reference module rejects the state dict: {_first_line(e)}") from None
    ref.eval()
    with torch.no_grad():
        t_logits, t_inter = ref(torch.from_numpy(np.asarray(audio, np.float32)))
    t_inter = {k: v.detach().cpu().numpy() for k, v in dict(t_inter or {}).items()}

    model = RawNet2(config)
    with jax.default_matmul_precision("highest"):
        f_logits, f_inter = jax.jit(lambda v, x: model.apply(v, x, train=False))(
            variables, np.asarray(audio, np.float32)
        )
    f_inter = {k: np.asarray(v) for k, v in dict(f_inter or {}).items()}

    rows = [_compare("logits", t_logits.detach().cpu().numpy(), np.asarray(f_logits), tolerance)]
    for name in t_inter:
        if name in f_inter:
            rows.append(_compare(name, t_inter[name], f_inter[name], tolerance))
    return rows


def format_verify_table(rows: Sequence[VerifyRow], tolerance: float) -> str:
    lines = [
        f"{'tensor':<12} {'shape (flax)':<18} {'max|torch|':>11} {'max abs diff':>13} "
        f"{'rel diff':>10}  {'':>4}"
    ]
    for r in rows:
        lines.append(
            f"{r.name:<12} {str(r.shape):<18} {r.max_ref:>11.4g} {r.max_abs:>13.3e} "
            f"{r.rel:>10.3e}  {'ok' if r.ok else 'FAIL'}"
        )
    lines.append(f"(tolerance: rel diff <= {tolerance:g}; rel = max abs diff / max |torch|)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- pipeline


@dataclasses.dataclass
class ConversionResult:
    out_dir: Path | None
    config: ModelConfig
    variables: dict[str, Any]
    notes: list[str]
    verify_rows: list[VerifyRow] | None = None
    verify_ok: bool | None = None
    bn_report: Any = None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_output_dir(out_dir: str | os.PathLike, force: bool) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out} exists and is a file; choose an output directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise CheckpointError(f"{out} exists and is not empty; choose another OUT_DIR or pass --force")
    return out


def convert_checkpoint(
    src: str | os.PathLike,
    out_dir: str | os.PathLike | None,
    *,
    preset: str | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    force: bool = False,
    do_verify: bool = False,
    verify_audio: str | os.PathLike | None = None,
    verify_samples: int | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    bn_stats_audio: Sequence[str | os.PathLike] = (),
    bn_stats_samples: int | None = None,
    bn_stats_batch: int | None = None,
    allow_nonfinite: bool = False,
    log=print,
) -> ConversionResult:
    """Convert ``src`` into the model directory ``out_dir`` (None: convert, do not write).

    Everything that can fail runs before anything is written; the directory then appears
    atomically. A failed verification raises nothing but writes nothing and returns
    ``verify_ok=False``. Tensors with NaN/Inf values are refused unless ``allow_nonfinite``.
    """
    from convert.tables import torch_to_flax
    from rawnet2_jax.checkpoint import save_model
    from rawnet2_jax.fsutil import remove_stale_temps

    src = Path(src)
    if out_dir is not None:
        check_output_dir(out_dir, force)
        out_abs = Path(out_dir).absolute()
        remove_stale_temps(out_abs.parent, out_abs.name)  # left by a conversion killed with -9
    sd, notes = load_state_dict(src)
    sd, hnotes = widen_half_precision(sd)
    notes += hnotes
    for n in notes:
        log(f"note: {n}")
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    config, cnotes = choose_config(shapes, preset, str(src))
    for n in cnotes:
        log(f"note: {n}")
    config = apply_overrides(config, overrides)
    config, wnotes = sync_class_weights(config, sd, overrides)
    for n in wnotes:
        log(f"note: {n}")
    cnotes += wnotes
    check_state_dict(shapes, config, str(src))
    np_sd = _to_numpy(sd)
    bad = nonfinite_tensors(np_sd)
    if bad and not allow_nonfinite:
        raise CheckpointError(
            f"{src}: {len(bad)} tensor(s) hold NaN/Inf values: {_summarize(bad, 6)}; the checkpoint is "
            "broken (a diverged training?) and would score every file as NaN; pass --allow-nonfinite "
            "to convert it anyway"
        )
    for b in bad:
        log(f"warning: non-finite values kept (--allow-nonfinite): {b}")
        cnotes.append(f"warning: non-finite values in {b}")
    if config.layout == "seed":
        from rawnet2_jax.sinc import check_seed_sinc_tensors

        sinc = {k[len("sinc."):]: v for k, v in np_sd.items() if k.startswith("sinc.")}
        for w in check_seed_sinc_tensors(sinc, config):
            log(f"warning: {w}")
            cnotes.append(f"warning: {w}")
    variables = torch_to_flax(np_sd, config, check=False)  # checked above by check_state_dict
    log(f"converted {len(np_sd)} tensors ({sum(v.size for v in np_sd.values()):,} values) "
        f"with preset {config.name!r}")
    result = ConversionResult(None, config, variables, notes + cnotes)

    # Audio for the bn-stats check is read before any long work, so a bad file fails fast.
    bn_x = None
    if bn_stats_audio:
        n = bn_stats_samples or config.num_samples
        bn_x = load_audio_batch(bn_stats_audio, config, n)

    if do_verify:
        n = verify_samples or config.num_samples
        if verify_audio is not None:
            x = load_audio_batch([verify_audio], config, n)
            what = f"{verify_audio} ({n} samples)"
        else:
            from rawnet2_jax.data.synth import speech_like

            x = speech_like(n, batch=2, seed=1, sample_rate=config.sample_rate)
            what = f"2 synthetic speech-like signals of {n} samples"
        log(f"verifying torch reference vs Flax on {what} ...")
        rows = verify(sd, variables, config, x, tolerance)
        result.verify_rows = rows
        result.verify_ok = all(r.ok for r in rows)
        log(format_verify_table(rows, tolerance))
        if not result.verify_ok:
            return result

    if bn_x is not None:
        from convert.bn_stats import DEFAULT_TRAIN_BATCH, format_report, rank_candidates

        log(f"checking BatchNorm statistics on {len(bn_stats_audio)} file(s) of {bn_x.shape[1]} "
            "samples ...")
        report = rank_candidates(variables, config, bn_x, log=log,
                                 batch_size=bn_stats_batch or DEFAULT_TRAIN_BATCH)
        result.bn_report = report
        log(format_report(report))

    if out_dir is not None:
        import torch

        metadata = {
            "source": str(src.absolute()),
            "source_sha256": _sha256(src),
            "source_format": "pytorch",
            "layout": config.layout,
            "preset": config.name,
            "converter": "python -m convert",
            "torch_version": torch.__version__,
            "notes": notes + cnotes,
        }
        if result.verify_rows is not None:
            metadata["verify"] = {r.name: {"max_abs": r.max_abs, "rel": r.rel} for r in result.verify_rows}
        result.out_dir = save_model(out_dir, variables, config, metadata, overwrite=force)
    return result
