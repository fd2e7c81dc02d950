"""ASVspoof 2021 LA / DF: the organisers' key and meta-label files, and where they live.

The full key packages (``LA-keys-full.tar.gz``, ``DF-keys-full.tar.gz`` from asvspoof.org)
extract to ``keys/``; the column layouts are those of the organisers' evaluation package
(github ``asvspoof-challenge/2021``, ``eval-package/config.py``), one trial per line,
space separated:

* ``keys/LA/CM/trial_metadata.txt`` (181,566 lines)::

      LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval
      speaker trial        codec transmission attack label trim subset

  ``attack`` is ``bonafide`` for bona fide trials; ``transmission`` ``-`` for codec ``none``.
* ``keys/LA/ASV/trial_metadata.txt``: the same 8 columns for the ASV trials, ``label``
  ``target`` / ``nontarget`` / ``spoof``; a trial id may repeat (one test utterance against
  several enrolled speakers), e.g. ``LA_0007-alaw-ita_tx LA_E_5013670-alaw-ita_tx alaw ...``.
* ``keys/LA/ASV/ASVTorch_Kaldi/score.txt``: ``speaker trial score``, line ``i`` scores line
  ``i`` of the ASV metadata (the organisers join the two by position; we also check that
  the speaker and trial columns agree).
* ``keys/DF/CM/trial_metadata.txt`` (611,829 lines), 13 columns::

      LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim progress traditional_vocoder - - - -
      speaker trial compression source attack label trim subset vocoder task team gender_pair language

``subset`` is ``eval``, ``progress`` or ``hidden``. Malformed lines raise :class:`DataError`
naming the file and line.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from rawnet2_jax.errors import DataError

POOLED = "Pooled"
SUBSETS = ("eval", "progress", "hidden")
CM_LABELS = ("bonafide", "spoof")
ASV_LABELS = ("target", "nontarget", "spoof")


@dataclasses.dataclass(frozen=True)
class Track:
    """One 2021 track: key-file columns and the two factors of the organisers' tables."""

    name: str  # "LA" | "DF"
    cm_columns: tuple[str, ...]
    row_factor: str  # selects spoofed trials only
    rows: tuple[str, ...]
    col_factor: str  # selects bona fide and spoofed trials
    cols: tuple[str, ...]
    has_tdcf: bool
    official_count: int

    @property
    def row_names(self) -> tuple[str, ...]:
        return (*self.rows, POOLED)

    @property
    def col_names(self) -> tuple[str, ...]:
        return (*self.cols, POOLED)


LA = Track(
    name="LA",
    cm_columns=("speaker", "trial", "codec", "transmission", "attack", "label", "trim", "subset"),
    row_factor="attack",
    rows=tuple(f"A{i:02d}" for i in range(7, 20)),
    col_factor="codec",
    cols=("none", "alaw", "pstn", "g722", "ulaw", "gsm", "opus"),
    has_tdcf=True,
    official_count=181566,
)
DF = Track(
    name="DF",
    cm_columns=("speaker", "trial", "compression", "source", "attack", "label", "trim", "subset",
                "vocoder", "task", "team", "gender_pair", "language"),
    row_factor="vocoder",
    rows=("traditional_vocoder", "waveform_concatenation", "neural_vocoder_autoregressive",
          "neural_vocoder_nonautoregressive", "unknown"),
    col_factor="compression",
    cols=("nocodec", "low_mp3", "high_mp3", "low_m4a", "high_m4a", "low_ogg", "high_ogg", "mp3m4a", "oggm4a"),
    has_tdcf=False,
    official_count=611829,
)
TRACKS = {"LA": LA, "DF": DF}
#: The ASV metadata has the LA CM layout.
ASV_COLUMNS = LA.cm_columns
ASV_SCORE_COLUMNS = ("speaker", "trial", "score")


def get_track(name: str) -> Track:
    try:
        return TRACKS[name.upper()]
    except KeyError:
        raise DataError(f"unknown ASVspoof 2021 track {name!r}; use LA or DF") from None


@dataclasses.dataclass(frozen=True)
class KeyPaths:
    cm: Path
    asv: Path | None  # LA only
    asv_scores: Path | None


def find_keys_root(path: str | os.PathLike, track: Track) -> Path:
    """The ``keys`` directory given it or a directory holding ``keys/``."""
    p = Path(path).expanduser()
    for cand in (p, p / "keys"):
        if (cand / track.name / "CM" / "trial_metadata.txt").is_file():
            return cand
    raise DataError(
        f"{p}: no {track.name} key file here (expected {track.name}/CM/trial_metadata.txt or "
        f"keys/{track.name}/CM/trial_metadata.txt); extract {track.name}-keys-full.tar.gz from asvspoof.org"
    )


def key_paths(keys_root: str | os.PathLike, track: Track) -> KeyPaths:
    root = Path(keys_root)
    if not track.has_tdcf:
        return KeyPaths(root / track.name / "CM" / "trial_metadata.txt", None, None)
    asv = root / track.name / "ASV"
    return KeyPaths(
        root / track.name / "CM" / "trial_metadata.txt", asv / "trial_metadata.txt", asv / "ASVTorch_Kaldi" / "score.txt"
    )


@dataclasses.dataclass
class KeyTable:
    """A parsed key file: one numpy string array per column, in file order."""

    path: str
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def rows(self) -> list[dict[str, str]]:
        names = list(self.columns)
        return [dict(zip(names, vals)) for vals in zip(*(self.columns[n].tolist() for n in names))]


def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise DataError(f"{path}: {what} not found; extract the organisers' key package (keys/...)")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: {what} is not a text file ({e.reason})") from None


def _check_field_counts(path: Path, lines: list[str], names: tuple[str, ...]) -> None:
    """DataError at the first non-blank line without exactly ``len(names)`` fields."""
    for i, line in enumerate(lines, start=1):
        fields = line.split()
        if fields and len(fields) != len(names):
            raise DataError(
                f"{path}:{i}: expected {len(names)} columns '{' '.join(names)}', got {len(fields)}: {line.strip()!r}"
            )


class _Columns:
    """A whitespace-separated file as one object array per column (the real files have up to
    785,281 lines: one ``str.split`` of the whole text instead of one per line)."""

    def __init__(self, path: Path, names: tuple[str, ...], what: str):
        self.path, self.names = path, names
        text = _read_text(path, what)
        self.lines = text.splitlines()
        self.linenos = [i for i, ln in enumerate(self.lines, start=1) if not ln.isspace() and ln]
        tokens = text.split()
        if len(tokens) != len(names) * len(self.linenos):
            _check_field_counts(path, self.lines, names)
        if not self.linenos:
            raise DataError(f"{path}: key file has no lines")
        k = len(names)
        self.columns = {n: np.array(tokens[j::k], dtype=object) for j, n in enumerate(names)}

    def fail(self, row: int, message: str):
        # Field counts that only balance out overall shift the columns: report that line first.
        _check_field_counts(self.path, self.lines, self.names)
        raise DataError(f"{self.path}:{self.linenos[row]}: {message}")

    def check_values(self, column: str, allowed: tuple[str, ...]) -> None:
        col = self.columns[column]
        ok = np.zeros(col.shape, dtype=bool)
        for v in allowed:
            ok |= col == v
        if not ok.all():
            row = int(np.argmin(ok))
            self.fail(row, f"{column} must be one of {', '.join(allowed)}, got {col[row]!r}")


def parse_cm_keys(path: str | os.PathLike, track: Track) -> KeyTable:
    """``{track}/CM/trial_metadata.txt``; trials must be unique."""
    path = Path(path)
    cols = _Columns(path, track.cm_columns, f"{track.name} CM key file")
    cols.check_values("label", CM_LABELS)
    cols.check_values("subset", SUBSETS)
    trials = cols.columns["trial"].tolist()
    if len(set(trials)) != len(trials):
        first: dict[str, int] = {}
        for row, trial in enumerate(trials):
            if trial in first:
                cols.fail(row, f"trial {trial} is listed twice (first on line {cols.linenos[first[trial]]})")
            first[trial] = row
    return KeyTable(os.fspath(path), cols.columns)


def parse_asv_keys(meta_path: str | os.PathLike, score_path: str | os.PathLike) -> KeyTable:
    """LA ASV metadata joined line by line with the organisers' ASV scores (column ``score``)."""
    meta_path, score_path = Path(meta_path), Path(score_path)
    meta = _Columns(meta_path, ASV_COLUMNS, "LA ASV key file")
    meta.check_values("label", ASV_LABELS)
    meta.check_values("subset", SUBSETS)
    sc = _Columns(score_path, ASV_SCORE_COLUMNS, "LA ASV score file")
    n, m = len(sc.linenos), len(meta.linenos)
    if n != m:
        raise DataError(
            f"{score_path}: {n} ASV scores but {meta_path} lists {m} ASV trials; "
            "the two files of the key package must match line by line"
        )
    same = (sc.columns["speaker"] == meta.columns["speaker"]) & (sc.columns["trial"] == meta.columns["trial"])
    if not same.all():
        row = int(np.argmin(same))
        sc.fail(row, f"'{sc.columns['speaker'][row]} {sc.columns['trial'][row]}' does not match line "
                     f"{meta.linenos[row]} of {meta_path} ('{meta.columns['speaker'][row]} "
                     f"{meta.columns['trial'][row]}'); the two files must match line by line")
    tokens = sc.columns["score"]
    try:
        scores = np.array(tokens, dtype=np.float64)
    except ValueError:
        row = next(i for i, t in enumerate(tokens) if not _is_number(t))
        sc.fail(row, f"score {tokens[row]!r} is not a number")
    if not np.all(np.isfinite(scores)):
        row = int(np.argmin(np.isfinite(scores)))
        sc.fail(row, f"score {tokens[row]!r} is not finite")
    columns = dict(meta.columns)
    columns["score"] = scores
    return KeyTable(os.fspath(meta_path), columns)


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False
