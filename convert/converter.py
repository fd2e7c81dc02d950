"""PyTorch RawNet2 checkpoint -> Flax model directory (``python -m convert``).

Steps (each failure is one line, a non-zero exit, and nothing written):

1. :func:`convert.torch_load.load_state_dict` -- ``torch.load(weights_only=True)``: a pickle
   that carries code is refused, never executed; wrappers and ``module.`` prefixes undone.
2. :func:`choose_config` -- the layout (``seed`` / ``official``) from the key names, then the
   preset of that layout whose expected shapes fit (``--preset`` overrides; ``--set`` changes
   single fields).
3. :func:`check_state_dict` -- missing, unexpected and misshapen tensors, all in ONE message;
   NaN/Inf tensors refused; the seed's stored sinc tensors checked against its formulas.
4. ``convert.tables.torch_to_flax`` -- the tensors become Flax variables.
5. optional :func:`convert.verify.verify` -- torch reference module vs Flax model on the same audio.
6. optional bn-stats ranking (:mod:`convert.bn_stats`).
7. :func:`rawnet2_jax.checkpoint.save_model` -- written to a temporary sibling and renamed.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from convert.torch_load import load_state_dict, nonfinite_tensors, to_numpy, widen_half_precision
from convert.verify import DEFAULT_TOLERANCE, VerifyRow, format_verify_table, verify
from rawnet2_jax.config import PRESETS, ModelConfig
from rawnet2_jax.errors import CheckpointError, first_line
from rawnet2_jax.treecheck import raise_problems, shape_problems, summarize

__all__ = [
    "ConversionResult",
    "check_state_dict",
    "choose_config",
    "convert_checkpoint",
]

Log = Callable[[str], Any]


# ----------------------------------------------------------------------------- config


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
            f"({first_line(e, sentence=True)}); keys start with: {summarize(sorted(shapes), 6)}"
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
    config: ModelConfig, state_dict: Mapping[str, Any], overrides: Sequence[str] = ()
) -> tuple[ModelConfig, list[str]]:
    """Make ``stored_class_weights`` describe the checkpoint's own ``class_weights`` tensor
    (seed layout): its values when present, None when absent. An explicit ``--set`` wins."""
    named = {o.split("=", 1)[0].strip() for o in overrides}
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


# ----------------------------------------------------------------------------- conversion


@dataclasses.dataclass
class ConversionResult:
    out_dir: Path | None
    config: ModelConfig
    variables: dict[str, Any]
    notes: list[str]
    verify_rows: list[VerifyRow] | None = None
    verify_ok: bool | None = None
    bn_report: Any = None


def check_output_dir(out_dir: str | os.PathLike, force: bool) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out} exists and is a file; choose an output directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise CheckpointError(f"{out} exists and is not empty; choose another OUT_DIR or pass --force")
    return out


def load_audio_batch(paths: Sequence[str | os.PathLike], config: ModelConfig, num_samples: int) -> np.ndarray:
    """(len(paths), num_samples) float32: each file decoded at the model's rate, cut/padded
    with the config's pad policy (the audio of --verify-audio and --check-bn-stats)."""
    from rawnet2_jax.audio import fit_length, load_audio

    xs = [
        fit_length(load_audio(p, sample_rate=config.sample_rate), num_samples, config.pad_mode)
        for p in paths
    ]
    return np.stack(xs).astype(np.float32)


def convert_checkpoint(
    src: str | os.PathLike,
    out_dir: str | os.PathLike | None,
    *,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    force: bool = False,
    do_verify: bool = False,
    verify_audio: str | os.PathLike | None = None,
    verify_samples: int | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    bn_stats_audio: Sequence[str | os.PathLike] = (),
    bn_stats_samples: int | None = None,
    bn_stats_batch: int | None = None,
    allow_nonfinite: bool = False,
    log: Log = print,
) -> ConversionResult:
    """Convert ``src`` into the model directory ``out_dir`` (None: convert, do not write).

    Everything that can fail runs before anything is written; the directory then appears
    atomically. A failed verification raises nothing but writes nothing and returns
    ``verify_ok=False``. Tensors with NaN/Inf values are refused unless ``allow_nonfinite``.
    """
    from convert.tables import torch_to_flax

    src = Path(src)
    if out_dir is not None:
        _prepare_output_dir(out_dir, force)
    sd, notes = _read_state_dict(src, log)
    config, np_sd, cnotes = _config_and_tensors(sd, src, preset, overrides, allow_nonfinite, log)
    variables = torch_to_flax(np_sd, config, check=False)  # checked by _config_and_tensors
    log(f"converted {len(np_sd)} tensors ({sum(v.size for v in np_sd.values()):,} values) "
        f"with preset {config.name!r}")
    result = ConversionResult(None, config, variables, notes + cnotes)

    # Audio for the bn-stats check is read before any long work, so a bad file fails fast.
    bn_x = load_audio_batch(bn_stats_audio, config, bn_stats_samples or config.num_samples) if bn_stats_audio else None
    if do_verify:
        result.verify_rows = _verify_step(sd, variables, config, verify_audio, verify_samples, tolerance, log)
        result.verify_ok = all(r.ok for r in result.verify_rows)
        if not result.verify_ok:
            return result
    if bn_x is not None:
        result.bn_report = _bn_stats_step(variables, config, bn_x, bn_stats_batch, log)
    if out_dir is not None:
        result.out_dir = _write_model_dir(out_dir, src, result, force)
    return result


def _prepare_output_dir(out_dir: str | os.PathLike, force: bool) -> None:
    from rawnet2_jax.fsutil import remove_stale_temps

    check_output_dir(out_dir, force)
    out_abs = Path(out_dir).absolute()
    remove_stale_temps(out_abs.parent, out_abs.name)  # left by a conversion killed with -9


def _read_state_dict(src: Path, log: Log) -> tuple[dict[str, Any], list[str]]:
    """The file's tensors by name (half precision widened) and the notes it gave, logged."""
    sd, notes = load_state_dict(src)
    sd, hnotes = widen_half_precision(sd)
    notes += hnotes
    for n in notes:
        log(f"note: {n}")
    return sd, notes


def _config_and_tensors(
    sd: Mapping[str, Any], src: Path, preset: str | None, overrides: Sequence[str],
    allow_nonfinite: bool, log: Log,
) -> tuple[ModelConfig, dict[str, np.ndarray], list[str]]:
    """The config the state dict fits (checked, one message for every problem), its tensors as
    numpy, and the notes and warnings said on the way (logged)."""
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    config, cnotes = choose_config(shapes, preset, str(src))
    for n in cnotes:
        log(f"note: {n}")
    config = config.with_overrides(overrides)  # FIELD=VALUE, read as the fields' types (ConfigError)
    config, wnotes = sync_class_weights(config, sd, overrides)
    for n in wnotes:
        log(f"note: {n}")
    cnotes += wnotes
    check_state_dict(shapes, config, str(src))
    np_sd = to_numpy(sd)
    ints = [k for k, v in np_sd.items() if v.dtype.kind in "iub" and not k.endswith("num_batches_tracked")]
    if ints:  # RawNet2's only integer tensors are BatchNorm's step counters
        raise CheckpointError(
            f"{src}: {len(ints)} tensor(s) hold integers where RawNet2 has float weights: {summarize(ints, 6)} "
            f"({np_sd[ints[0]].dtype}); the file is not a float checkpoint of this model: re-save it from "
            "the trained model"
        )
    bad = nonfinite_tensors(np_sd)
    if bad and not allow_nonfinite:
        raise CheckpointError(
            f"{src}: {len(bad)} tensor(s) hold NaN/Inf values: {summarize(bad, 6)}; the checkpoint is "
            "broken (a diverged training?) and would score every file as NaN; pass --allow-nonfinite "
            "to convert it anyway"
        )
    for b in bad:
        log(f"warning: non-finite values kept (--allow-nonfinite): {b}")
        cnotes.append(f"warning: non-finite values in {b}")
    if config.layout == "seed":
        from convert.tables import check_seed_sinc_tensors

        sinc = {k[len("sinc."):]: v for k, v in np_sd.items() if k.startswith("sinc.")}
        for w in check_seed_sinc_tensors(sinc, config):
            log(f"warning: {w}")
            cnotes.append(f"warning: {w}")
    return config, np_sd, cnotes


def _verify_step(
    sd: Mapping[str, Any], variables: Mapping[str, Any], config: ModelConfig, verify_audio: str | os.PathLike | None,
    verify_samples: int | None, tolerance: float, log: Log,
) -> list[VerifyRow]:
    """``--verify`` on the given file, or on two synthetic speech-like signals; the table logged."""
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
    log(format_verify_table(rows, tolerance))
    return rows


def _bn_stats_step(variables: Mapping[str, Any], config: ModelConfig, bn_x: np.ndarray, batch: int | None,
                   log: Log) -> Any:
    """``--check-bn-stats``: the candidate ranking of :mod:`convert.bn_stats`, logged."""
    from convert.bn_stats import DEFAULT_TRAIN_BATCH, format_report, rank_candidates

    log(f"checking BatchNorm statistics on {bn_x.shape[0]} file(s) of {bn_x.shape[1]} samples ...")
    report = rank_candidates(variables, config, bn_x, log=log, batch_size=batch or DEFAULT_TRAIN_BATCH)
    log(format_report(report))
    return report


def _write_model_dir(out_dir: str | os.PathLike, src: Path, result: ConversionResult, force: bool) -> Path:
    """The model directory, with where it came from (file, SHA-256, torch version, notes) in its metadata."""
    import torch

    from rawnet2_jax.checkpoint import save_model
    from rawnet2_jax.fsutil import sha256_file

    metadata = {
        "source": str(src.absolute()),
        "source_sha256": sha256_file(src),
        "source_format": "pytorch",
        "layout": result.config.layout,
        "preset": result.config.name,
        "converter": "python -m convert",
        "torch_version": torch.__version__,
        "notes": result.notes,
    }
    if result.verify_rows is not None:
        metadata["verify"] = {r.name: {"max_abs": r.max_abs, "rel": r.rel} for r in result.verify_rows}
    return save_model(out_dir, result.variables, result.config, metadata, overwrite=force)
