"""Data augmentation that runs on the device, inside the jitted train step.

* :mod:`rawnet2_jax.augment.rawboost`: RawBoost (Tak et al., ICASSP 2022), algorithms 0..8:
  ``rawboost(key, x, algo, cfg)`` for one (T,) waveform, ``rawboost_batch(key, audio, algo,
  cfg)`` for a (B, T) batch (row b uses ``jax.random.split(key, B)[b]``).
* :mod:`rawnet2_jax.augment.config`: :class:`RawBoostConfig` (the reference's parameters).
* :mod:`rawnet2_jax.augment.fir`: the random multi-band notch FIR design and filtering.
* :mod:`rawnet2_jax.augment.codec`: the exception, on the HOST: codec / channel round trips
  (numpy, libsndfile, soxr) applied by the input pipeline; imported on its own, not here.

``rawnet2-jax augment`` (a file in, WAVs + PNG out) is :mod:`rawnet2_jax.augment_cli`, above this
package (it draws with :mod:`rawnet2_jax.plots`).

Importing this package imports JAX (the top-level ``rawnet2_jax`` package stays JAX-free).
"""

from rawnet2_jax.augment.config import ALGORITHMS, REFERENCE_NAMES, RawBoostConfig, RawBoostError
from rawnet2_jax.augment.rawboost import (
    FirParams,
    ISDParams,
    SSIParams,
    design_fir,
    draw_fir_params,
    draw_isd_params,
    draw_lnl_params,
    draw_ssi_params,
    isd_apply,
    lnl_apply,
    random_subset_mask,
    rawboost,
    rawboost_batch,
    ssi_apply,
)

__all__ = [
    "ALGORITHMS", "REFERENCE_NAMES", "FirParams", "ISDParams", "RawBoostConfig", "RawBoostError", "SSIParams",
    "design_fir", "draw_fir_params", "draw_isd_params", "draw_lnl_params", "draw_ssi_params", "isd_apply",
    "lnl_apply", "random_subset_mask", "rawboost", "rawboost_batch", "ssi_apply",
]
