"""Smoke test of the bench scripts (bench/): they run end to end on tiny models.

Nothing is timed here (timings on a busy test machine mean nothing): the benchmark driver
runs in-process with one repetition and no warm-up, and the test checks that every variant
passed its correctness guard against torch, that the summary's ratios are the ratios of the
measured times, that XLA's FLOP count agrees with the analytic one, and that the JSON and the
markdown rows came out.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import import_torch

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402  (bench/common.py)


def test_analytic_flops_of_the_seed():
    cfg = common.bench_config("caa_rawnet2")
    f = common.analytic_flops(cfg)
    # 41.5 of 45.4 GFLOP per 4 s utterance are the kernel-3 convs of the residual blocks.
    assert f["block_conv3"] / 1e9 == pytest.approx(41.5, abs=0.1)
    assert f["forward"] / 1e9 == pytest.approx(45.4, abs=0.2)
    assert 2.5 * f["forward"] < f["train"] < 3 * f["forward"]


def test_time_fn_counts_reps():
    calls = []
    t = common.time_fn(lambda: calls.append(1), warmup=2, min_reps=3, max_seconds=0.0)
    assert t["reps"] == 3 and len(calls) == 5 and t["median_s"] >= 0


@pytest.mark.slow
def test_bench_model_quick_runs(tmp_path):
    import_torch()
    import bench_model

    bench_model.main([
        "--quick", "--inprocess", "--num-samples", "2400",
        "--presets", "caa_rawnet2",
        "--forward-batches", "2", "--train-batches", "2",
        "--variants", "jax@default,torch@default",
        "--warmup", "0", "--min-reps", "1", "--max-seconds", "0", "--peak-size", "64",
        "--out-dir", str(tmp_path), "--tag", "smoke",
    ])
    report = json.loads((tmp_path / "bench_model_smoke.json").read_text())
    md = (tmp_path / "bench_model_smoke.md").read_text()
    assert report["peak"]["jax_gflops"] > 0
    for pres in report["presets"]:
        assert not pres["errors"], pres["errors"]
        for key, run in pres["runs"].items():
            assert run["checks"] and all(c["ok"] for c in run["checks"].values()), (key, run["checks"])
        rows = {(r["mode"], r["batch"]): r for r in pres["summary"]}
        assert set(rows) == {("forward", 2), ("train", 2)}
        for (mode, _), r in rows.items():
            assert r["speedup"] == pytest.approx(r["torch_s"] / r["jax_s"]), (mode, r)
            assert r["jax_pct_peak"] == pytest.approx(
                100 * pres["flops"][mode] * 2 / r["jax_s"] / 1e9 / common_peak(report)), (mode, r)
            assert f"| {pres['preset']} | {mode} | 2 |" in md
        # XLA counts the same convolutions and matmuls as the analytic model, plus the
        # elementwise work it leaves out (13 % of this tiny model; 0.5 % of the real seed)
        c = pres["compile"]
        assert c["xla_fwd_gflop_per_utt"] == pytest.approx(pres["flops"]["forward"] / 1e9, rel=0.25)
        assert c["train_compile_s"] > 0


def common_peak(report: dict) -> float:
    pk = report["peak"]
    return max(v for v in (pk.get("jax_gflops"), pk.get("torch_gflops")) if v)
