"""Data augmentation that runs on the device, inside the jitted train step.

* :mod:`rawnet2_jax.augment.rawboost`: RawBoost (Tak et al., ICASSP 2022), algorithms 0..8.
* :mod:`rawnet2_jax.augment.fir`: its random multi-band notch FIR design and filtering.
"""

from rawnet2_jax.augment.rawboost import (
    ALGORITHMS,
    REFERENCE_NAMES,
    FirParams,
    ISDParams,
    RawBoostConfig,
    RawBoostError,
    SSIParams,
    design_fir,
    draw_fir_params,
    draw_isd_params,
    draw_lnl_params,
    draw_ssi_params,
    isd_apply,
    lnl_apply,
    rawboost,
    rawboost_batch,
    ssi_apply,
)

__all__ = [
    "ALGORITHMS", "REFERENCE_NAMES", "FirParams", "ISDParams", "RawBoostConfig", "RawBoostError",
    "SSIParams", "design_fir", "draw_fir_params", "draw_isd_params", "draw_lnl_params",
    "draw_ssi_params", "isd_apply", "lnl_apply", "rawboost", "rawboost_batch", "ssi_apply",
]
