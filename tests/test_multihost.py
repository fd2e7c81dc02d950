"""Multi-process training on one machine: two processes on 127.0.0.1 with one CPU device
each (gloo collectives) against one process with two virtual CPU devices."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from train import sharding
    sharding.maybe_initialize_distributed()
    import jax
    from train.loop import train
    from train.testing import synthetic_sources, tiny_train_config
    workdir, out = sys.argv[1], sys.argv[2]
    cfg = tiny_train_config(epochs=2, checkpoint_every_steps=2)
    res = train(cfg, workdir, sources=synthetic_sources(), quiet=True)
    me = jax.process_index()
    leaves = jax.tree_util.tree_leaves_with_path(res.final_state.variables())
    np.savez(f"{out}.{me}.npz", **{jax.tree_util.keystr(p): np.asarray(x.addressable_data(0)) for p, x in leaves})
    with open(f"{out}.{me}.json", "w") as f:
        json.dump({"best_dev_eer": res.best_dev_eer, "best_step": res.best_step, "eval_eer": res.eval["eer"],
                   "devices": jax.device_count(), "processes": jax.process_count()}, f)
    """
)


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k != "XLA_FLAGS"}
    return dict(env, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", **extra)


def _free_port() -> int:
    import portpicker

    return portpicker.pick_unused_port()


def _start(workdir, out, env):
    return subprocess.Popen([sys.executable, "-c", _SCRIPT, str(workdir), str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(procs, timeout=600):
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append((p.returncode, err))
    return results


@pytest.mark.slow
def test_two_processes_equal_two_devices(tmp_path):
    port = _free_port()
    multi = [
        _start(tmp_path / "multi", tmp_path / "multi", _env(
            RAWNET2_DISTRIBUTED="1", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(i), RAWNET2_DISTRIBUTED_TIMEOUT="120"))
        for i in range(2)
    ]
    single = _start(tmp_path / "single", tmp_path / "single", _env(XLA_FLAGS="--xla_force_host_platform_device_count=2"))
    for rc, err in _finish(multi + [single]):
        assert rc == 0, err[-3000:]
        assert "Traceback" not in err and "Check failed" not in err and "barrier" not in err.lower(), err[-3000:]

    info = {name: json.loads((tmp_path / f"{name}.json").read_text())
            for name in ("multi.0", "multi.1", "single.0")}
    assert [info[n]["processes"] for n in info] == [2, 2, 1]
    assert all(info[n]["devices"] == 2 for n in info)
    ref = np.load(tmp_path / "single.0.npz")
    for name in ("multi.0", "multi.1"):
        got = np.load(tmp_path / f"{name}.npz")
        assert sorted(got.files) == sorted(ref.files)
        worst = max(float(np.max(np.abs(got[k] - ref[k]) / np.maximum(np.abs(ref[k]), 1e-6))) for k in ref.files)
        assert worst < 1e-4, f"{name}: state max relative difference {worst:.3g} vs 1 process x 2 devices"
        # Model selection comes from the dev scores: the same decisions, the same numbers.
        for key in ("best_dev_eer", "best_step", "eval_eer"):
            assert info[name][key] == info["single.0"][key], (name, key, info[name], info["single.0"])

    # One copy of every host-side output, written by the primary: each utterance once.
    wd = tmp_path / "multi"
    for split, n in (("dev", 10), ("eval", 10)):
        name = "dev_scores.txt" if split == "dev" else "scores_asvspoof2019_la_eval.txt"
        ids = [line.split()[0] for line in (wd / "scores" / name).read_text().splitlines()]
        assert len(ids) == len(set(ids)) == n, ids
    from rawnet2_jax.checkpoint import load_pretrained

    meta = json.loads((wd / "best_model" / "metadata.json").read_text())
    assert meta["step"] == info["multi.0"]["best_step"]
    load_pretrained(wd / "best_model")  # the manifest checks out
    assert not list(wd.glob(".best_model.tmp-*"))
    assert json.loads((wd / "final.json").read_text())["best_step"] == info["multi.0"]["best_step"]
