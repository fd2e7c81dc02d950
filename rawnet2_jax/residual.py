"""The RawNet2 residual block.

    [bn1 -> leaky_relu] -> conv1 -> bn2 -> leaky_relu -> conv2  (+ identity) -> max-pool

with a 1x1 conv on the identity path where the channel count changes, and FMS either after the
pool (official RawNet2) or on the residual branch before the add. Two flags reproduce the
official quirks: the very first block has no bn1 (its input was just batch-normalised), and the
ASVspoof 2021 baseline calls ``conv1(x)`` on the block input, so its bn1 runs (and, in train
mode, updates its running statistics) but its output is discarded.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from rawnet2_jax.batchnorm import BatchNorm
from rawnet2_jax.config import FmsMode, FmsPosition
from rawnet2_jax.fms import FMS, torch_bias_init, torch_kernel_init

Array = jax.Array


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

    def _conv(self, k: int, fan_in: int, name: str) -> nn.Conv:
        return nn.Conv(
            self.out_channels,
            (k,),
            padding=[((k - 1) // 2, (k - 1) // 2)],  # torch padding=1 for k=3: length kept
            dtype=self.dtype,
            kernel_init=torch_kernel_init,
            bias_init=torch_bias_init(fan_in * k),
            name=name,
        )

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        c_in = x.shape[-1]
        bn = lambda name: BatchNorm(self.bn_momentum, self.bn_eps, dtype=self.dtype, name=name)  # noqa: E731
        lrelu = lambda v: nn.leaky_relu(v, self.slope)  # noqa: E731

        out = x
        if self.has_bn1:
            normed = lrelu(bn("bn1")(x, train))
            # Bypassed: computed for its running-stat update only; dead code in eval under jit.
            out = x if self.bn1_bypassed else normed
        out = self._conv(self.kernel_size, c_in, "conv1")(out)  # (B, T, C_out)
        out = lrelu(bn("bn2")(out, train))
        out = self._conv(self.kernel_size, self.out_channels, "conv2")(out)

        identity = x
        if c_in != self.out_channels:
            identity = self._conv(1, c_in, "shortcut")(x)  # 1x1 conv: channel change only

        fms = FMS(self.fms_mode, dtype=self.dtype, name="fms")
        if self.fms_position == "before_add":
            out = fms(out)
        out = out + identity
        out = nn.max_pool(out, (self.pool,), strides=(self.pool,), padding="VALID")  # torch floor
        if self.fms_position == "after_pool":
            out = fms(out)
        return out
