"""The BatchNorm-statistics check's result (``BnReport``: every candidate scored, best first) and
its text (``format_report``: the ranking, the best candidate layer by layer, the implied input gain)."""

from __future__ import annotations

import dataclasses

import numpy as np

from convert.bn_score import KNOWN_INPUT_SCALES, CandidateScore
from rawnet2_jax.config import ModelConfig

__all__ = ["BnReport", "format_report"]


@dataclasses.dataclass
class BnReport:
    base: ModelConfig
    candidates: list[CandidateScore]  # best first
    num_files: int
    num_samples: int
    mode: str
    notes: list[str]
    num_tied: int = 1  # candidates[:num_tied] are within min_gain of the lowest discrepancy
    min_gain: float = 0.02

    @property
    def best(self) -> CandidateScore:
        return self.candidates[0]



def format_report(report: BnReport, top: int = 12) -> str:
    lines = _ranking_lines(report, top) + _layer_lines(report.best) + _input_gain_lines(report)
    best = report.best
    if best.changes:
        sets = " ".join(f"--set {k}={v}" for k, v in sorted(best.changes.items()))
        lines.append(f"best differs from the preset; to use it: python -m convert SRC OUT {sets}")
    else:
        lines.append("the preset's own setting ranks first")
    for n in report.notes:
        lines.append(f"note: {n}")
    return "\n".join(lines)


def _ranking_lines(report: BnReport, top: int) -> list[str]:
    """The header and the ``top`` best candidates, one row each (``~`` marks a tie)."""
    lines = [
        f"BatchNorm statistics check: {len(report.candidates)} candidate(s) around preset "
        f"{report.base.name!r}, {report.num_files} file(s) x {report.num_samples} samples, "
        f"{report.mode} mode",
        "discrepancy = geometric mean over BatchNorm layers of (mean err + logvar err); "
        "mean err = mean_c (u_obs - u_stored)^2 with u = mean/RMS; logvar err = "
        "var_c log(v_obs/v_stored); 0 = stored statistics reproduced, lower is better",
        f"{'rank':>4} {'discrep.':>9} {'mean err':>9} {'logvar err':>10} {'r_mean':>7} "
        f"{'r_logvar':>8}  setting (vs preset)",
    ]
    for i, c in enumerate(report.candidates[:top], 1):
        tie = "~" if 1 < i <= report.num_tied else " "
        if c.error:
            lines.append(f"{i:>4} {'-':>9} {'-':>9} {'-':>10} {'-':>7} {'-':>8}  {c.label}  "
                         f"[skipped: {c.error}]")
        else:
            lines.append(
                f"{i:>4}{tie}{c.discrepancy:>9.4g} {c.mean_err:>9.4g} {c.logvar_err:>10.4g} "
                f"{c.r_mean:>7.3f} {c.r_logvar:>8.3f}  {c.label}"
            )
    if len(report.candidates) > top:
        lines.append(f"     ... {len(report.candidates) - top} more")
    if report.num_tied > 1:
        lines.append(
            f"~ = not beaten by the lowest discrepancy by {report.min_gain:.0%} on all files and on each "
            "half of them: indistinguishable; the one changing fewest fields ranks first"
        )
    return lines


def _layer_lines(best: CandidateScore) -> list[str]:
    """The best candidate's errors layer by layer (none when it has no per-layer detail)."""
    if not best.layers:
        return []
    lines = [f"per layer, best candidate {best.label}:",
             f"  {'layer':<16} {'mean err':>9} {'logvar err':>10} {'r_mean':>7} {'r_logvar':>8}"]
    for l in best.layers:
        lines.append(f"  {l.layer:<16} {l.mean_err:>9.4g} {l.logvar_err:>10.4g} "
                     f"{l.r_mean:>7.3f} {l.r_logvar:>8.3f}")
    return lines


def _input_gain_lines(report: BnReport) -> list[str]:
    """The input scale the first BatchNorm's statistics imply, and a hint when the preset's is
    off by more than 3x."""
    scale = report.best.implied_input_scale
    if not (np.isfinite(scale) and scale > 0):
        return []
    nearest = min(KNOWN_INPUT_SCALES, key=lambda c: abs(np.log(scale / c)))
    lines = [
        f"input gain: the first BatchNorm's stored statistics match these files' energy at input_scale "
        f"~ {scale:.3g} (config: {report.base.input_scale:g}; known candidates "
        f"{', '.join(f'{c:g}' for c in KNOWN_INPUT_SCALES)} -> nearest {nearest:g})"
    ]
    if abs(np.log(nearest / report.base.input_scale)) > np.log(3):
        lines.append(f"  the stored statistics suggest --set input_scale={nearest:g}")
    return lines
