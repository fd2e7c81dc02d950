"""rawnet2_jax.gru against torch.nn.GRU: outputs and gradients over long sequences, stacked
layers, both backward passes ("scan" and the one-GEMM custom VJP "gemm"), the whole output
sequence of one layer, torch's initialisation, and ``gru_impl`` in the config and the model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rawnet2_jax.config import COMPUTATION_FIELDS, get_config
from rawnet2_jax.gru import GRU, GRULayer
from rawnet2_jax.model import RawNet2, init_variables
from train.testing import tiny_model
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


@pytest.mark.parametrize("backward", ["scan", "gemm"])
@pytest.mark.parametrize("layers", [1, 3])
def test_gru_long_sequence_and_gradients(layers, backward):
    """The model-level tests reach the GRU with few frames; here 60 steps, and every gradient."""
    torch.manual_seed(layers)
    d, h, t = 20, 16, 60
    ref = torch.nn.GRU(d, h, num_layers=layers, batch_first=True)
    x = np.random.default_rng(layers).standard_normal((3, t, d)).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_(True)
    seq, _ = ref(xt)
    seq[:, -1, :].pow(2).sum().backward()

    params = _params(ref, layers)
    gru = GRU(h, layers, backward=backward)

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


def _value_and_grads(backward: str, x, params, dtype=None, seq: bool = False):
    gru = GRULayer(16, dtype=dtype, backward=backward) if seq else GRU(16, 2, dtype=dtype, backward=backward)
    kw = {"return_sequence": True} if seq else {}

    def loss(p, x):
        out = gru.apply({"params": p}, x, **kw).astype(jnp.float32)
        return jnp.sum(out * jnp.cos(jnp.arange(out.size, dtype=jnp.float32).reshape(out.shape)))

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x)


@pytest.mark.parametrize("seq", [False, True])
def test_gemm_backward_matches_the_scan_transpose(seq):
    """The custom VJP against JAX's own transpose of the scan at highest precision: same value,
    every gradient (params and input) within float32 summation-order rounding."""
    x = jnp.asarray(np.random.default_rng(1).standard_normal((3, 40, 12)), jnp.float32)
    gru = GRULayer(16) if seq else GRU(16, 2)
    params = gru.init(jax.random.PRNGKey(0), x, **({"return_sequence": True} if seq else {}))["params"]
    with jax.default_matmul_precision("highest"):
        (v_s, g_s), (v_g, g_g) = (_value_and_grads(b, x, params, seq=seq) for b in ("scan", "gemm"))
    assert float(v_s) == float(v_g)  # the forward is the same computation
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_s), jax.tree.leaves(g_g)):
        assert_close(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6, name=f"gemm vs scan grad {path}")


def test_gemm_backward_in_bfloat16():
    """bf16 computation (float32 params): gradients float32, near the scan transpose's."""
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 20, 12)), jnp.float32)
    params = GRU(16, 2).init(jax.random.PRNGKey(0), x)["params"]
    (_, g_s), (_, g_g) = (_value_and_grads(b, x, params, dtype=jnp.bfloat16) for b in ("scan", "gemm"))
    for a, b in zip(jax.tree.leaves(g_s), jax.tree.leaves(g_g)):
        assert b.dtype == a.dtype and np.isfinite(np.asarray(b)).all()
        assert_close(np.asarray(b), np.asarray(a), rtol=5e-2, atol=5e-2, name="bf16 gemm vs scan grad")


def test_gru_impl_field():
    cfg = get_config("tak2021")
    assert cfg.gru_impl == "auto" and "gru_impl" in COMPUTATION_FIELDS
    assert "gru_impl" not in cfg.architecture()
    assert cfg.gru_backward("cpu") == "gemm" and cfg.gru_backward("gpu") == "scan"
    assert cfg.replace(gru_impl="scan").gru_backward("cpu") == "scan"
    assert cfg.replace(gru_impl="gemm").gru_backward("tpu") == "gemm"
    with pytest.raises(ValueError, match="gru_impl"):
        cfg.replace(gru_impl="cudnn")


@pytest.mark.slow
def test_model_gradients_do_not_depend_on_gru_impl():
    """The whole model's train-mode gradients with either backward (same variables)."""
    cfg = tiny_model("tak2021")
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, cfg.num_samples)), jnp.float32)
    v = init_variables(cfg, 0)

    def grads(impl):
        model = RawNet2(cfg.replace(gru_impl=impl))

        def loss(p):
            out, _ = model.apply({**v, "params": p}, x, train=True, mutable=["batch_stats"])[0]
            return jnp.sum(out[:, 1] - out[:, 0])

        return jax.jit(jax.grad(loss))(v["params"])

    with jax.default_matmul_precision("highest"):
        g_s, g_g = grads("scan"), grads("gemm")
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_s), jax.tree.leaves(g_g)):
        assert_close(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6, name=f"model grad {path}")
