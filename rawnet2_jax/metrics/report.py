"""Pooled and per-attack EER / min t-DCF of a CM score list (what the metrics CLI prints)."""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from rawnet2_jax.metrics.eer import MetricsError, compute_eer
from rawnet2_jax.metrics.scorefile import ASVScores, CMScores
from rawnet2_jax.metrics.tdcf import (
    ASVSPOOF_COST_MODEL,
    TDCF_VERSIONS,
    AsvErrorRates,
    CostModel,
    asv_error_rates,
    min_tdcf,
)


_ATTACK_ID = re.compile(r"A\d\d")  # ASVspoof 2019 / 2021 attack ids: A01-A19


@dataclasses.dataclass
class AttackResult:
    """One attack's spoofs against all bona fide trials."""

    attack: str
    n_spoof: int
    eer: float  # fraction
    eer_threshold: float
    min_tdcf: float | None = None
    asv: AsvErrorRates | None = None  # ASV operating point used for this attack's t-DCF


@dataclasses.dataclass
class EvalReport:
    n_bonafide: int
    n_spoof: int
    eer: float  # fraction
    eer_threshold: float
    min_tdcf: float | None
    tdcf_version: str | None
    asv: AsvErrorRates | None
    per_attack: dict[str, AttackResult]
    warnings: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready summary; EERs in percent."""
        out: dict = {"eer": 100.0 * self.eer, "eer_threshold": self.eer_threshold}
        if self.min_tdcf is not None:
            out["min_tdcf"] = self.min_tdcf
        if self.tdcf_version is not None:
            out["t_dcf_version"] = self.tdcf_version
        out["n_bonafide"] = self.n_bonafide
        out["n_spoof"] = self.n_spoof
        if self.asv is not None:
            out["asv"] = {
                "eer": 100.0 * self.asv.eer,
                "threshold": self.asv.threshold,
                "p_fa": self.asv.p_fa,
                "p_miss": self.asv.p_miss,
                "p_miss_spoof": self.asv.p_miss_spoof,
            }
        per = {}
        for name, r in self.per_attack.items():
            entry: dict = {"eer": 100.0 * r.eer}
            if r.min_tdcf is not None:
                entry["min_tdcf"] = r.min_tdcf
            entry["n_spoof"] = r.n_spoof
            per[name] = entry
        out["per_attack"] = per
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out

    def format_table(self) -> str:
        """Human-readable summary and per-attack table."""
        lines = [
            f"trials:     {self.n_bonafide:,} bona fide, {self.n_spoof:,} spoof",
            f"EER:        {100 * self.eer:.4f} %   (CM threshold {self.eer_threshold:.6g})",
        ]
        if self.asv is not None:
            a = self.asv
            value = "undefined" if self.min_tdcf is None else f"{self.min_tdcf:.6f}"
            lines.append(
                f"min t-DCF:  {value}   ({self.tdcf_version} formulation; ASV EER "
                f"{100 * a.eer:.3f} %, Pfa {100 * a.p_fa:.3f} %, Pmiss {100 * a.p_miss:.3f} %, "
                f"Pmiss_spoof {100 * a.p_miss_spoof:.3f} %)"
            )
        else:
            lines.append("min t-DCF:  - (give --asv-scores to compute it)")
        if self.per_attack:
            lines.append("")
            width = max(6, *(len(k) for k in self.per_attack))
            header = f"{'attack':<{width}}  {'spoofs':>8}  {'EER (%)':>9}"
            if self.asv is not None:
                header += f"  {'min t-DCF':>10}"
            lines.append(header)
            for name, r in self.per_attack.items():
                row = f"{name:<{width}}  {r.n_spoof:>8,}  {100 * r.eer:>9.4f}"
                if self.asv is not None:
                    row += f"  {r.min_tdcf:>10.6f}" if r.min_tdcf is not None else f"  {'-':>10}"
                lines.append(row)
        return "\n".join(lines)


def _eer_ties_for_cm(bona, spoof) -> float:
    """EER with ties broken in the CM's favour (spoofs sort before tied bona fide)."""
    scores = np.concatenate([bona, spoof])
    is_bona = np.concatenate([np.ones(bona.size), np.zeros(spoof.size)])
    order = np.lexsort((is_bona, scores))
    bona_below = np.cumsum(is_bona[order])
    rank = np.arange(1, scores.size + 1)
    frr = np.concatenate([[0.0], bona_below / bona.size])
    far = np.concatenate([[1.0], (spoof.size - (rank - bona_below)) / spoof.size])
    i = int(np.argmin(np.abs(frr - far)))
    return float((frr[i] + far[i]) / 2)


def _tie_warnings(bona, spoof) -> list[str]:
    out = []
    distinct = np.unique(np.concatenate([bona, spoof])).size
    if distinct < 3:
        out.append(
            f"the CM scores take only {distinct} distinct value(s): hard decisions, not scores; "
            "the EER and t-DCF are then of little meaning"
        )
    else:
        official = compute_eer(bona, spoof)[0]
        favourable = _eer_ties_for_cm(bona, spoof)
        if official - favourable > 1e-3:
            out.append(
                f"tied bona fide / spoof scores move the EER from {100 * favourable:.3f} % to "
                f"{100 * official:.3f} % (the official rule counts ties against the CM); "
                "saturated probabilities? Score with the log-odds logit[1] - logit[0]"
            )
    return out


def _safe_min_tdcf(bona, spoof, rates, version, cost_model, what, warnings) -> float | None:
    """min t-DCF, or None plus a warning where the ASV operating point leaves it undefined
    (the EER and the other attacks are still reported)."""
    try:
        return min_tdcf(bona, spoof, rates, version, cost_model)[0]
    except MetricsError as e:
        warnings.append(f"min t-DCF ({what}) not computed: {e}")
        return None


def evaluate_scores(
    cm: CMScores,
    asv: ASVScores | None = None,
    tdcf_version: str = "2019",
    cost_model: CostModel = ASVSPOOF_COST_MODEL,
) -> EvalReport:
    """EER (pooled and per attack) and, with ASV scores, the min t-DCF.

    Per attack, the CM scores of that attack's spoofs are compared with all bona fide
    scores; the ASV spoof miss rate is that of the same attack's ASV spoof trials when the
    ASV file has them (source column = attack id, as in the organisers' files), else of
    all ASV spoof trials. Use the ASV file of the same split (dev for dev, eval for eval).
    """
    if tdcf_version not in TDCF_VERSIONS:
        raise MetricsError(f"unknown t-DCF version {tdcf_version!r}; use one of {TDCF_VERSIONS}")
    bona, spoof = _both_classes(cm)
    warnings = _tie_warnings(bona, spoof)
    eer, eer_thr = compute_eer(bona, spoof)
    trials = _AsvTrials.of(asv) if asv is not None else None
    tdcf = None
    if trials is not None:
        tdcf = _safe_min_tdcf(bona, spoof, trials.pooled, tdcf_version, cost_model, "pooled", warnings)
        attacks = cm.spoof_attacks()
        if attacks and trials.sources and not (set(attacks) & trials.sources):
            text = (f"none of the CM attacks ({', '.join(attacks)}) is in the ASV score file "
                    f"(which has {', '.join(sorted(trials.sources))})")
            if all(_ATTACK_ID.fullmatch(a) for a in (*attacks, *trials.sources)):
                # ASVspoof attack ids on both sides: the ASV file of another split, whose t-DCF
                # would be a number for attacks it never saw
                raise MetricsError(f"{text}: it is the ASV file of another split; give the ASV scores "
                                   "of the same split (dev for dev, eval for eval)")
            warnings.append(f"{text}; is it the ASV file of the same split?")
    per_attack: dict[str, AttackResult] = {}
    for attack in cm.spoof_attacks():
        s = cm.spoof_scores(attack)
        result = AttackResult(attack, int(s.size), *compute_eer(bona, s))
        if trials is not None:
            result.asv = trials.rates_of(attack)
            result.min_tdcf = _safe_min_tdcf(bona, s, result.asv, tdcf_version, cost_model, attack, warnings)
        per_attack[attack] = result

    return EvalReport(
        n_bonafide=int(bona.size),
        n_spoof=int(spoof.size),
        eer=eer,
        eer_threshold=eer_thr,
        min_tdcf=tdcf,
        tdcf_version=tdcf_version if asv is not None else None,
        asv=trials.pooled if trials is not None else None,
        per_attack=per_attack,
        warnings=warnings,
    )


def _both_classes(cm: CMScores) -> tuple[np.ndarray, np.ndarray]:
    bona, spoof = cm.bonafide_scores(), cm.spoof_scores()
    if bona.size == 0:
        raise MetricsError("the CM scores have no bona fide trials; EER needs both classes")
    if spoof.size == 0:
        raise MetricsError("the CM scores have no spoof trials; EER needs both classes")
    return bona, spoof


@dataclasses.dataclass(frozen=True)
class _AsvTrials:
    """The ASV scores a tandem t-DCF needs, and the pooled ASV error rates."""

    asv: ASVScores
    target: np.ndarray
    nontarget: np.ndarray
    pooled: AsvErrorRates  # of all the spoof trials
    sources: frozenset  # attack ids of the ASV spoof trials

    @classmethod
    def of(cls, asv: ASVScores) -> "_AsvTrials":
        tar, non, spoof = asv.of_key("target"), asv.of_key("nontarget"), asv.of_key("spoof")
        for name, arr in (("target", tar), ("nontarget", non), ("spoof", spoof)):
            if arr.size == 0:
                raise MetricsError(
                    f"the ASV scores have no {name} trials; the tandem t-DCF needs target, "
                    "nontarget and spoof ASV scores"
                )
        sources = frozenset(s for s, k in zip(asv.sources, asv.keys) if k == "spoof")
        return cls(asv, tar, non, asv_error_rates(tar, non, spoof), sources)

    def rates_of(self, attack: str):
        """The attack's own ASV spoof miss rate when the file has its trials, else the pooled rates."""
        own = self.asv.of_key("spoof", source=attack)
        if not own.size:
            return self.pooled
        return asv_error_rates(self.target, self.nontarget, own, threshold=self.pooled.threshold)

