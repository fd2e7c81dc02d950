"""Writing file scores as text: an aligned table, CSV, JSON or JSON lines (``rawnet2-jax score``).

:class:`ScoreWriter` streams one row per :class:`rawnet2_jax.scoring.FileScore` as soon as
it is final (flushed, so a Ctrl-C or a crash leaves complete rows);
:func:`format_file_scores` renders a finished list the same way, as one string.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from rawnet2_jax.scoring import FileScore

OUTPUT_FORMATS = ("table", "csv", "json", "jsonl")


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


CSV_COLUMNS = ["path", "spoof_probability", "log_odds", "num_windows", "duration_s", "error", "warning"]
SCORE_NOTE = "log_odds = logit[1] - logit[0], higher = more bona fide; spoof_probability = softmax[0]"


class ScoreWriter:
    """Streams :class:`FileScore` rows to a text stream as they are final, flushing each one.

    ``table`` (aligned columns; pass every path to :meth:`start` for the width), ``csv``
    (header + one row per file), ``jsonl`` (one JSON object per file and line) or ``json``
    (one document ``{"files": [...], "num_scored", "num_failed", "score", "interrupted"}``,
    completed by :meth:`close` even after an interrupt). Whatever was written before a
    Ctrl-C or a crash is complete rows.
    """

    def __init__(self, stream: Any, fmt: str = "table"):
        if fmt not in OUTPUT_FORMATS:
            raise ValueError(f"unknown format {fmt!r}; use one of {OUTPUT_FORMATS}")
        self.stream, self.fmt = stream, fmt
        self.rows: list[FileScore] = []
        self.width = 4
        self.started = False

    def _emit(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def start(self, paths: Sequence[str] = ()) -> None:
        self.width = max([4] + [len(p) for p in paths])
        self.started = True
        if self.fmt == "table":
            self._emit(f"{'file':<{self.width}}  {'P(spoof)':>8}  {'log-odds':>9}  {'windows':>7}  verdict\n")
        elif self.fmt == "csv":
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerow(CSV_COLUMNS)
            self._emit(buf.getvalue())
        elif self.fmt == "json":
            self._emit('{"files": [')

    def write(self, r: FileScore) -> None:
        if not self.started:
            self.start([r.path])
        first = not self.rows
        self.rows.append(r)
        if self.fmt == "json":
            self._emit(("" if first else ", ") + json.dumps(r.to_dict()))
        elif self.fmt == "jsonl":
            self._emit(json.dumps(r.to_dict()) + "\n")
        elif self.fmt == "csv":
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerow([
                r.path,
                "" if r.spoof_probability is None else repr(r.spoof_probability),
                "" if r.log_odds is None else repr(r.log_odds),
                r.num_windows,
                "" if r.duration_s is None else f"{r.duration_s:.3f}",
                r.error or "",
                r.warning or "",
            ])
            self._emit(buf.getvalue())
        elif r.ok:
            verdict = "spoof" if r.log_odds < 0 else "bona fide"
            if r.warning:
                verdict += f"  (warning: {r.warning})"
            self._emit(f"{r.path:<{self.width}}  {_fmt(r.spoof_probability, '8.4f')}  "
                       f"{_fmt(r.log_odds, '9.3f')}  {r.num_windows:>7}  {verdict}\n")
        else:
            self._emit(f"{r.path:<{self.width}}  {'-':>8}  {'-':>9}  {'-':>7}  FAILED\n")

    def close(self, interrupted: bool = False) -> None:
        """Finish the document (json: the closing part; table: the summary line)."""
        if not self.started:
            self.start()
        n_bad = sum(not r.ok for r in self.rows)
        if self.fmt == "json":
            tail = {"num_scored": len(self.rows) - n_bad, "num_failed": n_bad, "score": SCORE_NOTE}
            if interrupted:
                tail["interrupted"] = True
            self._emit("], " + json.dumps(tail)[1:] + "\n")
        elif self.fmt == "table":
            self._emit(
                f"{len(self.rows) - n_bad} scored, {n_bad} failed{' before the interrupt' if interrupted else ''}. "
                "log-odds = logit[1] - logit[0] (> 0: bona fide more likely; the threshold 0 is not calibrated)\n"
            )


def format_file_scores(results: Sequence[FileScore], fmt: str = "table") -> str:
    """Render results as an aligned ``table``, ``csv`` (header + one row per file), ``jsonl``
    or ``json`` (what :class:`ScoreWriter` streams, as one string)."""
    buf = io.StringIO()
    w = ScoreWriter(buf, fmt)
    w.start([r.path for r in results])
    for r in results:
        w.write(r)
    w.close()
    return buf.getvalue().rstrip("\n")
