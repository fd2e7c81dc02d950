"""What a run reports: JSON lines, TensorBoard, stdout, ``train.log`` and progress, on process 0.

* ``metrics.jsonl``: one record per log interval (``type: train``), epoch (``epoch``),
  final evaluation (``eval``) or error; :func:`truncate_metrics` cuts it back to a
  restored checkpoint so a resumed run never holds a record twice.
* progress: a tqdm bar per epoch on a terminal; otherwise (a batch job writing to a
  file) a line every :attr:`RunLogger.progress_seconds` with step, utterances/s, loss
  and the epoch's ETA. Every line printed also goes to ``train.log`` beside the metrics.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from rawnet2_jax.errors import TrainingError

LOG_FILE = "train.log"


def jsonable(v: Any) -> Any:
    if isinstance(v, (np.generic, jax.Array)):
        v = np.asarray(v).item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else (1e308 if v > 0 else -1e308)
    return v


def append_log_line(path: Path, msg: str) -> None:
    """One time-stamped line at the end of a ``train.log``."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + msg + "\n")


def _summary_writer_class() -> type:
    """tensorboardX's ``SummaryWriter``, imported without torch where torch is not loaded yet.

    tensorboardX's writer module tries ``import torch`` (to accept torch tensors), which costs
    1.8 s of every run's start-up wherever torch is installed; the run logs Python floats
    only. torch stays importable afterwards."""
    if "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # makes `import torch` raise ImportError
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class RunLogger:
    progress_seconds = 60.0  # between progress lines when stdout is not a terminal

    def __init__(self, metrics_path: Path, tb_dir: Path, quiet: bool = False, progress_bar: bool = False):
        self.enabled = jax.process_index() == 0
        self.quiet = quiet
        self.path = Path(metrics_path)
        self.text_path = self.path.parent / LOG_FILE
        self.progress_bar = progress_bar and self.enabled
        self._tb = None
        self._bar = None
        self._epoch = (0, 0, 0, 0, 0)
        self._last_line = (time.time(), 0)
        self._steps_seen = 0
        self._text_failed = False
        if self.enabled:
            try:
                self._tb = _summary_writer_class()(str(tb_dir))
            except Exception as e:  # pragma: no cover - tensorboardX optional at runtime
                self.warn(f"warning: TensorBoard logging off ({e})")

    # ------------------------------------------------------------------ records and lines

    def log(self, record: dict[str, Any], tb_prefix: str | None = None, tb_step: int | None = None) -> None:
        if not self.enabled:
            return
        record = {k: jsonable(v) for k, v in record.items()}
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
        except OSError as e:  # the run's record: without it the run cannot go on
            raise TrainingError(f"could not write {self.path} ({e.strerror or e}); free space (or fix permissions) "
                                "and re-run the same command: it resumes from the last checkpoint") from None
        if self._tb is not None and tb_prefix is not None:
            try:
                for k, v in record.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "step"):
                        if math.isfinite(float(v)):
                            self._tb.add_scalar(f"{tb_prefix}/{k}", float(v), tb_step)
                self._tb.flush()
            except OSError as e:  # TensorBoard is a view of metrics.jsonl: drop it, keep training
                self._tb = None
                self.warn(f"warning: TensorBoard logging off ({e.strerror or e}); metrics.jsonl has every record")

    def _line(self, msg: str, stream) -> None:
        if not self.enabled:
            return
        try:
            append_log_line(self.text_path, msg)
        except OSError as e:  # the line still reaches the terminal; say once that the file misses it
            if not self._text_failed:
                self._text_failed = True
                print(f"warning: cannot write {self.text_path} ({e.strerror or e}); its lines go to the terminal "
                      "only", file=sys.stderr, flush=True)
        if not self.quiet or stream is sys.stderr:
            if self._bar is not None:
                self._bar.clear()
            print(msg, file=stream, flush=True)

    def info(self, msg: str) -> None:
        self._line(msg, sys.stdout)

    def warn(self, msg: str) -> None:
        self._line(msg, sys.stderr)

    # ------------------------------------------------------------------ progress

    def start_epoch(self, epoch: int, epochs: int, start: int, steps_per_epoch: int, batch_size: int) -> None:
        self._epoch = (epoch, epochs, start, steps_per_epoch, batch_size)
        self._steps_seen = start
        self._last_line = (time.time(), start)
        if self.progress_bar and not self.quiet:
            from tqdm import tqdm

            self._bar = tqdm(total=steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{epochs}",
                             dynamic_ncols=True, leave=False)

    def step_done(self) -> None:
        self._steps_seen += 1
        if self._bar is not None:
            self._bar.update(1)

    def progress_due(self) -> bool:
        """True when a progress line is due (no terminal): the loop then fetches metrics."""
        return self._bar is None and time.time() - self._last_line[0] >= self.progress_seconds

    def progress(self, step: int, loss: float) -> None:
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.4f}")
            return
        if not self.enabled or time.time() - self._last_line[0] < self.progress_seconds:
            return
        epoch, epochs, _, spe, batch = self._epoch
        t_last, seen_last = self._last_line
        now = time.time()
        rate = (self._steps_seen - seen_last) / max(now - t_last, 1e-9)  # steps / s
        eta = (spe - self._steps_seen) / rate if rate > 0 else float("inf")
        self._last_line = (now, self._steps_seen)
        self._line(
            f"epoch {epoch + 1}/{epochs} step {step} ({self._steps_seen}/{spe}): {rate * batch:.1f} utt/s, "
            f"loss {loss:.4f}, epoch ETA {_duration(eta)}", sys.stdout,
        )

    def end_epoch(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        self.end_epoch()
        if self._tb is not None:
            try:
                self._tb.close()
            except OSError:  # a full disk: the events already written are kept
                pass
            self._tb = None


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# --------------------------------------------------------------------------- metrics.jsonl


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl (a torn last line of a killed run is ignored)."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def epoch_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_epoch: dict[int, dict[str, Any]] = {}
    for r in records:
        if r.get("type") == "epoch":
            by_epoch[int(r["epoch"])] = r
    return [by_epoch[e] for e in sorted(by_epoch)]


def truncate_metrics(path: str | os.PathLike, step: int, epochs_done: int) -> int:
    """Drop the records written after checkpoint ``step`` (``epochs_done`` epochs complete):
    a resumed run writes them again. Returns how many were dropped."""
    if jax.process_index() != 0:
        return 0
    path = Path(path)
    records = read_metrics(path)

    def keep(r: dict[str, Any]) -> bool:
        if r.get("type") == "epoch":
            return int(r.get("epoch", 0)) <= epochs_done
        return int(r.get("step", 0)) <= step

    kept = [r for r in records if keep(r)]
    if len(kept) != len(records):
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
        os.replace(tmp, path)
    return len(records) - len(kept)
