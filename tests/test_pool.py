"""``rawnet2_jax.pool.max_pool_1d``: values and gradients of torch's ``max_pool1d`` (floor
mode, gradient to the first maximum of a window), ties and a dropped tail included."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rawnet2_jax.pool import max_pool_1d
from tests.conftest import import_torch


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 40, 5)).astype(np.float32)  # 40 = 13 windows of 3 + 1 dropped
    tied = x.copy()
    tied[:, 20:] = 0.0  # a zero-padded tail: every window there is a three-way tie
    tied[0, 3:6, 1] = 0.5  # a tie inside speech
    tied[1, 6:8, 2] = tied[1, 8, 2] - 1.0  # a two-way tie below the maximum (no effect)
    tied[1, 9, 3] = tied[1, 11, 3] = 2.0  # a tie of the first and last frame of a window
    return {"random": x, "tied": tied}


def _loss(pool, x, g):
    return jnp.sum(pool(x) * g)


@pytest.mark.parity
@pytest.mark.parametrize("name", ["random", "tied"])
def test_max_pool_matches_torch_values_and_gradients(name):
    torch = import_torch()
    x = _inputs()[name]
    g = np.random.default_rng(1).standard_normal((2, 13, 5)).astype(np.float32)
    y, gx = jax.value_and_grad(_loss, argnums=1)(lambda v: max_pool_1d(v, 3), jnp.asarray(x), jnp.asarray(g))

    xt = torch.tensor(x.transpose(0, 2, 1), requires_grad=True)  # torch is (B, C, T)
    yt = torch.nn.functional.max_pool1d(xt, 3)
    (yt * torch.tensor(g.transpose(0, 2, 1))).sum().backward()
    want_y = yt.detach().numpy().transpose(0, 2, 1)
    want_g = xt.grad.numpy().transpose(0, 2, 1)

    got_y = np.asarray(max_pool_1d(jnp.asarray(x), 3))
    assert np.array_equal(got_y, want_y), f"values: max abs diff {np.abs(got_y - want_y).max():.2e}"
    diff = np.abs(np.asarray(gx) - want_g).max()
    assert np.array_equal(np.asarray(gx), want_g), f"gradients: max abs diff {diff:.2e}"
    assert float(y) == pytest.approx(float(np.sum(want_y * g)), rel=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_max_pool_equals_flax_max_pool(dtype):
    x = jnp.asarray(_inputs()["tied"], dtype)
    g = jnp.asarray(np.random.default_rng(2).standard_normal((2, 13, 5)), dtype)

    def flax_pool(v):
        return nn.max_pool(v, (3,), strides=(3,), padding="VALID")

    got = jax.grad(_loss, argnums=1)(lambda v: max_pool_1d(v, 3), x, g)
    want = jax.grad(_loss, argnums=1)(flax_pool, x, g)
    assert got.dtype == dtype
    assert np.array_equal(np.asarray(max_pool_1d(x, 3)), np.asarray(flax_pool(x)))
    assert np.array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
    # size 1 is the identity, gradient included
    assert np.array_equal(np.asarray(jax.grad(_loss, argnums=1)(lambda v: max_pool_1d(v, 1), x, x)),
                          np.asarray(x))


def test_backward_keeps_the_forward_winners_only():
    """The backward pass reads each window's winner as the forward pass chose it (int8), never x
    or y again: comparing a recomputed x with y dropped or moved whole windows' gradients where
    XLA recomputed x with another rounding (a BatchNorm fused with an FMA in one kernel and not
    in the other). Also under ``jax.checkpoint``, which recomputes x in the backward pass."""
    import contextlib
    import io

    from jax.ad_checkpoint import print_saved_residuals

    x = jnp.asarray(_inputs()["tied"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_saved_residuals(lambda v: max_pool_1d(v, 3), x)
    saved = [line.split()[0] for line in out.getvalue().splitlines() if line.strip()]
    dtypes = [s.split("[")[0] for s in saved]  # "i8[2,13,5]" (the short names of this jax) or "int8[...]"
    assert dtypes in (["i8"], ["int8"]) and saved[0].endswith("[2,13,5]"), \
        f"max_pool_1d saves {saved} for its backward (want the int8 winners only)"

    g = jnp.asarray(np.random.default_rng(3).standard_normal((2, 13, 5)), jnp.float32)

    def pooled(v):  # an affine map before the pool, as a BatchNorm: recomputed under remat
        return max_pool_1d(v * 1.7 + 0.3, 3)

    want = jax.grad(_loss, argnums=1)(pooled, x, g)
    remat = jax.checkpoint(pooled, policy=jax.checkpoint_policies.nothing_saveable)
    got = jax.jit(jax.grad(_loss, argnums=1), static_argnums=0)(remat, x, g)
    assert np.array_equal(np.asarray(got), np.asarray(want)), \
        f"gradient under remat: max abs diff {np.abs(np.asarray(got) - np.asarray(want)).max():.2e}"
