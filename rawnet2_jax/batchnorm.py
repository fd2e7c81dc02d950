"""BatchNorm over the channel (last) axis with exact ``torch.nn.BatchNorm1d`` semantics.

Differences from ``flax.linen.BatchNorm`` that matter for parity with PyTorch checkpoints:

* momentum is torch-style: ``running = (1 - m) * running + m * batch`` with m = 0.1;
* the running variance is updated with the UNBIASED batch variance (n / (n - 1)), while the
  batch itself is normalised with the biased one;
* statistics are always float32 (inputs may be bfloat16).

Variables: ``params/{scale, bias}`` (C,), ``batch_stats/{mean, var}`` (C,) and
``buffers/num_batches_tracked`` () int32, carried from torch checkpoints only so that the
conversion round trip is exact (torch uses it only when momentum is None; JAX training never
updates it).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rawnet2_jax.remat import recomputed

Array = jax.Array


class BatchNorm(nn.Module):
    """(..., C) -> (..., C), normalising over every axis but the last.

    Variables are declared in ``setup`` (so both ``__call__`` and ``folded`` can use them).
    """

    features: int  # C
    momentum: float = 0.1  # torch convention
    eps: float = 1e-5
    dtype: Any = None  # output dtype; None = input dtype
    param_dtype: Any = jnp.float32
    # Train only: the backward pass keeps the input and recomputes the statistics and x - mean
    # (rawnet2_jax.remat), instead of keeping x - mean as well.
    remat: bool = False

    def setup(self):
        c = self.features
        self.scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
        self.bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
        self.ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        self.ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        # Carried only (never read): declared at init and whenever present, so that variables
        # without a `buffers` collection still apply.
        if self.is_initializing() or self.has_variable("buffers", "num_batches_tracked"):
            self.variable("buffers", "num_batches_tracked", lambda: jnp.zeros((), jnp.int32))

    def folded(self) -> tuple[Array, Array]:
        """Eval-mode BN as an affine map ``y = x * a + b`` (float32 (C,) each), for folding into
        an adjacent linear op."""
        a = self.scale.astype(jnp.float32) * jax.lax.rsqrt(self.ra_var.value + self.eps)
        return a, self.bias.astype(jnp.float32) - self.ra_mean.value * a

    def normalize_batch(self, x: Array) -> tuple[Array, tuple[Array, Array]]:
        """Train mode without the running-statistics update: (y, (batch mean, biased var))."""
        norm = functools.partial(_train_norm, eps=self.eps)
        norm = recomputed(norm) if self.remat else norm  # remat: keep x, not x - mean
        y, stats = norm((self.scale, self.bias), x)
        return y.astype(self.dtype or x.dtype), stats

    def update(self, mean: Array, var: Array, n: int) -> None:
        """torch's running-statistics update from a batch of ``n`` frames per channel."""
        if self.is_initializing():
            return
        m = self.momentum
        unbiased = var * (n / max(n - 1, 1))
        self.ra_mean.value = (1 - m) * self.ra_mean.value + m * mean
        self.ra_var.value = (1 - m) * self.ra_var.value + m * unbiased

    def __call__(self, x: Array, train: bool) -> Array:
        c = self.features
        if x.shape[-1] != c:
            raise ValueError(f"BatchNorm expects {c} channels, got shape {x.shape}")
        if train:
            y, (mean, var) = self.normalize_batch(x)
            self.update(mean, var, x.size // c)
            return y
        y = _normalize(x.astype(jnp.float32), self.ra_mean.value, self.ra_var.value,
                       self.scale, self.bias, self.eps)
        return y.astype(self.dtype or x.dtype)


def _train_norm(params: tuple[Array, Array], x: Array, eps: float) -> tuple[Array, tuple[Array, Array]]:
    """Batch statistics and the normalised batch: (y float32, (mean, biased var))."""
    x32 = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x32, axis=axes)
    # Two-pass variance: as accurate as torch's Welford in float32.
    var = jnp.mean(jnp.square(x32 - mean), axis=axes)
    return _normalize(x32, mean, var, *params, eps), (mean, var)


def _normalize(x32: Array, mean: Array, var: Array, scale: Array, bias: Array, eps: float) -> Array:
    # (x - mean) * (w / sqrt(var + eps)) + b: subtract first (no cancellation when the mean
    # is large against the spread), then one multiply-add.
    a = scale.astype(jnp.float32) * jax.lax.rsqrt(var + eps)
    return (x32 - mean) * a + bias.astype(jnp.float32)

