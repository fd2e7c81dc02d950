"""The RawNet2 residual block.

    [bn1 -> leaky_relu] -> conv1 -> bn2 -> leaky_relu -> conv2  (+ identity) -> max-pool

with a 1x1 conv on the identity path where the channel count changes, and FMS after the pool
(official RawNet2), on the sum before the pool, or on the residual branch before the add. Two flags reproduce the
official quirks: the very first block has no bn1 (its input was just batch-normalised), and the
ASVspoof 2021 baseline calls ``conv1(x)`` on the block input, so its bn1 runs (and, in train
mode, updates its running statistics) but its output is discarded.
"""

from __future__ import annotations

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from rawnet2_jax.batchnorm import BatchNorm
from rawnet2_jax.config import FmsMode, FmsPosition
from rawnet2_jax.fms import FMS, torch_bias_init, torch_kernel_init
from rawnet2_jax.pool import max_pool_1d
from rawnet2_jax.remat import remat_call

Array = jax.Array
Stage = Literal["conv1", "rest"]


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
    remat: bool = False  # train only: recompute each half of the block in the backward pass

    @nn.compact
    def __call__(self, x: Array, train: bool, stage: Stage | None = None) -> Any:
        """x (B, T, C_in) -> (B, T // pool, C_out).

        ``stage`` runs one half only, as ``remat_call`` recomputes it, and returns it with the
        batch statistics of its BatchNorms (``{name: (mean, var)}``; the running statistics
        are updated here, outside the recomputed halves, so that no half sees another's
        updates): "conv1" maps x to conv1's output (B, T, C_out), "rest" maps (conv1's output,
        x) to the block output.
        """
        if stage == "conv1":
            return self._conv1(x, train)
        if stage == "rest":
            return self._rest(x, train)
        if not (train and self.remat):
            return self._rest((self._conv1(x, train)[0], x), train)[0]
        c1, stats1 = remat_call(self, x, train, "conv1")  # one half at a time in the backward
        out, stats2 = remat_call(self, (c1, x), train, "rest")
        for name, (mean, var) in {**stats1, **stats2}.items():
            self._bn(mean.shape[-1], name).update(mean, var, x.shape[0] * x.shape[1])
        return out

    # The two halves. Submodules are created by name inside them, so the variable tree is the
    # same with and without remat.

    def _bn(self, c: int, name: str) -> BatchNorm:
        return BatchNorm(c, self.bn_momentum, self.bn_eps, dtype=self.dtype, remat=self.remat, name=name)

    def _conv(self, k: int, name: str) -> Conv1d:
        return Conv1d(self.out_channels, k, dtype=self.dtype, name=name)

    def _norm(self, c: int, name: str, v: Array, train: bool, stats: dict) -> Array:
        bn = self._bn(c, name)
        if train and self.remat:  # running statistics: updated by __call__
            y, stats[name] = bn.normalize_batch(v)
            return y
        return bn(v, train)

    def _conv1(self, x: Array, train: bool) -> tuple[Array, dict]:
        """block input (B, T, C_in) -> conv1's output (B, T, C_out) (with bn2 folded into it,
        in eval with ``fold_bn``, already normalised)."""
        out, stats = x, {}
        if self.has_bn1:
            normed = nn.leaky_relu(self._norm(x.shape[-1], "bn1", x, train, stats), self.slope)
            # Bypassed: computed for its running-stat update only; dead code in eval under jit.
            out = x if self.bn1_bypassed else normed
        if self.fold_bn and not train:
            a, b = self._bn(self.out_channels, "bn2").folded()
            return self._conv(self.kernel_size, "conv1")(out, a, b), stats
        return self._conv(self.kernel_size, "conv1")(out), stats

    def _rest(self, xs: tuple[Array, Array], train: bool) -> tuple[Array, dict]:
        """(conv1's output, block input) -> block output (B, T // pool, C_out)."""
        c1, x = xs
        stats: dict = {}
        if not (self.fold_bn and not train):
            c1 = self._norm(self.out_channels, "bn2", c1, train, stats)
        out = self._conv(self.kernel_size, "conv2")(nn.leaky_relu(c1, self.slope))

        identity = x
        if x.shape[-1] != self.out_channels:
            identity = self._conv(1, "shortcut")(x)  # 1x1 conv: channel change only

        fms = FMS(self.fms_mode, dtype=self.dtype, name="fms")
        if self.fms_position == "before_add":
            out = fms(out)
        out = out + identity
        if self.fms_position == "before_pool":
            out = fms(out)
        out = max_pool_1d(out, self.pool)  # torch floor mode
        if self.fms_position == "after_pool":
            out = fms(out)
        return out, stats

