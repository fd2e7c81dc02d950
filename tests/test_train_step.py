"""train_step / eval_step: loss semantics, BN updates, buffers, host state, bf16."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from rawnet2_jax.model import init_variables
from tests.conftest import assert_close, speech_like
from train.state import create_train_state
from train.step import build_model, make_eval_step, make_train_step, weighted_ce
from train.testing import tiny_train_config


@pytest.fixture(scope="module")
def f32():
    """One tiny config (weights [8.837, 1]) compiled once for the whole module."""
    cfg = tiny_train_config(class_weights=(8.837, 1.0))
    model = build_model(cfg)
    v = init_variables(cfg.model, 0)
    return cfg, model, v, make_train_step(model, cfg), make_eval_step(model, cfg)


def _batch(cfg, b=4, seed=0, labels=(0, 1, 0, 1)):
    x = speech_like(cfg.model.num_samples, batch=b, seed=seed)
    return {"audio": jnp.asarray(x), "label": jnp.asarray(labels[:b], jnp.int32)}


@pytest.mark.slow
def test_weighted_ce_matches_torch_mean_semantics():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 2)).astype(np.float32)
    labels = np.array([0, 1, 1, 0, 0, 1])
    w = np.array([8.837, 1.0], np.float32)
    want = torch.nn.CrossEntropyLoss(weight=torch.tensor(w))(torch.tensor(logits), torch.tensor(labels)).item()
    got, _, _ = weighted_ce(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(w))
    assert abs(float(got) - want) < 1e-6
    # Masked rows are excluded: equal to the loss on the kept rows only.
    mask = np.array([True, True, False, True, False, True])
    want_m = torch.nn.CrossEntropyLoss(weight=torch.tensor(w))(
        torch.tensor(logits[mask]), torch.tensor(labels[mask])
    ).item()
    got_m, _, _ = weighted_ce(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(w), jnp.asarray(mask))
    assert abs(float(got_m) - want_m) < 1e-6


def test_train_step_updates_params_bn_and_keeps_buffers(f32):
    cfg, model, v, step, _ = f32
    state = create_train_state(v, cfg)
    batch = _batch(cfg)
    new, metrics = step(state, batch)
    assert int(new.step) == 1
    assert set(metrics) == {"loss", "accuracy", "grad_norm", "lr"}
    assert np.isfinite(float(metrics["loss"]))
    # Params and BN running stats moved; buffers untouched.
    moved = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), new.params, state.params)
    assert any(jax.tree.leaves(moved))
    d = float(jnp.max(jnp.abs(new.batch_stats["front_bn"]["mean"] - state.batch_stats["front_bn"]["mean"])))
    assert d > 0
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), new.buffers, state.buffers)
    # A second step with new values does not recompile the jitted core.
    n0 = step.core._cache_size()
    step(new, batch)
    assert step.core._cache_size() == n0
    # Deterministic: same state + batch -> identical result.
    again, _ = step(state, batch)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), again.params, new.params)


@pytest.mark.slow
def test_train_loss_equals_eval_loss_formula_and_mask(f32):
    cfg, model, v, step, ev = f32
    state = create_train_state(v, cfg)
    batch = _batch(cfg)
    out = ev(state, batch)
    logits = np.asarray(out["logits"])
    assert_close(out["score"], logits[:, 1] - logits[:, 0], name="score")
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    y = np.asarray(batch["label"])
    w = np.array(cfg.class_weights)[y]
    want = float(np.sum(-w * logp[np.arange(4), y]) / np.sum(w))
    assert abs(float(out["loss_num"] / out["loss_den"]) - want) < 1e-5
    # Masked rows of the training batch do not contribute to the loss.
    masked = dict(batch, mask=jnp.asarray([True, True, True, False]))
    _, m = step(state, masked)
    ev_masked = ev(state, masked)
    # Train-mode loss differs from eval-mode (BN batch stats); check exclusion via a huge row instead.
    poisoned = dict(masked, label=masked["label"].at[3].set(1))
    _, m2 = step(state, poisoned)
    assert float(m2["loss"]) == pytest.approx(float(m["loss"]), abs=1e-6)
    assert float(ev_masked["loss_den"]) == pytest.approx(float(np.sum(w[:3])), rel=1e-6)


@pytest.mark.slow
def test_bf16_compute_keeps_f32_state(f32):
    cfg32, _, v, step32, _ = f32
    cfg = cfg32.replace(compute_dtype="bfloat16")
    model = build_model(cfg)
    state = create_train_state(v, cfg)
    step = make_train_step(model, cfg)
    new, metrics = step(state, _batch(cfg))
    for leaf in jax.tree.leaves(new.params) + jax.tree.leaves(new.batch_stats):
        assert leaf.dtype == jnp.float32
    _, m32 = step32(create_train_state(v, cfg32), _batch(cfg))
    assert np.isfinite(float(metrics["loss"]))
    assert abs(float(metrics["loss"]) - float(m32["loss"])) < 0.05


@pytest.mark.slow
def test_rawboost_augments_training_batches_only(f32):
    """--rawboost changes what the train step sees (deterministically per step key), equals
    RawBoost applied to the batch by hand, and never touches the eval step."""
    from rawnet2_jax.augment import rawboost_batch
    from train.step import _AUGMENT_STREAM, _step_key

    cfg0, model, v, step0, ev0 = f32
    cfg5 = cfg0.replace(rawboost=5)
    step5 = make_train_step(model, cfg5)
    state = create_train_state(v, cfg0)
    batch = _batch(cfg0)
    _, m0 = step0(state, batch)
    _, m5 = step5(state, batch)
    _, m5_again = step5(state, batch)
    assert float(m5["loss"]) != float(m0["loss"])
    assert float(m5["loss"]) == float(m5_again["loss"])
    key = jax.random.fold_in(_step_key(state, None), _AUGMENT_STREAM)
    by_hand = dict(batch, audio=rawboost_batch(key, batch["audio"], 5, cfg5.rawboost_config))
    _, m_hand = step0(state, by_hand)
    assert float(m_hand["loss"]) == pytest.approx(float(m5["loss"]), rel=1e-6)
    ev5 = make_eval_step(model, cfg5)
    np.testing.assert_array_equal(np.asarray(ev5(state, batch)["logits"]), np.asarray(ev0(state, batch)["logits"]))


def test_initial_variables_ignore_how_the_model_computes():
    """``--bf16`` and the computation fields never change the initial weights: runs that differ
    only there start from the same variables, bit for bit (and share one compiled init)."""
    from train.loop import _init_variables

    cfg = tiny_train_config()
    want = init_variables(cfg.model, cfg.seed)
    variants = [cfg.replace(compute_dtype="bfloat16"),
                cfg.replace(model=cfg.model.replace(remat="blocks", gru_impl="scan", sinc_conv_impl="fft"))]
    for variant in variants:
        got = _init_variables(variant)
        assert jax.tree.structure(got) == jax.tree.structure(want)
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
            assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b)), \
                f"{variant.compute_dtype} {variant.model.remat}: {jax.tree_util.keystr(path)} differs"
