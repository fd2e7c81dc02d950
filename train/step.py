"""Pure training / evaluation steps.

``make_train_step(model, cfg)`` returns ``train_step(state, batch, rng=None) -> (state,
metrics)``, one jitted function of arrays only (the loop keeps its bookkeeping apart, so
nothing host-side can trigger a recompile). Matmuls and convolutions run at
``cfg.matmul_precision`` (see :class:`train.configs.TrainConfig`). Loss: class-weighted
cross-entropy with torch ``CrossEntropyLoss(weight=w)`` mean semantics,
``sum_i w[y_i] * nll_i / sum_i w[y_i]``, rows with ``mask == False`` excluded. BatchNorm
running statistics are updated (``mutable=["batch_stats"]``); ``buffers`` pass through.
Mixed precision: build the model as ``RawNet2(config, dtype=jnp.bfloat16)`` (see
:func:`build_model`); params, gradients, optimizer state and BN statistics stay float32,
the loss is computed in float32 from the logits.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from train.configs import TrainConfig
from train.state import TrainState


def weighted_ce(logits: jax.Array, labels: jax.Array, weights: jax.Array, mask: jax.Array | None = None):
    """Returns (loss, numerator, denominator) of torch's weighted-mean cross-entropy."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    w = weights[labels]
    if mask is not None:
        w = jnp.where(mask, w, 0.0)
    num = jnp.sum(w * nll)
    den = jnp.sum(w)
    return num / den, num, den


def _step_key(state: TrainState, rng: jax.Array | None) -> jax.Array:
    if rng is None:
        return jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    return rng


def build_model(cfg: TrainConfig) -> Any:
    """``RawNet2(cfg.model)`` computing in ``cfg.compute_dtype`` (params stay float32)."""
    from rawnet2_jax.model import RawNet2

    dtype = jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else jnp.float32
    return RawNet2(cfg.model, dtype=dtype)


def _with_precision(fn: Callable, precision: str) -> Callable:
    """``fn`` traced under ``jax.default_matmul_precision(precision)`` ("default" = the backend's)."""
    if precision == "default":
        return fn

    def wrapped(*args):
        with jax.default_matmul_precision(precision):
            return fn(*args)

    return wrapped


@dataclasses.dataclass(frozen=True)
class StepShardings:
    """Placements of the jitted train step's inputs and outputs (see :func:`step_shardings`)."""

    state: Any  # a pytree of shardings shaped like the TrainState
    batch: Any  # NamedSharding of every batch array (a prefix of the batch dict)
    replicated: Any  # the rng key and the metrics

    @property
    def mesh(self) -> Any:
        return self.batch.mesh

    @property
    def ins(self) -> tuple:  # (state, batch, rng)
        return (self.state, self.batch, self.replicated)

    @property
    def outs(self) -> tuple:  # (state, metrics)
        return (self.state, self.replicated)


def step_shardings(state: TrainState, mesh: Any) -> StepShardings:
    """Explicit shardings of the jitted train step: state and metrics replicated, batch split
    along axis 0 over the mesh's data axis (a prefix of every batch dict)."""
    from train import sharding as shd

    rep = shd.replicated(mesh)
    return StepShardings(state=jax.tree.map(lambda _: rep, state), batch=shd.batch_sharding(mesh), replicated=rep)


def make_train_step(
    model: Any, cfg: TrainConfig, *, jit: bool = True, donate: bool = False, shardings: StepShardings | None = None
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Build ``train_step(state, batch, rng=None) -> (state, metrics)``.

    ``batch``: dict with ``audio`` (B, T) float32, ``label`` (B,) int32 and optional
    ``mask`` (B,) bool (other keys are ignored). ``rng``: optional key; by default
    ``fold_in(state.rng, step)``. RawNet2 has no dropout: the key feeds the model's
    ``dropout`` stream and, when ``cfg.rawboost`` is set, the RawBoost augmentation of
    the batch (training batches only; a stream of its own). ``metrics`` stay on the device
    (scalars): fetch them when you log, not every step.

    ``donate=True`` donates the input state's buffers (the caller must not reuse it);
    ``shardings`` (:func:`step_shardings`) pins every input and output placement.
    """
    weights = jnp.asarray(cfg.class_weights, jnp.float32)
    mesh = None if shardings is None else shardings.mesh  # the batch's mesh

    def core(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array | None):
        key = _step_key(state, rng)
        audio = augment_audio(batch["audio"], jax.random.fold_in(key, _AUGMENT_STREAM), cfg, mesh)
        labels = batch["label"]
        mask = batch.get("mask")
        loss, logits, updates, grads = _loss_and_grads(model, state, audio, labels, mask, weights, key)
        raw_grad_norm = optax.tree.norm(grads)  # optax.global_norm is deprecated (it calls this)
        upd, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, upd)
        new_bs = updates.get("batch_stats", state.batch_stats)
        new_bs = jax.tree.map(lambda new, old: new.astype(old.dtype), new_bs, state.batch_stats)
        metrics = _step_metrics(loss, logits, labels, mask, raw_grad_norm, opt_state)
        new_state = state.replace(params=params, batch_stats=new_bs, opt_state=opt_state, step=state.step + 1)
        return new_state, metrics

    core_fn = _compile_step(_with_precision(core, cfg.matmul_precision), jit=jit, donate=donate, shardings=shardings)

    def train_step(state: TrainState, batch: dict[str, Any], rng: jax.Array | None = None):
        batch = {k: v for k, v in batch.items() if k in ("audio", "label", "mask")}
        return core_fn(state, batch, rng)

    train_step.core = core_fn  # for lowering / inspection
    return train_step


def _loss_and_grads(model: Any, state: TrainState, audio: jax.Array, labels: jax.Array, mask: jax.Array | None,
                    weights: jax.Array, key: jax.Array):
    """``(loss, float32 logits, BatchNorm updates, gradients)`` of one training forward."""

    def loss_fn(params):
        variables = {"params": params}
        if state.batch_stats:
            variables["batch_stats"] = state.batch_stats
        if state.buffers:
            variables["buffers"] = state.buffers
        (logits, _), updates = model.apply(
            variables, audio, train=True, mutable=["batch_stats"], rngs={"dropout": key}
        )
        loss, _, _ = weighted_ce(logits, labels, weights, mask)
        return loss, (logits.astype(jnp.float32), updates)

    (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return loss, logits, updates, grads


def _step_metrics(loss: jax.Array, logits: jax.Array, labels: jax.Array, mask: jax.Array | None,
                  grad_norm: jax.Array, opt_state: Any) -> dict[str, jax.Array]:
    """Loss, accuracy over the real rows, gradient norm before clipping, learning rate."""
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    if mask is not None:
        correct = jnp.where(mask, correct, 0.0)
        n = jnp.sum(mask.astype(jnp.float32))
    else:
        n = jnp.asarray(labels.shape[0], jnp.float32)
    return {
        "loss": loss,
        "accuracy": jnp.sum(correct) / jnp.maximum(n, 1.0),
        "grad_norm": grad_norm,
        "lr": opt_state.hyperparams["learning_rate"],
    }


def _compile_step(core: Callable, *, jit: bool, donate: bool, shardings: StepShardings | None) -> Callable:
    """``core`` jitted (state buffers donated, placements pinned, when asked), or as it is."""
    if not jit:
        return core
    kwargs = {}
    if donate:
        kwargs["donate_argnums"] = (0,)
    if shardings is not None:
        kwargs["in_shardings"] = shardings.ins
        kwargs["out_shardings"] = shardings.outs
    return jax.jit(core, **kwargs)


# RawBoost draws from fold_in(step key, this): never the same numbers as the model's stream.
_AUGMENT_STREAM = 0x52420001


def augment_audio(audio: jax.Array, key: jax.Array, cfg: TrainConfig, mesh: Any = None) -> jax.Array:
    """(B, T) training audio through RawBoost algorithm ``cfg.rawboost`` (0 = unchanged).

    Each row gets its own key (split from ``key``, i.e. from the global step), so the result
    does not depend on how the batch is sharded over devices or hosts. ``mesh``: the batch's
    mesh, so that each device filters only its own rows (``rawboost_batch``).
    """
    if not cfg.rawboost:
        return audio
    from rawnet2_jax.augment import rawboost_batch

    out = rawboost_batch(key, audio.astype(jnp.float32), int(cfg.rawboost), cfg.rawboost_config, mesh=mesh)
    return out.astype(audio.dtype)


def make_eval_step(model: Any, cfg: TrainConfig, *, jit: bool = True) -> Callable[..., dict[str, jax.Array]]:
    """Build ``eval_step(state, batch) -> {"score", "logits", "loss_num", "loss_den", "nll"}``.

    ``score = logit[1] - logit[0]`` (higher = more bona fide). ``loss_num / loss_den``
    summed over all dev batches gives torch's weighted-mean dev loss over the whole set.
    """
    weights = jnp.asarray(cfg.class_weights, jnp.float32)

    def core(state: TrainState, batch: dict[str, jax.Array]):
        logits, _ = model.apply(state.variables(), batch["audio"], train=False)
        logits = logits.astype(jnp.float32)
        mask = batch.get("mask")
        out = {"logits": logits, "score": logits[:, 1] - logits[:, 0]}
        if "label" in batch:
            _, num, den = weighted_ce(logits, batch["label"], weights, mask)
            out.update(loss_num=num, loss_den=den)
        return out

    core = _with_precision(core, cfg.matmul_precision)
    core_fn = jax.jit(core) if jit else core

    def eval_step(state: TrainState, batch: dict[str, Any]):
        batch = {k: v for k, v in batch.items() if k in ("audio", "label", "mask")}
        return core_fn(state, batch)

    eval_step.core = core_fn
    return eval_step
