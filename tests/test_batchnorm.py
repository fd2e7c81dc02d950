"""rawnet2_jax.batchnorm against torch.nn.BatchNorm1d: momentum 0.1, unbiased running variance,
eval mode from the running statistics, the folded affine map, bfloat16 inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rawnet2_jax.batchnorm import BatchNorm
from tests.conftest import assert_close, import_torch

torch = import_torch()

pytestmark = pytest.mark.parity

C = 6


def _batches(n, seed=0, b=4, t=50):
    rng = np.random.default_rng(seed)
    offset, scale = rng.normal(0, 3, C), rng.uniform(0.3, 3, C)
    return [(offset + scale * rng.standard_normal((b, t, C))).astype(np.float32) for _ in range(n)]


def _pair(seed=0):
    """A torch BatchNorm1d with random affine params and the flax BatchNorm holding the same."""
    g = torch.Generator().manual_seed(seed)
    ref = torch.nn.BatchNorm1d(C)  # torch defaults: momentum 0.1, eps 1e-5
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5, generator=g)
        ref.bias.normal_(0, 0.5, generator=g)
    bn = BatchNorm(C)
    v = bn.init(jax.random.PRNGKey(0), jnp.zeros((1, 2, C)), train=False)
    v = {**v, "params": {"scale": jnp.asarray(ref.weight.detach().numpy()),
                         "bias": jnp.asarray(ref.bias.detach().numpy())}}
    return ref, bn, v


def _torch(ref, x):  # flax (B, T, C) -> torch (B, C, T) and back
    with torch.no_grad():
        return ref(torch.from_numpy(x).transpose(1, 2)).transpose(1, 2).numpy()


def test_train_steps_then_eval_match_torch():
    ref, bn, v = _pair()
    step = jax.jit(lambda v, x: bn.apply(v, x, train=True, mutable=["batch_stats"]))
    ref.train()
    for i, x in enumerate(_batches(3)):
        want = _torch(ref, x)
        got, upd = step(v, jnp.asarray(x))
        v = {**v, **upd}
        assert_close(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max(), name=f"train output, step {i}")
        assert_close(v["batch_stats"]["mean"], ref.running_mean.numpy(), rtol=1e-5, atol=1e-6,
                     name=f"running_mean, step {i}")
        assert_close(v["batch_stats"]["var"], ref.running_var.numpy(), rtol=1e-5, atol=1e-6,
                     name=f"running_var, step {i}")
    ref.eval()
    x = _batches(1, seed=9)[0]
    want = _torch(ref, x)
    got = bn.apply(v, jnp.asarray(x), train=False)
    assert_close(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max(), name="eval output")
    a, b = bn.apply(v, method=BatchNorm.folded)
    assert_close(x * np.asarray(a) + np.asarray(b), want, rtol=1e-5, atol=1e-5 * np.abs(want).max(),
                 name="folded affine map")


def test_running_statistics_formula():
    """running = 0.9 * running + 0.1 * batch, with the UNBIASED batch variance (float64)."""
    _, bn, v = _pair()
    x = _batches(1, seed=3, b=2, t=5)[0]  # n = 10 per channel: n / (n - 1) is 11 %
    _, upd = bn.apply(v, jnp.asarray(x), train=True, mutable=["batch_stats"])
    x64 = x.astype(np.float64).reshape(-1, C)
    assert_close(upd["batch_stats"]["mean"], 0.1 * x64.mean(0), rtol=1e-5, atol=1e-7, name="mean")
    assert_close(upd["batch_stats"]["var"], 0.9 + 0.1 * x64.var(0, ddof=1), rtol=1e-5, atol=1e-7,
                 name="var (unbiased)")


def test_train_output_uses_biased_batch_variance():
    _, bn, v = _pair()
    x = _batches(1, seed=4, b=2, t=5)[0]
    got, _ = bn.apply(v, jnp.asarray(x), train=True, mutable=["batch_stats"])
    x64 = x.astype(np.float64).reshape(-1, C)
    p = jax.tree.map(np.asarray, v["params"])
    want = (x64 - x64.mean(0)) / np.sqrt(x64.var(0) + 1e-5) * p["scale"] + p["bias"]
    assert_close(np.asarray(got).reshape(-1, C), want, rtol=1e-5, atol=1e-5, name="normalised with biased var")


def test_num_batches_tracked_is_carried_untouched_and_channels_checked():
    _, bn, v = _pair()
    v = {**v, "buffers": {"num_batches_tracked": jnp.asarray(41, jnp.int32)}}
    _, upd = bn.apply(v, jnp.asarray(_batches(1)[0]), train=True, mutable=["batch_stats", "buffers"])
    assert int(upd["buffers"]["num_batches_tracked"]) == 41
    with pytest.raises(ValueError, match="expects 6 channels"):
        bn.apply(v, jnp.zeros((1, 3, 5)), train=False)


def test_bf16_input_keeps_f32_stats():
    rng = np.random.default_rng(0)
    x = (3.0 + 2.0 * rng.standard_normal((4, 50, C))).astype(np.float32)
    bn = BatchNorm(C)
    v = bn.init(jax.random.PRNGKey(0), jnp.asarray(x), train=False)
    y, upd = bn.apply(v, jnp.asarray(x, jnp.bfloat16), train=True, mutable=["batch_stats"])
    assert y.dtype == jnp.bfloat16
    assert upd["batch_stats"]["mean"].dtype == jnp.float32 and upd["batch_stats"]["var"].dtype == jnp.float32
    ref = torch.nn.BatchNorm1d(C)
    ref.train()
    xb = np.array(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32))
    want = _torch(ref, xb)
    assert_close(np.asarray(y, np.float32), want, rtol=1e-2, atol=2e-2, name="bf16 BN output")
    assert_close(upd["batch_stats"]["mean"], ref.running_mean.numpy(), rtol=1e-5, atol=1e-6, name="running_mean")
    assert_close(upd["batch_stats"]["var"], ref.running_var.numpy(), rtol=1e-5, atol=1e-6,
                 name="running_var (unbiased)")
