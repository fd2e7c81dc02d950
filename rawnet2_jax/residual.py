"""The RawNet2 residual block.

    [bn1 -> leaky_relu] -> conv1 -> bn2 -> leaky_relu -> conv2  (+ identity) -> max-pool

with a 1x1 conv on the identity path where the channel count changes, and FMS after the pool
(official RawNet2), on the sum before the pool, or on the residual branch before the add. Two flags reproduce the
official quirks: the very first block has no bn1 (its input was just batch-normalised), and the
ASVspoof 2021 baseline calls ``conv1(x)`` on the block input, so its bn1 runs (and, in train
mode, updates its running statistics) but its output is discarded.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rawnet2_jax.batchnorm import BatchNorm
from rawnet2_jax.config import FmsMode, FmsPosition
from rawnet2_jax.fms import FMS, torch_bias_init, torch_kernel_init
from rawnet2_jax.pool import max_pool_1d

Array = jax.Array


class Conv1d(nn.Module):
    """Channels-last 1-D conv, torch-style "same" padding for odd kernels: (B, T, C_in) ->
    (B, T, features). Params ``kernel`` (k, C_in, features) and ``bias`` (features,), as
    ``nn.Conv`` names them. ``out_scale``/``out_shift`` fold a following per-channel affine map
    (an eval-mode BatchNorm) into the kernel and bias: conv(x, W) * a + b == conv(x, W * a) +
    (bias * a + b), so the normalisation costs nothing per frame.
    """

    features: int
    kernel_size: int
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, out_scale: Array | None = None,
                 out_shift: Array | None = None) -> Array:
        k, c_in = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", torch_kernel_init, (k, c_in, self.features), self.param_dtype)
        bias = self.param("bias", torch_bias_init(c_in * k), (self.features,), self.param_dtype)
        if out_scale is not None:
            kernel = kernel * out_scale
            bias = bias * out_scale + out_shift
        dtype = self.dtype or x.dtype
        y = jax.lax.conv_general_dilated(
            x.astype(dtype),
            kernel.astype(dtype),
            window_strides=(1,),
            padding=[((k - 1) // 2, (k - 1) // 2)],  # torch padding=1 for k=3: length kept
            dimension_numbers=("NWC", "WIO", "NWC"),
        )
        return y + bias.astype(dtype)


class ResidualBlock(nn.Module):
    """(B, T, C_in) -> (B, T // pool, C_out).

    Submodules: ``bn1`` (if has_bn1), ``conv1``, ``bn2``, ``conv2``, ``shortcut`` (if
    C_in != C_out), ``fms``.
    """

    out_channels: int
    has_bn1: bool = True
    bn1_bypassed: bool = False
    kernel_size: int = 3
    pool: int = 3
    slope: float = 0.3
    fms_mode: FmsMode = "add"
    fms_position: FmsPosition = "after_pool"
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5
    dtype: Any = None
    fold_bn: bool = False  # eval only: bn2 folded into conv1 (same values, less work)

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        c_in, c_out = x.shape[-1], self.out_channels

        def bn(c: int, name: str) -> BatchNorm:
            return BatchNorm(c, self.bn_momentum, self.bn_eps, dtype=self.dtype, name=name)

        def conv(k: int, name: str) -> Conv1d:
            return Conv1d(c_out, k, dtype=self.dtype, name=name)

        def lrelu(v: Array) -> Array:
            return nn.leaky_relu(v, self.slope)

        out = x
        if self.has_bn1:
            normed = lrelu(bn(c_in, "bn1")(x, train))
            # Bypassed: computed for its running-stat update only; dead code in eval under jit.
            out = x if self.bn1_bypassed else normed
        if self.fold_bn and not train:
            a, b = bn(c_out, "bn2").folded()
            out = lrelu(conv(self.kernel_size, "conv1")(out, a, b))  # (B, T, C_out)
        else:
            out = lrelu(bn(c_out, "bn2")(conv(self.kernel_size, "conv1")(out), train))
        out = conv(self.kernel_size, "conv2")(out)

        identity = x
        if c_in != c_out:
            identity = conv(1, "shortcut")(x)  # 1x1 conv: channel change only

        fms = FMS(self.fms_mode, dtype=self.dtype, name="fms")
        if self.fms_position == "before_add":
            out = fms(out)
        out = out + identity
        if self.fms_position == "before_pool":
            out = fms(out)
        out = max_pool_1d(out, self.pool)  # torch floor mode
        if self.fms_position == "after_pool":
            out = fms(out)
        return out
