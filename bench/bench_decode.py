"""What scoring a long file's first window costs: head-only decoding vs decoding it whole.

    .venv/bin/python bench/bench_decode.py [--hours 3] [--sample-rate 16000] [--work-dir /tmp/rawnet2_bench]

Writes (once, then reuses) a WAV of ``--hours`` hours (PCM_16 mono, a tone plus noise), then
times, each in a fresh process so peak RSS is its own:

* ``head``: ``read_audio(path, max_seconds=None, head_samples=64000)``, what
  ``rawnet2-jax score --max-seconds 0`` does without ``--windows``;
* ``whole``: ``load_audio(path, max_seconds=None)``, what it did before (and what
  ``--windows`` needs).

Prints wall seconds and peak RSS (MiB) of each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

WORKER = """
import json, resource, sys, time
from rawnet2_jax import audio
path, mode = sys.argv[1], sys.argv[2]
t = time.perf_counter()
if mode == "head":
    x = audio.read_audio(path, max_seconds=None, head_samples=64000)[0]
else:
    x = audio.load_audio(path, max_seconds=None)
dt = time.perf_counter() - t
print(json.dumps({"mode": mode, "seconds": dt, "samples": int(x.size),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_long_wav(path: Path, hours: float, sr: int) -> None:
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(sr * 60) / sr
    minute = (0.2 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    with sf.SoundFile(path, "w", sr, 1, "PCM_16") as f:
        for _ in range(int(round(hours * 60))):
            f.write(minute)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--sample-rate", type=int, default=16000)
    ap.add_argument("--work-dir", default="/tmp/rawnet2_bench")
    args = ap.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"long_{args.hours:g}h_{args.sample_rate}.wav"
    if not path.exists():
        write_long_wav(path, args.hours, args.sample_rate)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    print(f"{path} ({path.stat().st_size / 2**20:.0f} MiB)")
    print(f"{'mode':<6} {'seconds':>8} {'peak RSS MiB':>13} {'samples':>10}")
    for mode in ("head", "whole"):
        out = subprocess.run([sys.executable, "-c", WORKER, str(path), mode], env=env, capture_output=True,
                             text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{r['mode']:<6} {r['seconds']:>8.3f} {r['peak_rss_mib']:>13.0f} {r['samples']:>10}")


if __name__ == "__main__":
    main()
