"""Seconds from ``python -m train``'s start to its ``resumed from`` line (the first step follows),
with the run's compile cache and without it (``JAX_ENABLE_COMPILATION_CACHE=false``).

    .venv/bin/python bench/restart_time.py --preset demo
    .venv/bin/python bench/restart_time.py --preset tak2021 -- --batch-size 4 --eval-batch-size 8 \\
        --max-steps-per-epoch 2

On the small demo corpus (``--num-train 100 --num-dev 60``, written and built under ``--out`` if
missing): one run of one epoch, then for each of ``--rounds`` rounds a copy of its workdir
restarted for a second epoch without the cache (the copy's ``compile_cache/`` removed) and
with it. Arguments after ``--`` go to every ``python -m train``. The README's restart table
comes from this script.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def _corpus(out: Path) -> Path:
    """The TFDS data dir of the small demo corpus under ``out`` (made once)."""
    tfds = out / "tfds"
    if not list(tfds.glob("asvspoof2019_la/*/dataset_info.json")):
        subprocess.run([PY, "-m", "rawnet2_jax.data", "demo", str(out), "--num-train", "100", "--num-dev", "60"],
                       cwd=ROOT, check=True, capture_output=True)
        subprocess.run([PY, "-m", "rawnet2_jax.data", "build", "asvspoof2019_la", "--manual-dir", str(out),
                        "--data-dir", str(tfds), "--overwrite"], cwd=ROOT, check=True, capture_output=True)
    return tfds


def _until_resumed(cmd: list[str], env: dict) -> float:
    """Seconds until the run prints ``resumed from`` (it then runs to the end)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = None
    for line in p.stdout:
        if seen is None and line.startswith("resumed from"):
            seen = time.perf_counter() - t0
    if p.wait() != 0 or seen is None:
        raise SystemExit(f"error: {' '.join(cmd)} failed or did not resume (exit {p.returncode})")
    return seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="demo", help="training preset (default demo)")
    ap.add_argument("--out", default="bench/results/_work/restart", help="work folder (corpus, runs)")
    ap.add_argument("--rounds", type=int, default=2, help="restarts of each kind (default 2)")
    ap.add_argument("train_args", nargs="*", help="after --: more python -m train arguments")
    a = ap.parse_args()
    out = (ROOT / a.out).absolute()
    tfds = _corpus(out)
    env = dict(os.environ, GLIBC_TUNABLES=os.environ.get("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1"))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the run's own cache, as users get it
    base = [PY, "-m", "train", "--config", a.preset, "--data-dir", str(tfds), "--asv-scores", str(out),
            "--no-final-eval", *a.train_args]
    first = out / f"run_{a.preset}"
    shutil.rmtree(first, ignore_errors=True)
    subprocess.run([*base, "--workdir", str(first), "--epochs", "1"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    times: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(a.rounds):
        for mode in ("off", "on"):
            wd = out / f"run_{a.preset}_{mode}"
            shutil.rmtree(wd, ignore_errors=True)
            shutil.copytree(first, wd)
            if mode == "off":
                shutil.rmtree(wd / "compile_cache", ignore_errors=True)
            e = dict(env, JAX_ENABLE_COMPILATION_CACHE="false") if mode == "off" else env
            times[mode].append(_until_resumed([*base, "--workdir", str(wd), "--epochs", "2"], e))
    fmt = lambda ts: " / ".join(f"{t:.2f}" for t in ts)  # noqa: E731
    print(f"| preset | cache off (s) | cache on (s) |\n|---|---:|---:|\n| {a.preset} | {fmt(times['off'])} | "
          f"{fmt(times['on'])} |  (load {' '.join(f'{x:.1f}' for x in os.getloadavg())})")


if __name__ == "__main__":
    main()
