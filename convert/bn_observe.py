"""What a candidate forward does to every BatchNorm's input: per-utterance, per-channel means and
variances recorded while the model runs (``observe_bn_stats``, in batches: ``observe_in_batches``),
and the running statistics torch would accumulate from them (``combine``).

Observed statistics are combined the way running statistics accumulate: the expected
variance of a training batch of ``batch_size`` utterances (see :func:`combine`), with the
files run through the model in batches of that size.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from rawnet2_jax.config import ModelConfig

__all__ = ["combine", "observe_bn_stats", "observe_in_batches"]


def observe_bn_stats(
    variables: Mapping[str, Any], config: ModelConfig, x: np.ndarray, mode: str = "train",
    jit: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """``{"block0/bn1": (means (B, C), variances (B, C), frames), ...}``: per-utterance,
    per-channel statistics of the *input* of every BatchNorm while the model runs on ``x``
    (B, T). Combine utterances with :func:`combine`.

    ``mode="train"``: every BatchNorm normalises with its batch statistics (as when the
    running statistics were accumulated); ``"eval"``: with the stored running statistics.

    ``jit=False`` (default) runs op by op: every candidate config would otherwise compile
    the whole model anew (seconds each), while op-by-op kernels are shared by candidates.
    """
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from rawnet2_jax.batchnorm import BatchNorm
    from rawnet2_jax.model import RawNet2

    if mode not in ("train", "eval"):
        raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
    model = RawNet2(config)
    frames: dict[str, int] = {}

    def run(variables, x):
        captured: dict[str, tuple[Any, Any]] = {}

        def interceptor(next_fun, args, kwargs, context):
            mod = context.module
            if isinstance(mod, BatchNorm) and context.method_name == "__call__":
                h = jnp.asarray(args[0], jnp.float32)
                h = h.reshape(h.shape[0], -1, h.shape[-1])  # (B, frames, C)
                mean = jnp.mean(h, axis=1)
                var = jnp.mean(jnp.square(h - mean[:, None, :]), axis=1)  # biased, per utterance
                name = "/".join(mod.path)
                captured[name] = (mean, var)
                frames[name] = int(h.shape[1])
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(interceptor):
            if mode == "train":
                model.apply(variables, x, train=True, mutable=["batch_stats"])
            else:
                model.apply(variables, x, train=False)
        return captured

    fn = jax.jit(run) if jit else run
    out = fn(variables, jnp.asarray(x, jnp.float32))
    return {k: (np.asarray(m, np.float64), np.asarray(v, np.float64), frames[k]) for k, (m, v) in out.items()}


def combine(
    means: np.ndarray,
    variances: np.ndarray,
    frames: int,
    rows: Sequence[int] | slice = slice(None),
    batch_size: int | None = None,
):
    """(mean (C,), variance (C,)) that torch's running statistics would converge to over the
    chosen utterances when training used batches of ``batch_size`` utterances.

    A running variance averages *batch* variances: the within-utterance variance plus
    (1 - 1/batch_size) of the between-utterance variance of the means, so the batch size
    matters. ``batch_size=None``: all chosen utterances form one batch.
    """
    m = means[rows]
    v = variances[rows]
    k = m.shape[0]
    mu = m.mean(axis=0)
    b = k if batch_size is None else batch_size
    within = v.mean(axis=0)  # biased, per utterance
    between = m.var(axis=0, ddof=1) if k > 1 else np.zeros_like(mu)  # unbiased spread of means
    # Expected biased variance of a batch of b utterances, then torch's n/(n-1) correction.
    n = b * frames
    return mu, (within + between * (1.0 - 1.0 / b)) * (n / max(n - 1, 1))


def observe_in_batches(variables, config, x, mode, batch_size):
    """observe_bn_stats over consecutive batches of ``batch_size`` utterances (train mode
    normalises each batch by its own statistics, as training did), concatenated."""
    b = int(x.shape[0])
    if mode != "train" or not batch_size or batch_size >= b:
        return observe_bn_stats(variables, config, x, mode)
    parts = [observe_bn_stats(variables, config, x[i:i + batch_size], mode) for i in range(0, b, batch_size)]
    return {
        k: (np.concatenate([p[k][0] for p in parts]), np.concatenate([p[k][1] for p in parts]), parts[0][k][2])
        for k in parts[0]
    }
