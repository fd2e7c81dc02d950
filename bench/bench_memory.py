"""Peak memory of ONE training step with and without rematerialisation (``ModelConfig.remat``).

    .venv/bin/python bench/bench_memory.py                        # seed recipe, batch 8 and 32
    .venv/bin/python bench/bench_memory.py --batches 16,32 --remat blocks
    .venv/bin/python bench/bench_memory.py --quick                # tiny model: does it run?

The step is the recipe's (``caa_plateau`` for ``caa_rawnet2``, ``tak2021`` for the official
layout) jitted train step of ``train/step.py`` with the state donated, built as training
builds it. Every (remat, batch) runs in its own subprocess, which first compiles the step
and reads XLA's buffer assignment (``memory_analysis()``: temporaries + arguments + outputs),
then runs one step and reports its own RSS high-water mark (``getrusage``). A step whose
compiled estimate exceeds ``--max-gib`` (default: 80 % of the memory available now) is NOT
run, so the script never takes a shared machine down; its estimate is still reported.

On CPU the workers run with ``--xla_cpu_enable_concurrency_optimized_scheduler=false``
(``--keep-cpu-scheduler`` to measure without it): XLA's default CPU scheduler orders the step
for parallelism, not memory, and holds more buffers at once.

Writes ``bench/results/bench_memory[_quick].json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import common  # noqa: E402

CPU_MEMORY_SCHEDULER = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def worker(a) -> dict:
    import jax
    import jax.numpy as jnp

    from rawnet2_jax.model import init_variables

    cfg = common.bench_config(a.preset, a.quick, a.num_samples).replace(remat=a.remat)
    tcfg = common.train_config(cfg)
    state, core = common.jitted_train_step(tcfg, init_variables(cfg, 0))
    batch = {"audio": jnp.asarray(common.bench_inputs(a.batch, cfg.num_samples)),
             "label": jnp.asarray(common.bench_labels(a.batch))}
    t0 = time.perf_counter()
    compiled = core.lower(state, batch, None).compile()
    res = {"remat": a.remat, "batch": a.batch, "compile_s": time.perf_counter() - t0,
           "backend": jax.default_backend(), "recipe": tcfg.name, "model": cfg.name,
           "num_samples": cfg.num_samples, "rss_after_compile_mb": common.peak_rss_mb()}
    ma = compiled.memory_analysis()
    if ma is not None:
        res["xla_temp_mb"] = ma.temp_size_in_bytes / 2**20
        res["xla_total_mb"] = (ma.temp_size_in_bytes + ma.argument_size_in_bytes
                               + ma.output_size_in_bytes - ma.alias_size_in_bytes) / 2**20
    if res.get("xla_total_mb", 0) / 1024 > a.max_gib:
        res["skipped"] = f"XLA estimate {res['xla_total_mb'] / 1024:.1f} GiB > --max-gib {a.max_gib:.1f}"
        return res
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch, None)
    jax.block_until_ready(state)
    res["step_s"] = time.perf_counter() - t0
    res["loss"] = float(metrics["loss"])
    res["peak_rss_mb"] = common.peak_rss_mb()
    return res


def table(rows: list[dict]) -> str:
    header = ["remat", "batch", "peak RSS GiB (one step)", "XLA estimate GiB", "XLA temp GiB", "step s", "compile s"]
    out = []
    for r in rows:
        if "error" in r:
            out.append([r["remat"], r["batch"], f"error: {r['error']}", "-", "-", "-", "-"])
            continue
        rss = common.fmt(r.get("peak_rss_mb", float("nan")) / 1024, ".2f", none=r.get("skipped", "-"))
        out.append([r["remat"], r["batch"], rss, common.fmt(r.get("xla_total_mb", float("nan")) / 1024, ".2f"),
                    common.fmt(r.get("xla_temp_mb", float("nan")) / 1024, ".2f"),
                    common.fmt(r.get("step_s"), ".1f"), common.fmt(r.get("compile_s"), ".1f")])
    return common.markdown_table(header, out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="caa_rawnet2")
    ap.add_argument("--batches", default="8,32", help="comma-separated batch sizes")
    ap.add_argument("--remat", default="none,blocks", help="comma-separated ModelConfig.remat values")
    ap.add_argument("--num-samples", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="tiny model (seconds)")
    ap.add_argument("--max-gib", type=float, default=None,
                    help="do not run a step whose XLA estimate exceeds this (default: 80%% of MemAvailable)")
    ap.add_argument("--keep-cpu-scheduler", action="store_true",
                    help=f"do not pass {CPU_MEMORY_SCHEDULER} to the workers")
    ap.add_argument("--json", default=None, help="output JSON (default bench/results/bench_memory[_quick].json)")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.max_gib is None:
        a.max_gib = 0.8 * available_gib()
    if a.worker:
        common.write_json(Path(a.out), worker(a))
        return 0

    extra = {} if a.keep_cpu_scheduler else {
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {CPU_MEMORY_SCHEDULER}".strip()}
    rows = []
    for remat in a.remat.split(","):
        for b in (int(v) for v in a.batches.split(",")):
            args = ["--worker", "--preset", a.preset, "--remat", remat, "--batch", str(b),
                    "--max-gib", str(a.max_gib)]
            args += ["--quick"] if a.quick else []
            args += ["--num-samples", str(a.num_samples)] if a.num_samples else []
            print(f"== remat={remat} batch {b}", flush=True)
            res = common.run_worker(Path(__file__), args, "default", a.timeout, extra_env=extra)
            res.setdefault("remat", remat)
            res.setdefault("batch", b)
            rows.append(res)
            print(table([res]).splitlines()[-1], flush=True)
    report = {"machine": common.machine_info(), "max_gib": a.max_gib, "xla_flags": extra.get("XLA_FLAGS", ""),
              "rows": rows}
    path = Path(a.json or common.RESULTS / f"bench_memory{'_quick' if a.quick else ''}.json")
    common.write_json(path, report)
    print(f"\n**Machine:** {common.machine_line(report['machine'])}\n")
    print(table(rows))
    print(f"\nwrote {path}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
