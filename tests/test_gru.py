"""rawnet2_jax.gru against torch.nn.GRU: outputs and gradients over long sequences, stacked
layers, the whole output sequence of one layer, torch's initialisation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rawnet2_jax.gru import GRU, GRULayer
from tests.conftest import assert_close, import_torch

torch = import_torch()

pytestmark = pytest.mark.parity


def _np(t):
    return t.detach().cpu().numpy()


def _params(ref, layers):
    """torch.nn.GRU weights as the flax GRU's params (w_ih / w_hh transposed)."""
    return {f"l{k}": {
        "w_ih": _np(getattr(ref, f"weight_ih_l{k}")).T, "w_hh": _np(getattr(ref, f"weight_hh_l{k}")).T,
        "b_ih": _np(getattr(ref, f"bias_ih_l{k}")), "b_hh": _np(getattr(ref, f"bias_hh_l{k}")),
    } for k in range(layers)}


@pytest.mark.parametrize("layers", [1, 3])
def test_gru_long_sequence_and_gradients(layers):
    """The model-level tests reach the GRU with few frames; here 60 steps, and every gradient."""
    torch.manual_seed(layers)
    d, h, t = 20, 16, 60
    ref = torch.nn.GRU(d, h, num_layers=layers, batch_first=True)
    x = np.random.default_rng(layers).standard_normal((3, t, d)).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_(True)
    seq, _ = ref(xt)
    seq[:, -1, :].pow(2).sum().backward()

    params = _params(ref, layers)
    gru = GRU(h, layers)

    def loss(p, x):
        return jnp.sum(jnp.square(gru.apply({"params": p}, x)))

    with jax.default_matmul_precision("highest"):
        out = jax.jit(gru.apply)({"params": params}, jnp.asarray(x))
        g_p, g_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, jnp.asarray(x))
    want = _np(seq[:, -1, :])
    assert_close(np.asarray(out), want, rtol=1e-5, atol=1e-6, name="gru last state")
    assert_close(np.asarray(g_x), _np(xt.grad), rtol=1e-4, atol=1e-6, name="gru dL/dx")
    for k in range(layers):
        for ours, theirs, tr in (("w_ih", "weight_ih", True), ("w_hh", "weight_hh", True),
                                 ("b_ih", "bias_ih", False), ("b_hh", "bias_hh", False)):
            w = _np(getattr(ref, f"{theirs}_l{k}").grad)
            got = np.asarray(g_p[f"l{k}"][ours])
            assert_close(got.T if tr else got, w, rtol=1e-4, atol=1e-6, name=f"gru grad {theirs}_l{k}")


def test_layer_returns_the_whole_sequence():
    torch.manual_seed(0)
    ref = torch.nn.GRU(5, 7, batch_first=True)
    x = np.random.default_rng(0).standard_normal((2, 25, 5)).astype(np.float32)
    with torch.no_grad():
        want, h_n = ref(torch.from_numpy(x))
    p = _params(ref, 1)["l0"]
    with jax.default_matmul_precision("highest"):
        seq = GRULayer(7).apply({"params": p}, jnp.asarray(x), return_sequence=True)
        last = GRULayer(7).apply({"params": p}, jnp.asarray(x), return_sequence=False)
    assert_close(seq, _np(want), rtol=1e-5, atol=1e-6, name="gru sequence")
    assert_close(last, _np(h_n[0]), rtol=1e-5, atol=1e-6, name="gru h_n")


def test_params_have_torch_names_shapes_and_init():
    h, d = 64, 10
    v = GRU(h, num_layers=2).init(jax.random.PRNGKey(0), jnp.zeros((1, 3, d)))["params"]
    ref = torch.nn.GRU(d, h, num_layers=2, batch_first=True)
    assert {k: {n: a.shape for n, a in layer.items()} for k, layer in v.items()} == {
        f"l{k}": {"w_ih": tuple(getattr(ref, f"weight_ih_l{k}").shape[::-1]),
                  "w_hh": tuple(getattr(ref, f"weight_hh_l{k}").shape[::-1]),
                  "b_ih": tuple(getattr(ref, f"bias_ih_l{k}").shape),
                  "b_hh": tuple(getattr(ref, f"bias_hh_l{k}").shape)} for k in range(2)}
    bound = 1 / np.sqrt(h)  # torch: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H))
    w = np.asarray(v["l1"]["w_hh"])
    assert np.abs(w).max() <= bound and abs(w.std() / (bound / np.sqrt(3)) - 1) < 0.03
