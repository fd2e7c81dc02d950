"""Codec and channel augmentation on the host (numpy), for the input pipeline.

ASVspoof 2021 evaluates countermeasures behind telephony codecs (LA) and lossy compression
(DF). This module degrades a 16 kHz waveform the same way by a round trip through what
libsndfile encodes in memory (``soundfile`` to and from ``io.BytesIO``), or by telephone
band-limiting (16 kHz -> 8 kHz -> 16 kHz through soxr). The output always has the input's
length and sample rate, so it drops into a fixed-shape batch.

    cfg = CodecAugConfig(prob=0.5)                     # default codec list, all available ones
    y, name = maybe_degrade(x, cfg, seed=0, epoch=3, utt_index=1234)   # name "" = untouched
    y = apply_codec(x, "gsm")                          # one named round trip

Which utterance is degraded, and by which codec, is drawn from
``np.random.default_rng([seed, epoch, utt_index])`` (``utt_index`` = the record's index in
its dataset), so it does not depend on batch position, worker count, process count or
where a run was resumed.

=============  ==========================================================================
name           round trip
=============  ==========================================================================
mp3_low        MPEG-2 Layer III, constant 16 kbit/s (LAME through libsndfile)
mp3_high       MPEG-2 Layer III, constant 160 kbit/s
vorbis         Ogg Vorbis, lowest quality (about 48 kbit/s at 16 kHz)
opus           Ogg Opus, lowest quality (about 10 kbit/s)
gsm            GSM 6.10 full rate (13 kbit/s) at 8 kHz (soxr down and up around it)
mulaw          G.711 mu-law (8-bit companded PCM) at 16 kHz (numpy tables, = libsndfile's)
alaw           G.711 A-law at 16 kHz (numpy tables, = libsndfile's)
g721           G.721 32 kbit/s ADPCM at 16 kHz
telephone      8 kHz resampling (soxr): everything above 4 kHz removed
=============  ==========================================================================

MP3 exists only when libsndfile was built with MPEG support (>= 1.1.0);
:func:`available_codecs` lists what this machine can run, and asking for a missing one is a
:class:`CodecError`.
"""

from __future__ import annotations

import dataclasses
import functools
import io

import numpy as np

from rawnet2_jax.errors import ConfigError

SR = 16000
TELEPHONE_SR = 8000


class CodecError(ConfigError):
    """An unknown or unavailable codec, or a bad probability."""


@dataclasses.dataclass(frozen=True)
class _SndfileCodec:
    format: str
    subtype: str
    compression_level: float | None = None
    bitrate_mode: str | None = None
    rate: int = SR  # encode at this rate (soxr around the round trip when != SR)
    # Leading samples to drop when the decoder returns them (no gapless info in the stream).
    delay: int = 0
    # What CodecAugConfig.cache_dir keeps: nothing (cheaper to redo), the encoded stream
    # (decoding it again is cheap), or the decoded 16-bit PCM (G.721: its decoder is as slow
    # as its encoder, and its output is exactly int16 / 32768).
    cache: str = "stream"  # "none" | "stream" | "pcm16"

    def kwargs(self) -> dict:
        kw = {}
        if self.compression_level is not None:
            kw["compression_level"] = self.compression_level
        if self.bitrate_mode is not None:
            kw["bitrate_mode"] = self.bitrate_mode
        return kw


# compression_level 0.95 with a constant bit rate gives LAME's 16 kbit/s for MPEG-2 (16 kHz);
# 1.0 is refused by libsndfile 1.2's MPEG encoder. At such low rates libsndfile 1.2.2 decodes
# LAME's 576-sample encoder delay + 529-sample decoder delay too (1,105 samples, measured by
# cross-correlation at several lengths); at 32 kbit/s and up the stream is gapless.
_MP3_DELAY = 1105
_SNDFILE_CODECS: dict[str, _SndfileCodec] = {
    "mp3_low": _SndfileCodec("MP3", "MPEG_LAYER_III", 0.95, "CONSTANT", delay=_MP3_DELAY),
    "mp3_high": _SndfileCodec("MP3", "MPEG_LAYER_III", 0.0, "CONSTANT"),
    "vorbis": _SndfileCodec("OGG", "VORBIS", 1.0),
    "opus": _SndfileCodec("OGG", "OPUS", 1.0),
    "gsm": _SndfileCodec("WAV", "GSM610", rate=TELEPHONE_SR),
    "mulaw": _SndfileCodec("WAV", "ULAW", cache="none"),
    "alaw": _SndfileCodec("WAV", "ALAW", cache="none"),
    "g721": _SndfileCodec("WAV", "G721_32", cache="pcm16"),
}
ALL_CODECS: tuple[str, ...] = (*_SNDFILE_CODECS, "telephone")


@functools.lru_cache(maxsize=1)
def available_codecs() -> tuple[str, ...]:
    """The codecs of :data:`ALL_CODECS` this libsndfile can encode (MP3 needs MPEG support)."""
    import soundfile as sf

    formats, subtypes = sf.available_formats(), sf.available_subtypes()
    ok = [n for n, c in _SNDFILE_CODECS.items() if c.format in formats and c.subtype in subtypes]
    return (*ok, "telephone")


def _check_codecs(codecs: tuple[str, ...]) -> None:
    unknown = [c for c in codecs if c not in ALL_CODECS]
    if unknown:
        raise CodecError(f"unknown codec {unknown[0]!r}; choose from {', '.join(ALL_CODECS)}")
    missing = [c for c in codecs if c not in available_codecs()]
    if missing:
        raise CodecError(f"codec {missing[0]!r} is not available in this libsndfile (no MPEG support); "
                         f"drop it or install libsndfile >= 1.1 with mpg123/LAME")


@dataclasses.dataclass(frozen=True)
class CodecAugConfig:
    """Codec augmentation of training utterances: off at ``prob`` 0.

    prob: chance that an utterance is degraded; codecs: the choices, drawn uniformly;
    cache_dir: where to keep encoded streams for later epochs (``None``: encode every time;
    :mod:`rawnet2_jax.augment.codec_cache`), the same output either way.
    """

    prob: float = 0.0
    codecs: tuple[str, ...] = ALL_CODECS
    cache_dir: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "codecs", tuple(self.codecs))
        if not 0.0 <= self.prob <= 1.0:
            raise CodecError(f"codec probability must be in [0, 1], got {self.prob}")
        if not self.codecs:
            raise CodecError("codec augmentation needs at least one codec")
        if self.prob > 0:
            _check_codecs(self.codecs)

    @property
    def enabled(self) -> bool:
        return self.prob > 0


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    import soxr

    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    """Cut or zero-pad a decoded signal back to n samples (frame codecs round the length up)."""
    if y.shape[0] >= n:
        return np.ascontiguousarray(y[:n])
    return np.pad(y, (0, n - y.shape[0]))


def _sndfile_encode(x: np.ndarray, codec: _SndfileCodec) -> bytes:
    """x: (T,) float32 at ``codec.rate`` in [-1, 1] -> the encoded file's bytes."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, x, codec.rate, format=codec.format, subtype=codec.subtype, **codec.kwargs())
    return buf.getvalue()


def _sndfile_decode(data: bytes, codec: _SndfileCodec, n: int, dtype: str = "float32") -> np.ndarray:
    """Bytes of :func:`_sndfile_encode` for an n-sample input -> (>= n,) ``dtype``, delay removed."""
    import soundfile as sf

    y, _ = sf.read(io.BytesIO(data), dtype=dtype)
    if y.ndim == 2:
        y = y[:, 0]
    if codec.delay and y.shape[0] >= n + codec.delay:
        y = y[codec.delay :]
    return y


def _spec(codec: _SndfileCodec) -> str:
    import soundfile as sf

    name = next(k for k, v in _SNDFILE_CODECS.items() if v == codec)
    return f"{name}|{codec!r}|libsndfile {sf.__libsndfile_version__}"


def _cached_decode(x: np.ndarray, codec: _SndfileCodec, cache_dir: str) -> np.ndarray:
    """:func:`_sndfile_decode` of :func:`_sndfile_encode`, through the disk cache."""
    import soundfile as sf

    from rawnet2_jax.augment import codec_cache

    def make() -> bytes:
        data = _sndfile_encode(x, codec)
        return data if codec.cache == "stream" else _sndfile_decode(data, codec, x.shape[0], "int16").tobytes()

    spec = _spec(codec)
    for _ in range(2):  # writes are atomic, yet a damaged disk entry must not break training: redo it
        data = codec_cache.cached_bytes(cache_dir, spec, x, make)
        if codec.cache == "pcm16" and len(data) % 2 == 0 and len(data) >= 2 * x.shape[0]:
            return np.frombuffer(data, np.int16).astype(np.float32) * np.float32(1 / 32768)
        if codec.cache == "stream":
            try:
                return _sndfile_decode(data, codec, x.shape[0])
            except sf.LibsndfileError:
                pass
        codec_cache.forget(cache_dir, spec, x)
    return _sndfile_decode(_sndfile_encode(x, codec), codec, x.shape[0])


def _sndfile_round_trip(x: np.ndarray, codec: _SndfileCodec, cache_dir: str | None = None) -> np.ndarray:
    # The time is the encoder's, not the in-memory file's: soundfile's BytesIO callbacks are
    # well under 1 ms of a 4 s round trip, and a real file in /dev/shm is no faster (README).
    n = x.shape[0]
    # Integer codecs saturate at full scale anyway; clipping first makes every codec agree on it.
    x = np.clip(x, -1.0, 1.0)
    if codec.rate != SR:
        x = _resample(x, SR, codec.rate)
    if cache_dir is not None and codec.cache != "none":
        y = _cached_decode(x, codec, cache_dir)
    else:
        y = _sndfile_decode(_sndfile_encode(x, codec), codec, x.shape[0])
    if codec.rate != SR:
        y = _resample(y, codec.rate, SR)
    return _fit(y, n)


# G.711 (ITU-T, 1972) companding as libsndfile 1.2 applies it to float input: the magnitude
# is scaled to 14 (mu-law) or 12 (A-law) bits and rounded half to even (``lrintf``), coded
# into a segment (3 bits) and a mantissa (4 bits), and decoded to 16-bit PCM / 32768. Both
# laws are odd-symmetric around the sign bit, so a round trip is sign(x) * table[index].
_G711_INDEX_SCALE = {"mulaw": np.float32(0.25 * 0x7FFF), "alaw": np.float32(0x7FFF / 16.0)}


def _mulaw_magnitudes() -> np.ndarray:
    """Decoded 16-bit magnitude for each 14-bit index 0..8192 (G.711 mu-law, bias 33)."""
    biased = np.minimum(np.arange(8193), 8159) + 33  # 8159 + 33 = 8192: past the last segment
    seg = np.searchsorted(np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]), biased)
    mantissa = np.where(seg > 7, 0xF, (biased >> (seg + 1)) & 0xF)  # saturate at the top code
    seg = np.minimum(seg, 7)
    return (((mantissa << 3) + 0x84) << seg) - 0x84  # decoder: segment start + mid-step


def _alaw_magnitudes() -> np.ndarray:
    """Decoded 16-bit magnitude for each 12-bit index 0..2048 (G.711 A-law)."""
    pcm13 = 2 * np.arange(2049)  # the encoder works on 13 bits
    seg = np.searchsorted(np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF]), pcm13)
    clipped = seg > 7
    seg = np.minimum(seg, 7)
    mantissa = np.where(seg < 2, pcm13 >> 1, pcm13 >> np.maximum(seg, 1)) & 0xF
    mantissa = np.where(clipped, 0xF, mantissa)
    t = (mantissa << 4) + np.where(seg == 0, 8, 0x108)
    return np.where(seg > 1, t << np.maximum(seg - 1, 0), t)


@functools.lru_cache(maxsize=2)
def _g711_table(law: str) -> np.ndarray:
    mags = _mulaw_magnitudes() if law == "mulaw" else _alaw_magnitudes()
    return (mags / 32768.0).astype(np.float32)


def g711_round_trip(x: np.ndarray, law: str) -> np.ndarray:
    """(T,) float32 through G.711 ``law`` ("mulaw" / "alaw") and back, bit-exact with
    libsndfile's WAV ULAW / ALAW round trip of the same float input (tested); x is clipped
    to [-1, 1] first."""
    x = np.clip(np.asarray(x, np.float32), -1.0, 1.0) + np.float32(0.0)  # -0.0 -> +0.0: libsndfile tests x >= 0
    index = np.abs(x)
    index *= _G711_INDEX_SCALE[law]  # float32 product, as libsndfile's
    np.rint(index, out=index)  # lrintf: half to even
    y = _g711_table(law).take(index.astype(np.int32))
    return np.copysign(y, x, out=y)


def apply_codec(x: np.ndarray, name: str, cache_dir: str | None = None) -> np.ndarray:
    """One 16 kHz (T,) waveform through codec ``name``: float32 (T,), same length.

    cache_dir: keep the encoder's output there and reuse it for the same input (same result).
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"apply_codec takes a 1-D waveform, got shape {x.shape}")
    _check_codecs((name,))
    if x.shape[0] == 0:
        return x.copy()
    if name == "telephone":
        return _fit(_resample(_resample(x, SR, TELEPHONE_SR), TELEPHONE_SR, SR), x.shape[0])
    if name in _G711_INDEX_SCALE:  # a table lookup: a tenth of libsndfile's time, same output
        return g711_round_trip(x, name)
    return _sndfile_round_trip(x, _SNDFILE_CODECS[name], cache_dir)


def draw_codec(cfg: CodecAugConfig, seed: int, epoch: int, utt_index: int) -> str:
    """The codec for one (seed, epoch, utterance), or "" when it stays clean."""
    if not cfg.enabled:
        return ""
    rng = np.random.default_rng([int(seed), int(epoch), int(utt_index)])
    hit = rng.random() < cfg.prob
    pick = int(rng.integers(len(cfg.codecs)))  # drawn either way: the pick does not depend on prob
    return cfg.codecs[pick] if hit else ""


def maybe_degrade(x: np.ndarray, cfg: CodecAugConfig, seed: int, epoch: int,
                  utt_index: int) -> tuple[np.ndarray, str]:
    """``(waveform, codec name)``; the input itself and "" when this utterance stays clean."""
    name = draw_codec(cfg, seed, epoch, utt_index)
    return (apply_codec(x, name, cfg.cache_dir), name) if name else (x, "")
