"""RawNet2: sinc front-end -> residual blocks with FMS -> GRU -> head.

    x (B, T)
    -> sinc     SincConv (+abs, +max-pool)        (B, T0, C0)
    -> front    front_bn -> activation            (B, T0, C0)
    -> block{i} ResidualBlock + FMS, i = 0..n-1   (B, T0 / 3^(i+1), C_i)
    -> pre_gru  pre_gru_bn -> activation          (B, T6, C)
    -> gru      GRU, last time step               (B, H)
    -> embedding fc -> head activation            (B, E)
    -> logits   classifier (+ log_softmax)        (B, num_classes); 0 = spoof, 1 = bona fide

All features are channels-last. ``__call__`` returns ``(logits, intermediates)`` with the
names above; under jit, intermediates nobody uses are dead code. (With ``fold_bn`` and
front_bn folded into the sinc filters, ``sinc`` -- the un-normalised conv output -- is absent.)

Variable tree (same for every layout; ``convert/tables.py`` maps torch names onto it):

    params/sinc/{low_hz_, band_hz_}            only sincnet formula with sinc_learnable
    buffers/sinc/{low_hz_, band_hz_, n_axis, window}   sincnet formula (fixed tensors)
    params/front_bn/{scale, bias}; batch_stats/front_bn/{mean, var}
    params/block{i}/{bn1?, conv1, bn2, conv2, shortcut?, fms/fc}/...
    params/pre_gru_bn/...; params/gru/l{k}/{w_ih, w_hh, b_ih, b_hh}
    params/fc/{kernel, bias}; params/classifier/{kernel, bias}
    buffers/<every bn>/num_batches_tracked ();  buffers/class_weights (if stored_class_weights)
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rawnet2_jax.batchnorm import BatchNorm
from rawnet2_jax.config import Activation, ModelConfig
from rawnet2_jax.errors import AudioError
from rawnet2_jax.fms import torch_bias_init, torch_kernel_init
from rawnet2_jax.gru import GRU
from rawnet2_jax.residual import ResidualBlock
from rawnet2_jax.sinc import SincConv

Array = jax.Array


def activate(x: Array, name: Activation, slope: float) -> Array:
    if name == "selu":
        return jax.nn.selu(x)  # same constants as torch.nn.SELU
    if name == "leaky_relu":
        return nn.leaky_relu(x, slope)
    if name == "relu":
        return nn.relu(x)
    return x


class RawNet2(nn.Module):
    config: ModelConfig
    dtype: Any = jnp.float32  # computation dtype (e.g. jnp.bfloat16); params stay float32
    # Eval only (ignored when train=True): fold BatchNorms into the linear op before them --
    # bn2 into conv1 in every block, front_bn into the sinc filters when nothing sits in
    # between (no abs / pool). Same variables, same values up to float32 rounding, fewer
    # passes over the feature maps. Off by default so that every BatchNorm is still *called*
    # (the BN-statistics check intercepts those calls).
    fold_bn: bool = False

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> tuple[Array, dict[str, Array]]:
        cfg = self.config
        self._check_input(x)
        fold = self.fold_bn and not train
        remat = train and cfg.remat == "blocks"
        inter: dict[str, Array] = {}
        self._class_weights()

        x = x.astype(jnp.float32)
        if cfg.input_scale != 1.0:
            x = x * cfg.input_scale
        # Rematerialised (train only: there is no backward pass in eval): the front end through
        # jax.checkpoint (which XLA's CPU backend merges back, saving nothing there), the blocks
        # in recomputed halves and the BatchNorms keeping their inputs (rawnet2_jax.remat).
        front = nn.remat(RawNet2._front, static_argnums=(2, 3, 4)) if remat else RawNet2._front
        h, sinc_out = front(self, x, train, fold, remat)  # (B, T0, C0) twice
        if sinc_out is not None:
            inter["sinc"] = sinc_out
        inter["front"] = h
        for i in range(len(cfg.block_channels)):
            h = inter[f"block{i}"] = self._block(i, fold, remat)(h, train)  # (B, T / 3^(i+1), C_i)
        logits = self._back(h, train, remat, inter)
        return logits, inter

    def _check_input(self, x: Array) -> None:
        cfg = self.config
        if x.ndim != 2:
            raise AudioError(f"RawNet2 expects waveforms shaped (batch, samples), got {x.shape}")
        if x.shape[1] < cfg.min_num_samples:
            raise AudioError(
                f"input of {x.shape[1]} samples is shorter than the {cfg.min_num_samples} that "
                f"model {cfg.name!r} needs ({len(cfg.block_channels)} max-pools): pad or tile it"
            )

    def _class_weights(self) -> None:
        """Carried with the model (seed checkpoints store the loss weights); training may read
        it. The forward never does, so variables without it still apply."""
        cfg = self.config
        if cfg.stored_class_weights is not None and (
            self.is_initializing() or self.has_variable("buffers", "class_weights")
        ):
            self.variable(
                "buffers", "class_weights",
                lambda: jnp.asarray(cfg.stored_class_weights, jnp.float32),
            )

    def _block(self, i: int, fold: bool, remat: bool) -> ResidualBlock:
        cfg = self.config
        return ResidualBlock(
            cfg.block_channels[i][1],
            has_bn1=cfg.first_block_bn1 or i > 0,
            bn1_bypassed=cfg.bn1_bypassed,
            kernel_size=cfg.block_kernel_size,
            pool=cfg.block_pool,
            slope=cfg.leaky_relu_slope,
            fms_mode=cfg.fms_mode,
            fms_position=cfg.fms_position,
            bn_momentum=cfg.bn_momentum,
            bn_eps=cfg.bn_eps,
            dtype=self.dtype,
            fold_bn=fold,
            remat=remat,
            name=f"block{i}",
        )

    def _back(self, h: Array, train: bool, remat: bool, inter: dict[str, Array]) -> Array:
        """last block's output (B, T6, C) -> logits (B, num_classes) float32, through
        pre_gru_bn, the GRU and the head; their outputs go into ``inter``."""
        cfg, dt = self.config, self.dtype
        bn = BatchNorm(cfg.block_channels[-1][1], cfg.bn_momentum, cfg.bn_eps, dtype=dt, remat=remat,
                       name="pre_gru_bn")
        h = inter["pre_gru"] = activate(bn(h, train), cfg.pre_gru_activation, cfg.leaky_relu_slope)
        h = GRU(cfg.gru_hidden, cfg.gru_layers, dtype=dt, backward=cfg.gru_backward(jax.default_backend()),
                name="gru")(h)  # (B, H)
        inter["gru"] = h
        dense = lambda n, fan_in, name: nn.Dense(  # noqa: E731
            n, dtype=dt, kernel_init=torch_kernel_init, bias_init=torch_bias_init(fan_in), name=name
        )
        h = dense(cfg.embedding_dim, cfg.gru_hidden, "fc")(h)
        h = inter["embedding"] = activate(h, cfg.head_activation, cfg.leaky_relu_slope)
        logits = dense(cfg.num_classes, cfg.embedding_dim, "classifier")(h).astype(jnp.float32)
        return jax.nn.log_softmax(logits, axis=-1) if cfg.output_log_softmax else logits

    def _front(self, x: Array, train: bool, fold: bool, remat: bool) -> tuple[Array, Array | None]:
        """waveform (B, T) -> (front output, sinc output or None when front_bn is folded into
        the sinc filters), both (B, T0, C0). Submodules ``sinc`` and ``front_bn`` of ``self``."""
        cfg = self.config
        sinc = SincConv(cfg, dtype=self.dtype, name="sinc")
        front_bn = BatchNorm(cfg.sinc_filters, cfg.bn_momentum, cfg.bn_eps, dtype=self.dtype,
                             remat=remat, name="front_bn")
        if fold and not cfg.sinc_abs and cfg.sinc_pool == 1:
            h, sinc_out = sinc(x, *front_bn.folded()), None  # normalised
        else:
            sinc_out = sinc(x)
            h = front_bn(sinc_out, train)
        return activate(h, cfg.front_activation, cfg.leaky_relu_slope), sinc_out


def init_variables(config: ModelConfig, rng: Array | int = 0, num_samples: int | None = None,
                   dtype: Any = jnp.float32) -> dict:
    """Fresh variables (``params``, ``batch_stats``, ``buffers``) for ``config``.

    No variable depends on the input length, so by default the init runs on the shortest
    input the config accepts (fast), not on ``config.num_samples``. Nor on how the model is
    computed: the computation fields (``COMPUTATION_FIELDS``) are set to their defaults, so
    configs that differ only there get the same variables from one compiled init (4.5 s to
    compile with XLA's production flags even for the demo model: the random initialisers).
    """
    if isinstance(rng, int):
        rng = jax.random.PRNGKey(rng)
    config = config.computation_neutral()
    return _jitted_init(config, int(num_samples or config.min_num_samples), jnp.dtype(dtype))(rng)


@functools.lru_cache(maxsize=32)
def _jitted_init(config: ModelConfig, num_samples: int, dtype: Any):
    """One jitted ``model.init`` per (config, input length, dtype) in a process: a later run
    with the same config (a test suite, a search over checkpoints) skips tracing it again."""
    model = RawNet2(config, dtype=dtype)
    x = jnp.zeros((1, num_samples), jnp.float32)
    return jax.jit(lambda r: model.init(r, x, train=False))
