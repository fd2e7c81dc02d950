"""Three training steps in JAX == three steps of the PyTorch reference trained by torch.

Same initial weights (moved with convert.tables), same batch, torch
``CrossEntropyLoss(weight)`` + ``clip_grad_norm_`` + ``Adam(weight_decay)`` vs ``train_step``.
Compared: every parameter and the BN running statistics. (``num_batches_tracked`` is not
compared: JAX training passes ``buffers`` through, torch counts batches.)
"""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from tests.conftest import import_torch, max_diffs, speech_like
from train.state import create_train_state
from train.step import build_model, make_train_step
from train.testing import tiny_model, tiny_train_config

STEPS = 3


def _torch_train(torch, model, x, y, cfg):
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    crit = torch.nn.CrossEntropyLoss(weight=torch.tensor(cfg.class_weights, dtype=torch.float32))
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        logits, _ = model(torch.as_tensor(x))
        loss = crit(logits, torch.as_tensor(y, dtype=torch.long))
        loss.backward()
        if cfg.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip_norm)
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.slow
@pytest.mark.parity
@pytest.mark.parametrize("layout", ["seed", "official"])
def test_three_steps_match_torch(layout):
    torch = import_torch()
    from convert.reference import reference_model
    from convert.tables import flax_to_torch, torch_to_flax

    mcfg = tiny_model(layout)
    cfg = tiny_train_config(model=mcfg, learning_rate=1e-3, weight_decay=2e-4, grad_clip_norm=1.0,
                            class_weights=(8.837, 1.0))
    torch.manual_seed(0)
    ref = reference_model(mcfg)
    x = speech_like(mcfg.num_samples, batch=6, seed=1)
    y = np.array([0, 1, 0, 0, 1, 0], np.int32)
    init_sd = {k: v.detach().cpu().numpy().copy() for k, v in ref.state_dict().items()}
    variables = torch_to_flax(init_sd, mcfg)

    torch_losses = _torch_train(torch, ref, x, y, cfg)

    with jax.default_matmul_precision("highest"):
        state = create_train_state(jax.tree.map(jnp.asarray, variables), cfg)
        step = make_train_step(build_model(cfg), cfg)
        batch = {"audio": jnp.asarray(x), "label": jnp.asarray(y)}
        jax_losses = []
        for _ in range(STEPS):
            state, m = step(state, batch)
            jax_losses.append(float(m["loss"]))

    np.testing.assert_allclose(jax_losses, torch_losses, rtol=1e-5, atol=1e-6)
    got = flax_to_torch(
        {"params": state.params, "batch_stats": state.batch_stats, "buffers": state.buffers}, mcfg
    )
    want = {k: v.detach().cpu().numpy() for k, v in ref.state_dict().items()}
    worst = []
    for k, w in want.items():
        if k.endswith("num_batches_tracked"):
            continue
        a, r = max_diffs(got[k], w)
        # Adam normalises each update to ~lr, so compare against lr-sized steps as well.
        worst.append((a, k))
        assert a <= 1e-5 + 1e-5 * float(np.max(np.abs(w))), f"{k}: max abs diff {a:.3e} (rel {r:.3e})"
    print(f"{layout}: worst param/BN difference {max(worst)[0]:.2e} ({max(worst)[1]})")
    # And the parameters actually moved by ~STEPS * lr.
    moved = max(float(np.max(np.abs(want[k] - init_sd[k]))) for k in want if "running" not in k
                and not k.endswith("num_batches_tracked"))
    assert moved > 0.5 * cfg.learning_rate
