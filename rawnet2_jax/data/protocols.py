"""Parsers for the ASVspoof 2019 LA and In-the-Wild metadata, and the LA directory layout.

Formats (exactly those of the distributed corpora):

* CM protocol ``ASVspoof2019.LA.cm.{train.trn,dev.trl,eval.trl}.txt``, one utterance per
  line, 5 space-separated fields: ``speaker utt_id - attack key``, e.g.
  ``LA_0079 LA_T_1004644 - A01 spoof`` (attack ``-`` for bona fide).
* ASV scores ``ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt``: ``source key score``,
  key in ``target`` / ``nontarget`` / ``spoof``.
* In-the-Wild ``meta.csv``: header ``file,speaker,label``; label ``bona-fide`` or ``spoof``.

Labels follow the project convention: 0 = spoof, 1 = bona fide.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path

import numpy as np

from rawnet2_jax.errors import DataError

SPOOF, BONAFIDE = 0, 1
LABEL_NAMES = ("spoof", "bonafide")
LA_SPLITS = ("train", "dev", "eval")
_PROTOCOL_SUFFIX = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}
#: Utterance counts of the official ASVspoof 2019 LA protocols (total, bona fide).
LA_OFFICIAL_COUNTS = {"train": (25380, 2580), "dev": (24844, 2548), "eval": (71237, 7355)}
IN_THE_WILD_OFFICIAL_COUNT = 31779


@dataclasses.dataclass(frozen=True)
class CmEntry:
    """One line of a CM protocol."""

    speaker: str
    utt_id: str
    attack: str  # "-" for bona fide, else "A01".."A19"
    key: str  # "bonafide" | "spoof"

    @property
    def label(self) -> int:
        return BONAFIDE if self.key == "bonafide" else SPOOF


@dataclasses.dataclass(frozen=True)
class WildEntry:
    """One row of In-the-Wild ``meta.csv``."""

    file: str
    speaker: str
    key: str  # "bonafide" | "spoof" (normalised from "bona-fide")

    @property
    def label(self) -> int:
        return BONAFIDE if self.key == "bonafide" else SPOOF

    @property
    def utt_id(self) -> str:
        return os.path.splitext(self.file)[0]


@dataclasses.dataclass(frozen=True)
class AsvScores:
    """ASV scores split by key (arrays of float64)."""

    target: np.ndarray
    nontarget: np.ndarray
    spoof: np.ndarray


def _read_lines(path: str | os.PathLike, what: str) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()  # a BOM (Windows editors) is not text
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: {what} is not a text file ({e.reason})") from e


def parse_cm_protocol(path: str | os.PathLike) -> list[CmEntry]:
    """Parse a CM protocol file; DataError with the line number on any malformed line."""
    entries: list[CmEntry] = []
    seen: dict[str, int] = {}
    for i, line in enumerate(_read_lines(path, "CM protocol file"), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise DataError(
                f"{path}:{i}: expected 5 fields 'speaker utt_id - attack key', got {len(fields)}: {line.strip()!r}"
            )
        speaker, utt, _, attack, key = fields
        if key not in ("bonafide", "spoof"):
            raise DataError(f"{path}:{i}: key must be 'bonafide' or 'spoof', got {key!r}")
        if key == "bonafide" and attack != "-":
            # The official files use '-' for bona fide; tolerate but keep the data honest.
            raise DataError(f"{path}:{i}: bona fide line has attack {attack!r}, expected '-'")
        if key == "spoof" and attack == "-":  # the per-attack tables would drop it silently
            raise DataError(f"{path}:{i}: spoof line has no attack id ('-'); give its attack (A01-A19)")
        if utt in seen:
            raise DataError(f"{path}:{i}: utterance {utt} is listed twice (first on line {seen[utt]})")
        seen[utt] = i
        entries.append(CmEntry(speaker=speaker, utt_id=utt, attack=attack, key=key))
    if not entries:
        raise DataError(f"{path}: CM protocol file has no entries")
    return entries


def parse_asv_scores(path: str | os.PathLike) -> AsvScores:
    """Parse an organisers' ASV score file (``source key score`` lines)."""
    groups: dict[str, list[float]] = {"target": [], "nontarget": [], "spoof": []}
    for i, line in enumerate(_read_lines(path, "ASV score file"), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3 or fields[1] not in groups:
            raise DataError(f"{path}:{i}: expected 'source target|nontarget|spoof score', got {line.strip()!r}")
        try:
            groups[fields[1]].append(float(fields[2]))
        except ValueError as e:
            raise DataError(f"{path}:{i}: score {fields[2]!r} is not a number") from e
    return AsvScores(**{k: np.asarray(v, dtype=np.float64) for k, v in groups.items()})


def parse_in_the_wild_meta(path: str | os.PathLike) -> list[WildEntry]:
    """Parse In-the-Wild ``meta.csv`` (columns file, speaker, label)."""
    lines = _read_lines(path, "In-the-Wild meta.csv")
    reader = csv.reader(lines)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DataError(f"{path}: meta.csv is empty") from None
    need = ("file", "speaker", "label")
    if any(h not in header for h in need):
        raise DataError(f"{path}: meta.csv header must contain file,speaker,label; got {','.join(header)}")
    ix = [header.index(h) for h in need]
    out: list[WildEntry] = []
    seen: set[str] = set()
    for i, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < len(header):
            raise DataError(f"{path}:{i}: expected {len(header)} columns, got {len(row)}")
        f, spk, lab = (row[j].strip() for j in ix)
        norm = lab.lower().replace("-", "").replace("_", "")
        if norm not in ("bonafide", "spoof"):
            raise DataError(f"{path}:{i}: label must be 'bona-fide' or 'spoof', got {lab!r}")
        entry = WildEntry(file=f, speaker=spk, key=norm)
        if os.path.isabs(f) or ".." in Path(f).parts:
            raise DataError(f"{path}:{i}: file {f} is not inside the corpus (give its path relative to meta.csv's folder)")
        if entry.utt_id in seen:  # score files are keyed by it: two files, one id, would collide
            raise DataError(f"{path}:{i}: utterance {entry.utt_id} ({f}) is listed twice (ids are file names "
                            "without their extension)")
        seen.add(entry.utt_id)
        out.append(entry)
    if not out:
        raise DataError(f"{path}: meta.csv has no entries")
    return out


# ---------------------------------------------------------------------------------------
# ASVspoof 2019 LA layout
# ---------------------------------------------------------------------------------------


def find_la_root(path: str | os.PathLike) -> Path:
    """Return the ``LA`` directory given it or a directory containing it."""
    p = Path(path).expanduser()
    for cand in (p, p / "LA"):
        if (cand / "ASVspoof2019_LA_cm_protocols").is_dir():
            return cand
    raise DataError(
        f"{p}: no ASVspoof 2019 LA tree here (expected LA/ASVspoof2019_LA_cm_protocols/); "
        "pass the directory that contains the extracted LA/ folder"
    )


def la_protocol_path(la_root: str | os.PathLike, split: str) -> Path:
    _check_split(split)
    return Path(la_root) / "ASVspoof2019_LA_cm_protocols" / f"ASVspoof2019.LA.cm.{_PROTOCOL_SUFFIX[split]}.txt"


def la_audio_dir(la_root: str | os.PathLike, split: str) -> Path:
    _check_split(split)
    return Path(la_root) / f"ASVspoof2019_LA_{split}" / "flac"


def la_audio_path(la_root: str | os.PathLike, split: str, utt_id: str) -> Path:
    return la_audio_dir(la_root, split) / f"{utt_id}.flac"


def la_asv_scores_path(la_root: str | os.PathLike, split: str) -> Path:
    if split not in ("dev", "eval"):
        raise ValueError(f"ASV scores exist for dev and eval only, not {split!r}")
    return Path(la_root) / "ASVspoof2019_LA_asv_scores" / f"ASVspoof2019.LA.asv.{split}.gi.trl.scores.txt"


def _check_split(split: str) -> None:
    if split not in LA_SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(LA_SPLITS)}")


def check_files_exist(paths: list[Path], what: str) -> None:
    """DataError naming the first missing file and how many are missing."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{what}: missing audio file {missing[0]}{more}; is the corpus fully extracted?")


def count_summary(entries: list[CmEntry] | list[WildEntry]) -> tuple[int, int]:
    """(total, bona fide) of a parsed protocol."""
    return len(entries), sum(e.label == BONAFIDE for e in entries)
