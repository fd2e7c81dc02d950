"""The optax chain equals torch clip_grad_norm_ + Adam(weight_decay) step by step."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import optax

from train.optim import clip_by_global_norm_torch, get_learning_rate, set_learning_rate, torch_adam

torch = pytest.importorskip("torch")


def _run_both(shapes, steps, lr, wd, clip, grad_scale, seed=0, lr_change=None):
    rng = np.random.default_rng(seed)
    init = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    grads = [
        {k: (grad_scale * rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()} for _ in range(steps)
    ]

    tparams = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in init.items()}
    topt = torch.optim.Adam(list(tparams.values()), lr=lr, weight_decay=wd)

    tx = torch_adam(lr, weight_decay=wd, clip_norm=clip)
    params = {k: jnp.asarray(v) for k, v in init.items()}
    state = tx.init(params)
    update = jax.jit(tx.update)

    for i, g in enumerate(grads):
        if lr_change is not None and i == lr_change[0]:
            for group in topt.param_groups:
                group["lr"] = lr_change[1]
            state = set_learning_rate(state, lr_change[1])
        for k, p in tparams.items():
            p.grad = torch.tensor(g[k])
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(list(tparams.values()), clip)
        topt.step()
        upd, state = update({k: jnp.asarray(v) for k, v in g.items()}, state, params)
        params = optax.apply_updates(params, upd)

    for k in shapes:
        a = np.asarray(params[k])
        b = tparams[k].detach().numpy()
        diff = np.max(np.abs(a - b))
        assert diff < 1e-6, f"{k}: max abs diff {diff:.3e}"
    return state


SHAPES = {"w": (7, 5), "b": (5,), "conv": (3, 2, 4)}


@pytest.mark.parity
@pytest.mark.parametrize(
    "wd,clip,scale",
    [
        (0.0, None, 1.0),
        (2e-4, None, 1.0),
        (2e-4, 1.0, 1.0),  # clipping active: global norm >> 1
        (1e-4, 1.0, 0.01),  # clipping inactive: norm < 1
        (5e-2, 0.5, 3.0),  # large coupled decay, clip on
    ],
)
def test_adam_chain_matches_torch(wd, clip, scale):
    _run_both(SHAPES, steps=12, lr=1e-3, wd=wd, clip=clip, grad_scale=scale)


@pytest.mark.parity
def test_lr_change_mid_run_matches_torch():
    state = _run_both(SHAPES, steps=10, lr=1e-3, wd=2e-4, clip=1.0, grad_scale=1.0, lr_change=(5, 1e-4))
    assert abs(get_learning_rate(state) - 1e-4) < 1e-10  # stored as float32


@pytest.mark.parity
def test_clip_order_is_before_weight_decay():
    """Weight decay must not enter the clipped norm: big params, tiny grads -> no clipping."""
    params = {"w": jnp.full((4,), 100.0)}
    grads = {"w": jnp.full((4,), 0.01)}
    tx = clip_by_global_norm_torch(1.0)
    out, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(np.asarray(out["w"]), 0.01, rtol=1e-6)
    # And the torch formula (coef = max / (norm + 1e-6)) when clipping.
    g = {"w": jnp.asarray([3.0, 4.0])}
    out, _ = tx.update(g, tx.init(g))
    np.testing.assert_allclose(np.asarray(out["w"]), np.array([3.0, 4.0]) / (5.0 + 1e-6), rtol=1e-7)
