"""rawnet2_jax.fms: filter-wise feature map scaling against torch, and torch's Linear init."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rawnet2_jax.fms import FMS, torch_bias_init
from tests.conftest import assert_close, import_torch

torch = import_torch()

pytestmark = pytest.mark.parity


def _torch_fms(x, fc, mode):
    """The formula of Jung et al. 2020 / Tak et al. 2021 on torch's (B, C, T)."""
    s = torch.sigmoid(fc(x.mean(dim=2))).unsqueeze(-1)
    return x * s + s if mode == "add" else x * s


@pytest.mark.parametrize("mode", ["add", "mul"])
def test_fms_forward_and_gradients_match_torch(mode):
    torch.manual_seed(0)
    b, c, t = 3, 6, 50
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((b, c, t)) + rng.normal(0, 2, (1, c, 1))).astype(np.float32)
    fc = torch.nn.Linear(c, c)
    xt = torch.from_numpy(x).requires_grad_(True)
    want = _torch_fms(xt, fc, mode)
    (want * torch.linspace(-1, 1, t)).sum().backward()  # a loss that weights every position

    fms = FMS(mode)
    params = {"fc": {"kernel": fc.weight.detach().numpy().T, "bias": fc.bias.detach().numpy()}}
    w = jnp.linspace(-1, 1, t)[None, :, None]

    def loss(p, x):
        return jnp.sum(fms.apply({"params": p}, x) * w)

    xf = jnp.asarray(x.transpose(0, 2, 1))  # flax (B, T, C)
    with jax.default_matmul_precision("highest"):
        got = fms.apply({"params": params}, xf)
        g_p, g_x = jax.grad(loss, argnums=(0, 1))(params, xf)
    out = want.detach().numpy().transpose(0, 2, 1)
    assert_close(got, out, rtol=1e-5, atol=1e-6 * np.abs(out).max(), name=f"fms {mode}")
    # gradients are sums over B*T positions: errors bounded by 1e-5 of the tensor's scale
    for ours, theirs, what in ((np.asarray(g_x).transpose(0, 2, 1), xt.grad, "dL/dx"),
                               (np.asarray(g_p["fc"]["kernel"]).T, fc.weight.grad, "dL/dW"),
                               (np.asarray(g_p["fc"]["bias"]), fc.bias.grad, "dL/db")):
        w = theirs.numpy()
        assert_close(ours, w, rtol=1e-5, atol=1e-5 * np.abs(w).max(), name=f"fms {mode} {what}")


def test_fms_gate_depends_on_the_time_average_only():
    # Permuting time permutes the output the same way: s is one gate per channel.
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 30, 4)), jnp.float32)
    fms = FMS("add")
    v = fms.init(jax.random.PRNGKey(0), x)
    perm = rng.permutation(30)
    assert_close(fms.apply(v, x[:, perm]), fms.apply(v, x)[:, perm], rtol=1e-6, atol=1e-6, name="permuted")


def test_init_is_torch_linear_default():
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias, as torch.nn.Linear."""
    c = 256
    v = FMS("add").init(jax.random.PRNGKey(0), jnp.zeros((1, 3, c)))["params"]["fc"]
    bound = 1 / np.sqrt(c)
    kernel = np.asarray(v["kernel"])
    assert np.abs(kernel).max() <= bound and np.abs(v["bias"]).max() <= bound
    # uniform on [-b, b]: std b / sqrt(3) (65,536 draws: within 2 %)
    assert abs(kernel.std() / (bound / np.sqrt(3)) - 1) < 0.02, kernel.std()
    b = np.asarray(torch_bias_init(c)(jax.random.PRNGKey(1), (20000,)))
    assert np.abs(b).max() <= bound and abs(b.std() / (bound / np.sqrt(3)) - 1) < 0.03
