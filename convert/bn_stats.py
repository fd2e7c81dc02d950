"""Rank candidate forward passes of a converted model by its stored BatchNorm statistics.

The seed checkpoint's forward pass is not public: a few points (sinc padding, abs/max-pool
after the sinc conv, the activation after ``front_bn``, SincNet's minimum frequencies, the
FMS form and position) are config fields whose values are educated guesses. Its BatchNorm
``running_mean`` / ``running_var`` were accumulated on the *true* forward pass over training
speech. So: run a candidate forward over a few speech files in statistics mode (every
BatchNorm normalises with the batch statistics, as during training), record the
per-channel mean and variance of every BatchNorm *input*, and compare them with the stored
running statistics (the discrepancy is defined in ``convert.bn_score``).

The rooms: ``convert.bn_observe`` records the statistics (and combines utterances as running
statistics accumulate), ``convert.bn_score`` scores one candidate against the stored ones,
this module searches the candidates, ``convert.bn_report`` holds the result and its text.

Candidates come from a greedy coordinate search around the preset: every option of one
ambiguous point at a time, keep the best, repeat until nothing changes (at most
``max_rounds``), so combinations of changes are reached without the full grid. A change is
only taken when it lowers the discrepancy by more than ``min_gain`` (relative) on all files
AND on each half of them: points that leave the statistics (nearly) unchanged, e.g. "same"
vs "valid" padding on long inputs, stay at the preset and are reported as indistinguishable.
``pre_gru_activation`` follows the last BatchNorm and cannot be ranked this way.
``input_scale`` (a gain on the waveform) is invisible to the gain-free discrepancy; instead the
report gives the input_scale at which the first BatchNorm's variances match on average, and
the nearest of the known candidates (1, 125, 32768).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from convert.bn_observe import combine, observe_bn_stats
from convert.bn_report import BnReport, format_report
from convert.bn_score import CandidateScore, compare_layer, score_candidate
from rawnet2_jax.config import ModelConfig

# Each ambiguous point: a list of options, each a dict of config fields set together.
AMBIGUOUS_POINTS: dict[str, list[dict[str, Any]]] = {
    "sinc_padding": [{"sinc_padding": "same"}, {"sinc_padding": "valid"}],
    "sinc_abs/pool": [
        {"sinc_abs": False, "sinc_pool": 1},
        {"sinc_abs": True, "sinc_pool": 1},
        {"sinc_abs": True, "sinc_pool": 3},
        {"sinc_abs": False, "sinc_pool": 3},
    ],
    "sinc_min_hz": [
        {"sinc_min_low_hz": 0.0, "sinc_min_band_hz": 0.0},
        {"sinc_min_low_hz": 50.0, "sinc_min_band_hz": 50.0},  # SincNet's defaults
    ],
    "front_activation": [
        {"front_activation": "leaky_relu"},
        {"front_activation": "selu"},
        {"front_activation": "relu"},
        {"front_activation": "none"},
    ],
    "fms_mode": [{"fms_mode": "add"}, {"fms_mode": "mul"}],
    "fms_position": [
        {"fms_position": "after_pool"},
        {"fms_position": "before_pool"},
        {"fms_position": "before_add"},
    ],
}

# Batch size of the training run whose running statistics are stored (the official RawNet2
# recipe uses 32; the seed's is not published). See :func:`combine`.
DEFAULT_TRAIN_BATCH = 32

UNRANKABLE = {
    "pre_gru_activation": "applied after the last BatchNorm (pre_gru_bn): no stored statistic sees it",
}

__all__ = [
    "AMBIGUOUS_POINTS",
    "BnReport",
    "CandidateScore",
    "format_report",
    "observe_bn_stats",
    "rank_candidates",
    "combine",
    "compare_layer",
    "score_candidate",
    "DEFAULT_TRAIN_BATCH",
]


def rank_candidates(
    variables: Mapping[str, Any],
    config: ModelConfig,
    x: np.ndarray,
    *,
    points: Mapping[str, list[dict[str, Any]]] | None = None,
    mode: str = "train",
    max_rounds: int = 3,
    min_gain: float = 0.02,
    batch_size: int | None = DEFAULT_TRAIN_BATCH,
    log: Callable[[str], None] | None = None,
) -> BnReport:
    """Greedy coordinate search over the ambiguous points around ``config``.

    A change is taken only when it lowers the discrepancy by more than ``min_gain`` (relative)
    on all the audio and on each half of the files (so noise from a few files is not taken
    for evidence). Returns every evaluated candidate, best first: candidates the lowest one
    does not beat in that sense count as tied with it and rank by how few fields they change
    from the preset; the others follow by discrepancy.
    """
    points = dict(AMBIGUOUS_POINTS if points is None else points)
    fields = [f for opts in points.values() for o in opts for f in o]
    evaluate = _CandidateCache(variables, config, x, mode, batch_size, fields, log)
    current = config
    evaluate(current)
    for _round in range(max_rounds):
        changed = False
        for options in points.values():
            current, moved = _improve_point(evaluate, current, config, options, min_gain)
            changed = changed or moved
        if not changed:
            break
    ranked, n_tied = _rank(evaluate.scores(), min_gain)
    notes = [f"{k}: {v}" for k, v in UNRANKABLE.items()]
    return BnReport(config, ranked, int(x.shape[0]), int(x.shape[1]), mode, notes, n_tied, min_gain)


class _CandidateCache:
    """``evaluate(cfg)``: the candidate's score, computed once per setting of the searched fields."""

    def __init__(self, variables, base: ModelConfig, x, mode, batch_size, fields, log):
        self.variables, self.base, self.x, self.mode, self.batch_size = variables, base, x, mode, batch_size
        self.fields, self.log = fields, log
        self.cache: dict[tuple, CandidateScore] = {}

    def key(self, cfg: ModelConfig) -> tuple:
        return tuple(sorted({(f, getattr(cfg, f)) for f in self.fields}))

    def __call__(self, cfg: ModelConfig) -> CandidateScore:
        k = self.key(cfg)
        if k not in self.cache:
            changes = {f: getattr(cfg, f) for f in self.fields if getattr(cfg, f) != getattr(self.base, f)}
            c = score_candidate(self.variables, cfg, self.x, self.mode, changes, self.batch_size)
            self.cache[k] = c
            if self.log is not None:
                status = f"discrepancy {c.discrepancy:.4g}" if c.error is None else f"skipped ({c.error})"
                self.log(f"  [{len(self.cache):2d}] {c.label:<58} {status}  ({c.seconds:.1f} s)")
        return self.cache[k]

    def scores(self) -> list[CandidateScore]:
        return list(self.cache.values())


def _improve_point(evaluate: _CandidateCache, current: ModelConfig, base: ModelConfig,
                   options: list[dict[str, Any]], min_gain: float) -> tuple[ModelConfig, bool]:
    """One ambiguous point: take its clearly best option, or go back to the preset's option
    when the current one is not clearly better. Returns (config, whether it changed)."""
    changed = False
    trials = []
    for opt in options:
        try:
            cand = current.replace(**opt)
        except ValueError:  # an option the config does not allow in this combination
            continue
        trials.append((evaluate(cand), cand))
    if not trials:
        return current, False
    c_best, cfg_best = min(trials, key=lambda t: t[0].discrepancy)
    if evaluate.key(cfg_best) != evaluate.key(current) and c_best.beats(evaluate(current), min_gain):
        current, changed = cfg_best, True
    # Parsimony: back to the preset's option of this point when it is not clearly worse
    # (a change taken early, while other points were still wrong, may no longer help).
    try:
        home = current.replace(**{f: getattr(base, f) for f in options[0]})
    except ValueError:
        return current, changed
    if evaluate.key(home) != evaluate.key(current) and not evaluate(current).beats(evaluate(home), min_gain):
        current, changed = home, True
    return current, changed


def _rank(scores: list[CandidateScore], min_gain: float) -> tuple[list[CandidateScore], int]:
    """Best first: those the lowest does not clearly beat (tied; fewest changes first), then the
    rest by discrepancy, then the candidates that could not run. Also returns the tied count."""
    ok = [c for c in scores if c.error is None]
    failed = [c for c in scores if c.error is not None]
    if not ok:
        raise ValueError("no candidate could run on the given audio; use longer files")
    lowest = min(ok, key=lambda c: c.discrepancy)
    tied = [c for c in ok if not lowest.beats(c, min_gain)]
    rest = [c for c in ok if lowest.beats(c, min_gain)]
    ranked = sorted(tied, key=lambda c: (len(c.changes), c.discrepancy)) + sorted(rest, key=lambda c: c.discrepancy)
    return ranked + failed, len(tied)
