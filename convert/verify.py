"""Verification: the torch reference module and the Flax model on the same audio, tensor by tensor.

:func:`verify` builds :mod:`convert.reference`'s module of the checkpoint's layout from the
state dict (strict) and the Flax :class:`rawnet2_jax.model.RawNet2` from the converted
variables, runs both on the same batch (float32, highest matmul precision) and compares the
logits and every named intermediate both return; :func:`format_verify_table` is what
``python -m convert --verify`` prints.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from rawnet2_jax.config import ModelConfig
from rawnet2_jax.errors import CheckpointError, first_line

DEFAULT_TOLERANCE = 1e-4


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
        raise CheckpointError(f"reference module rejects the state dict: {first_line(e, sentence=True)}") from None
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
