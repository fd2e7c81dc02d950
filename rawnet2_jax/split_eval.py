"""Score a whole dataset split into a score file, streaming and resumable.

:func:`score_split` runs a model over a random-access source of records (``audio``,
``label``, ``utt_id``, optional ``attack``: a TFDS split or any list of such dicts) in
source order with :func:`rawnet2_jax.data.pipeline.eval_batches`, and appends one line per
utterance to the score file as each batch finishes (flushed), so a run that is stopped
(Ctrl-C, SIGKILL, a lost machine) continues where it stopped when called again with
``resume=True``: the complete lines already in the file are kept (a torn last line is
dropped), checked against the source (same utterance ids at the same positions), and
scoring starts at the next record. The score file is the one source of truth: metrics are
computed from it afterwards, so a resumed run gives the same file as an uninterrupted one.

Formats: ``"asvspoof2021"``, the organisers' two columns ``trial score``, and
``"asvspoof2019"``, the official four columns ``utt_id attack key score``. Score =
``logit[1] - logit[0]`` (higher = more bona fide).

Progress: a tqdm bar when stderr is a terminal, otherwise one line every ``log_every``
files or ``log_seconds`` seconds (whichever comes first), so logs of batch jobs show it too.

Several processes (``processes=``, a :class:`rawnet2_jax.processes.Processes`): each one
reads and scores only its rows of every global batch (``eval_batches``' per-host shard, so
the model gets ``batch_size / process_count`` rows a call, the same number of calls on every
process), then the lines of each batch are exchanged and every process appends the whole
batch, in source order, to the score file in its own ``out_dir``: the files are equal and
hold each utterance once. Resuming continues after the primary's kept lines.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rawnet2_jax.data.pipeline import _to_str as _text  # record field (bytes / 0-d array) -> str
from rawnet2_jax.errors import DataError, UserError

SCORE_FORMATS = ("asvspoof2021", "asvspoof2019")


@dataclasses.dataclass(frozen=True)
class ScoredSplit:
    score_file: Path
    num_records: int  # lines in the score file now (= len(source) when complete)
    num_resumed: int  # lines that were already there
    seconds: float  # time spent scoring in this call


class _Offset:
    """``source[start:]`` without copying, remembering each record's attack id."""

    def __init__(self, source: Any, start: int):
        self.source, self.start = source, start
        self.attacks: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.source) - self.start

    def _note(self, rec: Any) -> Any:
        attack = rec.get("attack", "-")
        self.attacks[_text(rec.get("utt_id", ""))] = _text(attack) or "-"
        return rec

    def __getitem__(self, i: int) -> Any:
        return self._note(self.source[self.start + int(i)])

    def __getitems__(self, indices):
        idx = [self.start + int(i) for i in indices]
        getitems = getattr(self.source, "__getitems__", None)
        recs = getitems(idx) if getitems is not None else [self.source[i] for i in idx]
        return [self._note(r) for r in recs]


def _format_line(fmt: str, utt: str, label: int, attack: str, score: float) -> str:
    if fmt == "asvspoof2021":
        return f"{utt} {score!r}\n"
    key = "bonafide" if label == 1 else "spoof"
    attack = "-" if key == "bonafide" or not attack or attack == "bonafide" else attack
    return f"{utt} {attack} {key} {score!r}\n"


def _kept_lines(path: Path, source: Any) -> int:
    """Complete lines of an earlier run (torn tail removed), checked against ``source``."""
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1
    if cut != len(data):  # killed mid-line: drop the partial line
        with open(path, "r+b") as f:
            f.truncate(cut)
    lines = data[:cut].decode("utf-8", errors="replace").splitlines()
    if any(not ln.split() for ln in lines):
        raise UserError(f"{path}: blank line in a score file being resumed; delete it to start again")
    n = len(lines)
    if n > len(source):
        raise UserError(f"{path} has {n} lines but the split has {len(source)} utterances; delete it to start again")
    for pos in sorted({0, n - 1}) if n else ():
        want = _text(source[pos].get("utt_id", ""))
        got = lines[pos].split()[0]
        if got != want:
            raise UserError(
                f"{path}:{pos + 1}: trial {got} where this split has {want}: the file is from another dataset "
                "or model run; delete it (or pass --restart) to start again"
            )
    return n


def _check_run_id(path: Path, run_id: str | None, resumed: bool) -> None:
    """Refuse to continue a score file of another run; record this run's id otherwise."""
    side = path.with_name(path.name + ".run")
    if run_id is None:
        return
    if resumed and side.is_file():
        before = side.read_text(encoding="utf-8").strip()
        if before != run_id:
            raise UserError(
                f"{path} holds scores of {before}, not {run_id}; pass --restart (or another --out) to score anew"
            )
    side.write_text(run_id + "\n", encoding="utf-8")


class _Progress:
    def __init__(self, total: int, done: int, desc: str, enabled: bool, log_every: int, log_seconds: float,
                 log: Callable[[str], None]):
        self.total, self.done, self.desc, self.log = total, done, desc, log
        self.enabled, self.log_every, self.log_seconds = enabled, log_every, log_seconds
        self.bar = None
        self.t0 = self.last_t = time.monotonic()
        self.start_done = self.last_n = done
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc=desc, unit="file", dynamic_ncols=True)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if self.enabled and (self.done - self.last_n >= self.log_every or now - self.last_t >= self.log_seconds
                             or self.done == self.total):
            rate = (self.done - self.start_done) / max(now - self.t0, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            self.log(f"{self.desc}: {self.done:,} / {self.total:,} files ({100 * self.done / self.total:.1f} %), "
                     f"{rate:.1f} files/s, ETA {eta / 60:.1f} min")
            self.last_t, self.last_n = now, self.done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def score_split(
    model: Any,
    source: Any,
    *,
    batch_size: int,
    out_dir: str | os.PathLike,
    resume: bool = True,
    score_file: str = "scores.txt",
    score_format: str = "asvspoof2021",
    config: Any = None,
    progress: bool = True,
    desc: str = "scoring",
    log_every: int = 10000,
    log_seconds: float = 60.0,
    log: Callable[[str], None] | None = None,
    run_id: str | None = None,
    processes: Any = None,
) -> ScoredSplit:
    """Score every record of ``source`` into ``out_dir/score_file`` (see the module docstring).

    Args:
        model: an object with ``.logits(x: float32 (B, T)) -> (B, 2)`` and ``.config`` (e.g.
            ``load_pretrained(DIR)``), or a plain function ``x -> logits`` (then give ``config``;
            training passes ``lambda x: eval_logits(state, x)``).
        source: random-access records with ``audio``, ``label``, ``utt_id`` (+ ``attack``).
        batch_size: rows per model call; every call gets exactly this many (last one padded).
        out_dir: folder of the score file (created).
        resume: keep and continue an existing score file; ``False`` starts it anew.
        score_file: file name inside ``out_dir``.
        score_format: ``"asvspoof2021"`` (``trial score``) or ``"asvspoof2019"`` (4 columns).
        config: ``num_samples`` / ``pad_mode`` of the model input (default ``model.config``).
        progress: tqdm on a terminal, else a line every ``log_every`` files / ``log_seconds`` s.
        log: where progress lines go (default: stderr).
        run_id: what produced the scores (e.g. the checkpoint path), kept next to the score
            file (``<score_file>.run``); resuming a file written under another ``run_id`` is an
            error instead of silently mixing two models' scores.
        processes: a :class:`rawnet2_jax.processes.Processes` when several processes score
            the split together (see the module docstring); ``model`` then maps this
            process's rows to their logits (a collective model is called in lockstep).
    """
    if score_format not in SCORE_FORMATS:
        raise ValueError(f"score_format must be one of {SCORE_FORMATS}, got {score_format!r}")
    if batch_size <= 0:
        raise UserError(f"batch size must be positive, got {batch_size}")
    logits_fn = model.logits if hasattr(model, "logits") else model
    config = config if config is not None else model.config
    if len(source) == 0:
        raise DataError(f"{desc}: the split is empty")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / score_file
    primary = processes is None or processes.primary
    exchange = processes.exchange(f"score/{desc}") if processes is not None else None
    start = _agreed_start(path, source, resume and primary, run_id if primary else None, exchange)
    t0 = time.monotonic()
    if start == len(source):
        if exchange is not None:
            exchange.close()
        return ScoredSplit(path, start, start, 0.0)
    view = _Offset(source, start)
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    bar = _Progress(len(source), start, desc, progress and primary, log_every, log_seconds, log)
    try:
        batches = _shard_batches(view, config, batch_size, processes)
    except ValueError as e:  # a batch size that does not split over the processes / devices
        bar.close()
        raise UserError(f"{desc}: {e}") from None
    lines = functools.partial(_batch_lines, logits_fn, view, score_format, desc)
    done = _append_batches(path, start, batches, lines, exchange, bar, desc)
    if exchange is not None:
        exchange.close()
    return ScoredSplit(path, done, start, time.monotonic() - t0)


def _agreed_start(path: Path, source: Any, resume: bool, run_id: str | None, exchange: Any) -> int:
    """Where scoring starts: after the kept lines of ``path`` (0 without ``resume``), the
    primary's count on every process. ``run_id`` (None on the other processes) is checked
    against, then recorded beside, the score file."""
    start = _kept_lines(path, source) if resume and path.is_file() else 0
    if exchange is not None:
        start = exchange.primary_int(start)
    if run_id is not None:
        _check_run_id(path, run_id, resumed=start > 0)
    return start


def _shard_batches(view: _Offset, config: Any, batch_size: int, processes: Any):
    """``eval_batches`` over ``view``: this process's rows of every global batch."""
    from rawnet2_jax.data.pipeline import eval_batches

    pi, pc, ldc = (0, 1, 1) if processes is None else (processes.index, processes.count, processes.local_devices)
    return eval_batches(view, config, batch_size, process_index=pi, process_count=pc, local_device_count=ldc)


def _batch_lines(logits_fn: Callable, view: _Offset, score_format: str, desc: str, batch: dict, done: int) -> str:
    """The score-file lines of one batch's real rows (padding rows dropped), in batch order."""
    from rawnet2_jax.scoring import log_odds  # scoring imports this module

    mask = np.asarray(batch["mask"], dtype=bool)
    lo = log_odds(logits_fn(np.asarray(batch["audio"], dtype=np.float32)))[mask]
    if not np.all(np.isfinite(lo)):
        raise UserError(f"{desc}: the model produced non-finite logits near record {done}; "
                        "the checkpoint is broken")
    utts = [_text(u) for u in np.asarray(batch["utt_id"])[mask]]
    labels = np.asarray(batch["label"])[mask]
    return "".join(_format_line(score_format, u, int(y), view.attacks.get(u, "-"), float(s))
                   for u, y, s in zip(utts, labels, lo))


def _append_batches(path: Path, start: int, batches, lines: Callable, exchange: Any, bar: _Progress,
                    desc: str) -> int:
    """Append every batch's lines to ``path`` (after ``start`` kept lines), flushed batch by
    batch; the line count of the file at the end. Closes ``bar`` and ``batches``."""
    done = start
    try:
        with open(path, "a" if start else "w", encoding="utf-8") as f:
            for k, batch in enumerate(batches):
                text = lines(batch, done)
                if exchange is not None:  # process p holds rows [p * B / P, (p + 1) * B / P) of the batch
                    text = "".join(exchange.all_texts(k, text))
                f.write(text)
                f.flush()  # what is written survives a kill; the next run resumes after it
                n = text.count("\n")
                done += n
                bar.update(n)
    except (ValueError, KeyError) as e:  # a record the pipeline cannot use
        raise DataError(f"{desc}: unusable record ({type(e).__name__}: {str(e)[:200]}); rebuild the dataset") from None
    except OSError as e:  # a full disk, lost permissions: the lines written so far are kept
        raise UserError(f"{desc}: could not write {path} ({e.strerror or e}); free space (or fix permissions) and "
                        "re-run the same command") from None
    finally:
        bar.close()
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    return done
