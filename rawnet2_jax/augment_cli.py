"""``rawnet2-jax augment``: hear and see RawBoost on one file.

:func:`augment_file` is the library function (audio file in, K float32 WAVs and a PNG of
spectrograms out); :func:`main` is the thin command line over it, one flag per
:class:`~rawnet2_jax.augment.config.RawBoostConfig` field (the reference's flag name is
accepted too, e.g. ``--nBands`` for ``--n-bands``). It sits above ``rawnet2_jax.augment`` (the
augmentation) and ``rawnet2_jax.plots`` (the PNG), which know nothing of it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import struct
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rawnet2_jax.augment.config import ALGORITHMS, REFERENCE_NAMES, RawBoostConfig
from rawnet2_jax.cliutil import OneLineParser, float_range, int_range, nonneg_int, positive_int
from rawnet2_jax.fsutil import make_out_dir

MIN_SECONDS = 0.064  # two frames of the spectrogram plot (32 ms each)

HELP = """\
Apply RawBoost (Tak et al., ICASSP 2022: data boosting for raw-waveform anti-spoofing) to
one audio file and write COUNT augmented versions as float32 WAV files, plus a PNG with
the spectrograms of the input and the first few outputs.

IN is any file the scorer reads (WAV, FLAC, OGG, MP3, ...; stereo is averaged; any rate is
resampled to --fs). Output i is row i of rawboost_batch(jax.random.key(SEED), COUNT copies
of IN): the same --seed writes the same files, bit for bit. Files are written as
DIR/<stem>_rawboost<ALGO>_<i>.wav and DIR/<stem>_rawboost<ALGO>_spectrograms.png.

algorithms (--rawboost, the reference's --algo):
{algorithms}

The noise families:
  LnL  linear and non-linear convolutive noise: sum over i = 1..N_f of x^i through a random
       multi-band notch FIR (N_BANDS band-stop firwin stages; centre ~ U(MIN_F, MAX_F) Hz,
       width ~ U(MIN_BW, MAX_BW) Hz, odd taps from U(MIN_COEFF, MAX_COEFF)); gain U(MIN_G,
       MAX_G) dB for x, U(MIN_G - MIN_BIAS, MAX_G - MAX_BIAS) dB for the non-linear terms
  ISD  impulsive signal-dependent noise: beta ~ U(0, P) % of the samples get
       x += G_SD * x * (u1 * u2), u1, u2 ~ U(-1, 1)
  SSI  stationary signal-independent noise: white noise through a random notch FIR (same
       filter parameters), added at an SNR ~ U(SNR_MIN, SNR_MAX) dB

Every parameter defaults to the reference's value (TakHemlata/SSL_Anti-spoofing).

examples:
  rawnet2-jax augment clip.flac --rawboost 5 --count 4 --seed 0 -o boosted/
  rawnet2-jax augment clip.wav --rawboost 3 --snr-min 0 --snr-max 10 -o noisy/
  rawnet2-jax augment clip.wav --rawboost 1 --nBands 10 -o harsh/   # reference flag names work
"""

_FLAG_HELP = {
    "n_bands": "notch stages per filter (more = harsher)",
    "min_f": "lowest notch centre frequency, Hz",
    "max_f": "highest notch centre frequency, Hz (<= fs/2)",
    "min_bw": "narrowest notch, Hz",
    "max_bw": "widest notch, Hz",
    "min_coeff": "fewest taps per stage (made odd)",
    "max_coeff": "most taps per stage (exclusive, made odd)",
    "min_g": "lowest gain of the linear term (and SSI filter), dB",
    "max_g": "highest gain of the linear term (and SSI filter), dB",
    "min_bias_lin_nonlin": "non-linear terms' gain = linear gain range minus this (low end), dB",
    "max_bias_lin_nonlin": "non-linear terms' gain = linear gain range minus this (high end), dB",
    "n_f": "highest power of x in LnL (1 = linear only)",
    "p": "ISD: at most this %% of the samples are hit",
    "g_sd": "ISD impulse gain",
    "snr_min": "SSI: lowest SNR, dB",
    "snr_max": "SSI: highest SNR, dB",
    "fs": "sample rate the input is resampled to and the WAVs are written at, Hz",
}


class AugmentOutputs(NamedTuple):
    wavs: list[Path]
    png: Path | None


def build_parser(prog: str = "rawnet2-jax augment") -> argparse.ArgumentParser:
    algos = "\n".join(f"  {k}  {v}" for k, v in ALGORITHMS.items())
    p = OneLineParser(prog=prog, description=HELP.format(algorithms=algos),
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="IN", help="audio file")
    p.add_argument("--rawboost", type=int_range(0, 8), default=5, metavar="ALGO",
                   help="RawBoost algorithm 0..8 (default 5 = LnL -> ISD, the reference's default for LA)")
    p.add_argument("--count", type=positive_int, default=4, metavar="K", help="augmented files to write (default 4)")
    p.add_argument("--seed", type=nonneg_int, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--plot-count", type=nonneg_int, default=3, metavar="N",
                   help="outputs shown in the PNG next to the input (default 3; 0 = no PNG)")
    p.add_argument("--max-seconds", type=float_range(0.0, lo_open=True), default=600.0, metavar="S",
                   help="refuse longer inputs (default 600)")
    g = p.add_argument_group("RawBoost parameters (reference flag name in brackets)")
    for f in dataclasses.fields(RawBoostConfig):
        flag = "--" + f.name.replace("_", "-")
        ref = "--" + REFERENCE_NAMES[f.name]
        names = [flag] if ref == flag else [flag, ref]
        kind = int_range() if f.type in ("int", int) else float_range()
        g.add_argument(*names, dest=f.name, type=kind, default=f.default, metavar=f.name.upper(),
                       help=f"{_FLAG_HELP[f.name]} (default {f.default:g}) [{REFERENCE_NAMES[f.name]}]")
    return p


def config_from_args(args: argparse.Namespace) -> RawBoostConfig:
    """RawBoostConfig from the parsed flags (raises RawBoostError, one line, if inconsistent)."""
    return RawBoostConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(RawBoostConfig)})


def write_float_wav(path: str | os.PathLike, x: np.ndarray, sample_rate: int) -> None:
    """Mono float32 WAV (WAVE_FORMAT_IEEE_FLOAT + fact chunk), the same bytes for the same data.

    libsndfile would add a PEAK chunk holding the write time, so two runs with the same seed
    would differ in 4 bytes.
    """
    data = np.ascontiguousarray(x, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, sample_rate, 4 * sample_rate, 4, 32)  # IEEE float, mono, 32-bit
    chunks = (b"fmt " + struct.pack("<I", len(fmt)) + fmt
              + b"fact" + struct.pack("<II", 4, len(data) // 4)
              + b"data" + struct.pack("<I", len(data)) + data)
    try:
        with open(path, "wb") as f:
            f.write(b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks)
    except OSError:
        Path(path).unlink(missing_ok=True)  # a full disk: no empty or cut-off WAV left behind
        raise


_JITTED = {}


def _rawboost_fn():
    # One jitted function for the process: the same (algo, cfg, length) compiles once.
    if "f" not in _JITTED:
        import jax

        from rawnet2_jax.augment.rawboost import rawboost

        _JITTED["f"] = jax.jit(rawboost, static_argnums=(2, 3))
    return _JITTED["f"]


def augment_file(path: str | os.PathLike, out_dir: str | os.PathLike, *, algo: int = 5, count: int = 4,
                 seed: int = 0, cfg: RawBoostConfig = RawBoostConfig(), plot_count: int = 3,
                 max_seconds: float | None = 600.0) -> AugmentOutputs:
    """Write ``count`` RawBoost versions of ``path`` (float32 WAV at cfg.fs) and a spectrogram PNG.

    Output i = ``rawboost(jax.random.split(jax.random.key(seed), count)[i], x, algo, cfg)``
    (row i of ``rawboost_batch`` on ``count`` copies), one at a time to bound memory.

    Raises:
      AudioError: the input cannot be used (one line); RawBoostError: bad algo.
    """
    import jax

    from rawnet2_jax.audio import load_audio
    from rawnet2_jax.augment.rawboost import check_algo
    from rawnet2_jax.errors import AudioError

    algo = check_algo(algo)
    x = load_audio(path, sample_rate=cfg.fs, max_seconds=max_seconds, on_silent="ignore")
    if not np.any(x):
        raise AudioError(f"{os.fspath(path)}: audio is silent (all {x.size} samples are zero); "
                         "RawBoost of silence is silence")
    shortest = int(round(MIN_SECONDS * cfg.fs))
    if x.size < shortest:  # the filters and the spectrogram plot need a few frames
        raise AudioError(f"{os.fspath(path)}: audio has {x.size} samples, under the {shortest} ({MIN_SECONDS * 1000:g} ms) "
                         "that augmenting needs; use a longer file")
    out = make_out_dir(out_dir)
    stem = Path(path).stem
    fn = _rawboost_fn()
    keys = jax.random.split(jax.random.key(seed), count)
    wavs, shown = [], [("input", x)]
    for i in range(count):
        y = np.asarray(fn(keys[i], x, algo, cfg), dtype=np.float32)
        wav = out / f"{stem}_rawboost{algo}_{i:03d}.wav"
        write_float_wav(wav, y, cfg.fs)
        wavs.append(wav)
        if i < plot_count:
            shown.append((f"RawBoost {algo} #{i} (seed {seed})", y))
    png = None
    if plot_count > 0:
        from rawnet2_jax.plots import plot_spectrograms

        png = Path(plot_spectrograms(shown, cfg.fs, out / f"{stem}_rawboost{algo}_spectrograms.png",
                                     title=f"{Path(path).name}: RawBoost {algo} ({ALGORITHMS[algo]})"))
    return AugmentOutputs(wavs, png)


def main(argv: list[str] | None = None, prog: str = "rawnet2-jax augment") -> int:
    from rawnet2_jax.errors import UserError, first_line

    args = build_parser(prog).parse_args(argv)
    try:
        cfg = config_from_args(args)
        res = augment_file(args.input, args.out, algo=args.rawboost, count=args.count, seed=args.seed, cfg=cfg,
                           plot_count=args.plot_count, max_seconds=args.max_seconds)
    except UserError as e:
        print(f"error: {first_line(e)}", file=sys.stderr)
        return 1
    except OSError as e:  # a full disk
        from rawnet2_jax.fsutil import os_error_line

        print(f"error: {os_error_line(e, f'writing {args.out}')}", file=sys.stderr)
        return 1
    print(f"wrote {len(res.wavs)} file(s) to {args.out}: {res.wavs[0].name} .. {res.wavs[-1].name}")
    if res.png is not None:
        print(f"spectrograms: {res.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
