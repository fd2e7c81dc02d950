"""Audio I/O for RawNet2: decode, downmix, resample, pad/cut, with one-line errors.

Everything the model sees goes through two functions:

* :func:`load_audio` decodes any file libsndfile reads (WAV PCM 8/16/24/32/float, FLAC,
  OGG/Vorbis/Opus, MP3 with libsndfile >= 1.1, AIFF, ...), downmixes to mono (mean of the
  channels) and resamples to ``sample_rate`` with soxr. Result: float32 in [-1, 1].
* :func:`fit_length` brings a waveform to exactly ``num_samples`` samples: cut the head
  ``x[:num_samples]`` when too long; when too short, ``"zero"`` appends zeros (the seed
  checkpoint's recipe) and ``"repeat"`` tiles the waveform (the official eurecom recipe:
  ``np.tile(x, n // len(x) + 1)[:n]``).

Bad input raises :class:`rawnet2_jax.errors.AudioError` with one line naming the file:
missing, not a file, unreadable/corrupt, empty, NaN/Inf samples, silent (all zeros;
``on_silent="warn"`` or ``"ignore"`` to accept it) and longer than ``max_seconds`` (checked
from the header *before* decoding, so a 10-hour file costs nothing).

:func:`read_audio` is :func:`load_audio` plus what the scorer needs: decode only the frames
that the first ``head_samples`` output samples depend on (a 3-hour file costs its first
seconds), the duration from the header, and a refusal of WAV files whose header promises
more audio than the file holds. :func:`degenerate_reason` names audio whose score carries no
information (too short for the model, constant, DC only, below -90 dBFS).

The dataset builders store audio as int16 PCM bytes; :func:`pcm16_to_float` /
:func:`float_to_pcm16` convert with the same scale as soundfile (x / 32768).
"""

from __future__ import annotations

import os
import warnings
from typing import Literal

import numpy as np
import soundfile as sf

from rawnet2_jax.errors import AudioError, first_line

PadMode = Literal["zero", "repeat"]
OnSilent = Literal["error", "warn", "ignore"]

DEFAULT_SAMPLE_RATE = 16000
#: Default cap on the duration of one file (seconds). ``None`` disables the check.
DEFAULT_MAX_SECONDS = 600.0
# libsndfile reports SF_COUNT_MAX frames for streams whose length is not in the header.
_UNKNOWN_FRAMES = 1 << 62
#: Audio whose RMS (or, around a DC offset, whose AC RMS) is below this level is "degenerate".
DEGENERATE_DBFS = -90.0
#: A peak above this (full scale is 1.0) is no recording the model was trained on: a float file
#: holding int16 values (peaks near 32767) or audio scaled up by mistake. Float WAVs with some
#: headroom over 1.0 stay under it.
DEGENERATE_PEAK = 2.0
_WAV_FORMATS = ("WAV", "WAVEX", "RF64")


class SilentAudioWarning(UserWarning):
    """An audio file whose samples are all zero (scored anyway with ``on_silent="warn"``)."""


class ShortAudioWarning(UserWarning):
    """A file a dataset stores although it is under 0.1 s (:func:`load_pcm16`)."""


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a 1-D (or (frames, channels)) float signal with soxr (high quality)."""
    if int(orig_sr) == int(target_sr):
        return np.asarray(x, dtype=np.float32)
    import soxr

    y = soxr.resample(np.asarray(x, dtype=np.float32), int(orig_sr), int(target_sr), quality="HQ")
    return np.asarray(y, dtype=np.float32)


def _header(path: str) -> sf._SoundFileInfo:
    if not os.path.exists(path):
        from rawnet2_jax.fsutil import missing_reason

        why = missing_reason(path)
        raise AudioError(f"{path}: audio file not found" if why == "does not exist" else f"{path} {why}")
    if not os.path.isfile(path):
        raise AudioError(f"{path}: not a regular file")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:
        return sf.info(path)
    except Exception as e:  # libsndfile: unknown format, truncated header, ...
        msg = first_line(e)
        raise AudioError(f"{path}: cannot read audio ({msg}); is it a WAV/FLAC/OGG/MP3 file?") from e


def check_waveform(x: np.ndarray, name: str, *, on_silent: OnSilent = "error", partial: bool = False,
                   channels: int = 1) -> None:
    """Raise AudioError for an empty or non-finite waveform; handle all-zero per ``on_silent``.
    ``partial``: ``x`` is the part of the file that is scored, not all of it; ``channels``: ``x``
    is the mean of that many (the messages say both, never "all" of a file they did not see)."""
    if x.size == 0:
        raise AudioError(f"{name}: audio has zero samples")
    read = f"the {x.size} read, the part scored" if partial else f"{x.size}"
    mixed = f" after averaging its {channels} channels" if channels > 1 else ""
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise AudioError(f"{name}: audio contains {bad} NaN/Inf sample(s) of {read}{mixed}; the file is corrupt")
    if on_silent != "ignore" and not np.any(x):
        which = f"the {x.size} samples read, the part scored, are" if partial else f"all {x.size} samples are"
        msg = f"{name}: audio is silent ({which} zero{mixed}); its score carries no information"
        if on_silent == "error":
            raise AudioError(msg + " (rawnet2-jax score --allow-silent scores it anyway)")
        warnings.warn(msg, SilentAudioWarning, stacklevel=3)


def load_audio(
    path: str | os.PathLike,
    *,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    on_silent: OnSilent = "error",
) -> np.ndarray:
    """Decode ``path`` to float32 mono at ``sample_rate`` Hz.

    Args:
      path: any file libsndfile reads.
      sample_rate: output rate; other rates are resampled with soxr ("HQ").
      max_seconds: refuse files longer than this (from the header, before decoding);
        ``None`` accepts any length.
      on_silent: all-zero audio: ``"error"`` (AudioError), ``"warn"`` (SilentAudioWarning)
        or ``"ignore"``.

    Returns:
      float32 array of shape (num_samples,).

    Raises:
      AudioError: one line naming the file and the problem.
    """
    x, _, _ = read_audio(path, sample_rate=sample_rate, max_seconds=max_seconds, on_silent=on_silent,
                      allow_truncated=True)
    return x


def _resampler_margin(sr: int) -> int:
    # Source frames past the last needed one that soxr "HQ" looks at: beyond this margin the
    # head of the resampled signal is bit-identical to resampling the whole file (tested).
    return 4096 + sr // 10


def _wav_declared_frames(path: str, info: sf._SoundFileInfo) -> tuple[int, int] | None:
    """``(frames the data chunk header declares, frames the file holds)`` of a PCM/float WAV,
    or None when the header cannot tell (streamed WAVs write 0 or 0xFFFFFFFF)."""
    if info.format not in ("WAV", "WAVEX"):
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block = None
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                cid, size = chunk[:4], int.from_bytes(chunk[4:], "little")
                if cid == b"fmt ":
                    fmt = f.read(size + (size & 1))
                    block = int.from_bytes(fmt[12:14], "little")
                    continue
                if cid == b"data":
                    if not block or size in (0, 0xFFFFFFFF):
                        return None
                    held = os.path.getsize(path) - f.tell()
                    return size // block, max(0, held) // block
                f.seek(size + (size & 1), os.SEEK_CUR)
    except OSError:
        return None


def read_audio(
    path: str | os.PathLike,
    *,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    on_silent: OnSilent = "error",
    head_samples: int | None = None,
    allow_truncated: bool = False,
) -> tuple[np.ndarray, float, str | None]:
    """``(waveform, duration_s, note)``: :func:`load_audio` with two more options.

    ``head_samples``: decode only the source frames that the first ``head_samples`` output
    samples depend on, and return at most that many (the length cap is still checked from
    the header). ``allow_truncated=False`` refuses a WAV whose header declares more frames
    than the file holds (with ``allow_truncated=True`` that is the ``note`` instead).
    ``duration_s`` is the whole file's (from the header when known).
    """
    path = os.fspath(path)
    info = _header(path)
    sr = int(info.samplerate)
    if sr <= 0:
        raise AudioError(f"{path}: invalid sample rate {sr} in the header")
    frames = int(info.frames)
    known = 0 <= frames < _UNKNOWN_FRAMES
    if known and frames == 0:
        raise AudioError(f"{path}: audio has zero samples")
    cap = None if max_seconds is None else int(np.ceil(max_seconds * sr))
    if cap is not None and known and frames > cap:
        raise AudioError(
            f"{path}: audio is {frames / sr:.1f} s long, over the {max_seconds:g} s limit "
            "(raise --max-seconds, 0 = no limit, or cut the file)"
        )
    note = None
    declared = _wav_declared_frames(path, info)
    if declared is not None and declared[0] > declared[1] + 1:
        note = f"the header promises {declared[0] / sr:.2f} s but the file holds {declared[1] / sr:.2f} s"
        if not allow_truncated:
            raise AudioError(
                f"{path}: {note} (a truncated copy or download?); re-copy it, or to score what is "
                "there: rawnet2-jax score --allow-degenerate"
            )
    # With an unknown length read at most cap + 1 frames (then check); a head read stops early.
    n = -1 if (known or cap is None) else cap + 1
    if head_samples is not None:
        need = int(np.ceil(head_samples * sr / sample_rate)) + (0 if sr == sample_rate else _resampler_margin(sr))
        n = need if n < 0 else min(n, need)
    try:
        data, _ = sf.read(path, frames=n, dtype="float32", always_2d=True)
    except Exception as e:
        msg = first_line(e)
        raise AudioError(f"{path}: cannot decode audio ({msg}); the file may be corrupt") from e
    if cap is not None and data.shape[0] > cap:
        raise AudioError(
            f"{path}: audio is over the {max_seconds:g} s limit (raise --max-seconds, 0 = no limit, or cut the file)"
        )
    if data.shape[0] == 0:
        raise AudioError(f"{path}: audio has zero samples")
    x = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    # Check before resampling so NaN/Inf are reported as such (soxr would smear them).
    partial = head_samples is not None and (not known or data.shape[0] < frames)
    check_waveform(x, path, on_silent=on_silent, partial=partial, channels=data.shape[1])
    x = resample(x, sr, sample_rate)
    if head_samples is not None:
        x = x[:head_samples]
    duration = frames / sr if known else data.shape[0] / sr
    return np.ascontiguousarray(x, dtype=np.float32), float(duration), note


def _dbfs(v: float) -> float:
    return 20 * np.log10(v) if v > 0 else -np.inf


def degenerate_reason(x: np.ndarray, min_samples: int = 1, sample_rate: int = DEFAULT_SAMPLE_RATE) -> str | None:
    """Why the waveform ``x`` cannot carry a meaningful score, or None.

    Shorter than ``min_samples`` (after padding the model would see mostly padding), constant
    (every sample equal, e.g. a 1e-30 "signal"), DC only (an offset with nothing above
    :data:`DEGENERATE_DBFS` around it), quieter than :data:`DEGENERATE_DBFS` overall, or with
    a peak over :data:`DEGENERATE_PEAK` (full scale is 1).
    """
    x = np.asarray(x, dtype=np.float64)
    n = int(x.size)
    if n < min_samples:
        return (f"only {n} sample(s) ({1000 * n / sample_rate:.1f} ms), shorter than the {min_samples} "
                f"({1000 * min_samples / sample_rate:.0f} ms) the model needs to see one frame")
    if n and np.ptp(x) == 0:
        return f"constant (every sample is {x[0]:.3g})"
    floor = 10 ** (DEGENERATE_DBFS / 20)
    ac, total = float(np.std(x)), float(np.sqrt(np.mean(x * x)))
    if ac < floor and total >= floor:
        return f"DC only (offset {np.mean(x):.3g}, the rest at {_dbfs(ac):.0f} dBFS)"
    if total < floor:
        return f"below {DEGENERATE_DBFS:g} dBFS (RMS {_dbfs(total):.0f} dBFS)"
    peak = float(np.max(np.abs(x))) if n else 0.0
    if peak > DEGENERATE_PEAK:
        hint = "; integer sample values in a float file? divide them by 32768" if peak > 1000 else ""
        return f"at a peak of {peak:.4g}, far beyond full scale (1.0){hint}"
    return None


def fit_length(x: np.ndarray, num_samples: int, mode: PadMode = "zero") -> np.ndarray:
    """Cut the head or pad ``x`` (1-D) to exactly ``num_samples`` samples.

    ``"zero"`` appends zeros; ``"repeat"`` tiles the waveform like the official RawNet2
    code (``np.tile(x, num_samples // len(x) + 1)[:num_samples]``). Longer input keeps its
    first ``num_samples`` samples in both modes.
    """
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"fit_length expects a 1-D waveform, got shape {x.shape}")
    n = x.shape[0]
    if n >= num_samples:
        return x[:num_samples]
    if n == 0:
        raise AudioError("cannot pad a waveform with zero samples")
    if mode == "zero":
        out = np.zeros(num_samples, dtype=x.dtype)
        out[:n] = x
        return out
    if mode == "repeat":
        return np.tile(x, num_samples // n + 1)[:num_samples]
    raise ValueError(f"unknown pad mode {mode!r}; use 'zero' or 'repeat'")


def pcm16_to_float(data: bytes | np.ndarray) -> np.ndarray:
    """int16 PCM (bytes or array) -> float32 in [-1, 1), the scale soundfile uses (x / 32768)."""
    a = np.frombuffer(data, dtype=np.int16) if isinstance(data, (bytes, bytearray, memoryview)) else data
    return a.astype(np.float32) * np.float32(1.0 / 32768.0)


def float_to_pcm16(x: np.ndarray) -> np.ndarray:
    """float in [-1, 1] -> int16 (rounded, clipped); inverse of :func:`pcm16_to_float`."""
    y = np.rint(np.asarray(x, dtype=np.float64) * 32768.0)
    return np.clip(y, -32768, 32767).astype(np.int16)


def load_pcm16(
    path: str | os.PathLike,
    *,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    on_silent: OnSilent = "warn",
) -> np.ndarray:
    """Decode to int16 mono at ``sample_rate`` (for dataset builders).

    16-bit mono files already at ``sample_rate`` (all of ASVspoof 2019 LA) are read as int16
    directly, bit-exact; anything else goes through :func:`load_audio` and is re-quantised. A
    WAV shorter than its header says is refused (``load_audio`` would read what is there).
    """
    path = os.fspath(path)
    info = _header(path)
    declared = _wav_declared_frames(path, info)
    if declared is not None and declared[0] > declared[1] + 1:  # a dataset keeps no cut-off file
        sr = int(info.samplerate)
        raise AudioError(f"{path}: the header promises {declared[0] / sr:.2f} s but the file holds "
                         f"{declared[1] / sr:.2f} s (a truncated copy or extraction?); re-copy or re-extract it")
    if info.samplerate == sample_rate and info.channels == 1 and info.subtype in ("PCM_16",):
        frames = int(info.frames)
        if frames == 0:
            raise AudioError(f"{path}: audio has zero samples")
        if max_seconds is not None and frames > max_seconds * sample_rate:
            raise AudioError(
                f"{path}: audio is {frames / sample_rate:.1f} s long, over the {max_seconds:g} s limit"
            )
        try:
            data, _ = sf.read(path, dtype="int16")
        except Exception as e:
            msg = first_line(e)
            raise AudioError(f"{path}: cannot decode audio ({msg}); the file may be corrupt") from e
        if data.size == 0:
            raise AudioError(f"{path}: audio has zero samples")
        check_waveform(data, path, on_silent=on_silent)
        return _warn_if_short(np.ascontiguousarray(data, dtype=np.int16), path, sample_rate)
    pcm = float_to_pcm16(load_audio(path, sample_rate=sample_rate, max_seconds=max_seconds, on_silent=on_silent))
    return _warn_if_short(pcm, path, sample_rate)


def _warn_if_short(pcm: np.ndarray, path: str, sample_rate: int) -> np.ndarray:
    if pcm.size < sample_rate // 10:  # no corpus utterance is this short: a cut file, or a mistake
        warnings.warn(f"{path}: only {pcm.size} samples ({1000 * pcm.size / sample_rate:.1f} ms), stored as they "
                      "are; a model sees it as mostly padding", ShortAudioWarning, stacklevel=3)
    return pcm
