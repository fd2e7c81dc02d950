"""``remat="auto"`` (train/fit.py): the step is compiled once, measured, and rematerialised only
when XLA's estimate does not fit in the device's memory."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train import fit
from train import sharding as shd
from train.loop import _build_steps, _init_variables
from train.state import create_train_state
from train.testing import tiny_train_config


@pytest.mark.slow  # one compile of the tiny train step
def test_auto_keeps_the_fast_step_when_it_fits_and_remats_when_it_does_not(monkeypatch):
    cfg = tiny_train_config(batch_size=4)
    assert cfg.model.remat == "auto"
    mesh = shd.make_mesh()
    state = create_train_state(jax.tree.map(jnp.asarray, _init_variables(cfg)), cfg)
    state = state.with_arrays(shd.replicate(state.arrays(), mesh))

    monkeypatch.setattr(fit, "device_memory_budget", lambda d: (1 << 50, "test memory"))
    model, step, _, choice = _build_steps(cfg, cfg.batch_size, mesh, state)
    assert choice.remat == "none" and model.config.remat == "auto"
    assert choice.need_bytes > 0 and "remat=none" in choice.message()

    # The executable compiled for the check is the one the first real step runs.
    rng = np.random.default_rng(0)
    n = cfg.model.num_samples
    batch = shd.shard_batch({"audio": rng.uniform(-0.5, 0.5, (4, n)).astype(np.float32),
                             "label": np.array([0, 1, 0, 1], np.int32), "mask": np.ones(4, bool)}, mesh)
    _, metrics = step(state, batch)
    assert np.isfinite(float(metrics["loss"]))
    assert step.core._cache_size() == 1, "the first step compiled the train step a second time"

    # Too big for the device: the blocks are rematerialised (same executable measured again).
    monkeypatch.setattr(fit, "device_memory_budget", lambda d: (choice.need_bytes, "test memory"))
    small = fit.choose_remat(step, state, fit.batch_spec(4, n, shd.batch_sharding(mesh)), mesh.devices.flat[0])
    assert small.remat == "blocks" and small.need_bytes == choice.need_bytes
    assert "remat=blocks" in small.message()

    # Too big even with remat: the blocks step is measured too and the log line says so.
    monkeypatch.setattr(fit, "device_memory_budget", lambda d: (1, "test memory"))
    _, _, _, neither = _build_steps(cfg, cfg.batch_size, mesh, state)
    assert neither.remat == "blocks" and 0 < neither.blocks_bytes, neither
    assert neither.blocks_too_big and "expect an out-of-memory error" in neither.message()
    assert not small.blocks_too_big  # not measured there: no claim


def test_budget_is_the_host_memory_shared_by_the_cpu_devices():
    budget, what = fit.device_memory_budget(jax.devices()[0])
    if jax.devices()[0].platform != "cpu":
        pytest.skip("CPU only")
    assert what == "available host memory"
    assert 0 < budget * jax.local_device_count() <= fit._available_host_bytes() * 1.5
