"""bf16 compute with float32 state trains as well as float32 (demo preset, demo corpus)."""

import jax
import jax.numpy as jnp
import pytest

from rawnet2_jax.data.demo import DemoConfig
from train.configs import DEMO
from train.loop import train
from train.testing import demo_sources


@pytest.mark.slow
def test_bf16_and_f32_reach_the_same_dev_eer(tmp_path):
    src = demo_sources(tmp_path / "corpus", DemoConfig(num_train=192, num_dev=200, num_eval=8, seed=3))
    cfg = DEMO.replace(epochs=4, early_stopping_patience=None, checkpoint_every_steps=0)
    runs = {}
    for dtype in ("float32", "bfloat16"):
        runs[dtype] = train(cfg.replace(compute_dtype=dtype), tmp_path / dtype, sources=src, final_eval=False,
                            quiet=True)
    state = runs["bfloat16"].final_state
    for leaf in jax.tree.leaves((state.params, state.batch_stats, state.opt_state)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float32
    eer = {k: 100 * r.best_dev_eer for k, r in runs.items()}
    assert eer["float32"] < 40, f"the demo preset did not learn in float32 (chance is 50 %): {eer}"
    assert abs(eer["bfloat16"] - eer["float32"]) <= 2.0, f"dev EER (%) bf16 vs f32: {eer}"
