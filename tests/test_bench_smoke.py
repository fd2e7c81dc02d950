"""Smoke test of the bench scripts (bench/): they run end to end on tiny models.

Nothing is timed here (timings on a busy test machine mean nothing): the benchmark driver
runs in-process with one repetition and no warm-up, and the test checks that every variant
passed its correctness guard against torch and that the JSON / markdown came out. The fast
forward prototype is checked against ``RawNet2`` for every option set.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
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


@pytest.mark.parametrize("preset,options", [
    ("caa_rawnet2", ["fold+toeplitz+wino4"]),
    ("asvspoof2021_baseline", ["nofold+fft+wino2"]),
])
def test_fast_forward_matches_model(preset, options):
    import fast_forward

    from rawnet2_jax.model import RawNet2, init_variables

    cfg = common.bench_config(preset, quick=True, num_samples=2400)
    variables = init_variables(cfg, 0)
    rng = np.random.default_rng(0)
    # non-trivial BN running statistics
    variables = jax.tree_util.tree_map_with_path(
        lambda p, v: jnp.asarray(rng.uniform(0.5, 1.5, v.shape), v.dtype)
        if getattr(p[-1], "key", None) == "var" else v, variables)
    x = jnp.asarray(common.bench_inputs(2, cfg.num_samples))
    model = RawNet2(cfg)
    with jax.default_matmul_precision("highest"):
        want = np.asarray(model.apply(variables, x, train=False)[0])
        for name in options:
            params, fn = fast_forward.make_forward(cfg, variables, **fast_forward.OPTION_SETS[name])
            got = np.asarray(jax.jit(fn)(params, x))
            _, rel = common.rel_diff(got, want)
            assert rel < 1e-4, f"{name}: relative logit difference {rel:.2e}"


def test_bench_model_quick_runs(tmp_path):
    import_torch()
    import bench_model

    bench_model.main([
        "--quick", "--inprocess", "--num-samples", "2400",
        "--presets", "caa_rawnet2",
        "--forward-batches", "2", "--train-batches", "2",
        "--variants", "jax@default,jaxfast@default,torch@default",
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
        assert rows[("forward", 2)]["speedup"] > 0 and rows[("forward", 2)]["fast_speedup"] > 0
        assert rows[("train", 2)]["speedup"] > 0 and rows[("train", 2)]["fast_speedup"] > 0
        assert pres["compile"]["train_compile_s"] > 0
        assert pres["preset"] in md


def test_fast_gru_gradients_match_the_model_gru():
    import fast_gru

    from rawnet2_jax.gru import GRU

    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 5, 4)), jnp.float32)
    m = GRU(6, 2)
    v = m.init(jax.random.key(0), x)
    layers = [v["params"][f"l{k}"] for k in range(2)]

    def loss_ref(layers, x):
        return jnp.sum(jnp.sin(m.apply({"params": {f"l{k}": p for k, p in enumerate(layers)}}, x)))

    def loss_fast(layers, x):
        return jnp.sum(jnp.sin(fast_gru.gru(x, layers)))

    with jax.default_matmul_precision("highest"):
        want = jax.value_and_grad(loss_ref, argnums=(0, 1))(layers, x)
        got = jax.jit(jax.value_and_grad(loss_fast, argnums=(0, 1)))(layers, x)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert common.rel_diff(g, w)[1] < 1e-5
