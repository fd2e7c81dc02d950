"""One candidate forward scored against the stored BatchNorm running statistics (the search over
candidates: ``convert.bn_stats``):

* normalised means: per channel u = m / sqrt(m^2 + v) (mean over RMS), observed vs stored
  (invariant to any gain, bounded, robust when a channel's spread is tiny against its mean);
* variance shape: the spread over channels of log(v_observed / v_stored) (invariant to one
  overall gain: the speech files need not be as loud as the training data).

A layer's *discrepancy* is ``mean_c (u_o - u_s)^2 + var_c log(v_o/v_s)`` (0 = the stored
statistics reproduced exactly); a candidate's is the geometric mean over layers (so the first
layer, whose statistics depend most on the particular audio, cannot drown the others), lower
is better. Pearson correlations of means and log-variances are reported alongside.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Mapping, Sequence

import numpy as np

from convert.bn_observe import combine, observe_in_batches
from rawnet2_jax.config import ModelConfig

__all__ = ["CandidateScore", "KNOWN_INPUT_SCALES", "LayerScore", "compare_layer", "implied_input_scale",
           "score_candidate", "stored_stats"]


@dataclasses.dataclass
class LayerScore:
    layer: str
    r_mean: float  # Pearson r over channels, observed vs stored means (report only)
    r_logvar: float  # Pearson r over channels, log observed vs log stored variances (report only)
    mean_err: float  # mean over channels of (u_o - u_s)^2 with u = mean / RMS (gain-free)
    logvar_err: float  # var_c log(v_o / v_s): shape of the variances, free of an overall gain

    @property
    def discrepancy(self) -> float:
        return self.mean_err + self.logvar_err


@dataclasses.dataclass
class CandidateScore:
    changes: dict[str, Any]  # fields that differ from the preset
    config: ModelConfig
    layers: list[LayerScore]
    seconds: float = 0.0
    error: str | None = None
    fold_discrepancy: list[float] = dataclasses.field(default_factory=list)
    # input_scale under which the first BatchNorm's observed variances match the stored ones
    # on average (the discrepancy itself ignores an overall gain); see implied_input_scale().
    implied_input_scale: float = float("nan")

    def beats(self, other: "CandidateScore", min_gain: float) -> bool:
        """Lower discrepancy by more than ``min_gain`` (relative) overall AND on every fold."""
        if self.error:
            return False
        if other.error:
            return True
        pairs = [(self.discrepancy, other.discrepancy)] + list(
            zip(self.fold_discrepancy, other.fold_discrepancy)
        )
        return all(a < b * (1 - min_gain) for a, b in pairs)

    @property
    def discrepancy(self) -> float:
        if self.error or not self.layers:
            return float("inf")
        return _geomean([l.discrepancy for l in self.layers])

    def _avg(self, field: str) -> float:
        return float(np.mean([getattr(l, field) for l in self.layers])) if self.layers else float("nan")

    @property
    def r_mean(self) -> float:
        return self._avg("r_mean")

    @property
    def r_logvar(self) -> float:
        return self._avg("r_logvar")

    @property
    def mean_err(self) -> float:
        return self._avg("mean_err")

    @property
    def logvar_err(self) -> float:
        return self._avg("logvar_err")

    @property
    def label(self) -> str:
        if not self.changes and not self.error:
            return "(preset)"
        return " ".join(f"{k}={v}" for k, v in sorted(self.changes.items()))


FLOOR = 1e-4  # discrepancies below this are all "reproduced"; keeps log() finite


def _geomean(values: Sequence[float]) -> float:
    """Geometric mean (with a floor): every layer's *relative* change counts the same, so a
    layer whose statistics depend most on the audio (the first one) cannot drown the rest."""
    return float(np.exp(np.mean(np.log(np.asarray(values, np.float64) + FLOOR))))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    if not np.isfinite(den) or den <= 1e-30:
        return 0.0
    return float((a * b).sum() / den)


def _path_get(tree: Mapping[str, Any], path: Sequence[str]) -> Any:
    for p in path:
        tree = tree[p]
    return tree


def stored_stats(variables: Mapping[str, Any], layer: str) -> tuple[np.ndarray, np.ndarray]:
    """(running mean, running var) stored for BatchNorm ``layer`` (e.g. ``"block0/bn1"``)."""
    node = _path_get(variables["batch_stats"], layer.split("/"))
    return np.asarray(node["mean"], np.float64), np.asarray(node["var"], np.float64)


def compare_layer(layer: str, obs: tuple[np.ndarray, np.ndarray], stored: tuple[np.ndarray, np.ndarray]) -> LayerScore:
    m_o, v_o = (np.asarray(a, np.float64) for a in obs)
    m_s, v_s = stored
    tiny = 1e-12
    v_o = np.maximum(v_o, tiny)
    v_s = np.maximum(v_s, tiny)
    # mean / RMS per channel: gain-free, bounded in [-1, 1], and not blown up when the spread
    # of a channel is tiny against its mean.
    z = m_o / np.sqrt(v_o + m_o**2) - m_s / np.sqrt(v_s + m_s**2)
    d = np.log(v_o) - np.log(v_s)
    return LayerScore(
        layer,
        _pearson(m_o, m_s),
        _pearson(np.log(v_o), np.log(v_s)),
        float(np.mean(z * z)),
        float(np.var(d)),
    )


# Values of input_scale with a known story (config.py): the waveform as is, the seed's
# filters without SincConv_fast's 1 / (2 * band) for 62.5 Hz bands, int16-range audio.
KNOWN_INPUT_SCALES = (1.0, 125.0, 32768.0)


def implied_input_scale(observed: tuple[np.ndarray, np.ndarray], stored: tuple[np.ndarray, np.ndarray],
                        current: float) -> float:
    """The input_scale at which the first BatchNorm's input would carry the stored energy:
    ``current * sqrt(sum_c E_stored[x^2] / sum_c E_observed[x^2])`` (E[x^2] = var + mean^2; that
    input is linear in the waveform, or its absolute value, so a gain g scales E[x^2] by g^2).
    The loud channels dominate, so nearly silent bands cannot skew it. The loudness of the
    files adds a factor of a few either way; 1 vs 125 vs 32768 stay far apart."""
    (m_o, v_o), (m_s, v_s) = observed, stored
    e_o = float(np.sum(np.asarray(v_o) + np.square(m_o)))
    e_s = float(np.sum(np.asarray(v_s) + np.square(m_s)))
    if not (e_o > 0 and e_s > 0):
        return float("nan")
    return float(current * np.sqrt(e_s / e_o))


def _folds(batch: int) -> list[list[int]]:
    """Two interleaved halves of the utterances (one fold when there is a single utterance)."""
    if batch < 2:
        return [list(range(batch))]
    return [list(range(0, batch, 2)), list(range(1, batch, 2))]


def score_candidate(
    variables: Mapping[str, Any], config: ModelConfig, x: np.ndarray, mode: str = "train",
    changes: Mapping[str, Any] | None = None, batch_size: int | None = None,
) -> CandidateScore:
    """Discrepancy of one candidate config over all of ``x`` and over each fold of it."""
    t0 = time.perf_counter()
    try:
        obs = observe_in_batches(variables, config, x, mode, batch_size)
    except Exception as e:  # a candidate may not fit the input length (valid padding, pools)
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        return CandidateScore(dict(changes or {}), config, [], time.perf_counter() - t0,
                              f"{type(e).__name__}: {msg}")
    names = sorted(obs, key=_layer_order)
    combined = {k: combine(*obs[k], batch_size=batch_size) for k in names}
    layers = [compare_layer(k, combined[k], stored_stats(variables, k)) for k in names]
    first = names[0]
    implied = implied_input_scale(combined[first], stored_stats(variables, first), config.input_scale)
    folds = []
    for rows in _folds(int(x.shape[0])):
        fl = [compare_layer(k, combine(*obs[k], rows, batch_size), stored_stats(variables, k))
              for k in names]
        folds.append(_geomean([l.discrepancy for l in fl]))
    return CandidateScore(dict(changes or {}), config, layers, time.perf_counter() - t0,
                          fold_discrepancy=folds, implied_input_scale=implied)


def _layer_order(name: str) -> tuple:
    head = name.split("/")[0]
    if head == "front_bn":
        return (0, 0, name)
    if head.startswith("block"):
        return (1, int(head[5:] or 0), name)
    return (2, 0, name)
