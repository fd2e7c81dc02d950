"""1 device vs 4 virtual CPU devices: same result for the same global batch.

The 4-device run happens in a SUBPROCESS: ``--xla_force_host_platform_device_count`` must
be set before jax is imported.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import jax

from tests.conftest import assert_close
from train.loop import train
from train.testing import synthetic_sources, tiny_train_config

ROOT = Path(__file__).resolve().parents[1]


def _cfg():
    # Global batch 8 over 4 devices = 2 rows each; 3 steps, dev eval, eval split.
    return tiny_train_config(epochs=1, batch_size=8, eval_batch_size=8, max_steps_per_epoch=3, checkpoint_every_steps=2)


_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import jax
    from train import sharding
    from train.loop import train
    from train.testing import synthetic_sources, tiny_train_config
    assert jax.device_count() == 4, jax.devices()
    mesh = sharding.make_mesh()
    b = sharding.shard_batch({"audio": np.zeros((8, 3), np.float32), "label": np.zeros(8, np.int32)}, mesh)
    shards = sorted(s.data.shape[0] for s in b["audio"].addressable_shards)
    cfg = tiny_train_config(epochs=1, batch_size=8, eval_batch_size=8, max_steps_per_epoch=3, checkpoint_every_steps=2)
    res = train(cfg, sys.argv[1], sources=synthetic_sources(), quiet=True)
    p = res.final_state.params
    leaf = jax.tree.leaves(p)[0]
    flat = {jax.tree_util.keystr(k): np.asarray(v).tolist() for k, v in jax.tree_util.tree_leaves_with_path(
        {"params": p, "batch_stats": res.final_state.batch_stats})}
    # all-gathers in the compiled data-parallel step, for both GRU backward passes
    from train.testing import sharded_step_all_gathers
    gathers = {impl: sharded_step_all_gathers(cfg.replace(model=cfg.model.replace(gru_impl=impl)), mesh, 8)
               for impl in ("scan", "gemm")}
    print("RESULT" + json.dumps({"shards": shards, "ndev_param": len(leaf.sharding.device_set),
          "flat": flat, "eval": res.eval["eer"], "dev": res.best_dev_eer, "all_gathers": gathers}))
    """
)


@pytest.mark.slow
def test_one_vs_four_devices(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu",
               XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip())
    p = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / "four")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    line = [l for l in p.stdout.splitlines() if l.startswith("RESULT")][-1]
    four = json.loads(line[len("RESULT"):])
    assert four["shards"] == [2, 2, 2, 2]  # the batch axis is split over the 4 devices
    assert four["ndev_param"] == 4  # params replicated on all of them
    # data parallel: gradients are all-reduced and no activation crosses devices (the GRU's
    # one-GEMM dW_hh once reshaped (T, B) together and all-gathered its two operands)
    assert four["all_gathers"] == {"scan": 0, "gemm": 0}, f"all-gathers in the 4-device train step: {four['all_gathers']}"

    one = train(_cfg(), tmp_path / "one", sources=synthetic_sources(), quiet=True)
    flat1 = {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(
        {"params": one.final_state.params, "batch_stats": one.final_state.batch_stats})}
    assert set(flat1) == set(four["flat"])
    for k, v in flat1.items():
        assert_close(np.asarray(four["flat"][k]), v, rtol=1e-5, atol=1e-5, name=k)
    assert one.best_dev_eer == pytest.approx(four["dev"], abs=1e-9)
    assert one.eval["eer"] == pytest.approx(four["eval"], abs=1e-9)
