"""Pure training / evaluation steps.

``make_train_step(model, cfg)`` returns ``train_step(state, batch, rng=None) -> (state,
metrics)``: a thin wrapper that strips the host-side part of the state and calls one
jitted function (no recompilation when host bookkeeping changes). Loss: class-weighted
cross-entropy with torch ``CrossEntropyLoss(weight=w)`` mean semantics,
``sum_i w[y_i] * nll_i / sum_i w[y_i]``, rows with ``mask == False`` excluded. BatchNorm
running statistics are updated (``mutable=["batch_stats"]``); ``buffers`` pass through.
Mixed precision: build the model as ``RawNet2(config, dtype=jnp.bfloat16)`` (see
:func:`build_model`); params, gradients, optimizer state and BN statistics stay float32,
the loss is computed in float32 from the logits.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from train.configs import TrainConfig
from train.state import HostState, TrainState

_NO_HOST = HostState()


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


def make_train_step(
    model: Any, cfg: TrainConfig, *, jit: bool = True, donate: bool = False, shardings: Any = None
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Build ``train_step(state, batch, rng=None)``.

    ``batch``: dict with ``audio`` (B, T) float32, ``label`` (B,) int32 and optional
    ``mask`` (B,) bool. ``rng``: optional key; by default ``fold_in(state.rng, step)``
    (RawNet2 has no dropout; the key is passed to the model as the ``dropout`` stream).
    """
    weights = jnp.asarray(cfg.class_weights, jnp.float32)

    def core(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array | None):
        key = _step_key(state, rng)
        audio = batch["audio"]
        labels = batch["label"]
        mask = batch.get("mask")

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
        raw_grad_norm = optax.global_norm(grads)
        upd, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, upd)
        new_bs = updates.get("batch_stats", state.batch_stats)
        new_bs = jax.tree.map(lambda new, old: new.astype(old.dtype), new_bs, state.batch_stats)
        correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        if mask is not None:
            correct = jnp.where(mask, correct, 0.0)
            n = jnp.sum(mask.astype(jnp.float32))
        else:
            n = jnp.asarray(labels.shape[0], jnp.float32)
        metrics = {
            "loss": loss,
            "accuracy": jnp.sum(correct) / jnp.maximum(n, 1.0),
            "grad_norm": raw_grad_norm,
            "lr": opt_state.hyperparams["learning_rate"],
        }
        new_state = state.replace(params=params, batch_stats=new_bs, opt_state=opt_state, step=state.step + 1)
        return new_state, metrics

    if jit:
        kwargs = {}
        if donate:
            kwargs["donate_argnums"] = (0,)
        if shardings is not None:
            kwargs["in_shardings"] = shardings.get("in")
            kwargs["out_shardings"] = shardings.get("out")
        core_fn = jax.jit(core, **kwargs)
    else:
        core_fn = core

    def train_step(state: TrainState, batch: dict[str, Any], rng: jax.Array | None = None):
        host = state.host
        batch = {k: v for k, v in batch.items() if k in ("audio", "label", "mask")}
        new_state, metrics = core_fn(state.replace(host=_NO_HOST), batch, rng)
        return new_state.replace(host=host), metrics

    train_step.core = core_fn  # for lowering / inspection
    return train_step


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

    core_fn = jax.jit(core) if jit else core

    def eval_step(state: TrainState, batch: dict[str, Any]):
        batch = {k: v for k, v in batch.items() if k in ("audio", "label", "mask")}
        return core_fn(state.replace(host=_NO_HOST), batch)

    eval_step.core = core_fn
    return eval_step
