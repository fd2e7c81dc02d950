"""Rank candidate forward passes of a converted model by its stored BatchNorm statistics.

The seed checkpoint's forward pass is not public: a few points (sinc padding, abs/max-pool
after the sinc conv, the activation after ``front_bn``, SincNet's minimum frequencies, the
FMS form and position) are config fields whose values are educated guesses. Its BatchNorm
``running_mean`` / ``running_var`` were accumulated on the *true* forward pass over training
speech. So: run a candidate forward over a few speech files in statistics mode (every
BatchNorm normalises with the batch statistics, as during training), record the
per-channel mean and variance of every BatchNorm *input*, and compare them with the stored
running statistics:

* normalised means: per channel u = m / sqrt(m^2 + v) (mean over RMS), observed vs stored
  (invariant to any gain, bounded, robust when a channel's spread is tiny against its mean);
* variance shape: the spread over channels of log(v_observed / v_stored) (invariant to one
  overall gain: the speech files need not be as loud as the training data).

A layer's *discrepancy* is ``mean_c (u_o - u_s)^2 + var_c log(v_o/v_s)`` (0 = the stored
statistics reproduced exactly); a candidate's is the geometric mean over layers (so the first
layer, whose statistics depend most on the particular audio, cannot drown the others), lower
is better. Pearson correlations of means and log-variances are reported alongside.

Observed statistics are combined the way running statistics accumulate: the expected
variance of a training batch of ``batch_size`` utterances (see :func:`combine`), with the
files run through the model in batches of that size.

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

import dataclasses
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

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
    "score_candidate",
]


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


# ----------------------------------------------------------------------------- statistics


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


def observe_bn_stats(
    variables: Mapping[str, Any], config: ModelConfig, x: np.ndarray, mode: str = "train",
    jit: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """``{"block0/bn1": (means (B, C), variances (B, C), frames), ...}``: per-utterance,
    per-channel statistics of the *input* of every BatchNorm while the model runs on ``x``
    (B, T). Combine utterances with :func:`combine`.

    ``mode="train"``: every BatchNorm normalises with its batch statistics (as when the
    running statistics were accumulated); ``"eval"``: with the stored running statistics.

    ``jit=False`` (default) runs op by op: every candidate config would otherwise compile
    the whole model anew (seconds each), while op-by-op kernels are shared by candidates.
    """
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from rawnet2_jax.batchnorm import BatchNorm
    from rawnet2_jax.model import RawNet2

    if mode not in ("train", "eval"):
        raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
    model = RawNet2(config)
    frames: dict[str, int] = {}

    def run(variables, x):
        captured: dict[str, tuple[Any, Any]] = {}

        def interceptor(next_fun, args, kwargs, context):
            mod = context.module
            if isinstance(mod, BatchNorm) and context.method_name == "__call__":
                h = jnp.asarray(args[0], jnp.float32)
                h = h.reshape(h.shape[0], -1, h.shape[-1])  # (B, frames, C)
                mean = jnp.mean(h, axis=1)
                var = jnp.mean(jnp.square(h - mean[:, None, :]), axis=1)  # biased, per utterance
                name = "/".join(mod.path)
                captured[name] = (mean, var)
                frames[name] = int(h.shape[1])
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(interceptor):
            if mode == "train":
                model.apply(variables, x, train=True, mutable=["batch_stats"])
            else:
                model.apply(variables, x, train=False)
        return captured

    fn = jax.jit(run) if jit else run
    out = fn(variables, jnp.asarray(x, jnp.float32))
    return {k: (np.asarray(m, np.float64), np.asarray(v, np.float64), frames[k]) for k, (m, v) in out.items()}


def combine(
    means: np.ndarray,
    variances: np.ndarray,
    frames: int,
    rows: Sequence[int] | slice = slice(None),
    batch_size: int | None = None,
):
    """(mean (C,), variance (C,)) that torch's running statistics would converge to over the
    chosen utterances when training used batches of ``batch_size`` utterances.

    A running variance averages *batch* variances: the within-utterance variance plus
    (1 - 1/batch_size) of the between-utterance variance of the means, so the batch size
    matters. ``batch_size=None``: all chosen utterances form one batch.
    """
    m = means[rows]
    v = variances[rows]
    k = m.shape[0]
    mu = m.mean(axis=0)
    b = k if batch_size is None else batch_size
    within = v.mean(axis=0)  # biased, per utterance
    between = m.var(axis=0, ddof=1) if k > 1 else np.zeros_like(mu)  # unbiased spread of means
    # Expected biased variance of a batch of b utterances, then torch's n/(n-1) correction.
    n = b * frames
    return mu, (within + between * (1.0 - 1.0 / b)) * (n / max(n - 1, 1))


def _stored(variables: Mapping[str, Any], layer: str) -> tuple[np.ndarray, np.ndarray]:
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


def _observe_in_batches(variables, config, x, mode, batch_size):
    """observe_bn_stats over consecutive batches of ``batch_size`` utterances (train mode
    normalises each batch by its own statistics, as training did), concatenated."""
    b = int(x.shape[0])
    if mode != "train" or not batch_size or batch_size >= b:
        return observe_bn_stats(variables, config, x, mode)
    parts = [observe_bn_stats(variables, config, x[i:i + batch_size], mode) for i in range(0, b, batch_size)]
    return {
        k: (np.concatenate([p[k][0] for p in parts]), np.concatenate([p[k][1] for p in parts]), parts[0][k][2])
        for k in parts[0]
    }


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
        obs = _observe_in_batches(variables, config, x, mode, batch_size)
    except Exception as e:  # a candidate may not fit the input length (valid padding, pools)
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        return CandidateScore(dict(changes or {}), config, [], time.perf_counter() - t0,
                              f"{type(e).__name__}: {msg}")
    names = sorted(obs, key=_layer_order)
    combined = {k: combine(*obs[k], batch_size=batch_size) for k in names}
    layers = [compare_layer(k, combined[k], _stored(variables, k)) for k in names]
    first = names[0]
    implied = implied_input_scale(combined[first], _stored(variables, first), config.input_scale)
    folds = []
    for rows in _folds(int(x.shape[0])):
        fl = [compare_layer(k, combine(*obs[k], rows, batch_size), _stored(variables, k))
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


# ----------------------------------------------------------------------------- search


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


# ----------------------------------------------------------------------------- report


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
