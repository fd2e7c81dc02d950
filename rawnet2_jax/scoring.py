"""Scoring audio files and evaluating a model on a dataset split (library behind the CLI).

Score convention: ``log_odds = logit[1] - logit[0]`` (higher = more bona fide; the score
written to official score files) and ``spoof_probability = softmax(logits)[0]``
``= sigmoid(-log_odds)``.

* :func:`score_files`: any audio files / directories (recursive) -> one :class:`FileScore`
  per file. Each file is decoded with :func:`rawnet2_jax.audio.load_audio` (any rate /
  channels / format libsndfile reads -> 16 kHz mono) and, as in training, cut or padded to
  ``config.num_samples`` from its start (``config.pad_mode``). With ``windows=True`` the
  whole file is covered by sliding windows of ``num_samples`` and the per-window log-odds
  are averaged. A file that cannot be scored gets ``error`` set; the others are scored.
  Without ``windows`` only the frames the first window needs are decoded. Degenerate audio
  (shorter than ``config.min_num_samples``, constant, DC only, below -90 dBFS, a WAV whose
  header promises more than it holds; see :func:`rawnet2_jax.audio.degenerate_reason`) is
  refused; with ``allow_degenerate`` it is scored and its ``warning`` says why it is suspect.
  ``on_result`` receives each file's result in input order as soon as it is final, which is
  how :class:`ScoreWriter` streams rows (a Ctrl-C keeps every finished row).
* :func:`evaluate_split`: runs the model over a TFDS split (``rawnet2_jax.data``) and writes
  the official score file, per-attack tables, DET and histogram PNGs and a JSON summary.

The model is anything with ``.logits(x: float32 (B, T)) -> (B, 2)`` and ``.config``
(``num_samples``, ``pad_mode``, optionally ``sample_rate``), e.g.
``rawnet2_jax.load_pretrained(DIR)``.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rawnet2_jax.errors import DataError, UserError

#: Extensions picked up when a directory is given (files given explicitly are always tried).
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd",
     ".caf", ".w64", ".rf64", ".wv", ".sph", ".nist", ".voc", ".mat", ".htk", ".sd2", ".paf",
     ".svx", ".sf", ".ircam", ".xi", ".avr", ".pvf", ".mpc", ".raw"}
)
DEFAULT_BATCH_SIZE = 32
OUTPUT_FORMATS = ("table", "csv", "json", "jsonl")


@dataclasses.dataclass
class FileScore:
    """The score of one file, or why it has none."""

    path: str
    log_odds: float | None = None  # logit[1] - logit[0] (averaged over windows)
    spoof_probability: float | None = None  # softmax[0] = sigmoid(-log_odds)
    num_windows: int = 0
    duration_s: float | None = None
    error: str | None = None
    warning: str | None = None  # why a forced (allow_degenerate) score is suspect

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def log_odds(logits) -> np.ndarray:
    """``logit[:, 1] - logit[:, 0]`` as float64 (higher = more bona fide)."""
    lg = np.asarray(logits, dtype=np.float64)
    if lg.ndim != 2 or lg.shape[1] != 2:
        raise ValueError(f"logits must have shape (B, 2), got {lg.shape}")
    return lg[:, 1] - lg[:, 0]


def spoof_probability(log_odds_value) -> np.ndarray | float:
    """``softmax[0]`` from the log-odds, without overflow: ``sigmoid(-log_odds)``."""
    z = np.asarray(log_odds_value, dtype=np.float64)
    out = np.where(z >= 0, np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z))), 1 / (1 + np.exp(-np.abs(z))))
    return float(out) if out.ndim == 0 else out


# ----------------------------------------------------------------------------- inputs


def expand_inputs(paths: Iterable[str | os.PathLike]) -> list[tuple[str, str | None]]:
    """Files and directories -> ``[(path, error or None)]`` in input order.

    Directories are searched recursively for files with an audio extension (sorted; hidden
    files and folders skipped); a file given explicitly is always tried, whatever its
    extension. A missing path or a directory without audio gets an error message.
    Duplicates are dropped.
    """
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            out.append((p, None))

    for raw in paths:
        p = os.fspath(raw)
        if os.path.isdir(p):
            found = []
            for root, dirs, names in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in names:
                    if not name.startswith(".") and os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS:
                        found.append(os.path.join(root, name))
            if not found:
                out.append((p, f"{p}: no audio files in this directory"))
            for f in sorted(found):
                add(f)
        elif os.path.exists(p):
            add(p)
        else:
            from rawnet2_jax.fsutil import missing_reason

            why = missing_reason(p)
            out.append((p, f"{p}: no such file or directory" if why == "does not exist" else f"{p} {why}"))
    return out


def window_starts(length: int, num_samples: int, hop: int) -> list[int]:
    """Start offsets of windows of ``num_samples`` covering ``length`` samples.

    Windows start every ``hop`` samples; a last window aligned with the end covers the tail.
    Audio not longer than one window gets one window at 0 (padded by ``fit_length``).
    """
    if length <= num_samples:
        return [0]
    starts = list(range(0, length - num_samples + 1, hop))
    if starts[-1] + num_samples < length:
        starts.append(length - num_samples)
    return starts


def segments(
    x: np.ndarray, num_samples: int, pad_mode: str, *, windows: bool = False, hop: int | None = None
) -> np.ndarray:
    """The model inputs of one waveform, float32 ``(n, num_samples)``.

    Without ``windows``: the first ``num_samples`` (padded per ``pad_mode``), as in training
    and in the official evaluation. With ``windows``: every window of
    :func:`window_starts` (``hop`` defaults to ``num_samples``, i.e. no overlap).
    """
    from rawnet2_jax.audio import fit_length

    if not windows:
        return fit_length(x, num_samples, pad_mode)[None, :].astype(np.float32, copy=False)
    hop = num_samples if hop is None else int(hop)
    if hop <= 0:
        raise UserError(f"window hop must be positive, got {hop} samples")
    starts = window_starts(x.shape[0], num_samples, hop)
    return np.stack([fit_length(x[s : s + num_samples], num_samples, pad_mode) for s in starts]).astype(
        np.float32, copy=False
    )


# ----------------------------------------------------------------------------- scoring


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _load(path: str, sample_rate: int, max_seconds: float | None, on_silent: str = "error",
          head_samples: int | None = None, allow_truncated: bool = False
          ) -> tuple[np.ndarray | None, float | None, str | None, str | None]:
    """``(waveform, duration_s, note, None)`` or ``(None, None, None, one-line error)``."""
    from rawnet2_jax.audio import read_audio

    try:
        x, duration, note = read_audio(path, sample_rate=sample_rate, max_seconds=max_seconds, on_silent=on_silent,
                                       head_samples=head_samples, allow_truncated=allow_truncated)
        return x, duration, note, None
    except UserError as e:
        msg = _one_line(e)
        return None, None, None, msg if msg.startswith(path) else f"{path}: {msg}"
    except Exception as e:  # a decoder bug must not stop the other files
        return None, None, None, f"{path}: cannot load audio ({type(e).__name__}: {_one_line(e)})"


def _prefetched(paths: Sequence[str], load: Callable[[str], Any], workers: int, depth: int) -> Iterator[Any]:
    """``load(p)`` for each path in order, ``depth`` files ahead on ``workers`` threads."""
    if workers <= 1:
        for p in paths:
            yield load(p)
        return
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending: list[concurrent.futures.Future] = []
        it = iter(paths)
        for p in it:
            pending.append(pool.submit(load, p))
            if len(pending) >= depth:
                break
        while pending:
            fut = pending.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(load, nxt))
            yield fut.result()


class _RowBatcher:
    """Feeds the rows (windows) of many files to the model in batches of exactly
    ``batch_size`` rows (a file's rows may span batches; only the final batch is padded, so
    a jitted model compiles once) and averages each file's log-odds when its rows are done."""

    def __init__(self, model: Any, batch_size: int, done: Callable[[FileScore], None]):
        self.model, self.batch_size, self.done = model, batch_size, done
        self.queue: list[list] = []  # [FileScore, rows, next row offset]
        self.queued_rows = 0
        self.parts: dict[int, list[np.ndarray]] = {}
        self.seen: dict[int, int] = {}

    def add(self, fs: FileScore, rows: np.ndarray) -> None:
        self.queue.append([fs, rows, 0])
        self.queued_rows += rows.shape[0]
        self.parts[id(fs)] = []
        self.seen[id(fs)] = 0
        while self.queued_rows >= self.batch_size:
            self._run(self.batch_size)

    def finish(self) -> None:
        while self.queued_rows > 0:
            self._run(min(self.batch_size, self.queued_rows))

    def _run(self, n: int) -> None:
        owners: list[tuple[FileScore, int]] = []
        chunks = []
        need = n
        while need:
            item = self.queue[0]
            fs, rows, off = item
            k = min(need, rows.shape[0] - off)
            chunks.append(rows[off : off + k])
            owners.append((fs, k))
            item[2] += k
            need -= k
            if item[2] == rows.shape[0]:
                self.queue.pop(0)
        self.queued_rows -= n
        x = np.concatenate(chunks)
        if n < self.batch_size:
            x = np.concatenate([x, np.zeros((self.batch_size - n, x.shape[1]), np.float32)])
        try:
            lg = np.asarray(self.model.logits(x))
            if lg.shape != (self.batch_size, 2):
                raise ValueError(f"model.logits returned shape {lg.shape}, expected ({self.batch_size}, 2)")
            lo = log_odds(lg)[:n]
            err = None
        except Exception as e:  # mark these files, keep scoring the others
            lo, err = None, f"model failed ({type(e).__name__}: {_one_line(e)})"
        i = 0
        for fs, k in owners:
            if err is not None:
                if fs.error is None:
                    fs.error = f"{fs.path}: {err}"
            else:
                self.parts[id(fs)].append(lo[i : i + k])
            i += k
            self.seen[id(fs)] += k
            if self.seen[id(fs)] == fs.num_windows:
                self._finalize(fs)

    def _finalize(self, fs: FileScore) -> None:
        parts = self.parts.pop(id(fs))
        del self.seen[id(fs)]
        if fs.error is None:
            lo = np.concatenate(parts)
            if not np.all(np.isfinite(lo)):
                fs.error = f"{fs.path}: the model produced non-finite logits for this file"
            else:
                fs.log_odds = float(np.mean(lo))
                fs.spoof_probability = float(spoof_probability(fs.log_odds))
        self.done(fs)


def score_files(
    model: Any,
    paths: Iterable[str | os.PathLike],
    *,
    windows: bool = False,
    hop_seconds: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_seconds: float | None = 600.0,
    progress: bool = True,
    on_error: Callable[[FileScore], None] | None = None,
    load_workers: int = 2,
    allow_silent: bool = False,
    allow_degenerate: bool = False,
    on_start: Callable[[list[str]], None] | None = None,
    on_result: Callable[[FileScore], None] | None = None,
) -> list[FileScore]:
    """Score audio files and directories (see the module docstring).

    Args:
        model: ``.logits`` + ``.config`` (``load_pretrained(DIR)``).
        paths: files and/or directories (searched recursively for audio extensions).
        windows: average the log-odds over sliding windows covering the whole file instead
            of scoring its first ``num_samples``.
        hop_seconds: window hop (default: the window length, no overlap).
        batch_size: rows per model call; every call gets exactly this many rows.
        max_seconds: refuse longer files (``None``: any length).
        progress: tqdm bar on stderr (only when stderr is a terminal).
        on_error: called with each failed :class:`FileScore` as soon as it fails.
        load_workers: threads decoding files ahead of the model.
        allow_silent: score all-zero files instead of reporting them as failed.
        allow_degenerate: score degenerate audio (see the module docstring; silent files
            included) with ``warning`` set instead of reporting it as failed.
        on_start: called once with every input path (directories expanded) before scoring.
        on_result: called with each result, in input order, as soon as it and all earlier
            ones are final (KeyboardInterrupt propagates; what was passed here is done).

    Returns:
        One :class:`FileScore` per input file in input order (directories expanded), bad
        paths and unreadable files included with ``error`` set.
    """
    if batch_size <= 0:
        raise UserError(f"batch size must be positive, got {batch_size}")
    if hop_seconds is not None and not hop_seconds > 0:
        raise UserError(f"window hop must be positive seconds, got {hop_seconds}")
    cfg = model.config
    num_samples = int(cfg.num_samples)
    pad_mode = str(getattr(cfg, "pad_mode", "zero"))
    sample_rate = int(getattr(cfg, "sample_rate", 16000))
    hop = None if hop_seconds is None else max(1, int(round(hop_seconds * sample_rate)))

    from rawnet2_jax.audio import degenerate_reason

    min_samples = int(getattr(cfg, "min_num_samples", 1))
    on_silent = "ignore" if (allow_silent or allow_degenerate) else "error"
    head = None if windows else num_samples

    entries = expand_inputs(paths)
    if on_start is not None:
        on_start([p for p, _ in entries])
    from tqdm.auto import tqdm

    bar = tqdm(total=len(entries), desc="scoring", unit="file", disable=None if progress else True, dynamic_ncols=True)
    results: list[FileScore] = []
    finished: set[int] = set()
    emitted = 0

    def done(fs: FileScore) -> None:
        nonlocal emitted
        bar.update(1)
        if fs.error is not None and on_error is not None:
            on_error(fs)
        finished.add(id(fs))
        while emitted < len(results) and id(results[emitted]) in finished:
            if on_result is not None:
                on_result(results[emitted])
            emitted += 1

    def load(entry):
        path, err = entry
        if err is not None:
            return path, None, None, None, err
        return (path, *_load(path, sample_rate, max_seconds, on_silent, head, allow_truncated=allow_degenerate))

    batcher = _RowBatcher(model, batch_size, done)
    try:
        for path, x, duration, note, err in _prefetched(entries, load, load_workers, depth=2 * max(1, load_workers) + 2):
            fs = FileScore(path)
            results.append(fs)
            if err is None:
                fs.duration_s = duration
                why = note or degenerate_reason(x, min_samples, sample_rate)
                forced = allow_degenerate or (allow_silent and not np.any(x))
                if why is not None and not forced:
                    err = (f"{path}: audio is {why}; its score carries no information "
                           "(to score it anyway: rawnet2-jax score --allow-degenerate)")
                elif why is not None:
                    fs.warning = f"degenerate audio: {why}"
            if err is None:
                try:
                    rows = segments(x, num_samples, pad_mode, windows=windows, hop=hop)
                except Exception as e:
                    err = f"{path}: {_one_line(e)}"
            if err is not None:
                fs.error = err
                done(fs)
                continue
            fs.num_windows = int(rows.shape[0])
            batcher.add(fs, rows)
        batcher.finish()
    finally:
        bar.close()
    return results


# ----------------------------------------------------------------------------- output


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


# ----------------------------------------------------------------------------- evaluate

from rawnet2_jax.data import DATASETS  # noqa: E402  (the one dataset registry)


def open_split(dataset: str, split: str, data_dir: str | os.PathLike) -> Any:
    """The TFDS data source of a built split, or a one-line :class:`DataError`.

    Never builds or downloads anything (so TFDS prints nothing): a dataset that is not built
    gets the build command, a split it does not have gets the list of its splits.
    """
    from rawnet2_jax.data import is_built

    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; use one of {', '.join(DATASETS)}")
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise DataError(f"data directory {data_dir} does not exist; build the dataset there first")
    build_cmd = f"python -m rawnet2_jax.data build {dataset} --manual-dir CORPUS --data-dir {data_dir}"
    if not is_built(dataset, data_dir):
        raise DataError(f"{dataset} is not built in {data_dir} (no finished build there); build it with `{build_cmd}`")
    import importlib

    import tensorflow_datasets as tfds

    importlib.import_module(f"rawnet2_jax.data.{dataset}")  # registers the builder
    try:
        builder = tfds.builder(dataset, data_dir=data_dir)
        splits = list(builder.info.splits)
    except Exception as e:
        raise DataError(
            f"cannot read {dataset} under {data_dir} ({type(e).__name__}: {_one_line(e)[:200]}); "
            f"rebuild it with `{build_cmd} --overwrite`"
        ) from None
    if split not in splits:
        raise DataError(
            f"{dataset} in {data_dir} has no split {split!r}; its splits are: {', '.join(splits)}"
        )
    try:
        return builder.as_data_source(split=split)
    except Exception as e:
        raise DataError(
            f"cannot open {dataset} split {split!r} under {data_dir} ({type(e).__name__}: {_one_line(e)[:200]}); "
            f"rebuild it with `{build_cmd} --overwrite`"
        ) from None


@dataclasses.dataclass
class EvaluationOutputs:
    report: Any  # rawnet2_jax.metrics.EvalReport
    score_file: Path
    summary_json: Path
    per_attack_txt: Path
    per_attack_csv: Path
    det_png: Path
    histogram_png: Path
    det_per_attack_png: Path | None


def evaluate_split(
    model: Any,
    *,
    dataset: str,
    split: str,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    asv_scores: str | os.PathLike | None = None,
    tdcf_version: str = "2019",
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    source: Any = None,
    extra_summary: dict | None = None,
    resume: bool = False,
) -> EvaluationOutputs:
    """Score a dataset split and write every evaluation artefact into ``out_dir``.

    Files: ``scores_{dataset}_{split}.txt`` (official format, score = logit[1] - logit[0]),
    ``per_attack.txt`` / ``per_attack.csv``, ``det.png``, ``det_per_attack.png``,
    ``score_histogram.png``, ``summary.json`` (the metrics JSON plus run information).
    ``source`` replaces the TFDS split (tests, custom data). The scores are written as
    they come by :func:`rawnet2_jax.split_eval.score_split`; ``resume=True`` continues an
    existing score file instead of starting it anew.
    """
    from rawnet2_jax import plots
    from rawnet2_jax.metrics import evaluate_scores, read_asv_scores, read_cm_scores

    asv = read_asv_scores(asv_scores) if asv_scores else None  # fail early on a bad file
    if source is None:
        source = open_split(dataset, split, data_dir)
    if len(source) == 0:
        raise DataError(f"{dataset} split {split!r} is empty")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    from rawnet2_jax.split_eval import score_split

    score_file = score_split(
        model, source, batch_size=batch_size, out_dir=out, resume=resume, score_file=f"scores_{dataset}_{split}.txt",
        score_format="asvspoof2019", progress=progress, desc=f"{dataset}/{split}",
    ).score_file
    cm = read_cm_scores(score_file)  # what a user re-evaluating the file would get
    utts = cm.utt_ids
    report = evaluate_scores(cm, asv, tdcf_version=tdcf_version)
    if asv_scores:
        name = os.path.basename(os.fspath(asv_scores)).lower()
        other = {"dev": ".eval.", "eval": ".dev."}.get(split)
        if other and other in name:
            report.warnings.append(
                f"--asv-scores {name} looks like the ASV file of another split than {split!r}; "
                "the min t-DCF needs the ASV scores of the same split"
            )

    summary = {
        "dataset": dataset,
        "split": split,
        "num_utterances": len(utts),
        "score_file": score_file.name,
        "score": "logit[1] - logit[0] (higher = more bona fide)",
        "asv_scores": os.fspath(asv_scores) if asv_scores else None,
        **(extra_summary or {}),
        **report.to_dict(),
    }
    summary_json = out / "summary.json"
    summary_json.write_text(json.dumps(summary, indent=2) + "\n")
    per_attack_txt = out / "per_attack.txt"
    per_attack_txt.write_text(report.format_table() + "\n")
    per_attack_csv = out / "per_attack.csv"
    with open(per_attack_csv, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["attack", "n_spoof", "eer_percent", "min_tdcf"])
        w.writerow(["pooled", report.n_spoof, repr(100 * report.eer), "" if report.min_tdcf is None else repr(report.min_tdcf)])
        for name, r in report.per_attack.items():
            w.writerow([name, r.n_spoof, repr(100 * r.eer), "" if r.min_tdcf is None else repr(r.min_tdcf)])

    bona, spoof = cm.bonafide_scores(), cm.spoof_scores()
    title = f"{dataset} {split}"
    det_png = Path(plots.plot_det_curve(bona, spoof, out / "det.png", label="pooled", title=f"DET, {title}"))
    det_attack = None
    if len(report.per_attack) > 1:
        curves = {"pooled": (bona, spoof)}
        curves.update({a: (bona, cm.spoof_scores(a)) for a in report.per_attack})
        det_attack = Path(plots.plot_det_curve(curves, path=out / "det_per_attack.png", title=f"DET per attack, {title}"))
    hist_png = Path(
        plots.plot_score_histogram(
            bona, spoof, out / "score_histogram.png", threshold=report.eer_threshold,
            title=f"Scores, {title} (EER threshold dashed)",
        )
    )
    return EvaluationOutputs(report, score_file, summary_json, per_attack_txt, per_attack_csv, det_png, hist_png, det_attack)
