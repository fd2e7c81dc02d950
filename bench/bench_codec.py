"""Codec augmentation in the input pipeline: training utterances/s with and without it.

    .venv/bin/python bench/bench_codec.py [--threads 2] [--preset caa_rawnet2] [--seconds 10]
        [--prob 0.5] [--json bench_codec.json]

An in-memory source of int16 records (demo-corpus speech, 4 s +-25 %) feeds ``train_batches``
cut to the preset's ``num_samples``; the process is pinned to ``--threads`` CPUs and grain
prepares batches in as many threads. Rows: the pipeline without codecs, with
``CodecAugConfig(prob=P)`` (every available codec), with P over ``--cheap-codecs`` only, and the time of one round trip per codec
on one cut utterance (CPU ms: the whole round trip; for libsndfile codecs also its encoder
alone, its decoder alone, and the round trip through a file in /dev/shm instead of
io.BytesIO; for G.711 also libsndfile's round trip, which the numpy tables replace), and the
ceiling that codec CPU time alone puts on utt/s at P. ``--codec-cache`` rows: the pipeline
over ``--cache-utts`` records once every (record, codec) pair has been encoded into a
temporary cache, and each codec's round trip from a warm cache. Goal: >= 1,000 utt/s on 2 cores at
P = 0.5.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def _records(n: int, seconds: float):
    import numpy as np

    from rawnet2_jax.data.demo import DemoConfig, _speakers, synthesize

    spk = [s for _, s in _speakers(0, DemoConfig())]
    out = []
    for i in range(n):
        rng = np.random.default_rng([0, i])
        x = synthesize(rng, spk[i % len(spk)], int(16000 * seconds * rng.uniform(0.75, 1.25)), "-")
        out.append({"audio": (x * 32767).astype(np.int16), "label": 1, "utt_id": f"U{i}"})
    return out


def _rate(it, seconds: float) -> tuple[float, float]:
    """(utterances/s wall, CPU ms of this process per utterance): the second, over all its
    threads, is what the rate would be on idle cores: ``1000 * cores / cpu_ms``."""
    next(it)  # warm-up: threads started, first batch
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        n += int(next(it)["mask"].sum())
    return n / (time.perf_counter() - t0), 1e3 * (time.process_time() - c0) / n


def _cpu_ms(fn) -> float:
    return 1e3 * common.time_fn(fn, warmup=1, min_reps=5, max_seconds=3.0)["cpu_median_s"]


def _codec_rows(x) -> list[dict]:
    """One round trip per codec (wall and CPU), and where libsndfile's time goes: its encoder,
    its decoder, and the same through a real file in /dev/shm instead of io.BytesIO."""
    import os

    import numpy as np
    import soundfile as sf

    from rawnet2_jax.augment import codec as C

    rows = []
    for name in C.available_codecs():
        t = common.time_fn(lambda: C.apply_codec(x, name), warmup=1, min_reps=5, max_seconds=3.0)
        row = {"what": f"codec {name}", "ms_per_utt": 1e3 * t["median_s"], "cpu_ms": 1e3 * t["cpu_median_s"]}
        with tempfile.TemporaryDirectory() as cache:
            C.apply_codec(x, name, cache)
            row["cached_cpu_ms"] = _cpu_ms(lambda: C.apply_codec(x, name, cache))
        spec = C._SNDFILE_CODECS.get(name)
        if spec is not None:
            xs = np.clip(x, -1, 1) if spec.rate == C.SR else C._resample(np.clip(x, -1, 1), C.SR, spec.rate)
            data = C._sndfile_encode(xs, spec)
            row["encode_cpu_ms"] = _cpu_ms(lambda: C._sndfile_encode(xs, spec))
            row["decode_cpu_ms"] = _cpu_ms(lambda: C._sndfile_decode(data, spec, xs.shape[0]))
            with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as d:
                path = os.path.join(d, "x")

                def via_file():
                    sf.write(path, xs, spec.rate, format=spec.format, subtype=spec.subtype, **spec.kwargs())
                    sf.read(path, dtype="float32")

                row["file_cpu_ms"] = _cpu_ms(via_file)
            if name in ("mulaw", "alaw"):
                row["libsndfile_cpu_ms"] = _cpu_ms(lambda: C._sndfile_round_trip(x, spec))
        rows.append(row)
        extra = "".join(f", {k[:-7]} {v:.2f}" for k, v in row.items() if k.endswith("_cpu_ms"))
        print(f"{row['what']:40} {row['ms_per_utt']:9.2f} ms/utt ({row['cpu_ms']:.2f} ms CPU{extra})", flush=True)
    return rows


def _warm_cache_row(src, cfg, args, cache: str, host: dict) -> dict:
    """The all-codec pipeline over ``src`` once every (record, codec) pair is in ``cache``."""
    import numpy as np

    from rawnet2_jax.augment.codec import CodecAugConfig, apply_codec, available_codecs
    from rawnet2_jax.data.pipeline import _BatchLoader, train_batches

    cuts = _BatchLoader(src, int(cfg.num_samples), str(cfg.pad_mode))(np.arange(len(src)))["audio"]
    c0 = time.process_time()
    for row in cuts:
        for name in available_codecs():
            apply_codec(row, name, cache)
    warm_s = time.process_time() - c0
    aug = CodecAugConfig(prob=args.prob, codecs=available_codecs(), cache_dir=cache)
    it = train_batches(src, cfg, args.batch_size, seed=0, codec_augment=aug, **host)
    rate, cpu = _rate(it, args.seconds)
    it.close()
    threads = host["num_threads"]
    row = {"what": f"pipeline p={args.prob:g} all codecs, warm cache ({len(src)} utts)", "utt_per_s": rate,
           "cpu_ms_per_utt": cpu, "idle_cores_utt_per_s": 1e3 * threads / cpu, "warm_up_cpu_s": warm_s}
    print(f"{row['what']:40} {rate:9.0f} utt/s ({cpu:.2f} ms CPU/utt: {1e3 * threads / cpu:.0f} utt/s on {threads} "
          f"idle cores; filling the cache: {warm_s:.1f} s CPU)", flush=True)
    return row


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--preset", default="caa_rawnet2")
    ap.add_argument("--num-utts", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--prob", type=float, default=0.5)
    ap.add_argument("--cheap-codecs", default="mulaw,alaw,telephone", help="the third row's codec list")
    ap.add_argument("--seconds", type=float, default=10.0, help="time per pipeline row")
    ap.add_argument("--cache-utts", type=int, default=64,
                    help="records of the warm-cache row (every (record, codec) pair is encoded first)")
    ap.add_argument("--json", default="bench_codec.json")
    return ap.parse_args()


def _pipeline_rows(src, cfg, args, host: dict, cheap: tuple[str, ...]) -> list[dict]:
    """The pipeline without codecs, with every codec at ``--prob``, with the cheap ones only."""
    from rawnet2_jax.augment.codec import CodecAugConfig, available_codecs
    from rawnet2_jax.data.pipeline import train_batches

    threads, rows = host["num_threads"], []
    for prob, codecs, label in ((0.0, available_codecs(), "no codecs"), (args.prob, available_codecs(), "all codecs"),
                                (args.prob, cheap, ",".join(cheap))):
        aug = CodecAugConfig(prob=prob, codecs=codecs)
        it = train_batches(src, cfg, args.batch_size, seed=0, codec_augment=aug, **host)
        rate, cpu = _rate(it, args.seconds)
        it.close()
        rows.append({"what": f"pipeline p={prob:g} {label}", "utt_per_s": rate, "cpu_ms_per_utt": cpu,
                     "idle_cores_utt_per_s": 1e3 * threads / cpu})
        print(f"{rows[-1]['what']:40} {rate:9.0f} utt/s ({cpu:.2f} ms CPU/utt: {1e3 * threads / cpu:.0f} utt/s "
              f"on {threads} idle cores)", flush=True)
    return rows


def _ceiling_rows(rows: list[dict], prob: float, threads: int, cheap: tuple[str, ...]) -> list[dict]:
    """The utt/s that codec CPU time alone allows at ``prob``, from the per-codec rows."""
    import numpy as np

    from rawnet2_jax.augment.codec import available_codecs

    out = []
    for label, names, key in (("all codecs", available_codecs(), "cpu_ms"), (",".join(cheap), cheap, "cpu_ms"),
                              ("all codecs, warm cache", available_codecs(), "cached_cpu_ms")):
        mean = float(np.mean([r[key] for r in rows if r["what"] in {f"codec {n}" for n in names}]))
        ceiling = 1e3 * threads / (prob * mean)
        out.append({"what": f"ceiling p={prob:g} {label}", "mean_cpu_ms": mean, "utt_per_s": ceiling})
        print(f"{out[-1]['what']:40} {ceiling:9.0f} utt/s on {threads} cores from codec CPU alone "
              f"(mean {mean:.2f} ms per degraded utterance)", flush=True)
    return out


def main() -> None:
    args = _parse_args()
    threads = common.pin_threads(args.threads)

    import numpy as np

    from rawnet2_jax.config import get_config

    cfg = get_config(args.preset)
    src = _records(args.num_utts, 4.0)
    host = dict(process_index=0, process_count=1, local_device_count=1, num_threads=threads)
    cheap = tuple(args.cheap_codecs.split(","))
    rows = _pipeline_rows(src, cfg, args, host, cheap)
    cache = tempfile.mkdtemp(prefix="bench_codec_cache.")
    rows.append(_warm_cache_row(src[: args.cache_utts], cfg, args, cache, host))
    x = np.asarray(src[0]["audio"][: cfg.num_samples], np.float32) / 32768
    rows += _codec_rows(x)
    rows += _ceiling_rows(rows, args.prob, threads, cheap)
    # Removed only now: grain's prefetch threads may still be decoding a little after close().
    shutil.rmtree(cache, ignore_errors=True)
    m = common.machine_info()
    print(f"\n{args.preset}: {cfg.num_samples} samples, batch {args.batch_size}, {threads} threads; "
          f"{common.machine_line(m)}")
    common.write_json(Path(args.json), {"preset": args.preset, "num_samples": cfg.num_samples, "threads": threads,
                                        "prob": args.prob, "machine": m, "results": rows})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
