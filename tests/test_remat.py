"""``ModelConfig.remat="blocks"``: the same loss, gradients and BatchNorm updates as without
rematerialisation; the front end and every block checkpointed; old config files (without the
field) still load."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rawnet2_jax.config import ModelConfig, get_config
from rawnet2_jax.model import RawNet2, init_variables

# The seed layout at a tiny size (pools, FMS and the front end as in caa_rawnet2).
SMALL = get_config(
    "caa_rawnet2", num_samples=4000, sinc_filters=8, sinc_kernel_size=33,
    first_block_channels=8, second_block_channels=16, gru_hidden=16, embedding_dim=16,
)


def _rel(a, b) -> tuple[float, float]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = float(np.max(np.abs(a - b)))
    return d, d / max(float(np.max(np.abs(b))), 1e-30)


def _grad_fn(cfg: ModelConfig, variables):
    model = RawNet2(cfg)

    def loss_fn(params, x, y):
        v = {**variables, "params": params}
        (logits, _), updates = model.apply(v, x, train=True, mutable=["batch_stats"])
        w = jnp.asarray([3.0, 1.0])[y]  # class-weighted, as the recipes
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return jnp.sum(w * nll) / jnp.sum(w), updates["batch_stats"]

    return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))


@pytest.fixture(scope="module")
def both():
    variables = init_variables(SMALL, 0)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-0.5, 0.5, (4, SMALL.num_samples)), jnp.float32)
    y = jnp.asarray([0, 1, 1, 0], jnp.int32)
    out = {}
    with jax.default_matmul_precision("highest"):
        for remat in ("none", "blocks"):
            fn = _grad_fn(SMALL.replace(remat=remat), variables)
            out[remat] = fn(variables["params"], x, y)
    return out


@pytest.mark.slow
@pytest.mark.parity
def test_remat_gives_the_same_loss_gradients_and_bn_updates(both):
    (loss0, stats0), grads0 = both["none"]
    (loss1, stats1), grads1 = both["blocks"]
    d, rel = _rel(loss1, loss0)
    assert rel < 1e-6, f"loss: max abs diff {d:.2e}, rel {rel:.2e}"
    # The recomputed halves are fused differently from the plain backward pass, so gradients
    # differ by float32 rounding (largest seen: 9.5e-6 relative, a conv2 bias).
    scale = max(float(np.max(np.abs(g))) for g in jax.tree_util.tree_leaves(grads0))
    for name, got, want in (("gradient", grads1, grads0), ("batch_stats", stats1, stats0)):
        flat_got = jax.tree_util.tree_leaves_with_path(got)
        flat_want = dict(jax.tree_util.tree_leaves_with_path(want))
        assert len(flat_got) == len(flat_want) > 0
        for path, g in flat_got:
            key = jax.tree_util.keystr(path)
            d, rel = _rel(g, flat_want[path])
            if name == "gradient" and "conv1']['bias" in key:
                # conv1 feeds a train-mode BatchNorm, which subtracts the batch mean: this bias's
                # gradient is zero, and both values are rounding noise. Judged on the model's scale.
                assert d < 1e-6 * scale, f"{name} {key}: max abs diff {d:.2e}, model scale {scale:.2e}"
                continue
            assert rel < 3e-5, f"{name} {key}: max abs diff {d:.2e}, rel {rel:.2e}"


@pytest.mark.slow
def test_remat_recomputes_the_front_end_and_each_half_block():
    # What the option does (its memory effect: bench/bench_memory.py): in train mode the front
    # end is checkpointed, each residual block runs as two recomputed halves
    # (rawnet2_jax.remat, a custom VJP) and pre_gru_bn keeps its input only; nothing in eval.
    variables = init_variables(SMALL, 0)
    x = jnp.zeros((2, SMALL.num_samples), jnp.float32)

    def counts(cfg, train):
        fn = lambda v: RawNet2(cfg).apply(v, x, train=train, mutable=["batch_stats"] if train else False)  # noqa: E731
        names = [e.primitive.name for e in jax.make_jaxpr(fn)(variables).jaxpr.eqns]
        return (sum(n in ("remat2", "checkpoint") for n in names),
                sum(n.startswith("custom_vjp_call") for n in names))

    halves = 2 * len(SMALL.block_channels)
    pools = len(SMALL.block_channels)  # max_pool_1d is a custom VJP too (rawnet2_jax.pool)
    # and so is each GRU layer with the one-GEMM backward (gru_impl, rawnet2_jax.gru)
    grus = SMALL.gru_layers if SMALL.gru_backward(jax.default_backend()) == "gemm" else 0
    assert counts(SMALL.replace(remat="blocks"), True) == (1, halves + 1 + grus)  # pools inside halves
    assert counts(SMALL.replace(remat="blocks"), False) == counts(SMALL, False) == (0, pools + grus)
    assert counts(SMALL, True) == (0, pools + grus)


def test_remat_field_is_optional_and_checked():
    old = SMALL.to_dict()
    del old["remat"]  # a config.json written before the field existed
    cfg = ModelConfig.from_dict(old)
    assert cfg.remat == "auto" and cfg == SMALL  # the default: training decides (train/fit.py)
    assert SMALL.replace(remat="blocks").architecture() == SMALL.architecture()
    assert "remat" not in SMALL.architecture() and "sinc_conv_impl" not in SMALL.architecture()
    with pytest.raises(ValueError, match="remat must be"):
        SMALL.replace(remat="all")


@pytest.mark.slow
def test_remat_leaves_the_eval_forward_alone():
    variables = init_variables(SMALL, 0)
    x = jnp.asarray(np.random.default_rng(1).uniform(-0.5, 0.5, (2, SMALL.num_samples)), jnp.float32)
    # Jitted: one compile each instead of op-by-op dispatch (the eager forward took ~60 s on the
    # busy machine). Equal programs may share one executable (persistent compilation cache),
    # which is the claim itself; a remat that touched eval would compile and run its own.
    want, _ = jax.jit(lambda v: RawNet2(SMALL).apply(v, x, train=False))(variables)
    got, inter = jax.jit(lambda v: RawNet2(SMALL.replace(remat="blocks")).apply(v, x, train=False))(variables)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert {"sinc", "front", "block0", "pre_gru"} <= set(inter)
