"""DET curve and equal error rate, as the ASVspoof organisers define them.

Convention: higher score = more bona fide (the positive, "target" class). All functions
take plain arrays and return numpy values; nothing here imports JAX.

The definitions follow the official ASVspoof 2019 evaluation code exactly:

* all scores (targets then non-targets) are sorted with a *stable* sort (mergesort), so
  tied scores keep their input order (targets before non-targets);
* the thresholds are the sorted scores, preceded by one threshold 0.001 below the minimum;
* at threshold ``k`` (``k = 0 .. N``) the miss rate (FRR) is the fraction of target scores
  among the ``k`` lowest scores, the false-alarm rate (FAR) the fraction of non-target
  scores not among them;
* the EER is ``mean(FRR, FAR)`` at the first index minimising ``|FRR - FAR|``, and its
  threshold the threshold at that index.
"""

from __future__ import annotations

import numpy as np

from rawnet2_jax.errors import UserError


class MetricsError(UserError):
    """Scores that a metric cannot be computed from (empty class, NaN, bad ASV scores)."""


def as_scores(scores, name: str = "scores", allow_empty: bool = False) -> np.ndarray:
    """Return ``scores`` as a finite 1-D float64 array, or raise :class:`MetricsError`."""
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.size == 0 and not allow_empty:
        raise MetricsError(f"no {name}: a metric needs at least one score of each class")
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise MetricsError(
            f"{bad} of the {name} are NaN or infinite; fix the scorer or drop those trials"
        )
    return arr


def compute_det_curve(target_scores, nontarget_scores):
    """Miss and false-alarm rates over every threshold.

    Args:
        target_scores: scores of the positive class (bona fide for a CM, target for ASV).
        nontarget_scores: scores of the negative class (spoof for a CM).

    Returns:
        ``(frr, far, thresholds)``, three float64 arrays of length ``N + 1`` where ``N`` is
        the total number of scores: ``frr[k]`` (miss rate) and ``far[k]`` (false-alarm
        rate) when rejecting the ``k`` lowest scores; ``thresholds[0]`` is the minimum
        score minus 0.001 and ``thresholds[1:]`` the sorted scores.
    """
    tar = as_scores(target_scores, "target (bona fide) scores")
    non = as_scores(nontarget_scores, "non-target (spoof) scores")
    n_tar, n_non = tar.size, non.size
    scores = np.concatenate([tar, non])
    is_target = np.concatenate([np.ones(n_tar), np.zeros(n_non)])
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    targets_below = np.cumsum(is_target[order])
    rank = np.arange(1, scores.size + 1)
    nontargets_above = n_non - (rank - targets_below)
    frr = np.concatenate([[0.0], targets_below / n_tar])
    far = np.concatenate([[1.0], nontargets_above / n_non])
    thresholds = np.concatenate([[sorted_scores[0] - 0.001], sorted_scores])
    return frr, far, thresholds


def compute_eer(target_scores, nontarget_scores):
    """Equal error rate (a fraction, not a percentage) and its threshold.

    Returns:
        ``(eer, threshold)`` as Python floats.
    """
    return eer_from_det(*compute_det_curve(target_scores, nontarget_scores))


def eer_from_det(frr: np.ndarray, far: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    """``(eer, threshold)`` from a DET curve of :func:`compute_det_curve`."""
    index = int(np.argmin(np.abs(frr - far)))
    eer = float(np.mean([frr[index], far[index]]))
    return eer, float(thresholds[index])
