"""Input-pipeline throughput (utterances/s) on a TFDS array_record dataset of ~4 s clips.

    .venv/bin/python bench/bench_pipeline.py [--work-dir /tmp/rawnet2_bench] [--num-utts 2000]
        [--batch-size 32] [--seconds 10] [--json bench_pipeline.json]

Builds (once, then reuses) a demo corpus of ``--num-utts`` 4 s clips in the ASVspoof 2019 LA
layout and its ``asvspoof2019_la`` TFDS dataset, then times, per setting:

* ``read``: raw random-access reads of shuffled records (``__getitems__``), no decoding;
* ``train``: ``train_batches`` (shuffle, int16 -> float32, pad/cut to 64,000 / 64,600 samples,
  stack) with the given threads / grain worker processes;
* ``eval``: ``eval_batches`` over the same split.

Prints a table and writes JSON. Goal: >= 2000 utt/s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def _timed(it, seconds: float, warmup: int = 2) -> tuple[float, int]:
    for _ in range(warmup):
        next(it)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        b = next(it)
        n += int(b["mask"].sum()) if isinstance(b, dict) else len(b)
    return n / (time.perf_counter() - t0), n


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", default="/tmp/rawnet2_bench")
    ap.add_argument("--num-utts", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=8.0, help="time per setting")
    ap.add_argument("--json", default="bench_pipeline.json")
    return ap.parse_args()


def _train_source(work: Path, num_utts: int):
    """The train split of a demo corpus of ``num_utts`` 4 s clips, built once under ``work``
    (corpus, then its TFDS dataset) and reused by later runs."""
    from rawnet2_jax.data import asvspoof2019_la
    from rawnet2_jax.data.demo import DemoConfig, make_demo_corpus

    corpus = work / f"corpus_{num_utts}"
    if not (corpus / "LA" / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.eval.trl.txt").exists():
        t = time.perf_counter()
        make_demo_corpus(corpus, DemoConfig(num_train=num_utts, num_dev=8, num_eval=8, seconds=4.0))
        print(f"demo corpus: {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    builder = asvspoof2019_la.build(corpus, work / f"tfds_{num_utts}")
    print(f"tfds build/reuse: {time.perf_counter() - t:.1f} s")
    return builder.as_data_source(split="train")


# (preset, threads, grain worker processes) of the train rows
_TRAIN_SETTINGS = [("caa_rawnet2", 1, 0), ("caa_rawnet2", 2, 0), ("caa_rawnet2", 4, 0), ("tak2021", 2, 0),
                   ("caa_rawnet2", 1, 2)]


def _time_settings(src, bs: int, seconds: float) -> list[dict]:
    """One row per setting: raw reads, ``train_batches`` per :data:`_TRAIN_SETTINGS`, one
    ``eval_batches`` pass."""
    from rawnet2_jax.config import get_config
    from rawnet2_jax.data import pipeline as pl

    n = len(src)
    host = dict(process_index=0, process_count=1, local_device_count=1)

    def reads():
        rng = np.random.default_rng(0)
        while True:
            yield src.__getitems__(rng.integers(0, n, bs).tolist())

    rate, _ = _timed(reads(), seconds)
    rows = [{"what": "read", "preset": "-", "threads": 0, "workers": 0, "utt_per_s": rate}]
    for preset, threads, workers in _TRAIN_SETTINGS:
        cfg = get_config(preset)
        it = pl.train_batches(src, cfg, bs, seed=0, num_threads=threads, num_workers=workers, **host)
        rate, _ = _timed(it, seconds)
        it.close()
        rows.append({"what": "train", "preset": preset, "threads": threads, "workers": workers, "utt_per_s": rate})
    cfg = get_config("caa_rawnet2")
    t0 = time.perf_counter()
    m = sum(int(b["mask"].sum()) for b in pl.eval_batches(src, cfg, bs, num_threads=2, **host))
    rows.append({"what": "eval", "preset": "caa_rawnet2", "threads": 2, "workers": 0,
                 "utt_per_s": m / (time.perf_counter() - t0)})
    return rows


def main() -> None:
    args = _parse_args()
    src = _train_source(Path(args.work_dir), args.num_utts)
    n = len(src)
    mean_len = float(np.mean([src[i]["num_samples"] for i in range(0, n, max(1, n // 200))]))
    bs = args.batch_size
    rows = _time_settings(src, bs, args.seconds)
    print(f"\n{n} utterances, mean {mean_len / 16000:.2f} s, batch {bs}, {os.cpu_count()} CPUs")
    print(f"{'what':6} {'preset':12} {'threads':>7} {'workers':>7} {'utt/s':>9}")
    for r in rows:
        print(f"{r['what']:6} {r['preset']:12} {r['threads']:7d} {r['workers']:7d} {r['utt_per_s']:9.0f}")
    out = {
        "num_utts": n, "mean_seconds": mean_len / 16000, "batch_size": bs, "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "machine": platform.platform(), "results": rows,
    }
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
