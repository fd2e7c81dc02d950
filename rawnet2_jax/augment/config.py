"""RawBoost parameters (no JAX import: the command line builds its flags from these).

:class:`RawBoostConfig` holds every parameter of the reference (``main_SSL_LA.py`` of
TakHemlata/SSL_Anti-spoofing) with its default; :data:`REFERENCE_NAMES` maps each field to the
reference's flag; :data:`ALGORITHMS` names the reference's ``--algo`` values.
"""

from __future__ import annotations

import dataclasses
import numbers

from rawnet2_jax.errors import UserError

ALGORITHMS = {
    0: "none",
    1: "LnL (linear and non-linear convolutive noise)",
    2: "ISD (impulsive signal-dependent noise)",
    3: "SSI (stationary signal-independent noise)",
    4: "LnL -> ISD -> SSI (series)",
    5: "LnL -> ISD (series)",
    6: "LnL -> SSI (series)",
    7: "ISD -> SSI (series)",
    8: "LnL(x) + ISD(x) (parallel), peak-normalised",
}


class RawBoostError(UserError, ValueError):
    """An invalid RawBoost parameter or algorithm (one line)."""


@dataclasses.dataclass(frozen=True)
class RawBoostConfig:
    """All RawBoost parameters; defaults are the reference's (``main_SSL_LA.py``).

    The reference's flag for each field is in :data:`REFERENCE_NAMES`.
    """

    # LnL and SSI notch filters
    n_bands: int = 5            # stages per multi-band filter
    min_f: float = 20.0         # centre frequency ~ U(min_f, max_f) Hz
    max_f: float = 8000.0
    min_bw: float = 100.0       # bandwidth ~ U(min_bw, max_bw) Hz
    max_bw: float = 1000.0
    min_coeff: int = 10         # taps = int(U(min_coeff, max_coeff)), made odd
    max_coeff: int = 100
    min_g: float = 0.0          # linear-term (and SSI) filter gain ~ U(min_g, max_g) dB
    max_g: float = 0.0
    min_bias_lin_nonlin: float = 5.0   # non-linear gain ~ U(min_g - min_bias, max_g - max_bias)
    max_bias_lin_nonlin: float = 20.0
    n_f: int = 5                # highest power of x (1 = linear only)
    # ISD
    p: float = 10.0             # at most p % of the samples are hit
    g_sd: float = 2.0           # impulse gain
    # SSI
    snr_min: float = 10.0       # SNR ~ U(snr_min, snr_max) dB
    snr_max: float = 40.0
    fs: int = 16000             # sample rate (Hz)

    def __post_init__(self):
        for name in ("n_bands", "min_coeff", "max_coeff", "n_f", "fs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise RawBoostError(f"RawBoost {name} must be an integer, got {v!r}")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or v != v or abs(v) == float("inf"):
                raise RawBoostError(f"RawBoost {f.name} must be a finite number, got {v!r}")
        checks = (
            (self.fs > 0, f"fs must be positive, got {self.fs}"),
            (self.n_bands >= 1, f"n_bands must be >= 1, got {self.n_bands}"),
            (self.n_f >= 1, f"n_f must be >= 1 (1 = linear term only), got {self.n_f}"),
            (0 <= self.min_f <= self.max_f <= self.fs / 2,
             f"need 0 <= min_f <= max_f <= fs/2 = {self.fs / 2:g} Hz, got min_f={self.min_f:g}, max_f={self.max_f:g}"),
            (1 <= self.min_bw <= self.max_bw,
             f"need 1 <= min_bw <= max_bw (Hz), got min_bw={self.min_bw:g}, max_bw={self.max_bw:g}"),
            (1 <= self.min_coeff <= self.max_coeff,
             f"need 1 <= min_coeff <= max_coeff, got min_coeff={self.min_coeff}, max_coeff={self.max_coeff}"),
            (self.min_g <= self.max_g, f"need min_g <= max_g (dB), got {self.min_g:g} > {self.max_g:g}"),
            (0 <= self.p <= 100, f"p is a percentage of samples, need 0 <= p <= 100, got {self.p:g}"),
            (self.g_sd >= 0, f"g_sd must be >= 0, got {self.g_sd:g}"),
            (self.snr_min <= self.snr_max, f"need snr_min <= snr_max (dB), got {self.snr_min:g} > {self.snr_max:g}"),
        )
        for ok, msg in checks:
            if not ok:
                raise RawBoostError(f"RawBoost: {msg}")

    @property
    def max_taps(self) -> int:
        """Most taps one stage can have: the largest int(U(min_coeff, max_coeff)), made odd."""
        c = max(self.max_coeff - 1, self.min_coeff)
        return c + 1 - c % 2

    @property
    def max_filter_length(self) -> int:
        """Most taps of a cascade of n_bands stages (491 with the defaults)."""
        return self.n_bands * (self.max_taps - 1) + 1


REFERENCE_NAMES = {
    "n_bands": "nBands", "min_f": "minF", "max_f": "maxF", "min_bw": "minBW", "max_bw": "maxBW",
    "min_coeff": "minCoeff", "max_coeff": "maxCoeff", "min_g": "minG", "max_g": "maxG",
    "min_bias_lin_nonlin": "minBiasLinNonLin", "max_bias_lin_nonlin": "maxBiasLinNonLin",
    "n_f": "N_f", "p": "P", "g_sd": "g_sd", "snr_min": "SNRmin", "snr_max": "SNRmax", "fs": "fs",
}
