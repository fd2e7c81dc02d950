"""bf16 compute with float32 state trains as well as float32 (demo preset, demo corpus, 1 s clips)."""

import jax
import jax.numpy as jnp
import pytest

from rawnet2_jax.data.demo import DemoConfig
from train.loop import train
from train.testing import demo_sources, dev_eer_curve, short_demo_config

pytestmark = pytest.mark.long_file  # scheduled first in a parallel run (conftest)

# What is compared is each run's learning curve: its dev EER averaged over the epochs. A short
# demo run is still learning fast when it ends, so the dev EER of one epoch (and so the best
# epoch's) moves by up to 8 points with the training's float rounding alone, in either
# direction: f32 and bf16 start alike and drift apart (best dev EER % f32 / bf16 after 8 epochs,
# 2-core Intel Xeon with AVX-512: corpus seed 3 19.7 / 14.3, seed 4 26.3 / 20.0, seed 5
# 16.0 / 16.0, seed 6 17.7 / 20.0; after 4 epochs seed 5 26.0 / 32.0). The mean over all
# epochs averages that drift out and keeps what a precision bug would change, how fast and how
# far the model learns: the same four corpora, 8 epochs, 0.5 / 0.8 / 0.3 / 0.6 points apart;
# all 16 pairs of runs tried (4-8 epochs, 192 or 400 clips of 1 or 2 s, learning rates 1e-3 and
# 3e-3) within 1.8 points. Two corpora keep the test's time. A bf16 step made to learn at 0.3x
# the rate (its updates scaled) fails it on corpus 3, 3.0 points apart, though that run's best
# epoch (20.3 %) beat f32's (19.7 %).
CORPUS_SEEDS = (3, 4)
SECONDS = 1.0
EPOCHS = 8
BAR = 2.0  # dev EER points, the bar of the issue



@pytest.mark.slow
@pytest.mark.production_xla  # the bars were set on production numerics; mostly running, not compiling
def test_bf16_and_f32_learn_alike(tmp_path):
    cfg = short_demo_config(EPOCHS, SECONDS)
    for seed in CORPUS_SEEDS:
        src = demo_sources(tmp_path / f"corpus{seed}",
                           DemoConfig(num_train=192, num_dev=200, num_eval=8, seed=seed, seconds=SECONDS))
        curve = {}
        for dtype in ("float32", "bfloat16"):
            workdir = tmp_path / f"{dtype}{seed}"
            run = train(cfg.replace(compute_dtype=dtype), workdir, sources=src, final_eval=False, quiet=True)
            curve[dtype] = dev_eer_curve(workdir)
            assert len(curve[dtype]) == EPOCHS
            assert min(curve[dtype]) < 35, f"corpus {seed}: the demo preset did not learn in {dtype} (chance is 50 %): {curve}"
        mean = {k: sum(v) / len(v) for k, v in curve.items()}
        assert abs(mean["bfloat16"] - mean["float32"]) <= BAR, (
            f"corpus {seed}: dev EER (%) averaged over the epochs, bf16 vs f32: {mean}; per epoch {curve}")
    state = run.final_state  # the last bf16 run
    for leaf in jax.tree.leaves((state.params, state.batch_stats, state.opt_state)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float32
