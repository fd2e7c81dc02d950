"""Anti-spoofing metrics: EER, DET curve, tandem min t-DCF, score files (numpy only).

Score convention everywhere: higher score = more bona fide (bona fide is the positive
class). The definitions match the ASVspoof organisers' evaluation code; see
``eer.py`` and ``tdcf.py`` for the formulas. Command line: ``python -m rawnet2_jax.metrics``.
"""

from rawnet2_jax.metrics.eer import MetricsError, compute_det_curve, compute_eer
from rawnet2_jax.metrics.report import AttackResult, EvalReport, evaluate_scores
from rawnet2_jax.metrics.scorefile import (
    ASVScores,
    CMScores,
    ScoreFileError,
    parse_asv_scores,
    parse_cm_scores,
    read_asv_scores,
    read_cm_scores,
    write_cm_scores,
)
from rawnet2_jax.metrics.tdcf import (
    ASVSPOOF_COST_MODEL,
    TDCF_VERSIONS,
    AsvErrorRates,
    CostModel,
    asv_error_rates,
    min_tdcf,
    tdcf_curve,
)

__all__ = [
    "ASVSPOOF_COST_MODEL",
    "ASVScores",
    "AsvErrorRates",
    "AttackResult",
    "CMScores",
    "CostModel",
    "EvalReport",
    "MetricsError",
    "ScoreFileError",
    "TDCF_VERSIONS",
    "asv_error_rates",
    "compute_det_curve",
    "compute_eer",
    "evaluate_scores",
    "min_tdcf",
    "parse_asv_scores",
    "parse_cm_scores",
    "read_asv_scores",
    "read_cm_scores",
    "tdcf_curve",
    "write_cm_scores",
]
