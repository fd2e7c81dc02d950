"""EER per recording condition (codec, channel) from a side file of ``utt_id condition`` lines.

The demo corpus's ``--eval-channel codecs`` variant writes such a file
(``ASVspoof2019.LA.cm.eval.channel.txt``); ``rawnet2-jax metrics SCORES --conditions FILE``
prints the table. Within a condition, its bona fide trials are compared with its spoofs
(pooled, then per attack), as the ASVspoof 2021 LA tables do per codec.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from rawnet2_jax.metrics.eer import MetricsError, compute_eer
from rawnet2_jax.metrics.scorefile import CMScores


def parse_conditions(lines, source: str = "<conditions>") -> dict[str, str]:
    """``utt_id condition`` lines -> {utt_id: condition}; blank lines skipped."""
    out: dict[str, str] = {}
    for no, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise MetricsError(f"{source}:{no}: expected 'utt_id condition', got {line.strip()!r}")
        if parts[0] in out:
            raise MetricsError(f"{source}:{no}: utterance {parts[0]} listed twice")
        out[parts[0]] = parts[1]
    if not out:
        raise MetricsError(f"{source} lists no utterances")
    return out


def read_conditions(path) -> dict[str, str]:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise MetricsError(f"cannot read conditions file {path}: {e.strerror or e}") from None
    return parse_conditions(text.splitlines(), str(path))


@dataclasses.dataclass
class ConditionResult:
    n_bonafide: int
    n_spoof: int
    eer: float | None  # fraction; None without both classes
    per_attack: dict[str, float | None]  # fraction


def _eer(bona: np.ndarray, spoof: np.ndarray) -> float | None:
    return float(compute_eer(bona, spoof)[0]) if bona.size and spoof.size else None


def condition_eers(cm: CMScores, conditions: dict[str, str]) -> dict[str, ConditionResult]:
    """{condition: result}, conditions in first-seen order of the score file."""
    missing = [u for u in cm.utt_ids if u not in conditions]
    if missing:
        raise MetricsError(f"{len(missing)} scored trials have no condition (first: {missing[0]}); "
                           "use the conditions file of the same split")
    cond = np.array([conditions[u] for u in cm.utt_ids], dtype=object)
    attacks = np.array(cm.attacks, dtype=object)
    bona_mask = cm.is_bonafide
    out: dict[str, ConditionResult] = {}
    for c in dict.fromkeys(cond):
        here = cond == c
        bona = cm.scores[here & bona_mask]
        spoof_mask = here & ~bona_mask
        per = {a: _eer(bona, cm.scores[spoof_mask & (attacks == a)]) for a in cm.spoof_attacks()}
        out[str(c)] = ConditionResult(int(bona.size), int(spoof_mask.sum()), _eer(bona, cm.scores[spoof_mask]), per)
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def format_conditions(results: dict[str, ConditionResult]) -> str:
    """A table: condition, counts, pooled EER and EER per attack (percent)."""
    attacks = sorted({a for r in results.values() for a in r.per_attack})
    width = max(9, *(len(c) for c in results))
    head = f"{'condition':<{width}}  {'bona':>5}  {'spoof':>5}  {'EER (%)':>8}" + "".join(f"  {a:>6}" for a in attacks)
    rows = [head]
    for c, r in results.items():
        rows.append(f"{c:<{width}}  {r.n_bonafide:>5}  {r.n_spoof:>5}  {_pct(r.eer):>8}"
                    + "".join(f"  {_pct(r.per_attack.get(a)):>6}" for a in attacks))
    return "\n".join(rows)


def conditions_to_dict(results: dict[str, ConditionResult]) -> dict:
    """JSON-ready: EERs in percent (null without both classes)."""
    pct = lambda v: None if v is None else 100.0 * v  # noqa: E731
    return {c: {"n_bonafide": r.n_bonafide, "n_spoof": r.n_spoof, "eer": pct(r.eer),
                "per_attack": {a: pct(v) for a, v in r.per_attack.items()}} for c, r in results.items()}
