"""Score files: the official CM format and the organisers' ASV score format.

CM score file (one trial per line, whitespace separated; higher score = more bona fide)::

    LA_E_2834763 A11 spoof -7.2
    LA_E_1665632 - bonafide 3.9

columns ``utt_id attack_id key score``, ``attack_id`` ``-`` for bona fide, ``key``
``bonafide`` or ``spoof``. A spoof without a known attack (e.g. In-the-Wild) also has
``-``; it counts in the pooled metrics only, not in the per-attack table.

ASV score file (``ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt``)::

    bonafide target 18.20527
    A07 spoof -3.1

columns ``source key score``, ``key`` ``target``, ``nontarget`` or ``spoof``, ``source``
the attack id for spoofs.

Blank lines are skipped. Any other malformed line raises :class:`ScoreFileError` naming the
file and the line number.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Sequence

import numpy as np

from rawnet2_jax.errors import UserError

CM_KEYS = ("bonafide", "spoof")
ASV_KEYS = ("target", "nontarget", "spoof")
BONAFIDE_ATTACK = "-"


class ScoreFileError(UserError):
    """A score file that cannot be read (missing, malformed line, duplicate trial)."""


@dataclasses.dataclass
class CMScores:
    """Countermeasure scores of one trial list."""

    utt_ids: list[str]
    attacks: list[str]  # "-" for bona fide
    keys: list[str]  # "bonafide" / "spoof"
    scores: np.ndarray  # float64, higher = more bona fide

    def __len__(self) -> int:
        return len(self.utt_ids)

    @property
    def is_bonafide(self) -> np.ndarray:
        return np.array([k == "bonafide" for k in self.keys], dtype=bool)

    def bonafide_scores(self) -> np.ndarray:
        return self.scores[self.is_bonafide]

    def spoof_scores(self, attack: str | None = None) -> np.ndarray:
        """Spoof scores, of all attacks or of one attack id."""
        mask = ~self.is_bonafide
        if attack is not None:
            mask &= np.array([a == attack for a in self.attacks], dtype=bool)
        return self.scores[mask]

    def spoof_attacks(self) -> list[str]:
        """Sorted attack ids of the spoofed trials (``-``, unknown attack, left out)."""
        return sorted(
            {a for a, k in zip(self.attacks, self.keys) if k == "spoof" and a != BONAFIDE_ATTACK}
        )


@dataclasses.dataclass
class ASVScores:
    """The organisers' ASV scores (target / nontarget / spoof trials)."""

    sources: list[str]
    keys: list[str]
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)

    def of_key(self, key: str, source: str | None = None) -> np.ndarray:
        mask = np.array(
            [k == key and (source is None or s == source) for s, k in zip(self.sources, self.keys)],
            dtype=bool,
        )
        return self.scores[mask]


def _open_lines(path) -> list[str]:
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ScoreFileError(f"{path} is a directory; give the path of a score file")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        raise ScoreFileError(f"score file {path} does not exist") from None
    except UnicodeDecodeError:
        raise ScoreFileError(f"{path} is not a text score file (not UTF-8)") from None
    except OSError as e:
        raise ScoreFileError(f"cannot read score file {path}: {e.strerror or e}") from None


def _parse_score(token: str, where: str, line: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise ScoreFileError(f"{where}: score {token!r} is not a number: {line.strip()!r}") from None
    if not math.isfinite(value):
        raise ScoreFileError(f"{where}: score is {token}, scores must be finite: {line.strip()!r}")
    return value


def parse_cm_scores(lines: Iterable[str], source: str = "<scores>") -> CMScores:
    """Parse CM score lines; ``source`` names the file in error messages."""
    utt_ids, attacks, keys, scores = [], [], [], []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{source}:{lineno}"
        if len(fields) != 4:
            raise ScoreFileError(
                f"{where}: expected 4 columns 'utt_id attack_id key score', got {len(fields)}: "
                f"{line.strip()!r}"
            )
        utt, attack, key, token = fields
        if key not in CM_KEYS:
            raise ScoreFileError(
                f"{where}: key {key!r} must be 'bonafide' or 'spoof' "
                f"(columns 'utt_id attack_id key score'): {line.strip()!r}"
            )
        if utt in first_line:
            raise ScoreFileError(f"{where}: trial {utt} already scored on line {first_line[utt]}")
        first_line[utt] = lineno
        utt_ids.append(utt)
        attacks.append(BONAFIDE_ATTACK if key == "bonafide" else attack)
        keys.append(key)
        scores.append(_parse_score(token, where, line))
    if not utt_ids:
        raise ScoreFileError(f"{source} has no score lines")
    return CMScores(utt_ids, attacks, keys, np.asarray(scores, dtype=np.float64))


def read_cm_scores(path) -> CMScores:
    """Read a CM score file (``utt_id attack_id key score``)."""
    return parse_cm_scores(_open_lines(path), os.fspath(path))


def parse_asv_scores(lines: Iterable[str], source: str = "<asv scores>") -> ASVScores:
    """Parse ASV score lines (``source key score``)."""
    sources, keys, scores = [], [], []
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{source}:{lineno}"
        if len(fields) != 3:
            raise ScoreFileError(
                f"{where}: expected 3 columns 'source key score' of an ASV score file, "
                f"got {len(fields)}: {line.strip()!r}"
            )
        src, key, token = fields
        if key not in ASV_KEYS:
            raise ScoreFileError(
                f"{where}: ASV key {key!r} must be 'target', 'nontarget' or 'spoof': {line.strip()!r}"
            )
        sources.append(src)
        keys.append(key)
        scores.append(_parse_score(token, where, line))
    if not keys:
        raise ScoreFileError(f"{source} has no score lines")
    return ASVScores(sources, keys, np.asarray(scores, dtype=np.float64))


def read_asv_scores(path) -> ASVScores:
    """Read an organisers' ASV score file (``source key score``)."""
    return parse_asv_scores(_open_lines(path), os.fspath(path))


def format_score(score: float) -> str:
    """Shortest text that reads back as the same float64."""
    return repr(float(score))


def write_cm_scores(
    path,
    utt_ids: Sequence[str],
    attacks: Sequence[str],
    keys: Sequence[str],
    scores: Sequence[float],
) -> None:
    """Write the official 4-column CM score file; ``attacks`` may hold ``-`` or ``None``
    for bona fide trials. ``keys`` are ``bonafide``/``spoof`` (or label ints 1/0)."""
    if not (len(utt_ids) == len(attacks) == len(keys) == len(scores)):
        raise ValueError("utt_ids, attacks, keys and scores must have the same length")
    lines = []
    for utt, attack, key, score in zip(utt_ids, attacks, keys, scores):
        if not isinstance(key, str):
            key = "bonafide" if int(key) == 1 else "spoof"
        if key not in CM_KEYS:
            raise ValueError(f"key {key!r} of {utt} must be 'bonafide' or 'spoof'")
        if key == "bonafide" or not attack:
            attack = BONAFIDE_ATTACK
        if any(c.isspace() for c in str(utt) + str(attack)) or not str(utt):
            raise ValueError(f"utterance / attack ids must be non-empty without spaces: {utt!r} {attack!r}")
        lines.append(f"{utt} {attack} {key} {format_score(score)}\n")
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(lines)
