"""RawBoost cost: the jitted train step with and without RawBoost inside, and the reference's
numpy/scipy RawBoost on the same batch (what a data loader would spend per batch).

Rows (``caa_rawnet2``, batch 8, 4 s utterances, ``--threads`` CPUs):

* ``step``: ``train/step.py``'s train step (``make_train_step(...).core``), jitted;
* ``step + rawboost A``: one jitted function: ``rawboost_batch(fold_in(key, 1), audio, A)``
  then the same step: the same work as ``train/step.py``'s own hook (``TrainConfig.rawboost``,
  which folds in another constant), kept as a wrapper so the row measures RawBoost alone;
* ``rawboost A alone``: ``rawboost_batch`` jitted on its own (the device cost of the noise);
* ``reference A``: a numpy/scipy transcription of the reference's ``RawBoost.py`` (numpy RNG,
  ``scipy.signal.firwin`` / ``freqz`` / ``lfilter``) over the batch's rows, in this process
  and in a pool of ``--threads`` processes (the reference runs it in DataLoader workers).

    .venv/bin/python bench/bench_rawboost.py                 # the README numbers (~5-10 min)
    .venv/bin/python bench/bench_rawboost.py --quick         # tiny model: does it run?

Writes ``bench/results/bench_rawboost[_TAG].json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common  # noqa: E402
import numpy as np  # noqa: E402

# ------------------------------------------------------------------ reference transcription
# Written from the reference's description (RawBoost.py of TakHemlata/SSL_Anti-spoofing):
# numpy RNG, scipy filters, one waveform at a time. Defaults of its main_SSL_LA.py.

REF = dict(nBands=5, minF=20, maxF=8000, minBW=100, maxBW=1000, minCoeff=10, maxCoeff=100, minG=0, maxG=0,
           minBiasLinNonLin=5, maxBiasLinNonLin=20, N_f=5, P=10, g_sd=2, SNRmin=10, SNRmax=40, fs=16000)


def _notch(rng, p, min_g, max_g):
    from scipy import signal

    fs = p["fs"]
    b = np.ones(1)
    for _ in range(p["nBands"]):
        fc = rng.uniform(p["minF"], p["maxF"])
        bw = rng.uniform(p["minBW"], p["maxBW"])
        c = int(rng.uniform(p["minCoeff"], p["maxCoeff"]))
        c += 1 - c % 2
        f1, f2 = max(fc - bw / 2, 1e-3), min(fc + bw / 2, fs / 2 - 1e-3)
        b = np.convolve(signal.firwin(c, [f1, f2], window="hamming", fs=fs), b)
    g = rng.uniform(min_g, max_g)
    _, h = signal.freqz(b, 1, fs=fs)
    return 10 ** (g / 20) * b / np.max(np.abs(h))


def _filter(x, b):
    from scipy import signal

    n = b.shape[0] + 1
    y = signal.lfilter(b, 1, np.pad(x, (0, n)))
    return y[n // 2:y.shape[0] - n // 2]


def _norm(y, always=False):
    peak = np.max(np.abs(y))
    return y / peak if always or peak > 1 else y


def ref_lnl(rng, x, p):
    y = np.zeros(x.shape[0])
    lo, hi = p["minG"], p["maxG"]
    for i in range(p["N_f"]):
        if i == 1:
            lo, hi = lo - p["minBiasLinNonLin"], hi - p["maxBiasLinNonLin"]
        y = y + _filter(np.power(x, i + 1), _notch(rng, p, lo, hi))
    return _norm(y - np.mean(y))


def ref_isd(rng, x, p):
    beta = rng.uniform(0, p["P"])
    y = x.copy()
    pos = rng.permutation(x.shape[0])[:int(x.shape[0] * beta / 100)]
    f = (2 * rng.rand(pos.shape[0]) - 1) * (2 * rng.rand(pos.shape[0]) - 1)
    y[pos] = x[pos] + p["g_sd"] * x[pos] * f
    return _norm(y)


def ref_ssi(rng, x, p):
    noise = _norm(_filter(rng.normal(0, 1, x.shape[0]), _notch(rng, p, p["minG"], p["maxG"])), always=True)
    snr = rng.uniform(p["SNRmin"], p["SNRmax"])
    return x + noise / np.linalg.norm(noise) * np.linalg.norm(x) / 10.0 ** (0.05 * snr)


def ref_rawboost(args):
    x, algo, seed = args
    rng = np.random.RandomState(seed)  # legacy API like the reference (its uniform accepts low > high)
    p = REF
    stages = {1: (ref_lnl,), 2: (ref_isd,), 3: (ref_ssi,), 4: (ref_lnl, ref_isd, ref_ssi), 5: (ref_lnl, ref_isd),
              6: (ref_lnl, ref_ssi), 7: (ref_isd, ref_ssi)}
    if algo == 8:
        return _norm(ref_lnl(rng, x, p) + ref_isd(rng, x, p))
    for f in stages[algo]:
        x = f(rng, x, p)
    return x


# ------------------------------------------------------------------ timing


def _parse_args(argv) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="caa_rawnet2")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--algos", default="5,4", help="RawBoost algorithms to time (default 5,4)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny model, 2400 samples")
    ap.add_argument("--num-samples", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--min-reps", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=30.0, help="time budget of each reference row")
    ap.add_argument("--no-reference", action="store_true", help="skip the numpy/scipy rows")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out-dir", default=str(common.RESULTS))
    return ap.parse_args(argv)


def _step_variants(cfg, batch: int, algos: list[int]) -> tuple[dict, np.ndarray]:
    """``{name: (fn, args, carries_state)}`` for the plain step, the step with each RawBoost
    algorithm in front and each algorithm alone; and the batch's audio as numpy."""
    import jax
    import jax.numpy as jnp

    from rawnet2_jax.augment import rawboost_batch
    from train.state import create_train_state, init_variables
    from train.step import build_model, make_train_step

    tcfg = common.train_config(cfg)
    model = build_model(tcfg)
    state0 = create_train_state(init_variables(model, cfg.num_samples, 0), tcfg)
    core = make_train_step(model, tcfg, jit=False).core
    x = common.bench_inputs(batch, cfg.num_samples)
    data = {"audio": jnp.asarray(x), "label": jnp.asarray(common.bench_labels(batch))}
    key = jax.random.key(0)
    jnp.zeros(1).block_until_ready()
    variants = {"step": (lambda s, b, k: core(s, b, k), (state0, data, key), True)}
    for algo in algos:
        def step_boost(s, b, k, algo=algo):
            audio = rawboost_batch(jax.random.fold_in(k, 1), b["audio"], algo)
            return core(s, {**b, "audio": audio}, k)

        variants[f"step+rawboost{algo}"] = (step_boost, (state0, data, key), True)
        variants[f"rawboost{algo}"] = (lambda k, v, algo=algo: rawboost_batch(k, v, algo), (key, data["audio"]), False)
    return variants, x


def _time_variants(variants: dict, warmup: int, reps: int) -> dict:
    """Compile every variant first, then time them round-robin (one call of each per round):
    on a shared machine the load drifts, and interleaving spreads it over all variants."""
    import jax

    compiled, boxes, rows = {}, {}, {}
    for name, (fn, args, _) in variants.items():
        t0 = time.perf_counter()
        compiled[name] = jax.jit(fn).lower(*args).compile()
        rows[name] = {"compile_s": time.perf_counter() - t0, "wall": [], "cpu": []}
        boxes[name] = args
        print(f"{name}: compiled in {rows[name]['compile_s']:.1f} s", flush=True)
    for rnd in range(warmup + reps):
        for name, (_, _, carries_state) in variants.items():
            t0, c0 = time.perf_counter(), time.process_time()
            out = compiled[name](*boxes[name])
            jax.block_until_ready(out)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if carries_state:  # carry the state like training does
                boxes[name] = (out[0],) + boxes[name][1:]
            if rnd >= warmup:
                rows[name]["wall"].append(wall)
                rows[name]["cpu"].append(cpu)
            print(f"  round {rnd} {name}: {wall * 1e3:.1f} ms (CPU {cpu * 1e3:.1f} ms)", flush=True)
    for row in rows.values():
        row["median_s"], row["cpu_median_s"] = statistics.median(row["wall"]), statistics.median(row["cpu"])
    return rows


def _ms(t: dict, k: str = "median_s") -> str:
    return common.fmt(t[k] * 1e3)


def _jax_table_rows(timed: dict, algos: list[int]) -> list[list[str]]:
    """The markdown rows of the jitted variants, each against the plain step."""
    base = timed["step"]
    rows = [["train step", _ms(base), _ms(base, "cpu_median_s"), "", "", common.fmt(base["compile_s"])]]
    for algo in algos:
        t = timed[f"step+rawboost{algo}"]
        rows.append([f"train step + RawBoost {algo} (in the jitted step)", _ms(t), _ms(t, "cpu_median_s"),
                     f"{100 * (t['median_s'] / base['median_s'] - 1):+.1f} %",
                     f"{100 * (t['cpu_median_s'] / base['cpu_median_s'] - 1):+.1f} %", common.fmt(t["compile_s"])])
        t = timed[f"rawboost{algo}"]
        rows.append([f"RawBoost {algo} alone (jitted)", _ms(t), _ms(t, "cpu_median_s"),
                     f"{100 * t['median_s'] / base['median_s']:.1f} % of a step",
                     f"{100 * t['cpu_median_s'] / base['cpu_median_s']:.1f} % of a step", common.fmt(t["compile_s"])])
    return rows


def _reference_rows(a, x: np.ndarray, threads: int, algos: list[int], timed: dict) -> list[list[str]]:
    """Time the numpy/scipy transcription over the batch's rows, in this process and in a pool
    of ``threads`` processes; each timing goes into ``timed``, its markdown row is returned."""
    from multiprocessing import get_context

    base, rows = timed["step"], []
    with get_context("spawn").Pool(threads) as pool:
        for algo in algos:
            jobs = [(x[i].astype(np.float64), algo, i) for i in range(a.batch)]
            for name, run in ((f"reference{algo}", lambda: [ref_rawboost(j) for j in jobs]),
                              (f"reference{algo}_pool", lambda: pool.map(ref_rawboost, jobs))):
                t = common.time_fn(run, a.warmup, a.min_reps, a.max_seconds)
                timed[name] = t
                print(f"{name}: {t['median_s'] * 1e3:.1f} ms", flush=True)
                where = "1 process" if not name.endswith("pool") else f"{threads} processes"
                cpu = _ms(t, "cpu_median_s") if where == "1 process" else "-"  # pool: the workers' CPU is not ours
                rows.append([f"reference RawBoost {algo} (numpy/scipy, {where})", _ms(t), cpu,
                             f"{100 * t['median_s'] / base['median_s']:.1f} % of a step", "", ""])
    return rows


def main(argv=None) -> int:
    a = _parse_args(argv)
    threads = common.pin_threads(a.threads)
    algos = [int(s) for s in a.algos.split(",") if s]
    cfg = common.bench_config(a.preset, a.quick, a.num_samples or (2400 if a.quick else None))
    variants, x = _step_variants(cfg, a.batch, algos)
    res = {"machine": common.machine_info(), "threads": threads, "preset": cfg.name, "batch": a.batch,
           "num_samples": cfg.num_samples, "rows": _time_variants(variants, a.warmup, a.min_reps)}
    rows = _jax_table_rows(res["rows"], algos)
    if not a.no_reference:
        rows += _reference_rows(a, x, threads, algos, res["rows"])
    table = common.markdown_table([f"{cfg.name}, batch {a.batch}, {threads} threads", "wall ms / batch",
                                   "CPU ms", "vs step (wall)", "vs step (CPU)", "compile s"], rows)
    res["markdown"] = table
    print("\n" + common.machine_line(res["machine"]) + "\n\n" + table)
    out = Path(a.out_dir) / f"bench_rawboost{'_quick' if a.quick else ''}{'_' + a.tag if a.tag else ''}.json"
    common.write_json(out, res)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
