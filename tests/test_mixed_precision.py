"""bf16 compute with float32 state trains as well as float32 (demo preset, demo corpus, 1 s clips)."""

import jax
import jax.numpy as jnp
import pytest

from rawnet2_jax.data.demo import DemoConfig
from train.configs import DEMO
from train.loop import train
from train.testing import demo_sources

pytestmark = pytest.mark.long_file  # scheduled first in a parallel run (conftest)


# One short demo run's dev EER moves by about 3 points with the training's float rounding alone,
# in either direction, more than the 2-point bar (dev EER % f32 / bf16, 1.5 s clips, on the
# 2-core AMD EPYC: corpus seed 3 26.3 / 24.0, seed 4 28.3 / 26.0: the mean 2.3 apart, a fail).
# So the bar holds for the mean over four corpora (half the spread of the mean of two), each
# single run within twice the bar. Clips of 1 s (the model sees 0.75 s, the shortest clip) keep
# the four pairs of runs at the cost of the two pairs with 1.5 s clips: measured 34.0 / 32.3,
# 34.0 / 34.3, 33.7 / 30.0, 30.0 / 30.3 (mean 32.9 / 31.7).
CORPUS_SEEDS = (3, 4, 5, 6)
SECONDS = 1.0


@pytest.mark.slow
@pytest.mark.production_xla  # the bars were set on production numerics; mostly running, not compiling
def test_bf16_and_f32_reach_the_same_dev_eer(tmp_path):
    cfg = DEMO.replace(epochs=4, early_stopping_patience=None, checkpoint_every_steps=0)
    cfg = cfg.replace(model=cfg.model.replace(num_samples=int(0.75 * SECONDS * 16000)))
    eer = {"float32": [], "bfloat16": []}
    for seed in CORPUS_SEEDS:
        src = demo_sources(tmp_path / f"corpus{seed}",
                           DemoConfig(num_train=192, num_dev=200, num_eval=8, seed=seed, seconds=SECONDS))
        for dtype in eer:
            run = train(cfg.replace(compute_dtype=dtype), tmp_path / f"{dtype}{seed}", sources=src,
                        final_eval=False, quiet=True)
            eer[dtype].append(100 * run.best_dev_eer)
    state = run.final_state  # the last bf16 run
    for leaf in jax.tree.leaves((state.params, state.batch_stats, state.opt_state)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float32
    mean = {k: sum(v) / len(v) for k, v in eer.items()}
    assert max(eer["float32"]) < 40, f"the demo preset did not learn in float32 (chance is 50 %): {eer}"
    assert abs(mean["bfloat16"] - mean["float32"]) <= 2.0, f"mean dev EER (%) bf16 vs f32: {mean}, runs {eer}"
    for f32, bf16 in zip(eer["float32"], eer["bfloat16"]):
        assert abs(bf16 - f32) <= 4.0, f"one corpus's dev EER (%) bf16 vs f32 beyond twice the bar: {eer}"
