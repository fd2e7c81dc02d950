"""Filter-wise feature map scaling (FMS, Jung et al. 2020), plus torch-style initialisers.

FMS rescales every channel by a sigmoid gate computed from the channel's time average:
``s = sigmoid(fc(mean_t x))``; ``x * s + s`` ("add", as in Tak et al. 2021) or ``x * s``
("mul"). The gate only depends on global statistics, so it is cheap; the "+ s" form also
shifts each channel, which the official model uses.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rawnet2_jax.config import FmsMode

Array = jax.Array

# torch.nn.Linear / Conv1d default init: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
# Only matters for training from scratch; converted checkpoints overwrite it.
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
    bound = 1.0 / max(fan_in, 1) ** 0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class FMS(nn.Module):
    """(B, T, C) -> (B, T, C). Params: ``fc/{kernel (C, C), bias (C,)}``."""

    mode: FmsMode = "add"
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        pooled = jnp.mean(x.astype(jnp.float32), axis=1).astype(x.dtype)  # (B, C)
        s = nn.Dense(
            c,
            dtype=self.dtype,
            kernel_init=torch_kernel_init,
            bias_init=torch_bias_init(c),
            name="fc",
        )(pooled)
        s = jax.nn.sigmoid(s)[:, None, :].astype(x.dtype)  # (B, 1, C): one gate per channel
        return x * s + s if self.mode == "add" else x * s
