"""Scoring audio files (library behind ``rawnet2-jax score``) and the score convention.

Score convention: ``log_odds = logit[1] - logit[0]`` (higher = more bona fide; the score
written to official score files) and ``spoof_probability = softmax(logits)[0]``
``= sigmoid(-log_odds)``.

:func:`score_files`: any audio files / directories (recursive) -> one :class:`FileScore`
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
how :class:`rawnet2_jax.score_output.ScoreWriter` streams rows (a Ctrl-C keeps every
finished row).

Neighbours: :mod:`rawnet2_jax.score_output` writes the results (table / csv / json /
jsonl); :mod:`rawnet2_jax.split_eval` scores a whole dataset split into a score file;
:mod:`rawnet2_jax.evaluate` turns a split's score file into metrics tables and plots.

The model is anything with ``.logits(x: float32 (B, T)) -> (B, 2)`` and ``.config``
(``num_samples``, ``pad_mode``, optionally ``sample_rate``), e.g.
``rawnet2_jax.load_pretrained(DIR)``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from rawnet2_jax.errors import UserError, first_line, is_out_of_memory

#: Extensions picked up when a directory is given (files given explicitly are always tried).
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd",
     ".caf", ".w64", ".rf64", ".wv", ".sph", ".nist", ".voc", ".mat", ".htk", ".sd2", ".paf",
     ".svx", ".sf", ".ircam", ".xi", ".avr", ".pvf", ".mpc", ".raw"}
)
DEFAULT_BATCH_SIZE = 32


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
        msg = first_line(e)
        return None, None, None, msg if msg.startswith(path) else f"{path}: {msg}"
    except Exception as e:  # a decoder bug must not stop the other files
        return None, None, None, f"{path}: cannot load audio ({type(e).__name__}: {first_line(e)})"


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
            lo, err = None, f"model failed ({type(e).__name__}: {first_line(e)})"
            if is_out_of_memory(e):
                err += f"; out of memory at --batch-size {self.batch_size}: lower --batch-size"
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
                fs.error = (f"{fs.path}: the model produced non-finite logits for this file (when every file "
                            "fails so, the model's weights are damaged: re-convert or re-copy it)")
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
    cut = _Cut.of(model.config, windows, hop_seconds, allow_silent, allow_degenerate)
    entries = expand_inputs(paths)
    if on_start is not None:
        on_start([p for p, _ in entries])
    from tqdm.auto import tqdm

    bar = tqdm(total=len(entries), desc="scoring", unit="file", disable=None if progress else True, dynamic_ncols=True)
    in_order = _InOrder(on_result)

    def done(fs: FileScore) -> None:
        bar.update(1)
        if fs.error is not None and on_error is not None:
            on_error(fs)
        in_order.finished(fs)

    def load(entry):
        path, err = entry
        if err is not None:
            return path, None, None, None, err
        return (path, *_load(path, cut.sample_rate, max_seconds, cut.on_silent, cut.head,
                             allow_truncated=allow_degenerate))

    batcher = _RowBatcher(model, batch_size, done)
    try:
        for path, x, duration, note, err in _prefetched(entries, load, load_workers, depth=2 * max(1, load_workers) + 2):
            fs = in_order.add(FileScore(path, duration_s=duration))
            rows = None if err is not None else cut.rows(fs, x, note)
            if rows is None:
                fs.error = fs.error or err
                done(fs)
                continue
            fs.num_windows = int(rows.shape[0])
            batcher.add(fs, rows)
        batcher.finish()
    finally:
        bar.close()
    return in_order.results


@dataclasses.dataclass(frozen=True)
class _Cut:
    """How :func:`score_files` turns a decoded file into model rows (or refuses it)."""

    num_samples: int
    pad_mode: str
    sample_rate: int
    min_samples: int
    windows: bool
    hop: int | None  # samples between window starts (None: the window length)
    allow_silent: bool
    allow_degenerate: bool

    @classmethod
    def of(cls, cfg: Any, windows: bool, hop_seconds: float | None, allow_silent: bool,
           allow_degenerate: bool) -> _Cut:
        sample_rate = int(getattr(cfg, "sample_rate", 16000))
        hop = None if hop_seconds is None else max(1, int(round(hop_seconds * sample_rate)))
        return cls(int(cfg.num_samples), str(getattr(cfg, "pad_mode", "zero")), sample_rate,
                   int(getattr(cfg, "min_num_samples", 1)), windows, hop, allow_silent, allow_degenerate)

    @property
    def on_silent(self) -> str:
        return "ignore" if (self.allow_silent or self.allow_degenerate) else "error"

    @property
    def head(self) -> int | None:
        """Samples to decode: the first window only, unless windows cover the whole file."""
        return None if self.windows else self.num_samples

    def rows(self, fs: FileScore, x: np.ndarray, note: str | None) -> np.ndarray | None:
        """``(n, num_samples)`` rows of ``x``, or None with ``fs.error`` set; a forced degenerate
        file gets ``fs.warning``."""
        from rawnet2_jax.audio import degenerate_reason

        why = note or degenerate_reason(x, self.min_samples, self.sample_rate)
        forced = self.allow_degenerate or (self.allow_silent and not np.any(x))
        if why is not None and not forced:
            fs.error = (f"{fs.path}: audio is {why}; its score carries no information "
                        "(to score it anyway: rawnet2-jax score --allow-degenerate)")
            return None
        if why is not None:
            fs.warning = f"degenerate audio: {why}"
        try:
            return segments(x, self.num_samples, self.pad_mode, windows=self.windows, hop=self.hop)
        except Exception as e:
            fs.error = f"{fs.path}: {first_line(e)}"
            return None


class _InOrder:
    """The results in input order; ``on_result`` gets each one as soon as it and every earlier
    one are final (files finish out of order: a short file overtakes a long one in the batcher)."""

    def __init__(self, on_result: Callable[[FileScore], None] | None):
        self.on_result = on_result
        self.results: list[FileScore] = []
        self._final: set[int] = set()
        self._emitted = 0

    def add(self, fs: FileScore) -> FileScore:
        self.results.append(fs)
        return fs

    def finished(self, fs: FileScore) -> None:
        self._final.add(id(fs))
        while self._emitted < len(self.results) and id(self.results[self._emitted]) in self._final:
            if self.on_result is not None:
                self.on_result(self.results[self._emitted])
            self._emitted += 1
