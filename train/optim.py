"""Optimizer chain, plateau schedule and early stopping with PyTorch semantics.

The optax chain reproduces ``torch.nn.utils.clip_grad_norm_`` followed by
``torch.optim.Adam(weight_decay=wd)``:

1. clip the RAW gradients to a global norm (torch formula: ``coef = max/(norm + 1e-6)``,
   clamped to 1, applied unconditionally);
2. COUPLED L2: ``g += wd * param`` (torch ``Adam`` adds the decay to the gradient before
   the moment estimates; this is not AdamW);
3. Adam moments with bias correction;
4. ``-lr`` scaling, with ``lr`` an injected hyper-parameter (``optax.inject_hyperparams``)
   that the host-side plateau scheduler sets once per epoch.

The plateau scheduler is a pure state machine (``PlateauState`` + ``plateau_step``) that
matches ``torch.optim.lr_scheduler.ReduceLROnPlateau`` exactly, including its counting
(``patience=p`` reduces after MORE than ``p`` bad epochs), cooldown, threshold modes,
``min_lr`` and ``eps``. It runs in Python floats (double precision, as torch does).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from train.configs import PlateauConfig, TrainConfig


# --------------------------------------------------------------------------- clipping


class ClipByGlobalNormState(NamedTuple):
    pass


def clip_by_global_norm_torch(max_norm: float) -> optax.GradientTransformation:
    """``torch.nn.utils.clip_grad_norm_(params, max_norm)`` (L2, ``error_if_nonfinite=False``).

    torch: ``total = ||(||g_i||)_i||``; ``coef = max_norm / (total + 1e-6)``; grads are
    multiplied by ``min(coef, 1)``. optax's ``clip_by_global_norm`` uses
    ``max_norm / total`` only when ``total > max_norm``; the two differ by ~1e-6 relative.
    """

    def init_fn(params):
        del params
        return ClipByGlobalNormState()

    def update_fn(updates, state, params=None):
        del params
        leaves = jax.tree.leaves(updates)
        norms = jnp.stack([jnp.linalg.norm(jnp.ravel(g).astype(jnp.float32)) for g in leaves])
        total = jnp.linalg.norm(norms)
        coef = jnp.minimum(max_norm / (total + 1e-6), 1.0)
        updates = jax.tree.map(lambda g: (g * coef).astype(g.dtype), updates)
        return updates, state

    return optax.GradientTransformation(init_fn, update_fn)


# --------------------------------------------------------------------------- chain


def _adam_chain(
    learning_rate: float,
    weight_decay: float = 0.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    clip_norm: float | None = None,
) -> optax.GradientTransformation:
    parts = []
    if clip_norm is not None:
        parts.append(clip_by_global_norm_torch(clip_norm))
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))  # coupled: before the moments
    parts.append(optax.scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=0.0))
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*parts)


def torch_adam(
    learning_rate: float,
    weight_decay: float = 0.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    clip_norm: float | None = None,
) -> optax.GradientTransformation:
    """``clip_grad_norm_`` + ``torch.optim.Adam(weight_decay=...)`` with an injectable LR.

    The learning rate lives in ``opt_state.hyperparams["learning_rate"]``; change it with
    :func:`set_learning_rate` (the other hyper-parameters are static).
    """
    return optax.inject_hyperparams(_adam_chain, static_args=("weight_decay", "b1", "b2", "eps", "clip_norm"))(
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        b1=b1,
        b2=b2,
        eps=eps,
        clip_norm=clip_norm,
    )


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """The chain of ``cfg``. Cached on the optimizer fields only: equal settings give the SAME
    object, so a ``TrainState`` carrying it as a static field never triggers a recompile
    (e.g. when only ``epochs`` changes between a run and its continuation)."""
    return _cached_optimizer(
        float(cfg.learning_rate), float(cfg.weight_decay), float(cfg.adam_b1), float(cfg.adam_b2),
        float(cfg.adam_eps), None if cfg.grad_clip_norm is None else float(cfg.grad_clip_norm),
    )


@functools.lru_cache(maxsize=16)
def _cached_optimizer(lr, wd, b1, b2, eps, clip) -> optax.GradientTransformation:
    return torch_adam(lr, weight_decay=wd, b1=b1, b2=b2, eps=eps, clip_norm=clip)


def get_learning_rate(opt_state: Any) -> float:
    return float(opt_state.hyperparams["learning_rate"])


def set_learning_rate(opt_state: Any, lr: float) -> Any:
    """A copy of an ``inject_hyperparams`` state with a new learning rate (pure)."""
    old = opt_state.hyperparams["learning_rate"]
    new = jnp.asarray(lr, dtype=jnp.result_type(old))
    if isinstance(old, jax.Array) and hasattr(old, "sharding"):
        new = jax.device_put(new, old.sharding)
    hyper = dict(opt_state.hyperparams)
    hyper["learning_rate"] = new
    return opt_state._replace(hyperparams=hyper)


# --------------------------------------------------------------------------- plateau


@dataclasses.dataclass(frozen=True)
class PlateauState:
    """State of ``ReduceLROnPlateau`` (host side, Python floats)."""

    lr: float
    best: float  # +inf (min) / -inf (max) before the first step
    num_bad_epochs: int = 0
    cooldown_counter: int = 0
    last_epoch: int = 0
    num_reductions: int = 0

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        # JSON has no infinities; encode them as strings.
        if math.isinf(self.best):
            d["best"] = "inf" if self.best > 0 else "-inf"
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "PlateauState":
        d = dict(d)
        d["best"] = float(d["best"])
        return cls(**d)


def plateau_init(lr: float, cfg: PlateauConfig) -> PlateauState:
    return PlateauState(lr=float(lr), best=math.inf if cfg.mode == "min" else -math.inf)


def _is_better(a: float, best: float, cfg: PlateauConfig) -> bool:
    if cfg.mode == "min" and cfg.threshold_mode == "rel":
        return a < best * (1.0 - cfg.threshold)
    if cfg.mode == "min":
        return a < best - cfg.threshold
    if cfg.threshold_mode == "rel":
        return a > best * (cfg.threshold + 1.0)
    return a > best + cfg.threshold


def plateau_step(state: PlateauState, metric: float, cfg: PlateauConfig) -> PlateauState:
    """One ``ReduceLROnPlateau.step(metric)``; returns the new state (``state.lr`` = new LR)."""
    current = float(metric)
    best, bad, cooldown, lr, nred = state.best, state.num_bad_epochs, state.cooldown_counter, state.lr, state.num_reductions
    if _is_better(current, best, cfg):
        best = current
        bad = 0
    else:
        bad += 1
    if cooldown > 0:
        cooldown -= 1
        bad = 0
    if bad > cfg.patience:
        new_lr = max(lr * cfg.factor, cfg.min_lr)
        if lr - new_lr > cfg.eps:
            lr = new_lr
            nred += 1
        cooldown = cfg.cooldown
        bad = 0
    return PlateauState(
        lr=lr, best=best, num_bad_epochs=bad, cooldown_counter=cooldown, last_epoch=state.last_epoch + 1, num_reductions=nred
    )


# --------------------------------------------------------------------------- early stopping / selection


@dataclasses.dataclass(frozen=True)
class EarlyStopState:
    """Model selection on a dev metric (lower is better) and early stopping.

    ``best`` improves only on a STRICT decrease (ties keep the earlier epoch).
    ``should_stop`` once ``epochs_without_improvement >= patience``.
    """

    best: float | None = None
    best_epoch: int | None = None
    best_step: int | None = None
    epochs_without_improvement: int = 0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "EarlyStopState":
        return cls(**d)


def early_stop_update(state: EarlyStopState, metric: float, epoch: int, step: int) -> tuple[EarlyStopState, bool]:
    """Returns (new state, improved)."""
    metric = float(metric)
    if math.isfinite(metric) and (state.best is None or metric < state.best):
        return EarlyStopState(best=metric, best_epoch=epoch, best_step=step, epochs_without_improvement=0), True
    return dataclasses.replace(state, epochs_without_improvement=state.epochs_without_improvement + 1), False


def should_stop(state: EarlyStopState, patience: int | None) -> bool:
    return patience is not None and state.epochs_without_improvement >= patience
