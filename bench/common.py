"""Shared helpers of the bench scripts (no JAX / torch imports at module level).

* machine description (CPU model, cores, affinity, glibc, THP mode, library versions);
* allocator environments (``ENVS``) the worker subprocesses run under;
* thread pinning (``pin_threads``: CPU affinity before JAX / torch start their pools, so XLA's
  Eigen pool and torch's OpenMP pool get the same number of threads);
* timing (``time_fn``: warm-up, then repetitions until ``min_reps`` and ``max_seconds``),
  peak RSS, subprocess workers that answer with a JSON file;
* analytic FLOPs of a RawNet2 config; bench sizes of the presets (``bench_config``);
* deterministic inputs and small table / JSON helpers.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"

# Allocator settings the worker subprocesses can run under. Large tensors (a batch-32
# activation of the seed model is ~1 GB) are always mmap'ed by glibc (the mmap threshold caps
# at 32 MiB), so every step page-faults them in again; "thp" asks glibc to madvise those
# mappings for transparent huge pages (2 MiB pages: 512x fewer faults; needs glibc >= 2.35 and
# THP "madvise" or "always"). "malloc" keeps the heap from shrinking and batches small ones.
ENVS: dict[str, dict[str, str]] = {
    "default": {},
    "malloc": {
        "MALLOC_ARENA_MAX": "2",
        "MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024),  # glibc's maximum
        "MALLOC_TRIM_THRESHOLD_": str(4 * 1024 * 1024 * 1024),
        "MALLOC_TOP_PAD_": str(256 * 1024 * 1024),
    },
    "thp": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
}
ENVS["malloc+thp"] = {**ENVS["malloc"], **ENVS["thp"]}


# ----------------------------------------------------------------------------------- machine


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("jax", "jaxlib", "flax", "optax", "torch", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "-"
    return out


def machine_info() -> dict[str, Any]:
    cpuinfo = _read("/proc/cpuinfo")
    model, flags, mhz = "unknown", set(), None
    for line in cpuinfo.splitlines():
        key, _, val = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = val.strip()
        elif key == "flags" and not flags:
            flags = set(val.split())
        elif key == "cpu MHz" and mhz is None:
            try:
                mhz = float(val)
            except ValueError:
                pass
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")
           if f in flags]
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count()
    thp = _read("/sys/kernel/mm/transparent_hugepage/enabled")
    mem_kb = 0
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "cpu": model,
        "cpu_mhz": mhz,
        "isa": isa,
        "nproc": nproc,
        "cpu_count": os.cpu_count(),
        "mem_gib": round(mem_kb / 2**20, 1),
        "glibc": "-".join(platform.libc_ver()),
        "thp": thp[thp.find("[") + 1:thp.find("]")] if "[" in thp else thp,
        "kernel": platform.release(),
        "loadavg": _read("/proc/loadavg").split()[:3],
        "versions": _versions(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


def machine_line(m: dict[str, Any]) -> str:
    v = m["versions"]
    return (f"{m['cpu']} ({', '.join(m['isa'])}), {m['nproc']} cores used of {m['cpu_count']}, "
            f"{m['mem_gib']} GiB, {m['glibc']}, THP {m['thp']}, load {' '.join(m['loadavg'])}; "
            f"jax {v['jax']}, flax {v['flax']}, torch {v['torch']}, numpy {v['numpy']}, "
            f"Python {v['python']}")


# ----------------------------------------------------------------------------------- threads


def pin_threads(n: int) -> int:
    """Restrict this process to ``n`` CPUs (call BEFORE importing jax / torch).

    XLA sizes its CPU thread pool from the schedulable CPUs; torch gets ``set_num_threads(n)``
    and OMP_NUM_THREADS as well, so both frameworks run with the same number of threads.
    """
    cpus = sorted(os.sched_getaffinity(0))
    n = max(1, min(n, len(cpus)))
    os.sched_setaffinity(0, cpus[:n])
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ["MKL_NUM_THREADS"] = str(n)
    return n


# ----------------------------------------------------------------------------------- timing


def time_fn(fn: Callable[[], Any], warmup: int = 2, min_reps: int = 5, max_seconds: float = 30.0,
            max_reps: int = 50) -> dict[str, Any]:
    """Median wall time (and process CPU time) of ``fn()``, which must block until its
    result is ready.

    ``warmup`` untimed calls, then at least ``min_reps`` timed ones, more while the total stays
    under ``max_seconds`` (up to ``max_reps``).
    """
    for _ in range(warmup):
        fn()
    times: list[float] = []
    cpu: list[float] = []
    t_start = time.perf_counter()
    while len(times) < max_reps:
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if len(times) >= min_reps and time.perf_counter() - t_start >= max_seconds:
            break
        if len(times) >= min_reps and (time.perf_counter() - t_start) + times[-1] > max_seconds:
            break
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        # CPU seconds of all this process's threads (includes spin-waiting thread pools); with
        # --threads 1 a load-robust measure of the work done.
        "cpu_median_s": statistics.median(cpu),
        "reps": len(times),
        "warmup": warmup,
    }


def peak_rss_mb() -> float:
    """High-water mark of this process's resident set (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    for line in _read("/proc/self/status").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def run_worker(script: Path, args: list[str], env_name: str, timeout: float | None = None,
               verbose: bool = True, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python script --worker ... --out FILE`` under ``ENVS[env_name]``; its JSON answer.

    A failed worker gives ``{"error": ...}`` with the tail of its stderr instead of raising.
    """
    import tempfile

    env = dict(os.environ)
    for k in set().union(*ENVS.values()):
        env.pop(k, None)  # the parent's own allocator settings must not leak into a variant
    for k in ("JAX_COMPILATION_CACHE_DIR", "JAX_ENABLE_COMPILATION_CACHE"):
        env.pop(k, None)  # compile times are cold unless a variant asks for the cache
    env.update(ENVS[env_name])
    env.update(extra_env or {})
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        cmd = [sys.executable, str(script), *args, "--out", str(out)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout} s", "cmd": " ".join(cmd)}
        wall = time.perf_counter() - t0
        if verbose and proc.stdout.strip():
            for line in proc.stdout.strip().splitlines():
                print(f"    | {line}", flush=True)
        if proc.returncode != 0 and out.exists():
            # partial results: the batches done before the worker died (e.g. killed for memory)
            res = json.loads(out.read_text())
            why = "killed (out of memory?)" if proc.returncode in (-9, 137) else f"exit {proc.returncode}"
            last = (proc.stderr.strip().splitlines() or [""])[-1]
            res["error"] = f"{why} after batches {sorted(res.get('batches', {}), key=int)}: {last}"
            res["env"] = env_name
            return res
        if proc.returncode != 0 or not out.exists():
            lines = proc.stderr.strip().splitlines()
            # the exception line (JAX appends a note about filtered frames after it)
            exc = [ln for ln in lines if ln[:1].isalpha() and ("Error" in ln.split(":")[0]
                                                             or "Exception" in ln.split(":")[0])]
            head = exc[-1] if exc else (lines[-1] if lines else "")
            tail = "\n".join(lines[-15:])
            return {"error": f"exit {proc.returncode}: {head}", "stderr_tail": tail, "cmd": " ".join(cmd)}
        res = json.loads(out.read_text())
    res["process_wall_s"] = wall
    res["env"] = env_name
    return res


# ----------------------------------------------------------------------------------- configs


def quick_config(cfg):
    """A tiny model with the preset's structure (layout, sinc formula, pools, FMS, depth): the
    bench scripts' ``--quick`` size, a few milliseconds a step.

    Not ``train.testing.tiny_model``: at its 4-8 channels (even with the preset's depth) XLA
    counted 1.27x the analytic FLOPs of convolutions and matmuls (the elementwise rest grows as
    channels shrink), beyond the 25 % the bench smoke test holds the two counts to.
    """
    return cfg.replace(
        name=f"{cfg.name}_quick",
        num_samples=8000,
        sinc_filters=8,
        sinc_kernel_size=min(cfg.sinc_kernel_size, 33),
        first_block_channels=8,
        second_block_channels=16,
        gru_hidden=16,
        embedding_dim=16,
    )


def bench_config(preset: str, quick: bool = False, num_samples: int | None = None):
    from rawnet2_jax.config import get_config

    cfg = get_config(preset)
    if quick:
        cfg = quick_config(cfg)
    if num_samples:
        cfg = cfg.replace(num_samples=num_samples)
    return cfg


def train_hparams(cfg) -> dict[str, Any]:
    """Optimizer / loss settings of the training recipe that goes with the preset's layout."""
    from train.configs import CAA_PLATEAU, TAK2021_RECIPE

    recipe = CAA_PLATEAU if cfg.layout == "seed" else TAK2021_RECIPE
    return {
        "recipe": recipe.name,
        "learning_rate": recipe.learning_rate,
        "weight_decay": recipe.weight_decay,
        "grad_clip_norm": recipe.grad_clip_norm,
        "class_weights": list(recipe.class_weights),
        "adam": [recipe.adam_b1, recipe.adam_b2, recipe.adam_eps],
    }


def train_config(cfg):
    from train.configs import CAA_PLATEAU, TAK2021_RECIPE

    recipe = CAA_PLATEAU if cfg.layout == "seed" else TAK2021_RECIPE
    return recipe.replace(model=cfg)


def jitted_train_step(tcfg, variables, donate: bool = True):
    """``(state, core)``: the training state and the jitted step of ``train/step.py``
    (``core(state, batch, rng)``, state donated by default) exactly as training builds them;
    the one place the bench scripts depend on the training API."""
    from train.state import create_train_state
    from train.step import build_model, make_train_step

    state = create_train_state(variables, tcfg)
    return state, make_train_step(build_model(tcfg), tcfg, donate=donate).core


# ----------------------------------------------------------------------------------- FLOPs


def analytic_macs(cfg, num_samples: int | None = None) -> dict[str, float]:
    """Multiply-accumulates of ONE utterance's eval forward, per stage (convs, linears, GRU).

    Elementwise work (BN, activations, pools, FMS scaling) is not counted.
    """
    t = num_samples or cfg.num_samples
    k = cfg.sinc_kernel_size
    c0 = cfg.sinc_filters
    t0 = t if cfg.sinc_padding == "same" else t - k + 1
    out: dict[str, float] = {"sinc": float(t0 * k * c0)}
    t0 //= cfg.sinc_pool
    kb = cfg.block_kernel_size
    conv3 = 0.0
    other = 0.0
    for i, (ci, co) in enumerate(cfg.block_channels):
        conv3 += t0 * kb * (ci * co + co * co)
        if ci != co:
            other += t0 * ci * co
        t0 //= cfg.block_pool
        other += co * co  # FMS fc
    out["block_conv3"] = float(conv3)
    out["block_other"] = float(other)
    h = cfg.gru_hidden
    d = cfg.block_channels[-1][1]
    gru = 0.0
    for layer in range(cfg.gru_layers):
        gru += t0 * 3 * h * ((d if layer == 0 else h) + h)
    out["gru"] = float(gru)
    out["gru_frames"] = float(t0)
    out["head"] = float(h * cfg.embedding_dim + cfg.embedding_dim * cfg.num_classes)
    out["total"] = sum(v for key, v in out.items() if key != "gru_frames")
    return out


def analytic_flops(cfg, num_samples: int | None = None) -> dict[str, float]:
    """FLOPs (2 x MACs) per utterance: ``forward`` and ``train`` (~3x forward: the backward
    of every layer costs two forwards, minus the sinc conv whose input needs no gradient and
    whose filters are fixed unless ``sinc_learnable``)."""
    m = analytic_macs(cfg, num_samples)
    fwd = 2 * m["total"]
    sinc_bwd = 2 * m["sinc"] if cfg.sinc_learnable else 0.0
    return {
        "forward": fwd,
        "train": fwd + 2 * (fwd - 2 * m["sinc"]) + sinc_bwd,
        "sinc": 2 * m["sinc"],
        "block_conv3": 2 * m["block_conv3"],
        "gru": 2 * m["gru"],
    }


# ----------------------------------------------------------------------------------- data


def bench_inputs(batch: int, num_samples: int, seed: int = 0) -> np.ndarray:
    """(batch, T) float32 speech-ish waveforms (harmonics with gliding f0 + noise), vectorised."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples, dtype=np.float64) / 16000.0
    x = np.zeros((batch, num_samples))
    for b in range(batch):
        f0 = rng.uniform(90, 260) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
        phase = 2 * np.pi * np.cumsum(f0) / 16000.0
        for h in range(1, 12):
            x[b] += rng.uniform(0.1, 1.0) / h * np.sin(h * phase + rng.uniform(0, 6.28))
        x[b] *= 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6.28)) ** 2
        x[b] += 0.01 * rng.standard_normal(num_samples)
        x[b] = 0.5 * x[b] / (np.abs(x[b]).max() + 1e-9)
    return x.astype(np.float32)


def bench_labels(batch: int) -> np.ndarray:
    return (np.arange(batch) % 2).astype(np.int32)


# ----------------------------------------------------------------------------------- output


def rel_diff(a, b) -> tuple[float, float]:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    d = float(np.max(np.abs(a - b))) if a.size else 0.0
    return d, d / max(float(np.max(np.abs(b))) if b.size else 0.0, 1e-30)


def fmt(v: Any, spec: str = ".1f", none: str = "-") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return none
    return format(v, spec)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=float))
