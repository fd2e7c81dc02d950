"""Tandem detection cost function (t-DCF) of a CM in front of a fixed ASV system.

Two formulations, both as in the organisers' evaluation code:

* ``"2019"`` ("legacy", ASVspoof 2019 challenge; Kinnunen et al., Odyssey 2018)::

      C1 = Ptar (Cmiss_cm - Cmiss_asv Pmiss_asv) - Pnon Cfa_asv Pfa_asv
      C2 = Cfa_cm Pspoof (1 - Pmiss_spoof_asv)
      t-DCF_norm(s) = (C1 Pmiss_cm(s) + C2 Pfa_cm(s)) / min(C1, C2)

* ``"2021"`` (revised, Kinnunen et al., TASLP 2020; ASVspoof 2021), with
  Cmiss = ``c_miss_asv``, Cfa = ``c_fa_asv`` and Cfa_spoof = ``c_fa_cm``::

      C0 = Ptar Cmiss Pmiss_asv + Pnon Cfa Pfa_asv
      C1 = Ptar Cmiss - C0
      C2 = Pspoof Cfa_spoof Pfa_spoof_asv
      t-DCF_norm(s) = (C0 + C1 Pmiss_cm(s) + C2 Pfa_cm(s)) / (C0 + min(C1, C2))

The 2021 coefficients and cost model are those of the ASVspoof 2021 eval package
(``eval_wrapper.get_tDCF_C012``, ``config.cost_model``: Pspoof 0.05, Ptar 0.95 * 0.99,
Pnon 0.95 * 0.01, Cmiss 1, Cfa 10, Cfa_spoof 10); ``tests/test_metrics_2021.py`` checks
them against a transcription of it. The two are not comparable. ``Pmiss_cm(s)``/``Pfa_cm(s)`` come from
:func:`~rawnet2_jax.metrics.eer.compute_det_curve` (bona fide = positive class); the ASV
operating point is the EER threshold of target vs non-target ASV scores, with
``Pfa_asv = P(nontarget >= thr)``, ``Pmiss_asv = P(target < thr)``,
``Pmiss_spoof_asv = P(spoof < thr)``, ``Pfa_spoof_asv = P(spoof >= thr)``.

Deliberate differences from the official scripts, none of which changes a value they
return: errors are :class:`MetricsError` (one line) instead of ``sys.exit``; scores with
fewer than 3 distinct values (hard decisions) are accepted; an undefined normalisation
(``min(C1, C2) == 0``) is an error instead of a division by zero.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from rawnet2_jax.metrics.eer import MetricsError, as_scores, compute_det_curve, compute_eer

TDCFVersion = Literal["2019", "2021"]
TDCF_VERSIONS = ("2019", "2021")


@dataclasses.dataclass(frozen=True)
class CostModel:
    """Priors and costs of the t-DCF. Defaults: the ASVspoof 2019/2021 LA organisers' model."""

    p_spoof: float = 0.05
    p_target: float = (1 - 0.05) * 0.99
    p_nontarget: float = (1 - 0.05) * 0.01
    c_miss_asv: float = 1.0  # 2021: Cmiss (tandem system rejects a target)
    c_fa_asv: float = 10.0  # 2021: Cfa (tandem system accepts a non-target)
    c_miss_cm: float = 1.0  # 2019 only
    c_fa_cm: float = 10.0  # 2021: Cfa_spoof (tandem system accepts a spoof)

    def __post_init__(self):
        priors = (self.p_spoof, self.p_target, self.p_nontarget)
        if min(priors) < 0 or abs(sum(priors) - 1) > 1e-10:
            raise MetricsError(f"t-DCF priors must be non-negative and sum to 1, got {priors}")


ASVSPOOF_COST_MODEL = CostModel()


@dataclasses.dataclass(frozen=True)
class AsvErrorRates:
    """Operating point of the fixed ASV system (fractions, not percentages)."""

    threshold: float
    eer: float
    p_fa: float  # non-targets accepted
    p_miss: float  # targets rejected
    p_miss_spoof: float  # spoofs rejected (2019 formulation)
    p_fa_spoof: float  # spoofs accepted (2021 formulation; counted, not 1 - p_miss_spoof)


def asv_error_rates(target, nontarget, spoof, threshold: float | None = None) -> AsvErrorRates:
    """ASV error rates at ``threshold`` (default: the EER threshold of target vs non-target).

    ``spoof`` are the ASV scores of the spoofed trials that the t-DCF is computed for.
    """
    tar = as_scores(target, "ASV target scores")
    non = as_scores(nontarget, "ASV non-target scores")
    spf = as_scores(spoof, "ASV spoof scores")
    eer, eer_threshold = compute_eer(tar, non)
    thr = eer_threshold if threshold is None else float(threshold)
    return AsvErrorRates(
        threshold=thr,
        eer=eer,
        p_fa=float(np.sum(non >= thr) / non.size),
        p_miss=float(np.sum(tar < thr) / tar.size),
        p_miss_spoof=float(np.sum(spf < thr) / spf.size),
        p_fa_spoof=float(np.sum(spf >= thr) / spf.size),
    )


def tdcf_curve(
    bonafide_cm,
    spoof_cm,
    asv: AsvErrorRates,
    version: TDCFVersion = "2019",
    cost_model: CostModel = ASVSPOOF_COST_MODEL,
):
    """Normalised t-DCF at every CM threshold.

    Returns:
        ``(tdcf_norm, thresholds)``; ``thresholds`` as in ``compute_det_curve``.
    """
    p_miss_cm, p_fa_cm, thresholds = compute_det_curve(
        as_scores(bonafide_cm, "bona fide CM scores"), as_scores(spoof_cm, "spoof CM scores")
    )
    cm = cost_model
    if version == "2019":
        c1 = cm.p_target * (cm.c_miss_cm - cm.c_miss_asv * asv.p_miss) - (
            cm.p_nontarget * cm.c_fa_asv * asv.p_fa
        )
        c2 = cm.c_fa_cm * cm.p_spoof * (1 - asv.p_miss_spoof)
        c0 = 0.0
        _check_weights(c0, c1, c2, asv)
        norm = min(c1, c2)
        curve = (c1 * p_miss_cm + c2 * p_fa_cm) / norm
    elif version == "2021":
        c0, c1, c2 = tdcf_2021_coefficients(asv, cost_model)
        _check_weights(c0, c1, c2, asv)
        curve = normalised_tdcf_2021(p_miss_cm, p_fa_cm, c0, c1, c2)
    else:
        raise MetricsError(f"unknown t-DCF version {version!r}; use one of {TDCF_VERSIONS}")
    return curve, thresholds


def tdcf_2021_coefficients(asv: AsvErrorRates, cost_model: CostModel = ASVSPOOF_COST_MODEL) -> tuple[float, float, float]:
    """``(C0, C1, C2)`` of the 2021 formulation (the eval package's ``get_tDCF_C012``)."""
    cm = cost_model
    c0 = cm.p_target * cm.c_miss_asv * asv.p_miss + cm.p_nontarget * cm.c_fa_asv * asv.p_fa
    c1 = cm.p_target * cm.c_miss_asv - c0
    c2 = cm.p_spoof * cm.c_fa_cm * asv.p_fa_spoof
    return c0, c1, c2


def normalised_tdcf_2021(p_miss_cm, p_fa_cm, c0: float, c1: float, c2: float) -> np.ndarray:
    """``(C0 + C1 Pmiss_cm + C2 Pfa_cm) / (C0 + min(C1, C2))`` at every CM threshold."""
    return (c0 + c1 * np.asarray(p_miss_cm) + c2 * np.asarray(p_fa_cm)) / (c0 + min(c1, c2))


def _check_weights(c0: float, c1: float, c2: float, asv: AsvErrorRates) -> None:
    if c0 < 0 or c1 < 0 or c2 < 0:
        raise MetricsError(
            f"negative t-DCF weights (C0={c0:.4g}, C1={c1:.4g}, C2={c2:.4g}) from ASV error "
            f"rates Pfa={asv.p_fa:.4g}, Pmiss={asv.p_miss:.4g}; check the ASV score file"
        )
    if c0 + min(c1, c2) == 0:
        raise MetricsError(
            "the t-DCF is undefined here: the ASV system rejects every spoof "
            f"(Pmiss_spoof_asv={asv.p_miss_spoof:.4g}) or every target, so min(C1, C2) = 0; "
            "check the ASV score file"
        )


def min_tdcf(
    bonafide_cm,
    spoof_cm,
    asv: AsvErrorRates,
    version: TDCFVersion = "2019",
    cost_model: CostModel = ASVSPOOF_COST_MODEL,
):
    """Minimum normalised t-DCF over CM thresholds.

    Returns:
        ``(min_tdcf, cm_threshold)`` as Python floats (first minimising threshold).
    """
    curve, thresholds = tdcf_curve(bonafide_cm, spoof_cm, asv, version, cost_model)
    index = int(np.argmin(curve))
    return float(curve[index]), float(thresholds[index])
